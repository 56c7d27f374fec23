"""Models of the domain: tenants and memberships, ingestions, processed-file history, runs."""

import re
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

PUBLIC_ID_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9-]{1,62}$",
    "Use 2-63 lowercase letters, digits and dashes, starting with a letter or digit.",
)
# Path segments of the console and the API beside ingestion ids (/ingestions/new/...).
RESERVED_PUBLIC_IDS = frozenset({"new", "check-source"})


def validate_public_id(value: str) -> None:
    PUBLIC_ID_VALIDATOR(value)
    if value in RESERVED_PUBLIC_IDS:
        raise ValidationError(f"{value!r} is reserved: choose another id.")


def validate_destination_table(value: str) -> None:
    from .engines.base import MAX_TABLE_NAME_PART_LENGTH, validate_table_name

    try:
        validate_table_name(value, max_part_length=MAX_TABLE_NAME_PART_LENGTH)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if RESERVED_TABLE_MARK in value:
        # Staged versions and tables kept for undo are named "<table>__autoloader_...":
        # no ingestion may load into (or adopt) one of them.
        raise ValidationError(
            f"Table name {value!r}: {RESERVED_TABLE_MARK!r} is reserved for the tables the "
            "autoloader keeps beside yours (staged versions, tables kept for undo)."
        )


RESERVED_TABLE_MARK = "__autoloader_"

# The longest an ingestion may keep its table's snapshots for time travel (a year).
MAX_SNAPSHOT_RETENTION_HOURS = 24 * 366


def new_public_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def new_ingestion_id() -> str:
    return new_public_id("ing")


def new_run_id() -> str:
    return new_public_id("run")


def catalog_namespace_for(slug: str) -> str:
    """The Iceberg namespace prefix of a tenant's tables, from its slug.

    Lowercase letters, digits and single underscores, never a double underscore: the
    physical namespace is "<prefix>__<namespace>", so the first "__" always ends the prefix
    and two tenants' tables can never share a name.
    """
    prefix = re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", slug.lower())).strip("_") or "tenant"
    if prefix[0].isdigit():
        prefix = f"t_{prefix}"
    return prefix[:MAX_CATALOG_NAMESPACE_LENGTH].rstrip("_")


MAX_CATALOG_NAMESPACE_LENGTH = 40


