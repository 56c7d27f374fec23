"""Airflow DAG: a full refresh (or fresh start) of any Autoloader ingestion, awaited to its end.

One DAG for every ingestion: the ingestion is a DAG param, so a run is

    airflow dags test autoloader_refresh --conf '{"ingestion_id": "users-snapshot"}'
    airflow dags trigger autoloader_refresh --conf '{"ingestion_id": "users-snapshot",
                                                    "operation": "fresh_start"}'

or a `TriggerDagRunOperator(trigger_dag_id="autoloader_refresh", conf={...})` in the DAG that
produces the ingestion's files. Three tasks:

    preview  ->  execute  ->  wait_for_run

* `preview` is a dry-run: it changes nothing, logs the impact and returns the `plan_id`
  the server asks for when the estimated cost is above its threshold
  (REFRESH_PLAN_REQUIRED_ABOVE_USD).
* `execute` sends `confirm: true` (and the plan when needed) with an `Idempotency-Key` made
  from the DAG run: a retried or cleared task never refreshes twice. A retry gets the first
  answer replayed (logged as a replay). A cleared DAG run's new dry-run makes a new plan, so
  the same key now names another request and the server answers 422
  IDEMPOTENCY_KEY_REUSED, naming the operation the key made (`operation_id`): the task
  follows that operation instead of refreshing again. Refusals that pass by
  waiting - 429 RATE_LIMITED (its `Retry-After`), 409 RUN_IN_PROGRESS, REFRESH_IN_PROGRESS
  and IDEMPOTENCY_KEY_IN_USE - are retried for at most `REFUSED_RETRY_SECONDS`; a plan that
  went stale meanwhile is replaced by a new dry-run's.
* `wait_for_run` is a sensor (reschedule mode: it frees its worker slot between looks; its
  first look is at once, then every 5 s growing to 1 min; deferrable, the triggerer then
  looking every 10 s, with Airflow's `[operators] default_deferrable = True`). It succeeds
  when the run ends SUCCESS, and fails on PARTIAL_SUCCESS, FAILED or CANCELLED with the
  failed files and their errors in the message.

Configuration is Airflow's: the HTTP Connection `autoloader_default` (host and port of the
Autoloader server, the API token as its password, optionally `{"tenant": "<slug>"}` in its
extra for a user in several tenants), e.g. from the environment or a secrets backend:

    AIRFLOW_CONN_AUTOLOADER_DEFAULT='http://:<token>@autoloader.internal:8000'
    AIRFLOW_CONN_AUTOLOADER_DEFAULT='{"conn_type": "http", "host": "autoloader.example.com",
        "schema": "https", "port": 443, "password": "<token>"}'

Nothing but Airflow and the standard library is needed (urllib; the HTTP provider only
adds the connection type to the UI). Without Airflow installed this module still imports
(the DAG is then not defined), so `AutoloaderClient` and the helpers can be used and tested
alone. Works on Airflow 2.9+ and 3.x, with no deprecation warning on either.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import BaseHook, BaseSensorOperator, Param, dag, task
    from airflow.sdk.configuration import conf
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:
    try:  # Airflow 2.9 and 2.10
        from airflow.configuration import conf
        from airflow.decorators import dag, task
        from airflow.exceptions import AirflowFailException
        from airflow.hooks.base import BaseHook
        from airflow.models.param import Param
        from airflow.sensors.base import BaseSensorOperator
    except ImportError:  # no Airflow here: the client and the helpers stay importable
        dag = task = conf = BaseHook = BaseSensorOperator = Param = AirflowFailException = None
try:
    from airflow.triggers.base import BaseTrigger, TriggerEvent
except ImportError:  # no triggers: the wait cannot be deferred
    BaseTrigger = TriggerEvent = None

DAG_ID = "autoloader_refresh"
CONN_ID = "autoloader_default"
# Operation (the DAG param) -> its endpoint.
ENDPOINTS = {"full_refresh": "full-refresh", "fresh_start": "fresh-start"}
HTTP_TIMEOUT_SECONDS = 120
# How long `execute` keeps retrying refusals that pass by waiting, before failing the try
# (Airflow's own retries then start over).
REFUSED_RETRY_SECONDS = 30 * 60
REFUSED_DEFAULT_WAIT_SECONDS = 30  # when the answer names no Retry-After
WAITING_REFUSALS = {
    "RATE_LIMITED",  # 429, with Retry-After
    "RUN_IN_PROGRESS",  # 409: a run of the ingestion is queued or running
    "REFRESH_IN_PROGRESS",  # 409: another refresh operation is in flight
    "IDEMPOTENCY_KEY_IN_USE",  # 409: our own first request is still being answered
}
STALE_PLAN_REFUSALS = {"DRY_RUN_REQUIRED", "PLAN_STALE"}  # the plan expired while we waited
RUN_SUCCEEDED = "SUCCESS"
RUN_ACTIVE = ("QUEUED", "RUNNING")  # PARTIAL_SUCCESS, FAILED and CANCELLED end it badly
FAILED_FILES_SHOWN = 20

logger = logging.getLogger(__name__)


class AutoloaderError(RuntimeError):
    """The Autoloader API refused a call, or a run ended badly.

    `retryable` is True when trying the whole task again later may pass (the server was
    unreachable or busy for too long), False when it will not (a refusal, a failed run).
    """

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ApiResponse:
    """One answer of the API: status, JSON body and headers (case-insensitive)."""

    status: int
    body: dict
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error_code(self) -> str:
        return self.body.get("error_code") or ""

    @property
    def replayed(self) -> bool:
        """The server replayed the first answer to this Idempotency-Key: nothing ran again."""
        return self.headers.get("Idempotent-Replayed") == "true"

    def retry_after(self, default: float) -> float:
        value = self.headers.get("Retry-After") or self.body.get("retry_after")
        try:
            return max(1.0, float(value))
        except (TypeError, ValueError):
            return default

    def describe(self) -> str:
        """`HTTP 409 RUN_IN_PROGRESS: detail (help)`, for logs and failure messages."""
        detail = self.body.get("detail") or self.body.get("message") or ""
        help_text = (self.body.get("recovery") or {}).get("action") or self.body.get("help")
        text = f"HTTP {self.status} {self.error_code or 'no error code'}: {detail}".strip()
        return f"{text} ({help_text})" if help_text else text


class AutoloaderClient:
    """The few calls of the Autoloader REST API this DAG needs (standard library only)."""

    def __init__(self, base_url: str, token: str, tenant: str | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the Autoloader URL must be http(s)://…, not {base_url!r}")
        self.api = base_url.rstrip("/") + "/api/v1"
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if tenant:
            self.headers["X-Tenant"] = tenant

    @classmethod
    def from_connection(cls, conn_id: str = CONN_ID) -> AutoloaderClient:
        """The client of an Airflow Connection: host and port, token as the password."""
        if BaseHook is None:
            raise RuntimeError("Airflow is not installed: build AutoloaderClient(url, token)")
        conn = BaseHook.get_connection(conn_id)
        if not conn.password:
            raise AutoloaderError(f"connection {conn_id!r} has no password (the API token)")
        return cls(
            connection_url(conn.conn_type, conn.schema, conn.host, conn.port),
            conn.password,
            conn.extra_dejson.get("tenant"),
        )

    def call(self, method: str, path: str, body: dict | None = None, **headers) -> ApiResponse:
        """One request; HTTP errors come back as answers, an unreachable server raises."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self.api + path, data=data, method=method, headers={**self.headers, **headers}
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as answer:  # noqa: S310
                status, raw, answer_headers = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as error:
            status, raw, answer_headers = error.code, error.read(), error.headers
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise AutoloaderError(f"cannot reach {self.api}: {error}", retryable=True) from error
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"detail": raw[:300].decode(errors="replace")}
        if not isinstance(parsed, dict):
            parsed = {"results": parsed}
        return ApiResponse(status, parsed, answer_headers)

    def preview(self, ingestion_id: str, operation: str = "full_refresh") -> dict:
        """The dry-run: impact, warnings and `plan_id`; changes nothing."""
        response = self.call("POST", operation_path(ingestion_id, operation), {"dry_run": True})
        if response.status != 200:
            raise AutoloaderError(f"dry-run refused: {response.describe()}")
        return response.body

    def execute(
        self,
        ingestion_id: str,
        operation: str = "full_refresh",
        *,
        idempotency_key: str,
        plan_id: str | None = None,
    ) -> ApiResponse:
        """Execute once; the same key and body within 24 h replays the first answer."""
        body = {"confirm": True, "auto_run": True}
        if plan_id:
            body["plan_id"] = plan_id
        return self.call(
            "POST",
            operation_path(ingestion_id, operation),
            body,
            **{"Idempotency-Key": idempotency_key},
        )

    def operations(self, ingestion_id: str, limit: int = 20) -> list[dict]:
        """The ingestion's refresh operations, newest first."""
        response = self.call("GET", f"/ingestions/{ingestion_id}/refresh-operations?limit={limit}")
        if response.status != 200:
            raise AutoloaderError(f"cannot read the operations: {response.describe()}")
        return response.body["results"]

    def run(self, run_id: str) -> dict:
        response = self.call("GET", f"/runs/{run_id}")
        if response.status != 200:
            raise AutoloaderError(
                f"cannot read run {run_id}: {response.describe()}",
                retryable=response.status >= 500,
            )
        return response.body


