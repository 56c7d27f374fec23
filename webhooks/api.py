"""REST views of webhooks (`/api/v1/webhooks…`): tenant admins subscribe, change, delete,
test and read the delivery log. Views parse, call `webhooks.services`, answer."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from ingestions.api import COMMON_ERRORS, ERROR_SCHEMA, TenantAPIView
from ingestions.errors import PermissionDeniedError
from ingestions.serializers import StrictSerializer

from . import services
from .destinations import MAX_URL_LENGTH
from .models import EVENTS, PayloadFormat, Webhook, WebhookDelivery

WEBHOOK_ERRORS = {
    **COMMON_ERRORS,
    404: OpenApiResponse(ERROR_SCHEMA, description="WEBHOOK_NOT_FOUND"),
}
EVENT_CHOICES = list(EVENTS)


class WebhookOutputSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    payload_format = serializers.CharField()
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)


class WebhookCreatedSerializer(WebhookOutputSerializer):
    secret = serializers.CharField(
        help_text="Signs every delivery (X-Autoloader-Signature). Shown once: store it now."
    )


class AttemptOutputSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    succeeded = serializers.BooleanField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    response_ms = serializers.IntegerField(allow_null=True)


class DeliveryOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    event_id = serializers.CharField(source="event.public_id")
    event = serializers.CharField(source="event.event")
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    last_response_ms = serializers.IntegerField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    attempt_log = AttemptOutputSerializer(many=True)


class WebhookAPIView(TenantAPIView):
    def require_webhooks(self, action: str) -> None:
        # Webhooks are the tenant's, not an ingestion's: checked against the tenant.
        if not self.request.user.has_perm(f"webhooks.{action}_webhook", self.tenant):
            raise PermissionDeniedError(
                f"Your role does not allow this action ({action} webhooks): tenant admins "
                "manage webhooks."
            )

    def get_webhook(self, webhook_id: str, action: str) -> Webhook:
        self.require_webhooks(action)
        return services.webhook_get(tenant=self.tenant, webhook_id=webhook_id)


class WebhookListCreateApi(WebhookAPIView):
    class WebhookCreateInputSerializer(StrictSerializer):
        url = serializers.CharField(max_length=MAX_URL_LENGTH)
        events = serializers.ListField(
            child=serializers.ChoiceField(choices=EVENT_CHOICES), allow_empty=False, min_length=1
        )
        payload_format = serializers.ChoiceField(
            choices=PayloadFormat.values, default=PayloadFormat.JSON
        )

    @extend_schema(
        operation_id="webhooks_list",
        responses={200: WebhookOutputSerializer(many=True), **WEBHOOK_ERRORS},
    )
    def get(self, request):
        self.require_webhooks("view")
        return Response(
            WebhookOutputSerializer(services.webhook_list(tenant=self.tenant), many=True).data
        )

    @extend_schema(
        operation_id="webhooks_create",
        request=WebhookCreateInputSerializer,
        responses={
            201: WebhookCreatedSerializer,
            400: OpenApiResponse(
                ERROR_SCHEMA, description="VALIDATION_ERROR / WEBHOOK_URL_NOT_ALLOWED"
            ),
            **WEBHOOK_ERRORS,
            409: OpenApiResponse(ERROR_SCHEMA, description="WEBHOOK_LIMIT_REACHED"),
        },
    )
    def post(self, request):
        self.require_webhooks("add")
        serializer = self.WebhookCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        webhook, secret = services.webhook_create(
            tenant=self.tenant, actor=request.user, **serializer.validated_data
        )
        body = {**WebhookOutputSerializer(webhook).data, "secret": secret}
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookDetailApi(WebhookAPIView):
    class WebhookUpdateInputSerializer(StrictSerializer):
        url = serializers.CharField(max_length=MAX_URL_LENGTH, required=False)
        events = serializers.ListField(
            child=serializers.ChoiceField(choices=EVENT_CHOICES),
            allow_empty=False,
            min_length=1,  # the schema's minItems
            required=False,
        )
        payload_format = serializers.ChoiceField(choices=PayloadFormat.values, required=False)
        active = serializers.BooleanField(required=False)

    @extend_schema(
        operation_id="webhooks_retrieve",
        responses={200: WebhookOutputSerializer, **WEBHOOK_ERRORS},
    )
    def get(self, request, webhook_id: str):
        webhook = self.get_webhook(webhook_id, "view")
        return Response(WebhookOutputSerializer(webhook).data)

    @extend_schema(
        operation_id="webhooks_partial_update",
        request=WebhookUpdateInputSerializer,
        responses={
            200: WebhookOutputSerializer,
            400: OpenApiResponse(
                ERROR_SCHEMA, description="VALIDATION_ERROR / WEBHOOK_URL_NOT_ALLOWED"
            ),
            **WEBHOOK_ERRORS,
        },
    )
    def patch(self, request, webhook_id: str):
        webhook = self.get_webhook(webhook_id, "change")
        serializer = self.WebhookUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        webhook = services.webhook_update(
            webhook=webhook, actor=request.user, data=serializer.validated_data
        )
        return Response(WebhookOutputSerializer(webhook).data)

    @extend_schema(
        operation_id="webhooks_destroy",
        request=None,
        responses={204: None, **WEBHOOK_ERRORS},
    )
    def delete(self, request, webhook_id: str):
        webhook = self.get_webhook(webhook_id, "delete")
        services.webhook_delete(webhook=webhook, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveriesApi(WebhookAPIView):
    @extend_schema(
        operation_id="webhooks_deliveries",
        responses={200: DeliveryOutputSerializer(many=True), **WEBHOOK_ERRORS},
    )
    def get(self, request, webhook_id: str):
        webhook = self.get_webhook(webhook_id, "view")
        deliveries = services.delivery_list(webhook=webhook)
        return Response(DeliveryOutputSerializer(deliveries, many=True).data)


class WebhookTestApi(WebhookAPIView):
    class WebhookTestOutputSerializer(serializers.Serializer):
        event_id = serializers.CharField()
        delivery_id = serializers.IntegerField()

    @extend_schema(
        operation_id="webhooks_test",
        request=None,
        responses={202: WebhookTestOutputSerializer, **WEBHOOK_ERRORS},
    )
    def post(self, request, webhook_id: str):
        webhook = self.get_webhook(webhook_id, "change")
        event = services.webhook_test(webhook=webhook, actor=request.user)
        delivery: WebhookDelivery = event.deliveries.get()
        return Response(
            {"event_id": event.public_id, "delivery_id": delivery.pk},
            status=status.HTTP_202_ACCEPTED,
        )
