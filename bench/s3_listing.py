"""S3 listing time of a source folder of 10,000 objects, through the product's listing.

A real S3 API on loopback (moto's threaded server): the time is pyarrow's paginated
ListObjectsV2 calls (1,000 keys a page) plus the product's filtering and sorting. moto is
slower per request than AWS S3, so this is an upper bound for the client side. Prints a
table and writes bench/results/s3_listing.json.

    .venv/bin/python bench/s3_listing.py [--objects 10000] [--trials 5]
"""

import argparse
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, median, print_table, setup_django, temp_dir, timed, write_results


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()

    setup_django(temp_dir("autoloader-bench-s3-"))
    import pyarrow.fs as pafs
    from django.conf import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        settings.AUTOLOADER_S3_ENDPOINT_URL = f"http://{host}:{port}"
        settings.AUTOLOADER_S3_REGION = "us-east-1"
        # moto accepts any key: these are not secrets.
        settings.AUTOLOADER_S3_ACCESS_KEY_ID = "bench"
        settings.AUTOLOADER_S3_SECRET_ACCESS_KEY = "bench"  # noqa: S105
        pafs.S3FileSystem(
            endpoint_override=f"{host}:{port}", scheme="http", access_key="bench",
            secret_key="bench", region="us-east-1", allow_bucket_creation=True,
        ).create_dir("bench-source")  # fmt: skip
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for index in range(args.objects):
            key = f"landing/day={index % 30:02d}/part-{index:06d}.csv"
            backend.put_object("bench-source", key, b"id,name\n1,a\n")

        from ingestions.locations import source_open
        from ingestions.models import Tenant
        from ingestions.sources import list_source_files

        tenant = Tenant.objects.create(slug="bench", name="Bench")
        grant_source(tenant, "s3://bench-source/landing")
        source = source_open(tenant=tenant, uri="s3://bench-source/landing")
        found = []
        times = [
            timed(lambda: found.append(len(list_source_files(source=source, pattern="*.csv"))))
            for _ in range(args.trials)
        ]
    finally:
        server.stop()
    assert set(found) == {args.objects}, found
    listing = median(times)
    print_table(
        ["objects", "pages", "median s", "objects/s"],
        [[f"{args.objects:,}", -(-args.objects // 1000), f"{listing:.2f}", f"{args.objects / listing:,.0f}"]],
    )  # fmt: skip
    write_results(
        "s3_listing",
        {
            "command": " ".join(sys.argv),
            "objects": args.objects,
            "trials": args.trials,
            "seconds": times,
            "median_seconds": round(listing, 3),
            "server": "moto ThreadedMotoServer on 127.0.0.1",
        },
    )


if __name__ == "__main__":
    main()
