"""Duration estimates vs measured runs, cold (no run yet) and warm (after a few runs).

Three workloads, each loaded by a new CSV ingestion of its own, so that its dry-run is a
cold estimate (the engine's calibrated costs, `REFRESH_DEFAULT_*` / `REFRESH_SPARK_*`):
200,000 tiny files, 1 GB in 40 files, 20,000 small files (`--quick`: a tenth of each). For
each: the files are written, the fresh-start dry-run (through the API) gives the estimate,
a real run (in this process) loads them, and the estimate is compared with the run's
measured time (`finished_at - started_at`, the time estimates are fitted on). *Warm* is
what the model of another ingestion of the same format says after four training loads
of different shapes (its own runs, no calibration in it) for the same workload; *old
defaults* the settings used before a first run until issue 26 (1 s + 12 ms a file +
20 MB/s). Ratios are estimated / measured (target: within 2x, 0.5-2.0).

`--calibrate` first loads a few shapes (one tiny file, 50,000 tiny files, 8 files of
50 MB, 5,000 small files; --quick: a tenth of the files), each by a new ingestion, fits
start + per file + per byte (`refresh.estimates.fit_costs`) on them and prints the
settings that ship as the engine's cold costs; on spark also the start-up of the Spark
application (the first run's excess over a warm one-file run). `--use-calibration`
estimates the workloads with the costs just derived instead of the settings.

Files live in a temp dir deleted at the end. Prints a table and writes
bench/results/estimate_error[-spark][-quick].json.

    flock /tmp/bench.lock .venv/bin/python bench/estimate_error.py [--quick] [--calibrate]
        [--use-calibration] [--engine iceberg|spark] [--skip-workloads]
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, print_table, setup_django, temp_dir, write_results

ROWS_OF_LARGE_FILE = 650_000  # ~25 MB of CSV: 40 of them are ~1 GB
# (name, files, kind of file); --quick: a tenth of the files (of the bytes for "large")
WORKLOADS = [
    ("200k tiny files", 200_000, "tiny"),
    ("1 GB in 40 files", 40, "large"),
    ("20k small files", 20_000, "small"),
]
CALIBRATION = [
    ("one tiny file", 1, "tiny"),
    ("many tiny files", 50_000, "tiny"),
    ("a few large files", 8, "large2"),
    ("many small files", 5_000, "small"),
]
# Warm: another ingestion learns from these loads (files, rows per file).
TRAINING = [(20, 100), (1_000, 10), (2, 1_000_000), (100, 5_000)]
OLD_DEFAULTS = (1.0, 0.012, 1 / 20e6)  # start s, s per file, s per byte (before issue 26)
TARGET_RATIO = 2.0


def write_files(folder: Path, *, files: int, kind: str, quick: bool) -> int:
    """Write `files` CSV files of `kind` into a new `folder`; their size in bytes.

    tiny: one row; small: 40 rows (~1.5 KB); large: ROWS_OF_LARGE_FILE rows (~25 MB,
    a tenth under --quick); large2: twice a large file."""
    folder.mkdir(parents=True)
    header = "id,name,amount,note\n"
    if kind in ("large", "large2"):
        rows = ROWS_OF_LARGE_FILE // (10 if quick else 1) * (2 if kind == "large2" else 1)
        content = header + "".join(
            f"{row},name-{row & 65535},{row * 1.5},note {row * 2654435761 & 0xFFFFFFFF:x}\n"
            for row in range(rows)
        )
    for index in range(files):
        if kind == "tiny":
            content = f"{header}{index},name-{index},1.5,x\n"
        elif kind == "small":
            content = header + "".join(
                f"{index * 100 + row},name-{index}-{row},{row * 1.5},note {row}\n"
                for row in range(40)
            )
        (folder / f"part-{index:07d}.csv").write_text(content)
    return sum(entry.stat().st_size for entry in os.scandir(folder))


def write_rows(folder: Path, *, files: int, rows: int, first: int) -> None:
    for index in range(first, first + files):
        (folder / f"part-{index:07d}.csv").write_text(
            "id,name,amount,note\n"
            + "".join(f"{index * rows + row},n-{row},{row * 1.5},x\n" for row in range(rows))
        )


class Bench:
    def __init__(self, work: Path, engine: str):
        from django.contrib.auth import get_user_model
        from rest_framework.test import APIClient

        from ingestions.models import Membership, Role, Tenant

        self.work, self.engine, self.count = work, engine, 0
        self.tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
        user, _ = get_user_model().objects.get_or_create(username="bench-admin")
        Membership.objects.get_or_create(
            user=user, tenant=self.tenant, defaults={"role": Role.ADMIN}
        )
        grant_source(self.tenant, str(work / "sources"))
        self.client = APIClient()
        self.client.force_authenticate(user)

    def ingestion(self, folder: Path):
        from ingestions.services import ingestion_create

        self.count += 1
        return ingestion_create(
            tenant=self.tenant,
            actor=None,
            public_id=f"estimates-{self.count}",
            name=f"estimates {self.count}",
            source_uri=str(folder),
            source_format="csv",
            destination_table=f"raw.estimates_{self.count}",
            engine=self.engine,
        )

    def preview(self, ingestion) -> dict:
        response = self.client.post(
            f"/api/v1/ingestions/{ingestion.public_id}/fresh-start",
            {"dry_run": True},
            format="json",
        )
        assert response.status_code == 200, response.content
        return response.json()

    @staticmethod
    def load(ingestion) -> float:
        """One real run of the ingestion's new files, in this process; its seconds."""
        from ingestions.models import RunStatus
        from ingestions.run_executor import run_execute
        from ingestions.runs import run_request

        run = run_execute(run_id=run_request(ingestion=ingestion).public_id)
        assert run.status == RunStatus.SUCCESS, run.error
        return (run.finished_at - run.started_at).total_seconds()


