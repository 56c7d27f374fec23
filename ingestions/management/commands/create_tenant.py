"""`manage.py create_tenant NAME`: create a tenant (idempotent)."""

from django.core.management.base import BaseCommand
from django.utils.text import slugify

from ingestions.models import Tenant


class Command(BaseCommand):
    help = "Create a tenant (its slug is derived from NAME). Safe to re-run."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *, name: str, **options):
        tenant, created = Tenant.objects.get_or_create(slug=slugify(name), defaults={"name": name})
        self.stdout.write(f"{'created' if created else 'exists'}: tenant {tenant.slug}")