class Tenant(models.Model):
    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    catalog_namespace = models.CharField(
        max_length=MAX_CATALOG_NAMESPACE_LENGTH,
        unique=True,
        editable=False,
        help_text="Prefix of this tenant's Iceberg namespaces (set once, from the slug).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def save(self, *args, **kwargs):
        if not self.catalog_namespace:
            self.catalog_namespace = catalog_namespace_for(self.slug)
        super().save(*args, **kwargs)

    def table_identifier(self, destination_table: str) -> str:
        """The physical Iceberg identifier of this tenant's "namespace.table"."""
        namespace, table = destination_table.split(".", 1)
        return f"{self.catalog_namespace}__{namespace}.{table}"


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="one_membership_per_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"


class SourceFormat(models.TextChoices):
    CSV = "csv", "CSV"
    JSON = "json", "JSON lines"
    PARQUET = "parquet", "Parquet"


class ChangedFiles(models.TextChoices):
    """What a run does with a file it loaded before whose size or modification time changed."""

    RELOAD = "reload", "Reload it: its new rows replace its old ones, in one commit"
    WARN = "warn", "Warn: load nothing, flag it on the run"
    IGNORE = "ignore", "Ignore it: its old rows stay"


class GoneFiles(models.TextChoices):
    """What a run does with the rows of history files no longer in the source."""

    KEEP = "keep", "Keep their rows"
    REMOVE = "remove", "Remove their rows on the next run (one commit)"


class ChangeAction(models.TextChoices):
    """What a run did with one changed file (`Run.changed_files`)."""

    RELOADED = "reloaded"
    WARNED = "warned"
    IGNORED = "ignored"


class Ingestion(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="ingestions")
    public_id = models.CharField(
        max_length=63, default=new_ingestion_id, validators=[validate_public_id]
    )
    name = models.CharField(max_length=200)
    source_uri = models.CharField(max_length=1024)
    source_format = models.CharField(max_length=16, choices=SourceFormat.choices)
    source_pattern = models.CharField(max_length=255, blank=True, default="")
    source_options = models.JSONField(default=dict, blank=True)
    destination_table = models.CharField(max_length=129, validators=[validate_destination_table])
    # The physical Iceberg table ("<tenant prefix>__<namespace>.<table>"); one ingestion at
    # most owns it, whatever the tenant (the unique constraint below).
    table_identifier = models.CharField(max_length=200, editable=False)
    engine = models.CharField(max_length=32, default="iceberg")
    cost_per_gb_usd = models.DecimalField(max_digits=10, decimal_places=4, default=0.25)
    protected = models.BooleanField(
        default=False, help_text="Refuse destructive operations (423 TABLE_PROTECTED)."
    )
    # Days a destructive refresh operation keeps what it replaced, so it can be undone;
    # None: settings.REFRESH_RETAIN_DAYS. 0: nothing is kept (no undo).
    retain_days = models.PositiveSmallIntegerField(null=True, blank=True)
    # Table maintenance (`ingestions.maintenance`): on by default; off leaves the table as
    # runs wrote it. Snapshots are kept this many hours for time travel before they may be
    # expired; None: settings.AUTOLOADER_SNAPSHOT_RETENTION_HOURS.
    # A file loaded before whose size or modification time changed (`ChangedFiles`).
    changed_files = models.CharField(
        max_length=8, choices=ChangedFiles.choices, default=ChangedFiles.RELOAD
    )
    # Files of the history no longer in the source (`GoneFiles`).
    gone_files = models.CharField(max_length=8, choices=GoneFiles.choices, default=GoneFiles.KEEP)
    maintenance_enabled = models.BooleanField(default=True)
    snapshot_retention_hours = models.PositiveIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(MAX_SNAPSHOT_RETENTION_HOURS)]
    )
    # The processed-file history in force: clearing it starts a new generation (the old
    # one is archived, for undo) instead of deleting rows.
    history_generation = models.PositiveIntegerField(default=0, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "public_id"], name="ingestion_public_id_unique_per_tenant"
            ),
            models.UniqueConstraint(
                fields=["tenant", "destination_table"],
                name="ingestion_table_unique_per_tenant",
            ),
            models.UniqueConstraint(fields=["table_identifier"], name="one_ingestion_per_table"),
        ]
        permissions = [
            ("run_ingestion", "Can trigger and cancel runs"),
            ("fresh_start_ingestion", "Can fresh-start an ingestion (drop table, keep history)"),
            ("full_refresh_ingestion", "Can fully refresh an ingestion"),
            ("drop_table_ingestion", "Can drop an ingestion's table"),
            ("clear_history_ingestion", "Can clear an ingestion's processed-file history"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.name})"

    def save(self, *args, **kwargs):
        if not self.table_identifier and self.destination_table and self.tenant_id:
            self.table_identifier = self.tenant.table_identifier(self.destination_table)
        super().save(*args, **kwargs)


class RunStatus(models.TextChoices):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class RunTrigger(models.TextChoices):
    MANUAL = "manual"
    API = "api"
    FULL_REFRESH = "full_refresh"
    FRESH_START = "fresh_start"
    SCHEDULE = "schedule"


class PublishState(models.TextChoices):
    """Where a staged run's new table version is (see `ingestions.engines.Stage`)."""

    NONE = "", "Not staged"  # an ordinary run: every batch is live once committed
    STAGING = "staging", "Staging"  # batches go to the staged version
    PUBLISHING = "publishing", "Publishing"  # the swap has begun; a resumed run finishes it
    PUBLISHED = "published", "Published"
    AWAITING_DECISION = "awaiting_decision", "Awaiting a decision"  # some files failed
    AWAITING_BATCH = "awaiting_batch", "Awaiting its batch"  # loaded; published with the rest
    DISCARDED = "discarded", "Discarded"


class OnPartialFailure(models.TextChoices):
    """What a staged run does with its new version when some files failed to load."""

    DECIDE = "decide", "Wait for a decision"
    PUBLISH = "publish", "Publish what loaded"
    DISCARD = "discard", "Discard it"


