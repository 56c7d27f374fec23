"""pyiceberg's SQL catalog, opened once per process, and what its failures mean."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

import pyarrow as pa
import sqlalchemy.exc
from pyiceberg import exceptions as iceberg_errors
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import UnsupportedPyArrowTypeException
from pyiceberg.table import TableMetadata, Transaction

from ingestions.engines.base import (
    redact_server_paths,
)

# Building a catalog opens a connection pool and checks the catalog tables: do it once per
# process. The pid is in the key because a forked child must not share its parent's pool.
_catalogs: dict[tuple, SqlCatalog] = {}
_catalogs_lock = threading.Lock()

CATALOG_UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)
ENGINE_FAILURES = (
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


class MemoTransaction(Transaction):
    """A pyiceberg transaction that computes its pending metadata once per change.

    pyiceberg rebuilds and deep-copies the whole table metadata, every snapshot included, on
    each read of `Transaction.table_metadata`: about twenty times per append, so an append
    costs more the older the table. The metadata models are frozen and a read never changes
    them, so while neither the table's metadata nor the pending updates have changed, the
    metadata computed last is still exact and is returned again.
    """

    _memo: tuple[object, object, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        if self._memo is None or self._memo[0] is not base or self._memo[1] is not updates:
            self._memo = (base, updates, super().table_metadata)
        return self._memo[2]


def catalog_for(
    name: str, *, uri: str, warehouse: str, properties: Mapping[str, str]
) -> SqlCatalog:
    """The process's catalog `name` at `uri`, opened on first use."""
    key = (os.getpid(), name, uri, warehouse, tuple(sorted(properties.items())))
    with _catalogs_lock:
        catalog = _catalogs.get(key)
        if catalog is None:
            catalog = open_catalog(
                name,
                uri=uri,
                warehouse=warehouse,
                # A cached pool outlives database restarts; test connections before use.
                pool_pre_ping="true",
                **properties,
            )
            _catalogs[key] = catalog
        return catalog


def open_catalog(name: str, **properties: str) -> SqlCatalog:
    """Open a SQL catalog, creating its tables if needed, safely beside another process.

    pyiceberg creates the catalog tables (two of them, one after the other) on first use;
    processes starting together (the web and the worker) all try, and a loser fails with
    "table ... already exists". A table that exists stays, so opening again gets further:
    a loser can lose once per catalog table, hence a few attempts, not one.
    """
    for attempt in range(1, CATALOG_OPEN_ATTEMPTS + 1):
        try:
            return SqlCatalog(name, **properties)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
            if "already exists" not in str(exc) or attempt == CATALOG_OPEN_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)  # let the winner finish creating the other table
    raise AssertionError("unreachable")


# pyiceberg's SQL catalog has two tables; each can be lost to another process once.
CATALOG_OPEN_ATTEMPTS = 5


def failure_reason(exc: BaseException) -> str:
    # SQLAlchemy appends a "Background on this error" link on its own line. Paths of the
    # warehouse, its manifests and the catalog file are not the client's to know.
    lines = str(exc).strip().splitlines()
    return redact_server_paths(lines[0]) if lines else type(exc).__name__
