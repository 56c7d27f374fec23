"""What a cluster's own Spark catalog says of a table, read with Spark SQL.

Only for a catalog pyiceberg cannot open (the cluster's REST, Hive, Glue...): on the shared
catalog (the default) the engine reads the same facts with pyiceberg, without Spark.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from ingestions.engines.base import SnapshotInfo, TableInfo
from ingestions.engines.spark.schemas import to_arrow_schema

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql import DataFrame, SparkSession


def exists(spark: SparkSession, qualified: str) -> bool:
    return spark.catalog.tableExists(qualified)


def describe(spark: SparkSession, qualified: str, table_name: str) -> TableInfo:
    if not spark.catalog.tableExists(qualified):
        return TableInfo.missing(table_name)
    current = rows(
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


def arrow_schema(spark: SparkSession, qualified: str) -> pa.Schema | None:
    if not spark.catalog.tableExists(qualified):
        return None
    return to_arrow_schema(spark.table(qualified).schema)


def snapshots(spark: SparkSession, qualified: str) -> list[SnapshotInfo]:
    if not spark.catalog.tableExists(qualified):
        return []
    found = rows(
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
        for row in found
    ]


def sample(spark: SparkSession, qualified: str, *, limit: int) -> pa.Table | None:
    if not spark.catalog.tableExists(qualified):
        return None
    frame = spark.table(qualified).limit(limit)
    values = [tuple(row) for row in frame.collect()]
    schema = to_arrow_schema(frame.schema)
    return pa.Table.from_pylist(
        [dict(zip(schema.names, row, strict=True)) for row in values], schema
    )


def rows_per_source_file(spark: SparkSession, qualified: str) -> dict[str, int]:
    if not spark.catalog.tableExists(qualified):
        return {}
    if "_source_file" not in spark.table(qualified).columns:
        return {}
    counts = spark.table(qualified).groupBy("_source_file").count().collect()
    return {row["_source_file"]: int(row["count"]) for row in counts if row[0]}


def holds_rows_ingested_at(
    spark: SparkSession, qualified: str, ingested_at: datetime, *, branch: str | None
) -> bool:
    from pyspark.sql import functions as F

    if not spark.catalog.tableExists(qualified):
        return False
    reader = spark.read.option("branch", branch) if branch else spark.read
    frame = reader.table(qualified)
    if "_ingested_at" not in frame.columns:
        return False
    return bool(frame.where(F.col("_ingested_at") == F.lit(ingested_at)).limit(1).count())


def delete_source_files(spark: SparkSession, qualified: str, paths: list[str]) -> None:
    """One DELETE (one commit) of the rows of `paths`, given as bound parameters."""
    if not paths or not spark.catalog.tableExists(qualified):
        return
    if "_source_file" not in spark.table(qualified).columns:
        return
    names = [f"p{index}" for index in range(len(paths))]
    spark.sql(
        f"DELETE FROM {qualified} WHERE _source_file IN ({', '.join(':' + n for n in names)})",  # noqa: S608
        args=dict(zip(names, paths, strict=True)),
    )


def drop(spark: SparkSession, qualified: str) -> bool:
    existed = spark.catalog.tableExists(qualified)
    # PURGE deletes the data and metadata files, not only the catalog entry.
    spark.sql(f"DROP TABLE IF EXISTS {qualified} PURGE")
    return existed


def rows(frame: DataFrame) -> list[dict]:
    """The rows of a small result; timestamps zone-aware (pyspark gives them naive, in this
    process's local time)."""
    return [
        {
            key: value.astimezone(UTC) if isinstance(value, datetime) else value
            for key, value in row.asDict(recursive=False).items()
        }
        for row in frame.collect()
    ]
