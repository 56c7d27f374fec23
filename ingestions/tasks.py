"""Background tasks executed by the worker (django-tasks, database backend)."""

from django_tasks import task


@task()
def execute_run(run_id: str) -> str:
    """Execute (or resume) one run; returns its final status."""
    from .runs import run_execute

    run = run_execute(run_id=run_id)
    return run.status if run is not None else "SKIPPED"
