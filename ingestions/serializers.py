"""JSON shapes of ingestions, runs and history, shared by every API view that returns them."""

from decimal import Decimal

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from .engines.base import MAX_TABLE_NAME_PART_LENGTH, validate_table_name
from .models import MAX_SNAPSHOT_RETENTION_HOURS, Ingestion, ProcessedFile, Run, SourceFormat
from .sources.readers import (
    MAX_LIST_OPTION_ITEMS,
    MAX_OPTION_TEXT_LENGTH,
    MAX_SKIP_ROWS,
    READER_OPTIONS,
)


def maintenance_enabled_field(**options) -> serializers.BooleanField:
    """Whether the worker maintains an ingestion's table (`ingestions.maintenance`)."""
    return serializers.BooleanField(
        help_text="Whether the worker maintains the table: compaction, snapshot expiry, "
        "orphan removal (default true).",
        **options,
    )


def snapshot_retention_hours_field() -> serializers.IntegerField:
    """The hours an ingestion's table keeps its snapshots for time travel."""
    return serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=MAX_SNAPSHOT_RETENTION_HOURS,
        help_text="Hours the table's snapshots are kept for time travel before maintenance "
        "may expire them (null: the server's default, "
        f"{settings.AUTOLOADER_SNAPSHOT_RETENTION_HOURS:g}).",
    )


def retain_days_field(**options) -> serializers.IntegerField:
    """The days an operation keeps what it replaces, for undo (an ingestion's or a request's)."""
    return serializers.IntegerField(
        required=False, min_value=0, max_value=settings.REFRESH_MAX_RETAIN_DAYS, **options
    )


# The cron expressions the schema promises the server accepts (`ingestions.cron.cron_parse`):
# five fields, a fixed minute (so at most hourly, above the 5-minute minimum interval), days
# of the month every month has. The server accepts more (ranges, steps, names, lists).
CRON_PATTERN = r"^([1-5]?\d) (\*|1?\d|2[0-3]) (\*|[1-9]|1\d|2[0-8]) (\*|[1-9]|1[0-2]) (\*|[0-6])$"


class StrictSerializer(serializers.Serializer):
    """Refuses unknown fields: a typo in a request must not be silently ignored.

    Nor does a field take a value of another JSON type that DRF would convert (`0` for the
    text "0", `0` or "yes" for false, "5" for 5): the schema names one type, and so does the
    server (the API parses JSON only, so a value's type is the client's choice).
    """

    # What drf-spectacular cannot infer from the fields (a choice between fields, unique
    # items...): merged into this serializer's request component by `console.schema`.
    openapi_extra: dict = {}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
            wrong = {
                name: [f"Not {kind}."]
                for name, field in self.fields.items()
                if (kind := _wrong_type(field, data.get(name)))
            }
            if wrong:  # reported with the other fields' errors
                try:
                    super().to_internal_value(data)
                except serializers.ValidationError as exc:
                    raise serializers.ValidationError({**exc.detail, **wrong}) from None
                raise serializers.ValidationError(wrong)
        return super().to_internal_value(data)


def _wrong_type(field, value) -> str:
    """What `field` (or each item of a list field) takes, when `value` is of another JSON
    type; "" when it is not (null is left to the field, which allows it or not)."""
    if value is None:
        return ""
    if isinstance(field, serializers.ListField) and isinstance(value, list):
        return next(filter(None, (_wrong_type(field.child, item) for item in value)), "")
    if isinstance(field, serializers.CharField) and not isinstance(value, str):
        return "a string"
    if isinstance(field, serializers.BooleanField) and not isinstance(value, bool):
        return "true or false"
    if isinstance(field, serializers.IntegerField) and (
        not isinstance(value, int) or isinstance(value, bool)
    ):
        return "an integer"
    return ""


class AmountField(serializers.DecimalField):
    """A non-negative amount: a JSON number or a decimal string, with at most
    `decimal_places` decimals and `max_digits` digits (its schema says exactly that)."""

    def __init__(self, *, max_digits: int, decimal_places: int, **options):
        super().__init__(
            max_digits=max_digits, decimal_places=decimal_places, min_value=0, **options
        )


class AmountFieldSchema(OpenApiSerializerFieldExtension):
    target_class = AmountField

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        whole, places = field.max_digits - field.decimal_places, field.decimal_places
        step = Decimal(1).scaleb(-places)
        return {
            "anyOf": [
                {"type": "string", "pattern": rf"^\d{{1,{whole}}}(\.\d{{1,{places}}})?$"},
                {
                    "type": "number",
                    "minimum": 0,
                    "maximum": float(Decimal(10) ** whole - step),
                    "multipleOf": float(step),
                },
            ]
        }


class RunOutputSerializer(serializers.ModelSerializer):
    run_id = serializers.CharField(source="public_id")
    ingestion_id = serializers.CharField(source="ingestion.public_id")
    progress = serializers.FloatField()
    duration_seconds = serializers.FloatField(allow_null=True)
    failed_files = serializers.ListField(child=serializers.DictField())
    changed_files = serializers.ListField(
        child=serializers.DictField(),
        help_text="Files loaded before whose size or modification time changed, and what the "
        "run did with each: reloaded, warned or ignored (the first 1,000; files_changed "
        "counts them all).",
    )
    gone_files = serializers.ListField(
        child=serializers.CharField(),
        help_text="Files of the history this run's listing no longer found (the first 1,000; "
        "files_gone counts them all); gone_removed: whether their rows were removed.",
    )
    run_url = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "run_id",
            "ingestion_id",
            "status",
            "trigger",
            "files_found",
            "files_loaded",
            "files_failed",
            "failed_files",
            "files_changed",
            "changed_files",
            "files_gone",
            "gone_files",
            "gone_removed",
            "rows_written",
            "bytes_read",
            "progress",
            "cancel_requested",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "error",
            "run_url",
        ]

    def get_run_url(self, run: Run) -> str:
        return f"/api/v1/runs/{run.public_id}"


