"""Engine on Apache Spark with Iceberg's own Spark runtime: the executors read the source files.

Where the embedded engine reads every file in the worker process, this one hands Spark the
batch's paths (`read_files`): the executors parse the files, count each file's rows and
malformed rows, and write the good files' rows, with their lineage columns, to the Iceberg
table in one commit (`append_files`). On a cluster the data never passes through the
worker; the worker lists the source, keeps the history and runs the exactly-once protocol.

The tables are Iceberg tables in the Spark catalog AUTOLOADER_SPARK_CATALOG:

- **By default, the embedded engine's catalog.** Spark's Iceberg JDBC catalog is pointed at
  the same catalog database (SQLite or PostgreSQL) and warehouse as pyiceberg's SQL catalog,
  under the same catalog name (`shared_catalog_conf`): a table written by either engine is
  the same table to the other and to any Iceberg reader. Iceberg's runtime jar comes from
  the `snowpark-connect-deps-iceberg` wheel, the JDBC driver from Debian's packages
  (`scripts/ensure_spark_jars.sh`); nothing is downloaded.
- **A cluster's own catalog** (REST, Hive, Glue, Nessie...): configured on the cluster or
  through AUTOLOADER_SPARK_CONF (`spark.sql.catalog.<name>.*`, passed through verbatim).

Each append carries the run and batch in its snapshot summary (Iceberg's
`snapshot-property.<key>` write options); new columns and widened types are merged by
Iceberg (`mergeSchema`); snapshots and sizes come from the `snapshots` and `refs` metadata
tables; a drop is `DROP TABLE ... PURGE`; a cancel interrupts the engine's job group.

pyspark is imported lazily: only this module needs it (`pip install 'autoloader-console[spark]'`).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from ingestions.engines.base import (
    Engine,
    FileBatch,
    SnapshotInfo,
    Stage,
    TableInfo,
    table_location,
    validate_table_name,
)
from ingestions.errors import (
    AutoloaderError,
    EngineError,
    EngineUnavailableError,
    FileReadError,
    SchemaMismatchError,
)
from ingestions.locations import OutsideLocationError
from ingestions.sources.discovery import first_line

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

    from ingestions.locations import SourceHandle

logger = logging.getLogger(__name__)

INSTALL_HINT = "The spark engine needs pyspark: pip install 'autoloader-console[spark]'"
CONNECT_TIMEOUT_SECONDS = 5.0
CANCEL_RECHECK_SECONDS = 1.0
# Iceberg's own Spark runtime, shipped in the snowpark-connect-deps-iceberg wheel (1.0.2:
# later versions strip the shaded classes the runtime needs).
ICEBERG_RUNTIME_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
# Debian's JDBC drivers (libxerial-sqlite-jdbc-java, libpostgresql-jdbc-java).
JDBC_DRIVER_JARS = {
    "sqlite": Path("/usr/share/java/sqlite-jdbc.jar"),
    "postgresql": Path("/usr/share/java/postgresql.jar"),
}
# Iceberg's snapshot-property write option marks our commit so its snapshot id can be read.
COMMIT_ID_PROPERTY = "autoloader.commit-id"
# Columns the engine adds while reading a batch, never written to the table.
INPUT_COLUMN = "__autoloader_input_file"
CORRUPT_COLUMN = "__autoloader_corrupt_record"
# The embedded engine's new-table properties, and what lets `mergeSchema` evolve the table.
NEW_TABLE_PROPERTIES = {
    "format-version": "2",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    "write.spark.accept-any-schema": "true",
}
# Reader options of the product (sources.readers) and Spark's names for them.
SPARK_CSV_OPTIONS = {
    "delimiter": "sep",
    "header": "header",
    "quote_char": "quote",
    "encoding": "encoding",
    "newlines_in_values": "multiLine",
}

JOB_INTERRUPT_KEY = "spark.job.interruptOnCancel"
# Hadoop's glob pattern characters, escaped in the paths Spark reads (see `_spark_uri`).
GLOB_CHARACTERS = re.compile(r"([{}\[\]*?\\])")

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


class SparkEngine(Engine):
    """Iceberg tables written by Spark, whose executors read the source files."""

    name = "spark"
    reads_files = True

    @property
    def can_stage(self) -> bool:
        return self.shared_catalog_uri is not None

    @property
    def can_retain(self) -> bool:
        return self.shared_catalog_uri is not None

    def __init__(
        self,
        *,
        master: str = "local[*]",
        catalog: str,
        warehouse: str,
        conf: Mapping[str, str] | None = None,
        shared_catalog_uri: str | None = None,
        catalog_properties: Mapping[str, str] | None = None,
    ):
        """`shared_catalog_uri`: the embedded engine's catalog database, whose tables must
        exist before Spark opens it (pyiceberg creates them); None for a catalog of
        Spark's own (`conf`). `catalog_properties`: the embedded engine's FileIO settings
        (an s3:// warehouse) for what it does on the shared catalog."""
        if master.startswith("sc://"):
            raise ValueError(
                "Spark Connect (sc://) is not supported: no Iceberg runtime for a Connect "
                "server can be installed here. Use local[*], spark://, k8s:// or yarn."
            )
        self.master = master
        self.catalog = catalog
        self.warehouse = warehouse.rstrip("/")
        self.conf = dict(conf or {})
        self.shared_catalog_uri = shared_catalog_uri
        self.catalog_properties = dict(catalog_properties or {})
        # The job group of this engine's Spark jobs: `cancel` interrupts it.
        self.job_tag = f"autoloader-{uuid.uuid4().hex[:16]}"
        self._cancel_requested = threading.Event()

    # --- the Engine interface ----------------------------------------------------------

    def ping(self) -> None:
        with self._errors("reach Spark"):
            # Loads the catalog plugin: a missing Iceberg runtime jar shows up here.
            self._session().sql(f"SHOW NAMESPACES IN {_quote(self.catalog)}").collect()

    def table_exists(self, table_name: str) -> bool:
        validate_table_name(table_name)
        with self._errors(f"look up {table_name}"):
            return self._session().catalog.tableExists(self._qualified(table_name))

    def describe_table(self, table_name: str) -> TableInfo:
        validate_table_name(table_name)
        with self._errors(f"describe {table_name}"):
            spark = self._session()
            qualified = self._qualified(table_name)
            if not spark.catalog.tableExists(qualified):
                return TableInfo.missing(table_name)
            current = _rows(
                spark.sql(
                    "SELECT s.snapshot_id, s.committed_at, s.summary "  # noqa: S608 - quoted names
                    f"FROM {qualified}.refs r "
                    f"JOIN {qualified}.snapshots s ON r.snapshot_id = s.snapshot_id "
                    "WHERE r.name = 'main'"
                )
            )
            if not current:
                return TableInfo(table_name, True, 0, 0, 0, None, None)
            row = current[0]
            summary = dict(row["summary"] or [])
            return TableInfo(
                table_name=table_name,
                exists=True,
                row_count=int(summary.get("total-records") or 0),
                size_bytes=int(summary.get("total-files-size") or 0),
                file_count=int(summary.get("total-data-files") or 0),
                snapshot_id=int(row["snapshot_id"]),
                last_updated_at=row["committed_at"],
            )

    def table_schema(self, table_name: str) -> pa.Schema | None:
        validate_table_name(table_name)
        with self._errors(f"read the schema of {table_name}"):
            schema = self._spark_schema(self._session(), table_name)
            return None if schema is None else _to_arrow_schema(schema)

    def drop_table(self, table_name: str) -> bool:
        validate_table_name(table_name)
        with self._errors(f"drop {table_name}"), self._jobs("drop a table") as spark:
            qualified = self._qualified(table_name)
            existed = spark.catalog.tableExists(qualified)
            # PURGE deletes the data and metadata files, not only the catalog entry.
            spark.sql(f"DROP TABLE IF EXISTS {qualified} PURGE")
            return existed

    def append(
        self,
        table_name: str,
        data: pa.Table,
        *,
        properties: dict[str, str],
        branch: str | None = None,
    ) -> int:
        """Rows the worker holds (not a run's files: those go through `read_files`)."""
        validate_table_name(table_name)
        _check_properties(properties)
        with self._errors(f"append to {table_name}"), self._jobs("append rows") as spark:
            schema = _from_arrow_schema(data.schema)
            frame = spark.createDataFrame([tuple(row.values()) for row in data.to_pylist()], schema)
            return self._write(spark, table_name, frame, properties, branch=branch)

    def read_files(
        self, *, source: SourceHandle, paths: list[str], file_format: str, options: dict
    ) -> FileBatch:
        failures: dict[str, FileReadError] = {}
        unsupported = sorted(set(options) - set(SPARK_CSV_OPTIONS) - {"null_values"})
        if options.get("null_values") and len(options["null_values"]) > 1:
            unsupported.append("null_values (more than one)")
        if unsupported:
            reason = (
                f"the spark engine does not support the reader option(s) {', '.join(unsupported)}"
            )
            return FileBatch(
                rows={}, failures={path: FileReadError(path, reason) for path in paths}
            )
        uris, keys = {}, {}
        pins: dict[str, tuple[int, int]] = {}
        for path in paths:
            full_path = source.full_path(path)
            if ".." in path.split("/"):
                failures[path] = FileReadError(path, "it resolves outside the storage location")
                continue
            if source.local_boundary is not None:
                try:
                    pins[path] = _pin_local(source, full_path)
                except FileReadError as exc:
                    failures[path] = FileReadError(path, exc.reason)
                    continue
            uris[path], keys[path] = _spark_uri(source, full_path), full_path
        if not uris:
            return FileBatch(rows={}, failures=failures)
        with self._errors("read the source files"), self._jobs("read source files") as spark:
            reader = _Reader(
                spark, file_format=file_format, options=options, check=self._raise_if_cancelled
            )
            try:
                frame, counts = reader.read(list(uris.values()))
                cached = [frame]
            except Exception as exc:
                if self._interrupted(exc):
                    raise
                # One of them cannot be read with the others: which, one file at a time.
                frame, counts, cached = self._read_one_by_one(reader, uris, failures)
            # What Spark read by path must be what was checked before: a file swapped for a
            # link (or another file) meanwhile fails, and none of its rows are written.
            for path, pin in pins.items():
                if path not in failures and not _still_pinned(source, keys[path], pin):
                    failures[path] = FileReadError(path, "it changed while it was read")
            inputs = {_input_key(name): name for name in counts}
            rows: dict[str, int] = {}
            loading: dict[str, str] = {}  # Spark's input file name -> relative path
            for path in uris:
                if path in failures:
                    continue
                name = inputs.get(keys[path])
                file_rows, malformed = counts.get(name, (0, 0))
                if malformed:
                    failures[path] = FileReadError(
                        path,
                        f"{malformed} of its {file_rows} rows are malformed (wrong number of "
                        "fields, or a value that does not parse as its column's type)",
                    )
                    continue
                rows[path] = file_rows
                if name is not None:
                    loading[name] = path
        batch = FileBatch(rows=rows, failures=failures, handle=(frame, loading, cached))
        if not loading:
            self.release_files(batch)  # nothing to write: free the rows Spark keeps now
            batch.handle = None
        return batch

    def append_files(
        self,
        table_name: str,
        batch: FileBatch,
        *,
        properties: dict[str, str],
        ingested_at: datetime,
        branch: str | None = None,
    ) -> int:
        from pyspark.sql import functions as F

        validate_table_name(table_name)
        _check_properties(properties)
        frame, loading, _ = batch.handle or (None, {}, [])
        if frame is None:
            raise EngineError("The batch has no rows to write.")
        with self._errors(f"append to {table_name}"), self._jobs("append files") as spark:
            paths = spark.createDataFrame(
                sorted(loading.items()), schema=f"{INPUT_COLUMN}_ string, _source_file string"
            )
            columns = [name for name in frame.columns if name not in (INPUT_COLUMN, CORRUPT_COLUMN)]
            rows = frame.join(
                F.broadcast(paths), frame[INPUT_COLUMN] == paths[f"{INPUT_COLUMN}_"]
            ).select(
                *[frame[name] for name in columns],
                paths["_source_file"],
                F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
            )
            return self._write(spark, table_name, rows, properties, branch=branch)

    def release_files(self, batch: FileBatch) -> None:
        for frame in (batch.handle or (None, {}, []))[2]:
            try:
                frame.unpersist()
            except Exception as exc:  # the session may be gone: nothing left to free
                logger.debug("could not unpersist a batch: %s", first_line(exc))

    def list_snapshots(self, table_name: str) -> list[SnapshotInfo]:
        validate_table_name(table_name)
        with self._errors(f"list the snapshots of {table_name}"):
            spark = self._session()
            qualified = self._qualified(table_name)
            if not spark.catalog.tableExists(qualified):
                return []
            rows = _rows(
                spark.sql(
                    "SELECT snapshot_id, committed_at, operation, summary "  # noqa: S608
                    f"FROM {qualified}.snapshots ORDER BY committed_at, snapshot_id"
                )
            )
            return [
                SnapshotInfo(
                    snapshot_id=int(row["snapshot_id"]),
                    committed_at=row["committed_at"],
                    properties={"operation": row["operation"], **dict(row["summary"] or [])},
                )
                for row in rows
            ]

    def sample_rows(self, table_name: str, *, limit: int) -> pa.Table | None:
        validate_table_name(table_name)
        with self._errors(f"read rows of {table_name}"), self._jobs("sample rows") as spark:
            qualified = self._qualified(table_name)
            if not spark.catalog.tableExists(qualified):
                return None
            frame = spark.table(qualified).limit(limit)
            rows = [tuple(row) for row in frame.collect()]
            schema = _to_arrow_schema(frame.schema)
            return pa.Table.from_pylist(
                [dict(zip(schema.names, row, strict=True)) for row in rows], schema
            )

    def source_file_rows(self, table_name: str) -> dict[str, int]:
        validate_table_name(table_name)
        with self._errors(f"count the rows of {table_name} per source file"):
            spark = self._session()
            qualified = self._qualified(table_name)
            if not spark.catalog.tableExists(qualified):
                return {}
            if "_source_file" not in spark.table(qualified).columns:
                return {}
            rows = spark.table(qualified).groupBy("_source_file").count().collect()
            return {row["_source_file"]: int(row["count"]) for row in rows if row[0]}

    # --- staged versions and restore points: metadata of the shared catalog -------------
    #
    # Branches, tags and renames are catalog operations, not data work: on the shared
    # catalog they are made by the embedded engine's code on the same tables (one
    # implementation of each), and Spark writes the data into the branch.

    def stage_begin(
        self, table_name: str, *, name: str, replacing: list[str] | None = None
    ) -> Stage:
        return self._catalog_engine().stage_begin(table_name, name=name, replacing=replacing)

    def stage_publish(self, stage: Stage) -> int | None:
        return self._catalog_engine().stage_publish(stage)

    def stage_discard(self, stage: Stage) -> None:
        self._catalog_engine().stage_discard(stage)

    def retain(self, table_name: str, *, name: str) -> dict:
        return self._catalog_engine().retain(table_name, name=name)

    def retire(self, table_name: str, *, name: str) -> dict:
        return self._catalog_engine().retire(table_name, name=name)

    def restore(self, table_name: str, point: dict) -> None:
        self._catalog_engine().restore(table_name, point)

    def release(self, table_name: str, point: dict, *, expire_before: datetime | None) -> int:
        return self._catalog_engine().release(table_name, point, expire_before=expire_before)

    def _catalog_engine(self) -> Engine:
        """The embedded engine over the same catalog database: Spark's catalog is its."""
        if self.shared_catalog_uri is None:
            raise EngineError(
                f"The spark engine on catalog {self.catalog!r} (the cluster's own) cannot "
                "stage a version or keep one for undo."
            )
        from ingestions.engines.iceberg import IcebergEngine

        return IcebergEngine(
            catalog_name=self.catalog,
            catalog_uri=self.shared_catalog_uri,
            warehouse=self.warehouse,
            properties=self.catalog_properties,
        )

    def cancel(self) -> None:
        self._cancel_requested.set()
        with _sessions_lock:
            spark = _contexts.get(self._context_key())
        if spark is None:
            return
        spark.sparkContext.cancelJobGroup(self.job_tag)
        # Spark cancels only the jobs already running; each step checks the request before
        # it starts one, and this second cancel catches a job started in between.
        timer = threading.Timer(
            CANCEL_RECHECK_SECONDS, spark.sparkContext.cancelJobGroup, args=(self.job_tag,)
        )
        timer.daemon = True
        timer.start()

    def _raise_if_cancelled(self) -> None:
        if self._cancel_requested.is_set():
            raise EngineError("Spark's work was cancelled.")

    # --- writing -----------------------------------------------------------------------

    def _write(
        self,
        spark: SparkSession,
        table_name: str,
        frame: DataFrame,
        properties: dict[str, str],
        *,
        branch: str | None = None,
    ) -> int:
        """Append `frame` to the table's main, or to `branch` (a staged version), as one
        snapshot carrying `properties`; returns its id."""
        qualified = self._qualified(table_name)
        table_schema = self._spark_schema(spark, table_name)
        if branch is not None:
            if table_schema is None:
                raise EngineError(f"{table_name} has no branch {branch}: it does not exist.")
            merge_schemas(table_schema, frame.schema)
        elif table_schema is None:
            namespace = table_name.split(".")[0]
            spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {_quote(self.catalog)}.{_quote(namespace)}")
            location = table_location(self.warehouse, table_name)
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS {qualified} ({_ddl(frame.schema)}) "
                "USING iceberg"
                + (f" LOCATION {_literal(location)}" if location else "")
                + " TBLPROPERTIES ("
                + ", ".join(
                    f"{_literal(key)} = {_literal(value)}"
                    for key, value in NEW_TABLE_PROPERTIES.items()
                )
                + ")"
            )
        else:
            merge_schemas(table_schema, frame.schema)  # refuses what Iceberg cannot widen
        commit_id = uuid.uuid4().hex
        options = {f"snapshot-property.{key}": value for key, value in properties.items()}
        options[f"snapshot-property.{COMMIT_ID_PROPERTY}"] = commit_id
        options["mergeSchema"] = "true"
        self._raise_if_cancelled()
        # Iceberg's identifier of a branch: `<table>.branch_<name>`.
        target = f"{qualified}.{_quote(f'branch_{branch}')}" if branch else qualified
        frame.writeTo(target).options(**options).append()
        rows = _rows(
            spark.sql(
                f"SELECT snapshot_id FROM {qualified}.snapshots "  # noqa: S608 - quoted names
                "WHERE summary[:key] = :commit_id",
                args={"key": COMMIT_ID_PROPERTY, "commit_id": commit_id},
            )
        )
        if not rows:
            raise EngineError(f"The append to {table_name} left no snapshot.")
        return int(rows[0]["snapshot_id"])

    def _read_one_by_one(
        self, reader: _Reader, uris: dict[str, str], failures: dict[str, FileReadError]
    ) -> tuple[DataFrame | None, dict[str, tuple[int, int]], list[DataFrame]]:
        """Read each file alone; returns their rows united by column name, the counts, and
        the frames Spark keeps (to free when the batch is done)."""
        frames, counts = [], {}
        for path, uri in uris.items():
            try:
                frame, file_counts = reader.read([uri])
            except Exception as exc:
                if self._interrupted(exc):
                    raise
                # Spark names the file by its full path: the user knows it by its own.
                full_path = _input_key(uri.replace("\\", ""))
                reason = _reason(exc).replace(f"file:{full_path}", path).replace(full_path, path)
                failures[path] = FileReadError(path, reason)
                continue
            frames.append(frame)
            counts.update(file_counts)
        if not frames:
            return None, counts, []
        combined = frames[0]
        for frame in frames[1:]:
            combined = combined.unionByName(frame, allowMissingColumns=True)
        return combined, counts, frames

    def _interrupted(self, exc: BaseException) -> bool:
        """Whether a failed read is not the files' fault: a cancel, or Spark gone."""
        return self._cancel_requested.is_set() or _is_unreachable(exc)

    # --- configuration -----------------------------------------------------------------

    def _qualified(self, table_name: str) -> str:
        return _qualified_name(self.catalog, table_name)

    def _spark_schema(self, spark: SparkSession, table_name: str) -> StructType | None:
        qualified = self._qualified(table_name)
        if not spark.catalog.tableExists(qualified):
            return None
        return spark.table(qualified).schema

    # --- sessions and jobs -------------------------------------------------------------

    def _context_key(self) -> tuple[int, str]:
        return (os.getpid(), self.master)

    def _session(self) -> SparkSession:
        """This engine's session: its own catalogs and SQL settings, on the process's one
        SparkContext for the master."""
        key = (*self._context_key(), tuple(sorted(self.conf.items())))
        with _sessions_lock:
            spark = _sessions.get(key)
            if spark is None:
                root = _contexts.get(self._context_key())
                if root is None:
                    self._check_reachable()
                    root = self._build_session()
                    _contexts[self._context_key()] = root
                if self.shared_catalog_uri:
                    _create_catalog_tables(self.catalog, self.shared_catalog_uri, self.warehouse)
                spark = root.newSession()
                for name, value in self.conf.items():
                    if name.startswith("spark.sql.") and name != "spark.sql.extensions":
                        spark.conf.set(name, value)
                spark.conf.set("spark.sql.session.timeZone", "UTC")
                _sessions[key] = spark
            return spark

    def _build_session(self) -> SparkSession:
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:
            raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
        builder = SparkSession.builder.master(self.master).appName("autoloader")
        # UTC, so timestamps mean the same instants in Spark as in Arrow and Iceberg.
        builder = builder.config("spark.sql.session.timeZone", "UTC")
        # No web UI on every interface of the worker's host unless asked for: it shows the
        # jobs' paths and settings to whoever reaches the port.
        builder = builder.config("spark.ui.enabled", "false")
        for key, value in self.conf.items():
            builder = builder.config(key, value)
        # An existing session of this process is returned as it is (one SparkContext per
        # process): its jars and static settings stay; `_session` sets the SQL ones.
        return builder.getOrCreate()

    def _check_reachable(self) -> None:
        """Fail fast on a standalone master that does not answer (Spark retries for minutes)."""
        for host, port in _master_addresses(self.master):
            try:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
            except OSError as exc:
                raise EngineUnavailableError(
                    f"Spark at {self.master} is unreachable: {host}:{port}: {exc.strerror or exc}"
                ) from exc

    @contextmanager
    def _jobs(self, description: str) -> Iterator[SparkSession]:
        """Group the Spark jobs started inside (this thread), so that `cancel` interrupts them."""
        spark = self._session()
        self._raise_if_cancelled()
        spark.sparkContext.setJobGroup(
            self.job_tag, f"autoloader: {description}", interruptOnCancel=True
        )
        try:
            yield spark
        finally:
            # What SparkContext.clearJobGroup does; pyspark has no wrapper for it.
            for key in ("spark.jobGroup.id", "spark.job.description", JOB_INTERRUPT_KEY):
                spark.sparkContext.setLocalProperty(key, None)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate Spark, Py4J and filesystem failures into the autoloader's errors."""
        try:
            yield
        except (AutoloaderError, ImportError):
            raise
        except Exception as exc:
            reason = _reason(exc)
            if self._cancel_requested.is_set():
                raise EngineError(f"Spark could not {action}: cancelled ({reason})") from exc
            if _is_unreachable(exc):
                raise EngineUnavailableError(
                    f"Spark at {self.master} is unreachable, could not {action}: {reason}"
                ) from exc
            if _is_missing_iceberg_runtime(exc):
                raise EngineUnavailableError(
                    f"Spark catalog {self.catalog!r} is unreachable, could not {action}: "
                    f"{reason}. Put the iceberg-spark-runtime jar on the cluster's classpath."
                ) from exc
            if "Cannot write incompatible data" in reason or "Cannot safely cast" in reason:
                raise SchemaMismatchError(reason) from exc
            raise EngineError(f"Spark could not {action}: {reason}") from exc


