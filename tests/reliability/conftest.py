"""Fixtures of the reliability suite: trial counts, a seeded RNG, figures for docs/reliability.md.

`RELIABILITY_TRIALS` (default 20) sets how many crash trials and race storms run; `make
soak` raises it. `RELIABILITY_SEED` fixes the random instants (the seed is printed). Every
test that measures something adds its figures to one report, printed at the end of the
pytest run and written to `bench/results/reliability-<database>.json`.
"""

import json
import os
import platform
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connection

# The refresh suite's loaded ingestion (4 files x 25 rows, run once) and admin user.

ROOT = Path(__file__).resolve().parents[2]
TRIALS = int(os.environ.get("RELIABILITY_TRIALS", "20"))
SEED = int(os.environ.get("RELIABILITY_SEED", "20261126"))

# Figures gathered during the session, by section ("crash_injection", "fuzzing", ...).
REPORT: dict[str, dict] = {}


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Many users are created here; the production hasher's slowness proves nothing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def rng() -> random.Random:
    """A random generator seeded with RELIABILITY_SEED: a failing test replays its choices."""
    print(f"\nreliability seed: {SEED} (RELIABILITY_SEED={SEED} replays it)")
    return random.Random(SEED)


@pytest.fixture
def trial_rng(rng):
    """`trial_rng(n)`: trial n's own generator, so its choices do not depend on the timing
    of the trials before it (how many numbers they drew)."""
    return lambda number: random.Random(f"{SEED}/{number}")


@pytest.fixture
def report():
    """`report(section, figures)`: record figures for the summary and the JSON file."""

    def record(section: str, figures: dict) -> None:
        REPORT[section] = {"database": connection.vendor, **figures}

    return record


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not REPORT:
        return
    database = next(iter(REPORT.values()))["database"]
    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [
                f"{name}={value}"
                for name, value in sorted(os.environ.items())
                if name.startswith("RELIABILITY_")
            ]
            + ["pytest", *sys.argv[1:]]
        ),
        "trials_setting": TRIALS,
        "seed": SEED,
        "machine": _machine(),
        "sections": REPORT,
    }
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    target = results / f"reliability-{database}.json"
    target.write_text(json.dumps(document, indent=2, default=str) + "\n")
    terminalreporter.section(f"reliability figures ({database}, seed {SEED})")
    for section, figures in REPORT.items():
        summary = ", ".join(
            f"{key}={value}"
            for key, value in figures.items()
            if key != "database" and not isinstance(value, list | dict)
        )
        terminalreporter.write_line(f"{section}: {summary}")
    terminalreporter.write_line(f"written to {target.relative_to(ROOT)}")
