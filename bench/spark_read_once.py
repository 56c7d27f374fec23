"""The product's spark run against what a Spark user would write: Structured Streaming.

The hand-written job is the usual incremental file load: `readStream` with a declared
schema over the folder, the lineage columns (`_source_file`, `_ingested_at`), one Iceberg
append with `trigger(availableNow=True)` and a checkpoint. The product's run lists the
folder, subtracts the history, infers the types from a sample (a new table; an existing
one's types are the table's), reads each file once, writing its rows to a scratch branch of
the table in the same pass, counts each file's rows from the data files written, and
commits them with its exactly-once bookkeeping.
Both on the same Spark application (local[2] by default), warm: each is run once before
timing. Prints a table and writes bench/results/spark_read_once.json.

    .venv/bin/python bench/spark_read_once.py [--files 20] [--rows-per-file 200000] [--trials 3]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, print_table, setup_django, temp_dir, timed, write_results
from run_throughput import generate
from spark_vs_iceberg import product_run

SCHEMA = "order_id long, customer string, region string, quantity long, unit_price double"


def streaming_job(spark, folder: Path, work: Path, trial: int) -> int:
    """The hand-written Structured Streaming load: declared schema, lineage, one append."""
    from pyspark.sql import functions as F

    table = f"bare.db.orders_{trial}"
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table} ({SCHEMA}, _source_file string, "
              "_ingested_at timestamp_ltz) USING iceberg")  # fmt: skip
    stream = (
        spark.readStream.schema(SCHEMA)
        .option("header", "true")
        .csv(folder.as_uri())
        .withColumn("_source_file", F.col("_metadata.file_name"))
        .withColumn("_ingested_at", F.current_timestamp())
    )
    query = (
        stream.writeStream.format("iceberg")
        .outputMode("append")
        .trigger(availableNow=True)
        .option("checkpointLocation", str(work / f"checkpoint-{trial}"))
        .toTable(table)
    )
    query.awaitTermination()
    return spark.table(table).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows-per-file", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-spark-once-")
    setup_django(work / "product")
    from django.conf import settings

    settings.AUTOLOADER_BATCH_MAX_FILES = max(args.files, 1)
    settings.AUTOLOADER_SPARK_MASTER = args.master
    source = work / "source"
    total_bytes = generate(
        source, file_format="csv", files=args.files, rows_per_file=args.rows_per_file
    )
    megabytes = total_bytes / 1e6
    rows = args.files * args.rows_per_file
    print(f"input: {args.files} CSV files, {megabytes:.1f} MB, {rows:,} rows\n")

    from ingestions.engines import load_engine

    started = time.perf_counter()
    engine = load_engine("spark")
    engine.ping()  # starts the application
    startup = time.perf_counter() - started
    spark = engine._session()
    spark.conf.set("spark.sql.catalog.bare", "org.apache.iceberg.spark.SparkCatalog")
    spark.conf.set("spark.sql.catalog.bare.type", "hadoop")
    spark.conf.set("spark.sql.catalog.bare.warehouse", (work / "bare").as_uri())

    # Warm-up: each once, untimed (JIT, class loading, the catalog's first connection).
    assert product_run(source, engine="spark", trial=99) == rows
    assert streaming_job(spark, source, work, 99) == rows
    times: dict[str, list[float]] = {"product": [], "streaming": []}
    for trial in range(args.trials):
        times["product"].append(
            timed(lambda trial=trial: product_run(source, engine="spark", trial=trial))
        )
        times["streaming"].append(
            timed(lambda trial=trial: streaming_job(spark, source, work, trial))
        )

    product, streaming = median(times["product"]), median(times["streaming"])
    print_table(
        ["load", "median s", "MB/s", "ratio vs streaming"],
        [
            ["Structured Streaming availableNow, declared schema", f"{streaming:.2f}", f"{megabytes / streaming:.1f}", "1.00"],
            ["product spark run (listing, sample inference, read once, exactly-once)", f"{product:.2f}", f"{megabytes / product:.1f}", f"{product / streaming:.2f}"],
        ],
    )  # fmt: skip
    print(f"\nSpark application start-up (once per worker process, cold): {startup:.1f} s")
    write_results(
        "spark_read_once",
        {
            "command": " ".join(sys.argv),
            "files": args.files,
            "rows": rows,
            "megabytes": round(megabytes, 1),
            "trials": args.trials,
            "spark_master": args.master,
            "spark_startup_seconds": round(startup, 2),
            "product_seconds": times["product"],
            "streaming_seconds": times["streaming"],
            "ratio_product_vs_streaming": round(product / streaming, 3),
        },
    )


if __name__ == "__main__":
    main()
