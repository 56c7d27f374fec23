"""`manage.py create_user USERNAME --tenant NAME --role ROLE [--password P]`."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from ingestions.memberships import membership_set
from ingestions.models import Role, Tenant


class Command(BaseCommand):
    help = "Create a user (or update its role) as a member of a tenant. Safe to re-run."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--role", required=True, choices=[role.value for role in Role])
        parser.add_argument("--password", help="Generated and printed when omitted.")

    def handle(self, *, username: str, tenant: str, role: str, password: str | None, **options):
        try:
            tenant_obj = Tenant.objects.get(slug=slugify(tenant))
        except Tenant.DoesNotExist:
            raise CommandError(f"No tenant {tenant!r}; create it with create_tenant.") from None
        user, created = get_user_model().objects.get_or_create(username=username)
        generated = password is None and created
        if password is not None or created:
            password = password or secrets.token_urlsafe(12)
            user.set_password(password)
            user.save()
        membership_set(tenant=tenant_obj, user=user, role=role, actor=None)
        self.stdout.write(
            f"{'created' if created else 'updated'}: {username} is {role} of {tenant_obj.slug}"
        )
        if generated:
            self.stdout.write(f"password: {password}")
