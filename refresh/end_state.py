"""What the table holds once an operation is done: the end state every preview states.

Computed once, from the plan, so the API's dry-run (`end_state`), the batch preview and the
console say the same thing (issue 25): "4,800 rows will be replaced" is not enough when the
table will then hold nothing at all.
"""

from typing import TYPE_CHECKING

from ingestions.formats import counted

from .models import OperationKind, RefreshMode

if TYPE_CHECKING:  # planning imports this module
    from .planning import Plan


def plan_end_state(plan: "Plan") -> dict:
    """The table after the operation (after its run, for those that trigger one).

    Returns:
        rows: the rows it will hold, when that is known now; None when they are the rows of
            files not loaded yet (their count is known once they are).
        rows_kept: rows it holds now that are still there after.
        files: source files whose rows it will hold.
        history_files: entries of the processed-file history after.
        table_exists: whether the table exists after.
        empty: it will hold no row (or not exist) until new files arrive or a run loads.
        sentence: all of it in words, for people.
    """
    table, history = plan.table, plan.history
    name = table["table_name"]
    rows_now = (table["row_count"] or 0) if table["exists"] else 0
    files = plan.impact.files_to_process
    if plan.scope is not None:
        return _selective(plan, name=name, rows_now=rows_now)
    if plan.kind == OperationKind.DROP_TABLE:
        return _state(
            rows=0,
            rows_kept=0,
            files=0,
            history_files=history["count"],
            table_exists=False,
            sentence=f"After it, {name} does not exist (0 rows) until the next run creates it "
            f"again, and that run loads only files not in the history: the "
            f"{counted(history['count'], 'file')} of the history stay marked as processed "
            "and are not loaded again",
        )
    if plan.kind == OperationKind.CLEAR_PROCESSED_FILES:
        if not table["exists"]:
            words = f"{name} does not exist"
        else:
            words = f"{name} still holds its {counted(rows_now, 'row')}"
        return _state(
            rows=rows_now,
            rows_kept=rows_now,
            files=history["count"],
            history_files=0,
            table_exists=table["exists"],
            sentence=f"After it, {words} and the history is empty: the next run loads every "
            "source file again, each file replacing its own rows (no row is there twice)",
        )
    # A full refresh or a fresh start: a new table of the files its run loads.
    new_only = plan.kind == OperationKind.FRESH_START
    replaced = (
        f"its {counted(rows_now, 'current row')} {'is' if rows_now == 1 else 'are'} replaced"
        if rows_now
        else ""
    )
    if not files:
        why = "there is no new file" if new_only else "the source has no file to load"
        return _state(
            rows=0,
            rows_kept=0,
            files=0,
            history_files=history["count"] if new_only else 0,
            table_exists=True,
            sentence=f"After it, {name} will be EMPTY: {why}, so it holds 0 rows until new "
            f"files arrive and a run loads them" + (f"; {replaced} by nothing" if replaced else ""),
        )
    which = f"the {counted(files, 'new file' if new_only else 'source file')}"
    sentence = f"After it, {name} holds only the rows of {which}"
    if rows_now:
        sentence += f", none of its {counted(rows_now, 'current row')}"
    sentence += (
        f" (how many rows {'it holds' if files == 1 else 'they hold'} is known once "
        f"{'it is' if files == 1 else 'they are'} loaded)"
    )
    if plan.mode == RefreshMode.DROP_FIRST:
        sentence += "; it is empty from the start until the run has loaded them"
    return _state(
        rows=None,
        rows_kept=0,
        files=files,
        history_files=history["count"] + files if new_only else files,
        table_exists=True,
        sentence=sentence,
    )


def _selective(plan: "Plan", *, name: str, rows_now: int) -> dict:
    scope = plan.scope
    replaced, reloaded = scope["rows_replaced"], scope["files_to_reload"]
    kept = max(0, rows_now - replaced)
    history_after = plan.history["count"] - scope["history_files_in_scope"] + reloaded
    sentence = (
        f"After it, {name} keeps the {counted(kept, 'row')} of the files out of the scope, "
        "untouched"
    )
    if reloaded:
        sentence += (
            f", and holds the rows the {counted(reloaded, 'file')} in scope "
            f"{'has' if reloaded == 1 else 'have'} now instead "
            f"of their {counted(replaced, 'current row')}"
        )
    if gone := scope["files_gone_from_source"]:
        sentence += (
            f"; the rows of the {counted(gone, 'file')} in scope that "
            f"{'is' if gone == 1 else 'are'} gone from the source are removed"
        )
    return _state(
        rows=None if reloaded else kept,
        rows_kept=kept,
        files=history_after,
        history_files=history_after,
        table_exists=True,
        sentence=sentence,
    )


def _state(*, rows, rows_kept, files, history_files, table_exists, sentence) -> dict:
    return {
        "rows": rows,
        "rows_kept": rows_kept,
        "files": files,
        "history_files": history_files,
        "table_exists": table_exists,
        "empty": rows == 0,
        "sentence": sentence,
    }
