"""Verify's scan (issue 24): counting a table's rows per `_source_file` one data file at a
time with progress (`IcebergEngine.source_file_rows(progress=...)`, what a verification
job and the synchronous verify run) against the bare engine: one pyiceberg scan of the
column to Arrow and one `group_by`. Time (median of runs) and peak RSS, each measured in a
fresh process per mode.

    flock /tmp/bench.lock .venv/bin/python bench/verify_scan.py --data-files 100 --rows 100000
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, median, print_table, temp_dir, write_results

CATALOG = "bench"
TABLE = "bench.lineage"


def build(folder: Path, *, data_files: int, rows: int, sources_per_file: int) -> None:
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        CATALOG, uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}/warehouse"
    )
    catalog.create_namespace("bench")
    schema = pa.schema([("id", pa.int64()), ("_source_file", pa.string())])
    table = catalog.create_table(TABLE, schema=schema)
    for index in range(data_files):
        names = [f"in/day-{index:05d}/part-{part:03d}.csv" for part in range(sources_per_file)]
        table.append(
            pa.table(
                {
                    "id": pa.array(range(index * rows, (index + 1) * rows), pa.int64()),
                    "_source_file": pa.array(
                        [names[row % sources_per_file] for row in range(rows)]
                    ),
                },
                schema=schema,
            )
        )


def measure(folder: Path, mode: str) -> dict:
    """In this (fresh) process: one count of rows per source file, its time and peak RSS."""
    from pyiceberg.catalog.sql import SqlCatalog

    from ingestions.engines.iceberg.engine import IcebergEngine

    uri, warehouse = f"sqlite:///{folder}/catalog.db", f"file://{folder}/warehouse"
    start = time.perf_counter()
    if mode == "bare":
        table = SqlCatalog(CATALOG, uri=uri, warehouse=warehouse).load_table(TABLE)
        lineage = table.scan(selected_fields=("_source_file",)).to_arrow()
        counts = lineage.group_by("_source_file").aggregate([([], "count_all")])
        files, rows = counts.num_rows, sum(counts.column("count_all").to_pylist())
        updates = 0
    else:
        engine = IcebergEngine(catalog_name=CATALOG, catalog_uri=uri, warehouse=warehouse)
        seen: list[tuple[int, int]] = []
        found = engine.source_file_rows(TABLE, progress=lambda done, total: seen.append(done))
        files, rows, updates = len(found), sum(found.values()), len(seen)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "peak_mb": peak_mb,
        "files": files,
        "rows": rows,
        "updates": updates,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-files", type=int, default=100)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per data file")
    parser.add_argument("--sources-per-file", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return

    folder = temp_dir("bench-verify-")
    build(
        folder, data_files=args.data_files, rows=args.rows, sources_per_file=args.sources_per_file
    )
    results: dict[str, list[dict]] = {"bare": [], "ours": []}
    for _ in range(args.repeat):
        for mode in results:  # alternated, so drift hits both alike
            child = subprocess.run(
                [sys.executable, __file__, "--measure", str(folder), mode],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            results[mode].append(json.loads(child.stdout.strip().splitlines()[-1]))
    bare, ours = results["bare"], results["ours"]
    assert {(r["files"], r["rows"]) for r in bare + ours} == {
        (args.data_files * args.sources_per_file, args.data_files * args.rows)
    }, results
    summary = {
        mode: {
            "seconds": median([r["seconds"] for r in runs]),
            "peak_mb": median([r["peak_mb"] for r in runs]),
            "progress_updates": runs[0]["updates"],
        }
        for mode, runs in results.items()
    }
    time_ratio = summary["ours"]["seconds"] / summary["bare"]["seconds"]
    memory_ratio = summary["ours"]["peak_mb"] / summary["bare"]["peak_mb"]
    print(
        f"\n{args.data_files} data files x {args.rows:,} rows, "
        f"{args.sources_per_file} source files each, median of {args.repeat}\n"
    )
    print_table(
        ["mode", "seconds", "peak RSS MB", "progress updates"],
        [
            [mode, f"{s['seconds']:.2f}", f"{s['peak_mb']:.0f}", s["progress_updates"]]
            for mode, s in summary.items()
        ],
    )
    print(f"\nours / bare: time {time_ratio:.2f}x, peak memory {memory_ratio:.2f}x")
    write_results(
        "verify_scan",
        {
            "data_files": args.data_files,
            "rows_per_file": args.rows,
            "sources_per_file": args.sources_per_file,
            "repeat": args.repeat,
            "summary": summary,
            "time_ratio": round(time_ratio, 3),
            "memory_ratio": round(memory_ratio, 3),
            "runs": results,
        },
    )


if __name__ == "__main__":
    main()
