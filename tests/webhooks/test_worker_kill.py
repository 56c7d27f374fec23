"""Real worker processes: one SIGKILLed in the middle of a delivery, another sends it again
after its lease. The receiver gets every event, with a valid signature, and exactly once
once it dedupes on the event id (delivery is at least once)."""

import signal
import threading

import pytest

from ingestions.models import Run, RunStatus
from ingestions.runs import run_request
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEvent

from ..helpers import start_worker, wait_for, write_csv_files
from .conftest import verify

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def stop(process) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except Exception:
        process.kill()
        process.wait()


def test_a_delivery_in_flight_when_its_worker_is_killed_is_sent_again_by_another(
    csv_ingestion, source_dir, subscribe, receiver, monkeypatch, settings, tmp_path
):
    monkeypatch.setenv(
        "AUTOLOADER_WEBHOOK_ALLOWED_HOSTS", f"127.0.0.1:{receiver.server.server_port}"
    )
    monkeypatch.setenv("AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("AUTOLOADER_WEBHOOK_DELIVERY_INTERVAL_SECONDS", "0.2")
    monkeypatch.setenv("AUTOLOADER_SECRETS_KEY", settings.AUTOLOADER_SECRETS_KEY)
    _client, body = subscribe(receiver.url, ["run.started", "run.finished"])
    write_csv_files(source_dir, files=4, rows=10)
    receiver.hold = threading.Event()  # the first POST hangs: the worker waits
    run = run_request(ingestion=csv_ingestion)
    log = tmp_path / "worker.log"

    first = start_worker(log)
    try:
        wait_for(lambda: receiver.requests, 60, "the first delivery to reach the receiver")
        first.send_signal(signal.SIGKILL)  # mid-send: its claim stays, unfinished
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    receiver.hold.set()
    receiver.hold = None
    second = start_worker(log)
    try:
        wait_for(
            lambda: (
                Run.objects.get(pk=run.pk).status == RunStatus.SUCCESS
                and WebhookEvent.objects.filter(event="run.finished").exists()
                and not WebhookDelivery.objects.exclude(status=DeliveryStatus.SUCCEEDED).exists()
            ),
            90,
            "the run and every delivery to finish",
        )
    finally:
        stop(second)

    assert all(verify(request, body["secret"]) for request in receiver.requests)
    by_id = {}
    for event in receiver.events():
        by_id.setdefault(event["id"], []).append(event)
    assert set(by_id) == set(WebhookEvent.objects.values_list("public_id", flat=True))
    finished = [events[0] for events in by_id.values() if events[0]["type"] == "run.finished"]
    assert len(finished) == 1 and finished[0]["data"]["status"] == RunStatus.SUCCESS
    # The delivery in flight at the kill was sent again, after the lease: same event id.
    interrupted = WebhookDelivery.objects.get(attempt_log__error__startswith="Interrupted")
    assert interrupted.attempts == 2
    assert len(by_id[interrupted.event.public_id]) == 2