class _Reader:
    """Reads files of one format with Spark, counting each file's rows and malformed rows."""

    def __init__(
        self,
        spark: SparkSession,
        *,
        file_format: str,
        options: dict,
        check: Callable[[], None],
    ):
        self.spark = spark
        self.check = check  # raises when the work was cancelled: called before each job
        self.file_format = file_format
        self.options = {
            SPARK_CSV_OPTIONS[key]: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in options.items()
            if key in SPARK_CSV_OPTIONS
        }
        if options.get("null_values"):
            self.options["nullValue"] = options["null_values"][0]
        if file_format == "csv":
            self.options.setdefault("header", "true")

    def read(self, uris: list[str]) -> tuple[DataFrame, dict[str, tuple[int, int]]]:
        """The files' rows, kept by Spark (memory, then disk), and {input file: (rows,
        malformed rows)} for each file with rows."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        frame = self._frame(uris).withColumn(INPUT_COLUMN, F.input_file_name())
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        self.check()
        try:
            malformed = (
                F.count(F.col(CORRUPT_COLUMN)) if CORRUPT_COLUMN in frame.columns else F.lit(0)
            )
            counts = {
                row[0]: (int(row[1]), int(row[2]))
                for row in frame.groupBy(INPUT_COLUMN).agg(F.count(F.lit(1)), malformed).collect()
            }
        except Exception:
            frame.unpersist()
            raise
        return frame, counts

    def _frame(self, uris: list[str]) -> DataFrame:
        from pyspark.sql.types import StringType, StructField, StructType

        reader = self.spark.read.options(**self.options)
        if self.file_format == "parquet":
            return reader.parquet(*uris)
        if self.file_format == "json":
            return (
                reader.option("mode", "PERMISSIVE")
                .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
                .json(uris)
            )
        # CSV: infer the types first (as the embedded engine does), then read again with
        # them and a column that catches malformed rows; a file whose header differs from
        # the others' fails the read, and is read by itself instead.
        self.check()
        inferred = reader.option("inferSchema", "true").csv(uris).schema
        self.check()
        schema = StructType([*inferred.fields, StructField(CORRUPT_COLUMN, StringType())])
        return (
            self.spark.read.options(**self.options)
            .schema(schema)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
            .option("enforceSchema", "false")
            .csv(uris)
        )


def _create_catalog_tables(catalog_name: str, catalog_uri: str, warehouse: str) -> None:
    """Make sure the shared catalog's tables exist before Spark opens the database."""
    from ingestions.engines.iceberg import IcebergEngine

    engine = IcebergEngine(catalog_name=catalog_name, catalog_uri=catalog_uri, warehouse=warehouse)
    with engine._errors("open the catalog"):
        engine._catalog()


