"""Zero-downtime full refresh of a 2,000,000-row table: what a reader sees, publish, undo, retention.

One ingestion over 20 CSV files (2 M rows, the same synthetic orders as run_throughput.py)
in a granted local folder, loaded by a real run. Then, per trial, a full refresh in each mode
(drop_first, then atomic) and the undo of the atomic one, each executed in-process by the
worker's own code while a reader thread polls the table from outside: its own pyiceberg
catalog connection, as any user of the table. A read counts as readable when the table
loads, its current snapshot plans to exactly the old or the new row count (old = new = 2 M:
a full refresh reloads the same files) and every data file it plans exists.

Measured too: the publish of the atomic refresh (the `staged_publish` call, and in it the
engine's Iceberg commit, against the last batch commit -> `published_at`), the undo time and
what it restores, and the storage held for undo (`retained_bytes` and the warehouse's bytes
on disk before, during retention and after `retention_expire`). Prints tables and writes
bench/results/refresh_publish.json.

    .venv/bin/python bench/refresh_publish.py [--files 20] [--rows-per-file 100000] [--trials 3]
"""

import argparse
import itertools
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, median, print_table, setup_django, temp_dir, write_results
from run_throughput import generate

# The reader polls this long before and after each operation: it sees both versions settled.
SETTLE_SECONDS = 0.5


def outside_catalog():
    """The product's catalog opened with plain pyiceberg, as a user of the table would."""
    from django.conf import settings
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(
        settings.AUTOLOADER_CATALOG_NAME,
        uri=settings.AUTOLOADER_CATALOG_URI,
        warehouse=settings.AUTOLOADER_WAREHOUSE,
    )


@dataclass
class Read:
    started: float
    finished: float
    rows: int | None  # None: the table is missing
    snapshot_id: int | None
    missing_files: int = 0

    def readable(self, valid_rows: set[int]) -> bool:
        return self.rows in valid_rows and not self.missing_files


class Reader(threading.Thread):
    """Polls a table from outside the product, with a catalog connection of its own."""

    def __init__(self, table_name: str):
        super().__init__(daemon=True)
        self.table_name = table_name
        self.catalog = outside_catalog()
        self.reads: list[Read] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.reads.append(self.read_once())

    def read_once(self) -> Read:
        """What a query would do before reading rows: load the table, plan the current
        snapshot's files (manifests), and check each one can be opened."""
        from pyiceberg.exceptions import NoSuchTableError

        started = time.perf_counter()
        try:
            table = self.catalog.load_table(self.table_name)
        except NoSuchTableError:
            return Read(started, time.perf_counter(), rows=None, snapshot_id=None)
        snapshot = table.current_snapshot()
        if snapshot is None:
            return Read(started, time.perf_counter(), rows=0, snapshot_id=None)
        try:
            tasks = list(table.scan().plan_files())
        except FileNotFoundError:  # a manifest purged under the reader: the table is gone
            return Read(started, time.perf_counter(), rows=None, snapshot_id=snapshot.snapshot_id)
        missing = sum(1 for task in tasks if not table.io.new_input(task.file.file_path).exists())
        return Read(
            started,
            time.perf_counter(),
            rows=sum(task.file.record_count for task in tasks),
            snapshot_id=snapshot.snapshot_id,
            missing_files=missing,
        )

    def stop(self) -> list[Read]:
        self.stopping.set()
        self.join()
        return self.reads


def outage(reads: list[Read], *, valid_rows: set[int], operation_seconds: float) -> dict:
    """The longest stretch in which no read succeeded, measured from the end of the last
    good read before it to the start of the first good one after it (an upper bound: the
    table may have come back during that next read); how many reads failed; and, where the
    version changed between two good reads, the time between them: an outage shorter than
    that could hide there (from the start of the last read of the old version to the end
    of the first read of the new one)."""
    longest, bad_reads, outage_from = 0.0, 0, None
    last_good_end = reads[0].started if reads else 0.0
    for read in reads:
        if read.readable(valid_rows):
            if outage_from is not None:
                longest = max(longest, read.started - outage_from)
                outage_from = None
            last_good_end = read.finished
        else:
            bad_reads += 1
            if outage_from is None:
                outage_from = last_good_end
    if outage_from is not None:  # never came back while we watched
        longest = max(longest, reads[-1].finished - outage_from)
    good_reads = [read for read in reads if read.readable(valid_rows)]
    switches = [
        later.finished - earlier.started
        for earlier, later in itertools.pairwise(good_reads)
        if later.snapshot_id != earlier.snapshot_id
    ]
    gaps = [later.started - earlier.started for earlier, later in itertools.pairwise(reads)]
    return {
        "operation_seconds": operation_seconds,
        "reads": len(reads),
        "bad_reads": bad_reads,
        "longest_unreadable_seconds": longest,
        "longest_poll_gap_seconds": max(gaps, default=0.0),
        "switch_gap_seconds": max(switches, default=0.0),
        "seen": sorted({_seen(read) for read in reads}),
        # Readable versions seen one after the other: 2 is old then new, never back.
        "versions_seen": 1 + len(switches),
    }


