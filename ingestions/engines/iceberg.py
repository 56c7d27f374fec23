"""Engine on pyiceberg's SQL catalog: tables written in-process, no cluster needed."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

import pyarrow as pa
import sqlalchemy.exc
from pyiceberg import exceptions as iceberg_errors
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import UnsupportedPyArrowTypeException, schema_to_pyarrow
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from ingestions.engines.base import Engine, SnapshotInfo, Stage, TableInfo, validate_table_name
from ingestions.errors import (
    AutoloaderError,
    EngineError,
    EngineUnavailableError,
    SchemaMismatchError,
)

MAIN = "main"

# A concurrent writer to the same table makes a commit fail; the data is rewritten and retried.
COMMIT_ATTEMPTS = 3

# Building a catalog opens a connection pool and checks the catalog tables: do it once per
# process. The pid is in the key because a forked child must not share its parent's pool.
_catalogs: dict[tuple, SqlCatalog] = {}
_catalogs_lock = threading.Lock()

_CATALOG_UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)
_ENGINE_FAILURES = (
    sqlalchemy.exc.SQLAlchemyError,
    iceberg_errors.CommitFailedException,
    iceberg_errors.NoSuchNamespaceError,
    iceberg_errors.NoSuchTableError,
    iceberg_errors.NamespaceAlreadyExistsError,
    iceberg_errors.TableAlreadyExistsError,
    iceberg_errors.NoSuchPropertyException,
    iceberg_errors.ValidationException,
    UnsupportedPyArrowTypeException,
    pa.ArrowException,
    OSError,
    # pyiceberg reports an incompatible schema or an unsupported type this way.
    ValueError,
    TypeError,
)


class IcebergEngine(Engine):
    """Iceberg tables in a pyiceberg SQL catalog (SQLite or PostgreSQL) and a warehouse URI.

    The warehouse is any location pyiceberg's FileIO writes: file:// or s3://bucket/prefix,
    the latter configured by `properties` ("s3.endpoint", "s3.region", ...).
    """

    name = "iceberg"
    can_stage = True

    def __init__(
        self,
        *,
        catalog_name: str,
        catalog_uri: str,
        warehouse: str,
        properties: Mapping[str, str] | None = None,
    ):
        self.catalog_name = catalog_name
        self.catalog_uri = catalog_uri
        self.warehouse = warehouse
        self.properties = dict(properties or {})

    def ping(self) -> None:
        with self._errors("reach the catalog"):
            self._catalog().list_namespaces()

    def table_exists(self, table_name: str) -> bool:
        validate_table_name(table_name)
        with self._errors(f"look up {table_name}"):
            return self._catalog().table_exists(table_name)

    def describe_table(self, table_name: str) -> TableInfo:
        table = self._load_table(table_name)
        if table is None:
            return TableInfo.missing(table_name)
        snapshot = table.current_snapshot()
        summary = snapshot.summary if snapshot and snapshot.summary else {}
        return TableInfo(
            table_name=table_name,
            exists=True,
            row_count=_summary_int(summary, "total-records"),
            size_bytes=_summary_int(summary, "total-files-size"),
            file_count=_summary_int(summary, "total-data-files"),
            snapshot_id=snapshot.snapshot_id if snapshot else None,
            last_updated_at=_from_epoch_ms(table.metadata.last_updated_ms),
        )

    def table_schema(self, table_name: str) -> pa.Schema | None:
        table = self._load_table(table_name)
        if table is None:
            return None
        # Without field ids: callers compare and cast by name, like any other engine's schema.
        return schema_to_pyarrow(table.schema(), include_field_ids=False)

    def drop_table(self, table_name: str) -> bool:
        validate_table_name(table_name)
        with self._errors(f"drop {table_name}"):
            try:
                # purge_table logs, rather than raises, a data file it fails to delete.
                self._catalog().purge_table(table_name)
            except iceberg_errors.NoSuchTableError:
                return False
        return True

    def append(
        self,
        table_name: str,
        data: pa.Table,
        *,
        properties: dict[str, str],
        branch: str | None = None,
    ) -> int:
        validate_table_name(table_name)
        if not all(isinstance(item, str) for pair in properties.items() for item in pair):
            raise TypeError("Snapshot properties must map strings to strings.")
        namespace = table_name.split(".")[0]
        with self._errors(f"append to {table_name}"):
            catalog = self._catalog()
            catalog.create_namespace_if_not_exists(namespace)
            table = catalog.create_table_if_not_exists(
                table_name, schema=data.schema, location=self._table_location(table_name)
            )
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                try:
                    with table.transaction() as transaction:
                        # A no-op when nothing changed; otherwise adds columns and widens
                        # types in the same commit as the data.
                        with transaction.update_schema() as schema_update:
                            schema_update.union_by_name(data.schema)
                        transaction.append(
                            data, snapshot_properties=properties, branch=branch or MAIN
                        )
                except iceberg_errors.CommitFailedException:
                    if attempt == COMMIT_ATTEMPTS:
                        raise
                    table = catalog.load_table(table_name)
                else:
                    break
            # The committed metadata is the table's now, so the branch's head is ours.
            if branch:
                return table.metadata.refs[branch].snapshot_id
            return table.current_snapshot().snapshot_id

    def stage_begin(self, table_name: str, *, name: str) -> Stage:
        validate_table_name(table_name)
        with self._errors(f"stage a new version of {table_name}"):
            catalog = self._catalog()
            try:
                table = catalog.load_table(table_name)
            except iceberg_errors.NoSuchTableError:
                table = None
            if table is None or table.current_snapshot() is None:
                # Nothing to branch from: the new version is built as a table of its own and
                # renamed into place when published.
                namespace, table_part = table_name.split(".")
                staging = f"{namespace}.{table_part}__{name}"[: len(namespace) + 130]
                if catalog.table_exists(staging):
                    catalog.purge_table(staging)  # a discarded attempt's leftovers
                return Stage(table_name=table_name, write_to=staging, branch=None, base=None)
            base = table.current_snapshot().snapshot_id
            with table.manage_snapshots() as snapshots:
                if name in table.metadata.refs:
                    # Left by an attempt that died before it recorded its stage (so before
                    # any batch): it may still hold the old rows; start it again.
                    snapshots.remove_branch(name)
                snapshots.create_branch(base, name)
            table = catalog.load_table(table_name)
            # The new version starts empty; the live table is untouched on main.
            table.delete(AlwaysTrue(), branch=name)
            return Stage(table_name=table_name, write_to=table_name, branch=name, base=base)

    def stage_publish(self, stage: Stage) -> int | None:
        with self._errors(f"publish the new version of {stage.table_name}"):
            catalog = self._catalog()
            if stage.branch is None:
                if not catalog.table_exists(stage.write_to):
                    return None  # published already (a retried publish)
                if catalog.table_exists(stage.table_name):
                    raise EngineError(
                        f"{stage.table_name} was created while its new version was staged."
                    )
                table = catalog.rename_table(stage.write_to, stage.table_name)
                snapshot = table.current_snapshot()
                return snapshot.snapshot_id if snapshot else None
            table = catalog.load_table(stage.table_name)
            head = table.metadata.refs.get(stage.branch)
            if head is None:
                return table.current_snapshot().snapshot_id  # published already
            current = table.current_snapshot()
            if current is None or current.snapshot_id != stage.base:
                raise EngineError(
                    f"{stage.table_name} changed while its new version was staged "
                    f"(main is at {current.snapshot_id if current else None}, not {stage.base})."
                )
            # One commit: readers see the old rows, then the new ones, never anything between.
            with table.manage_snapshots() as snapshots:
                snapshots.set_current_snapshot(head.snapshot_id)
                snapshots.remove_branch(stage.branch)
            return head.snapshot_id

    def stage_discard(self, stage: Stage) -> None:
        with self._errors(f"discard the new version of {stage.table_name}"):
            catalog = self._catalog()
            if stage.branch is None:
                if catalog.table_exists(stage.write_to):
                    catalog.purge_table(stage.write_to)
                return
            try:
                table = catalog.load_table(stage.table_name)
            except iceberg_errors.NoSuchTableError:
                return
            if stage.branch in table.metadata.refs:
                with table.manage_snapshots() as snapshots:
                    snapshots.remove_branch(stage.branch)

    def source_file_rows(self, table_name: str) -> dict[str, int]:
        table = self._load_table(table_name)
        if table is None or "_source_file" not in table.schema().column_names:
            return {}
        with self._errors(f"read {table_name}"):
            lineage = table.scan(selected_fields=("_source_file",)).to_arrow()
            counts = lineage.group_by("_source_file").aggregate([([], "count_all")])
        return {
            path: count
            for path, count in zip(
                counts.column("_source_file").to_pylist(),
                counts.column("count_all").to_pylist(),
                strict=True,
            )
            if path is not None
        }

    def _table_location(self, table_name: str) -> str | None:
        """A tenant's tables live under the warehouse's "<tenant prefix>/" folder.

        "acme__raw.orders" is written to "<warehouse>/acme/raw/orders"; names without a
        tenant prefix (tables made before tenants had one) keep pyiceberg's default.
        """
        namespace, table = table_name.split(".")
        tenant_prefix, separator, tenant_namespace = namespace.partition("__")
        if not separator:
            return None
        return f"{self.warehouse.rstrip('/')}/{tenant_prefix}/{tenant_namespace}/{table}"

    def list_snapshots(self, table_name: str) -> list[SnapshotInfo]:
        table = self._load_table(table_name)
        if table is None:
            return []
        snapshots = sorted(
            table.metadata.snapshots,
            key=lambda snapshot: (snapshot.sequence_number or 0, snapshot.timestamp_ms),
        )
        return [_snapshot_info(snapshot) for snapshot in snapshots]

    def _load_table(self, table_name: str) -> Table | None:
        validate_table_name(table_name)
        with self._errors(f"load {table_name}"):
            try:
                return self._catalog().load_table(table_name)
            except iceberg_errors.NoSuchTableError:
                return None

    def _catalog(self) -> SqlCatalog:
        key = (
            os.getpid(),
            self.catalog_name,
            self.catalog_uri,
            self.warehouse,
            tuple(sorted(self.properties.items())),
        )
        with _catalogs_lock:
            catalog = _catalogs.get(key)
            if catalog is None:
                catalog = _open_catalog(
                    self.catalog_name,
                    uri=self.catalog_uri,
                    warehouse=self.warehouse,
                    # A cached pool outlives database restarts; test connections before use.
                    pool_pre_ping="true",
                    **self.properties,
                )
                _catalogs[key] = catalog
            return catalog

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate catalog and pyiceberg failures into the autoloader's errors."""
        try:
            yield
        except AutoloaderError:
            raise
        except _CATALOG_UNREACHABLE as exc:
            raise EngineUnavailableError(
                f"Iceberg catalog {self.catalog_name!r} is unreachable, could not {action}: "
                f"{_reason(exc)}"
            ) from exc
        except iceberg_errors.ValidationError as exc:
            raise SchemaMismatchError(f"Could not {action}: {_reason(exc)}") from exc
        except _ENGINE_FAILURES as exc:
            raise EngineError(f"Iceberg could not {action}: {_reason(exc)}") from exc


def _open_catalog(name: str, **properties: str) -> SqlCatalog:
    """Open a SQL catalog, creating its tables if needed, safely beside another process.

    pyiceberg creates the catalog tables on first use; two processes starting together (the
    web and the worker) both try, and the loser fails with "table ... already exists". The
    tables are there by then, so opening again succeeds.
    """
    try:
        return SqlCatalog(name, **properties)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
        if "already exists" not in str(exc):
            raise
        return SqlCatalog(name, **properties)


def _snapshot_info(snapshot: Snapshot) -> SnapshotInfo:
    properties = {}
    if snapshot.summary is not None:
        properties = {
            "operation": snapshot.summary.operation.value,
            **snapshot.summary.additional_properties,
        }
    return SnapshotInfo(
        snapshot_id=snapshot.snapshot_id,
        committed_at=_from_epoch_ms(snapshot.timestamp_ms),
        properties=properties,
    )


def _summary_int(summary: Mapping[str, str], key: str) -> int:
    # pyiceberg's Summary answers None for a missing key instead of raising.
    value = summary.get(key)
    return int(value) if value else 0


def _from_epoch_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def _reason(exc: BaseException) -> str:
    # SQLAlchemy appends a "Background on this error" link on its own line.
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
