"""`manage.py grant_location TENANT URI`: grant a tenant a storage location (platform staff).

    manage.py grant_location acme file:///data/acme/
    manage.py grant_location acme s3://acme-landing/in/ --endpoint-url https://s3.example \\
        --region eu-west-1 --access-key-id AKIA... --secret-access-key-env ACME_S3_SECRET
    manage.py grant_location --list [TENANT]
    manage.py grant_location --revoke s3://acme-landing/in/

The secret key is read from the environment variable named by --secret-access-key-env (or
from standard input with --secret-access-key-stdin), never from the command line, and is
stored encrypted with AUTOLOADER_SECRETS_KEY.
"""

import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from ingestions.locations import location_grant, location_prefix, location_revoke
from ingestions.models import StorageLocation, Tenant
from ingestions.secrets import new_secrets_key


class Command(BaseCommand):
    help = "Grant a tenant a storage location (file:// or s3:// prefix); --list, --revoke."

    def add_arguments(self, parser):
        parser.add_argument("tenant", nargs="?", help="Tenant slug.")
        parser.add_argument("uri", nargs="?", help="file:///dir/ or s3://bucket/prefix/")
        parser.add_argument("--name", default="", help="A label shown to the tenant.")
        parser.add_argument("--endpoint-url", default="", help="S3 endpoint (default: settings).")
        parser.add_argument("--region", default="", help="S3 region (default: settings).")
        parser.add_argument("--access-key-id", default="", help="This location's own S3 key id.")
        parser.add_argument("--secret-access-key-env", default="", metavar="VAR")
        parser.add_argument("--secret-access-key-stdin", action="store_true")
        parser.add_argument("--list", action="store_true", help="List locations and exit.")
        parser.add_argument("--revoke", metavar="URI", help="Revoke the location at URI.")
        parser.add_argument(
            "--new-secrets-key", action="store_true", help="Print a new AUTOLOADER_SECRETS_KEY."
        )

    def handle(self, *, tenant, uri, **options):
        if options["new_secrets_key"]:
            self.stdout.write(new_secrets_key())
            return
        if options["list"]:
            return self._list(tenant)
        if options["revoke"]:
            return self._revoke(options["revoke"])
        if not tenant or not uri:
            raise CommandError("Give TENANT and URI (or --list / --revoke URI).")
        try:
            tenant_obj = Tenant.objects.get(slug=tenant)
        except Tenant.DoesNotExist:
            raise CommandError(f"No tenant {tenant!r}.") from None
        secret = ""
        if options["secret_access_key_env"]:
            secret = os.environ.get(options["secret_access_key_env"], "")
            if not secret:
                raise CommandError(f"${options['secret_access_key_env']} is empty or unset.")
        elif options["secret_access_key_stdin"]:
            secret = sys.stdin.readline().strip()
        try:
            location = location_grant(
                tenant=tenant_obj,
                uri=uri,
                name=options["name"],
                s3_endpoint_url=options["endpoint_url"],
                s3_region=options["region"],
                s3_access_key_id=options["access_key_id"],
                s3_secret_access_key=secret,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"granted: {location.uri} to {tenant_obj.slug}")

    def _list(self, tenant: str | None) -> None:
        locations = StorageLocation.objects.select_related("tenant").order_by("tenant__slug", "uri")
        if tenant:
            locations = locations.filter(tenant__slug=tenant)
        for location in locations:
            keys = "own keys" if location.s3_access_key_id else "default keys"
            extra = f" ({keys})" if location.scheme == "s3" else ""
            self.stdout.write(f"{location.tenant.slug:<16} {location.uri}{extra}")

    def _revoke(self, uri: str) -> None:
        try:
            prefix = location_prefix(uri)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        location = StorageLocation.objects.filter(uri__in=[prefix, uri]).first()
        if location is None:
            raise CommandError(f"No location {uri!r}.")
        location_revoke(location=location)
        self.stdout.write(f"revoked: {location.uri} from {location.tenant.slug}")
