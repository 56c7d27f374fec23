"""Spark applications of this process: one SparkContext per master, a session per catalog
configuration on top of it, and the jars and settings that let Spark open the shared
Iceberg catalog.

pyspark is imported lazily: only the spark engine needs it
(`pip install 'autoloader-console[spark]'`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ingestions.errors import EngineUnavailableError

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

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
# The contexts this module started (a context it was handed, as by the tests, is not
# stopped when idle), and when each was last used; how many callers use it now.
_started: set[tuple[int, str]] = set()
_last_used: dict[tuple[int, str], float] = {}
_in_use: dict[tuple[int, str], int] = {}
# Why this process must not start a Spark application (a web process), if it must not.
_forbidden: str | None = None


def forbid_here(reason: str) -> None:
    """This process starts no Spark application (`reason` says which process it is): the
    engine reads table metadata through the shared catalog instead, and anything that
    needs Spark runs in the worker. Called by the WSGI entry point."""
    global _forbidden
    _forbidden = reason


def may_start_here() -> bool:
    return _forbidden is None


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
    for `master`: started on first use, and again if it was stopped (idle, or by a cluster
    that restarted or removed the application).

    Raises:
        EngineUnavailableError: the master does not answer, or this process starts no
            Spark application (`forbid_here`).
    """
    context_key = (os.getpid(), master)
    key = (*context_key, tuple(sorted(conf.items())))
    with _sessions_lock:
        root = _contexts.get(context_key)
        if root is not None and _is_stopped(root):
            logger.warning("the Spark application on %s had stopped: starting a new one", master)
            _forget(context_key)
            _stop(root)  # pyspark's side too, or its builder would hand the dead one back
            root = None
        spark = _sessions.get(key)
        if spark is None:
            if root is None:
                if _forbidden is not None:
                    raise EngineUnavailableError(
                        f"This {_forbidden} starts no Spark application: what needs Spark "
                        "runs in the worker."
                    )
                check_reachable(master)
                root = _build(master, conf)
                _contexts[context_key] = root
                _started.add(context_key)
            if shared_catalog_uri:
                _create_catalog_tables(catalog, shared_catalog_uri, warehouse)
            spark = root.newSession()
            for name, value in conf.items():
                if name.startswith("spark.sql.") and name != "spark.sql.extensions":
                    spark.conf.set(name, value)
            spark.conf.set("spark.sql.session.timeZone", "UTC")
            # The embedded engine's types (docs/deploy.md): a value without a zone is an
            # Iceberg `timestamp`, one with a zone a `timestamptz`; Spark's default would
            # make both `timestamptz`.
            spark.conf.set("spark.sql.timestampType", "TIMESTAMP_NTZ")
            _sessions[key] = spark
        _last_used[context_key] = time.monotonic()
        return spark


@contextmanager
def in_use(master: str) -> Iterator[None]:
    """Marks the process's application for `master` busy meanwhile: `stop_idle` leaves it."""
    context_key = (os.getpid(), master)
    with _sessions_lock:
        _in_use[context_key] = _in_use.get(context_key, 0) + 1
    try:
        yield
    finally:
        with _sessions_lock:
            _in_use[context_key] -= 1
            _last_used[context_key] = time.monotonic()


def stop_idle(idle_seconds: float) -> list[str]:
    """Stop the applications this process started that nothing used for `idle_seconds`:
    their executors and cores go back to the cluster; the next use starts a new one.
    Returns the masters stopped."""
    stopped = []
    with _sessions_lock:
        now = time.monotonic()
        for context_key in list(_started):
            if context_key[0] != os.getpid() or _in_use.get(context_key):
                continue
            if now - _last_used.get(context_key, now) < idle_seconds:
                continue
            root = _contexts.get(context_key)
            _forget(context_key)
            if root is not None:
                _stop(root)
            stopped.append(context_key[1])
    for master in stopped:
        logger.info("stopped the idle Spark application on %s", master)
    return stopped


def _forget(context_key: tuple[int, str]) -> None:
    """Drop a context and its sessions from the caches (the caller holds the lock)."""
    _contexts.pop(context_key, None)
    _started.discard(context_key)
    _last_used.pop(context_key, None)
    for key in [key for key in _sessions if key[:2] == context_key]:
        del _sessions[key]


def _stop(root: SparkSession) -> None:
    try:
        root.stop()
    except Exception as exc:  # stopped already, or the JVM is gone
        logger.debug("stopping a Spark application: %s", exc)


def _is_stopped(root: SparkSession) -> bool:
    """Whether the SparkContext under `root` was stopped, here or by the cluster."""
    context = root.sparkContext
    if getattr(context, "_jsc", None) is None:
        return True
    try:
        return bool(context._jsc.sc().isStopped())
    except Exception:  # the JVM itself is gone
        return True


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
