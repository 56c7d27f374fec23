"""The API under load: gunicorn (2 workers) on loopback, concurrent clients, bounded runs.

Endpoints: the fresh-start dry-run (lists the source, diffs the history, estimates),
GET /runs/{id}, and /healthz as the baseline. Prints throughput and p50/p95/p99 latency
and writes bench/results/api_load.json. Traffic goes to 127.0.0.1 only and every phase
stops after --requests requests or --seconds seconds, whichever comes first.

    .venv/bin/python bench/api_load.py [--clients 8] [--seconds 8] [--requests 2000]
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, grant_source, print_table, setup_django, temp_dir, write_results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(work: Path) -> tuple[str, str, str]:
    from ingestions.models import ApiToken, Membership, Role, Tenant
    from ingestions.run_executor import run_execute
    from ingestions.runs import run_request
    from ingestions.services import ingestion_create
    from ingestions.tokens import token_create, token_revoke

    source = work / "source"
    source.mkdir()
    for index in range(50):
        (source / f"part-{index:03d}.csv").write_text("id,value\n" + "".join(
            f"{index * 1000 + row},{row}\n" for row in range(100)
        ))  # fmt: skip
    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench-admin")
    Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.ADMIN})
    for earlier in ApiToken.objects.filter(user=user, name="bench"):
        token_revoke(user=user, token_id=earlier.pk)
    _token, key = token_create(user=user, name="bench")
    grant_source(tenant, str(source))
    ingestion = ingestion_create(
        tenant=tenant,
        actor=None,
        public_id="load",
        name="load",
        source_uri=str(source),
        source_format="csv",
        destination_table="raw.load",
    )
    run = run_request(ingestion=ingestion)
    run_execute(run_id=run.public_id)
    return key, ingestion.public_id, run.public_id


def hammer(
    port: int, method: str, path: str, body, headers, clients: int, seconds: float, limit: int
):
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    payload = json.dumps(body) if body is not None else None

    def client():
        nonlocal errors
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                if len(latencies) + errors >= limit:
                    break
            started = time.perf_counter()
            try:
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                response.read()
                ok = response.status < 400
            except OSError:
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors += 1
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(p):
        return (
            latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000
            if latencies
            else 0
        )

    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": wall,
        "rps": len(latencies) / wall,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": statistics.mean(latencies) * 1000 if latencies else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-load-")
    data_dir = work / "product"
    setup_django(data_dir)
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    call_command("createcachetable", verbosity=0)
    token, ingestion_id, run_id = prepare(work)
    port = free_port()
    env = {
        **os.environ,
        "AUTOLOADER_DATA_DIR": str(data_dir),
        "REFRESH_RATE_FULL_REFRESH": "100000/h",
        # Throughput, not fairness (bench/listing_starvation.py measures the gate).
        "AUTOLOADER_PREVIEW_RATE_PER_USER": "1000000/m",
        "AUTOLOADER_PREVIEW_RATE_PER_TENANT": "1000000/m",
        "AUTOLOADER_LISTINGS_PER_TENANT": "0",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "console.wsgi:application", "--bind",
         f"127.0.0.1:{port}", "--workers", "2", "--threads", "4", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                probe.request("GET", "/healthz")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        phases = [
            ("GET /healthz (baseline)", "GET", "/healthz", None, {}),
            ("GET /api/v1/runs/{id}", "GET", f"/api/v1/runs/{run_id}", None, auth),
            (
                "POST fresh-start dry_run (50 files)",
                "POST",
                f"/api/v1/ingestions/{ingestion_id}/fresh-start",
                {"dry_run": True},
                auth,
            ),
        ]
        results, rows = {}, []
        for label, method, path, body, headers in phases:
            hammer(port, method, path, body, headers, 2, 1.0, 50)  # warm-up
            result = hammer(
                port, method, path, body, headers, args.clients, args.seconds, args.requests
            )
            results[label] = result
            rows.append([
                label, result["requests"], result["errors"], f"{result['rps']:.0f}",
                f"{result['p50_ms']:.1f}", f"{result['p95_ms']:.1f}", f"{result['p99_ms']:.1f}",
            ])  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    print_table(["endpoint", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"], rows)
    write_results(
        "api_load",
        {
            "command": " ".join(sys.argv),
            "database": connection.vendor,
            "server": "gunicorn --workers 2 --threads 4, loopback",
            "clients": args.clients,
            "results": results,
            "data_dir": str(settings.DATA_DIR),
        },
    )


if __name__ == "__main__":
    main()