def connection_url(conn_type: str | None, schema: str | None, host: str, port: int | None) -> str:
    """The server's root URL from an Airflow HTTP connection's fields.

    As in the HTTP provider: `schema` names the scheme (`https`), else http; a host that
    already holds a scheme is taken as it is.
    """
    if not host:
        raise AutoloaderError("the Autoloader connection has no host")
    if "://" in host:
        url = host.rstrip("/")
    else:
        scheme = schema if schema in ("http", "https") else "http"
        url = f"{'https' if conn_type == 'https' else scheme}://{host}"
    return f"{url}:{port}" if port else url


def operation_path(ingestion_id: str, operation: str) -> str:
    if operation not in ENDPOINTS:
        raise AutoloaderError(f"operation must be one of {sorted(ENDPOINTS)}, not {operation!r}")
    return f"/ingestions/{ingestion_id}/{ENDPOINTS[operation]}"


def idempotency_key(dag_id: str, dag_run_id: str, ingestion_id: str, operation: str) -> str:
    """One key per DAG run, ingestion and operation; the same on every retry and clear."""
    key = f"airflow-{dag_id}-{dag_run_id}-{ingestion_id}-{operation}"
    if len(key) > 255:  # the server's limit
        key = "airflow-" + hashlib.sha256(key.encode()).hexdigest()
    return key


