"""Background tasks executed by the worker (django-tasks, database backend)."""

from django_tasks import task


@task()
def execute_run(run_id: str) -> str:
    """Execute (or resume) one run; returns its final status."""
    from .runs import run_execute

    run = run_execute(run_id=run_id)
    if run is not None and run.publish_hold:
        # A batch refresh's member: the last of them to load publishes them all.
        from refresh.batches import batch_of_run_sync

        batch_of_run_sync(run)
    return run.status if run is not None else "SKIPPED"
