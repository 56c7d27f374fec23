"""App config of refresh operations: registers with the domain (`ingestions.hooks`) the
guard that refuses runs and changes during a refresh, what the worker does when a refresh's
run ends, and the worker's periodic passes for operations, retention, schedules and
batches."""

from django.apps import AppConfig


class RefreshConfig(AppConfig):
    name = "refresh"
    verbose_name = "Refresh operations"

    def ready(self) -> None:
        from ingestions import hooks
        from ingestions.models import Role
        from ingestions.permissions import grant_to_role

        from .batches import batches_sync_due, run_ended_sync
        from .firing import schedules_fire_due
        from .guards import refuse_during_refresh, without_refreshes_in_flight
        from .reaper import refresh_reap
        from .schedules import (
            refresh_schedule_write,
            run_schedule_payloads,
            run_schedule_write,
        )
        from .sync import operations_sync_due
        from .undo import retention_expire

        # A standing approval of a scheduled refresh above the plan threshold: admins only.
        grant_to_role(Role.ADMIN, "refresh.approve_schedule")
        hooks.register_change_guard(refuse_during_refresh, busy=without_refreshes_in_flight)
        hooks.on_run_ended(run_ended_sync)
        hooks.register_ingestion_field(
            "schedule", read=run_schedule_payloads, write=run_schedule_write
        )
        # The PRD's spelling of a scheduled refresh; written only (GET shows `schedules`).
        hooks.register_ingestion_field(
            "refresh_schedule", read=lambda _ingestions: {}, write=refresh_schedule_write
        )
        # Schedules fire from the reaper: every AUTOLOADER_REAPER_INTERVAL_SECONDS (15 s),
        # so a firing comes at most that late; several workers fire each slot once.
        hooks.register_periodic(
            "recovery",
            refresh_reap,
            retention_expire,
            schedules_fire_due,
            operations_sync_due,
            batches_sync_due,
        )
