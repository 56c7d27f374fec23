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

The package: `engine` (the Engine interface on Spark), `files` (its FileReading: a batch's
files read by the executors), `once` (a CSV batch read once, written to a scratch branch,
counted from what was written), `reading` (one pass over the files, per format), `sessions`
(the process's Spark application and the catalog's jars and settings), `metadata` (a
cluster's own catalog read with Spark SQL), `schemas` (what an append may change), `sql`
(quoting, column definitions, failure messages).
"""

from ingestions.engines.spark.engine import SparkEngine
from ingestions.engines.spark.schemas import merge_schemas
from ingestions.engines.spark.sessions import (
    ICEBERG_EXTENSIONS,
    JDBC_DRIVER_JARS,
    iceberg_runtime_jar,
    shared_catalog_conf,
)

__all__ = [
    "ICEBERG_EXTENSIONS",
    "JDBC_DRIVER_JARS",
    "SparkEngine",
    "iceberg_runtime_jar",
    "merge_schemas",
    "shared_catalog_conf",
]
