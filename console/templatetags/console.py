"""Template tags of the console: number formats, status badges, the runs chart, a preview's words.

Presentation only: every number comes from a service, selector or presenter as it is; these
tags format it (bytes to "450.2 GB", seconds to "4 min 12 s") and never compute a new one.
"""

from types import SimpleNamespace

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from console.plumbing import ERROR_TITLES
from ingestions.formats import NOT_AVAILABLE, counted, size, thousands
from ingestions.models import RunStatus
from ingestions.selectors import memberships_of
from refresh import presenters
from refresh.models import OperationStatus, StepName, StepStatus
from refresh.specs import STEPS, spec_of

register = template.Library()
register.filter("thousands", thousands)
register.filter("size", size)
# What a preview deletes and keeps, and each step's line: words of refresh (`presenters`),
# the same for every adapter.
register.simple_tag(presenters.step_description, name="step_description")
register.simple_tag(presenters.blast_radius, name="blast_radius")


# CSS tone of every status the console shows: runs, operations, steps, audit outcomes.
TONES = {
    RunStatus.QUEUED: "info",
    RunStatus.RUNNING: "info",
    RunStatus.SUCCESS: "ok",
    RunStatus.PARTIAL_SUCCESS: "warn",
    RunStatus.FAILED: "bad",
    RunStatus.CANCELLED: "muted",
    OperationStatus.IN_PROGRESS: "info",
    OperationStatus.ACCEPTED: "ok",
    OperationStatus.SUCCESS: "ok",
    OperationStatus.PARTIAL_FAILURE: "warn",
    OperationStatus.FAILED: "bad",
    OperationStatus.PUBLISHED: "ok",
    OperationStatus.AWAITING_DECISION: "warn",  # someone has to publish or discard
    OperationStatus.DISCARDED: "muted",
    OperationStatus.CANCELLED: "muted",
    OperationStatus.UNDONE: "info",
    StepStatus.PENDING: "muted",
    StepStatus.SKIPPED: "muted",
    "refused": "bad",
    "dry_run": "info",
}


@register.filter
def duration(seconds) -> str:
    """Seconds as "0.4 s", "42 s", "4 min 12 s", "1 h 5 min"; None -> a dash."""
    if seconds is None:
        return NOT_AVAILABLE
    seconds = float(seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{round(seconds)} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def ago(moment) -> str:
    """A past moment as "just now" or "3 minutes ago" (the exact time goes in a title)."""
    if moment is None:
        return NOT_AVAILABLE
    if (timezone.now() - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment)} ago"


@register.filter
def usd(value) -> str:
    if value is None:
        return NOT_AVAILABLE
    return f"${float(value):,.2f}"


@register.filter
def gb(value) -> str:
    """A GB figure as the API gives it (already rounded), with thousands separators."""
    if value is None:
        return NOT_AVAILABLE
    return f"{float(value):,} GB"


@register.filter
def tone(status) -> str:
    return TONES.get(status, "muted")


@register.filter
def humanize_code(value) -> str:
    """ "PARTIAL_SUCCESS" / "partial_failure" -> "Partial success" / "Partial failure"."""
    text = str(value or "").replace("_", " ").strip()
    return text[:1].upper() + text[1:].lower()


@register.filter
def kind_label(kind) -> str:
    try:
        return spec_of(kind).label
    except (ValueError, KeyError):
        return humanize_code(kind)


# --- audit entries in words ------------------------------------------------------------

# The audit's field names as the console's forms call them.
AUDIT_FIELD_LABELS = {
    "public_id": "id",
    "source_uri": "source",
    "source_format": "format",
    "source_pattern": "pattern",
    "source_options": "reader options",
    "destination_table": "table",
    "table_identifier": "catalog table",
    "cost_per_gb_usd": "cost per GB (USD)",
    "snapshot_retention_hours": "snapshot retention (hours)",
}
AUDIT_VALUE_WORDS = {"True": "yes", "False": "no", True: "yes", False: "no"}


def _audit_value(value) -> str | None:
    if value is None or value == "" or value == "None":
        return None
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or None
    return AUDIT_VALUE_WORDS.get(value, str(value))


@register.filter
def audit_changes(changes) -> list[dict]:
    """An audit entry's changes as lines a person reads: [{"field", "old", "new"}], each
    value in words ("yes"/"no", None for nothing). A value set on creation has no old one
    and an empty value set then is left out (it is the default)."""
    if not isinstance(changes, dict):
        return []
    lines = []
    for field, values in changes.items():
        old, new = [*values, None, None][:2] if isinstance(values, list) else (None, values)
        old, new = _audit_value(old), _audit_value(new)
        if old is None and new is None:
            continue
        label = AUDIT_FIELD_LABELS.get(field, str(field).replace("_", " "))
        lines.append({"field": label, "old": old, "new": new})
    return lines


