"""The spark engine: Iceberg tables written by Spark, whose executors read the source files.

Each append carries the run and batch in its snapshot summary (Iceberg's
`snapshot-property.<key>` write options); new columns and widened types are merged by
Iceberg (`mergeSchema`); snapshots and sizes come from the `snapshots` and `refs` metadata
tables; a drop is `DROP TABLE ... PURGE`; a cancel interrupts the engine's job group.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

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
from ingestions.engines.spark import metadata, once, sessions
from ingestions.engines.spark.files import SparkFileReading
from ingestions.engines.spark.reading import (
    CORRUPT_COLUMN,
    INPUT_COLUMN,
)
from ingestions.engines.spark.schemas import conform_to_table, from_arrow_schema, merge_schemas
from ingestions.engines.spark.sql import (
    check_properties,
    ddl,
    failure_reason,
    is_missing_iceberg_runtime,
    literal,
    qualified_name,
    quote,
)
from ingestions.errors import (
    AutoloaderError,
    EngineError,
    EngineUnavailableError,
    SchemaMismatchError,
)

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


logger = logging.getLogger(__name__)

T = TypeVar("T")

CANCEL_RECHECK_SECONDS = 1.0
# Iceberg's snapshot-property write option marks our commit so its snapshot id can be read.
COMMIT_ID_PROPERTY = "autoloader.commit-id"
# The embedded engine's new-table properties, and what lets `mergeSchema` evolve the table.
NEW_TABLE_PROPERTIES = {
    "format-version": "2",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    "write.spark.accept-any-schema": "true",
}
JOB_INTERRUPT_KEY = "spark.job.interruptOnCancel"


class SparkEngine(SparkFileReading, Engine):
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
        if not sessions.may_start_here() and self.shared_catalog_uri is not None:
            # A web process starts no Spark application: the master answers, the catalog too.
            sessions.check_reachable(self.master)
            self._catalog_engine().ping()
            return
        with self._errors("reach Spark"):
            # Loads the catalog plugin: a missing Iceberg runtime jar shows up here.
            self._session().sql(f"SHOW NAMESPACES IN {quote(self.catalog)}").collect()

    # Table metadata is read from the shared catalog by pyiceberg, without Spark: a web
    # process (a preview, the table page) never starts a Spark application. On a cluster's
    # own catalog it is Spark SQL (`metadata`), in the processes that may start Spark.

    def table_exists(self, table_name: str) -> bool:
        return self._metadata(
            table_name,
            f"look up {table_name}",
            shared=lambda engine: engine.table_exists(table_name),
            own=metadata.exists,
        )

    def describe_table(self, table_name: str) -> TableInfo:
        return self._metadata(
            table_name,
            f"describe {table_name}",
            shared=lambda engine: engine.describe_table(table_name),
            own=lambda spark, qualified: metadata.describe(spark, qualified, table_name),
        )

    def table_schema(self, table_name: str) -> pa.Schema | None:
        return self._metadata(
            table_name,
            f"read the schema of {table_name}",
            shared=lambda engine: engine.table_schema(table_name),
            own=metadata.arrow_schema,
        )

    def list_snapshots(self, table_name: str) -> list[SnapshotInfo]:
        return self._metadata(
            table_name,
            f"list the snapshots of {table_name}",
            shared=lambda engine: engine.list_snapshots(table_name),
            own=metadata.snapshots,
        )

    def table_lineage(self, table_name: str):
        return self._metadata(
            table_name,
            f"read the branches of {table_name}",
            shared=lambda engine: engine.table_lineage(table_name),
            own=lambda spark, qualified: None,  # a cluster's own catalog: every snapshot shown
        )

    def sample_rows(self, table_name: str, *, limit: int) -> pa.Table | None:
        return self._metadata(
            table_name,
            f"read rows of {table_name}",
            shared=lambda engine: engine.sample_rows(table_name, limit=limit),
            own=lambda spark, qualified: metadata.sample(spark, qualified, limit=limit),
        )

    def source_file_rows(self, table_name: str, *, progress=None) -> dict[str, int]:
        def own(spark, qualified: str) -> dict[str, int]:
            # One Spark job: its progress is the whole job, done or not.
            if progress is not None:
                progress(0, 1)
            counts = metadata.rows_per_source_file(spark, qualified)
            if progress is not None:
                progress(1, 1)
            return counts

        return self._metadata(
            table_name,
            f"count the rows of {table_name} per source file",
            shared=lambda engine: engine.source_file_rows(table_name, progress=progress),
            own=own,
        )

    def remove_source_files(
        self, table_name: str, paths: list[str], *, properties: dict[str, str]
    ) -> None:
        self._metadata(
            table_name,
            f"remove rows from {table_name}",
            shared=lambda engine: engine.remove_source_files(
                table_name, paths, properties=properties
            ),
            own=lambda spark, qualified: metadata.delete_source_files(spark, qualified, paths),
        )

    def holds_rows_ingested_at(
        self, table_name: str, ingested_at: datetime, *, branch: str | None = None
    ) -> bool:
        return self._metadata(
            table_name,
            f"read {table_name}",
            shared=lambda engine: engine.holds_rows_ingested_at(
                table_name, ingested_at, branch=branch
            ),
            own=lambda spark, qualified: metadata.holds_rows_ingested_at(
                spark, qualified, ingested_at, branch=branch
            ),
        )

    def drop_table(self, table_name: str) -> bool:
        return self._metadata(
            table_name,
            f"drop {table_name}",
            shared=lambda engine: engine.drop_table(table_name),
            own=metadata.drop,
        )

    def _metadata(
        self,
        table_name: str,
        action: str,
        *,
        shared: Callable[[Engine], T],
        own: Callable[[SparkSession, str], T],
    ) -> T:
        validate_table_name(table_name)
        if self.shared_catalog_uri is not None:
            return shared(self._catalog_engine())
        with self._errors(action), self._jobs(action) as spark:
            return own(spark, self._qualified(table_name))

    def append(
        self,
        table_name: str,
        data: pa.Table,
        *,
        properties: dict[str, str],
        branch: str | None = None,
        replacing: list[str] | None = None,
    ) -> int:
        """Rows the worker holds (not a run's files: those go through `read_files`)."""
        validate_table_name(table_name)
        check_properties(properties)
        with self._errors(f"append to {table_name}"), self._jobs("append rows") as spark:
            schema = from_arrow_schema(data.schema)
            frame = spark.createDataFrame([tuple(row.values()) for row in data.to_pylist()], schema)
            return self._write(
                spark, table_name, frame, properties, branch=branch, replacing=replacing
            )

    def append_files(
        self,
        table_name: str,
        batch: FileBatch,
        *,
        properties: dict[str, str],
        ingested_at: datetime,
        branch: str | None = None,
        replacing: list[str] | None = None,
    ) -> int:
        from pyspark.sql import functions as F

        validate_table_name(table_name)
        check_properties(properties)
        if isinstance(batch.handle, once.ScratchWrite):
            # Read once (`once`): the rows are written already; this is the commit.
            with self._errors(f"append to {table_name}"):
                self._raise_if_cancelled()
                return once.publish(
                    self._iceberg_table(table_name),
                    batch.handle,
                    properties=properties,
                    branch=branch or "main",
                    replacing=replacing,
                )
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
                F.lit(ingested_at).cast("timestamp_ltz").alias("_ingested_at"),
            )
            return self._write(
                spark, table_name, rows, properties, branch=branch, replacing=replacing
            )

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
        spark = sessions.running(self.master)
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
        replacing: list[str] | None = None,
    ) -> int:
        """Append `frame` to the table's main, or to `branch` (a staged version), as one
        snapshot carrying `properties`; returns its id. With `replacing`, the same commit
        removes those source files' rows (an overwrite by filter)."""
        qualified = self._qualified(table_name)
        table_schema = self._spark_schema(spark, table_name)
        if table_schema is not None:
            frame = conform_to_table(frame, table_schema)
        if branch is not None:
            if table_schema is None:
                raise EngineError(f"{table_name} has no branch {branch}: it does not exist.")
            merge_schemas(table_schema, frame.schema)
        elif table_schema is None:
            self._create_table(spark, table_name, frame.schema)
        else:
            merge_schemas(table_schema, frame.schema)  # refuses what Iceberg cannot widen
        commit_id = uuid.uuid4().hex
        options = {f"snapshot-property.{key}": value for key, value in properties.items()}
        options[f"snapshot-property.{COMMIT_ID_PROPERTY}"] = commit_id
        options["mergeSchema"] = "true"
        self._raise_if_cancelled()
        # Iceberg's identifier of a branch: `<table>.branch_<name>`.
        target = f"{qualified}.{quote(f'branch_{branch}')}" if branch else qualified
        writer = frame.writeTo(target).options(**options)
        if replacing and table_schema is not None and "_source_file" in table_schema.names:
            from pyspark.sql import functions as F

            writer.overwrite(F.col("_source_file").isin(list(replacing)))
        else:
            writer.append()
        rows = metadata.rows(
            spark.sql(
                f"SELECT snapshot_id FROM {qualified}.snapshots "  # noqa: S608 - quoted names
                "WHERE summary[:key] = :commit_id",
                args={"key": COMMIT_ID_PROPERTY, "commit_id": commit_id},
            )
        )
        if not rows:
            raise EngineError(f"The append to {table_name} left no snapshot.")
        return int(rows[0]["snapshot_id"])

    def _create_table(self, spark: SparkSession, table_name: str, schema: StructType) -> None:
        """Create the table (and its namespace) with `schema`, as the embedded engine would."""
        namespace = table_name.split(".")[0]
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {quote(self.catalog)}.{quote(namespace)}")
        location = table_location(self.warehouse, table_name)
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {self._qualified(table_name)} ({ddl(schema)}) "
            "USING iceberg"
            + (f" LOCATION {literal(location)}" if location else "")
            + " TBLPROPERTIES ("
            + ", ".join(
                f"{literal(key)} = {literal(value)}" for key, value in NEW_TABLE_PROPERTIES.items()
            )
            + ")"
        )

    def _iceberg_table(self, table_name: str):
        """The table as pyiceberg loads it from the shared catalog (its metadata, now)."""
        engine = self._catalog_engine()
        return engine._catalog().load_table(table_name)

    # --- configuration -----------------------------------------------------------------

    def _qualified(self, table_name: str) -> str:
        return qualified_name(self.catalog, table_name)

    def _spark_schema(self, spark: SparkSession, table_name: str) -> StructType | None:
        qualified = self._qualified(table_name)
        if not spark.catalog.tableExists(qualified):
            return None
        return spark.table(qualified).schema

    # --- sessions and jobs -------------------------------------------------------------

    def _session(self) -> SparkSession:
        """This engine's session: its own catalogs and SQL settings, on the process's one
        SparkContext for the master."""
        return sessions.session(
            master=self.master,
            conf=self.conf,
            catalog=self.catalog,
            shared_catalog_uri=self.shared_catalog_uri,
            warehouse=self.warehouse,
        )

    @contextmanager
    def _jobs(self, description: str) -> Iterator[SparkSession]:
        """Group the Spark jobs started inside (this thread), so that `cancel` interrupts them;
        meanwhile the application is in use (`sessions.stop_idle` leaves it)."""
        with sessions.in_use(self.master):
            spark = self._session()
            self._raise_if_cancelled()
            # This engine's session is the active one of this thread: Spark's driver-side
            # code (CSV inference, for one) reads the active session's settings.
            spark._jvm.org.apache.spark.sql.SparkSession.setActiveSession(spark._jsparkSession)
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
            reason = failure_reason(exc)
            if self._cancel_requested.is_set():
                raise EngineError(f"Spark could not {action}: cancelled ({reason})") from exc
            if sessions.is_unreachable(exc):
                raise EngineUnavailableError(
                    f"Spark at {self.master} is unreachable, could not {action}: {reason}"
                ) from exc
            if is_missing_iceberg_runtime(exc):
                raise EngineUnavailableError(
                    f"Spark catalog {self.catalog!r} is unreachable, could not {action}: "
                    f"{reason}. Put the iceberg-spark-runtime jar on the cluster's classpath."
                ) from exc
            if "Cannot write incompatible data" in reason or "Cannot safely cast" in reason:
                raise SchemaMismatchError(reason) from exc
            raise EngineError(f"Spark could not {action}: {reason}") from exc
