"""Shared helpers of the benchmarks: a throwaway product environment and result output."""

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def setup_django(data_dir: Path, *, migrate: bool = True) -> None:
    """Point the product at a data dir (SQLite, catalog, warehouse); migrate a fresh one."""
    os.environ["AUTOLOADER_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    if migrate:
        call_command("migrate", verbosity=0)
        call_command("createcachetable", verbosity=0)


def grant_source(tenant, uri: str) -> None:
    """Grant `tenant` the storage under `uri`, as platform staff would, unless one of its
    locations covers it already: a source must lie inside one of its tenant's locations."""
    from ingestions.errors import SourceNotAllowedError
    from ingestions.locations import location_grant, source_resolve

    try:
        source_resolve(tenant=tenant, uri=uri)
    except SourceNotAllowedError:
        location_grant(tenant=tenant, uri=uri, name="bench")


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_table(headers: list[str], rows: list[list]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    line = "  ".join(f"{{:<{width}}}" for width in widths)
    print(line.format(*headers))
    print(line.format(*("-" * width for width in widths)))
    for row in rows:
        print(line.format(*row))


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path
