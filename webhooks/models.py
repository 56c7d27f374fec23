"""Webhook subscriptions, the transactional outbox of events, and their deliveries."""

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from ingestions.models import new_public_id

# The events a webhook can subscribe to, with what each one means (the docs and the console
# read this one table).
EVENTS = {
    "run.started": "A worker started (or resumed) a run.",
    "run.finished": "A run ended: success, partial success, failure or cancellation.",
    "refresh.previewed": "Someone previewed a refresh operation (a dry-run).",
    "refresh.started": "A refresh operation was started.",
    "refresh.published": "A refresh operation's change is live (published or done).",
    "refresh.failed": "A refresh operation ended without its change: failed or discarded.",
    "refresh.undone": "A refresh operation was undone.",
    "file.quarantined": "A source file was quarantined (by a user or after repeated failures).",
    "file.changed": "Files loaded before changed, and the ingestion warns instead of reloading.",
}
# Sent to one webhook on request ("Send test event"); nobody subscribes to it.
TEST_EVENT = "webhook.test"


def new_webhook_id() -> str:
    return new_public_id("wh")


def new_event_id() -> str:
    return new_public_id("evt")


class PayloadFormat(models.TextChoices):
    JSON = "json", "JSON (the event)"
    SLACK = "slack", 'Slack-compatible ({"text": …})'


class Webhook(models.Model):
    """A tenant's HTTPS (or HTTP) endpoint subscribed to some events.

    The signing secret is kept encrypted (`ingestions.secrets`): it is needed in clear to
    sign every delivery, so it cannot be a digest; it is shown once, when it is made.
    """

    tenant = models.ForeignKey(
        "ingestions.Tenant", on_delete=models.CASCADE, related_name="webhooks"
    )
    public_id = models.CharField(max_length=63, unique=True, default=new_webhook_id)
    url = models.CharField(max_length=2048)
    events = models.JSONField(default=list)
    secret_encrypted = models.TextField()
    payload_format = models.CharField(
        max_length=8, choices=PayloadFormat.choices, default=PayloadFormat.JSON
    )
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.url})"


class WebhookEvent(models.Model):
    """One event in the outbox, written in the transaction of the change it reports."""

    tenant = models.ForeignKey("ingestions.Tenant", on_delete=models.CASCADE, related_name="+")
    public_id = models.CharField(max_length=63, unique=True, default=new_event_id)
    event = models.CharField(max_length=64)
    # Django's encoder: a payload may carry dates or decimals (a plan's impact).
    payload = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} {self.event}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # not tried yet
    FAILED = "failed"  # the last attempt failed; another one is due at next_attempt_at
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # every attempt failed: no more are made


class WebhookDelivery(models.Model):
    """One event for one webhook. A worker claims it for a lease (`claimed_until`) while it
    sends it: a worker killed mid-send leaves a lease that expires, and another retries."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    last_response_ms = models.PositiveIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event.event} → {self.webhook.public_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One try at sending a delivery, kept for the delivery log."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    succeeded = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True, default="")
    response_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
