"""App config of the ingestions domain."""

from django.apps import AppConfig


class IngestionsConfig(AppConfig):
    name = "ingestions"
    verbose_name = "Ingestions"
