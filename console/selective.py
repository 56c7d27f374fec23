"""Console view of a selective refresh: choose a scope (a path prefix, a modified-time range or
files from the history), preview what it replaces, confirm by the table's name.

One rule, two doors: the form only shapes what was typed into the scope JSON the API takes
(`ingestions.scope.Scope`), and the same services (`refresh_preview`, `refresh_execute`)
check and run it. The scope travels from the preview to the confirmation as that JSON in a
hidden field, with the preview's plan_id: on POST the server parses the scope again, plans it
again (paths are relative to the ingestion's own source, unknown files are refused), and the
plan_id vouches for that scope only (`refresh.preview.check_plan`).
"""

import json
from datetime import UTC

from django import forms
from django.core.exceptions import ValidationError
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_http_methods

from ingestions.errors import AutoloaderError
from ingestions.models import Ingestion, ProcessedFile
from ingestions.scope import Scope
from refresh.models import OperationKind
from refresh.presenters import preview_payload
from refresh.preview import check_scope_matches, refresh_preview
from refresh.services import refresh_execute
from refresh.specs import SELECTIVE_REFRESH

from .plumbing import (
    ERROR_TITLES,
    _confirmed,
    _fragment,
    _ingestion,
    _panel,
    _refusal,
    _result,
    tenant_view,
)

# The history's files offered as checkboxes: the first matches of the search, in path order.
FILES_SHOWN = 100
# Chosen files travel in the query string of the preview: beyond this, a prefix or the API.
MAX_CHOSEN_FILES = 500
SCOPE_KINDS = [
    ("prefix", "Files under a path prefix"),
    ("modified", "Files modified in a time range (UTC)"),
    ("files", "Files chosen from the history"),
]
DATETIME_LOCAL = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
FILES_FRAGMENT = "selective-files"
CHOOSER_FIELDS = ("kind", "prefix", "modified_after", "modified_before", "q")


class UTCDateTimeField(forms.DateTimeField):
    """A datetime-local input read as UTC, whatever the browser's or server's time zone."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_LOCAL[0])

    def __init__(self, **kwargs):
        super().__init__(input_formats=DATETIME_LOCAL, **kwargs)

    def to_python(self, value):
        with timezone.override(UTC):
            return super().to_python(value)


class PathListField(forms.Field):
    """Relative paths ticked in a checkbox list (rendered by the template)."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[str]:
        return [path for path in (value or []) if isinstance(path, str) and path]


class SelectiveRefreshForm(forms.Form):
    """The scope a person chose, as `Scope`'s JSON (`scope_json`), checked by `Scope.parse`."""

    kind = forms.ChoiceField(label="Reload", choices=SCOPE_KINDS, widget=forms.RadioSelect)
    prefix = forms.CharField(label="Path prefix", required=False, max_length=1024, strip=False)
    modified_after = UTCDateTimeField(label="Modified after (UTC)", required=False)
    modified_before = UTCDateTimeField(label="Modified before (UTC)", required=False)
    files = PathListField(label="Files", required=False)
    q = forms.CharField(label="Search the history", required=False, max_length=200)

    # Which field a scope error belongs to, by kind.
    FIELD_OF_KIND = {"prefix": "prefix", "modified": "modified_after", "files": "files"}

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        if kind is None:
            return data
        if kind == "prefix":
            if not data.get("prefix"):
                self.add_error("prefix", "Type the start of the paths to reload, e.g. 2025-06/.")
                return data
            value = {"prefix": data["prefix"]}
        elif kind == "modified":
            after, before = data.get("modified_after"), data.get("modified_before")
            if after is None and before is None and not self.errors:
                self.add_error("modified_after", "Give a start, an end, or both.")
                return data
            value = {
                key: moment.isoformat()
                for key, moment in (("modified_after", after), ("modified_before", before))
                if moment is not None
            }
        else:
            files = data.get("files") or []
            if not files:
                self.add_error("files", "Tick at least one file of the history.")
                return data
            if len(files) > MAX_CHOSEN_FILES:
                self.add_error(
                    "files",
                    f"{len(files):,} files chosen: at most {MAX_CHOSEN_FILES:,} here. Use a path "
                    "prefix or a time range, or the API (up to 10,000 files).",
                )
                return data
            value = {"files": files}
        if self.errors:
            return data
        try:
            data["scope"] = Scope.parse(value).as_json()  # the API's one rule
        except ValidationError as exc:
            for message in exc.message_dict["scope"]:
                self.add_error(self.FIELD_OF_KIND[kind], message)
        return data

    @property
    def scope_json(self) -> dict:
        return self.cleaned_data["scope"]


class ScopeConfirmForm(forms.Form):
    """The scope sent back with the confirmation (a hidden field): parsed again, never trusted."""

    scope = forms.CharField(widget=forms.HiddenInput, max_length=2_000_000)

    def clean_scope(self) -> dict:
        try:
            value = json.loads(self.cleaned_data["scope"])
            return Scope.parse(value).as_json()
        except (ValueError, AttributeError):
            raise ValidationError("The scope is not valid JSON: open the preview again.") from None
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["scope"]) from None


