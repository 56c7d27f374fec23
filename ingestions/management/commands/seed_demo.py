"""`manage.py seed_demo`: demo tenants, users, files and ingestions (safe to re-run)."""

import os

from django.conf import settings
from django.core.management.base import BaseCommand

from ingestions.demo import seed_demo

DEFAULT_DEMO_PASSWORD = "autoloader-demo"  # noqa: S105 - a documented demo login, not a secret


class Command(BaseCommand):
    help = "Create tenants acme and globex with demo users, files and ingestions."

    def add_arguments(self, parser):
        parser.add_argument("--no-runs", action="store_true", help="Don't queue first runs.")

    def handle(self, *, no_runs: bool, **options):
        password = os.environ.get("AUTOLOADER_DEMO_PASSWORD", DEFAULT_DEMO_PASSWORD)
        result = seed_demo(
            landing_dir=settings.AUTOLOADER_DEMO_LANDING_DIR,
            password=password,
            queue_runs=not no_runs,
        )
        for username, tenant, role in result["users"]:
            self.stdout.write(f"demo user {username:<13} {role:<9} of {tenant}")
        self.stdout.write(f"demo password (new users): {password}")
        self.stdout.write(result["token"])
