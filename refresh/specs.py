"""One spec per refresh operation kind and per step: the vocabulary every layer uses.

Planning, services, presenters, the REST API and the console read their steps, permission,
run trigger, endpoint, words and undo from here, so an operation is described once.
"""

from dataclasses import dataclass, replace

from ingestions.models import RunTrigger

from .models import OperationKind, StepName


@dataclass(frozen=True)
class StepSpec:
    name: str
    title: str  # "Drop the table": what the step does, for a preview or a step list
    staged_title: str  # the same in zero-downtime mode, where it takes effect at publish
    done: str  # "table dropped": the state once it succeeded (a recovery's "state")
    not_done: str  # "table not dropped"
    failing: str  # "dropping the table": what failed


@dataclass(frozen=True)
class OperationSpec:
    kind: str
    label: str  # "Full refresh"
    permission: str  # the Django permission its execution (and resume, decision, undo) needs
    steps: tuple[str, ...]  # in order; the PRD's names
    run_trigger: str | None  # the trigger of the run it queues; None: it queues no run
    method: str  # its REST call: METHOD /api/v1/ingestions/{id}/<path>
    path: str
    slug: str  # its console URL segment
    summary: str  # one line, for the console's actions panel
    success_message: str  # the PRD's message when every step succeeded
    # Zero-downtime: its run builds a new version beside the live table and publishes it.
    can_publish_at_end: bool
    kept_for_undo: str  # "the dropped table is set aside...": what undo brings back

    @property
    def changes_table(self) -> bool:
        return StepName.TABLE_DROPPED in self.steps

    @property
    def clears_history(self) -> bool:
        return StepName.PROCESSED_FILES_CLEARED in self.steps

    def endpoint(self, ingestion_id: str) -> str:
        return f"{self.method} /api/v1/ingestions/{ingestion_id}/{self.path}"


STEPS = {
    step.name: step
    for step in (
        StepSpec(
            StepName.TABLE_DROPPED,
            title="Drop the table",
            staged_title="Replace the table when the new version is published",
            done="table dropped",
            not_done="table not dropped",
            failing="dropping the table",
        ),
        StepSpec(
            StepName.PROCESSED_FILES_CLEARED,
            title="Clear the processed-file history",
            staged_title="Replace the processed-file history at publish",
            done="file history cleared",
            not_done="file history kept",
            failing="clearing the file history",
        ),
        StepSpec(
            StepName.RUN_TRIGGERED,
            title="Trigger a run",
            staged_title="Trigger the run that builds the new version",
            done="run triggered",
            not_done="no run triggered",
            failing="triggering the run",
        ),
    )
}

SPECS = {
    spec.kind: spec
    for spec in (
        OperationSpec(
            kind=OperationKind.FULL_REFRESH,
            label="Full refresh",
            permission="ingestions.full_refresh_ingestion",
            steps=(
                StepName.TABLE_DROPPED,
                StepName.PROCESSED_FILES_CLEARED,
                StepName.RUN_TRIGGERED,
            ),
            run_trigger=RunTrigger.FULL_REFRESH,
            method="POST",
            path="full-refresh",
            slug="full-refresh",
            summary="Reload every source file into a new table, swapped in when the run ends.",
            success_message="Full refresh completed successfully",
            can_publish_at_end=True,
            kept_for_undo="the table as it was and its file history are kept",
        ),
        OperationSpec(
            kind=OperationKind.FRESH_START,
            label="Fresh start",
            permission="ingestions.fresh_start_ingestion",
            steps=(StepName.TABLE_DROPPED, StepName.RUN_TRIGGERED),
            run_trigger=RunTrigger.FRESH_START,
            method="POST",
            path="fresh-start",
            slug="fresh-start",
            summary="A new table of only the new files, swapped in when the run ends; "
            "history kept.",
            success_message="Fresh start completed successfully",
            can_publish_at_end=True,
            kept_for_undo="the table as it was and its file history are kept",
        ),
        OperationSpec(
            kind=OperationKind.DROP_TABLE,
            label="Drop table",
            permission="ingestions.drop_table_ingestion",
            steps=(StepName.TABLE_DROPPED,),
            run_trigger=None,
            method="DELETE",
            path="table",
            slug="drop-table",
            summary="Delete the table only. History and runs are untouched.",
            success_message="Table dropped successfully",
            can_publish_at_end=False,
            kept_for_undo="the dropped table is set aside, not purged",
        ),
        OperationSpec(
            kind=OperationKind.CLEAR_PROCESSED_FILES,
            label="Clear history",
            permission="ingestions.clear_history_ingestion",
            steps=(StepName.PROCESSED_FILES_CLEARED,),
            run_trigger=None,
            method="DELETE",
            path="processed-files",
            slug="clear-history",
            summary="Forget the processed files. The next run loads them all again.",
            success_message="Processed file history cleared",
            can_publish_at_end=False,
            kept_for_undo="the cleared history is archived, not deleted",
        ),
    )
}
SPEC_BY_SLUG = {spec.slug: spec for spec in SPECS.values()}


def spec_of(kind: str) -> OperationSpec:
    """The spec of `kind`; ValueError for an unknown kind."""
    return SPECS[OperationKind(kind)]


# A full refresh with a scope (`ingestions.scope`), as the console offers it: the same kind,
# permission and steps, its own words and console URL. Not in SPEC_BY_SLUG: the generic
# operation view would run it without a scope.
SELECTIVE_REFRESH = replace(
    SPECS[OperationKind.FULL_REFRESH],
    label="Selective refresh",
    slug="selective-refresh",
    summary="Reload only some files (a path prefix, a time range or files you choose) and "
    "replace their rows; every other row stays.",
)
