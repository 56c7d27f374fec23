"""Console views of schedules: an ingestion's run schedule and its scheduled refreshes.

The card (`partials/schedule-card.html`, DOM id `schedule-card`) loads lazily on the
ingestion page and answers every form in it; without JavaScript the same URL is a page
(`schedules.html`). Rules live in `refresh.schedules`; these views parse, call, render.
"""

from datetime import datetime
from decimal import Decimal

from django import forms
from django.conf import settings
from django.http import Http404
from django.shortcuts import redirect
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from ingestions.cron import ScheduleInvalidError, time_zones
from ingestions.errors import AutoloaderError
from refresh.conditional import facts_measure
from refresh.conditions import FACTS, MAX_CONDITION_LENGTH, ConditionInvalidError
from refresh.models import ScheduleAction
from refresh.schedules import (
    APPROVE_PERMISSION,
    REFRESH_ACTIONS,
    ScheduleNotFoundError,
    schedule_approve,
    schedule_clear,
    schedule_get,
    schedule_list,
    schedule_pause,
    schedule_payload,
    schedule_permission,
    schedule_resume,
    schedule_set,
)
from refresh.specs import spec_of

from .plumbing import CHANGED_EVENT, _ingestion, render_in_place, tenant_view

CRON_HELP = "Five fields: minute hour day-of-month month day-of-week, e.g. 0 2 * * * (02:00)."


def cron_help() -> str:
    """The cron field's help, with the minimum interval the server enforces (a setting)."""
    seconds = settings.AUTOLOADER_SCHEDULE_MIN_INTERVAL_SECONDS
    every = f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} seconds"
    return f"{CRON_HELP} It may fire at most once every {every}."