def calibrate(bench: Bench, quick: bool) -> dict:
    """Fit the engine's cold costs on first runs of a few shapes; print the settings."""
    from refresh.estimates import fit_costs

    runs, first = [], None
    for name, files, kind in CALIBRATION:
        files = max(1, files // 10) if quick and kind != "large2" else files
        folder = bench.work / "sources" / f"calibrate-{bench.count + 1}"
        size_bytes = write_files(folder, files=files, kind=kind, quick=quick)
        seconds = bench.load(bench.ingestion(folder))
        shutil.rmtree(folder)
        print(f"calibration: {name:<18} {files:>6} files {size_bytes:>13,} bytes {seconds:7.2f} s")
        if first is None:
            first = (files, size_bytes, seconds)  # pays the process's (and Spark's) warm-up
            continue
        runs.append((files, size_bytes, seconds))
    # The first load (one tiny file) pays what a worker pays once, and Spark's start:
    # again, warm, to measure the start of a load.
    folder = bench.work / "sources" / f"calibrate-{bench.count + 1}"
    size_bytes = write_files(folder, files=1, kind="tiny", quick=quick)
    seconds = bench.load(bench.ingestion(folder))
    shutil.rmtree(folder)
    runs.append((1, size_bytes, seconds))
    start, per_file, per_byte = fit_costs(runs)
    prefix = "REFRESH_SPARK_DEFAULT" if bench.engine == "spark" else "REFRESH_DEFAULT"
    derived = {
        f"{prefix}_START_SECONDS": round(start, 2),
        f"{prefix}_SECONDS_PER_FILE": round(per_file, 6),
        f"{prefix}_THROUGHPUT_MB_PER_S": round(1 / per_byte / 1e6, 1) if per_byte else None,
    }
    if bench.engine == "spark":
        derived["REFRESH_SPARK_STARTUP_SECONDS"] = round(first[2] - seconds, 1)
    print("\nderived cold costs (console/settings.py):")
    for name, value in derived.items():
        print(f"  {name} = {value}")
    return {"runs": [first, *runs], "derived": derived}


def train(bench: Bench):
    """An ingestion that learned from the TRAINING loads: its model is the warm one."""
    folder = bench.work / "sources" / "training"
    folder.mkdir(parents=True)
    ingestion, first = bench.ingestion(folder), 0
    for files, rows in TRAINING:
        write_rows(folder, files=files, rows=rows, first=first)
        first += files
        seconds = bench.load(ingestion)
        print(f"training: {files:>5} files of {rows:>9,} rows: {seconds:6.2f} s")
    shutil.rmtree(folder)
    return ingestion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of each workload")
    parser.add_argument("--calibrate", action="store_true", help="derive the cold costs first")
    parser.add_argument("--engine", choices=("iceberg", "spark"), default="iceberg")
    parser.add_argument("--skip-workloads", action="store_true", help="calibrate only")
    parser.add_argument(
        "--use-calibration",
        action="store_true",
        help="with --calibrate: estimate the workloads with the costs just derived",
    )
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-estimate-")
    try:
        setup_django(work / "product")
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    from django.db import connection

    from refresh.estimates import duration_model

    (work / "sources").mkdir()
    bench = Bench(work, args.engine)
    calibration = calibrate(bench, args.quick) if args.calibrate else None
    if calibration and args.use_calibration:
        from django.conf import settings

        for name, value in calibration["derived"].items():
            if value is not None:
                setattr(settings, name, value)
    results = []
    if not args.skip_workloads:
        trained = train(bench)
        warm_model = duration_model(trained)
        print(f"warm model: {warm_model.explained()}\n")
        for name, files, kind in WORKLOADS:
            files = files // 10 if args.quick and kind != "large" else files
            folder = work / "sources" / f"workload-{bench.count + 1}"
            size_bytes = write_files(folder, files=files, kind=kind, quick=args.quick)
            ingestion = bench.ingestion(folder)
            preview = bench.preview(ingestion)
            assert preview["impact"]["files_to_process"] == files
            assert preview["estimate"]["source"] == "default", preview["estimate"]
            cold = preview["estimate"]["estimated_duration_seconds"]
            warm = duration_model(trained).seconds(files=files, size_bytes=size_bytes)
            start, per_file, per_byte = OLD_DEFAULTS
            old = start + per_file * files + per_byte * size_bytes
            machine_load = os.getloadavg()[0]
            measured = bench.load(ingestion)
            shutil.rmtree(folder)
            results.append(
                {
                    "workload": name,
                    "files": files,
                    "bytes": size_bytes,
                    "measured_seconds": round(measured, 2),
                    "load_average": machine_load,
                    "cold_seconds": cold,
                    "cold_basis": preview["estimate"]["basis"],
                    "cold_minutes": preview["impact"]["estimated_duration_minutes"],
                    "cold_ratio": round(cold / measured, 3),
                    "warm_seconds": round(warm, 2),
                    "warm_ratio": round(warm / measured, 3),
                    "old_defaults_seconds": round(old, 1),
                    "old_defaults_ratio": round(old / measured, 2),
                }
            )
            print(
                f"{name:<18} measured {measured:7.2f} s, cold {cold:7.2f} s, warm {warm:7.2f} s"
                f" ({preview['estimate']['basis']})"
            )
        print()
        print_table(
            [
                "workload",
                "files",
                "MB",
                "measured s",
                "cold est. s",
                "cold / measured",
                "warm est. s",
                "warm / measured",
                "old defaults / measured",
                "load avg",
            ],
            [
                [
                    result["workload"],
                    f"{result['files']:,}",
                    f"{result['bytes'] / 1e6:,.1f}",
                    f"{result['measured_seconds']:.2f}",
                    f"{result['cold_seconds']:.2f}",
                    f"{result['cold_ratio']:.2f}",
                    f"{result['warm_seconds']:.2f}",
                    f"{result['warm_ratio']:.2f}",
                    f"{result['old_defaults_ratio']:.1f}",
                    f"{result['load_average']:.1f}",
                ]
                for result in results
            ],
        )
        met = all(1 / TARGET_RATIO <= result["cold_ratio"] <= TARGET_RATIO for result in results)
        verdict = "met" if met else "NOT met"
        print(f"\ntarget: cold estimate within {TARGET_RATIO:g}x of the run: {verdict}")
    name = "estimate_error" + ("-spark" if args.engine == "spark" else "")
    name += "-quick" if args.quick else ""
    write_results(
        name + ("-calibration" if args.skip_workloads else ""),
        {
            "command": " ".join(sys.argv),
            "database": connection.vendor,
            "engine": args.engine,
            "calibration": calibration,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
