"""First start: processes opening a new catalog together all succeed (one creates its tables).

Before the fix, the web and the worker starting together raced to create pyiceberg's
catalog tables and the loser failed ("table iceberg_namespace_properties already exists",
a 503 from /healthz).
"""

import multiprocessing

import pytest

from ingestions.engines.iceberg.catalog import open_catalog

PROCESSES = 4
ROUNDS = 8


def open_together(uri: str, warehouse: str, barrier, failures) -> None:
    barrier.wait()
    try:
        open_catalog("race", uri=uri, warehouse=warehouse).list_namespaces()
    except Exception as exc:
        failures.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_processes_opening_a_new_catalog_together_all_succeed(tmp_path):
    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    for round_number in range(ROUNDS):
        uri = f"sqlite:///{tmp_path / f'catalog-{round_number}.db'}"
        barrier = context.Barrier(PROCESSES)
        processes = [
            context.Process(
                target=open_together,
                args=(uri, (tmp_path / "warehouse").as_uri(), barrier, failures),
            )
            for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
    found = []
    while not failures.empty():
        found.append(failures.get())
    assert found == []