@require_http_methods(["GET", "POST"])
@tenant_view
def selective_refresh(request, tenant, ingestion_id: str):
    """GET: choose a scope (the history's files as a searchable list); with `preview`, the
    dry-run of that scope. POST: execute it, confirmed by the table's name."""
    ingestion = _ingestion(tenant, ingestion_id)
    context = {"tenant": tenant, "ingestion": ingestion, "action": SELECTIVE_REFRESH}
    if request.method == "POST":
        return _execute(request, tenant, ingestion, context)
    previewing = "preview" in request.GET
    # Bound only to preview: a search or a first visit shows no error for what is not typed yet.
    initial = {key: request.GET.get(key) for key in CHOOSER_FIELDS if request.GET.get(key)}
    form = (
        SelectiveRefreshForm(request.GET)
        if previewing
        else SelectiveRefreshForm(initial={"kind": "files", **initial})
    )
    context.update(
        form=form,
        chooser=True,
        may_execute=request.user.has_perm(SELECTIVE_REFRESH.permission, ingestion),
        **history_choices(
            ingestion=ingestion,
            search=request.GET.get("q", "").strip()[:200],
            chosen=request.GET.getlist("files"),
        ),
    )
    if _fragment(request) == FILES_FRAGMENT:
        response = render(request, "partials/selective-files.html", context)
    elif not previewing:
        response = _panel(request, context)
    elif not form.is_valid():
        response = _panel(request, context, status=400)
    else:
        response = _preview(request, ingestion, form.scope_json, context)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


def _preview(request, ingestion: Ingestion, scope: dict, context: dict):
    try:
        plan = refresh_preview(
            ingestion=ingestion, kind=OperationKind.FULL_REFRESH, actor=request.user, scope=scope
        )
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    except ValidationError as exc:  # the service's own parse: the same rule as the form's
        context["form"].add_error(None, " ".join(exc.messages))
        return _panel(request, context, status=400)
    try:
        check_scope_matches(plan)  # what executing would refuse: no confirmation to open
        blocked = ""
    except ValidationError as exc:
        blocked = " ".join(exc.messages) + " Executing would be refused."
    context.update(
        chooser=False,
        scope_blocked=blocked,
        plan=plan,
        preview=preview_payload(plan),
        can_execute=plan.allowed,
        scope_json=json.dumps(plan.scope["scope"]),
    )
    return _panel(request, context)


def _execute(request, tenant, ingestion: Ingestion, context: dict):
    scope_form = ScopeConfirmForm(request.POST)
    if not scope_form.is_valid():
        return _scope_refused(request, context, scope_form.errors.get("scope", []))
    _, refusal = _confirmed(request, table_name=ingestion.destination_table, context=context)
    if refusal:
        return refusal
    try:
        operation = refresh_execute(
            ingestion=ingestion,
            kind=OperationKind.FULL_REFRESH,
            actor=request.user,
            confirm=True,
            # Always the preview's plan: it vouches for this scope only.
            plan_id=request.POST.get("plan_id", "")[:63] or None,
            scope=scope_form.cleaned_data["scope"],
        )
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    except ValidationError as exc:  # files no longer in the source nor in the history
        return _scope_refused(request, context, exc.messages)
    return _result(request, tenant, operation)


def _scope_refused(request, context: dict, messages) -> object:
    error = {
        "code": "VALIDATION_ERROR",
        "title": ERROR_TITLES.get("VALIDATION_ERROR", "The scope is not valid"),
        "detail": " ".join(messages) or "The scope is not valid.",
        "next_step": "Choose the files again and open a new preview: nothing was changed.",
    }
    return _panel(request, {**context, "error": error}, status=400)


def history_choices(*, ingestion: Ingestion, search: str, chosen: list[str]) -> dict:
    """The history's files to tick: those already chosen, then the first matches of `search`
    (a part of the path) in path order, with how many match in all."""
    history = ProcessedFile.objects.filter(ingestion=ingestion)
    matching = history.filter(path__contains=search) if search else history
    chosen = list(dict.fromkeys(chosen))[:MAX_CHOSEN_FILES]
    shown = list(
        matching.exclude(path__in=chosen)
        .order_by("path")
        .only("path", "rows", "size_bytes", "modified_at")[:FILES_SHOWN]
    )
    chosen_entries = {
        entry.path: entry
        for entry in history.filter(path__in=chosen).only(
            "path", "rows", "size_bytes", "modified_at"
        )
    }
    chosen_files = [chosen_entries.get(path) or ProcessedFile(path=path) for path in chosen]
    return {
        # (entry, ticked): the chosen first, so that a search never hides a choice.
        "file_choices": [(entry, True) for entry in chosen_files]
        + [(entry, False) for entry in shown],
        "chosen_count": len(chosen_files),
        "history_files": shown,
        "history_matches": matching.count(),
        "history_search": search,
        "files_shown_max": FILES_SHOWN,
    }
