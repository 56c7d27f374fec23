"""The examples work: the cron script and the Airflow DAG's calls, against a live server.

A real HTTP server (pytest-django's `live_server`) answers the API, and a real worker
process executes the runs it queues, both on the test database and catalog.
"""

import importlib.util
import os
import py_compile
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from ingestions.models import Role, Run, RunStatus
from ingestions.runs import run_request
from refresh.models import RefreshOperation

from ..helpers import open_table, start_worker, wait_for, write_csv_files

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "daily_full_refresh.sh"
DAG_FILE = ROOT / "examples" / "airflow_full_refresh_dag.py"
ROWS = 20


@pytest.fixture
def worker(tmp_path):
    """A worker process on the test database and catalog; yields its log file."""
    log = tmp_path / "worker.log"
    process = start_worker(log)
    yield log
    process.terminate()
    process.wait(timeout=30)
    connection.close()


@pytest.fixture
def admin_token(member) -> str:
    return member(Role.ADMIN).token_key


def source_ids(files: int) -> list[int]:
    """The ids `write_csv_files` writes into `files` files of ROWS rows."""
    return [index * 100000 + row for index in range(files) for row in range(ROWS)]


def table_ids(ingestion) -> list[int]:
    table = open_table(ingestion.table_identifier)
    return table.scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The script as cron runs it: a bare environment plus the given variables."""
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    print(result.stdout, result.stderr)  # shown when a test fails
    return result


def script_env(live_server, token: str, **extra: str) -> dict:
    return {
        "AUTOLOADER_URL": live_server.url,
        "AUTOLOADER_TOKEN": token,
        "INGESTION_ID": "sales",
        "POLL_INTERVAL_SECONDS": "0.2",
        "TIMEOUT_SECONDS": "120",
        **extra,
    }


def load_dag_module():
    spec = importlib.util.spec_from_file_location("airflow_full_refresh_dag", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as Airflow's loader does (dataclasses look it up)
    spec.loader.exec_module(module)
    return module


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_daily_script_reloads_every_row_once_and_replays_the_same_day(
    live_server, worker, csv_ingestion, source_dir, admin_token
):
    write_csv_files(source_dir, files=3, rows=ROWS)
    first_run = run_request(ingestion=csv_ingestion)
    wait_for(
        lambda: Run.objects.filter(pk=first_run.pk, status=RunStatus.SUCCESS).exists(),
        60,
        "the first run",
    )
    write_csv_files(source_dir, files=1, rows=ROWS, start=3)  # one more file since

    result = run_script(**script_env(live_server, admin_token))

    assert result.returncode == 0
    assert sorted(table_ids(csv_ingestion)) == source_ids(4), "every source row, exactly once"
    operation = RefreshOperation.objects.get()
    assert operation.kind == "full_refresh"
    assert operation.run.status == RunStatus.SUCCESS
    assert f"Done: sales fully refreshed (run {operation.run.public_id})" in result.stdout

    again = run_script(**script_env(live_server, admin_token))

    assert again.returncode == 0
    assert "replayed the answer of operation " + operation.public_id in again.stdout
    assert RefreshOperation.objects.count() == 1, "the same day's key must not refresh again"
    assert Run.objects.count() == 2
    assert sorted(table_ids(csv_ingestion)) == source_ids(4)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_daily_script_sends_the_plan_an_expensive_refresh_needs(
    live_server, worker, csv_ingestion, source_dir, admin_token, settings
):
    # Any cost above $0 needs a plan, and this ingestion costs $100,000 per GB.
    settings.REFRESH_PLAN_REQUIRED_ABOVE_USD = 0
    csv_ingestion.cost_per_gb_usd = 100000
    csv_ingestion.save(update_fields=["cost_per_gb_usd"])
    write_csv_files(source_dir, files=3, rows=ROWS)
    env = script_env(live_server, admin_token, JSON_TOOL="python3")  # the fallback without jq

    result = run_script(**env)

    assert result.returncode == 0
    operation = RefreshOperation.objects.select_related("plan").get()
    assert f"sending plan_id {operation.plan.public_id}" in result.stdout
    assert operation.plan.used_at is not None
    assert sorted(table_ids(csv_ingestion)) == source_ids(3)

    # The second dry-run makes another plan, so the body differs from the first call's:
    # the server refuses the reused key (422) and the script follows today's operation.
    again = run_script(**env)

    assert again.returncode == 0
    assert "Already requested today with an earlier plan" in again.stdout
    assert RefreshOperation.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {}, "AUTOLOADER_URL is not set"),
        (
            (),
            {"AUTOLOADER_URL": "http://127.0.0.1:9", "AUTOLOADER_TOKEN": "t"},
            "INGESTION_ID is not set",
        ),
        (("--now",), {}, "unexpected argument: --now"),
        (
            (),
            {
                "AUTOLOADER_URL": "u",
                "AUTOLOADER_TOKEN": "t",
                "INGESTION_ID": "x",
                "JSON_TOOL": "yq",
            },
            "JSON_TOOL must be jq or python3",
        ),
    ],
)
def test_daily_script_exits_2_on_bad_usage(args, env, message):
    result = run_script(*args, **env)

    assert result.returncode == 2
    assert message in result.stderr


def test_daily_script_exits_1_when_the_server_cannot_be_reached():
    result = run_script(
        AUTOLOADER_URL="http://127.0.0.1:9", AUTOLOADER_TOKEN="t", INGESTION_ID="sales"
    )

    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9/api/v1" in result.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_daily_script_lists_each_failed_file_with_its_error_once(
    live_server, worker, csv_ingestion, source_dir, admin_token
):
    write_csv_files(source_dir, files=1, rows=ROWS)
    (source_dir / "b-broken-utf8.csv").write_bytes(b"id,name\n1,\xff\xfe\n")

    result = run_script(**script_env(live_server, admin_token))

    assert result.returncode == 1
    run = Run.objects.get()
    assert run.status == RunStatus.PARTIAL_SUCCESS
    error = run.failed_files[0]["error"]
    assert f"run {run.public_id} ended PARTIAL_SUCCESS: 1 of 2 files failed to load:" in (
        result.stderr
    )
    assert "b-broken-utf8.csv" in result.stderr
    assert result.stderr.count(error) == 1


def test_airflow_example_compiles_and_imports_without_airflow(tmp_path):
    py_compile.compile(str(DAG_FILE), cfile=str(tmp_path / "dag.pyc"), doraise=True)

    module = load_dag_module()

    if importlib.util.find_spec("airflow") is None:
        assert module.dag is None  # no DAG without Airflow, and no import error either
    assert module.plan_needed({"next_steps": {"to_proceed": '… and plan_id="plan-1"'}})
    assert not module.plan_needed({"next_steps": {"to_proceed": "… with confirm=true"}})
    assert module.plan_of({"plan_id": "plan-1", "plan_required": True}) == "plan-1"
    assert module.plan_of({"plan_id": "plan-1", "plan_required": False}) is None


@pytest.mark.parametrize(
    ("conn_type", "schema", "host", "port", "url"),
    [
        ("http", "", "127.0.0.1", 8000, "http://127.0.0.1:8000"),  # AIRFLOW_CONN_…='http://…'
        ("http", "https", "autoloader.example.com", None, "https://autoloader.example.com"),
        ("https", None, "autoloader.example.com", 443, "https://autoloader.example.com:443"),
        ("http", None, "https://autoloader.example.com/", None, "https://autoloader.example.com"),
    ],
)
def test_airflow_example_builds_the_url_from_the_connection(conn_type, schema, host, port, url):
    assert load_dag_module().connection_url(conn_type, schema, host, port) == url


def test_airflow_example_keys_are_stable_per_dag_run_and_within_the_servers_limit():
    dag = load_dag_module()

    key = dag.idempotency_key("autoloader_refresh", "manual__2026-01-05", "sales", "full_refresh")
    long_key = dag.idempotency_key("d", "r" * 300, "sales", "full_refresh")

    assert key == "airflow-autoloader_refresh-manual__2026-01-05-sales-full_refresh"
    assert long_key == dag.idempotency_key("d", "r" * 300, "sales", "full_refresh")
    assert len(long_key) <= 255


def test_airflow_example_failure_lists_each_failed_file_with_its_error():
    run = {
        "run_id": "run-1",
        "status": "PARTIAL_SUCCESS",
        "files_found": 3,
        "files_failed": 1,
        "error": "1 file failed to load.",
        "failed_files": [
            {
                "path": "/landing/b-broken-utf8.csv",
                "error": "Cannot read b-broken-utf8.csv: column(s) name are not valid UTF-8 text",
                "error_code": "FILE_READ_ERROR",
                "size_bytes": 14,
            }
        ],
    }

    dag = load_dag_module()

    with pytest.raises(dag.AutoloaderError) as failure:
        dag.run_finished(run)

    assert str(failure.value) == (
        "run run-1 ended PARTIAL_SUCCESS: 1 of 3 files failed to load:\n"
        "  - /landing/b-broken-utf8.csv [FILE_READ_ERROR]: Cannot read b-broken-utf8.csv: "
        "column(s) name are not valid UTF-8 text"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_airflow_example_refreshes_once_per_key_and_follows_the_run(
    live_server, worker, csv_ingestion, source_dir, admin_token
):
    write_csv_files(source_dir, files=2, rows=ROWS)
    dag = load_dag_module()
    client = dag.AutoloaderClient(live_server.url, admin_token)

    preview = client.preview("sales")
    assert preview["status"] == "dry_run"
    assert dag.plan_of(preview) is None
    result = dag.execute_once(client, "sales", "full_refresh", idempotency_key="k1", plan_id=None)
    retried = client.execute("sales", idempotency_key="k1")

    assert retried.replayed
    assert retried.body["operation_id"] == result["operation_id"]
    assert RefreshOperation.objects.count() == 1
    deadline = time.monotonic() + 60
    while not dag.run_finished(client.run(result["run_id"])):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.2)
    assert sorted(table_ids(csv_ingestion)) == source_ids(2)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_airflow_example_follows_the_first_operation_when_a_rerun_sends_another_plan(
    live_server, worker, csv_ingestion, source_dir, admin_token, settings
):
    settings.REFRESH_PLAN_REQUIRED_ABOVE_USD = 0
    csv_ingestion.cost_per_gb_usd = 100000
    csv_ingestion.save(update_fields=["cost_per_gb_usd"])
    write_csv_files(source_dir, files=1, rows=ROWS)
    dag = load_dag_module()
    client = dag.AutoloaderClient(live_server.url, admin_token)

    def execute_after_a_dry_run() -> dict:
        plan_id = dag.plan_of(client.preview("sales"))
        assert plan_id, "this ingestion's refresh needs a plan"
        return dag.execute_once(
            client, "sales", "full_refresh", idempotency_key="k1", plan_id=plan_id
        )

    first = execute_after_a_dry_run()
    # A cleared DAG run dry-runs again: another plan under the same key (422 from the server).
    again = execute_after_a_dry_run()

    assert again["operation_id"] == first["operation_id"]
    assert again["run_id"] == first["run_id"]
    assert RefreshOperation.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_airflow_example_waits_out_an_active_run_then_executes(
    live_server, csv_ingestion, source_dir, admin_token
):
    write_csv_files(source_dir, files=1, rows=ROWS)
    active = run_request(ingestion=csv_ingestion)  # no worker: it stays queued
    dag = load_dag_module()
    client = dag.AutoloaderClient(live_server.url, admin_token)
    waits = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        # The active run ends while the task waits.
        assert client.call("POST", f"/runs/{active.public_id}/cancel").ok

    result = dag.execute_once(
        client, "sales", "full_refresh", idempotency_key="k1", plan_id=None, sleep=sleep
    )

    assert waits == [dag.REFUSED_DEFAULT_WAIT_SECONDS]  # 409 RUN_IN_PROGRESS, then through
    assert RefreshOperation.objects.get().public_id == result["operation_id"]


@pytest.mark.django_db(transaction=True)
def test_airflow_example_gives_up_on_a_rate_limit_longer_than_its_bound(
    live_server, csv_ingestion, source_dir, admin_token, settings
):
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "full_refresh": "1/h"}
    dag = load_dag_module()
    client = dag.AutoloaderClient(live_server.url, admin_token)
    dag.execute_once(client, "sales", "full_refresh", idempotency_key="k1", plan_id=None)

    with pytest.raises(dag.AutoloaderError) as refused:
        dag.execute_once(
            client,
            "sales",
            "full_refresh",
            idempotency_key="k2",
            plan_id=None,
            retry_for_seconds=60,
            sleep=pytest.fail,
        )

    assert refused.value.retryable  # Airflow's own retries take over
    assert "RATE_LIMITED" in str(refused.value)
