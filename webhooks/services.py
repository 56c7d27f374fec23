"""Writes and reads of webhooks: subscribe, change, delete, send a test event, list
deliveries. Tenant-scoped; the caller (API or console) has checked the permission."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from auditlog.models import LogEntry
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch, QuerySet

from ingestions import audit
from ingestions.models import Tenant
from ingestions.secrets import encrypt_secret

from . import events
from .destinations import MAX_URL_LENGTH, destination_check
from .errors import WebhookLimitReachedError, WebhookNotFoundError
from .models import EVENTS, PayloadFormat, Webhook, WebhookAttempt, WebhookDelivery

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix that tells secrets apart, not a secret
# Fields a PATCH may change (the secret and the tenant never).
UPDATABLE_FIELDS = ("url", "events", "payload_format", "active")
DELIVERIES_SHOWN = 50


def webhook_list(*, tenant) -> QuerySet[Webhook]:
    """The tenant's webhooks, newest first."""
    return Webhook.objects.filter(tenant=tenant).select_related("created_by")


def webhook_get(*, tenant, webhook_id: str) -> Webhook:
    """One of the tenant's webhooks by public id.

    Raises:
        WebhookNotFoundError: none with this id in the tenant (another tenant's included).
    """
    webhook = webhook_list(tenant=tenant).filter(public_id=webhook_id).first()
    if webhook is None:
        raise WebhookNotFoundError(f"No webhook {webhook_id}.")
    return webhook


def delivery_list(*, webhook: Webhook, limit: int = DELIVERIES_SHOWN) -> list[WebhookDelivery]:
    """The webhook's latest deliveries with their event and every attempt (three queries)."""
    return list(
        webhook.deliveries.select_related("event")
        .prefetch_related(
            Prefetch("attempt_log", queryset=WebhookAttempt.objects.order_by("number"))
        )
        .order_by("-created_at", "-id")[:limit]
    )


def webhook_create(
    *, tenant, actor, url: str, events: list[str], payload_format: str = PayloadFormat.JSON
) -> tuple[Webhook, str]:
    """Subscribe `url` to `events`; returns the webhook and its secret, never shown again.

    Raises:
        WebhookUrlNotAllowedError: the URL breaks a destination rule.
        ValidationError: an unknown event or payload format, or no event.
        WebhookLimitReachedError: the tenant has AUTOLOADER_WEBHOOKS_PER_TENANT already.
    """
    url, events, payload_format = _validated(url=url, events=events, payload_format=payload_format)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        # The tenant's row lock serialises concurrent creations: the count cannot be read
        # by two of them before either adds its webhook.
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        limit = settings.AUTOLOADER_WEBHOOKS_PER_TENANT
        if Webhook.objects.filter(tenant=tenant).count() >= limit:
            raise WebhookLimitReachedError(
                f"Your tenant already has {limit} webhooks, the most "
                "AUTOLOADER_WEBHOOKS_PER_TENANT allows."
            )
        webhook = Webhook.objects.create(
            tenant=tenant,
            url=url,
            events=events,
            payload_format=payload_format,
            secret_encrypted=encrypt_secret(secret),
            created_by=_user(actor),
        )
        _audit(
            webhook,
            actor=actor,
            action="webhook_created",
            changes={"url": [None, _origin(url)], "events": [None, events]},
            log_action=LogEntry.Action.CREATE,
        )
    return webhook, secret


def webhook_update(*, webhook: Webhook, actor, data: dict) -> Webhook:
    """Change the allow-listed fields present in `data` (url, events, payload_format,
    active); the URL is checked again.

    Raises:
        WebhookUrlNotAllowedError, ValidationError: as for `webhook_create`.
    """
    changed = [field for field in UPDATABLE_FIELDS if field in data]
    new = {field: data[field] for field in changed}
    url, events, payload_format = _validated(
        url=new.get("url", webhook.url),
        events=new.get("events", webhook.events),
        payload_format=new.get("payload_format", webhook.payload_format),
        check_url="url" in new,
    )
    # The cleaned values of what was sent (a stripped URL, events in the table's order).
    cleaned = {"url": url, "events": events, "payload_format": payload_format}
    new.update({field: cleaned[field] for field in changed if field in cleaned})
    changes = {
        field: [getattr(webhook, field), value]
        for field, value in new.items()
        if getattr(webhook, field) != value
    }
    if not changes:
        return webhook
    with transaction.atomic():
        for field, (_old, value) in changes.items():
            setattr(webhook, field, value)
        webhook.save(update_fields=list(changes))
        if "url" in changes:
            changes["url"] = [_origin(url) for url in changes["url"]]
        _audit(webhook, actor=actor, action="webhook_updated", changes=changes)
    return webhook


def webhook_delete(*, webhook: Webhook, actor) -> None:
    """Delete the webhook and its delivery log; queued deliveries are not sent."""
    with transaction.atomic():
        _audit(
            webhook,
            actor=actor,
            action="webhook_deleted",
            changes={"url": [_origin(webhook.url), None]},
            log_action=LogEntry.Action.DELETE,
        )
        webhook.delete()


def webhook_test(*, webhook: Webhook, actor):
    """Queue a `webhook.test` event to this webhook only (sent by the worker like any)."""
    return events.emit_test(webhook=webhook, actor=actor)


def _validated(
    *, url: str, events: list[str], payload_format: str, check_url: bool = True
) -> tuple[str, list[str], str]:
    url = (url or "").strip()
    if check_url:
        if not url:
            raise ValidationError({"url": ["Give the URL to send events to."]})
        if len(url) > MAX_URL_LENGTH:
            raise ValidationError({"url": [f"At most {MAX_URL_LENGTH} characters."]})
        destination_check(url)
    if not isinstance(events, list | tuple) or not events:
        raise ValidationError({"events": ["Choose at least one event."]})
    unknown = sorted({str(event) for event in events} - set(EVENTS))
    if unknown:
        raise ValidationError(
            {"events": [f"Unknown events: {', '.join(unknown)}. Known: {', '.join(EVENTS)}."]}
        )
    if payload_format not in PayloadFormat.values:
        raise ValidationError(
            {"payload_format": [f"Use one of: {', '.join(PayloadFormat.values)}."]}
        )
    # In the table's order, once each.
    return url, [event for event in EVENTS if event in events], payload_format


def _audit(webhook: Webhook, *, actor, action: str, changes: dict, **kwargs) -> None:
    """An entry in the tenant's audit; the secret is never part of it."""
    audit.record_change(
        actor=actor,
        obj=webhook,
        tenant=webhook.tenant,
        action=action,
        changes=changes,
        object_repr=f"webhook {webhook.public_id}",
        data={"webhook": webhook.public_id},
        **kwargs,
    )


def _origin(url: str) -> str:
    """The URL as the audit shows it: scheme and host only. A path can be a credential of
    its own (a Slack incoming webhook's is), and auditors need not read it."""
    parts = urlsplit(url)
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{rest}"


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None
