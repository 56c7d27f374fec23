"""Clearing the processed-file history at scale: the clear step vs a bare SQL DELETE.

Run it on PostgreSQL (the target database), e.g.
    bash scripts/with_postgres.sh .venv/bin/python bench/clear_history_scale.py
It fills two ingestions with N history rows each; one is cleared through the product
(`refresh_execute(kind="clear_processed_files")`, timed as a whole and as the recorded step),
the other with one bare `DELETE`. The product archives the history (a generation bump, kept
for undo) rather than deleting it; the delete comes when the operation's retention ends, so
`retention_expire` is timed too, with the retention forced into the past. Prints a table and
writes bench/results/clear_history_scale.json.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, print_table, setup_django, temp_dir, write_results


def fill(ingestion, rows: int) -> None:
    """Insert `rows` history rows, in the generation in force, fast (COPY-free but
    set-based on both databases)."""
    from django.db import connection, transaction

    table = "ingestions_processedfile"
    columns = "ingestion_id, generation, path, size_bytes, etag, rows, loaded_at"
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({columns}) "  # noqa: S608 - constant table name
                "SELECT %s, %s, 'day-' || (i / 1000) || '/part-' || i || '.csv', 4096, '', 10, "
                "now() FROM generate_series(1, %s) AS i",
                [ingestion.pk, ingestion.history_generation, rows],
            )
        else:
            cursor.execute(
                f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "  # noqa: S608 - constant table name
                f"INSERT INTO {table} ({columns}) "
                "SELECT %s, %s, 'day-' || (i / 1000) || '/part-' || i || '.csv', 4096, '', 10, "
                "CURRENT_TIMESTAMP FROM n",
                [rows, ingestion.pk, ingestion.history_generation],
            )
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-clear-")
    setup_django(work / "product")
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from ingestions.models import Membership, ProcessedFile, Role, Tenant
    from ingestions.services import ingestion_create
    from refresh.models import RefreshOperation
    from refresh.services import refresh_execute
    from refresh.undo import retention_expire

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    user, _ = get_user_model().objects.get_or_create(username="bench-admin")
    Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.ADMIN})
    source = work / "empty-source"
    source.mkdir()
    grant_source(tenant, str(source))

    rows, results = [], []
    for size in args.sizes:
        product, bare = (
            ingestion_create(
                tenant=tenant,
                actor=None,
                public_id=f"clear-{label}-{size}",
                name=f"clear {label} {size}",
                source_uri=str(source),
                source_format="csv",
                destination_table=f"raw.clear_{label}_{size}",
            )
            for label in ("product", "bare")
        )
        started = time.perf_counter()
        fill(product, size)
        fill(bare, size)
        print(f"filled 2 x {size:,} history rows in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM ingestions_processedfile WHERE ingestion_id = %s", [bare.pk]
            )
        bare_seconds = time.perf_counter() - started

        started = time.perf_counter()
        operation = refresh_execute(
            ingestion=product, kind="clear_processed_files", actor=user, confirm=True
        )
        call_seconds = time.perf_counter() - started
        step = operation.steps.get()
        assert step.details["files_cleared"] == size, step.details
        step_seconds = (step.finished_at - step.started_at).total_seconds()
        assert not product.processed_files.exists()
        assert ProcessedFile.all_generations.filter(ingestion=product).count() == size

        # The archived rows are deleted when nothing can restore them any more.
        RefreshOperation.objects.filter(pk=operation.pk).update(retained_until=timezone.now())
        started = time.perf_counter()
        expired = retention_expire()
        expire_seconds = time.perf_counter() - started
        assert expired == [operation.public_id], expired
        assert not ProcessedFile.all_generations.filter(ingestion=product).exists()

        rows.append(
            [f"{size:,}", f"{bare_seconds:.3f}", f"{step_seconds:.3f}", f"{call_seconds:.3f}",
             f"{step_seconds / bare_seconds:.2f}", f"{expire_seconds:.3f}"]
        )  # fmt: skip
        results.append(
            {
                "rows": size,
                "bare_delete_seconds": bare_seconds,
                "clear_step_seconds": step_seconds,
                "whole_call_seconds": call_seconds,
                "ratio_step_vs_bare": round(step_seconds / bare_seconds, 3),
                "retention_expire_seconds": expire_seconds,
            }
        )
    print()
    print_table(
        ["history rows", "bare DELETE s", "clear step s", "whole call s", "ratio",
         "retention_expire s"],
        rows,
    )  # fmt: skip
    print("\ntarget: clear step <= 2 s at 1,000,000 rows on PostgreSQL")
    write_results(
        "clear_history_scale",
        {"command": " ".join(sys.argv), "database": connection.vendor, "results": results},
    )


if __name__ == "__main__":
    main()