# --- schemas ---------------------------------------------------------------------------


def merge_schemas(table: StructType, data: StructType) -> StructType:
    """The table's schema after appending `data`: new columns added, safe widenings applied.

    Raises:
        SchemaMismatchError: A column's type in `data` is neither the table's nor a widening
            Iceberg allows (int to long, float to double, a decimal's precision).
    """
    from pyspark.sql.types import StructField, StructType

    data_fields = {field.name: field for field in data.fields}
    fields = []
    for field in table.fields:
        incoming = data_fields.get(field.name)
        data_type = field.dataType
        if incoming is not None and incoming.dataType != field.dataType:
            if _is_widening(incoming.dataType, field.dataType):
                pass  # a narrower value fits the table's column as it is
            elif not _is_widening(field.dataType, incoming.dataType):
                raise SchemaMismatchError(
                    f"Column {field.name!r} is {field.dataType.simpleString()} in the table "
                    f"but {incoming.dataType.simpleString()} in the data."
                )
            else:
                data_type = incoming.dataType
        fields.append(StructField(field.name, data_type, nullable=True))
    known = {field.name for field in table.fields}
    fields += [
        StructField(field.name, field.dataType, nullable=True)
        for field in data.fields
        if field.name not in known
    ]
    return StructType(fields)


def _is_widening(table_type: DataType, data_type: DataType) -> bool:
    from pyspark.sql.types import (
        ByteType,
        DecimalType,
        DoubleType,
        FloatType,
        IntegerType,
        LongType,
        ShortType,
    )

    integer_widths = {ByteType: 1, ShortType: 2, IntegerType: 4, LongType: 8}
    if type(table_type) in integer_widths and type(data_type) in integer_widths:
        return integer_widths[type(data_type)] > integer_widths[type(table_type)]
    if isinstance(table_type, FloatType):
        return isinstance(data_type, DoubleType)
    if isinstance(table_type, DecimalType) and isinstance(data_type, DecimalType):
        return data_type.scale == table_type.scale and data_type.precision > table_type.precision
    return False


