"""URLs of the webhooks API (mounted under /api/v1/)."""

from django.urls import path

from . import api

urlpatterns = [
    path("webhooks", api.WebhookListCreateApi.as_view(), name="api-webhooks"),
    path("webhooks/<str:webhook_id>", api.WebhookDetailApi.as_view(), name="api-webhook"),
    path(
        "webhooks/<str:webhook_id>/deliveries",
        api.WebhookDeliveriesApi.as_view(),
        name="api-webhook-deliveries",
    ),
    path("webhooks/<str:webhook_id>/test", api.WebhookTestApi.as_view(), name="api-webhook-test"),
]
