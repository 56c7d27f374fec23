"""Dry-run at scale: the fresh-start dry-run API call vs a bare recursive listing.

An ingestion over N small source files with a history of the same N files; the dry-run
lists the source, subtracts the history and estimates the impact. Prints a table and
writes bench/results/dry_run_scale.json.

    .venv/bin/python bench/dry_run_scale.py [--sizes 10000 100000] [--trials 3]
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


def prepare(size: int, work: Path):
    from django.utils import timezone

    from ingestions.locations import source_open
    from ingestions.models import Membership, ProcessedFile, Role, Tenant
    from ingestions.services import ingestion_create
    from ingestions.sources import list_source_files

    folder = work / f"source-{size}"
    make_files(folder, size)
    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench-admin")
    Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.ADMIN})
    grant_source(tenant, str(folder))
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
            ProcessedFile(ingestion=ingestion, path=f.path, size_bytes=f.size_bytes, loaded_at=now)
            for f in listing
        ),
        batch_size=5000,
    )
    return ingestion, user, folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

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
