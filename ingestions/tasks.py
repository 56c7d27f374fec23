"""Background tasks executed by the worker (django-tasks, database backend)."""

from django_tasks import task


@task()
def execute_run(run_id: str) -> str:
    """Execute (or resume) one run; returns its final status."""
    from .run_executor import run_execute

    run = run_execute(run_id=run_id)
    if run is not None and run.stage_name:
        # A refresh operation's new version: its outcome is recorded here, by the worker, and
        # not by whoever reads the operation next (reads write nothing). A batch refresh's
        # member moves its batch on: the last of them to load publishes them all.
        from .hooks import run_ended

        run_ended(run)
    return run.status if run is not None else "SKIPPED"


@task()
def execute_verify_job(job_id: str) -> str:
    """Run one verification of a table against its source (`ingestions.verify_jobs`)."""
    from .verify_jobs import verify_job_execute

    job = verify_job_execute(job_id=job_id)
    return job.status if job is not None else "SKIPPED"
