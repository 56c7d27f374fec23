"""Forms of the console: list filters, the typed-name confirmation, the tenant switcher,
and the ingestion form (create, edit) with its source check.

The confirmation is the console's own rule on top of the services' `confirm=True`: the
operator types the destination table's name, and the server compares it exactly.
"""

from decimal import Decimal

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from ingestions.audit import CHANGE_ACTIONS
from ingestions.engines import ENGINE_CHOICES
from ingestions.errors import (
    AutoloaderError,
    IngestionConflictError,
    PermissionDeniedError,
    SourceNotAllowedError,
    TableExistsError,
)
from ingestions.locations import location_folder, location_list, location_prefix, source_resolve
from ingestions.models import (
    MAX_SNAPSHOT_RETENTION_HOURS,
    ChangedFiles,
    GoneFiles,
    Membership,
    RunStatus,
    SourceFormat,
    validate_public_id,
)
from ingestions.services import ExistingTable
from ingestions.sources.readers import READER_OPTIONS, validate_reader_options
from refresh.models import OperationKind, OperationStatus

from .selectors import STATUS_FILTER_ACTIVE, STATUS_FILTER_NEVER

REFUSED_OUTCOME = "refused"  # what `refresh.audit.record_refusal` writes as the outcome


class IngestionFilterForm(forms.Form):
    q = forms.CharField(label="Search", required=False, max_length=200)
    status = forms.ChoiceField(
        label="Last run",
        required=False,
        choices=[
            ("", "Any status"),
            (STATUS_FILTER_ACTIVE, "Queued or running"),
            *[(status.value, status.label.capitalize()) for status in RunStatus],
            (STATUS_FILTER_NEVER, "Never run"),
        ],
    )

    def filters(self) -> dict:
        """The valid filters; an invalid value filters nothing rather than failing the page."""
        if not self.is_valid():
            return {"query": "", "status": ""}
        return {"query": self.cleaned_data["q"].strip(), "status": self.cleaned_data["status"]}


