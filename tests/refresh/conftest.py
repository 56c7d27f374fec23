"""Fixtures of refresh tests: a loaded ingestion, faulting wrappers of the real engine and DB."""

import contextlib

import pytest
from django.db import OperationalError, connection

from ingestions.engines import load_engine
from ingestions.models import Ingestion, Role
from ingestions.runs import run_request

from ..conftest import write_csv_files
from ..factories import IngestionFactory
from ..ingestions.test_runs import drain_queue


@pytest.fixture
def loaded(csv_ingestion, source_dir):
    """The csv ingestion after one successful run of 4 files x 25 rows."""
    from ingestions.runs import run_request

    write_csv_files(source_dir, files=4, rows=25)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    return csv_ingestion


@pytest.fixture
def admin_user(member):
    return member(Role.ADMIN).user


class FaultingEngine:
    """The real engine, with chosen methods failing with a chosen error."""

    def __init__(self, failures: dict):
        self._engine = load_engine()
        self.failures = failures

    def __getattr__(self, name):
        if name in self.failures:

            def fail(*args, **kwargs):
                raise self.failures[name]

            return fail
        return getattr(self._engine, name)


@contextlib.contextmanager
def failing_sql(fragment: str):
    """Make every SQL statement containing `fragment` fail at the real database."""

    def wrapper(execute, sql, params, many, context):
        if fragment in sql:
            raise OperationalError(f"injected failure on: {fragment}")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


@pytest.fixture
def three(tenant, tmp_path):
    """For batch refresh: three loaded ingestions (4, 3 and 2 files of 10 rows), each with a
    new file since."""
    from ingestions.locations import location_grant

    ingestions = []
    for index, (name, files) in enumerate((("orders", 4), ("users", 3), ("items", 2))):
        folder = tmp_path / "landing" / name
        write_csv_files(folder, files=files, rows=10)
        if index == 0:
            location_grant(tenant=tenant, uri=str(tmp_path / "landing"))
        ingestion = IngestionFactory(
            tenant=tenant,
            public_id=name,
            source_uri=str(folder),
            source_format="csv",
            destination_table=f"raw.{name}",
        )
        run_request(ingestion=ingestion)
        drain_queue()
        write_csv_files(folder, files=1, rows=5, start=files)
        ingestions.append(Ingestion.objects.get(pk=ingestion.pk))
    return ingestions
