"""Races: storms of concurrent full refreshes, fresh starts and runs on one ingestion.

Fifty callers released at once, mixed across the three endpoints (every other storm, the
two refresh endpoints alone, so that refreshes race refreshes and not only the cheaper run
request): exactly one executes, every other one is told 409 with the id of what is in the
way, and a sampler polling from its own connection throughout never sees two active runs
or two refreshes in flight.
"""

import threading
from collections import Counter

import pytest
from django.db import connection

from ingestions.models import ACTIVE_RUN_STATUSES, Role, Run
from ingestions.runs import run_cancel
from refresh.models import OperationStatus, RefreshOperation

from .conftest import TRIALS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CALLERS = 50
ENDPOINTS = {
    "full-refresh": {"confirm": True},
    "fresh-start": {"confirm": True},
    "run": None,
}


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip(
            "races need PostgreSQL: SQLite serializes every writer, so nothing can race "
            "(the CI's second pass runs this on PostgreSQL)"
        )


class Sampler(threading.Thread):
    """Counts active runs and refreshes in flight on one ingestion, as fast as it can."""

    def __init__(self, ingestion):
        super().__init__(name="sampler")
        self.ingestion = ingestion
        self.stop = threading.Event()
        self.samples: list[tuple[int, int]] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.samples.append(
                    (
                        Run.objects.filter(
                            ingestion=self.ingestion, status__in=ACTIVE_RUN_STATUSES
                        ).count(),
                        RefreshOperation.objects.filter(
                            ingestion=self.ingestion, status=OperationStatus.IN_PROGRESS
                        ).count(),
                    )
                )
        finally:
            connection.close()


def storm(clients, endpoints: list[str]) -> list[tuple[str, int, dict]]:
    barrier = threading.Barrier(len(clients))
    answers: list[tuple[str, int, dict]] = []

    def call(client, endpoint):
        barrier.wait()
        try:
            response = client.post(
                f"/api/v1/ingestions/sales/{endpoint}", ENDPOINTS[endpoint], format="json"
            )
            answers.append((endpoint, response.status_code, response.json()))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=call, args=pair) for pair in zip(clients, endpoints, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def test_a_storm_of_refreshes_and_runs_on_one_ingestion_executes_exactly_once(
    settings, loaded, member, rng, report
):
    settings.REFRESH_RATE_LIMITS = {}
    settings.REFRESH_RATE_CEILINGS = {}
    clients = [member(Role.ADMIN) for _ in range(CALLERS)]
    storms = max(2, TRIALS // 10)
    winners: Counter = Counter()
    refusals: Counter = Counter()
    samples = 0
    most_active_runs = most_in_flight = 0
    for number in range(storms):
        kinds = list(ENDPOINTS) if number % 2 == 0 else ["full-refresh", "fresh-start"]
        endpoints = kinds * (CALLERS // len(kinds))
        endpoints += rng.choices(kinds, k=CALLERS - len(endpoints))
        rng.shuffle(endpoints)
        sampler = Sampler(loaded)
        sampler.start()
        try:
            answers = storm(clients, endpoints)
        finally:
            sampler.stop.set()
            sampler.join()

        assert len(answers) == CALLERS
        accepted = [answer for answer in answers if answer[1] < 300]
        assert len(accepted) == 1, Counter(status for _, status, _ in answers)
        endpoint, status, body = accepted[0]
        assert status == 202
        winners[endpoint] += 1
        for _, status, body in answers:
            if status >= 300:
                assert status == 409, body
                assert body["error_code"] in ("RUN_IN_PROGRESS", "REFRESH_IN_PROGRESS"), body
                assert body.get("current_run_id") or body.get("current_operation_id"), body
                refusals[body["error_code"]] += 1
        assert sampler.samples, "the sampler never ran"
        most_active_runs = max(most_active_runs, *(runs for runs, _ in sampler.samples))
        most_in_flight = max(most_in_flight, *(operations for _, operations in sampler.samples))
        assert most_active_runs <= 1, "two active runs existed at once"
        assert most_in_flight <= 1, "two refreshes were in flight at once"
        samples += len(sampler.samples)

        active = Run.objects.get(ingestion=loaded, status__in=ACTIVE_RUN_STATUSES)
        assert not RefreshOperation.objects.filter(status=OperationStatus.IN_PROGRESS).exists()
        run_cancel(run=active)  # ready for the next storm

    report(
        "races",
        {
            "storms": storms,
            "callers_per_storm": CALLERS,
            "executed": sum(winners.values()),
            "refused_409": sum(refusals.values()),
            "winners_by_endpoint": dict(winners),
            "refusals_by_code": dict(refusals),
            "sampler_reads": samples,
            "most_active_runs_seen": most_active_runs,
            "most_refreshes_in_flight_seen": most_in_flight,
        },
    )