class ConfirmOperationForm(forms.Form):
    typed_name = forms.CharField(label="Table name", strip=False, max_length=200, required=False)
    plan_id = forms.CharField(required=False, max_length=63, widget=forms.HiddenInput)

    def __init__(self, *args, table_name: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.table_name = table_name

    def clean_typed_name(self) -> str:
        typed = self.cleaned_data["typed_name"]
        if typed != self.table_name:
            shown = f"“{typed}”" if typed else "nothing"
            raise forms.ValidationError(
                f"You typed {shown}, which is not the table name {self.table_name}: "
                "nothing was changed. Type the name exactly to confirm.",
                code="name_mismatch",
            )
        return typed


class TenantSwitchForm(forms.Form):
    tenant = forms.ChoiceField(label="Tenant")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        memberships = Membership.objects.filter(user=user).select_related("tenant")
        self.fields["tenant"].choices = [
            (membership.tenant.slug, membership.tenant.name)
            for membership in memberships.order_by("tenant__name")
        ]


class AuditFilterForm(forms.Form):
    operation = forms.ChoiceField(
        label="Operation",
        required=False,
        choices=[("", "Any operation"), *OperationKind.choices, *CHANGE_ACTIONS],
    )
    outcome = forms.ChoiceField(
        label="Outcome",
        required=False,
        choices=[
            ("", "Any outcome"),
            *[
                (status.value, status.label.capitalize())
                for status in OperationStatus
                if status != OperationStatus.IN_PROGRESS
            ],
            (REFUSED_OUTCOME, "Refused"),
        ],
    )
    actor = forms.CharField(label="User", required=False, max_length=150)
    ingestion = forms.CharField(label="Ingestion id", required=False, max_length=63)

    def filters(self) -> dict:
        if not self.is_valid():
            return {}
        data = self.cleaned_data
        return {
            "operation": data["operation"],
            "outcome": data["outcome"],
            "actor": data["actor"].strip(),
            "ingestion_id": data["ingestion"].strip(),
        }


class HistorySearchForm(forms.Form):
    path = forms.CharField(label="Path starts with", required=False, max_length=1024)
    after = forms.CharField(required=False, max_length=1024, widget=forms.HiddenInput)

    def search(self) -> tuple[str, str]:
        """(prefix, cursor); an invalid query (too long, a NUL) searches nothing special."""
        if not self.is_valid():
            return "", ""
        return self.cleaned_data["path"], self.cleaned_data["after"]


# --- creating and changing an ingestion ---------------------------------------------------
#
# The forms parse and shape what a person typed; every rule (the source inside a location,
# the table name, the reader options, conflicts) is the services' (`ingestions.services`),
# and their errors come back onto the right field through `add_service_error`.

# Words for the reader options of `ingestions.sources.readers.READER_OPTIONS`: a new option
# there gets a field here without one, labelled from its name.
READER_OPTION_WORDS = {
    "delimiter": ("Delimiter", "One character; \\t for a tab. Blank: a comma."),
    "header": ("The first row names the columns", ""),
    "quote_char": ("Quote character", 'One character. Blank: ".'),
    "encoding": ("Encoding", "For example latin-1 or cp1252. Blank: UTF-8."),
    "skip_rows": ("Rows to skip", "Lines skipped at the start of every file, before the header."),
    "null_values": ("Null values", "Comma-separated markers read as null, for example NA, NULL."),
    "newlines_in_values": ("Quoted values may span lines", "Slower to read; only if needed."),
    "column_names": (
        "Column names",
        "Comma-separated; replaces the header's names, or names the columns of files without one.",
    ),
}
# What the reader does when a true/false option is absent (`readers._read_csv`): a checkbox
# is sent only when it says otherwise, or when the ingestion already states it.
READER_BOOLEAN_DEFAULTS = {"header": True, "newlines_in_values": False}
ENGINE_LABELS = {
    "iceberg": "iceberg (embedded, in the worker)",
    "spark": "spark (Spark's executors)",
}
# The service's error keys that are not the form's field names.
SERVICE_ERROR_FIELDS = {"source_uri": "sub_path", "source.options": None}


def reader_option_field_name(file_format: str, option: str) -> str:
    return f"{file_format}_{option}"


def _reader_option_field(option: str, kind: type) -> forms.Field:
    label, help_text = READER_OPTION_WORDS.get(option, (option.replace("_", " ").capitalize(), ""))
    if kind is bool:
        return forms.BooleanField(
            label=label,
            help_text=help_text,
            required=False,
            initial=READER_BOOLEAN_DEFAULTS.get(option, False),
        )
    if kind is int:
        return forms.IntegerField(label=label, help_text=help_text, required=False, min_value=0)
    # Text and lists (comma-separated) alike; spaces may be a delimiter, so kept as typed.
    return forms.CharField(label=label, help_text=help_text, required=False, strip=False)


def _reader_option_value(kind: type, value):
    """The typed value of a filled-in option field; None when it was left blank."""
    if kind in (bool, int) or value is None:
        return value
    if kind is list:
        items = [item.strip() for item in value.split(",")]
        return [item for item in items if item] or None
    if value.strip() == "":
        return None
    return "\t" if value == "\\t" else value


class SourceForm(forms.Form):
    """Where an ingestion reads: one of the tenant's locations, a folder inside it, a format,
    a pattern and the format's reader options. The "Check source" form, and the first half
    of `IngestionForm`."""

    location = forms.ChoiceField(label="Storage location")
    sub_path = forms.CharField(
        label="Folder inside the location",
        required=False,
        max_length=1024,
        help_text="For example sales/daily, or its full path inside the location. Blank: the "
        "whole location.",
    )
    source_format = forms.ChoiceField(label="Format", choices=SourceFormat.choices, initial="csv")
    source_pattern = forms.CharField(
        label="File name pattern",
        required=False,
        max_length=255,
        help_text="A glob on the file's name or path, for example *.csv. Blank: every file.",
    )

    def __init__(self, *args, tenant, **kwargs):
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        self.locations = {str(location.pk): location for location in location_list(tenant=tenant)}
        self.fields["location"].choices = [
            (key, f"{location.name} · {location.uri}" if location.name else location.uri)
            for key, location in self.locations.items()
        ]
        self.fields["location"].error_messages["invalid_choice"] = (
            "Choose one of your tenant's storage locations."
        )
        for file_format, options in READER_OPTIONS.items():
            for option, kind in options.items():
                self.fields[reader_option_field_name(file_format, option)] = _reader_option_field(
                    option, kind
                )

    def reader_option_groups(self) -> list[tuple[str, str, list]]:
        """(format, its label, its bound option fields), for the template."""
        labels = dict(SourceFormat.choices)
        return [
            (
                file_format,
                labels.get(file_format, file_format),
                [self[reader_option_field_name(file_format, option)] for option in options],
            )
            for file_format, options in READER_OPTIONS.items()
        ]

    def clean(self):
        cleaned = super().clean()
        self._clean_folder(cleaned)
        # One option at a time through the reader's own check: each error on its field.
        for option, value in self.reader_options().items():
            try:
                validate_reader_options(
                    file_format=cleaned["source_format"], options={option: value}
                )
            except ValueError as exc:
                self.add_error(reader_option_field_name(cleaned["source_format"], option), str(exc))
        return cleaned

    def _clean_folder(self, cleaned: dict) -> None:
        """A full path or URI pasted as the folder is taken when it lies inside the chosen
        location (`location_folder` makes it relative; a link or ".." out is refused)."""
        sub_path = (cleaned.get("sub_path") or "").strip()
        if not (sub_path.startswith("/") or "://" in sub_path):
            return
        location = self.locations.get(cleaned.get("location") or "")
        if location is None:
            return  # the location's own error says it
        try:
            cleaned["sub_path"] = location_folder(location=location, path=sub_path)
        except ValueError as exc:
            self.add_error(
                "sub_path",
                forms.ValidationError(
                    f"{exc} Give a folder inside it, like sales/daily, or a full path that "
                    "starts with the location's.",
                    code="not_inside",
                ),
            )

    def reader_options(self, *, stated: frozenset = frozenset()) -> dict:
        """The selected format's options that were filled in (other formats' are ignored);
        `stated`: true/false options to send even at the reader's default."""
        file_format = self.cleaned_data.get("source_format")
        options = {}
        for option, kind in READER_OPTIONS.get(file_format, {}).items():
            value = _reader_option_value(
                kind, self.cleaned_data.get(reader_option_field_name(file_format, option))
            )
            if value is None:
                continue
            if (
                kind is bool
                and option not in stated
                and value == READER_BOOLEAN_DEFAULTS.get(option, False)
            ):
                continue
            options[option] = value
        return options

    def source_uri(self) -> str:
        location = self.locations[self.cleaned_data["location"]]
        return location.uri + self.cleaned_data["sub_path"]


class IngestionForm(SourceForm):
    """A new ingestion (`ingestion=None`), or the fields of one that may change
    (`ingestions.services.UPDATABLE_FIELDS`): its id, table and engine are fixed at creation."""

    name = forms.CharField(label="Name", max_length=200)
    public_id = forms.CharField(
        label="Id",
        required=False,
        max_length=63,
        validators=[validate_public_id],
        help_text="In URLs and the API. Blank: one is generated.",
    )
    destination_table = forms.CharField(
        label="Destination table",
        max_length=129,
        help_text="namespace.table in lowercase letters, digits and _, for example raw.sales.",
    )
    engine = forms.ChoiceField(
        label="Engine",
        choices=[(engine, ENGINE_LABELS.get(engine, engine)) for engine in ENGINE_CHOICES],
        initial="iceberg",
    )
    existing_table = forms.ChoiceField(
        label="The table already exists",
        required=False,
        choices=ExistingTable.choices,
        widget=forms.RadioSelect,
    )
    cost_per_gb_usd = forms.DecimalField(
        label="Cost per GB (USD)",
        max_digits=10,
        decimal_places=4,
        min_value=0,
        required=False,
        help_text="Used to estimate what a run or a refresh costs. Blank: the default rate.",
    )
    retain_days = forms.IntegerField(
        label="Keep replaced data for undo (days)",
        required=False,
        min_value=0,
        max_value=settings.REFRESH_MAX_RETAIN_DAYS,
        help_text=f"0: no undo. Blank: the default, {settings.REFRESH_RETAIN_DAYS} days.",
    )
    maintenance_enabled = forms.BooleanField(
        label="Maintain the table (compaction, snapshot expiry)", required=False, initial=True
    )
    snapshot_retention_hours = forms.IntegerField(
        label="Keep snapshots for (hours)",
        required=False,
        min_value=0,
        max_value=MAX_SNAPSHOT_RETENTION_HOURS,
        help_text="Time travel window. Blank: the default, "
        f"{settings.AUTOLOADER_SNAPSHOT_RETENTION_HOURS:g} hours.",
    )
    changed_files = forms.ChoiceField(
        label="A file loaded before changes",
        choices=ChangedFiles.choices,
        initial=ChangedFiles.RELOAD,
        required=False,
        help_text="Reload replaces its rows in one commit; warn loads nothing and flags it on "
        "the run; ignore keeps its old rows.",
    )
    gone_files = forms.ChoiceField(
        label="A file leaves the source",
        choices=GoneFiles.choices,
        initial=GoneFiles.KEEP,
        required=False,
        help_text="Remove: the next run removes its rows in one commit (never more than half "
        "the history at once).",
    )
    protected = forms.BooleanField(
        label="Protected: refuse destructive operations", required=False, initial=False
    )

    def __init__(self, *args, tenant, ingestion=None, **kwargs):
        super().__init__(*args, tenant=tenant, **kwargs)
        self.ingestion = ingestion
        self.source_outside = False  # the ingestion's source is in none of the locations
        self.table_exists = False  # creation met an existing table: offer adopt/replace
        if ingestion is None:
            return
        for fixed in ("public_id", "destination_table", "engine", "existing_table"):
            del self.fields[fixed]
        self.fields["cost_per_gb_usd"].required = True
        self.fields["cost_per_gb_usd"].help_text = "Used to estimate what a run or a refresh costs."
        self.initial.update(self._initial_of(ingestion))

    def _initial_of(self, ingestion) -> dict:
        initial = {
            field: getattr(ingestion, field)
            for field in (
                "name",
                "source_format",
                "source_pattern",
                "cost_per_gb_usd",
                "retain_days",
                "maintenance_enabled",
                "snapshot_retention_hours",
                "changed_files",
                "gone_files",
                "protected",
            )
        }
        try:
            _, location = source_resolve(tenant=self.tenant, uri=ingestion.source_uri)
            initial["location"] = str(location.pk)
            initial["sub_path"] = location_prefix(ingestion.source_uri)[len(location.uri) :]
            initial["sub_path"] = initial["sub_path"].strip("/")
        except (SourceNotAllowedError, ValueError):
            self.source_outside = True
        for option, value in ingestion.source_options.items():
            name = reader_option_field_name(ingestion.source_format, option)
            if name in self.fields:
                if isinstance(value, list):
                    value = ", ".join(value)
                initial[name] = "\\t" if value == "\t" else value  # as it is typed
        return initial

    def clean_cost_per_gb_usd(self):
        cost = self.cleaned_data["cost_per_gb_usd"]
        # As stored (four places): 0.25 and 0.2500 are one rate, not a change.
        return None if cost is None else cost.quantize(Decimal("0.0001"))

    def create_arguments(self) -> dict:
        """Keyword arguments of `ingestions.services.ingestion_create`, besides tenant/actor."""
        data = self.cleaned_data
        return {
            "public_id": data["public_id"] or None,
            "name": data["name"],
            "source_uri": self.source_uri(),
            "source_format": data["source_format"],
            "source_pattern": data["source_pattern"],
            "source_options": self.reader_options(),
            "destination_table": data["destination_table"],
            "engine": data["engine"],
            "cost_per_gb_usd": data["cost_per_gb_usd"],
            "protected": data["protected"],
            "retain_days": data["retain_days"],
            "maintenance_enabled": data["maintenance_enabled"],
            "snapshot_retention_hours": data["snapshot_retention_hours"],
            "changed_files": data["changed_files"] or ChangedFiles.RELOAD,
            "gone_files": data["gone_files"] or GoneFiles.KEEP,
            "existing_table": data["existing_table"] or None,
        }

    def changes(self) -> dict:
        """The `data` of `ingestions.services.ingestion_update`: the fields whose value
        differs from the ingestion's (the same place spelled another way is no change)."""
        ingestion, data = self.ingestion, self.cleaned_data
        values = {
            "name": data["name"],
            "source_format": data["source_format"],
            "source_pattern": data["source_pattern"],
            "source_options": self.reader_options(stated=frozenset(ingestion.source_options)),
            "cost_per_gb_usd": data["cost_per_gb_usd"],
            "protected": data["protected"],
            "retain_days": data["retain_days"],
            "maintenance_enabled": data["maintenance_enabled"],
            "snapshot_retention_hours": data["snapshot_retention_hours"],
            "changed_files": data["changed_files"] or ingestion.changed_files,
            "gone_files": data["gone_files"] or ingestion.gone_files,
        }
        changed = {
            field: value for field, value in values.items() if value != getattr(ingestion, field)
        }
        uri = self.source_uri()
        try:
            same_place = location_prefix(uri) == location_prefix(ingestion.source_uri)
        except ValueError:
            same_place = False
        if not same_place:
            changed["source_uri"] = uri
        return changed

    def add_service_error(self, exc: Exception) -> None:
        """Put a service's refusal on the field it is about (the form's top otherwise)."""
        if isinstance(exc, ValidationError):
            errors = exc.error_dict if hasattr(exc, "error_dict") else {None: exc.error_list}
            for key, messages in errors.items():
                field = SERVICE_ERROR_FIELDS.get(key, key)
                self.add_error(field if field in self.fields else None, messages)
        elif isinstance(exc, SourceNotAllowedError):
            self.add_error("sub_path", exc.detail)
        elif isinstance(exc, TableExistsError):
            self.table_exists = True
            self.add_error(
                "destination_table",
                f"{exc.detail} Choose below what to do with its rows, then create again.",
            )
        elif isinstance(exc, IngestionConflictError):
            public_id = self.cleaned_data.get("public_id")
            on_id = bool(public_id) and repr(public_id) in exc.detail
            self.add_error("public_id" if on_id else "destination_table", exc.detail)
        elif isinstance(exc, PermissionDeniedError) and self.cleaned_data.get("existing_table"):
            self.add_error("existing_table", exc.detail)
        else:
            self.add_error(None, exc.detail if isinstance(exc, AutoloaderError) else str(exc))


class IngestionDeleteForm(forms.Form):
    """What deleting does to the table, besides the typed name (`ConfirmOperationForm`)."""

    drop_table = forms.BooleanField(label="Also drop the table and its rows", required=False)


class ProtectForm(forms.Form):
    protected = forms.TypedChoiceField(
        choices=[("true", "Protect"), ("false", "Unprotect")], coerce=lambda value: value == "true"
    )


class BatchForm(forms.Form):
    """Which ingestions a batch refresh covers, and which operation (from the list page)."""

    ingestion_ids = forms.MultipleChoiceField(label="Ingestions")
    operation = forms.ChoiceField(
        choices=[("full_refresh", "Full refresh"), ("fresh_start", "Fresh start")]
    )

    def __init__(self, *args, ingestion_ids: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["ingestion_ids"].choices = [(value, value) for value in ingestion_ids]


class BatchConfirmForm(BatchForm):
    """The confirmation of a batch refresh: the number of tables, typed."""

    typed_count = forms.CharField(label="Number of tables", max_length=10, required=False)
    plan_id = forms.CharField(required=False, max_length=63, widget=forms.HiddenInput)

    def clean(self):
        cleaned = super().clean()
        expected = len(cleaned.get("ingestion_ids") or [])
        typed = (cleaned.get("typed_count") or "").strip()
        if typed != str(expected):
            shown = f"“{typed}”" if typed else "nothing"
            self.add_error(
                "typed_count",
                f"You typed {shown}, not the number of tables ({expected}): nothing was "
                "changed. Type it to confirm.",
            )
        return cleaned
