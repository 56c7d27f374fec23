"""Console pages of the tenant's webhooks: list and subscribe (the secret shown once),
delete, and each webhook's delivery log with a "Send test event" button.

Every member sees the page; tenant admins manage webhooks (the same permissions as the
API, `webhooks.*_webhook`). The rules are `webhooks.services`'; these views parse, call
and render. A refusal (a URL outside the destination rules, a role that may not) is
rendered in place, marked with `X-Console-Fragment`. Responses carry `Cache-Control:
no-store`: a new secret must not outlive its page.
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from ingestions.errors import AutoloaderError
from webhooks import services
from webhooks.errors import WebhookNotFoundError
from webhooks.models import EVENTS, PayloadFormat

from .plumbing import render_in_place, tenant_view


class WebhookCreateForm(forms.Form):
    url = forms.CharField(
        label="URL",
        max_length=2048,
        help_text="http(s) only, to a public host (or one your platform administrator allows).",
        widget=forms.URLInput(attrs={"placeholder": "https://hooks.example.com/autoloader"}),
    )
    events = forms.MultipleChoiceField(
        choices=[(event, event) for event in EVENTS],
        widget=forms.CheckboxSelectMultiple,
        initial=["run.finished", "refresh.published", "refresh.failed"],
    )
    payload_format = forms.ChoiceField(
        label="Payload", choices=PayloadFormat.choices, initial=PayloadFormat.JSON
    )


def _allowed(request, tenant, action: str) -> bool:
    return request.user.has_perm(f"webhooks.{action}_webhook", tenant)


def _refused(action: str) -> dict:
    return {
        "title": "Your role does not allow this",
        "detail": f"Only tenant admins {action} webhooks.",
    }


def _webhook(tenant, webhook_id: str):
    try:
        return services.webhook_get(tenant=tenant, webhook_id=webhook_id)
    except WebhookNotFoundError:
        # Another tenant's webhook looks exactly like one that does not exist.
        raise Http404("No such webhook.") from None


def _list_context(request, tenant, **extra) -> dict:
    manage = _allowed(request, tenant, "view")
    return {
        "tenant": tenant,
        "manage": manage,
        "webhooks": services.webhook_list(tenant=tenant) if manage else [],
        "events": EVENTS,
        **extra,
    }


@never_cache
@require_http_methods(["GET", "POST"])
@tenant_view
def webhook_list(request, tenant):
    """The tenant's webhooks and a form to add one; its secret is shown this once."""
    form = WebhookCreateForm(request.POST if request.method == "POST" else None)
    created, secret, error, status = None, None, None, 200
    if request.method == "POST" and not _allowed(request, tenant, "add"):
        error, status = _refused("add"), 403
    elif form.is_valid():
        try:
            created, secret = services.webhook_create(
                tenant=tenant, actor=request.user, **form.cleaned_data
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        except AutoloaderError as exc:
            form.add_error("url", exc.detail)
            status = exc.status_code
        else:
            form = WebhookCreateForm()
    if form.errors and status == 200:
        status = 400
    context = _list_context(request, tenant, form=form, created=created, secret=secret, error=error)
    template = "partials/webhook-panel.html" if request.htmx else "webhooks.html"
    return render_in_place(request, template, context, status=status)


@never_cache
@require_POST
@tenant_view
def webhook_delete(request, tenant, webhook_id: str):
    """Delete a webhook (admins); its delivery log goes with it."""
    webhook = _webhook(tenant, webhook_id)
    if not _allowed(request, tenant, "delete"):
        return _list_refusal(request, tenant, _refused("delete"))
    services.webhook_delete(webhook=webhook, actor=request.user)
    if request.htmx:
        return render(
            request,
            "partials/webhook-list.html",
            _list_context(request, tenant, deleted=webhook),
        )
    messages.success(request, f"Webhook {webhook.public_id} deleted.")
    return redirect("webhook-list")


def _list_refusal(request, tenant, error: dict):
    template = "partials/webhook-list.html" if request.htmx else "webhooks.html"
    context = _list_context(request, tenant, error=error, form=WebhookCreateForm())
    response = render_in_place(request, template, context, status=403)
    return response


def _detail_context(request, tenant, webhook, **extra) -> dict:
    return {
        "tenant": tenant,
        "webhook": webhook,
        "deliveries": services.delivery_list(webhook=webhook),
        "manage": _allowed(request, tenant, "change"),
        **extra,
    }


@never_cache
@require_http_methods(["GET"])
@tenant_view
def webhook_detail(request, tenant, webhook_id: str):
    """A webhook's delivery log: each delivery with every attempt."""
    if not _allowed(request, tenant, "view"):
        raise Http404("No such webhook.")
    webhook = _webhook(tenant, webhook_id)
    context = _detail_context(request, tenant, webhook)
    template = (
        "partials/webhook-deliveries.html"
        if request.htmx and request.htmx.target == "webhook-deliveries"
        else "webhook_detail.html"
    )
    return render(request, template, context)


@never_cache
@require_POST
@tenant_view
def webhook_test(request, tenant, webhook_id: str):
    """Queue a test event to this webhook; the worker sends it like any other."""
    webhook = _webhook(tenant, webhook_id)
    template = "partials/webhook-deliveries.html" if request.htmx else "webhook_detail.html"
    if not _allowed(request, tenant, "change"):
        context = _detail_context(request, tenant, webhook, error=_refused("test"))
        response = render_in_place(request, template, context, status=403)
        return response
    services.webhook_test(webhook=webhook, actor=request.user)
    if not request.htmx:
        messages.success(request, "Test event queued: the worker sends it within seconds.")
        return redirect("webhook-detail", webhook_id=webhook.public_id)
    return render(request, template, _detail_context(request, tenant, webhook, tested=True))
