"""Dry-run at scale: the fresh-start dry-run API call vs a bare recursive listing.

An ingestion over N small source files with a history of the same N files; the dry-run
lists the source, subtracts the history and estimates the impact. Prints a table and
writes bench/results/dry_run_scale.json.

    .venv/bin/python bench/dry_run_scale.py [--sizes 10000 100000] [--trials 3]

With `--folder DIR`, the files are those already in DIR (e.g. 1,000,000 in one folder,
made once and kept); `--data-dir` keeps the product's database and its history between
invocations. Each trial then runs the bare listing and the dry-run in child processes of
their own, which also report their peak memory (the whole process, as a web worker's).

    .venv/bin/python bench/dry_run_scale.py --folder /tmp/million --data-dir /tmp/million-db
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, median, print_table, setup_django, temp_dir, timed, write_results


def make_files(folder: Path, count: int) -> None:
    """`count` one-row CSV files, 1,000 per folder."""
    for index in range(count):
        directory = folder / f"day-{index // 1000:04d}"
        if index % 1000 == 0:
            directory.mkdir(parents=True, exist_ok=True)
        (directory / f"part-{index:07d}.csv").write_text(f"id,value\n{index},{index * 3}\n")


def bare_listing(folder: Path) -> int:
    import pyarrow.fs as pafs

    filesystem = pafs.LocalFileSystem()
    infos = filesystem.get_file_info(pafs.FileSelector(str(folder), recursive=True))
    return sum(1 for info in infos if info.type == pafs.FileType.File)


def prepare(size: int, work: Path, folder: Path | None = None):
    from django.utils import timezone

    from ingestions.locations import source_open
    from ingestions.models import Ingestion, Membership, ProcessedFile, Role, Tenant
    from ingestions.services import ingestion_create
    from ingestions.sources import list_source_files

    if folder is None:
        folder = work / f"source-{size}"
        make_files(folder, size)
    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench-admin")
    Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.ADMIN})
    grant_source(tenant, str(folder))
    existing = Ingestion.objects.filter(public_id=f"scale-{size}").first()
    if existing is not None:  # a kept --data-dir: its history is there already
        return existing, user, folder
    ingestion = ingestion_create(
        tenant=tenant,
        actor=None,
        public_id=f"scale-{size}",
        name=f"scale {size}",
        source_uri=str(folder),
        source_format="csv",
        destination_table=f"raw.scale_{size}",
    )
    now = timezone.now()
    listing = list_source_files(source=source_open(tenant=tenant, uri=str(folder)))
    ProcessedFile.objects.bulk_create(
        (
            ProcessedFile(
                ingestion=ingestion,
                path=f.path,
                size_bytes=f.size_bytes,
                modified_at=f.modified_at,
                loaded_at=now,
            )
            for f in listing
        ),
        batch_size=10_000,
    )
    return ingestion, user, folder


KINDS = ("fresh-start", "full-refresh")


def child(args) -> None:
    """One measured call in a process of its own: prints its seconds and peak memory. The
    call is made twice and the second one timed, as in a process that served requests
    before (imports, connections and the first request's set-up are not the listing's)."""
    import json

    if args.child == "bare":
        bare_listing(args.folder)
        seconds = timed(lambda: bare_listing(args.folder))
    else:
        setup_django(args.data_dir, migrate=False)
        from django.contrib.auth import get_user_model
        from rest_framework.test import APIClient

        client = APIClient()
        client.force_authenticate(get_user_model().objects.get(username="bench-admin"))
        # A fresh start skips the history (every file); a full refresh reloads every file.
        expected = 0 if args.child == "fresh-start" else args.files

        def call():
            response = client.post(
                f"/api/v1/ingestions/{args.ingestion}/{args.child}",
                {"dry_run": True},
                format="json",
            )
            assert response.status_code == 200, response.content
            assert response.json()["impact"]["files_to_process"] == expected

        call()
        seconds = timed(call)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_resident_mb()}))


def peak_resident_mb() -> float:
    """This process's peak resident memory (VmHWM): unlike getrusage's ru_maxrss, which
    Linux carries over exec from the forking parent, it is this program's own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def in_child(what: str, **options) -> dict:
    import json
    import subprocess

    command = [sys.executable, __file__, "--child", what]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main_kept_folder(args) -> None:
    """--folder: the bare listing and each kind's dry-run, each in a child process of its
    own, their order rotating from trial to trial."""
    from django.db import connection

    started = time.perf_counter()
    size = bare_listing(args.folder)
    ingestion, _, folder = prepare(size, args.data_dir, folder=args.folder)
    print(f"{size:,} files; history ready in {time.perf_counter() - started:.1f} s")
    options = {"folder": folder, "data_dir": args.data_dir, "ingestion": ingestion.public_id}
    contenders = ["bare", *args.kinds]
    measured: dict[str, list[dict]] = {name: [] for name in contenders}
    for trial in range(args.trials):
        shift = trial % len(contenders)
        for name in contenders[shift:] + contenders[:shift]:
            measured[name].append(in_child(name, files=size, **options))
    seconds = {name: median([item["seconds"] for item in measured[name]]) for name in contenders}
    peak_mb = {name: max(item["peak_mb"] for item in measured[name]) for name in contenders}
    print()
    print_table(
        ["files (= history)", "call", "seconds", "ratio to bare", "peak MB"],
        [
            [f"{size:,}", name, f"{seconds[name]:.3f}", f"{seconds[name] / seconds['bare']:.2f}",
             f"{peak_mb[name]:.0f}"]
            for name in contenders
        ],
    )  # fmt: skip
    print("\ntarget at 1,000,000: a dry-run <= 1.2-1.5 x the bare listing, bounded memory")
    write_results(
        "dry_run_scale_million",
        {
            "command": " ".join(sys.argv),
            "database": connection.vendor,
            "files": size,
            "history": size,
            "folder": str(folder),
            "measured": measured,
            "ratios": {name: round(seconds[name] / seconds["bare"], 3) for name in contenders},
            "peak_mb": {name: round(peak_mb[name]) for name in contenders},
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--folder", type=Path, help="files made already (kept between runs)")
    parser.add_argument("--data-dir", type=Path, help="the product's data, kept between runs")
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="with --folder"
    )
    parser.add_argument("--child", choices=["bare", *KINDS], help=argparse.SUPPRESS)
    parser.add_argument("--ingestion", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.folder:
        args.data_dir = args.data_dir or temp_dir("autoloader-bench-dryrun-")
        setup_django(args.data_dir)
        main_kept_folder(args)
        return

    work = temp_dir("autoloader-bench-dryrun-")
    setup_django(work / "product")
    from django.db import connection
    from rest_framework.test import APIClient

    rows, results = [], []
    for size in args.sizes:
        started = time.perf_counter()
        ingestion, user, folder = prepare(size, work)
        print(f"prepared {size:,} files + history in {time.perf_counter() - started:.1f} s")
        client = APIClient()
        client.force_authenticate(user)
        url = f"/api/v1/ingestions/{ingestion.public_id}/fresh-start"
        bare_times, api_times = [], []
        for _ in range(args.trials):
            bare_times.append(timed(lambda folder=folder: bare_listing(folder)))

            def call(url=url):
                response = client.post(url, {"dry_run": True}, format="json")
                assert response.status_code == 200, response.content
                assert response.json()["impact"]["files_skipped"] == size

            api_times.append(timed(call))
        bare, api = median(bare_times), median(api_times)
        rows.append([f"{size:,}", f"{bare:.3f}", f"{api:.3f}", f"{api / bare:.2f}"])
        results.append(
            {
                "files": size,
                "history": size,
                "bare_listing_seconds": bare_times,
                "dry_run_seconds": api_times,
                "ratio": round(api / bare, 3),
                "target_met": api <= 2.0 and api / bare <= 2.0,
            }
        )
    print()
    print_table(["files (= history)", "bare listing s", "dry-run API s", "ratio"], rows)
    print("\ntarget at 100k: dry-run <= 2 s and <= 2 x bare listing")
    write_results(
        "dry_run_scale",
        {"command": " ".join(sys.argv), "database": connection.vendor, "results": results},
    )


if __name__ == "__main__":
    main()
