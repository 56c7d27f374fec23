"""App config of the ingestions domain: the worker's own periodic passes (recovery of runs
and verifications whose worker died, stopping an idle Spark application, table maintenance).
The apps above register theirs (`ingestions.hooks`)."""

from django.apps import AppConfig


class IngestionsConfig(AppConfig):
    name = "ingestions"
    verbose_name = "Ingestions"

    def ready(self) -> None:
        from . import hooks
        from .maintenance import maintenance_due
        from .runs import runs_recover_stale
        from .verify_jobs import verify_jobs_recover_stale

        hooks.register_periodic(
            "recovery", runs_recover_stale, verify_jobs_recover_stale, spark_stop_idle
        )
        hooks.register_periodic("maintenance", maintenance_due)


def spark_stop_idle() -> list[str]:
    """Give a shared cluster its cores back: stop this worker's Spark application once unused
    for AUTOLOADER_SPARK_IDLE_SECONDS (the next run starts one again)."""
    from django.conf import settings

    from .engines.spark import sessions

    if settings.AUTOLOADER_SPARK_IDLE_SECONDS <= 0:
        return []
    return sessions.stop_idle(settings.AUTOLOADER_SPARK_IDLE_SECONDS)
