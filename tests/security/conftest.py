"""Fixtures of the security suite: queued runs executed for real, S3 on loopback (moto)."""

import socket

import pytest

from .. import helpers


@pytest.fixture
def drain_queue():
    """`drain_queue()`: run the real django-tasks database worker until the queue is empty."""
    return helpers.drain_queue


@pytest.fixture
def run_through_api(drain_queue):
    """`run_through_api(client, ingestion_id)`: POST …/run as `client`, let the worker
    execute it, and return the finished run as the API shows it."""

    def run(client, ingestion_id: str) -> dict:
        response = client.post(f"/api/v1/ingestions/{ingestion_id}/run")
        assert response.status_code == 202, response.json()
        drain_queue()
        return client.get(f"/api/v1/runs/{response.json()['run_id']}").json()

    return run


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 (and IAM) API, moto's threaded server, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
