"""Commit growth: does a run cost more as its table's history grows (issue 26)?

N back-to-back one-file runs of one ingestion at default settings, each a real product
run (run_request + the executor), with the worker's maintenance pass (`maintenance_due`,
untimed) between them as the reaper would call it, and Django's query log (kept with DEBUG
on) emptied as a request would. Reports the median time of the first 15 and the last 15
runs and their ratio (taken within one run, so machine noise falls on both), in wall time
and in the process's CPU time (which other processes on a shared machine disturb less),
the same for the commit alone (the engine's `append`, timed inside each run), and the
table's snapshots, manifests and metadata files at the end. Then the same growth side by
side: 15 more runs of the grown ingestion alternate with 15 runs of a fresh one, so the
machine's noise of those minutes falls on both (the first and last 15 are minutes apart,
and a shared machine's load moves the ratio by ±0.3 between identical runs). Prints a table and
writes bench/results/commit_growth.json.

    .venv/bin/python bench/commit_growth.py [--runs 150] [--rows-per-file 1000] [--window 15]
"""

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, median, print_table, setup_django, temp_dir, write_results


def write_file(folder: Path, index: int, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pa.array(range(index * rows, (index + 1) * rows), pa.int64())
    pq.write_table(
        pa.table({"order_id": ids, "quantity": ids}), folder / f"part-{index:05d}.parquet"
    )


def table_shape(ingestion) -> dict:
    """Snapshots, manifests of the current snapshot, and metadata files left on disk."""
    from ingestions.engines import load_engine

    engine = load_engine(ingestion.engine)
    table = engine._load_table(ingestion.table_identifier)
    snapshot = table.current_snapshot()
    manifests = len(snapshot.manifests(table.io)) if snapshot else 0
    metadata_dir = Path(table.metadata_location.removeprefix("file://")).parent
    return {
        "snapshots": len(table.metadata.snapshots),
        "manifests": manifests,
        "metadata_log": len(table.metadata.metadata_log),
        "metadata_files": len(list(metadata_dir.glob("*.metadata.json"))),
        "manifest_files": len(list(metadata_dir.glob("*.avro"))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--rows-per-file", type=int, default=1000)
    parser.add_argument("--window", type=int, default=15)
    parser.add_argument("--profile-last", action="store_true", help="cProfile the last run")
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-")
    setup_django(work / "product")
    from django.db import reset_queries

    from ingestions.maintenance import maintenance_due
    from ingestions.models import RunStatus, Tenant
    from ingestions.run_executor import run_execute
    from ingestions.runs import run_request
    from ingestions.services import ingestion_create

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})

    def new_ingestion(name: str):
        source = work / name
        source.mkdir()
        grant_source(tenant, source.as_uri())
        return source, ingestion_create(
            tenant=tenant,
            actor=None,
            name=f"commit growth {name}",
            source_uri=source.as_uri(),
            source_format="parquet",
            destination_table=f"raw.commit_growth_{name}",
        )

    # The commit alone, timed inside the run: the real engine's `append`, wrapped in a timer.
    from ingestions.engines.iceberg import IcebergEngine

    commit_times: list[float] = []
    append = IcebergEngine.append

    def timed_append(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return append(self, *args, **kwargs)
        finally:
            commit_times.append(time.perf_counter() - start)

    IcebergEngine.append = timed_append
    maintained = 0

    def one_run(source, ingestion, index: int, profile: bool = False) -> tuple[float, float]:
        """One file written, one run timed (wall, CPU), the maintenance pass untimed."""
        nonlocal maintained
        write_file(source, index, args.rows_per_file)
        profiler = cProfile.Profile() if profile else None
        start, cpu_start = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        run = run_execute(run_id=run_request(ingestion=ingestion).public_id)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        maintained += len(maintenance_due())  # the worker's reaper, between runs, untimed
        # With DEBUG on (the default outside production) Django logs every query, up to
        # 9,000 of them, which the garbage collector then walks: a cost that grows over the
        # first 200 runs in this process and has nothing to do with the table.
        reset_queries()
        assert run.status == RunStatus.SUCCESS, run.error
        return elapsed, cpu

    source, ingestion = new_ingestion("grown")
    times, cpu_times = [], []
    for index in range(args.runs):
        elapsed, cpu = one_run(
            source, ingestion, index, profile=args.profile_last and index == args.runs - 1
        )
        times.append(elapsed)
        cpu_times.append(cpu)
    grown_commits = commit_times[:]

    window = min(args.window, args.runs)
    first, last = median(times[:window]), median(times[-window:])
    cpu_first, cpu_last = median(cpu_times[:window]), median(cpu_times[-window:])
    assert len(grown_commits) == args.runs, len(grown_commits)  # one commit per run
    commit_first, commit_last = median(grown_commits[:window]), median(grown_commits[-window:])
    shape = table_shape(ingestion)

    # The same growth measured side by side: runs of the grown ingestion alternate with runs
    # of a fresh one (past its first few runs), so the machine's noise of the moment falls
    # on both; the first/last figures above are minutes apart.
    young_source, young = new_ingestion("young")
    for index in range(5):
        one_run(young_source, young, index)  # its table created, its first runs done
    side: dict[str, list[float]] = {
        "grown": [],
        "young": [],
        "grown_commit": [],
        "young_commit": [],
    }
    contenders = [("grown", source, ingestion), ("young", young_source, young)]
    for step in range(window):
        for name, folder, target in contenders if step % 2 == 0 else contenders[::-1]:
            side[name].append(one_run(folder, target, args.runs + 5 + step)[0])
            side[f"{name}_commit"].append(commit_times[-1])
    side_ratio = median(side["grown"]) / median(side["young"])
    side_commit_ratio = median(side["grown_commit"]) / median(side["young_commit"])
    print_table(
        ["runs", f"first {window} (s)", f"last {window} (s)", "ratio", "CPU ratio",
         "commit ratio", "side by side", "commit side by side", "snapshots", "manifests",
         "metadata files", "maintenance actions"],
        [[args.runs, f"{first:.3f}", f"{last:.3f}", f"{last / first:.2f}",
          f"{cpu_last / cpu_first:.2f}", f"{commit_last / commit_first:.2f}",
          f"{side_ratio:.2f}", f"{side_commit_ratio:.2f}", shape["snapshots"],
          shape["manifests"], shape["metadata_files"], maintained]],
    )  # fmt: skip
    print(
        f"\nside by side: {window} runs of the grown ingestion alternating with {window} of a"
        " fresh one (its runs 6 to 20), median over median"
    )
    write_results(
        "commit_growth",
        {
            "runs": args.runs,
            "rows_per_file": args.rows_per_file,
            "window": window,
            "median_first": round(first, 4),
            "median_last": round(last, 4),
            "ratio": round(last / first, 3),
            "cpu_median_first": round(cpu_first, 4),
            "cpu_median_last": round(cpu_last, 4),
            "cpu_ratio": round(cpu_last / cpu_first, 3),
            "commit_median_first": round(commit_first, 4),
            "commit_median_last": round(commit_last, 4),
            "commit_ratio": round(commit_last / commit_first, 3),
            "side_by_side_ratio": round(side_ratio, 3),
            "side_by_side_commit_ratio": round(side_commit_ratio, 3),
            "side_by_side_seconds": {
                name: [round(value, 4) for value in values] for name, values in side.items()
            },
            "maintenance_actions": maintained,
            "table": shape,
            "seconds": [round(value, 4) for value in times],
            "cpu_seconds": [round(value, 4) for value in cpu_times],
            "commit_seconds": [round(value, 4) for value in grown_commits],
        },
    )


if __name__ == "__main__":
    main()