def plan_needed(preview: dict) -> bool:
    """Whether executing must carry the dry-run's plan_id (cost above the server's threshold)."""
    if "plan_required" in preview:
        return bool(preview["plan_required"])
    return "plan_id" in preview.get("next_steps", {}).get("to_proceed", "")


def plan_of(preview: dict) -> str | None:
    """The plan_id to send with the execution, or None when the server needs none."""
    return preview["plan_id"] if plan_needed(preview) else None


def execute_once(
    client: AutoloaderClient,
    ingestion_id: str,
    operation: str,
    *,
    idempotency_key: str,
    plan_id: str | None,
    retry_for_seconds: float = REFUSED_RETRY_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Execute the operation at most once and return it (`operation_id`, `run_id`...).

    Waits out refusals that pass by waiting (Retry-After, else 30 s) for at most
    `retry_for_seconds`. Raises AutoloaderError: `retryable` when the server stayed busy
    that long, not when it refused for good or the operation failed half-way.
    """
    deadline = time.monotonic() + retry_for_seconds
    while True:
        response = client.execute(
            ingestion_id, operation, idempotency_key=idempotency_key, plan_id=plan_id
        )
        code = response.error_code
        if response.ok:
            result = response.body
            if response.replayed:
                logger.info(
                    "Replayed: this DAG run already requested operation %s (run %s); "
                    "nothing was executed again",
                    result["operation_id"],
                    result.get("run_id"),
                )
            else:
                logger.info("Operation %s: %s", result["operation_id"], result["message"])
            return result
        if code == "IDEMPOTENCY_KEY_REUSED":
            return earlier_operation(
                client,
                ingestion_id,
                operation,
                idempotency_key,
                operation_id=response.body.get("operation_id"),
            )
        if response.status == 500 and response.body.get("operation_id"):
            # partial_failure / failed half-way: `recovery.action` is the call that finishes it.
            raise AutoloaderError(
                f"operation {response.body['operation_id']} {response.body.get('status')}: "
                f"{response.describe()}; state: {response.body.get('recovery', {}).get('state')}"
            )
        if code in STALE_PLAN_REFUSALS and plan_id:
            # The refusal freed the key: the same key with a fresh plan is a new attempt.
            plan_id = plan_of(client.preview(ingestion_id, operation))
            logger.info("The plan expired while waiting: sending the new plan %s", plan_id)
            continue
        if code not in WAITING_REFUSALS:
            raise AutoloaderError(f"{operation} refused: {response.describe()}")
        wait = response.retry_after(default=REFUSED_DEFAULT_WAIT_SECONDS)
        if time.monotonic() + wait > deadline:
            raise AutoloaderError(
                f"{operation} still refused after {retry_for_seconds:.0f} s: {response.describe()}",
                retryable=True,
            )
        logger.info("Refused for now (%s); trying again in %.0f s", response.describe(), wait)
        sleep(wait)


def earlier_operation(
    client: AutoloaderClient,
    ingestion_id: str,
    operation: str,
    idempotency_key: str,
    operation_id: str | None = None,
) -> dict:
    """The operation an earlier try of this DAG run started with `idempotency_key`.

    The key came back as used with another request: the earlier try sent another plan_id
    (each dry-run makes a new one). The 422 names the operation the key made
    (`operation_id`); a server too old to say falls back to the ingestion's latest
    operation of the same kind.
    """
    for candidate in client.operations(ingestion_id):
        if candidate["operation_id"] == operation_id or (
            operation_id is None and candidate["operation_type"] == operation
        ):
            logger.info(
                "Replayed: Idempotency-Key %s was used by an earlier try of this DAG run "
                "(with another plan); following its operation %s (%s, run %s) instead of "
                "executing again",
                idempotency_key,
                candidate["operation_id"],
                candidate["status"],
                candidate.get("run_id"),
            )
            return candidate
    raise AutoloaderError(
        f"Idempotency-Key {idempotency_key} was used with another request, and "
        f"{ingestion_id} has no {operation} operation to follow"
    )


def run_finished(run: dict) -> bool:
    """True once the run ended SUCCESS, False while it is active; raises if it ended badly."""
    if run["status"] == RUN_SUCCEEDED:
        return True
    if run["status"] in RUN_ACTIVE:
        return False
    raise AutoloaderError(run_failure_message(run))


def run_failure_message(run: dict) -> str:
    """What went wrong, with each failed file and its error, in one message."""
    failed = run.get("failed_files") or []
    count = run.get("files_failed") or len(failed)
    if run["status"] == "PARTIAL_SUCCESS" or failed:
        headline = (
            f"run {run['run_id']} ended {run['status']}: {count} of "
            f"{run.get('files_found', '?')} files failed to load"
        )
        if run["status"] != "PARTIAL_SUCCESS" and run.get("error"):
            headline += f" ({run['error']})"
    else:
        headline = f"run {run['run_id']} ended {run['status']}: {run.get('error') or 'no error'}"
    lines = [headline + (":" if failed else "")]
    for item in failed[:FAILED_FILES_SHOWN]:
        code = f" [{item['error_code']}]" if item.get("error_code") else ""
        lines.append(f"  - {item['path']}{code}: {item.get('error') or 'no error message'}")
    if len(failed) > FAILED_FILES_SHOWN:
        lines.append(f"  … and {len(failed) - FAILED_FILES_SHOWN} more (GET /runs/{run['run_id']})")
    return "\n".join(lines)


def failing_for_good(error: AutoloaderError) -> Exception:
    """Airflow's no-retry failure for a refusal, the error itself (retried) otherwise."""
    if error.retryable or AirflowFailException is None:
        return error
    return AirflowFailException(str(error))


if BaseTrigger is not None:

    class AutoloaderRunTrigger(BaseTrigger):
        """Looks at an Autoloader run from the triggerer until it ends (the deferrable wait)."""

        def __init__(self, run_id: str, conn_id: str = CONN_ID, poll_seconds: float = 10.0):
            super().__init__()
            self.run_id = run_id
            self.conn_id = conn_id
            self.poll_seconds = poll_seconds

        def serialize(self):
            # By the file's name: the DAGs folder is on the triggerer's sys.path (this
            # module's own __name__ is the DAG loader's, which nothing else can import).
            return (
                "airflow_full_refresh_dag.AutoloaderRunTrigger",
                {"run_id": self.run_id, "conn_id": self.conn_id, "poll_seconds": self.poll_seconds},
            )

        async def run(self):
            # The client is blocking (urllib): each call runs in a thread, off the event loop.
            client = await asyncio.to_thread(AutoloaderClient.from_connection, self.conn_id)
            while True:
                try:
                    run = await asyncio.to_thread(client.run, self.run_id)
                except AutoloaderError as error:
                    if not error.retryable:
                        yield TriggerEvent({"status": "error", "message": str(error)})
                        return
                else:
                    if run["status"] not in RUN_ACTIVE:
                        yield TriggerEvent({"status": "ended", "run_status": run["status"]})
                        return
                await asyncio.sleep(self.poll_seconds)

else:
    AutoloaderRunTrigger = None

if dag is not None:

    class AutoloaderRunSensor(BaseSensorOperator):
        """Waits for an Autoloader run to end; fails, with its failed files, unless SUCCESS.

        Deferrable where Airflow has triggers, with `deferrable=True` or Airflow's
        `[operators] default_deferrable = True`: the wait then holds no worker slot at all,
        the triggerer looks at the run every 10 s.
        """

        template_fields = ("started",)

        def __init__(
            self,
            *,
            started,
            conn_id: str = CONN_ID,
            deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
            **kwargs,
        ):
            super().__init__(**kwargs)
            self.started = started  # execute's answer: operation_id and run_id
            self.conn_id = conn_id
            self.deferrable = deferrable and AutoloaderRunTrigger is not None

        def execute(self, context):
            if not self.deferrable:
                return super().execute(context)
            if self.poke(context):  # the first look is at once
                return None
            self.defer(
                trigger=AutoloaderRunTrigger(run_id=self.started["run_id"], conn_id=self.conn_id),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout),
            )

        def execute_complete(self, context, event: dict) -> None:
            if event["status"] == "error":
                raise AirflowFailException(event["message"])
            if not self.poke(context):  # logs the success, or fails with the failed files
                raise AutoloaderError(f"run {self.started['run_id']} is still active")

        def poke(self, context) -> bool:
            run_id = self.started["run_id"]
            try:
                run = AutoloaderClient.from_connection(self.conn_id).run(run_id)
                if not run_finished(run):
                    self.log.info(
                        "Run %s: %s, %s/%s files loaded",
                        run_id,
                        run["status"],
                        run.get("files_loaded"),
                        run.get("files_found"),
                    )
                    return False
            except AutoloaderError as error:
                if error.retryable:  # the server is away for a moment: look again later
                    self.log.warning("%s; looking again later", error)
                    return False
                raise failing_for_good(error) from error
            params = context["params"]
            self.log.info(
                "Run %s ended SUCCESS: %s of %s done (operation %s), %s files, %s rows",
                run_id,
                params["operation"],
                params["ingestion_id"],
                self.started["operation_id"],
                run.get("files_loaded"),
                run.get("rows_written"),
            )
            return True

    @dag(
        dag_id=DAG_ID,
        description="Full refresh or fresh start of one Autoloader ingestion, awaited",
        schedule=None,  # triggered with conf: ingestion_id has no default
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=4,  # the server runs one refresh per ingestion at a time (409)
        default_args={"owner": "data-eng", "retries": 2, "retry_delay": timedelta(minutes=5)},
        params={
            "ingestion_id": Param(
                type="string", minLength=1, description="The Autoloader ingestion's id"
            ),
            "operation": Param(
                "full_refresh",
                enum=sorted(ENDPOINTS),
                description="full_refresh reloads every file; fresh_start only the new ones",
            ),
        },
        tags=["autoloader"],
    )
    def autoloader_refresh():
        @task
        def preview(params: dict | None = None) -> dict:
            ingestion_id, operation = params["ingestion_id"], params["operation"]
            try:
                result = AutoloaderClient.from_connection().preview(ingestion_id, operation)
            except AutoloaderError as error:
                raise failing_for_good(error) from error
            impact = result["impact"]
            logger.info(
                "%s of %s would load %s files (%s GB), about $%s and %s min",
                operation,
                ingestion_id,
                impact.get("files_to_process"),
                impact.get("estimated_data_size_gb"),
                impact.get("estimated_cost_usd"),
                impact.get("estimated_duration_minutes"),
            )
            for warning in result.get("warnings", []):
                logger.warning(warning)
            plan_id = plan_of(result)
            if plan_id:
                logger.info("The cost needs the dry-run's plan: executing with %s", plan_id)
            return {"plan_id": plan_id}

        @task
        def execute(
            plan: dict, params: dict | None = None, dag_run=None, run_id: str | None = None
        ) -> dict:
            ingestion_id, operation = params["ingestion_id"], params["operation"]
            key = idempotency_key(dag_run.dag_id, run_id, ingestion_id, operation)
            logger.info("%s of %s (Idempotency-Key: %s)", operation, ingestion_id, key)
            try:
                result = execute_once(
                    AutoloaderClient.from_connection(),
                    ingestion_id,
                    operation,
                    idempotency_key=key,
                    plan_id=plan["plan_id"],
                )
            except AutoloaderError as error:
                raise failing_for_good(error) from error
            if not result.get("run_id"):
                raise AirflowFailException(f"operation {result['operation_id']} started no run")
            return {"operation_id": result["operation_id"], "run_id": result["run_id"]}

        AutoloaderRunSensor(
            task_id="wait_for_run",
            started=execute(preview()),
            # The first look is at once, then every 5 s growing to 1 min; between looks the
            # worker slot is free (reschedule).
            poke_interval=5,
            exponential_backoff=True,
            max_wait=timedelta(minutes=1),
            timeout=6 * 3600,
            mode="reschedule",
        )

    autoloader_refresh()
