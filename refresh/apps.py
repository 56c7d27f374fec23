"""App config of refresh operations."""

from django.apps import AppConfig


class RefreshConfig(AppConfig):
    name = "refresh"
    verbose_name = "Refresh operations"
