"""Durable records of refresh operations: the operation, its steps, dry-run plans, replays."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from ingestions.models import Ingestion, Run, Tenant, new_public_id


def new_operation_id() -> str:
    return new_public_id("op")


def new_plan_id() -> str:
    return new_public_id("plan")


class OperationKind(models.TextChoices):
    FULL_REFRESH = "full_refresh", "Full refresh"
    FRESH_START = "fresh_start", "Fresh start"
    DROP_TABLE = "drop_table", "Drop table"
    CLEAR_PROCESSED_FILES = "clear_processed_files", "Clear processed-file history"


class OperationStatus(models.TextChoices):
    IN_PROGRESS = "in_progress"
    ACCEPTED = "accepted"  # every step done and a run was triggered
    SUCCESS = "success"  # every step done, no run triggered
    PARTIAL_FAILURE = "partial_failure"  # some steps done, one failed: resume finishes it
    FAILED = "failed"  # the first step failed (or a staged run failed): nothing changed
    # A zero-downtime refresh follows its run after the synchronous "accepted":
    PUBLISHED = "published"  # the new version is the live table
    AWAITING_DECISION = "awaiting_decision"  # some files failed: publish or discard
    DISCARDED = "discarded"  # the new version was thrown away; the table is unchanged
    CANCELLED = "cancelled"  # its run was cancelled; nothing was published
    UNDONE = "undone"  # undone: the table and the history are back as they were before it


class Retention(models.TextChoices):
    """What an operation keeps of what it replaced, so that it can be undone."""

    NONE = "none"  # nothing kept (retain_days 0, or nothing was changed)
    KEPT = "kept"  # restorable until `retained_until`
    RESTORING = "restoring"  # an undo started; a retried undo (or the reaper) finishes it
    RESTORED = "restored"  # undone
    EXPIRED = "expired"  # the window ended: what was kept is purged


class RefreshMode(models.TextChoices):
    """How a full refresh or fresh start replaces the table."""

    ATOMIC = "atomic", "Build beside the live table, publish at the end (no downtime)"
    DROP_FIRST = "drop_first", "Drop the table first (frees storage now; downtime until loaded)"


class StepName(models.TextChoices):
    TABLE_DROPPED = "table_dropped"
    PROCESSED_FILES_CLEARED = "processed_files_cleared"
    RUN_TRIGGERED = "run_triggered"


class StepStatus(models.TextChoices):
    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"


class RefreshOperation(models.Model):
    public_id = models.CharField(max_length=63, unique=True, default=new_operation_id)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    # Kept after the ingestion is deleted: the record outlives what it changed.
    ingestion = models.ForeignKey(
        Ingestion, null=True, on_delete=models.SET_NULL, related_name="refresh_operations"
    )
    ingestion_public_id = models.CharField(max_length=63)
    table_name = models.CharField(max_length=129)
    kind = models.CharField(max_length=32, choices=OperationKind.choices)
    status = models.CharField(
        max_length=20, choices=OperationStatus.choices, default=OperationStatus.IN_PROGRESS
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    request = models.JSONField(default=dict)
    impact = models.JSONField(default=dict)
    warnings = models.JSONField(default=list)
    notes = models.JSONField(default=list)
    plan = models.ForeignKey("RefreshPlan", null=True, blank=True, on_delete=models.SET_NULL)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=1)
    # Undo (`refresh.undo`): what was kept, where, and until when.
    retain_days = models.PositiveSmallIntegerField(default=0)
    retention = models.CharField(max_length=16, choices=Retention.choices, default=Retention.NONE)
    retained_until = models.DateTimeField(null=True, blank=True)
    retained_bytes = models.BigIntegerField(default=0)
    restore_point = models.JSONField(default=dict, blank=True)
    undo = models.JSONField(default=dict, blank=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["ingestion", "-created_at"], name="op_by_ingestion"),
            models.Index(fields=["retention", "retained_until"], name="op_retention"),
        ]
        constraints = [
            # Like runs: the database refuses a second refresh in flight on one ingestion.
            models.UniqueConstraint(
                fields=["ingestion"],
                condition=Q(status="in_progress"),
                name="one_refresh_in_progress_per_ingestion",
            )
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def duration_seconds(self) -> float | None:
        if not self.finished_at:
            return None
        return (self.finished_at - self.created_at).total_seconds()

    @property
    def zero_downtime(self) -> bool:
        """The one answer to "is this zero-downtime?": the operation builds its new version
        beside the live table and publishes it at the end (`RefreshMode.ATOMIC`)."""
        return self.request.get("mode") == RefreshMode.ATOMIC

    @property
    def label(self) -> str:
        """What it was, for people: "Full refresh", or "Selective refresh · 3 files" for a
        full refresh with a scope (it replaced those files' rows, not the table)."""
        from .specs import spec_of

        if self.request.get("scope"):
            files = int(self.impact.get("files_to_process") or 0)
            return f"Selective refresh · {files:,} file{'s' if files != 1 else ''}"
        return spec_of(self.kind).label


class RefreshStep(models.Model):
    operation = models.ForeignKey(RefreshOperation, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=32, choices=StepName.choices)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    details = models.JSONField(default=dict)
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["operation", "position"]
        constraints = [
            models.UniqueConstraint(fields=["operation", "position"], name="one_step_per_position")
        ]

    def __str__(self) -> str:
        return f"{self.operation_id}:{self.position}:{self.name}"


class RefreshPlan(models.Model):
    """What a dry-run showed; large operations must present a recent one (DESIGN §7)."""

    public_id = models.CharField(max_length=63, unique=True, default=new_plan_id)
    ingestion = models.ForeignKey(Ingestion, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32, choices=OperationKind.choices)
    impact = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.public_id


class IdempotencyRecord(models.Model):
    """The first response to an `Idempotency-Key`, replayed for the same key and body."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_once_per_user")
        ]

    def __str__(self) -> str:
        return self.key


class RateLimitCounter(models.Model):
    """Slots taken by one user for one operation kind in one fixed window (`refresh.limits`).

    One row per key; taking a slot is a single conditional UPDATE of `count`, so parallel
    requests in any number of processes can never take more than the rate.
    """

    key = models.CharField(max_length=200, unique=True)  # kind, user, period, window start
    window_start = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


# --- schedules (`refresh.schedules`) -------------------------------------------------------


def new_schedule_id() -> str:
    return new_public_id("sch")


class ScheduleAction(models.TextChoices):
    """What a schedule fires: a run of the ingestion, or a refresh operation."""

    RUN = "run", "Run"
    FULL_REFRESH = "full_refresh", "Full refresh"
    FRESH_START = "fresh_start", "Fresh start"


class Schedule(models.Model):
    """A cron expression in a time zone that fires a run or a refresh of one ingestion.

    The worker fires every due one (`schedules_fire_due`): `next_fire_at` is the next slot
    in UTC (None while paused). A refresh fires with the authority of `created_by` (who last
    set it); above the plan threshold it also needs the standing approval of an admin.
    """

    public_id = models.CharField(max_length=63, unique=True, default=new_schedule_id)
    ingestion = models.ForeignKey(Ingestion, on_delete=models.CASCADE, related_name="schedules")
    action = models.CharField(max_length=16, choices=ScheduleAction.choices)
    cron = models.CharField(max_length=120)
    timezone = models.CharField(max_length=64, default="UTC")
    paused = models.BooleanField(default=False)
    # A refresh fires only when this holds at its slot (`refresh.conditions`); "" always.
    condition = models.CharField(max_length=500, blank=True, default="")
    next_fire_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_slot = models.DateTimeField(null=True, blank=True)
    # Kept on the row so that a list shows the last outcome without a query per schedule.
    last_firing = models.ForeignKey(
        "ScheduleFiring", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A standing approval of a scheduled refresh whose estimated cost is above
    # REFRESH_PLAN_REQUIRED_ABOVE_USD: it covers firings estimated at most this much.
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_max_cost_usd = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["ingestion", "created_at", "id"]
        indexes = [
            # The worker's one query: next_fire_at <= now and not paused.
            models.Index(fields=["next_fire_at"], condition=Q(paused=False), name="schedule_due"),
        ]
        constraints = [
            # The ingestion's run schedule is one (`schedule` in the ingestion API).
            models.UniqueConstraint(
                fields=["ingestion"],
                condition=Q(action="run"),
                name="one_run_schedule_per_ingestion",
            )
        ]
        permissions = [
            (
                "approve_schedule",
                "Can approve scheduled refreshes estimated above the plan threshold",
            )
        ]

    def __str__(self) -> str:
        return self.public_id


class FiringOutcome(models.TextChoices):
    PENDING = "pending"  # claimed; its action is being started (stays so if the worker died)
    FIRED = "fired"  # the run was queued / the operation executed
    SKIPPED = "skipped"  # a run or refresh in progress, or the condition did not hold
    REFUSED = "refused"  # protected, no permission, no approval, rate limited: audited
    FAILED = "failed"  # the action raised an unexpected domain error


class ScheduleFiring(models.Model):
    """One slot of a schedule, fired once: the database refuses a second row per slot, so
    several workers can fire due schedules at the same time."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="firings")
    slot = models.DateTimeField()  # the scheduled instant, UTC
    fired_at = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(
        max_length=16, choices=FiringOutcome.choices, default=FiringOutcome.PENDING
    )
    reason = models.CharField(max_length=64, blank=True, default="")  # an error code
    detail = models.TextField(blank=True, default="")
    skipped_slots = models.PositiveIntegerField(default=0)  # missed slots not fired (catch-up)
    # A conditional schedule's facts at the firing (`refresh.conditional.plan_facts`).
    facts = models.JSONField(default=dict, blank=True)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    operation = models.ForeignKey(
        RefreshOperation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-slot", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "slot"], name="one_firing_per_slot")
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id}@{self.slot:%Y-%m-%dT%H:%MZ}"


def new_batch_id() -> str:
    return new_public_id("batch")


class BatchStatus(models.TextChoices):
    PLANNED = "planned"  # a dry-run: its members' plans, for the execution to present
    LOADING = "loading"  # every member's run builds its new version; nothing published yet
    PUBLISHING = "publishing"  # every member loaded: publishing them (the reaper finishes it)
    PUBLISHED = "published"  # every member's new version is live
    FAILED = "failed"  # a member failed or was refused: none was published


class RefreshBatch(models.Model):
    """Several ingestions of a tenant refreshed together (`refresh.batches`): their new
    versions are published only when every one of them has loaded, else none is."""

    public_id = models.CharField(max_length=63, unique=True, default=new_batch_id)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32, choices=OperationKind.choices)
    status = models.CharField(max_length=16, choices=BatchStatus.choices)
    # [{"ingestion_id", "plan_id", "operation_id"}], in the request's order.
    members = models.JSONField(default=list)
    impact = models.JSONField(default=dict)  # the totals of the members' impacts
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    failed_ingestion_id = models.CharField(max_length=63, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status"], name="batch_by_status")]

    def __str__(self) -> str:
        return self.public_id
