"""One tenant's heavy listings vs another tenant's API: the web tier stays fair.

acme sends 8 parallel check-sources of a 100,000-file folder, in a loop, to the production
web process (gunicorn, the deploy config: 2 workers x 4 threads) while globex reads
`GET /api/v1/ingestions`. Two phases, each with its own server: the gate off (no preview
rates, no cap on a tenant's listings: what main did) and the gate at its defaults. Prints
globex's median and max latency and what acme got, and writes
bench/results/listing_starvation.json. Target (issue 21): with the gate, globex's median
<= 1 s and max <= 3 s. Traffic goes to 127.0.0.1 only; each phase stops after --seconds.

    .venv/bin/python bench/listing_starvation.py [--files 100000] [--seconds 20]
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, grant_source, print_table, setup_django, temp_dir, write_results
from api_load import free_port

HEAVY_CLIENTS = 8


def prepare(work: Path, files: int) -> tuple[str, str, str]:
    from django.contrib.auth import get_user_model

    from ingestions.models import Membership, Role, Tenant
    from ingestions.services import ingestion_create
    from ingestions.tokens import token_create

    big = work / "acme" / "big"
    big.mkdir(parents=True)
    for index in range(files):
        (big / f"f-{index:06d}.csv").write_bytes(b"id\n1\n")
    small = work / "globex" / "in"
    small.mkdir(parents=True)
    (small / "a.csv").write_text("id\n1\n")
    keys = []
    for slug, folder in (("acme", work / "acme"), ("globex", work / "globex")):
        tenant = Tenant.objects.create(slug=slug, name=slug.title())
        user = get_user_model().objects.create(username=f"{slug}-admin")
        Membership.objects.create(user=user, tenant=tenant, role=Role.ADMIN)
        grant_source(tenant, str(folder))
        keys.append(token_create(user=user, name="bench")[1])
        if slug == "globex":
            ingestion_create(
                tenant=tenant,
                actor=None,
                name="small",
                source_uri=str(small),
                source_format="csv",
                destination_table="raw.small",
            )
    return keys[0], keys[1], str(big)


def serve(port: int, env: dict) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--access-logfile", "/dev/null"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            probe.request("GET", "/healthz")
            if probe.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start")


def phase(port: int, acme_key: str, globex_key: str, big: str, seconds: float) -> dict:
    stop = threading.Event()
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    body = json.dumps({"uri": big, "format": "csv"})

    def heavy():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Authorization": f"Bearer {acme_key}", "Content-Type": "application/json"}
        while not stop.is_set():
            try:
                connection.request("POST", "/api/v1/ingestions/check-source", body, headers)
                response = connection.getresponse()
                response.read()
                code = response.status
                if code == 429:  # what a polite client does: wait as told
                    stop.wait(float(response.getheader("Retry-After") or 1))
            except OSError:
                code = 0
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                statuses[code] = statuses.get(code, 0) + 1
        connection.close()

    threads = [threading.Thread(target=heavy) for _ in range(HEAVY_CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(2)  # the heavy requests are in flight
    latencies = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {globex_key}"}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        connection.request("GET", "/api/v1/ingestions", headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        latencies.append(time.perf_counter() - started)
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=180)
    return {
        "globex_requests": len(latencies),
        "globex_median_s": statistics.median(latencies),
        "globex_max_s": max(latencies),
        "acme_statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-starve-")
    data_dir = work / "product"
    setup_django(data_dir)
    acme_key, globex_key, big = prepare(work, args.files)
    base = {
        **os.environ,
        "AUTOLOADER_DATA_DIR": str(data_dir),
        "DJANGO_DEBUG": "1",
        "AUTOLOADER_LISTING_MAX_ENTRIES": str(args.files * 2),
    }
    phases = {
        "gate off (main before)": {
            "AUTOLOADER_LISTINGS_PER_TENANT": "0",
            "AUTOLOADER_PREVIEW_RATE_PER_USER": "100000/m",
            "AUTOLOADER_PREVIEW_RATE_PER_TENANT": "100000/m",
        },
        "gate at its defaults": {},
    }
    results, rows = {}, []
    for label, extra in phases.items():
        port = free_port()
        server = serve(port, {**base, **extra})
        try:
            result = phase(port, acme_key, globex_key, big, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=60)
        results[label] = result
        rows.append([
            label, result["globex_requests"], f"{result['globex_median_s']:.3f}",
            f"{result['globex_max_s']:.3f}",
            ", ".join(f"{code} x{count}" for code, count in sorted(result["acme_statuses"].items())),
        ])  # fmt: skip
    print(f"{HEAVY_CLIENTS} parallel check-sources of {args.files:,} files by acme")
    print_table(
        ["phase", "globex GETs", "median s", "max s", "acme's check-sources (status x n)"], rows
    )
    write_results(
        "listing_starvation",
        {
            "command": " ".join(sys.argv),
            "files": args.files,
            "server": "gunicorn -c deploy/gunicorn.conf.py (2 workers x 4 threads), loopback",
            "phases": results,
        },
    )


if __name__ == "__main__":
    main()
