"""A verification of a table against its source, run by the worker (`verify_jobs`), with
the progress the console's bar and the API show."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from .models import Ingestion, new_verify_job_id


class VerifyStatus(models.TextChoices):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class VerifyStage(models.TextChoices):
    """What a verification job is doing; `done`/`total` count that stage's units."""

    QUEUED = "queued", "Waiting for the worker"
    LISTING = "listing", "Listing the source"  # units: none (the listing is one call)
    HISTORY = "history", "Reading the history"  # units: history entries
    SCANNING = "scanning", "Scanning the table"  # units: the table's data files
    DONE = "done", "Done"


class VerifyJob(models.Model):
    """A verification of an ingestion's table run by the worker (`ingestions.verify_jobs`):
    its progress while it runs, then its report (`ingestions.verify.Verification`) or error.
    At most one queued or running per ingestion, enforced by the database."""

    public_id = models.CharField(max_length=63, unique=True, default=new_verify_job_id)
    ingestion = models.ForeignKey(Ingestion, on_delete=models.CASCADE, related_name="verify_jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=VerifyStatus.choices, default=VerifyStatus.QUEUED
    )
    stage = models.CharField(max_length=16, choices=VerifyStage.choices, default=VerifyStage.QUEUED)
    done = models.BigIntegerField(default=0)
    total = models.BigIntegerField(null=True, blank=True)  # None: not known (yet)
    report = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    worker_id = models.CharField(max_length=64, blank=True, default="")
    task_id = models.CharField(max_length=64, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["ingestion"],
                condition=Q(status__in=["QUEUED", "RUNNING"]),
                name="one_active_verify_per_ingestion",
            )
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_active(self) -> bool:
        return self.status in (VerifyStatus.QUEUED, VerifyStatus.RUNNING)

    @property
    def fraction(self) -> float | None:
        """How far the current stage is, 0..1; None when its size is not known."""
        if self.status == VerifyStatus.SUCCESS:
            return 1.0
        if not self.total:
            return None
        return round(min(1.0, self.done / self.total), 4)
