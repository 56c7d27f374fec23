"""Run throughput: a product run vs the bare engine (pyarrow read + one pyiceberg append).

Same input files, same process, same run of the script; trials alternate so machine noise
falls on both sides. Prints a table and writes bench/results/run_throughput.json.

    .venv/bin/python bench/run_throughput.py [--files 20] [--rows-per-file 100000] [--trials 3]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, print_table, setup_django, temp_dir, timed, write_results


def generate_csv(folder: Path, *, files: int, rows_per_file: int) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

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
                "order_date": pc.cast(pc.add(pc.cast(pa.scalar(19723, pa.int32()), pa.int32()), pc.cast(pc.bit_wise_and(ids, 255), pa.int32())), pa.date32()),
            }
        )  # fmt: skip
        path = folder / f"part-{index:03d}.csv"
        pacsv.write_csv(table, path)
        total += path.stat().st_size
    return total


def bare_engine(folder: Path, catalog_dir: Path) -> int:
    """What anyone would write by hand: read every file with pyarrow, append once."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from pyiceberg.catalog.sql import SqlCatalog

    catalog_dir.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog(
        "bare",
        uri=f"sqlite:///{catalog_dir / 'catalog.db'}",
        warehouse=(catalog_dir / "wh").as_uri(),
    )
    catalog.create_namespace_if_not_exists("raw")
    data = pa.concat_tables(pacsv.read_csv(path) for path in sorted(folder.glob("*.csv")))
    table = catalog.create_table("raw.bare", schema=data.schema)
    table.append(data)
    return data.num_rows


def product_run(folder: Path, trial: int) -> int:
    from ingestions.models import RunStatus, Tenant
    from ingestions.runs import run_execute, run_request
    from ingestions.services import ingestion_create

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    ingestion = ingestion_create(
        tenant=tenant,
        actor=None,
        name=f"bench {trial}",
        source_uri=folder.as_uri(),
        source_format="csv",
        destination_table=f"raw.product_{trial}",
    )
    run = run_request(ingestion=ingestion)
    run = run_execute(run_id=run.public_id)
    assert run.status == RunStatus.SUCCESS, run.error
    return run.rows_written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-")
    setup_django(work / "product")
    from django.conf import settings

    # One batch for the whole run, like the bare engine's single append.
    settings.AUTOLOADER_BATCH_MAX_FILES = max(args.files, 1)
    source = work / "source"
    total_bytes = generate_csv(source, files=args.files, rows_per_file=args.rows_per_file)
    megabytes = total_bytes / 1e6
    print(
        f"input: {args.files} CSV files, {megabytes:.1f} MB, {args.files * args.rows_per_file:,} rows\n"
    )

    bare_times, product_times = [], []
    for trial in range(args.trials):
        bare_times.append(timed(lambda trial=trial: bare_engine(source, work / f"bare-{trial}")))
        product_times.append(timed(lambda trial=trial: product_run(source, trial)))

    bare, product = median(bare_times), median(product_times)
    rows = [
        ["bare engine (pyarrow + 1 pyiceberg append)", f"{bare:.2f}", f"{megabytes / bare:.1f}", "1.00"],
        ["product run (iceberg engine)", f"{product:.2f}", f"{megabytes / product:.1f}", f"{product / bare:.2f}"],
    ]  # fmt: skip
    print_table(["contender", "median s", "MB/s", "ratio vs bare"], rows)
    print(f"\ntarget: product / bare <= 1.15 -> {'met' if product / bare <= 1.15 else 'MISSED'}")
    write_results(
        "run_throughput",
        {
            "command": " ".join(sys.argv),
            "files": args.files,
            "rows": args.files * args.rows_per_file,
            "megabytes": round(megabytes, 1),
            "trials": args.trials,
            "bare_seconds": bare_times,
            "product_seconds": product_times,
            "ratio_product_vs_bare": round(product / bare, 3),
        },
    )


if __name__ == "__main__":
    main()
