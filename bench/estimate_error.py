"""Duration estimates vs measured runs: the dry-run's estimated seconds against the real load.

One CSV ingestion learns from a few real loads of different shapes (many small files, a
few large ones, in between). Then, for each workload, new files are written, the
fresh-start dry-run (through the API) estimates loading them, a real run loads them, and
the estimate is compared with the run's measured time (`finished_at - started_at`, the
time the estimate is fitted on). Each measured run joins the history, as in production.
For comparison: the bytes-only rule this replaced (bytes / measured throughput) and the
defaults. Prints a table and writes bench/results/estimate_error.json.

    .venv/bin/python bench/estimate_error.py [--trials 2]
"""

import argparse
import csv
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, print_table, setup_django, temp_dir, write_results

# name -> (files, rows per file); a row is ~30 bytes of CSV.
TRAINING = [
    ("warm-up", 20, 100),
    ("small", 1_000, 10),
    ("large", 2, 1_000_000),
    ("medium", 100, 5_000),
]
WORKLOADS = [
    ("many small files", 3_000, 10),
    ("a few large files", 3, 1_000_000),
    ("in between", 300, 5_000),
]
TARGET_ERROR = 0.25


class Source:
    """The ingestion's source folder; every batch of files gets new names (and ids)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.next_index = 0

    def add(self, *, files: int, rows: int) -> int:
        """Write `files` new files of `rows` rows; their size in bytes."""
        size_bytes = 0
        for _ in range(files):
            index, self.next_index = self.next_index, self.next_index + 1
            path = self.folder / f"part-{index:07d}.csv"
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["id", "name", "amount"])
                writer.writerows(
                    (index * 1_000_000 + row, f"name-{index}-{row}", row * 1.5)
                    for row in range(rows)
                )
            size_bytes += path.stat().st_size
        return size_bytes


def load(ingestion):
    """One real run of the ingestion's new files, in this process; the finished run."""
    from ingestions.models import RunStatus
    from ingestions.run_executor import run_execute
    from ingestions.runs import run_request

    run = run_request(ingestion=ingestion)
    run = run_execute(run_id=run.public_id)
    assert run.status == RunStatus.SUCCESS, run.error
    return run


def bytes_only_seconds(ingestion, size_bytes: int) -> float:
    """The rule this replaced: bytes / (bytes read / seconds over the last 10 runs)."""
    from django.conf import settings

    from ingestions.models import Run, RunStatus

    total_bytes = total_seconds = 0.0
    for run in Run.objects.filter(
        ingestion=ingestion, status=RunStatus.SUCCESS, bytes_read__gt=0
    ).order_by("-finished_at")[:10]:
        total_bytes += run.bytes_read
        total_seconds += (run.finished_at - run.started_at).total_seconds()
    throughput = (
        total_bytes / total_seconds
        if total_seconds
        else settings.REFRESH_DEFAULT_THROUGHPUT_MB_PER_S * 1e6
    )
    return size_bytes / throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2, help="loads of each workload")
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-estimate-")
    setup_django(work / "product")
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.test import APIClient

    from ingestions.models import Membership, Role, Tenant
    from ingestions.services import ingestion_create
    from refresh.planning import default_duration_model, duration_model

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    user, _ = get_user_model().objects.get_or_create(username="bench-admin")
    Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.ADMIN})
    source = Source(work / "source")
    source.folder.mkdir()
    grant_source(tenant, str(source.folder))
    ingestion = ingestion_create(
        tenant=tenant,
        actor=None,
        public_id="estimates",
        name="estimates",
        source_uri=str(source.folder),
        source_format="csv",
        destination_table="raw.estimates",
    )
    client = APIClient()
    client.force_authenticate(user)

    for name, files, rows in TRAINING:
        source.add(files=files, rows=rows)
        run = load(ingestion)
        seconds = (run.finished_at - run.started_at).total_seconds()
        print(f"history: {name:<8} {files:>5} files, {run.bytes_read:>11,} bytes, {seconds:.2f} s")
    print(f"model after the history: {duration_model(ingestion).explained()}\n")

    results = []
    for trial in range(args.trials):
        for name, files, rows in WORKLOADS:
            size_bytes = source.add(files=files, rows=rows)
            response = client.post(
                f"/api/v1/ingestions/{ingestion.public_id}/fresh-start",
                {"dry_run": True},
                format="json",
            )
            assert response.status_code == 200, response.content
            preview = response.json()
            assert preview["impact"]["files_to_process"] == files
            estimated = preview["estimate"]["estimated_duration_seconds"]
            before = bytes_only_seconds(ingestion, size_bytes)
            default = default_duration_model().seconds(files=files, size_bytes=size_bytes)
            machine_load = os.getloadavg()[0]  # other work on the machine slows the run
            run = load(ingestion)
            measured = (run.finished_at - run.started_at).total_seconds()
            results.append(
                {
                    "workload": name,
                    "trial": trial,
                    "files": files,
                    "bytes": size_bytes,
                    "measured_seconds": round(measured, 3),
                    "load_average": machine_load,
                    "estimated_seconds": estimated,
                    "estimate_basis": preview["estimate"]["basis"],
                    "estimated_minutes": preview["impact"]["estimated_duration_minutes"],
                    "error": round(estimated / measured - 1, 4),
                    "bytes_only_seconds": round(before, 3),
                    "bytes_only_error": round(before / measured - 1, 4),
                    "defaults_seconds": round(default, 3),
                    "defaults_error": round(default / measured - 1, 4),
                }
            )
            print(
                f"trial {trial + 1} {name:<18} measured {measured:6.2f} s, "
                f"estimated {estimated:6.2f} s ({preview['estimate']['basis']})"
            )

    rows, summary = [], []
    for name, files, _ in WORKLOADS:
        trials = [result for result in results if result["workload"] == name]

        def median_of(key: str, trials=trials) -> float:
            return statistics.median(result[key] for result in trials)

        error = statistics.median(abs(result["error"]) for result in trials)
        summary.append({"workload": name, "median_abs_error": error, "met": error <= TARGET_ERROR})
        rows.append(
            [
                name,
                f"{files:,}",
                f"{median_of('bytes') / 1e6:,.1f}",
                f"{median_of('measured_seconds'):.2f}",
                f"{median_of('estimated_seconds'):.2f}",
                " / ".join(f"{result['error']:+.0%}" for result in trials),
                f"{error:.0%}",
                " / ".join(f"{result['load_average']:.1f}" for result in trials),
                " / ".join(f"{result['bytes_only_error']:+.0%}" for result in trials),
                " / ".join(f"{result['defaults_error']:+.0%}" for result in trials),
            ]
        )
    print()
    print_table(
        [
            "workload",
            "files",
            "MB",
            "measured s",
            "estimated s",
            "error per trial",
            "median |error|",
            "load avg",
            "bytes-only error",
            "defaults error",
        ],
        rows,
    )
    print(f"\ntarget: |error| <= {TARGET_ERROR:.0%} (median of the trials per workload)")
    print(f"model at the end: {duration_model(ingestion).explained()}")
    write_results(
        "estimate_error",
        {
            "command": " ".join(sys.argv),
            "database": connection.vendor,
            "training": TRAINING,
            "results": results,
            "summary": summary,
            "runs": [
                [
                    run.files_loaded,
                    run.bytes_read,
                    (run.finished_at - run.started_at).total_seconds(),
                ]
                for run in ingestion.runs.order_by("created_at", "id")
            ],
        },
    )


if __name__ == "__main__":
    main()
