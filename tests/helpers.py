"""Helpers shared by test modules (import them from here, not from another test module)."""

from django_tasks_db.management.commands.db_worker import Worker


def drain_queue() -> None:
    """Run the real django-tasks database worker until the queue is empty."""
    Worker(
        queue_names=["default"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="test-worker",
        excluded_queue_names=[],
    ).run()