def _ddl(schema: StructType) -> str:
    """Column definitions for CREATE TABLE, every column nullable (files may lack it)."""
    return ", ".join(
        f"{_quote(field.name)} {field.dataType.simpleString()}" for field in schema.fields
    )


def _from_arrow_schema(schema: pa.Schema) -> StructType:
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    fields = []
    for field in schema:
        arrow_type = field.type
        if pa.types.is_large_string(arrow_type):
            arrow_type = pa.string()
        fields.append(StructField(field.name, from_arrow_type(arrow_type), nullable=True))
    return StructType(fields)


def _to_arrow_schema(schema: StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema)


def _check_properties(properties: dict[str, str]) -> None:
    if not all(isinstance(item, str) for pair in properties.items() for item in pair):
        raise TypeError("Snapshot properties must map strings to strings.")


# --- helpers ---------------------------------------------------------------------------


def _pin_local(source: SourceHandle, full_path: str) -> tuple[int, int]:
    """Check a local file Spark is about to read by path; returns its (device, inode).

    Spark opens paths itself, following links, so a link is refused outright (the embedded
    engine reads links inside the location through a checked descriptor; Spark cannot).

    Raises:
        FileReadError: a link, not a regular file inside the location, or gone.
    """
    try:
        if os.path.islink(full_path):
            raise FileReadError(
                full_path, "the spark engine reads no symbolic link in a local source"
            )
        return source.filesystem.pin(full_path)
    except FileNotFoundError:
        raise FileReadError(full_path, "the file no longer exists") from None
    except OutsideLocationError as exc:
        raise FileReadError(full_path, str(exc)) from None


