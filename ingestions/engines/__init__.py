"""Table engines behind one interface, and the loader that builds the configured one."""

from ingestions.engines.base import Engine, SnapshotInfo, TableInfo, validate_table_name

ENGINE_CHOICES = ("iceberg", "spark")

__all__ = [
    "ENGINE_CHOICES",
    "Engine",
    "SnapshotInfo",
    "TableInfo",
    "load_engine",
    "validate_table_name",
]


def load_engine(name: str = "iceberg") -> Engine:
    """Build the engine called `name` from the Django settings as they are now.

    Raises:
        ValueError: `name` is not one of ENGINE_CHOICES.
        ImportError: The engine's optional dependency is not installed.
    """
    # Read at call time, not import time, so tests and commands can override the settings.
    from django.conf import settings

    engine_settings = {
        "catalog_name": settings.AUTOLOADER_CATALOG_NAME,
        "catalog_uri": settings.AUTOLOADER_CATALOG_URI,
        "warehouse": settings.AUTOLOADER_WAREHOUSE,
    }
    if name == "iceberg":
        from ingestions.engines.iceberg import IcebergEngine

        return IcebergEngine(**engine_settings)
    if name == "spark":
        try:
            import pyspark  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "The spark engine needs pyspark: pip install 'autoloader-console[spark]'"
            ) from exc
        from ingestions.engines.spark import SparkEngine

        return SparkEngine(**engine_settings)
    raise ValueError(f"Unknown engine {name!r}; known engines: {', '.join(ENGINE_CHOICES)}.")
