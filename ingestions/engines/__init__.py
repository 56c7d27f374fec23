"""Table engines behind one interface, and the loader that builds the configured one."""

from ingestions.engines.base import Engine, SnapshotInfo, Stage, TableInfo, validate_table_name

ENGINE_CHOICES = ("iceberg", "spark")

__all__ = [
    "ENGINE_CHOICES",
    "Engine",
    "SnapshotInfo",
    "Stage",
    "TableInfo",
    "iceberg_io_properties",
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

    if name == "iceberg":
        from ingestions.engines.iceberg import IcebergEngine

        return IcebergEngine(
            catalog_name=settings.AUTOLOADER_CATALOG_NAME,
            catalog_uri=settings.AUTOLOADER_CATALOG_URI,
            warehouse=settings.AUTOLOADER_WAREHOUSE,
            properties=iceberg_io_properties(),
        )
    if name == "spark":
        try:
            import pyspark  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "The spark engine needs pyspark: pip install 'autoloader-console[spark]'"
            ) from exc
        from ingestions.engines.spark import SparkEngine, shared_catalog_conf

        conf = dict(settings.AUTOLOADER_SPARK_CONF)
        catalog = settings.AUTOLOADER_SPARK_CATALOG or settings.AUTOLOADER_CATALOG_NAME
        shared = (
            catalog == settings.AUTOLOADER_CATALOG_NAME
            and f"spark.sql.catalog.{catalog}" not in conf
        )
        if shared:
            # The embedded engine's catalog, unless the configuration names another one.
            conf = {
                **shared_catalog_conf(
                    catalog_name=catalog,
                    catalog_uri=settings.AUTOLOADER_CATALOG_URI,
                    warehouse=settings.AUTOLOADER_WAREHOUSE,
                ),
                **conf,
            }
        if settings.AUTOLOADER_SPARK_MAX_CORES:
            conf.setdefault("spark.cores.max", str(settings.AUTOLOADER_SPARK_MAX_CORES))
        return SparkEngine(
            master=settings.AUTOLOADER_SPARK_MASTER,
            catalog=catalog,
            warehouse=settings.AUTOLOADER_WAREHOUSE,
            conf=conf,
            shared_catalog_uri=settings.AUTOLOADER_CATALOG_URI if shared else None,
            catalog_properties=iceberg_io_properties(),
        )
    raise ValueError(f"Unknown engine {name!r}; known engines: {', '.join(ENGINE_CHOICES)}.")


def iceberg_io_properties() -> dict[str, str]:
    """pyiceberg FileIO properties for an s3:// warehouse, from the AUTOLOADER_S3_* settings.

    Only the settings that are set: pyarrow reads the standard AWS variables for the rest.
    """
    from django.conf import settings

    wanted = {
        "s3.endpoint": settings.AUTOLOADER_S3_ENDPOINT_URL,
        "s3.region": settings.AUTOLOADER_S3_REGION,
        "s3.access-key-id": settings.AUTOLOADER_S3_ACCESS_KEY_ID,
        "s3.secret-access-key": settings.AUTOLOADER_S3_SECRET_ACCESS_KEY,
    }
    properties = {key: value for key, value in wanted.items() if value}
    # The same C++ S3 client as the source listing, whatever else is installed.
    properties["py-io-impl"] = "pyiceberg.io.pyarrow.PyArrowFileIO"
    return properties