def _still_pinned(source: SourceHandle, full_path: str, pin: tuple[int, int]) -> bool:
    try:
        return _pin_local(source, full_path) == pin
    except FileReadError:
        return False


def _spark_uri(source: SourceHandle, full_path: str) -> str:
    """The path Spark reads a source file at: a local file under file://, an S3 object
    through s3a://. Spark takes paths as Hadoop glob patterns: the pattern characters are
    escaped, so that a file named "x*.csv" or "{a,b}.csv" reads itself, not its siblings;
    Hadoop decodes nothing else ("%20" is those three characters)."""
    escaped = GLOB_CHARACTERS.sub(r"\\\1", full_path)
    if source.uri.startswith("s3://"):
        return f"s3a://{escaped}"
    return f"file://{escaped}"


def _input_key(name: str) -> str:
    """The file behind Spark's `input_file_name()` (a URI, percent-encoded) as the source's
    full path: "/dir/file" locally, "bucket/key" on S3."""
    parts = urlsplit(name)
    return unquote(f"{parts.netloc}{parts.path}" if parts.scheme == "s3a" else parts.path)


def _master_addresses(master: str) -> list[tuple[str, int]]:
    """The host:port pairs a standalone master URL (spark://) names."""
    if master.startswith("spark://"):
        addresses = []
        for host_port in master[len("spark://") :].split(","):
            host, _, port = host_port.rpartition(":")
            addresses.append((host, int(port or 7077)))
        return addresses
    return []  # local[*] is always there; k8s:// and yarn are reached by Spark itself