def _seen(read: Read) -> str:
    if read.rows is None:
        return "missing"
    if read.missing_files:
        return f"{read.rows} rows, {read.missing_files} files gone"
    return f"{read.rows} rows"


def watched(table_name: str, action, *, valid_rows: set[int]) -> tuple[object, dict]:
    """Run `action` while a reader polls `table_name`; its result, and what the reader saw."""
    reader = Reader(table_name)
    reader.start()
    try:
        time.sleep(SETTLE_SECONDS)
        started = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - started
        time.sleep(SETTLE_SECONDS)
    finally:
        reads = reader.stop()
    return result, outage(reads, valid_rows=valid_rows, operation_seconds=seconds)


class Laps:
    """Durations of every call of a function, by wrapping it where it is looked up."""

    def __init__(self, owner, name: str):
        original = getattr(owner, name)
        self.seconds: list[float] = []

        def clocked(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - started)

        setattr(owner, name, clocked)


def disk_bytes(folder: Path) -> tuple[int, int]:
    """(sum of file sizes, file count) under `folder`, as `du --apparent-size -b` counts."""
    total = count = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            total += (Path(root) / name).stat().st_size
            count += 1
    return total, count


def history_state(ingestion) -> dict:
    """The history as the product reads it (the selectors), comparable before and after."""
    from ingestions.selectors import processed_file_paths, processed_file_summary

    summary = processed_file_summary(ingestion=ingestion)
    return {
        "paths": sorted(processed_file_paths(ingestion=ingestion)),
        "count": summary["count"],
        "total_bytes": summary["total_bytes"],
        "loaded_at": [str(summary["oldest_loaded_at"]), str(summary.get("newest_loaded_at"))],
    }


def live_version_bytes(table_name: str) -> int:
    """Bytes of the data files the table's current snapshot reads (its summary's total)."""
    snapshot = outside_catalog().load_table(table_name).current_snapshot()
    return int((snapshot.summary or {}).get("total-files-size", 0)) if snapshot else 0


def table_state(table_name: str) -> dict:
    """Row count (the rows themselves, read) and current snapshot of the live table."""
    table = outside_catalog().load_table(table_name)
    snapshot = table.current_snapshot()
    return {
        "rows": table.scan(selected_fields=("order_id",)).to_arrow().num_rows,
        "snapshot_id": snapshot.snapshot_id if snapshot else None,
    }


