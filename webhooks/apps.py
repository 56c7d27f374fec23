"""The webhooks app: it subscribes to what the domain and refresh publish
(`ingestions.hooks`) and sends deliveries from the worker; neither app imports it."""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ingestions import hooks
        from ingestions.models import Role
        from ingestions.permissions import grant_to_role

        from .delivery import deliver_due_in_background
        from .events import on_domain_event

        # A tenant's webhooks are its admins' to see and manage.
        grant_to_role(
            Role.ADMIN,
            "webhooks.view_webhook",
            "webhooks.add_webhook",
            "webhooks.change_webhook",
            "webhooks.delete_webhook",
        )
        hooks.subscribe(on_domain_event)
        # Queues what is due and returns: the sends go on in their own threads, so one
        # tenant's stalled receiver never holds up the worker nor another tenant's deliveries.
        hooks.register_periodic("deliveries", deliver_due_in_background)