class IngestionOutputSerializer(serializers.ModelSerializer):
    """An ingestion with its table's state and last run (both given in the context)."""

    id = serializers.CharField(source="public_id")
    source = serializers.SerializerMethodField()
    destination = serializers.SerializerMethodField()
    cost_per_gb_usd = serializers.FloatField()
    table = serializers.SerializerMethodField()
    last_run = serializers.SerializerMethodField()
    schedule = serializers.SerializerMethodField(
        help_text="The run schedule (cron, timezone, paused, next_fire_times...) or null."
    )

    class Meta:
        model = Ingestion
        fields = [
            "id",
            "name",
            "source",
            "destination",
            "engine",
            "cost_per_gb_usd",
            "protected",
            "retain_days",
            "maintenance_enabled",
            "snapshot_retention_hours",
            "changed_files",
            "gone_files",
            "created_at",
            "updated_at",
            "table",
            "last_run",
            "schedule",
        ]

    def get_source(self, ingestion: Ingestion) -> dict:
        return {
            "uri": ingestion.source_uri,
            "format": ingestion.source_format,
            "pattern": ingestion.source_pattern or None,
            "options": ingestion.source_options,
        }

    def get_destination(self, ingestion: Ingestion) -> dict:
        return {"table": ingestion.destination_table, "identifier": ingestion.table_identifier}

    def get_table(self, ingestion: Ingestion) -> dict | None:
        tables = self.context.get("tables", {})
        return tables.get(ingestion.pk)

    def get_last_run(self, ingestion: Ingestion) -> dict | None:
        last_runs = self.context.get("last_runs", {})
        run = last_runs.get(ingestion.pk)
        return RunOutputSerializer(run).data if run is not None else None

    def get_schedule(self, ingestion: Ingestion) -> dict | None:
        return self.context.get("schedules", {}).get(ingestion.pk)


class ProcessedFileOutputSerializer(serializers.ModelSerializer):
    run_id = serializers.CharField(source="run.public_id", allow_null=True, default=None)

    class Meta:
        model = ProcessedFile
        fields = ["path", "size_bytes", "modified_at", "rows", "run_id", "loaded_at"]


# --- the source and destination of an ingestion, as the API takes them ---------------

# The form of a source URI (`ingestions.locations`): an absolute path, file:// or s3://, no
# control character, query string or fragment. Where it may point is the tenant's locations.
SOURCE_URI_PATTERN = r"^(/|[Ff][Ii][Ll][Ee]://|[Ss]3://)[^\x00-\x1f?#]*$"
# Text encodings the schema offers for the csv reader's `encoding` (the server knows more).
TEXT_ENCODINGS = ["ascii", "cp1252", "iso-8859-1", "latin-1", "utf-16", "utf-8", "utf8"]
TABLE_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,63}\.[a-z_][a-z0-9_]{0,63}$"


def reject_null_characters(value) -> None:
    """PostgreSQL's jsonb cannot store a NUL character, in a key or in a string value."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            raise serializers.ValidationError("Null characters are not allowed.")


def reader_options_schema(file_format: str) -> dict:
    """The reader options `validate_reader_options` accepts for `file_format`, as a schema."""
    text = {"type": "string", "pattern": r"^[^\x00]*$"}
    character = {"type": "string", "pattern": r"^[^\x00]$"}
    texts = {
        "type": "array",
        "items": {**text, "maxLength": MAX_OPTION_TEXT_LENGTH},
        "maxItems": MAX_LIST_OPTION_ITEMS,
    }
    kinds = {
        bool: {"type": "boolean"},
        int: {"type": "integer", "minimum": 0, "maximum": MAX_SKIP_ROWS},
        list: texts,
        str: {"type": "string", "enum": TEXT_ENCODINGS},  # encoding: a few of the many
    }
    properties = {
        name: character if name in ("delimiter", "quote_char") else kinds[kind]
        for name, kind in READER_OPTIONS[file_format].items()
    }
    return {"type": "object", "properties": properties, "additionalProperties": False}


# Each format with its own reader options; `absent` adds the case of no format given (a
# PATCH keeps the ingestion's, so no option is known to be valid).
def options_by_format(*, absent: bool = False) -> list[dict]:
    cases = [
        {"properties": {"format": {"enum": [name]}, "options": reader_options_schema(name)}}
        for name in SourceFormat.values
    ]
    if absent:
        no_options = {"type": "object", "additionalProperties": False}
        cases.append({"properties": {"format": {"not": {}}, "options": no_options}})
    return cases


class SourceInputSerializer(StrictSerializer):
    openapi_extra = {
        "properties": {"uri": {"pattern": SOURCE_URI_PATTERN}},
        "anyOf": options_by_format(),
    }

    uri = serializers.CharField(max_length=1024)
    format = serializers.ChoiceField(choices=SourceFormat.choices)
    pattern = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    options = serializers.DictField(
        required=False, default=dict, validators=[reject_null_characters]
    )


class DestinationInputSerializer(StrictSerializer):
    # The pattern is declared for the OpenAPI schema; validate_table gives the clear message.
    table = serializers.RegexField(
        TABLE_NAME_PATTERN,
        max_length=129,
        error_messages={"invalid": "Use 'namespace.table' in lowercase letters, digits and _."},
    )

    def validate_table(self, value: str) -> str:
        try:
            return validate_table_name(value, max_part_length=MAX_TABLE_NAME_PART_LENGTH)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