class RefreshBench:
    """One ingestion over the generated files, loaded once, and the operations on it."""

    def __init__(self, *, source: Path, total_rows: int):
        from django.conf import settings
        from django.contrib.auth import get_user_model

        import ingestions.run_executor as run_executor
        import ingestions.runs as runs
        from ingestions.engines import load_engine
        from ingestions.models import Membership, Role, RunStatus, Tenant
        from ingestions.services import ingestion_create

        tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
        self.user, _ = get_user_model().objects.get_or_create(username="bench-admin")
        Membership.objects.get_or_create(
            user=self.user, tenant=tenant, defaults={"role": Role.ADMIN}
        )
        grant_source(tenant, source.as_uri())
        self.ingestion = ingestion_create(
            tenant=tenant,
            actor=None,
            name="bench refresh",
            source_uri=source.as_uri(),
            source_format="csv",
            destination_table="raw.orders",
        )
        self.table_name = self.ingestion.table_identifier
        self.engine = load_engine(self.ingestion.engine)
        self.warehouse = Path(urlparse(settings.AUTOLOADER_WAREHOUSE).path)
        run = run_executor.run_execute(
            run_id=runs.run_request(ingestion=self.ingestion).public_id, engine=self.engine
        )
        assert run.status == RunStatus.SUCCESS and run.rows_written == total_rows, run.error
        # Old and new versions both hold every row: a full refresh reloads the same files.
        self.valid_rows = {total_rows}
        # Wrapped where the worker looks them up: the whole publish, and its Iceberg commit.
        self.publish_laps = Laps(runs, "staged_publish")
        self.commit_laps = Laps(self.engine, "stage_publish")
        self.restore_laps = Laps(self.engine, "restore")

    def full_refresh(self, mode: str):
        """The whole operation as a client and the worker do it: execute, run, sync."""
        import ingestions.run_executor as run_executor
        from ingestions.models import RunStatus
        from refresh.models import RefreshOperation
        from refresh.services import refresh_execute
        from refresh.sync import operation_sync

        operation = refresh_execute(
            ingestion=self.ingestion, kind="full_refresh", actor=self.user, confirm=True, mode=mode
        )
        run = run_executor.run_execute(run_id=operation.run.public_id, engine=self.engine)
        assert run.status == RunStatus.SUCCESS, run.error
        return operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))

    def publish_times(self, operation) -> dict:
        """The last publish's timings: the call, its commit, and the run's own timestamps."""
        from ingestions.models import Run, RunBatch

        run = Run.objects.get(pk=operation.run_id)
        last_commit = max(RunBatch.objects.filter(run=run).values_list("committed_at", flat=True))
        return {
            "iceberg_commit_seconds": self.commit_laps.seconds[-1],
            "staged_publish_seconds": self.publish_laps.seconds[-1],
            "last_commit_to_published_seconds": (run.published_at - last_commit).total_seconds(),
            "run_seconds": (run.finished_at - run.started_at).total_seconds(),
        }

    def undo(self, operation) -> tuple[dict, dict]:
        """Undo `operation` under a reader; what came back, and what the reader saw."""
        from refresh.undo import refresh_undo

        during = disk_bytes(self.warehouse)[0]
        retained = operation_reload(operation).retained_bytes or 0
        undone, window = watched(
            self.table_name,
            lambda: refresh_undo(
                operation=operation, actor=self.user, confirm=True, engine=self.engine
            ),
            valid_rows=self.valid_rows,
        )
        result = {
            "undo_seconds": window["operation_seconds"],
            "iceberg_restore_seconds": self.restore_laps.seconds[-1],
            "status": undone.status,
            "table": table_state(self.table_name),
            "history": history_state(self.ingestion),
            "retained_bytes": retained,
            "disk_bytes_during_retention": during,
            "disk_bytes_after_undo": disk_bytes(self.warehouse)[0],
        }
        return result, window

    def retention(self) -> dict:
        """One more atomic refresh, without a reader: the bytes on disk before it, while its
        old version is held for undo, and after `retention_expire` once that time passed."""
        from django.utils import timezone

        from refresh.models import RefreshOperation
        from refresh.undo import retention_expire

        def expire_now(operations) -> list[str]:
            operations.update(retained_until=timezone.now() - timedelta(seconds=1))
            return retention_expire()

        # What earlier trials still hold goes first, so "before" is one version of the table.
        expire_now(RefreshOperation.objects.filter(retained_until__isnull=False))
        before = disk_bytes(self.warehouse)
        live_before = live_version_bytes(self.table_name)
        operation = self.full_refresh("atomic")
        assert operation.status == "published", operation.status
        publish = self.publish_times(operation)
        operation = operation_reload(operation)
        during = disk_bytes(self.warehouse)
        live_during = live_version_bytes(self.table_name)
        started = time.perf_counter()
        released = expire_now(RefreshOperation.objects.filter(pk=operation.pk))
        expire_seconds = time.perf_counter() - started
        after = disk_bytes(self.warehouse)
        return {
            "before": {
                "bytes": before[0],
                "files": before[1],
                "live_bytes": live_before,
                "retained_bytes": 0,
            },
            "during_retention": {
                "bytes": during[0],
                "files": during[1],
                "live_bytes": live_during,
                "retained_bytes": operation.retained_bytes or 0,
            },
            "after_expire": {
                "bytes": after[0],
                "files": after[1],
                "live_bytes": live_version_bytes(self.table_name),
                "retained_bytes": operation_reload(operation).retained_bytes or 0,
            },
            "retained_until_when_published": str(operation.retained_until),
            "released": released,
            "expire_seconds": expire_seconds,
            "publish": {**publish, "no_reader": True},
        }


