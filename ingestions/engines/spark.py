"""Engine on Apache Spark: local[*], a cluster (spark://, k8s://, yarn) or Spark Connect (sc://).

The tables live in the Spark catalog named by AUTOLOADER_SPARK_CATALOG, and the catalog
decides the table format:

- **An Iceberg catalog** (`spark.sql.catalog.<name>` is Iceberg's `SparkCatalog` or
  `SparkSessionCatalog`, configured on the cluster or through AUTOLOADER_SPARK_CONF, passed
  through verbatim): real Iceberg tables. Each append carries the run and batch in its
  snapshot summary through Iceberg's `snapshot-property.<key>` write options, exactly like
  the iceberg engine; new columns and widened types are merged by Iceberg (`mergeSchema`);
  snapshots and sizes come from the `<table>.snapshots` and `<table>.refs` metadata tables;
  drop is `DROP TABLE ... PURGE`.
- **Spark's built-in catalog** (`spark_catalog` without Iceberg): external Parquet tables
  under `<warehouse>/<namespace>.db/<table>`. Parquet tables have no snapshots, so the engine
  keeps the equivalent beside the data, a commit log (see `_ParquetTables`): Spark writes a
  batch into a hidden `_staging/<snapshot id>/` folder, the engine then writes one log record
  naming the snapshot, its summary properties and its files (the commit point), and only
  then moves the files into the table. A process that dies before the record leaves an
  invisible staging folder (deleted by the next append); one that dies after it leaves
  files that every later call moves into place first (roll-forward). So `find_snapshot`
  answers the batch protocol's question exactly as Iceberg's snapshots do. One writer per
  table at a time, which one active run per ingestion guarantees.

pyspark is imported lazily: only this module needs it (`pip install 'autoloader-console[spark]'`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from ingestions.engines.base import Engine, SnapshotInfo, TableInfo, validate_table_name
from ingestions.errors import (
    AutoloaderError,
    EngineError,
    EngineUnavailableError,
    SchemaMismatchError,
)
from ingestions.locations import warehouse_filesystem as filesystem_for
from ingestions.sources.discovery import first_line

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

logger = logging.getLogger(__name__)

INSTALL_HINT = "The spark engine needs pyspark: pip install 'autoloader-console[spark]'"
BUILT_IN_CATALOG = "spark_catalog"
DEFAULT_CONNECT_PORT = 15002
CONNECT_TIMEOUT_SECONDS = 5.0
# A Parquet file per this many bytes of a batch (Spark's own default block size).
TARGET_FILE_BYTES = 128 * 1024 * 1024
# Iceberg's snapshot-property write option marks our commit so its snapshot id can be read.
COMMIT_ID_PROPERTY = "autoloader.commit-id"

JOB_INTERRUPT_KEY = "spark.job.interruptOnCancel"

STAGING_DIR = "_staging"
LOG_DIR = "_autoloader_log"
LOG_RECORD = re.compile(r"(?P<sequence>\d{20})-(?P<snapshot_id>\d+)\.json")

# One session per process and master: a classic SparkContext is a per-process singleton,
# and a Spark Connect session is worth reusing across runs.
_sessions: dict[tuple[int, str], SparkSession] = {}
_sessions_lock = threading.Lock()


class SparkEngine(Engine):
    """Tables written by Spark, in an Iceberg catalog or Spark's built-in catalog."""

    name = "spark"

    def __init__(
        self,
        *,
        master: str = "local[*]",
        catalog: str = BUILT_IN_CATALOG,
        warehouse: str,
        conf: Mapping[str, str] | None = None,
    ):
        self.master = master
        self.catalog = catalog
        self.warehouse = warehouse.rstrip("/")
        self.conf = dict(conf or {})
        # The job group (or Connect tag) of this engine's Spark jobs: `cancel` interrupts it.
        self.job_tag = f"autoloader-{uuid.uuid4().hex[:16]}"
        self._cancel_requested = threading.Event()
        self._uses_iceberg: bool | None = None
        self._configured = False

    # --- the Engine interface ----------------------------------------------------------

    def ping(self) -> None:
        with self._errors("reach Spark"):
            spark = self._session()
            if self.uses_iceberg:
                # Loads the catalog plugin: a missing Iceberg runtime jar shows up here.
                spark.sql(f"SHOW NAMESPACES IN {_quote(self.catalog)}").collect()
            else:
                spark.sql("SELECT 1").collect()
                self._parquet().check_warehouse()

    def table_exists(self, table_name: str) -> bool:
        validate_table_name(table_name)
        with self._errors(f"look up {table_name}"):
            if self.uses_iceberg:
                return self._session().catalog.tableExists(self._qualified(table_name))
            return self._parquet().exists(table_name)

    def describe_table(self, table_name: str) -> TableInfo:
        validate_table_name(table_name)
        with self._errors(f"describe {table_name}"):
            if self.uses_iceberg:
                return self._iceberg_describe(table_name)
            return self._parquet().describe(table_name)

    def table_schema(self, table_name: str) -> pa.Schema | None:
        validate_table_name(table_name)
        with self._errors(f"read the schema of {table_name}"):
            schema = self._spark_schema(table_name)
            return None if schema is None else _to_arrow_schema(schema)

    def drop_table(self, table_name: str) -> bool:
        validate_table_name(table_name)
        with self._errors(f"drop {table_name}"), self._jobs() as spark:
            if self.uses_iceberg:
                qualified = self._qualified(table_name)
                existed = spark.catalog.tableExists(qualified)
                # PURGE deletes the data and metadata files, not only the catalog entry.
                spark.sql(f"DROP TABLE IF EXISTS {qualified} PURGE")
                return existed
            return self._parquet().drop(table_name, spark)

    def append(
        self,
        table_name: str,
        data: pa.Table,
        *,
        properties: dict[str, str],
        branch: str | None = None,
    ) -> int:
        validate_table_name(table_name)
        if branch is not None:
            raise EngineError("The spark engine cannot write to a branch.")
        if not all(isinstance(item, str) for pair in properties.items() for item in pair):
            raise TypeError("Snapshot properties must map strings to strings.")
        with self._errors(f"append to {table_name}"), self._jobs() as spark:
            data_schema = _from_arrow_schema(data.schema)
            table_schema = self._spark_schema(table_name)
            merged = (
                data_schema if table_schema is None else merge_schemas(table_schema, data_schema)
            )
            if self.uses_iceberg:
                return self._iceberg_append(spark, table_name, data, merged, properties)
            return self._parquet().append(spark, table_name, data, merged, properties)

    def list_snapshots(self, table_name: str) -> list[SnapshotInfo]:
        validate_table_name(table_name)
        with self._errors(f"list the snapshots of {table_name}"):
            if self.uses_iceberg:
                return self._iceberg_snapshots(table_name)
            return self._parquet().snapshots(table_name)

    def cancel(self) -> None:
        self._cancel_requested.set()
        with _sessions_lock:
            spark = _sessions.get(self._session_key())
        if spark is None:
            return
        if self.is_connect:
            spark.interruptTag(self.job_tag)
        else:
            spark.sparkContext.cancelJobGroup(self.job_tag)

    # --- configuration -----------------------------------------------------------------

    @property
    def is_connect(self) -> bool:
        return self.master.startswith("sc://")

    @property
    def uses_iceberg(self) -> bool:
        """Whether the engine's catalog is an Iceberg catalog (else Spark's built-in one)."""
        if self._uses_iceberg is None:
            key = f"spark.sql.catalog.{self.catalog}"
            implementation = self.conf.get(key)
            if implementation is None:
                # Configured on the cluster (spark-defaults.conf, the Connect server) rather
                # than here: ask the session.
                with self._errors("read the Spark configuration"):
                    implementation = self._session().conf.get(key, None)
            self._uses_iceberg = "iceberg" in (implementation or "").lower()
        return self._uses_iceberg

    def _qualified(self, table_name: str) -> str:
        return _qualified_name(self.catalog, table_name)

    def _parquet(self) -> _ParquetTables:
        return _ParquetTables(warehouse=self.warehouse, catalog=self.catalog)

    # --- sessions and jobs -------------------------------------------------------------

    def _session_key(self) -> tuple[int, str]:
        return (os.getpid(), self.master)

    def _session(self) -> SparkSession:
        key = self._session_key()
        with _sessions_lock:
            spark = _sessions.get(key)
            if spark is None:
                self._check_reachable()
                spark = self._build_session()
                _sessions[key] = spark
            if not self._configured:
                self._configure(spark)
                self._configured = True
            return spark

    def _configure(self, spark: SparkSession) -> None:
        """Apply this engine's configuration to a session that may predate it."""
        for key, value in {"spark.sql.session.timeZone": "UTC", **self.conf}.items():
            if spark.conf.get(key, None) == value:
                continue
            try:
                spark.conf.set(key, value)
            except Exception as exc:  # a static key of a session that already started
                logger.warning("Spark setting %s cannot change at run time: %s", key, exc)

    def _build_session(self) -> SparkSession:
        try:
            if self.is_connect:
                # The Connect client's own builder: pyspark's generic one refuses a remote
                # session in a process that also runs a classic one.
                from pyspark.sql.connect.session import SparkSession

                builder = SparkSession.builder.remote(self.master)
            else:
                from pyspark.sql import SparkSession

                builder = SparkSession.builder.master(self.master).appName("autoloader")
        except ImportError as exc:
            raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
        # UTC, so timestamps mean the same instants in Spark as in Arrow and Iceberg.
        builder = builder.config("spark.sql.session.timeZone", "UTC")
        for key, value in self.conf.items():
            builder = builder.config(key, value)
        # An existing classic session is returned as it is (one SparkContext per process):
        # `_configure` then sets what can still be set at run time.
        return builder.getOrCreate()

    def _check_reachable(self) -> None:
        """Fail fast on a master or Connect server that does not answer.

        Spark itself retries for minutes before giving up on either.
        """
        for host, port in _master_addresses(self.master):
            try:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
            except OSError as exc:
                raise EngineUnavailableError(
                    f"Spark at {self.master} is unreachable: {host}:{port}: {exc.strerror or exc}"
                ) from exc

    @contextmanager
    def _jobs(self) -> Iterator[SparkSession]:
        """Group the Spark jobs started inside (this thread), so that `cancel` interrupts them.

        Classic sessions use a job group whose cancellation interrupts running tasks; Spark
        Connect has no SparkContext and tags its operations instead.
        """
        spark = self._session()
        if self.is_connect:
            spark.addTag(self.job_tag)
        else:
            spark.sparkContext.setJobGroup(
                self.job_tag, "autoloader: append a batch", interruptOnCancel=True
            )
        try:
            yield spark
        finally:
            if self.is_connect:
                spark.removeTag(self.job_tag)
            else:
                # What SparkContext.clearJobGroup does; pyspark has no wrapper for it.
                for key in ("spark.jobGroup.id", "spark.job.description", JOB_INTERRUPT_KEY):
                    spark.sparkContext.setLocalProperty(key, None)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate Spark, Py4J, gRPC and filesystem failures into the autoloader's errors."""
        try:
            yield
        except AutoloaderError:
            raise
        except ImportError:
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
            raise EngineError(f"Spark could not {action}: {reason}") from exc

    # --- Iceberg catalog ---------------------------------------------------------------

    def _spark_schema(self, table_name: str) -> StructType | None:
        if self.uses_iceberg:
            spark = self._session()
            qualified = self._qualified(table_name)
            if not spark.catalog.tableExists(qualified):
                return None
            return spark.table(qualified).schema
        return self._parquet().schema(table_name)

    def _iceberg_append(
        self,
        spark: SparkSession,
        table_name: str,
        data: pa.Table,
        merged: StructType,
        properties: dict[str, str],
    ) -> int:
        namespace = table_name.split(".")[0]
        qualified = self._qualified(table_name)
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {_quote(self.catalog)}.{_quote(namespace)}")
        # Accepting any schema lets `mergeSchema` add columns and widen types on write.
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {qualified} ({merged.toDDL()}) USING iceberg "
            "TBLPROPERTIES ('write.spark.accept-any-schema' = 'true', "
            "'format-version' = '2')"
        )
        commit_id = uuid.uuid4().hex
        options = {f"snapshot-property.{key}": value for key, value in properties.items()}
        options[f"snapshot-property.{COMMIT_ID_PROPERTY}"] = commit_id
        options["mergeSchema"] = "true"
        frame = _dataframe(spark, data, merged)
        frame.writeTo(qualified).options(**options).append()
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

    def _iceberg_snapshots(self, table_name: str) -> list[SnapshotInfo]:
        spark = self._session()
        qualified = self._qualified(table_name)
        if not spark.catalog.tableExists(qualified):
            return []
        rows = _rows(
            spark.sql(
                "SELECT snapshot_id, committed_at, operation, summary "  # noqa: S608 - quoted names
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

    def _iceberg_describe(self, table_name: str) -> TableInfo:
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


class _ParquetTables:
    """External Parquet tables of Spark's built-in catalog, with their commit logs.

    Layout under `<warehouse>/<namespace>.db/<table>/`:
        part-*.parquet                  the table's data (what Spark SQL reads)
        _staging/<snapshot id>/         a batch written by Spark, not yet published
        _autoloader_log/<seq>-<id>.json one record per committed snapshot: its properties,
                                        summary, files and the table's schema after it
    Spark ignores paths starting with "_" when it reads a table, so neither the staging
    folders nor the log are ever read as data.
    """

    def __init__(self, *, warehouse: str, catalog: str):
        self.warehouse = warehouse
        self.catalog = catalog

    # --- reads -------------------------------------------------------------------------

    def exists(self, table_name: str) -> bool:
        return self._last_record(table_name) is not None

    def schema(self, table_name: str) -> StructType | None:
        from pyspark.sql.types import StructType

        record = self._last_record(table_name)
        return None if record is None else StructType.fromJson(record["schema"])

    def describe(self, table_name: str) -> TableInfo:
        record = self._last_record(table_name)
        if record is None:
            return TableInfo.missing(table_name)
        summary = record["summary"]
        return TableInfo(
            table_name=table_name,
            exists=True,
            row_count=summary["total-records"],
            size_bytes=summary["total-files-size"],
            file_count=summary["total-data-files"],
            snapshot_id=record["snapshot_id"],
            last_updated_at=_from_epoch_ms(record["committed_at_ms"]),
        )

    def snapshots(self, table_name: str) -> list[SnapshotInfo]:
        return [_record_snapshot(record) for record in self._records(table_name)]

    def check_warehouse(self) -> None:
        filesystem, path = filesystem_for(self.warehouse)
        filesystem.get_file_info(path)

    # --- writes ------------------------------------------------------------------------

    def append(
        self,
        spark: SparkSession,
        table_name: str,
        data: pa.Table,
        merged: StructType,
        properties: dict[str, str],
    ) -> int:
        filesystem, location = self._location(table_name)
        self._roll_forward(filesystem, location, drop_orphans=True)
        previous = self._last_record(table_name)
        snapshot_id = secrets.randbits(62) + 1  # positive, like Iceberg's snapshot ids
        staging = f"{location}/{STAGING_DIR}/{snapshot_id}"
        frame = _dataframe(spark, data, merged)
        partitions = max(1, -(-data.nbytes // TARGET_FILE_BYTES))
        frame.coalesce(partitions).write.mode("error").parquet(
            _spark_uri(self._uri(table_name) + f"/{STAGING_DIR}/{snapshot_id}")
        )
        files = [
            {"name": info.base_name, "size": info.size}
            for info in filesystem.get_file_info(pafs.FileSelector(staging))
            if info.type == pafs.FileType.File and _is_data_file(info.base_name)
        ]
        before = previous["summary"] if previous else {}
        added_bytes = sum(item["size"] for item in files)
        record = {
            "sequence": (previous["sequence"] + 1) if previous else 1,
            "snapshot_id": snapshot_id,
            "parent_snapshot_id": previous["snapshot_id"] if previous else None,
            "committed_at_ms": int(datetime.now(UTC).timestamp() * 1000),
            "operation": "append",
            "schema": merged.jsonValue(),
            "files": files,
            "properties": properties,
            "summary": {
                "added-records": data.num_rows,
                "added-data-files": len(files),
                "added-files-size": added_bytes,
                "total-records": before.get("total-records", 0) + data.num_rows,
                "total-data-files": before.get("total-data-files", 0) + len(files),
                "total-files-size": before.get("total-files-size", 0) + added_bytes,
            },
        }
        self._write_record(filesystem, location, record)  # the commit point
        self._publish(filesystem, location, record)
        schema_changed = previous is None or previous["schema"] != record["schema"]
        self._register(spark, table_name, merged, schema_changed=schema_changed)
        return snapshot_id

    def drop(self, table_name: str, spark: SparkSession) -> bool:
        filesystem, location = self._location(table_name)
        existed = self.exists(table_name)
        spark.sql(f"DROP TABLE IF EXISTS {self._qualified(table_name)}")
        if filesystem.get_file_info(location).type != pafs.FileType.NotFound:
            filesystem.delete_dir(location)
        return existed

    # --- the commit log ----------------------------------------------------------------

    def _location(self, table_name: str) -> tuple[pafs.FileSystem, str]:
        return filesystem_for(self._uri(table_name))

    def _uri(self, table_name: str) -> str:
        namespace, table = table_name.split(".")
        return f"{self.warehouse}/{namespace}.db/{table}"

    def _qualified(self, table_name: str) -> str:
        return _qualified_name(self.catalog, table_name)

    def _record_names(self, filesystem: pafs.FileSystem, location: str) -> list[str]:
        infos = filesystem.get_file_info(
            pafs.FileSelector(f"{location}/{LOG_DIR}", allow_not_found=True)
        )
        return sorted(info.base_name for info in infos if LOG_RECORD.fullmatch(info.base_name))

    def _read_record(self, filesystem: pafs.FileSystem, location: str, name: str) -> dict:
        with filesystem.open_input_stream(f"{location}/{LOG_DIR}/{name}") as stream:
            return json.loads(stream.read())

    def _records(self, table_name: str) -> list[dict]:
        filesystem, location = self._location(table_name)
        self._roll_forward(filesystem, location)
        return [
            self._read_record(filesystem, location, name)
            for name in self._record_names(filesystem, location)
        ]

    def _last_record(self, table_name: str) -> dict | None:
        filesystem, location = self._location(table_name)
        self._roll_forward(filesystem, location)
        names = self._record_names(filesystem, location)
        return self._read_record(filesystem, location, names[-1]) if names else None

    def _write_record(self, filesystem: pafs.FileSystem, location: str, record: dict) -> None:
        # Written aside, then renamed: a reader sees the whole record or none of it (on S3 the
        # final object appears in one request).
        name = f"{record['sequence']:020d}-{record['snapshot_id']}.json"
        filesystem.create_dir(f"{location}/{LOG_DIR}")
        temporary = f"{location}/{LOG_DIR}/.{uuid.uuid4().hex}.tmp"
        with filesystem.open_output_stream(temporary) as stream:
            stream.write(json.dumps(record, sort_keys=True).encode())
        filesystem.move(temporary, f"{location}/{LOG_DIR}/{name}")

    def _publish(self, filesystem: pafs.FileSystem, location: str, record: dict) -> None:
        """Move a committed snapshot's files into the table; safe to repeat after a crash."""
        staging = f"{location}/{STAGING_DIR}/{record['snapshot_id']}"
        for item in record["files"]:
            source, target = f"{staging}/{item['name']}", f"{location}/{item['name']}"
            if filesystem.get_file_info(source).type == pafs.FileType.File:
                filesystem.move(source, target)
        if filesystem.get_file_info(staging).type != pafs.FileType.NotFound:
            filesystem.delete_dir(staging)

    def _roll_forward(
        self, filesystem: pafs.FileSystem, location: str, *, drop_orphans: bool = False
    ) -> None:
        """Finish publishing committed snapshots; with `drop_orphans`, delete uncommitted ones.

        Only the table's writer drops orphans: a staging folder without a record may belong
        to a write in progress when anyone else looks.
        """
        staged = filesystem.get_file_info(
            pafs.FileSelector(f"{location}/{STAGING_DIR}", allow_not_found=True)
        )
        if not staged:
            return
        committed = {
            LOG_RECORD.fullmatch(name)["snapshot_id"]: name
            for name in self._record_names(filesystem, location)
        }
        for info in staged:
            if info.type != pafs.FileType.Directory:
                continue
            if info.base_name in committed:
                record = self._read_record(filesystem, location, committed[info.base_name])
                logger.warning("publishing snapshot %s of %s late", info.base_name, location)
                self._publish(filesystem, location, record)
            elif drop_orphans:
                logger.warning("deleting uncommitted batch %s of %s", info.base_name, location)
                filesystem.delete_dir(info.path)

    def _register(
        self, spark: SparkSession, table_name: str, schema: StructType, *, schema_changed: bool
    ) -> None:
        """Keep the catalog's entry in step with the log, so Spark SQL reads the table."""
        namespace = table_name.split(".")[0]
        qualified = self._qualified(table_name)
        registered = spark.catalog.tableExists(qualified)
        if registered and not schema_changed:
            spark.sql(f"REFRESH TABLE {qualified}")
            return
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {_quote(self.catalog)}.{_quote(namespace)}")
        if registered:
            # An external table: dropping the entry keeps the files. Parquet tables cannot
            # widen a column in place, so the entry is made again with the merged schema.
            spark.sql(f"DROP TABLE {qualified}")
        location = _spark_uri(self._uri(table_name)).replace("'", "\\'")
        spark.sql(
            f"CREATE TABLE {qualified} ({schema.toDDL()}) USING parquet LOCATION '{location}'"
        )


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
            if not _is_widening(field.dataType, incoming.dataType):
                raise SchemaMismatchError(
                    f"Column {field.name!r} is {field.dataType.simpleString()} in the table "
                    f"but {incoming.dataType.simpleString()} in the data."
                )
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


def _from_arrow_schema(schema: pa.Schema) -> StructType:
    from pyspark.sql.pandas.types import from_arrow_schema

    # Naive timestamps stay naive (TIMESTAMP_NTZ); zoned ones are instants (TIMESTAMP).
    return from_arrow_schema(schema, prefer_timestamp_ntz=True)


def _to_arrow_schema(schema: StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


def _dataframe(spark: SparkSession, data: pa.Table, schema: StructType) -> DataFrame:
    """`data` as a DataFrame of the table's schema: columns in its order, missing ones null."""
    target = _to_arrow_schema(schema)
    columns = []
    for field in target:
        if field.name in data.column_names:
            columns.append(data.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(data.num_rows, field.type))
    return spark.createDataFrame(pa.Table.from_arrays(columns, schema=target), schema=schema)


# --- helpers ---------------------------------------------------------------------------


def _record_snapshot(record: dict) -> SnapshotInfo:
    summary = {key: str(value) for key, value in record["summary"].items()}
    return SnapshotInfo(
        snapshot_id=record["snapshot_id"],
        committed_at=_from_epoch_ms(record["committed_at_ms"]),
        properties={**record["properties"], **summary, "operation": record["operation"]},
    )


def _is_data_file(name: str) -> bool:
    return not name.startswith(("_", "."))


def _spark_uri(uri: str) -> str:
    # Hadoop's S3 connector is s3a://; pyarrow's is s3://. The same bucket either way.
    return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri


def _master_addresses(master: str) -> list[tuple[str, int]]:
    """The host:port pairs a master URL names: sc:// (Connect) and spark:// (standalone)."""
    if master.startswith("sc://"):
        parsed = urlsplit(master.split(";")[0])
        return [(parsed.hostname or "localhost", parsed.port or DEFAULT_CONNECT_PORT)]
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
            "StatusCode.UNAVAILABLE",
            "failed to connect to all addresses",
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


def _rows(frame: DataFrame) -> list[dict]:
    # Through Arrow: timestamps arrive zone-aware (UTC), whatever the local zone of this
    # process; maps arrive as lists of (key, value) pairs.
    return frame.toArrow().to_pylist()


def _from_epoch_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def _reason(exc: BaseException) -> str:
    # Spark's messages carry a JVM stack trace after the first line.
    return first_line(exc)
