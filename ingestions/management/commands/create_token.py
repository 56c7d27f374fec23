"""`manage.py create_token USERNAME [--name NAME] [--rotate]`: a new named API token; its key
alone on the last line, shown this once (only its digest is stored)."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from ingestions.models import ApiToken
from ingestions.tokens import token_create, token_revoke

DEFAULT_NAME = "cli"


class Command(BaseCommand):
    help = "Make a named API token for USERNAME and print its key (shown once) on the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--name", default=DEFAULT_NAME, help=f"The token's name (default {DEFAULT_NAME!r})."
        )
        parser.add_argument(
            "--rotate", action="store_true", help="Revoke the user's token of this name first."
        )

    def handle(self, *, username: str, name: str, rotate: bool, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {username!r}.") from None
        existing = ApiToken.objects.filter(user=user, name=name.strip()).first()
        if existing is not None:
            if not rotate:
                raise CommandError(
                    f"{username} already has a token named {existing.name!r} and its key cannot be "
                    "shown again: --rotate replaces it, --name makes another."
                )
            token_revoke(user=user, token_id=existing.pk)
        try:
            _token, key = token_create(user=user, name=name)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(key)