@register.simple_tag
def audit_impact(data) -> str:
    """What a refresh operation's entry did, in words, from its steps' records: "Dropped
    raw.sales: 4,800 rows, 1.2 MB; 12 files forgotten; run run-1 queued (12 files to load,
    3.4 MB, $0.00)". "" for an entry written before steps kept their details."""
    if not isinstance(data, dict):
        return ""
    if data.get("outcome") == "refused":
        return ""
    if data.get("operation") == "undo":
        restored, discarded = data.get("restored") or {}, data.get("discarded") or {}
        parts = [
            f"Back to {_table_words(restored)}" if restored else "",
            f"the version undone had {_table_words(discarded)}" if discarded else "",
        ]
        return "; ".join(part for part in parts if part)
    if data.get("decision"):
        return f"The new version was {data['decision']}"
    steps = [step for step in data.get("steps") or [] if "details" in step]
    if not steps:
        return ""
    words = []
    impact = data.get("impact") or {}
    for step in steps:
        record = SimpleNamespace(
            name=step.get("operation"),
            status=step.get("status"),
            details=step.get("details") or {},
            error_code=step.get("error_code"),
            error="",
        )
        if record.status == StepStatus.FAILED:
            words.append(f"{step_title(record.name).lower()} failed ({record.error_code})")
            continue
        if record.status != StepStatus.SUCCESS:
            continue
        outcome = step_outcome(record)
        if record.name == StepName.RUN_TRIGGERED and impact:
            files = int(impact.get("files_to_process") or 0)
            outcome += (
                f" ({thousands(files)} file{'s' if files != 1 else ''} to load, "
                f"{_impact_size(impact)}, "
                f"{usd(impact.get('estimated_cost_usd'))})"
            )
        words.append(outcome)
    return "; ".join(word for word in words if word)


def _impact_size(impact: dict) -> str:
    """Bytes in the unit that fits; entries written before bytes were kept have GB only."""
    if impact.get("bytes_to_process") is not None:
        return size(impact["bytes_to_process"])
    return gb(impact.get("estimated_data_size_gb"))


def _table_words(record: dict) -> str:
    """{"row_count", "history_files", ...} of an undo's record -> "4,800 rows, 12 files in
    the history"."""
    parts = []
    if record.get("row_count") is not None:
        parts.append(counted(record["row_count"], "row"))
    if record.get("history_files") is not None:
        parts.append(f"{counted(record['history_files'], 'file')} in the history")
    return ", ".join(parts)


@register.filter
def refusal_words(reason) -> str:
    """A refusal's code in words: "TABLE_PROTECTED" -> "This ingestion is protected"."""
    return ERROR_TITLES.get(str(reason or ""), humanize_code(reason))


@register.filter
def step_title(name, operation=None) -> str:
    """What a step does; in zero-downtime mode (`operation` given), what it does at publish."""
    step = STEPS.get(name)
    if step is None:
        return humanize_code(name)
    staged = operation is not None and operation.zero_downtime
    return step.staged_title if staged else step.title


@register.filter
def percent(fraction) -> int:
    return round(float(fraction or 0) * 100)


@register.inclusion_tag("partials/_badge.html")
def badge(status, label=""):
    return {"status": status, "tone": tone(status), "label": label or humanize_code(status)}


# --- the runs chart --------------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT = 960, 170
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 56, 56, 14, 22
CHART_SLOTS = 30