def _is_unreachable(exc: BaseException) -> bool:
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


def _is_missing_iceberg_runtime(exc: BaseException) -> bool:
    text = str(exc)
    return "org.apache.iceberg" in text and (
        "ClassNotFoundException" in text or "CLASS_NOT_FOUND" in text or "Cannot find" in text
    )


def _qualified_name(catalog: str, table_name: str) -> str:
    """`catalog`.`namespace`.`table`, quoted for Spark SQL (names are validated beforehand)."""
    namespace, table = table_name.split(".")
    return ".".join(_quote(part) for part in (catalog, namespace, table))


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def _literal(text: str) -> str:
    """A Spark SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _rows(frame: DataFrame) -> list[dict]:
    """The rows of a small result; timestamps zone-aware (pyspark gives them naive, in this
    process's local time)."""
    return [
        {
            key: value.astimezone(UTC) if isinstance(value, datetime) else value
            for key, value in row.asDict(recursive=False).items()
        }
        for row in frame.collect()
    ]


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line: for a JVM error, its root cause ("ZipException: Not
    in GZIP format"), not Py4J's "An error occurred while calling o63.csv"."""
    java = getattr(exc, "java_exception", None)
    if java is None:
        return first_line(exc)  # Spark's own messages carry a stack trace after the first line
    try:
        while java.getCause() is not None and java.getCause() != java:
            java = java.getCause()
        name = java.getClass().getSimpleName()
        message = java.getMessage() or ""
    except Exception:  # the JVM is gone: what Py4J said is all there is
        return first_line(exc)
    return f"{name}: {message.splitlines()[0] if message else ''}".rstrip(": ")
