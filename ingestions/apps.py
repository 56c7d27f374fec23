"""App config of the ingestions domain: the worker's own periodic passes (recovery of runs
whose worker died, table maintenance). The apps above register theirs (`ingestions.hooks`)."""

from django.apps import AppConfig


class IngestionsConfig(AppConfig):
    name = "ingestions"
    verbose_name = "Ingestions"

    def ready(self) -> None:
        from . import hooks
        from .maintenance import maintenance_due
        from .runs import runs_recover_stale

        hooks.register_periodic("recovery", runs_recover_stale)
        hooks.register_periodic("maintenance", maintenance_due)