def compact_number(value: int) -> str:
    """A count in at most five characters: 999, 12.3k, 2.5M, 1.2B."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            scaled = value / limit
            text = f"{scaled:.1f}" if scaled < 100 else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return str(value)


@register.inclusion_tag("partials/_run_chart_svg.html")
def run_chart(runs):
    """An SVG of the last 30 runs, oldest left: rows loaded as bars, duration as a line."""
    runs = list(reversed(list(runs)[:CHART_SLOTS]))
    plot_width = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    slot = plot_width / CHART_SLOTS
    most_rows = max((run.rows_written for run in runs), default=0)
    durations = [run.duration_seconds for run in runs]
    longest = max((value for value in durations if value is not None), default=None)
    first_slot = CHART_SLOTS - len(runs)  # newest run in the rightmost slot
    baseline = CHART_TOP + plot_height
    bars, points = [], []
    for index, run in enumerate(runs):
        x = CHART_LEFT + (first_slot + index) * slot
        height = plot_height * run.rows_written / (most_rows or 1)
        bars.append(
            {
                "x": round(x + slot * 0.15, 1),
                "y": round(baseline - max(height, 1), 1),
                "width": round(slot * 0.7, 1),
                "height": round(max(height, 1), 1),
                "tone": tone(run.status),
                "title": (
                    f"{run.public_id} · {humanize_code(run.status)} · "
                    f"{counted(run.rows_written, 'row')} · {duration(run.duration_seconds)}"
                ),
            }
        )
        if durations[index] is not None:
            y = baseline - plot_height * durations[index] / (longest or 1)
            points.append((round(x + slot / 2, 1), round(y, 1)))
    summary = "No runs yet."
    if runs:
        latest = runs[-1]
        summary = (
            f"{counted(len(runs), 'run')}, oldest left. Latest: {humanize_code(latest.status)}, "
            f"{counted(latest.rows_written, 'row')} in {duration(latest.duration_seconds)}. "
            f"Most rows in one run: {thousands(most_rows)}; longest run: {duration(longest)}."
        )
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "right": CHART_WIDTH - CHART_RIGHT,
        "top": CHART_TOP,
        "baseline": baseline,
        "middle_x": CHART_WIDTH / 2,
        "middle_y": CHART_HEIGHT / 2,
        "bars": bars,
        "points": " ".join(f"{x},{y}" for x, y in points),
        "dots": points,
        # Short enough for the left margin ("2.5M", not a clipped "2,500,000").
        "most_rows": compact_number(most_rows),
        "longest": duration(longest),
        "summary": summary,
        "empty": not runs,
    }


# --- the account menu ------------------------------------------------------------------


@register.inclusion_tag("partials/_account_menu.html", takes_context=True)
def account_menu(context):
    """Who is logged in, their role in the current tenant, and a switcher if they have several."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user": None}
    memberships = memberships_of(user=user)
    tenant = context.get("tenant")
    current = next((m for m in memberships if tenant and m.tenant_id == tenant.pk), None)
    return {
        "user": user,
        "tenant": tenant,
        "role": current.get_role_display() if current else "",
        "memberships": memberships,
        "switch_url": reverse("tenant-switch"),
        "next": request.get_full_path() if request else "/",
        "csrf_token": context.get("csrf_token"),
    }


# --- operation steps -------------------------------------------------------------------


@register.simple_tag
def step_seconds(step) -> float | None:
    if not step.started_at or not step.finished_at:
        return None
    return (step.finished_at - step.started_at).total_seconds()


@register.simple_tag
def step_outcome(step) -> str:
    """What a step did, from its durable record."""
    details = step.details or {}
    if step.status == StepStatus.FAILED:
        return f"{step.error_code or 'ERROR'}: {step.error}"
    if step.status == StepStatus.PENDING:
        return "Not run yet"
    if step.status == StepStatus.SKIPPED:
        return details.get("reason", "Skipped")
    if step.name == StepName.TABLE_DROPPED and details.get("replaced_at_publish"):
        if not details.get("table_existed"):
            return f"Table {details.get('table_name', '')} does not exist yet: created at publish"
        return (
            f"{details['table_name']} keeps its {counted(details.get('row_count'), 'row')} "
            "until the new version is published"
        )
    if step.name == StepName.PROCESSED_FILES_CLEARED and details.get("cleared_at_publish"):
        return (
            f"{counted(details.get('files_cleared', 0), 'file')} replaced in the history at publish"
        )
    if step.name == StepName.RUN_TRIGGERED and details.get("publishes_when_run_ends"):
        return f"Run {details.get('run_id', '')} queued; it publishes the new version"
    if step.name == StepName.TABLE_DROPPED:
        if not details.get("table_existed"):
            return f"Table {details.get('table_name', '')} did not exist: nothing to drop"
        size_gb = details.get("table_size_gb")
        # The record keeps GB rounded to 3 decimals: a small table is not "0.0 GB".
        shown = gb(size_gb) if size_gb or not details.get("row_count") else "under 0.001 GB"
        return (
            f"Dropped {details['table_name']}: {counted(details.get('row_count'), 'row')}, {shown}"
        )
    if step.name == StepName.PROCESSED_FILES_CLEARED:
        return f"{counted(details.get('files_cleared', 0), 'file')} forgotten"
    if step.name == StepName.RUN_TRIGGERED:
        return f"Run {details.get('run_id', '')} queued"
    return ""
