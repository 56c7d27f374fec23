"""The example DAG under real Airflow: `airflow dags test` against a live server and worker.

Airflow lives in its own virtualenv (`scripts/airflow_venv.sh` makes it; CI runs these tests
with Airflow 3 on SQLite and Airflow 2 on PostgreSQL): these tests run when
`AUTOLOADER_AIRFLOW_PYTHON` names its python, and skip otherwise. Each `airflow dags test`
runs the whole DAG in one process, with a throwaway AIRFLOW_HOME, the examples folder as
DAGs folder and the connection in the environment, the way an Airflow user configures it.
"""

import functools
import json
import os
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from django.db import connection

from ingestions.models import Role, Run, RunStatus
from refresh.models import RefreshOperation

from ..helpers import start_worker, write_csv_files

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = os.environ.get("AUTOLOADER_AIRFLOW_PYTHON", "")
DAG_ID = "autoloader_refresh"
AIRFLOW_TIMEOUT_SECONDS = 240
# Airflow 3's `dags test` names each run after the current time, so running the same DAG run
# again (as clearing it does) takes its `dag.test` with a fixed `run_after`; Airflow 2's
# names it after the logical date given on the command line.
SAME_RUN_AGAIN = """
import json, sys
from airflow.sdk import timezone
from airflow.utils.cli import get_bagged_dag
dag = get_bagged_dag(bundle_names=None, dag_id=sys.argv[1])
when = timezone.parse(sys.argv[2])
run = dag.test(run_after=when, logical_date=when, run_conf=json.loads(sys.argv[3]))
sys.exit(0 if run.state == "success" else "DagRun failed")
"""

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.slow,
    pytest.mark.skipif(
        not AIRFLOW_PYTHON,
        reason="AUTOLOADER_AIRFLOW_PYTHON is not set (scripts/airflow_venv.sh makes the venv)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    """An AIRFLOW_HOME with its metadata database, shared by this module's DAG runs."""
    home = tmp_path_factory.mktemp("airflow-home")
    result = subprocess.run(
        [AIRFLOW_PYTHON, "-m", "airflow", "db", "migrate"],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=AIRFLOW_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return home


def airflow_env(home: Path, **extra: str) -> dict:
    """A bare environment, as on an Airflow worker: nothing of the product's settings."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **extra,
    }


@functools.cache
def airflow_major_version() -> int:
    version = subprocess.run(
        [AIRFLOW_PYTHON, "-c", "import airflow; print(airflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(version.split(".")[0])


@pytest.fixture
def worker(tmp_path):
    """A worker process on the test database and catalog."""
    process = start_worker(tmp_path / "worker.log")
    yield process
    process.terminate()
    process.wait(timeout=30)
    connection.close()


@pytest.fixture
def dags_test(live_server, worker, member, airflow_home, tmp_path):
    """`dags_test(conf, logical_date=None, **env)`: one `airflow dags test` of the example
    DAG, as an admin of the ingestion's tenant; returns (exit code, everything it printed)."""
    token = member(Role.ADMIN).token_key
    server = urllib.parse.urlsplit(live_server.url)
    env = airflow_env(
        airflow_home,
        AIRFLOW_CONN_AUTOLOADER_DEFAULT=(
            f"http://:{urllib.parse.quote(token, safe='')}@127.0.0.1:{server.port}"
        ),
    )

    def run(conf: dict, logical_date: str | None = None, **airflow_settings) -> tuple[int, str]:
        """One DAG run; the same one each time for a given `logical_date`."""
        if logical_date and airflow_major_version() >= 3:
            command = [AIRFLOW_PYTHON, "-c", SAME_RUN_AGAIN, DAG_ID, logical_date, json.dumps(conf)]
        else:
            command = [AIRFLOW_PYTHON, "-m", "airflow", "dags", "test", DAG_ID]
            command += [logical_date] if logical_date else []
            command += ["--conf", json.dumps(conf)]
        log = tmp_path / f"dags-test-{len(list(tmp_path.glob('dags-test-*')))}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                command,
                env={**env, **airflow_settings},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
            try:
                code = process.wait(timeout=AIRFLOW_TIMEOUT_SECONDS)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                print(log.read_text())  # shown when a test fails
        return code, log.read_text()

    return run


def test_dag_file_defines_the_dag_without_a_deprecation_warning(tmp_path):
    # Warnings are errors here: an import Airflow deprecates would fail the import.
    result = subprocess.run(
        [
            AIRFLOW_PYTHON,
            "-W",
            "error::DeprecationWarning",
            "-c",
            "import airflow_full_refresh_dag as module; print(module.autoloader_refresh)",
        ],
        env=airflow_env(tmp_path),
        cwd=ROOT / "examples",
        capture_output=True,
        text=True,
        timeout=AIRFLOW_TIMEOUT_SECONDS,
    )

    assert result.returncode == 0, result.stderr
    assert "function autoloader_refresh" in result.stdout


def test_deferred_dag_run_fails_with_the_failed_files_and_their_errors(
    dags_test, csv_ingestion, source_dir
):
    write_csv_files(source_dir, files=1, rows=10)
    (source_dir / "b-broken-utf8.csv").write_bytes(b"id,name\n1,\xff\xfe\n")

    # Deferrable, as Airflow's setting makes every operator that can be: `dags test` runs
    # the trigger in line.
    code, output = dags_test(
        {"ingestion_id": "sales"}, AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="True"
    )

    run = Run.objects.get()
    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert f"run {run.public_id} ended PARTIAL_SUCCESS: 1 of 2 files failed to load" in output
    assert "b-broken-utf8.csv" in output
    assert "running trigger in line" in output.lower() or "Trigger completed" in output
    assert run.failed_files[0]["error"] in output
    assert "ended SUCCESS" not in output
    assert code != 0


def test_dag_run_succeeds_once_its_run_has_and_running_it_again_refreshes_nothing(
    dags_test, csv_ingestion, source_dir, settings
):
    # Any cost above $0 needs a plan, and this ingestion costs $100,000 per GB.
    settings.REFRESH_PLAN_REQUIRED_ABOVE_USD = 0
    csv_ingestion.cost_per_gb_usd = 100000
    csv_ingestion.save(update_fields=["cost_per_gb_usd"])
    write_csv_files(source_dir, files=2, rows=10)
    logical_date = "2026-01-05T02:00:00+00:00"  # the same DAG run id both times

    first_code, first = dags_test({"ingestion_id": "sales"}, logical_date)

    operation = RefreshOperation.objects.select_related("plan", "run").get()
    assert operation.kind == "full_refresh"
    assert operation.run.status == RunStatus.SUCCESS
    assert f"executing with {operation.plan.public_id}" in first
    assert f"Run {operation.run.public_id} ended SUCCESS: full_refresh of sales done" in first
    assert first_code == 0

    # Run it again, as clearing it does: its new dry-run makes a new plan, so the same key
    # now names another request; the DAG follows the first operation instead.
    again_code, again = dags_test({"ingestion_id": "sales"}, logical_date)

    assert RefreshOperation.objects.count() == 1
    assert Run.objects.count() == 1
    assert f"following its operation {operation.public_id}" in again
    assert f"Run {operation.run.public_id} ended SUCCESS" in again
    assert again_code == 0
