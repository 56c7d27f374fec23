"""Many small files: a product run vs `pyarrow.dataset` + one append, and runs as a table ages.

Part 1: N CSV files of ~2 KB each, loaded by a real product run (listing, history, batch
protocol, lineage columns) and by what anyone would write by hand: one `pyarrow.dataset`
read of the folder and one pyiceberg append. Trials alternate the contenders so machine
noise falls on both. Part 2: `--runs` consecutive runs of one new file each on one
ingestion: the time of the last runs against the first ones, and the size of the table's
metadata folder at the end. Prints tables and writes bench/results/small_files.json.

    .venv/bin/python bench/small_files.py [--files 20000] [--trials 1] [--runs 300]
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, median, print_table, setup_django, temp_dir, timed, write_results

ROWS_PER_FILE = 40  # ~1.5 KB of CSV a file
HEADER = "order_id,customer,region,quantity,unit_price\n"
REGIONS = ("north", "south", "east", "west")


def write_csv(path: Path, index: int) -> int:
    """One small CSV file of orders (~2 KB); returns its size."""
    lines = [HEADER]
    for row in range(ROWS_PER_FILE):
        order_id = index * ROWS_PER_FILE + row
        lines.append(
            f"{order_id},customer-{order_id & 4095},{REGIONS[order_id & 3]},"
            f"{(order_id & 31) + 1},{((order_id * 7919) & 65535) / 100}\n"
        )
    text = "".join(lines)
    path.write_text(text)
    return len(text)


def generate(folder: Path, files: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return sum(write_csv(folder / f"part-{index:06d}.csv", index) for index in range(files))


def bare_engine(folder: Path, catalog_dir: Path) -> int:
    """The hand-written loader: one dataset read of the folder, one append."""
    import pyarrow.dataset as ds
    from pyiceberg.catalog.sql import SqlCatalog

    catalog_dir.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog(
        "bare",
        uri=f"sqlite:///{catalog_dir / 'catalog.db'}",
        warehouse=(catalog_dir / "wh").as_uri(),
    )
    catalog.create_namespace_if_not_exists("raw")
    data = ds.dataset(str(folder), format="csv").to_table()
    table = catalog.create_table("raw.bare", schema=data.schema)
    table.append(data)
    return data.num_rows


def make_ingestion(folder: Path, name: str):
    from ingestions.models import Tenant
    from ingestions.services import ingestion_create

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    grant_source(tenant, folder.as_uri())
    return ingestion_create(
        tenant=tenant,
        actor=None,
        name=name,
        source_uri=folder.as_uri(),
        source_format="csv",
        destination_table=f"raw.{name.replace(' ', '_').replace('-', '_')}",
    )


def product_run(ingestion) -> int:
    from ingestions.models import RunStatus
    from ingestions.run_executor import run_execute
    from ingestions.runs import run_request

    run = run_request(ingestion=ingestion)
    run = run_execute(run_id=run.public_id)
    assert run.status == RunStatus.SUCCESS, run.error
    return run.rows_written


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files)


def many_files(work: Path, files: int, trials: int) -> dict:
    source = work / f"source-{files}"
    total_bytes = generate(source, files)
    times: dict[str, list[float]] = {"bare": [], "product": []}
    for trial in range(trials):
        times["bare"].append(timed(lambda: bare_engine(source, work / f"bare-{files}-{trial}")))
        ingestion = make_ingestion(source, f"small {files} {trial}")
        times["product"].append(timed(lambda: product_run(ingestion)))
    bare, product = median(times["bare"]), median(times["product"])
    return {
        "files": files,
        "megabytes": round(total_bytes / 1e6, 1),
        "rows": files * ROWS_PER_FILE,
        "seconds": times,
        "files_per_second_product": round(files / product),
        "ratio_product_vs_bare": round(product / bare, 3),
    }


def one_file_runs(work: Path, runs: int, maintain_every: int = 0) -> dict:
    """`runs` one-file runs; with `maintain_every`, the worker's table maintenance (compact,
    expire, remove orphans) every that many runs, with a snapshot retention of zero hours
    (it keeps AUTOLOADER_SNAPSHOT_RETAIN_LAST snapshots) so that a short bench shows what
    days of runs under the default 24 h retention would."""
    from django.conf import settings

    from ingestions.engines import load_engine
    from ingestions.maintenance import maintenance_run

    source = work / ("arriving-maintained" if maintain_every else "arriving")
    source.mkdir()
    ingestion = make_ingestion(source, source.name)
    settings.AUTOLOADER_SNAPSHOT_RETENTION_HOURS = 0
    seconds, maintenance_seconds = [], []
    for index in range(runs):
        write_csv(source / f"arrival-{index:06d}.csv", index)
        seconds.append(timed(lambda: product_run(ingestion)))
        if maintain_every and (index + 1) % maintain_every == 0:
            maintenance_seconds.append(timed(lambda: maintenance_run(ingestion=ingestion)))
    engine = load_engine(ingestion.engine)
    table = engine._catalog().load_table(ingestion.table_identifier)
    # Reading the aged table vs the same files loaded by one run into a new table.
    one_load = make_ingestion(source, f"{source.name}-one-load")
    product_run(one_load)
    reference = engine._catalog().load_table(one_load.table_identifier)
    scans = {"aged": [], "one_load": []}
    for _ in range(15):
        scans["aged"].append(timed(lambda: table.scan().to_arrow()))
        scans["one_load"].append(timed(lambda: reference.scan().to_arrow()))
    location = table.location()
    metadata_files, metadata_bytes = folder_bytes(
        Path(location.removeprefix("file://")) / "metadata"
    )
    window = min(10, runs)
    return {
        "runs": runs,
        "maintain_every": maintain_every,
        "maintenance_seconds": maintenance_seconds,
        "seconds": seconds,
        "first_median_s": median(seconds[:window]),
        "last_median_s": median(seconds[-window:]),
        "ratio_last_vs_first": round(median(seconds[-window:]) / median(seconds[:window]), 2),
        "scan_seconds": scans,
        "scan_ratio_aged_vs_one_load": round(median(scans["aged"]) / median(scans["one_load"]), 2),
        "data_files": len(list(table.scan().plan_files())),
        "metadata_files": metadata_files,
        "metadata_bytes": metadata_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[20_000])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300, help="one-file runs (0: skip)")
    parser.add_argument("--name", default="small_files", help="results file name")
    parser.add_argument(
        "--maintain-every",
        type=int,
        default=0,
        help="also run the one-file runs with table maintenance every N runs (0: without only)",
    )
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-small-")
    setup_django(work / "product")
    logging.disable(logging.INFO)  # a line per run would bury the tables

    results = {"many_files": [many_files(work, files, args.trials) for files in args.files]}
    print()
    print_table(
        ["files", "MB", "bare s", "product s", "product files/s", "product / bare"],
        [
            [
                item["files"], item["megabytes"], f"{median(item['seconds']['bare']):.2f}",
                f"{median(item['seconds']['product']):.2f}", item["files_per_second_product"],
                f"{item['ratio_product_vs_bare']:.2f}",
            ]
            for item in results["many_files"]
        ],
    )  # fmt: skip
    if args.runs:
        aged = [one_file_runs(work, args.runs)]
        if args.maintain_every:
            aged.append(one_file_runs(work, args.runs, maintain_every=args.maintain_every))
        results["one_file_runs"] = aged
        print()
        print_table(
            ["runs", "maintenance every", "first 10 median s", "last 10 median s",
             "last / first", "metadata files", "metadata MB", "data files",
             "scan / one load"],
            [[item["runs"], item["maintain_every"] or "never", f"{item['first_median_s']:.3f}",
              f"{item['last_median_s']:.3f}", f"{item['ratio_last_vs_first']:.2f}",
              item["metadata_files"], f"{item['metadata_bytes'] / 1e6:.2f}",
              item["data_files"], f"{item['scan_ratio_aged_vs_one_load']:.2f}"]
             for item in aged],
        )  # fmt: skip
    print(
        "\ntargets: product <= 1.2 x bare; last one-file run <= 1.5 x the first; "
        "scan of the aged table <= 1.5 x one load's"
    )
    write_results(args.name, {"command": " ".join(sys.argv), **results})


if __name__ == "__main__":
    main()