class Run(models.Model):
    public_id = models.CharField(max_length=63, unique=True, default=new_run_id)
    ingestion = models.ForeignKey(Ingestion, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices, default=RunTrigger.API)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    files_found = models.PositiveIntegerField(default=0)
    files_loaded = models.PositiveIntegerField(default=0)
    files_failed = models.PositiveIntegerField(default=0)
    failed_files = models.JSONField(default=list, blank=True)
    # Files loaded before whose size or modification time changed, and what the run did
    # with each (`ChangeAction`): [{"path", "action", "size_bytes", "was_size_bytes"}].
    files_changed = models.PositiveIntegerField(default=0)
    changed_files = models.JSONField(default=list, blank=True)
    # Files of the history the listing no longer found (the first 1,000 by name), and
    # whether the run removed their rows (the ingestion's `gone_files`).
    files_gone = models.PositiveIntegerField(default=0)
    gone_files = models.JSONField(default=list, blank=True)
    gone_removed = models.BooleanField(default=False)
    rows_written = models.BigIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker_id = models.CharField(max_length=64, blank=True, default="")
    task_id = models.CharField(max_length=64, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A staged run (a zero-downtime refresh) builds a new version of the table beside the
    # live one and publishes it, with its history, when it ends. `stage_name` names it.
    stage_name = models.CharField(max_length=64, blank=True, default="")
    stage_replaces_history = models.BooleanField(default=False)
    # A selective full refresh's scope (`ingestions.scope.Scope`, JSON): the staged version
    # replaces only the rows of the files in it, and their history entries.
    stage_scope = models.JSONField(null=True, blank=True)
    # The files whose rows and history entries its version replaces, fixed when it begins.
    stage_replacing = models.JSONField(null=True, blank=True)
    # A member of a batch refresh (`refresh.batches`): loaded, it waits for the others
    # (publish_state awaiting_batch) and the batch publishes every member or none.
    publish_hold = models.BooleanField(default=False)
    stage_write_to = models.CharField(max_length=200, blank=True, default="")
    stage_branch = models.CharField(max_length=64, blank=True, default="")
    stage_base = models.BigIntegerField(null=True, blank=True)
    publish_state = models.CharField(
        max_length=20, choices=PublishState.choices, blank=True, default=PublishState.NONE
    )
    on_partial_failure = models.CharField(
        max_length=16, choices=OnPartialFailure.choices, default=OnPartialFailure.DECIDE
    )
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["ingestion", "-created_at"], name="run_by_ingestion")]
        constraints = [
            # The database, not the code, guarantees a single active run per ingestion:
            # two racing requests cannot both insert one.
            models.UniqueConstraint(
                fields=["ingestion"],
                condition=Q(status__in=["QUEUED", "RUNNING"]),
                name="one_active_run_per_ingestion",
            )
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

    @property
    def progress(self) -> float:
        if self.status == RunStatus.SUCCESS:
            return 1.0
        if not self.files_found:
            return 0.0
        return round(min(1.0, (self.files_loaded + self.files_failed) / self.files_found), 4)

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at or not self.finished_at:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class CommitStatus(models.TextChoices):
    """Where one commit of a run (`RunBatch`) stands in the exactly-once protocol."""

    PENDING = "PENDING"  # written before the Iceberg commit
    COMMITTED = "COMMITTED"  # the commit is in the table and the files are in the history
    ABANDONED = "ABANDONED"  # the commit never reached the table; the files load again


class RunBatch(models.Model):
    """One Iceberg commit of a run: the unit of the exactly-once protocol (DESIGN §5.1)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="batches")
    batch_key = models.CharField(max_length=96, unique=True)
    status = models.CharField(max_length=16, choices=CommitStatus.choices)
    table_name = models.CharField(max_length=129)
    files = models.JSONField(default=list)  # [{"path", "size_bytes", "modified_at", "rows"}]
    rows = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    snapshot_id = models.BigIntegerField(null=True, blank=True)
    # The `_ingested_at` of every row the commit writes: the batch's mark in the table's
    # rows, which outlives its snapshot (a cluster's `expire_snapshots`).
    ingested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    committed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status"], name="runbatch_by_status")]

    def __str__(self) -> str:
        return self.batch_key


class LiveHistoryManager(models.Manager):
    """The processed-file history in force: each ingestion's current generation only.

    Rows of older generations are archived by a history clear or a refresh, kept while an
    operation can still be undone (`refresh.undo`), then purged.
    """

    def get_queryset(self):
        return super().get_queryset().filter(generation=F("ingestion__history_generation"))


class ProcessedFile(models.Model):
    ingestion = models.ForeignKey(
        Ingestion, on_delete=models.CASCADE, related_name="processed_files"
    )
    generation = models.PositiveIntegerField(default=0)
    path = models.CharField(max_length=1024)
    size_bytes = models.BigIntegerField(default=0)
    modified_at = models.DateTimeField(null=True, blank=True)
    # The same time exactly as the listing gave it (integer nanoseconds): what a run compares
    # a listed file with, no date arithmetic per file. Null for entries written before it
    # and for files listed without a time: they are compared by `modified_at`.
    modified_ns = models.BigIntegerField(null=True, blank=True)
    etag = models.CharField(max_length=128, blank=True, default="")
    # The changed version of this file a run already reported (policy warn or ignore):
    # "size:mtime_ns:etag". The next runs do not report it again; another change does.
    noticed_change = models.CharField(max_length=200, blank=True, default="", db_default="")
    rows = models.BigIntegerField(default=0)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    loaded_at = models.DateTimeField()

    all_generations = models.Manager()
    objects = LiveHistoryManager()

    class Meta:
        default_manager_name = "objects"
        base_manager_name = "all_generations"
        constraints = [
            models.UniqueConstraint(
                fields=["ingestion", "generation", "path"], name="processed_file_once"
            )
        ]

    def __str__(self) -> str:
        return self.path


class StorageLocation(models.Model):
    """A storage prefix granted to one tenant by platform staff (like Unity Catalog's
    external locations): every source of the tenant lies inside one of its locations.

    `uri` is normalized (lowercase scheme, no "..", no "//", a trailing "/"; local paths
    with symlinks resolved), and locations never overlap each other or the product's own
    files (`ingestions.locations.location_grant` checks both). S3 locations carry their
    own endpoint and keys; the secret key is stored encrypted (`ingestions.secrets`).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="locations")
    uri = models.CharField(max_length=1024, unique=True)
    name = models.CharField(max_length=200, blank=True, default="")
    s3_endpoint_url = models.CharField(max_length=512, blank=True, default="")
    s3_region = models.CharField(max_length=64, blank=True, default="")
    s3_access_key_id = models.CharField(max_length=128, blank=True, default="")
    s3_secret_access_key_encrypted = models.TextField(blank=True, default="", editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant", "uri"]

    def __str__(self) -> str:
        return f"{self.uri} ({self.tenant})"

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @property
    def has_secret(self) -> bool:
        return bool(self.s3_secret_access_key_encrypted)


class MaintenanceAction(models.TextChoices):
    EXPIRE_SNAPSHOTS = "expire_snapshots", "Expire snapshots"
    COMPACT_FILES = "compact_files", "Compact small files"
    REMOVE_ORPHAN_FILES = "remove_orphan_files", "Remove orphan files"


class TableMaintenance(models.Model):
    """One maintenance action the worker ran on an ingestion's table (`ingestions.maintenance`)."""

    ingestion = models.ForeignKey(Ingestion, on_delete=models.CASCADE, related_name="maintenance")
    table_name = models.CharField(max_length=200)
    action = models.CharField(max_length=32, choices=MaintenanceAction.choices)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    snapshots_expired = models.PositiveIntegerField(default=0)
    files_removed = models.PositiveIntegerField(default=0)
    files_compacted = models.PositiveIntegerField(default=0)
    files_written = models.PositiveIntegerField(default=0)
    bytes_freed = models.BigIntegerField(default=0)
    snapshot_id = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["ingestion", "-started_at"], name="maintenance_by_ingestion")
        ]

    def __str__(self) -> str:
        return f"{self.action} of {self.table_name} at {self.started_at:%Y-%m-%d %H:%M}"


