"""`manage.py init_catalog`: create the Iceberg catalog's tables once, before web and workers.

pyiceberg creates them on first use; processes starting together would race to do it.
"""

from django.core.management.base import BaseCommand, CommandError

from ingestions.engines import load_engine
from ingestions.errors import AutoloaderError


class Command(BaseCommand):
    help = "Create the Iceberg catalog's tables if missing (run before starting the services)."

    def handle(self, **options):
        try:
            load_engine("iceberg").ping()
        except AutoloaderError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("catalog ready")
