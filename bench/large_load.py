"""One large load as a whole process, for `farm-bench`: the product's run vs a hand-written loader.

`generate` writes the data once (default 40 CSV files, ~1 GB); each other mode loads the
whole folder into a new table in a throwaway data dir, in this process, and exits, so that
farm-bench's wall time, CPU and peak memory are those of the load and nothing else:

- `bare`: what anyone would write by hand: one `pyarrow.dataset` read of the folder (all
  cores), one pyiceberg append.
- `bare-spark`: the same by hand on Spark local[*]: one read of the folder, the lineage
  columns, one write into a new Iceberg table.
- `product`: a real run (listing, history, batches of AUTOLOADER_BATCH_MAX_BYTES, lineage
  columns, the exactly-once protocol) on `--engine` iceberg (embedded) or spark (Spark
  local[*]: its executors read the files). Prints the run's own time and this process's
  peak memory: on spark, the worker's, without the JVM's.

    .venv/bin/python bench/large_load.py generate --folder /tmp/large
    .venv/bin/python bench/large_load.py generate --folder /tmp/large4 --size-gb 4  # memory flat?
    farm-bench -n 3 --timeout 1800 \\
        --vs '.venv/bin/python bench/large_load.py bare --folder /tmp/large' \\
        -- .venv/bin/python bench/large_load.py product --folder /tmp/large
"""

import argparse
import logging
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, setup_django, temp_dir
from small_files import bare_engine

HEADER = "order_id,customer,region,quantity,unit_price,note\n"
REGIONS = ("north", "south", "east", "west")


def generate(folder: Path, files: int, rows_per_file: int, unique: int | None = None) -> None:
    """Write `files` CSV files; past the first `unique` ones, each is a copy of one of them
    under its own name (a 4 GB folder in the time of a 1 GB one)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        path = folder / f"part-{index:04d}.csv"
        if path.exists():
            continue
        if unique and index >= unique:
            shutil.copyfile(folder / f"part-{index % unique:04d}.csv", path)
            continue
        with path.open("w") as out:
            out.write(HEADER)
            first = index * rows_per_file
            for order_id in range(first, first + rows_per_file):
                out.write(
                    f"{order_id},customer-{order_id & 65535},{REGIONS[order_id & 3]},"
                    f"{(order_id & 31) + 1},{((order_id * 7919) & 65535) / 100},"
                    f"note {order_id * 2654435761 & 0xFFFFFFFF:x}\n"
                )


def bare_spark(folder: Path, work: Path) -> int:
    """What a Spark user would write: one read of the folder, lineage columns, one write
    into a new Iceberg table (Iceberg's hadoop catalog), on the same local[*] Spark."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from ingestions.engines.spark import ICEBERG_EXTENSIONS, iceberg_runtime_jar

    spark = (
        SparkSession.builder.master("local[*]")
        .config("spark.jars", str(iceberg_runtime_jar()))
        .config("spark.sql.extensions", ICEBERG_EXTENSIONS)
        .config("spark.sql.catalog.bare", "org.apache.iceberg.spark.SparkCatalog")
        .config("spark.sql.catalog.bare.type", "hadoop")
        .config("spark.sql.catalog.bare.warehouse", (work / "wh").as_uri())
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    frame = (
        spark.read.option("header", "true")
        .option("inferSchema", "true")
        .csv(str(folder))
        .withColumn("_source_file", F.input_file_name())
        .withColumn("_ingested_at", F.current_timestamp())
    )
    frame.writeTo("bare.raw.large").using("iceberg").create()
    rows = spark.table("bare.raw.large").count()
    spark.stop()
    return rows


def product(folder: Path, work: Path, engine: str) -> int:
    template = folder.parent / f"{folder.name}-product-template"
    if template.exists():
        # Migrated once by `generate`: a worker's database exists before its runs.
        shutil.copytree(template, work / "product")
    setup_django(work / "product", migrate=not template.exists())
    logging.disable(logging.INFO)
    from _common import grant_source

    from ingestions.models import RunStatus, Tenant
    from ingestions.run_executor import run_execute
    from ingestions.runs import run_request
    from ingestions.services import ingestion_create

    tenant = Tenant.objects.create(slug="bench", name="Bench")
    grant_source(tenant, folder.as_uri())
    ingestion = ingestion_create(
        tenant=tenant,
        actor=None,
        name="large",
        source_uri=folder.as_uri(),
        source_format="csv",
        destination_table="raw.large",
        engine=engine,
    )
    started = time.perf_counter()
    run = run_execute(run_id=run_request(ingestion=ingestion).public_id)
    assert run.status == RunStatus.SUCCESS, run.error
    print(f"the run alone: {time.perf_counter() - started:.2f} s")
    return run.rows_written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["generate", "bare", "bare-spark", "product"])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--rows-per-file", type=int, default=500_000)
    parser.add_argument(
        "--size-gb",
        type=int,
        default=None,
        help="generate: --files x this many files (40 x 4 = 160 files, ~4 GB); the files "
        "past the first --files are copies under their own names",
    )
    parser.add_argument("--engine", default="iceberg", help="the product's engine")
    args = parser.parse_args()
    if args.mode == "generate":
        if args.size_gb:
            generate(args.folder, args.files * args.size_gb, args.rows_per_file, args.files)
        else:
            generate(args.folder, args.files, args.rows_per_file)
        template = args.folder.parent / f"{args.folder.name}-product-template"
        if not template.exists():
            setup_django(template)
        return
    work = temp_dir("autoloader-bench-large-")
    try:
        started = time.perf_counter()
        if args.mode == "bare":
            rows = bare_engine(args.folder, work)  # small_files.py's hand-written loader
        elif args.mode == "bare-spark":
            sys.path.insert(0, str(ROOT))
            rows = bare_spark(args.folder, work)
        else:
            rows = product(args.folder, work, args.engine)
        seconds = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # This process's own peak: on the spark engine, the worker's, without the JVM's.
        print(
            f"{args.mode} {args.engine if args.mode == 'product' else ''}: {rows} rows in "
            f"{seconds:.2f} s (set-up included), python peak {peak_mib:.0f} MiB"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
