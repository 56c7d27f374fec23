"""POST /run racing a run that finishes: the answer is 202 or 409, never 500."""

import pytest
from django.db import connection

from ingestions.models import Run, RunStatus

from ..factories import RunFactory

pytestmark = pytest.mark.django_db


def finish_active_runs_before_the_lookup(ingestion):
    """Let the active run end exactly between the refused insert and the look-up of what was
    in the way: the instant that made ~1 % of a POST /run storm answer 500."""
    state = {"refused": False, "finished": False}

    def wrapper(execute, sql, params, many, context):
        if state["refused"] and not state["finished"] and "FROM" in sql and "ingestions_run" in sql:
            state["finished"] = True
            Run.objects.filter(ingestion=ingestion, status=RunStatus.QUEUED).update(
                status=RunStatus.SUCCESS
            )
        try:
            return execute(sql, params, many, context)
        except Exception:
            if sql.lstrip().upper().startswith("INSERT") and "ingestions_run" in sql:
                state["refused"] = True
            raise

    return wrapper, state


def test_a_run_that_finishes_during_the_request_is_not_a_500(csv_ingestion, admin_client):
    RunFactory(ingestion=csv_ingestion, status=RunStatus.QUEUED)
    wrapper, state = finish_active_runs_before_the_lookup(csv_ingestion)

    with connection.execute_wrapper(wrapper):
        response = admin_client.post(f"/api/v1/ingestions/{csv_ingestion.public_id}/run")

    assert state["finished"], "the interleaving under test did not happen"
    assert response.status_code in (202, 409), response.content
    assert response.status_code == 202  # nothing was active any more: the request succeeds
    assert Run.objects.filter(ingestion=csv_ingestion, status=RunStatus.QUEUED).count() == 1
