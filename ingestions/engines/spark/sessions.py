"""Spark applications of this process: one SparkContext per master, a session per catalog
configuration on top of it, and the jars and settings that let Spark open the shared
Iceberg catalog.

pyspark is imported lazily: only the spark engine needs it
(`pip install 'autoloader-console[spark]'`).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ingestions.errors import EngineUnavailableError

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql import SparkSession

INSTALL_HINT = "The spark engine needs pyspark: pip install 'autoloader-console[spark]'"
CONNECT_TIMEOUT_SECONDS = 5.0
# Iceberg's own Spark runtime, shipped in the snowpark-connect-deps-iceberg wheel (1.0.2:
# later versions strip the shaded classes the runtime needs).
ICEBERG_RUNTIME_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
# Debian's JDBC drivers (libxerial-sqlite-jdbc-java, libpostgresql-jdbc-java).
JDBC_DRIVER_JARS = {
    "sqlite": Path("/usr/share/java/sqlite-jdbc.jar"),
    "postgresql": Path("/usr/share/java/postgresql.jar"),
}

# One SparkContext per process and master; a session per catalog configuration on top of
# it (`SparkSession.newSession`: its own SQL configuration and catalogs).
_contexts: dict[tuple[int, str], SparkSession] = {}
_sessions: dict[tuple, SparkSession] = {}
_sessions_lock = threading.Lock()


def iceberg_runtime_jar() -> Path:
    """The path of Iceberg's Spark runtime jar in the installed wheel."""
    try:
        import snowpark_connect_deps_iceberg as jars
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} (no Iceberg runtime: {exc})") from exc
    return Path(jars.get_jar_path(ICEBERG_RUNTIME_JAR))


def shared_catalog_conf(*, catalog_name: str, catalog_uri: str, warehouse: str) -> dict[str, str]:
    """Spark's Iceberg JDBC catalog over the embedded engine's catalog database.

    `catalog_uri` is pyiceberg's (SQLAlchemy's) URL of it; the name must be the same on
    both sides, because Iceberg's JDBC catalog keys its rows by catalog name.

    Raises:
        ValueError: a catalog database Spark has no JDBC driver for.
    """
    from sqlalchemy.engine import make_url

    url = make_url(catalog_uri)
    backend = url.get_backend_name()
    prefix = f"spark.sql.catalog.{catalog_name}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.warehouse": warehouse,
        # Every commit reads the catalog: the other engine may have committed since.
        f"{prefix}.cache-enabled": "false",
        # pyiceberg creates the catalog tables; Spark's own check of them leaves a result
        # set open that holds a SQLite read lock for the whole session.
        f"{prefix}.jdbc.init-catalog-tables": "false",
    }
    if backend == "sqlite":
        conf[f"{prefix}.uri"] = f"jdbc:sqlite:{url.database}"
    elif backend == "postgresql":
        host = url.host or "localhost"
        port = f":{url.port}" if url.port else ""
        conf[f"{prefix}.uri"] = f"jdbc:postgresql://{host}{port}/{url.database}"
        if url.username:
            conf[f"{prefix}.jdbc.user"] = url.username
        if url.password:
            conf[f"{prefix}.jdbc.password"] = url.password
    else:
        raise ValueError(
            f"The spark engine cannot share a {backend} catalog database; configure "
            "its catalog with AUTOLOADER_SPARK_CONF."
        )
    conf["spark.jars"] = ",".join(
        str(jar) for jar in (iceberg_runtime_jar(), JDBC_DRIVER_JARS[backend])
    )
    conf["spark.sql.extensions"] = ICEBERG_EXTENSIONS
    return conf


def session(
    *,
    master: str,
    conf: Mapping[str, str],
    catalog: str,
    shared_catalog_uri: str | None,
    warehouse: str,
) -> SparkSession:
    """A session with `conf`'s catalogs and SQL settings, on the process's one SparkContext
    for `master` (started on first use)."""
    context_key = (os.getpid(), master)
    key = (*context_key, tuple(sorted(conf.items())))
    with _sessions_lock:
        spark = _sessions.get(key)
        if spark is None:
            root = _contexts.get(context_key)
            if root is None:
                check_reachable(master)
                root = _build(master, conf)
                _contexts[context_key] = root
            if shared_catalog_uri:
                _create_catalog_tables(catalog, shared_catalog_uri, warehouse)
            spark = root.newSession()
            for name, value in conf.items():
                if name.startswith("spark.sql.") and name != "spark.sql.extensions":
                    spark.conf.set(name, value)
            spark.conf.set("spark.sql.session.timeZone", "UTC")
            _sessions[key] = spark
        return spark


def running(master: str) -> SparkSession | None:
    """The process's SparkContext for `master` (its root session), if one was started."""
    with _sessions_lock:
        return _contexts.get((os.getpid(), master))


def _build(master: str, conf: Mapping[str, str]) -> SparkSession:
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    builder = SparkSession.builder.master(master).appName("autoloader")
    # UTC, so timestamps mean the same instants in Spark as in Arrow and Iceberg.
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    # No web UI on every interface of the worker's host unless asked for: it shows the
    # jobs' paths and settings to whoever reaches the port.
    builder = builder.config("spark.ui.enabled", "false")
    for key, value in conf.items():
        builder = builder.config(key, value)
    # An existing session of this process is returned as it is (one SparkContext per
    # process): its jars and static settings stay; `session` sets the SQL ones.
    return builder.getOrCreate()


def check_reachable(master: str) -> None:
    """Fail fast on a standalone master that does not answer (Spark retries for minutes)."""
    for host, port in master_addresses(master):
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
        except OSError as exc:
            raise EngineUnavailableError(
                f"Spark at {master} is unreachable: {host}:{port}: {exc.strerror or exc}"
            ) from exc


def _create_catalog_tables(catalog_name: str, catalog_uri: str, warehouse: str) -> None:
    """Make sure the shared catalog's tables exist before Spark opens the database."""
    from ingestions.engines.iceberg import IcebergEngine

    engine = IcebergEngine(catalog_name=catalog_name, catalog_uri=catalog_uri, warehouse=warehouse)
    with engine._errors("open the catalog"):
        engine._catalog()


def master_addresses(master: str) -> list[tuple[str, int]]:
    """The host:port pairs a standalone master URL (spark://) names."""
    if master.startswith("spark://"):
        addresses = []
        for host_port in master[len("spark://") :].split(","):
            host, _, port = host_port.rpartition(":")
            addresses.append((host, int(port or 7077)))
        return addresses
    return []  # local[*] is always there; k8s:// and yarn are reached by Spark itself


def is_unreachable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(
        marker in text
        for marker in (
            "Py4JNetworkError",
            "Connection refused",
            "SparkContext was shut down",
            "Cannot call methods on a stopped SparkContext",
        )
    )
