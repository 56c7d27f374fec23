"""Run throughput: a product run vs the bare engine vs Spark local[2], on the same files.

Bare engine = what anyone would write by hand: pyarrow reads every file, one pyiceberg
append. Product = a real run (listing, history, batch protocol, lineage columns, one
Iceberg commit). Spark = a local[2] session (started once, outside the timings) reading
the same files and writing a table. Trials alternate the contenders so machine noise
falls on all of them. Prints a table and writes bench/results/run_throughput.json.

    .venv/bin/python bench/run_throughput.py [--files 20] [--rows-per-file 100000]
        [--trials 3] [--formats csv parquet json] [--no-spark]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, median, print_table, setup_django, temp_dir, timed, write_results

EXTENSIONS = {"csv": "csv", "parquet": "parquet", "json": "jsonl"}


def generate(folder: Path, *, file_format: str, files: int, rows_per_file: int) -> int:
    """Write the same synthetic orders as `files` files of one format; returns total bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for index in range(files):
        ids = pa.array(range(index * rows_per_file, (index + 1) * rows_per_file), pa.int64())
        table = pa.table(
            {
                "order_id": ids,
                "customer": pc.binary_join_element_wise("customer-", pc.cast(pc.bit_wise_and(ids, 4095), pa.string()), ""),
                "region": pc.choose(pc.cast(pc.bit_wise_and(ids, 3), pa.int8()), "north", "south", "east", "west"),
                "quantity": pc.add(pc.bit_wise_and(ids, 31), 1),
                "unit_price": pc.divide(pc.cast(pc.bit_wise_and(pc.multiply(ids, 7919), 65535), pa.float64()), 100.0),
            }
        )  # fmt: skip
        path = folder / f"part-{index:03d}.{EXTENSIONS[file_format]}"
        if file_format == "csv":
            pacsv.write_csv(table, path)
        elif file_format == "parquet":
            pq.write_table(table, path)
        else:
            with path.open("w") as handle:
                for batch in table.to_batches(max_chunksize=65536):
                    for row in batch.to_pylist():
                        handle.write(
                            '{"order_id": %d, "customer": "%s", "region": "%s", "quantity": %d, '
                            '"unit_price": %r}\n'
                            % (row["order_id"], row["customer"], row["region"], row["quantity"], row["unit_price"])
                        )  # fmt: skip
        total += path.stat().st_size
    return total


def read_bare(path: Path, file_format: str):
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    if file_format == "csv":
        return pacsv.read_csv(path)
    if file_format == "parquet":
        return pq.read_table(path)
    return pajson.read_json(path)


def bare_engine(folder: Path, file_format: str, catalog_dir: Path) -> int:
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    catalog_dir.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog(
        "bare",
        uri=f"sqlite:///{catalog_dir / 'catalog.db'}",
        warehouse=(catalog_dir / "wh").as_uri(),
    )
    catalog.create_namespace_if_not_exists("raw")
    data = pa.concat_tables(read_bare(path, file_format) for path in sorted(folder.iterdir()))
    table = catalog.create_table("raw.bare", schema=data.schema)
    table.append(data)
    return data.num_rows


def product_run(folder: Path, file_format: str, trial: int) -> int:
    from ingestions.models import RunStatus, Tenant
    from ingestions.run_executor import run_execute
    from ingestions.runs import run_request
    from ingestions.services import ingestion_create

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    grant_source(tenant, folder.as_uri())
    ingestion = ingestion_create(
        tenant=tenant,
        actor=None,
        name=f"bench {file_format} {trial}",
        source_uri=folder.as_uri(),
        source_format=file_format,
        destination_table=f"raw.product_{file_format}_{trial}",
    )
    run = run_request(ingestion=ingestion)
    run = run_execute(run_id=run.public_id)
    assert run.status == RunStatus.SUCCESS, run.error
    return run.rows_written


def spark_session(warehouse: Path):
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName("autoloader-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )


def spark_load(spark, folder: Path, file_format: str, trial: int) -> int:
    reader = spark.read
    if file_format == "csv":
        frame = reader.option("header", "true").option("inferSchema", "true").csv(str(folder))
    elif file_format == "parquet":
        frame = reader.parquet(str(folder))
    else:
        frame = reader.json(str(folder))
    name = f"spark_{file_format}_{trial}"
    frame.write.mode("overwrite").format("parquet").saveAsTable(name)
    return spark.table(name).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet", "json"])
    parser.add_argument("--no-spark", action="store_true")
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-")
    setup_django(work / "product")
    from django.conf import settings

    # One batch for the whole run, like the bare engine's single append.
    settings.AUTOLOADER_BATCH_MAX_FILES = max(args.files, 1)
    spark = None
    if not args.no_spark:
        try:
            spark = spark_session(work / "spark-warehouse")
            spark.sparkContext.setLogLevel("ERROR")
        except Exception as exc:  # no Java or no pyspark: report without Spark
            print(f"Spark unavailable ({exc}); continuing without it")

    rows, results = [], {}
    for file_format in args.formats:
        source = work / f"source-{file_format}"
        total_bytes = generate(
            source, file_format=file_format, files=args.files, rows_per_file=args.rows_per_file
        )
        megabytes = total_bytes / 1e6
        times: dict[str, list[float]] = {"bare": [], "product": [], "spark": []}
        if spark is not None:
            spark_load(spark, source, file_format, 999)  # warm-up: JIT, file listing caches
        for trial in range(args.trials):
            times["bare"].append(
                timed(
                    lambda: bare_engine(source, file_format, work / f"bare-{file_format}-{trial}")
                )
            )
            times["product"].append(timed(lambda: product_run(source, file_format, trial)))
            if spark is not None:
                times["spark"].append(timed(lambda: spark_load(spark, source, file_format, trial)))
        bare = median(times["bare"])
        for contender in ("bare", "product", "spark"):
            if not times[contender]:
                continue
            seconds = median(times[contender])
            rows.append([
                file_format, f"{megabytes:.0f}", contender, f"{seconds:.2f}",
                f"{megabytes / seconds:.1f}", f"{seconds / bare:.2f}",
            ])  # fmt: skip
        results[file_format] = {
            "megabytes": round(megabytes, 1),
            "rows": args.files * args.rows_per_file,
            "seconds": times,
            "ratio_product_vs_bare": round(median(times["product"]) / bare, 3),
            "ratio_spark_vs_product": round(median(times["spark"]) / median(times["product"]), 3)
            if times["spark"]
            else None,
        }
    if spark is not None:
        spark.stop()
    print()
    print_table(["format", "MB", "contender", "median s", "MB/s", "vs bare"], rows)
    print("\ntargets: product <= 1.15 x bare; product faster than Spark local[2]")
    write_results(
        "run_throughput",
        {
            "command": " ".join(sys.argv),
            "files": args.files,
            "trials": args.trials,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