def operation_reload(operation):
    from refresh.models import RefreshOperation

    return RefreshOperation.objects.get(pk=operation.pk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    total_rows = args.files * args.rows_per_file

    work = temp_dir("autoloader-bench-refresh-")
    setup_django(work / "product")
    from django.conf import settings

    from ingestions.formats import size as size_text

    # Several refreshes an hour is the point here, not the per-user rate limit.
    settings.REFRESH_RATE_LIMITS = {
        **settings.REFRESH_RATE_LIMITS,
        "full_refresh": "1000/h",
        "undo": "1000/h",
    }

    started = time.perf_counter()
    source_bytes = generate(
        work / "source", file_format="csv", files=args.files, rows_per_file=args.rows_per_file
    )
    bench = RefreshBench(source=work / "source", total_rows=total_rows)
    setup_seconds = time.perf_counter() - started
    print(
        f"setup: {args.files} CSV files ({size_text(source_bytes)}, {total_rows:,} rows) "
        f"written and loaded by a run in {setup_seconds:.1f} s"
    )

    windows: dict[str, list[dict]] = {"atomic": [], "drop_first": [], "undo": []}
    publishes, undos = [], []
    for trial in range(1, args.trials + 1):
        for mode in ("drop_first", "atomic"):
            before = {
                "table": table_state(bench.table_name),
                "history": history_state(bench.ingestion),
            }
            operation, window = watched(
                bench.table_name,
                lambda mode=mode: bench.full_refresh(mode),
                valid_rows=bench.valid_rows,
            )
            windows[mode].append(window)
            report(f"trial {trial} {mode}", windows[mode][-1])
            if mode == "drop_first":
                continue
            assert operation.status == "published", operation.status
            publishes.append(bench.publish_times(operation))
            undone, window = bench.undo(operation)
            windows["undo"].append(window)
            undone["rows_back"] = undone["table"]["rows"] == before["table"]["rows"]
            undone["snapshot_back"] = undone["table"] == before["table"]
            undone["history_back"] = undone["history"] == before["history"]
            undos.append(undone)
            report(f"trial {trial} undo", windows["undo"][-1])
    retention = bench.retention()
    publishes.append(retention["publish"])

    print()
    print_table(
        ["watched", "trials", "reads", "unreadable reads", "longest unreadable ms",
         "version switch seen within ms", "operation s (median)", "unreadable / operation"],
        [
            [mode, len(found), sum(item["reads"] for item in found),
             sum(item["bad_reads"] for item in found),
             f"{max(item['longest_unreadable_seconds'] for item in found) * 1000:.0f}",
             f"{max(item['switch_gap_seconds'] for item in found) * 1000:.0f}",
             f"{median([item['operation_seconds'] for item in found]):.2f}",
             f"{max(item['longest_unreadable_seconds'] / item['operation_seconds'] for item in found):.2f}"]
            for mode, found in windows.items()
            if found
        ],
    )  # fmt: skip
    print()
    print_table(
        ["atomic refresh", "Iceberg commit ms", "staged_publish ms",
         "last batch -> published_at ms", "run s"],
        [
            [f"{index}" + (" (no reader)" if item.get("no_reader") else ""),
             f"{item['iceberg_commit_seconds'] * 1000:.0f}",
             f"{item['staged_publish_seconds'] * 1000:.0f}",
             f"{item['last_commit_to_published_seconds'] * 1000:.0f}",
             f"{item['run_seconds']:.2f}"]
            for index, item in enumerate(publishes, start=1)
        ],
    )  # fmt: skip
    print()
    print_table(
        ["undo", "Iceberg restore ms", "refresh_undo ms", "status", "rows back",
         "snapshot back", "history back", "retained_bytes"],
        [
            [index, f"{item['iceberg_restore_seconds'] * 1000:.0f}",
             f"{item['undo_seconds'] * 1000:.0f}", item["status"],
             *(yes_no(item[check]) for check in ("rows_back", "snapshot_back", "history_back")),
             size_text(item["retained_bytes"])]
            for index, item in enumerate(undos, start=1)
        ],
    )  # fmt: skip
    print()
    print_table(
        ["warehouse", "bytes on disk", "files", "live version", "operation.retained_bytes"],
        [
            [stage.replace("_", " "), size_text(retention[stage]["bytes"]),
             retention[stage]["files"], size_text(retention[stage]["live_bytes"]),
             size_text(retention[stage]["retained_bytes"])]
            for stage in ("before", "during_retention", "after_expire")
        ],
    )  # fmt: skip
    print(f"retention_expire: {retention['released']} in {retention['expire_seconds']:.3f} s")

    print("\ntargets: atomic 0 ms unreadable; undo brings rows, snapshot and history back")
    write_results(
        "refresh_publish",
        {
            "command": " ".join(sys.argv),
            "database": settings.DATABASES["default"]["ENGINE"],
            "rows": total_rows,
            "files": args.files,
            "source_bytes": source_bytes,
            "setup_seconds": setup_seconds,
            "windows": windows,
            "publish": publishes,
            "publish_median_seconds": median(
                [item["staged_publish_seconds"] for item in publishes]
            ),
            "undo": [
                {key: value for key, value in item.items() if key != "history"} for item in undos
            ],
            "retention": retention,
        },
    )


def yes_no(value: bool) -> str:
    return "yes" if value else "NO"


def report(label: str, window: dict) -> None:
    print(
        f"{label}: {window['reads']} reads, {window['bad_reads']} unreadable, longest "
        f"{window['longest_unreadable_seconds'] * 1000:.0f} ms; seen {', '.join(window['seen'])} "
        f"({window['versions_seen']} readable versions in turn)"
    )


if __name__ == "__main__":
    main()
