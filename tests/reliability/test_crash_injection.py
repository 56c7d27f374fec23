"""Crash injection: real workers SIGKILLed at random instants of runs and of full refreshes.

Each trial starts a run (new files) or a full refresh (every file again) through the API,
kills the worker executing it at a random instant (sometimes twice), lets a new worker
recover it, and then checks the table against the source: every row exactly once, the
history naming exactly the files in the table. The worker that recovered a trial's run is
the one the next trial kills, so one restart loop serves every trial.

A full refresh's own steps run in the web request, not in the worker: the last tests here
kill that request mid-step (a BaseException no handler catches, the same as the process
dying) and prove that the operation, found stale, resumes to a table loaded exactly once.
"""

import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from ingestions.engines import load_engine
from ingestions.models import (
    ACTIVE_RUN_STATUSES,
    CommitStatus,
    ProcessedFile,
    Role,
    Run,
    RunBatch,
    RunStatus,
)
from ingestions.runs import SNAPSHOT_BATCH_KEY
from refresh import steps
from refresh.models import OperationStatus, RefreshOperation, StepName, StepStatus
from refresh.services import refresh_execute

from ..factories import IngestionFactory
from ..helpers import (
    RequestProcessDied,
    drain_queue,
    dying_step,
    open_table,
    start_worker,
    wait_for,
    write_csv_files,
)
from .conftest import TRIALS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROWS_PER_FILE = 20
TRIALS_PER_TABLE = 8  # a new ingestion and table every so often: commits stay as cheap
KILL_BEFORE_CLAIM = 0.15  # share of kills aimed at the instant a worker takes the task
SECOND_KILL = 0.25  # share of trials whose recovering worker is killed too


