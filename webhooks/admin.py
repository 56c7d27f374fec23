"""Webhooks in the Django admin: read-only, for auditors (the secret is never shown)."""

from django.contrib import admin

from .models import Webhook, WebhookAttempt, WebhookDelivery


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "tenant", "url", "payload_format", "active", "created_at")
    list_filter = ("tenant", "active", "payload_format")
    search_fields = ("public_id", "url")
    exclude = ("secret_encrypted",)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "succeeded", "status_code", "error", "response_ms")
    readonly_fields = fields


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("pk", "webhook", "event", "status", "attempts", "next_attempt_at")
    list_filter = ("status",)
    list_select_related = ("webhook", "event")
    exclude = ("claimed_by",)
    inlines = [WebhookAttemptInline]