class ScheduleForm(forms.Form):
    cron = forms.CharField(label="Cron expression", max_length=120)
    timezone = forms.CharField(
        label="Time zone",
        max_length=64,
        initial="UTC",
        help_text="An IANA name, e.g. Europe/Berlin.",
        widget=forms.TextInput(attrs={"list": "schedule-timezones", "autocomplete": "off"}),
    )
    paused = forms.BooleanField(label="Paused", required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cron"].help_text = cron_help()


class RefreshScheduleForm(ScheduleForm):
    action = forms.ChoiceField(
        label="Refresh", choices=[(action, spec_of(action).label) for action in REFRESH_ACTIONS]
    )
    condition = forms.CharField(
        label="Only when",
        required=False,
        strip=False,  # the condition language reads it (and refuses blanks)
        max_length=MAX_CONDITION_LENGTH,
        help_text="Fires only when this holds at the slot, e.g. changed_files > 0 or "
        "new_files > 0; otherwise the firing is skipped with the facts. Compare facts with "
        "== != < <= > >=, combine with and, or, not and parentheses. Empty: always.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    field_order = ["action", "cron", "timezone", "condition", "paused"]


class ApproveForm(forms.Form):
    max_cost_usd = forms.DecimalField(
        label="Up to (USD)", min_value=Decimal(0), max_digits=12, decimal_places=2
    )


def _card(request, tenant, ingestion, *, status: int = 200, **forms_and_errors):
    """The schedule card (a page without HTMX), with the forms as given or empty."""
    user = request.user
    items = [schedule_payload(item) for item in schedule_list(ingestion=ingestion)]
    for item in items:  # shown in the schedule's own time zone by the template
        item["next_times"] = [datetime.fromisoformat(value) for value in item["next_fire_times"]]
    run_schedule = next((item for item in items if item["action"] == ScheduleAction.RUN), None)
    run_initial = {"timezone": "UTC"}
    if run_schedule:
        run_initial = {key: run_schedule[key] for key in ("cron", "timezone", "paused")}
    addable = [
        action
        for action in REFRESH_ACTIONS
        if user.has_perm(schedule_permission(action), ingestion)
    ]
    context = {
        "tenant": tenant,
        "ingestion": ingestion,
        "run_schedule": run_schedule,
        "refresh_schedules": [item for item in items if item["action"] != ScheduleAction.RUN],
        "can_set_run": user.has_perm(schedule_permission(ScheduleAction.RUN), ingestion),
        "can_add_refresh": bool(addable),
        "can_approve": user.has_perm(APPROVE_PERMISSION, ingestion),
        "run_form": forms_and_errors.get("run_form") or ScheduleForm(initial=run_initial),
        "refresh_form": forms_and_errors.get("refresh_form") or _refresh_form(addable),
        "error": forms_and_errors.get("error"),
        "done": forms_and_errors.get("done", ""),
        "timezones": sorted(time_zones()),
    }
    for item in context["refresh_schedules"]:
        item["may_change"] = user.has_perm(schedule_permission(item["action"]), ingestion)
    template = "partials/schedule-card.html" if request.htmx else "schedules.html"
    response = render_in_place(request, template, context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _refresh_form(addable, data=None) -> RefreshScheduleForm:
    # Its own ids: the run schedule's form on the same card has the same fields.
    form = RefreshScheduleForm(data, initial={"timezone": "UTC"}, auto_id="refresh_%s")
    form.fields["action"].choices = [(action, spec_of(action).label) for action in addable]
    return form


def _refused(exc: AutoloaderError) -> dict:
    return {"code": exc.error_code, "detail": exc.detail}


def _after_change(request, response, ingestion_id: str):
    """A change answered: the card for HTMX (and the audit trail reloads), else the page."""
    if not request.htmx:
        return redirect("ingestion-schedules", ingestion_id=ingestion_id)
    return trigger_client_event(response, CHANGED_EVENT, after="settle")


def _with_field_errors(form: forms.Form, exc: ScheduleInvalidError) -> None:
    for field, messages in exc.errors.items():
        form.add_error(field if field in form.fields else None, " ".join(messages))


@require_GET
@tenant_view
def ingestion_schedules(request, tenant, ingestion_id: str):
    return _card(request, tenant, _ingestion(tenant, ingestion_id))


@require_POST
@tenant_view
def schedule_run_set(request, tenant, ingestion_id: str):
    """Set (or change) the ingestion's run schedule."""
    ingestion = _ingestion(tenant, ingestion_id)
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        return _card(request, tenant, ingestion, run_form=form, status=400)
    try:
        schedule_set(ingestion=ingestion, actor=request.user, **form.cleaned_data)
    except ScheduleInvalidError as exc:
        _with_field_errors(form, exc)
        return _card(request, tenant, ingestion, run_form=form, status=400)
    except AutoloaderError as exc:
        status = exc.status_code
        return _card(request, tenant, ingestion, error=_refused(exc), status=status)
    response = _card(request, tenant, ingestion, done="Run schedule saved.")
    return _after_change(request, response, ingestion.public_id)


@require_POST
@tenant_view
def schedule_add(request, tenant, ingestion_id: str):
    """Schedule a refresh of the ingestion."""
    ingestion = _ingestion(tenant, ingestion_id)
    form = _refresh_form(REFRESH_ACTIONS, request.POST)
    if not form.is_valid():
        return _card(request, tenant, ingestion, refresh_form=form, status=400)
    try:
        schedule_set(ingestion=ingestion, actor=request.user, **form.cleaned_data)
    except ScheduleInvalidError as exc:
        _with_field_errors(form, exc)
        return _card(request, tenant, ingestion, refresh_form=form, status=400)
    except ConditionInvalidError as exc:
        form.add_error("condition", exc.detail)
        return _card(request, tenant, ingestion, refresh_form=form, status=400)
    except AutoloaderError as exc:
        status = exc.status_code
        return _card(request, tenant, ingestion, error=_refused(exc), status=status)
    response = _card(request, tenant, ingestion, done="Refresh scheduled.")
    return _after_change(request, response, ingestion.public_id)


@require_POST
@tenant_view
def schedule_action(request, tenant, schedule_id: str, action: str):
    """Pause, resume, delete or approve one schedule."""
    try:
        schedule = schedule_get(tenant=tenant, schedule_id=schedule_id)
    except ScheduleNotFoundError:
        raise Http404("No such schedule.") from None
    ingestion = schedule.ingestion
    try:
        if action == "pause":
            schedule_pause(schedule=schedule, actor=request.user)
            done = "Schedule paused."
        elif action == "resume":
            schedule_resume(schedule=schedule, actor=request.user)
            done = "Schedule resumed from its next slot."
        elif action == "delete":
            schedule_clear(schedule=schedule, actor=request.user)
            done = "Schedule deleted."
        elif action == "approve":
            form = ApproveForm(request.POST)
            if not form.is_valid():
                raise ScheduleInvalidError(
                    {"max_cost_usd": [" ".join(form.errors.get("max_cost_usd", ["Invalid."]))]}
                )
            schedule_approve(
                schedule=schedule,
                actor=request.user,
                max_cost_usd=form.cleaned_data["max_cost_usd"],
            )
            done = "Standing approval recorded."
        else:
            raise Http404("No such action.")
    except AutoloaderError as exc:
        status = exc.status_code
        return _card(request, tenant, ingestion, error=_refused(exc), status=status)
    response = _card(request, tenant, ingestion, done=done)
    return _after_change(request, response, ingestion.public_id)


@require_POST
@tenant_view
def schedule_facts(request, tenant, ingestion_id: str):
    """The facts a condition is measured on, now, for the refresh chosen on the form: a
    preview of it (POST: it records a plan, and is gated and counted as a dry-run is)."""
    ingestion = _ingestion(tenant, ingestion_id)
    action = request.POST.get("action", "")
    context = {"ingestion": ingestion, "action": action, "facts": None, "error": None}
    status = 200
    if action not in REFRESH_ACTIONS:
        context["error"] = {"code": "VALIDATION_ERROR", "detail": "Choose a refresh first."}
        status = 400
    else:
        try:
            plan, facts = facts_measure(ingestion=ingestion, kind=action, actor=request.user)
        except AutoloaderError as exc:
            context["error"] = _refused(exc)
            status = exc.status_code
        else:
            context["facts"] = [
                {"name": name, "value": facts[name], "meaning": meaning}
                for name, meaning in FACTS.items()
            ]
            context["plan_id"] = plan.plan_id
    response = render_in_place(request, "partials/schedule-facts.html", context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response
