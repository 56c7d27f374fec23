"""Airflow DAG: fully refresh one Autoloader ingestion every day, then wait for its run.

Three tasks, with the TaskFlow API (Airflow 2.5+):

    preview  ->  full_refresh  ->  wait_for_run

* `preview` is a dry-run: it changes nothing, logs the impact and returns the `plan_id`
  the server asks for when the estimated cost is above its threshold.
* `full_refresh` executes with `confirm: true` and an `Idempotency-Key` made of the DAG
  run's id: if the task is retried after a timeout, the server answers with the first
  response instead of refreshing twice. It returns the id of the triggered run.
* `wait_for_run` is a sensor (reschedule mode: it frees its worker slot between pokes)
  that succeeds when the run ends SUCCESS and fails the DAG run on PARTIAL_SUCCESS,
  FAILED or CANCELLED.

Configuration, read when the tasks run (never while the scheduler parses this file):
`AUTOLOADER_URL` (the server's root URL) and `AUTOLOADER_TOKEN` (an API token of an admin
of the ingestion's tenant; in production put it in your secrets backend and export it to
the workers), optionally `AUTOLOADER_TENANT`. The ingestion is `INGESTION_ID` below.

Only `requests` is needed besides Airflow. Without Airflow installed this module still
imports (the DAG is simply not defined), so its HTTP helpers can be used and tested alone.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

import requests

INGESTION_ID = "users-snapshot"
DAG_ID = f"autoloader_full_refresh_{INGESTION_ID.replace('-', '_')}"
HTTP_TIMEOUT_SECONDS = 120
RUN_DONE = "SUCCESS"
RUN_ACTIVE = ("QUEUED", "RUNNING")  # PARTIAL_SUCCESS, FAILED and CANCELLED end it badly

logger = logging.getLogger(__name__)


class AutoloaderError(RuntimeError):
    """The Autoloader API refused a call, or a run ended badly."""


class AutoloaderClient:
    """The few calls of the Autoloader REST API this DAG needs."""

    def __init__(self, base_url: str, token: str, tenant: str | None = None):
        self.api = base_url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        if tenant:
            self.session.headers["X-Tenant"] = tenant

    @classmethod
    def from_environment(cls) -> AutoloaderClient:
        return cls(
            os.environ["AUTOLOADER_URL"],
            os.environ["AUTOLOADER_TOKEN"],
            os.environ.get("AUTOLOADER_TENANT"),
        )

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, self.api + path, timeout=HTTP_TIMEOUT_SECONDS, **kwargs)

    @staticmethod
    def _refused(what: str, response: requests.Response) -> AutoloaderError:
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:300]}
        recovery = body.get("recovery") or {}
        return AutoloaderError(
            f"{what}: HTTP {response.status_code} {body.get('error_code', '')}: "
            f"{body.get('detail') or body.get('message')} "
            f"{recovery.get('action') or body.get('help') or ''}".strip()
        )

    def preview_full_refresh(self, ingestion_id: str) -> dict:
        """The dry-run: impact, warnings and `plan_id`; changes nothing."""
        response = self._call(
            "POST", f"/ingestions/{ingestion_id}/full-refresh", json={"dry_run": True}
        )
        if response.status_code != 200:
            raise self._refused("dry-run refused", response)
        return response.json()

    def full_refresh(
        self, ingestion_id: str, *, idempotency_key: str, plan_id: str | None = None
    ) -> dict:
        """Execute; the same key and body within 24 h replays the first response."""
        body = {"confirm": True, "auto_run": True}
        if plan_id:
            body["plan_id"] = plan_id
        response = self._call(
            "POST",
            f"/ingestions/{ingestion_id}/full-refresh",
            json=body,
            headers={"Idempotency-Key": idempotency_key},
        )
        if response.status_code not in (200, 202):
            # 500 partial_failure carries `recovery.action`: the exact call that finishes it.
            raise self._refused("full refresh refused or failed", response)
        return response.json()

    def run(self, run_id: str) -> dict:
        response = self._call("GET", f"/runs/{run_id}")
        if response.status_code != 200:
            raise self._refused(f"cannot read run {run_id}", response)
        return response.json()


def plan_needed(preview: dict) -> bool:
    """Whether executing must carry the dry-run's plan_id (cost above the server's threshold)."""
    if "plan_required" in preview:
        return bool(preview["plan_required"])
    return "plan_id" in preview.get("next_steps", {}).get("to_proceed", "")


def run_finished(run: dict) -> bool:
    """True once the run ended SUCCESS; raises if it ended any other way."""
    if run["status"] == RUN_DONE:
        return True
    if run["status"] in RUN_ACTIVE:
        return False
    raise AutoloaderError(
        f"run {run['run_id']} ended {run['status']}: {run.get('error') or 'no error message'}"
        f" ({run.get('files_failed', 0)} files failed)"
    )


try:
    from airflow.decorators import dag, task
    from airflow.exceptions import AirflowFailException
except ImportError:  # no Airflow here: the helpers above stay importable
    dag = task = None

if dag is not None:

    @dag(
        dag_id=DAG_ID,
        description=f"Daily full refresh of the Autoloader ingestion {INGESTION_ID}",
        schedule="0 2 * * *",  # 02:00 UTC
        start_date=datetime(2025, 1, 1),
        catchup=False,  # a snapshot reload: only the latest day matters
        max_active_runs=1,  # the server refuses a second refresh while one runs (409)
        default_args={"owner": "data-eng", "retries": 2, "retry_delay": timedelta(minutes=5)},
        tags=["autoloader"],
    )
    def autoloader_full_refresh():
        @task(multiple_outputs=False)  # one XCom holding the dict
        def preview() -> dict:
            result = AutoloaderClient.from_environment().preview_full_refresh(INGESTION_ID)
            impact = result["impact"]
            logger.info(
                "Full refresh of %s would load %s files (%s GB), about $%s and %s min",
                INGESTION_ID,
                impact["files_to_process"],
                impact["estimated_data_size_gb"],
                impact["estimated_cost_usd"],
                impact["estimated_duration_minutes"],
            )
            for warning in result["warnings"]:
                logger.warning(warning)
            return {"plan_id": result["plan_id"], "plan_required": plan_needed(result)}

        @task(retries=1)
        def full_refresh(plan: dict, run_id: str | None = None) -> str:
            # `run_id` is Airflow's DAG run id (from the context): retries of this task
            # send the same key and body, so the server replays instead of refreshing again.
            client = AutoloaderClient.from_environment()
            try:
                result = client.full_refresh(
                    INGESTION_ID,
                    idempotency_key=f"airflow-{DAG_ID}-{run_id}",
                    plan_id=plan["plan_id"] if plan["plan_required"] else None,
                )
            except AutoloaderError as exc:
                # A refusal (409 busy, 422 key reused by a re-run preview, 423 protected,
                # 500 partial failure) does not go away by retrying the same call.
                raise AirflowFailException(str(exc)) from exc
            logger.info("Operation %s: %s", result["operation_id"], result["message"])
            if not result.get("run_id"):
                raise AirflowFailException(f"operation {result['operation_id']} started no run")
            return result["run_id"]

        @task.sensor(poke_interval=60, timeout=6 * 3600, mode="reschedule")
        def wait_for_run(autoloader_run_id: str) -> bool:
            run = AutoloaderClient.from_environment().run(autoloader_run_id)
            logger.info(
                "Run %s: %s, %s/%s files, %s rows",
                autoloader_run_id,
                run["status"],
                run["files_loaded"],
                run["files_found"],
                run["rows_written"],
            )
            try:
                return run_finished(run)
            except AutoloaderError as exc:
                raise AirflowFailException(str(exc)) from exc

        wait_for_run(full_refresh(preview()))

    autoloader_full_refresh()