class WorkerLoop:
    """The test's one live worker process: killed with SIGKILL, replaced on demand."""

    def __init__(self, log: Path):
        self.log = log
        self.process = None
        self.started = 0

    def ensure(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = start_worker(self.log)
            self.started += 1

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""


@dataclass
class Source:
    """One ingestion's source folder; knows every row it holds."""

    ingestion: object
    folder: Path
    files: int = 0

    def add_files(self, count: int) -> None:
        write_csv_files(self.folder, files=count, rows=ROWS_PER_FILE, start=self.files)
        self.files += count

    @property
    def ids(self) -> set[int]:
        return {index * 100000 + row for index in range(self.files) for row in range(ROWS_PER_FILE)}

    @property
    def file_names(self) -> set[str]:
        return {f"part-{index:04d}.csv" for index in range(self.files)}


@dataclass
class Kill:
    aimed: str  # "before-claim" or "mid-run"
    delay_seconds: float
    run_status: str
    files_loaded: int
    pending_batches: int  # batches between "pending" and "committed": the critical window
    committed_not_recorded: int  # of those, the ones whose Iceberg commit had landed


@dataclass
class Trial:
    number: int
    scenario: str
    files_to_load: int
    kills: list[Kill] = field(default_factory=list)
    attempts: int = 0
    duplicates: int = 0
    rows_lost: int = 0
    unexpected_rows: int = 0
    history_matches_table: bool = False
    seconds: float = 0.0


class Killer:
    """Kills the worker at random instants of runs, and learns how long one batch takes.

    A kill aims at a random batch of the run (one file each), then at a random instant
    within that batch: reading the file, recording it pending, committing to Iceberg,
    writing the history. Aiming needs the time of one batch, measured as runs go.
    """

    def __init__(self, workers: WorkerLoop):
        self.workers = workers
        self.batch_seconds: list[float] = [0.08]

    def kill(self, run: Run, files_to_load: int, rng) -> Kill:
        if rng.random() < KILL_BEFORE_CLAIM:
            aimed, delay = "before-claim", rng.uniform(0, 0.3)
        else:
            aimed = "mid-run"
            self._wait_for_files(run, rng.randrange(files_to_load))
            ordered = sorted(self.batch_seconds)
            delay = rng.uniform(0, ordered[len(ordered) // 2])
        time.sleep(delay)
        self.workers.kill()
        return self._describe(run, aimed, delay)

    def _wait_for_files(self, run: Run, target: int) -> None:
        """Poll until `run` has loaded `target` files (or ended), timing each batch seen."""
        deadline = time.monotonic() + 60
        loaded, since = None, None
        while time.monotonic() < deadline:
            status, files_loaded = Run.objects.filter(pk=run.pk).values_list(
                "status", "files_loaded"
            )[0]
            now = time.monotonic()
            if status == RunStatus.RUNNING:
                if loaded is not None and files_loaded > loaded:
                    self.batch_seconds.append((now - since) / (files_loaded - loaded))
                if files_loaded != loaded:
                    loaded, since = files_loaded, now
                if files_loaded >= target:
                    return
            elif status != RunStatus.QUEUED:
                return  # it ended before the aimed batch: the kill lands on an idle worker
            time.sleep(0.005)
        raise AssertionError(
            f"{run.public_id} did not load {target} files (log: {self.workers.tail()})"
        )

    def _describe(self, run: Run, aimed: str, delay: float) -> Kill:
        run.refresh_from_db()
        engine = load_engine()
        pending = list(RunBatch.objects.filter(run=run, status=CommitStatus.PENDING))
        landed = sum(
            1
            for batch in pending
            if engine.find_snapshot(batch.table_name, key=SNAPSHOT_BATCH_KEY, value=batch.batch_key)
        )
        return Kill(
            aimed=aimed,
            delay_seconds=round(delay, 3),
            run_status=run.status,
            files_loaded=run.files_loaded,
            pending_batches=len(pending),
            committed_not_recorded=landed,
        )


def check_table(source: Source, trial: Trial) -> None:
    """Compare the table with the source and the history: duplicates, losses, strays."""
    table_name = source.ingestion.table_identifier
    data = open_table(table_name).scan(selected_fields=("id", "_source_file")).to_arrow()
    counts = Counter(data["id"].to_pylist())
    expected = source.ids
    trial.duplicates = sum(count - 1 for count in counts.values() if count > 1)
    trial.rows_lost = len(expected - counts.keys())
    trial.unexpected_rows = len(counts.keys() - expected)
    history = set(
        ProcessedFile.objects.filter(ingestion=source.ingestion).values_list("path", flat=True)
    )
    files_in_table = set(data["_source_file"].to_pylist())
    trial.history_matches_table = history == files_in_table == source.file_names


def new_source(tmp_path: Path, tenant, number: int) -> Source:
    folder = tmp_path / f"source-{number}"
    folder.mkdir()
    ingestion = IngestionFactory(
        tenant=tenant,
        public_id=f"crash-{number}",
        source_uri=str(folder),
        destination_table=f"raw.crash_{number}",
    )
    return Source(ingestion=ingestion, folder=folder)


def test_sigkilled_workers_never_duplicate_or_lose_a_row(
    settings, tenant, member, tmp_path, trial_rng, report
):
    settings.REFRESH_RATE_LIMITS = {}  # full refreshes every few seconds, on purpose
    settings.REFRESH_RATE_CEILINGS = {}
    admin = member(Role.ADMIN)
    workers = WorkerLoop(tmp_path / "worker.log")
    killer = Killer(workers)
    trials: list[Trial] = []
    started = time.monotonic()
    source = None
    try:
        for number in range(TRIALS):
            if number % TRIALS_PER_TABLE == 0:
                source = new_source(tmp_path, tenant, number // TRIALS_PER_TABLE)
            first_of_table = source.files == 0
            scenario = "run" if first_of_table or number % 2 == 0 else "full_refresh"
            trial_started = time.monotonic()
            rng = trial_rng(number)
            workers.ensure()
            path = f"/api/v1/ingestions/{source.ingestion.public_id}"
            if scenario == "run":
                new_files = rng.randint(2, 5)
                source.add_files(new_files)
                response = admin.post(f"{path}/run")
            else:
                new_files = source.files
                response = admin.post(f"{path}/full-refresh", {"confirm": True}, format="json")
            assert response.status_code == 202, response.content
            run = Run.objects.get(public_id=response.json()["run_id"])
            trial = Trial(number=number, scenario=scenario, files_to_load=new_files)
            second_kill = rng.random() < SECOND_KILL
            trial.kills.append(killer.kill(run, new_files, rng))
            if second_kill and trial.kills[-1].run_status in ACTIVE_RUN_STATUSES:
                workers.ensure()
                trial.kills.append(killer.kill(run, new_files, rng))
            workers.ensure()
            wait_for(
                lambda run=run: (
                    not Run.objects.filter(pk=run.pk, status__in=ACTIVE_RUN_STATUSES).exists()
                ),
                120,
                f"{run.public_id} to finish (log: {workers.tail()})",
            )
            run.refresh_from_db()
            assert (run.status, run.error) == (RunStatus.SUCCESS, ""), workers.tail()
            assert run.files_loaded == new_files
            assert not RunBatch.objects.filter(run=run, status=CommitStatus.PENDING).exists()
            trial.attempts = run.attempts
            check_table(source, trial)
            trial.seconds = round(time.monotonic() - trial_started, 2)
            trials.append(trial)
    finally:
        workers.stop()
        connection.close()

    kills = [kill for trial in trials for kill in trial.kills]
    figures = {
        "trials": len(trials),
        "run_trials": sum(1 for trial in trials if trial.scenario == "run"),
        "full_refresh_trials": sum(1 for trial in trials if trial.scenario == "full_refresh"),
        "kills": len(kills),
        "kills_while_running": sum(1 for kill in kills if kill.run_status == RunStatus.RUNNING),
        "kills_aimed_before_claim": sum(1 for kill in kills if kill.aimed == "before-claim"),
        "kills_before_claim": sum(1 for kill in kills if kill.run_status == RunStatus.QUEUED),
        "kills_after_the_run_ended": sum(
            1 for kill in kills if kill.run_status == RunStatus.SUCCESS
        ),
        "kills_with_a_pending_batch": sum(1 for kill in kills if kill.pending_batches),
        "kills_after_commit_before_history": sum(kill.committed_not_recorded for kill in kills),
        "workers_started": workers.started,
        "rows_loaded": sum(trial.files_to_load for trial in trials) * ROWS_PER_FILE,
        "duplicates": sum(trial.duplicates for trial in trials),
        "rows_lost": sum(trial.rows_lost for trial in trials),
        "unexpected_rows": sum(trial.unexpected_rows for trial in trials),
        "history_mismatches": sum(1 for trial in trials if not trial.history_matches_table),
        "seconds": round(time.monotonic() - started, 1),
        "per_trial": [
            trial.__dict__ | {"kills": [k.__dict__ for k in trial.kills]} for trial in trials
        ],
    }
    report("crash_injection", figures)
    print_trials(trials)
    assert figures["duplicates"] == 0
    assert figures["rows_lost"] == 0
    assert figures["unexpected_rows"] == 0
    assert figures["history_mismatches"] == 0
    # The kills must mostly land inside runs, or the test proves little.
    assert figures["kills_while_running"] >= len(trials) // 2, figures


def print_trials(trials: list[Trial]) -> None:
    print(
        f"\n{'trial':>5} {'scenario':<13} {'files':>5} {'kills (status/loaded/pending)':<40}"
        f" {'att':>3} {'dup':>3} {'lost':>4} {'s':>6}"
    )
    for trial in trials:
        kills = "; ".join(
            f"{kill.run_status[:4]}/{kill.files_loaded}/{kill.pending_batches}"
            + ("*" if kill.committed_not_recorded else "")
            for kill in trial.kills
        )
        print(
            f"{trial.number:>5} {trial.scenario:<13} {trial.files_to_load:>5} {kills:<40}"
            f" {trial.attempts:>3} {trial.duplicates:>3} {trial.rows_lost:>4} {trial.seconds:>6}"
        )
    print("(* = the kill landed after the Iceberg commit, before the history was written)")


# --- the web request of a full refresh dies mid-step ----------------------------------------


@pytest.mark.parametrize("after_the_action", [False, True], ids=["before-effect", "after-effect"])
@pytest.mark.parametrize(
    "step", [StepName.TABLE_DROPPED, StepName.PROCESSED_FILES_CLEARED, StepName.RUN_TRIGGERED]
)
def test_a_full_refresh_whose_request_died_mid_step_resumes_to_a_table_loaded_exactly_once(
    settings, loaded, admin_user, admin_client, source_dir, monkeypatch, step, after_the_action
):
    settings.REFRESH_STALE_SECONDS = 60
    write_csv_files(source_dir, files=2, rows=25, start=4)
    with monkeypatch.context() as patch:
        patch.setitem(
            steps.STEP_ACTIONS,
            step,
            dying_step(steps.STEP_ACTIONS[step], after_the_action=after_the_action),
        )
        with pytest.raises(RequestProcessDied):
            refresh_execute(
                ingestion=loaded,
                kind="full_refresh",
                actor=admin_user,
                confirm=True,
                mode="drop_first",  # only dropping first has steps a dead request can split
            )

    operation = RefreshOperation.objects.get()
    assert operation.status == OperationStatus.IN_PROGRESS
    interrupted = operation.steps.get(name=step)
    assert (interrupted.status, interrupted.started_at is not None) == (StepStatus.PENDING, True)
    resume = f"/api/v1/refresh-operations/{operation.public_id}/resume"
    # Fresh, it may still be executing somewhere: resume and runs are refused.
    assert admin_client.post(resume).json()["error_code"] == "REFRESH_IN_PROGRESS"
    assert admin_client.post("/api/v1/ingestions/sales/run").json()["error_code"] == (
        "REFRESH_IN_PROGRESS"
    )

    RefreshOperation.objects.filter(pk=operation.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    response = admin_client.post(resume)
    if step == StepName.RUN_TRIGGERED and after_the_action:
        # The dead request had queued its run: resume waits for it to end, then finishes.
        assert response.json()["error_code"] == "RUN_IN_PROGRESS"
        drain_queue()
        response = admin_client.post(resume)
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "accepted"
    operation.refresh_from_db()
    assert operation.attempts == 2
    drain_queue()

    table = open_table(loaded.table_identifier)
    ids = table.scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()
    expected = {index * 100000 + row for index in range(6) for row in range(25)}
    assert len(ids) == len(set(ids)), "a row was loaded twice"
    assert set(ids) == expected, "a row was lost"
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 6
    assert not Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists()


def test_a_run_between_an_interrupted_full_refresh_and_its_resume_duplicates_nothing(
    settings, loaded, admin_user, admin_client, source_dir, monkeypatch
):
    settings.REFRESH_STALE_SECONDS = 60
    write_csv_files(source_dir, files=2, rows=25, start=4)
    with monkeypatch.context() as patch:
        clear = steps.STEP_ACTIONS[StepName.PROCESSED_FILES_CLEARED]
        patch.setitem(
            steps.STEP_ACTIONS,
            StepName.PROCESSED_FILES_CLEARED,
            dying_step(clear, after_the_action=False),
        )
        with pytest.raises(RequestProcessDied):
            refresh_execute(
                ingestion=loaded,
                kind="full_refresh",
                actor=admin_user,
                confirm=True,
                mode="drop_first",  # only dropping first has steps a dead request can split
            )
    operation = RefreshOperation.objects.get()
    RefreshOperation.objects.filter(pk=operation.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    assert admin_client.post("/api/v1/ingestions/sales/run").status_code == 202
    drain_queue()

    resumed = admin_client.post(f"/api/v1/refresh-operations/{operation.public_id}/resume")
    drain_queue()

    table = open_table(loaded.table_identifier)
    ids = table.scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()
    duplicates = len(ids) - len(set(ids))
    assert resumed.status_code == 202, resumed.json()
    assert duplicates == 0, f"{duplicates} rows twice after resume answered {resumed.status_code}"
    assert len(set(ids)) == 6 * 25, "a row was lost"
    assert [step["status"] for step in resumed.json()["operations"]] == ["success"] * 3
