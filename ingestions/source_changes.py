"""What a plain run does with the files it finds changed or gone (issue 24).

A listed file in the history with another size, modification time or ETag is **changed**: the
ingestion's `changed_files` says whether the run reloads it (its rows replaced in one
commit), warns (`file.changed`) or ignores it. A history file the listing no longer finds
is **gone**: counted and named on the run, its rows removed when `gone_files` says so.
"""

import logging
import math

from django.db import transaction

from . import hooks
from .engines import Engine
from .models import ChangeAction, ChangedFiles, GoneFiles, Ingestion, ProcessedFile, Run
from .runs import SNAPSHOT_INGESTION_KEY, SNAPSHOT_RUN_KEY
from .sources import SourceFile
from .sources.discovery import EPOCH, ONE_MICROSECOND

logger = logging.getLogger("ingestions.runs")  # one logger for a run's whole life

# Changed (and gone) files a run lists by name (all are counted).
MAX_CHANGED_LISTED = 1000


def changed_files_classify(
    *,
    run: Run,
    ingestion: Ingestion,
    listing: list[SourceFile],
    signatures: dict[str, tuple],
    set_aside: set[str],
) -> list[SourceFile]:
    """Files in the history whose size, modification time or ETag changed since they loaded:
    recorded on the run with what the ingestion's policy did with each; returns those
    to reload (policy `reload`). `signatures` is the history as
    `processed_file_signatures` reads it: one dict lookup per listed file, no I/O."""
    changed = []
    get = signatures.get
    for source in listing:
        recorded = get(source.path)
        if recorded is None:
            continue  # new
        # The common case inline, no call: the same size, the same listed time to the
        # nanosecond, the same ETag or none to judge. Anything else (an entry written
        # before `modified_ns` was kept included) goes through `file_changed`.
        if (
            recorded[4] == source.modified_ns
            and recorded[0] == source.size_bytes
            and recorded[4] is not None
            and (not recorded[2] or not source.etag or recorded[2] == source.etag)
        ):
            continue
        if file_changed(recorded, source) and source.path not in set_aside:
            changed.append(source)
    policy = ingestion.changed_files
    if policy != ChangedFiles.RELOAD:
        # Reported once per change: a file warned about (or ignored) stays as loaded, and
        # flagging it on every later run would bury the next real change.
        changed = [
            source for source in changed if signatures[source.path][3] != change_mark(source)
        ]
    if not changed:
        return []
    action = {
        ChangedFiles.RELOAD: ChangeAction.RELOADED,
        ChangedFiles.WARN: ChangeAction.WARNED,
        ChangedFiles.IGNORE: ChangeAction.IGNORED,
    }[policy]
    listed = [
        {
            "path": source.path,
            "action": action,
            "size_bytes": source.size_bytes,
            "was_size_bytes": signatures[source.path][0],
        }
        for source in changed[:MAX_CHANGED_LISTED]
    ]
    with transaction.atomic():
        Run.objects.filter(pk=run.pk).update(files_changed=len(changed), changed_files=listed)
        if policy == ChangedFiles.WARN:
            hooks.publish("file.changed", run=run, files=listed, count=len(changed))
        if policy != ChangedFiles.RELOAD:
            for source in changed:  # changed files only: a handful, not the listing
                ProcessedFile.objects.filter(ingestion=ingestion, path=source.path).update(
                    noticed_change=change_mark(source)
                )
    logger.info("run %s: %d changed files (%s)", run.public_id, len(changed), action)
    return changed if policy == ChangedFiles.RELOAD else []


def gone_files_apply(
    *,
    run: Run,
    ingestion: Ingestion,
    engine: Engine,
    table_name: str,
    gone: list[str],
    history_size: int,
) -> None:
    """History files the listing no longer found: counted and named on the run; with
    the ingestion's `gone_files` = remove, their rows go in one commit and their history
    entries with them. Never more than half the history at once: a source that looks
    emptied (an unmounted share, a wrong prefix) is reported, not obeyed."""
    removed = False
    note = ""
    if ingestion.gone_files == GoneFiles.REMOVE:
        if len(gone) * 2 > history_size:
            note = (
                f" {len(gone):,} of the {history_size:,} history files are gone from the "
                "source: more than half, so their rows were kept (remove them with a "
                "selective refresh if that is meant)."
            )
        else:
            engine.remove_source_files(
                table_name,
                gone,
                properties={
                    SNAPSHOT_RUN_KEY: run.public_id,
                    SNAPSHOT_INGESTION_KEY: ingestion.public_id,
                    "autoloader.removed-files": str(len(gone)),
                },
            )
            with transaction.atomic():
                for start in range(0, len(gone), 1000):
                    ProcessedFile.objects.filter(
                        ingestion=ingestion, path__in=gone[start : start + 1000]
                    ).delete()
            removed = True
    Run.objects.filter(pk=run.pk).update(
        files_gone=len(gone), gone_files=gone[:MAX_CHANGED_LISTED], gone_removed=removed
    )
    if note:
        logger.warning("run %s:%s", run.public_id, note)


def file_changed(recorded: tuple, source: SourceFile) -> bool:
    """Whether a listed file is not the one the history loaded: another size, another
    ETag or another modification time, each judged when both sides know it. An entry
    with no signature is not judged.

    `recorded` is (size, modified, etag[, noticed change, listed nanoseconds]): `modified`
    in integer microseconds as `processed_file_signatures` gives it (None when it gives the
    nanoseconds instead), or an aware datetime. Times are judged to the microsecond, as
    the history stored them. The ETag catches what size and time miss: a rewrite of the
    same size within the store's one-second resolution.
    """
    size, modified, etag = recorded[:3]
    if modified is None and len(recorded) > 4 and recorded[4] is not None:
        modified = stored_micros(recorded[4])
    if not size and modified is None and not etag:
        return False  # recorded without a signature (a table adopted by file name)
    if size != source.size_bytes:
        return True
    if etag and source.etag and etag != source.etag:
        return True
    if modified is None or source.modified_ns is None:
        return False
    if not isinstance(modified, int):
        modified = (modified - EPOCH) // ONE_MICROSECOND
    return modified != stored_micros(source.modified_ns)


def stored_micros(modified_ns: int) -> int:
    """A listed time as the history stored it, in integer microseconds: what
    `(SourceFile.modified_at - EPOCH) // 1 µs` gives, without building the datetime.
    `datetime.fromtimestamp` splits the float seconds and rounds the fraction's
    microseconds half to even; so does this, for the same figure to the microsecond.
    """
    fraction, whole = math.modf(modified_ns / 1e9)
    return int(whole) * 1_000_000 + round(fraction * 1e6)


def change_mark(source: SourceFile) -> str:
    """The version of a listed file, as `ProcessedFile.noticed_change` remembers it."""
    return f"{source.size_bytes}:{source.modified_ns}:{source.etag or ''}"