class FileFailure(models.Model):
    """A source file that failed to load, until it loads or is released.

    `attempts` counts the runs in a row that failed it. A quarantined file (by a user, or
    by the worker after AUTOLOADER_QUARANTINE_AFTER_FAILURES failures in a row) is left out
    of every run and every preview until it is released (`ingestions.quarantine`).
    """

    ingestion = models.ForeignKey(Ingestion, on_delete=models.CASCADE, related_name="failures")
    path = models.CharField(max_length=1024)
    size_bytes = models.BigIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    last_run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    quarantined_at = models.DateTimeField(null=True, blank=True)
    # None with `quarantined_at` set: quarantined by the worker after repeated failures.
    quarantined_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["ingestion", "path"], name="one_failure_per_file")
        ]

    def __str__(self) -> str:
        return self.path

    @property
    def quarantined(self) -> bool:
        return self.quarantined_at is not None


def new_token_key() -> str:
    return f"alc_{secrets.token_urlsafe(32)}"


class ApiToken(models.Model):
    """A named API token of one user (`Authorization: Bearer <key>`).

    Only a SHA-256 digest of the key is stored: the key is shown once, when it is made.
    `prefix` (the key's first characters) tells tokens apart in lists.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)
    key_digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="token_name_unique_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


def new_verify_job_id() -> str:
    return new_public_id("vfy")


# Models of their own modules, imported here as a models package would, so that Django
# registers them with the app (and `ingestions.models` names them): the rate limits' and
# concurrency caps' counters, and the verification job.
from .ratelimit_models import ConcurrencyLease, RateCounter  # noqa: E402, F401
from .verify_models import VerifyJob, VerifyStage, VerifyStatus  # noqa: E402, F401
