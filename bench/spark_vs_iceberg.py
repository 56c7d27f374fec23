"""The same ingestion on the iceberg engine and on the spark engine (Spark local[2]).

Same CSV files, same product run (listing, history, batches, exactly-once bookkeeping);
only the engine differs. The Spark session is started once, before timing (its ~6-10 s
start-up is reported apart). Prints a table and writes bench/results/spark_vs_iceberg.json.

    .venv/bin/python bench/spark_vs_iceberg.py [--files 20] [--rows-per-file 100000] [--trials 3]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, median, print_table, setup_django, temp_dir, timed, write_results
from run_throughput import generate


def product_run(folder: Path, *, engine: str, trial: int) -> int:
    from ingestions.models import RunStatus, Tenant
    from ingestions.run_executor import run_execute
    from ingestions.runs import run_request
    from ingestions.services import ingestion_create

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    grant_source(tenant, folder.as_uri())
    ingestion = ingestion_create(
        tenant=tenant,
        actor=None,
        name=f"bench {engine} {trial}",
        source_uri=folder.as_uri(),
        source_format="csv",
        destination_table=f"raw.{engine}_{trial}",
        engine=engine,
    )
    run = run_execute(run_id=run_request(ingestion=ingestion).public_id)
    assert run.status == RunStatus.SUCCESS, run.error
    return run.rows_written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-spark-")
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
    load_engine("spark").ping()  # starts the JVM and the SparkSession
    spark_startup = time.perf_counter() - started

    times: dict[str, list[float]] = {"iceberg": [], "spark": []}
    for trial in range(args.trials):
        for engine in times:
            times[engine].append(
                timed(
                    lambda engine=engine, trial=trial: product_run(
                        source, engine=engine, trial=trial
                    )
                )
            )

    iceberg, spark = median(times["iceberg"]), median(times["spark"])
    table = [
        ["iceberg engine (pyiceberg, in-process)", f"{iceberg:.2f}", f"{megabytes / iceberg:.1f}", "1.00"],
        [f"spark engine ({args.master}, built-in catalog)", f"{spark:.2f}", f"{megabytes / spark:.1f}", f"{spark / iceberg:.2f}"],
    ]  # fmt: skip
    print_table(["engine", "median s", "MB/s", "ratio vs iceberg"], table)
    print(f"\nSpark session start-up (once per worker process): {spark_startup:.1f} s")
    write_results(
        "spark_vs_iceberg",
        {
            "command": " ".join(sys.argv),
            "files": args.files,
            "rows": rows,
            "megabytes": round(megabytes, 1),
            "trials": args.trials,
            "spark_master": args.master,
            "spark_startup_seconds": round(spark_startup, 2),
            "iceberg_seconds": times["iceberg"],
            "spark_seconds": times["spark"],
            "ratio_spark_vs_iceberg": round(spark / iceberg, 3),
        },
    )


if __name__ == "__main__":
    main()
