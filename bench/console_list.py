"""Console: render time and SQL query count of the ingestions list at 10 and 1,000 rows.

The query count must not grow with the rows. Renders the real page through Django's test
client (no network), logged in as a tenant admin. Prints a table and writes
bench/results/console_list.json.

    .venv/bin/python bench/console_list.py [--sizes 10 1000] [--trials 5]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, print_table, setup_django, temp_dir, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-console-")
    setup_django(work / "product")
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from ingestions.models import Ingestion, Membership, ProcessedFile, Role, Run, Tenant

    user = get_user_model().objects.create_user("bench-admin", password="bench-password-1")
    rows, results = [], []
    for size in args.sizes:
        tenant = Tenant.objects.create(slug=f"bench-{size}", name=f"Bench {size}")
        Membership.objects.create(user=user, tenant=tenant, role=Role.ADMIN)
        ingestions = Ingestion.objects.bulk_create(
            Ingestion(
                tenant=tenant,
                public_id=f"ing-{index:05d}",
                name=f"Ingestion {index:05d}",
                source_uri=str(work / "source"),
                source_format="csv",
                destination_table=f"raw.table_{size}_{index}",
                # bulk_create skips save(), which derives the physical table name.
                table_identifier=tenant.table_identifier(f"raw.table_{size}_{index}"),
            )
            for index in range(size)
        )
        now = timezone.now()
        Run.objects.bulk_create(
            Run(ingestion=ingestion, status="SUCCESS", started_at=now, finished_at=now)
            for ingestion in ingestions
        )
        ProcessedFile.objects.bulk_create(
            ProcessedFile(ingestion=ingestion, path=f"f-{n}.csv", loaded_at=now)
            for ingestion in ingestions
            for n in range(3)
        )
        client = Client()
        client.force_login(user)
        session = client.session
        session["tenant"] = tenant.slug
        session.save()
        timings, queries = [], None
        client.get("/ingestions/")  # warm-up: templates, URL resolver
        for _ in range(args.trials):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get("/ingestions/")
                timings.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
            assert f"Ingestion {size - 1:05d}".encode() in response.content or size > 100
            queries = len(captured.captured_queries)
        seconds = median(timings)
        rows.append([f"{size:,}", f"{seconds * 1000:.0f}", queries])
        results.append({"ingestions": size, "render_seconds": timings, "sql_queries": queries})
    print_table(["ingestions", "render ms (median)", "SQL queries"], rows)
    counts = {result["sql_queries"] for result in results}
    print(f"\nquery count independent of rows: {'yes' if len(counts) == 1 else 'NO'}")
    write_results(
        "console_list",
        {"command": " ".join(sys.argv), "database": connection.vendor, "results": results},
    )


if __name__ == "__main__":
    main()
