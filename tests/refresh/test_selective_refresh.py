"""Selective full refresh: only the rows of the files in a scope (by `_source_file`) and their
history entries are replaced, by a reload of those files, in one commit of the live table;
every other row and entry is untouched; the preview is exact; undo brings them back."""

import csv
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.test import Client

from ingestions.models import Ingestion, ProcessedFile, Role
from ingestions.runs import run_request
from ingestions.scope import Scope
from refresh.models import OperationStatus, RefreshOperation
from refresh.preview import refresh_preview
from refresh.sync import operation_sync
from refresh.undo import refresh_undo

from ..helpers import drain_queue, open_table

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/ingestions/sales/full-refresh"
MAY = ["2025-05/a.csv", "2025-05/b.csv"]
JUNE = ["2025-06/c.csv", "2025-06/d.csv"]
OLD = datetime(2025, 6, 1, tzinfo=UTC)


def write(root: Path, path: str, rows: int, *, tag: str = "v1", modified: datetime = OLD):
    file = root / path
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "amount"])
        for row in range(rows):
            writer.writerow([row, f"{tag}-{path}-{row}", row * 1.5])
    os.utime(file, (modified.timestamp(), modified.timestamp()))


def rows_by_file(ingestion) -> dict[str, int]:
    data = open_table(ingestion.table_identifier).scan(selected_fields=("_source_file",))
    counts = pc.value_counts(data.to_arrow()["_source_file"]).to_pylist()
    return {item["values"]: item["counts"] for item in counts}


def rows_of(ingestion, path: str) -> list[tuple]:
    """What a file's rows hold: names (which version of the file) and load times."""
    data = open_table(ingestion.table_identifier).scan(
        row_filter=f"_source_file == '{path}'", selected_fields=("name", "_ingested_at")
    )
    return sorted(zip(*data.to_arrow().to_pydict().values(), strict=True))


def history(ingestion) -> dict[str, tuple]:
    return {
        entry.path: (entry.rows, entry.run_id)
        for entry in ProcessedFile.objects.filter(ingestion=ingestion)
    }


@pytest.fixture
def loaded_by_month(csv_ingestion, source_dir):
    for path in MAY + JUNE:
        write(source_dir, path, 10)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    # June's files are corrected upstream: 15 rows each now, and a third file arrived.
    for path in JUNE:
        write(source_dir, path, 15, tag="v2", modified=OLD + timedelta(days=20))
    write(source_dir, "2025-06/e.csv", 5, tag="v2", modified=OLD + timedelta(days=20))
    return Ingestion.objects.get(pk=csv_ingestion.pk)


def test_preview_names_the_files_and_the_rows_replaced(loaded_by_month, member):
    admin = member(Role.ADMIN)
    body = {"dry_run": True, "scope": {"prefix": "2025-06/"}}

    preview = admin.post(URL, body, format="json").json()

    scope = preview["scope"]
    assert scope["scope"] == {"prefix": "2025-06/"}
    assert (scope["files_in_scope"], scope["files_to_reload"], scope["rows_replaced"]) == (3, 3, 20)
    assert [(f["path"], f["rows_replaced"], f["in_history"]) for f in scope["files"]] == [
        ("2025-06/c.csv", 10, True),
        ("2025-06/d.csv", 10, True),
        ("2025-06/e.csv", 0, False),
    ]
    assert preview["impact"]["files_to_process"] == 3
    table_step = preview["would_perform"][0]["details"]
    assert (table_step["rows_replaced"], table_step["rows_kept"]) == (20, 20)
    assert any("replace 20 rows" in warning for warning in preview["warnings"])
    assert not any("ALL" in warning for warning in preview["warnings"])


def test_a_one_file_scope_is_told_in_the_singular(loaded_by_month, member):
    body = {"dry_run": True, "scope": {"files": ["2025-06/c.csv"]}}

    preview = member(Role.ADMIN).post(URL, body, format="json").json()

    told = " ".join([*preview["warnings"], *preview["notes"], preview["end_state"]["sentence"]])
    assert "This will reprocess 1 file in scope (1 named file," in told
    assert "the rows the 1 file in scope has now" in told
    assert "1 files" not in told and "1 named files" not in told


def test_only_the_scoped_rows_and_history_are_replaced_in_one_commit_and_undo_restores_them(
    loaded_by_month, member
):
    ingestion = loaded_by_month
    may_rows = {path: rows_of(ingestion, path) for path in MAY}
    history_before = history(ingestion)
    table = open_table(ingestion.table_identifier)
    main_log_before = len(table.metadata.snapshot_log)
    admin = member(Role.ADMIN)

    response = admin.post(URL, {"confirm": True, "scope": {"prefix": "2025-06/"}}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["scope"] == {"prefix": "2025-06/"}
    drain_queue()
    operation = operation_sync(operation=RefreshOperation.objects.get())
    assert operation.status == OperationStatus.PUBLISHED

    assert rows_by_file(ingestion) == {
        "2025-05/a.csv": 10,
        "2025-05/b.csv": 10,
        "2025-06/c.csv": 15,
        "2025-06/d.csv": 15,
        "2025-06/e.csv": 5,
    }
    for path in MAY:  # the very same rows, loaded at the same time: untouched
        assert rows_of(ingestion, path) == may_rows[path]
    assert all(name.startswith("v2-") for name, _ in rows_of(ingestion, "2025-06/c.csv"))
    # Readers of the live table saw one change: main moved once, from the old to the new.
    table = open_table(ingestion.table_identifier)
    assert len(table.metadata.snapshot_log) == main_log_before + 1
    after = history(ingestion)
    for path in MAY:
        assert after[path] == history_before[path]
    run_pk = operation.run.pk
    assert {path: after[path] for path in [*JUNE, "2025-06/e.csv"]} == {
        "2025-06/c.csv": (15, run_pk),
        "2025-06/d.csv": (15, run_pk),
        "2025-06/e.csv": (5, run_pk),
    }

    refresh_undo(operation=operation, actor=admin.user, confirm=True)

    assert rows_by_file(ingestion) == dict.fromkeys(MAY + JUNE, 10)
    assert history(Ingestion.objects.get(pk=ingestion.pk)) == history_before
    # Exactly-once across the undo: the next run loads the files the history lacks again,
    # and reloads those whose content changed since the history (restored) loaded them.
    run_request(ingestion=Ingestion.objects.get(pk=ingestion.pk))
    drain_queue()
    assert rows_by_file(ingestion) == {
        **dict.fromkeys(MAY, 10),
        "2025-06/c.csv": 15,
        "2025-06/d.csv": 15,
        "2025-06/e.csv": 5,
    }


@pytest.mark.parametrize(
    ("scope", "replaced"),
    [
        ({"files": ["2025-05/b.csv", "2025-06/d.csv"]}, {"2025-05/b.csv", "2025-06/d.csv"}),
        (
            {"modified_after": (OLD + timedelta(days=10)).isoformat()},
            set(JUNE) | {"2025-06/e.csv"},
        ),
        ({"modified_before": (OLD + timedelta(days=10)).isoformat()}, set(MAY)),
    ],
)
def test_files_and_modified_ranges_scope_exactly_their_files(
    loaded_by_month, member, source_dir, scope, replaced
):
    ingestion = loaded_by_month
    write(source_dir, "2025-05/b.csv", 12, tag="v2", modified=OLD)
    before = rows_by_file(ingestion)
    admin = member(Role.ADMIN)

    response = admin.post(URL, {"confirm": True, "scope": scope}, format="json")
    assert response.status_code == 202, response.content
    drain_queue()

    after = rows_by_file(ingestion)
    on_disk = {"2025-05/a.csv": 10, "2025-05/b.csv": 12, "2025-06/c.csv": 15}
    on_disk |= {"2025-06/d.csv": 15, "2025-06/e.csv": 5}
    for path in set(before) | set(after):
        expected = on_disk[path] if path in replaced else before.get(path)
        assert after.get(path) == expected, path


def test_rows_of_a_file_gone_from_the_source_are_removed(loaded_by_month, member, source_dir):
    (source_dir / "2025-06" / "d.csv").unlink()
    admin = member(Role.ADMIN)
    preview = admin.post(
        URL, {"dry_run": True, "scope": {"prefix": "2025-06/"}}, format="json"
    ).json()
    assert preview["scope"]["files_gone_from_source"] == 1

    admin.post(URL, {"confirm": True, "scope": {"prefix": "2025-06/"}}, format="json")
    drain_queue()

    assert "2025-06/d.csv" not in rows_by_file(loaded_by_month)
    assert "2025-06/d.csv" not in history(loaded_by_month)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"scope": {"prefix": "../other/"}}, "VALIDATION_ERROR"),
        ({"scope": {"prefix": "/etc/"}}, "VALIDATION_ERROR"),
        ({"scope": {"files": ["a.csv", "../../etc/passwd"]}}, "VALIDATION_ERROR"),
        ({"scope": {"files": []}}, "VALIDATION_ERROR"),
        ({"scope": {"prefix": "2025-06/", "files": ["x.csv"]}}, "VALIDATION_ERROR"),
        ({"scope": {"modified_after": "yesterday"}}, "VALIDATION_ERROR"),
        ({"scope": {"modified_after": "2025-06-01T00:00:00"}}, "VALIDATION_ERROR"),
        ({"scope": {"path": "2025-06/"}}, "VALIDATION_ERROR"),
        ({"scope": "2025-06/"}, "VALIDATION_ERROR"),
        ({"scope": {"prefix": "2025-06/"}, "mode": "drop_first"}, "SCOPE_NOT_APPLICABLE"),
        ({"scope": {"files": ["2025-06/c.csv", "2025-06/typo.csv"]}}, "VALIDATION_ERROR"),
        ({"scope": {"prefix": "2024-"}}, "VALIDATION_ERROR"),
    ],
)
def test_a_bad_scope_is_refused_and_nothing_changes(loaded_by_month, member, body, code):
    before = rows_by_file(loaded_by_month)
    admin = member(Role.ADMIN)
    matches_nothing = "typo" in str(body) or "2024-" in str(body)
    for dry_run in (False,) if matches_nothing else (True, False):
        response = admin.post(URL, {**body, "dry_run": dry_run, "confirm": True}, format="json")
        assert response.json()["error_code"] == code, response.content
        assert response.status_code == (400 if code == "VALIDATION_ERROR" else 409)
    assert not RefreshOperation.objects.exists()
    assert rows_by_file(loaded_by_month) == before
    if matches_nothing:  # the dry-run says it, and executing is refused
        preview = admin.post(URL, {**body, "dry_run": True}, format="json").json()
        assert any("in the scope" in w or "neither" in w for w in preview["warnings"])


# Valid ISO-8601 with an offset, but outside years 1..9999 once in UTC (issue 21 §9).
OUT_OF_RANGE = [
    {"modified_after": "0001-01-01T00:00:00+14:00"},
    {"modified_before": "9999-12-31T23:59:59-14:00"},
    {"modified_after": "0001-01-01T00:00:00+14:00", "modified_before": "2025-06-01T00:00:00Z"},
]


@pytest.mark.parametrize("scope", OUT_OF_RANGE)
def test_a_scope_time_outside_what_can_be_stored_is_a_400_and_changes_nothing(
    loaded_by_month, member, scope
):
    before, history_before = rows_by_file(loaded_by_month), history(loaded_by_month)
    admin = member(Role.ADMIN)

    for body in ({"dry_run": True}, {"confirm": True}):
        response = admin.post(URL, {**body, "scope": scope}, format="json")
        assert response.status_code == 400, response.content
        error = response.json()
        assert error["error_code"] == "VALIDATION_ERROR"
        assert "outside the times that can be stored" in error["detail"]
        assert "0001-01-01T00:00:00Z" in error["detail"]

    with pytest.raises(ValidationError, match="outside the times that can be stored"):
        refresh_preview(
            ingestion=loaded_by_month, kind="full_refresh", actor=admin.user, scope=scope
        )
    assert not RefreshOperation.objects.exists()
    assert rows_by_file(loaded_by_month) == before
    assert history(loaded_by_month) == history_before


@pytest.mark.parametrize(
    ("scope", "in_scope"),
    [
        ({"modified_after": "0001-01-01T00:00:00Z"}, 5),  # the earliest time: every file
        ({"modified_before": "9999-12-31T23:59:59.999999Z"}, 5),  # the latest: every file
        ({"modified_after": "9999-12-31T23:59:59+09:59"}, 0),  # 9999-12-31 in UTC still
    ],
)
def test_the_earliest_and_latest_storable_scope_times_are_accepted(
    loaded_by_month, member, scope, in_scope
):
    admin = member(Role.ADMIN)

    response = admin.post(URL, {"dry_run": True, "scope": scope}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["scope"]["files_in_scope"] == in_scope


def test_scope_times_are_kept_in_utc():
    scope = Scope.parse({"modified_after": "2025-06-01T08:00:00+14:00"})

    assert scope.modified_after == datetime(2025, 5, 31, 18, 0, tzinfo=UTC)
    assert scope.modified_after.utcoffset() == timedelta(0)
    assert scope.describe() == "files modified after 2025-05-31 18:00 UTC"
    days = Scope.parse(
        {"modified_after": "2025-05-31T23:59:59.999999Z", "modified_before": "2025-06-02T00:00:00Z"}
    )
    assert days.describe() == (
        "files modified from 2025-06-01 00:00:00 UTC and before 2025-06-02 00:00 UTC"
    )


def test_a_scope_needs_a_table_with_rows_and_is_only_for_full_refresh(
    csv_ingestion, member, source_dir
):
    write(source_dir, "2025-06/c.csv", 3)
    admin = member(Role.ADMIN)
    response = admin.post(URL, {"confirm": True, "scope": {"prefix": "2025-06/"}}, format="json")
    assert (response.status_code, response.json()["error_code"]) == (409, "SCOPE_NOT_APPLICABLE")
    response = admin.post(
        "/api/v1/ingestions/sales/fresh-start",
        {"confirm": True, "scope": {"prefix": "2025-06/"}},
        format="json",
    )
    assert (response.status_code, response.json()["error_code"]) == (400, "VALIDATION_ERROR")
    assert not RefreshOperation.objects.exists()


def test_a_selective_refresh_is_called_what_it_was_everywhere_afterwards(loaded_by_month, member):
    """Issue 25: not "Full refresh" on the operation, the audit, the webhooks' payload and
    the console's operations list, but what it was: a selective refresh of N files."""
    admin = member(Role.ADMIN)
    response = admin.post(URL, {"confirm": True, "scope": {"prefix": "2025-06/"}}, format="json")
    assert response.status_code == 202, response.content
    drain_queue()
    operation = operation_sync(operation=RefreshOperation.objects.get())

    label = admin.get(f"/api/v1/refresh-operations/{operation.public_id}").json()["label"]
    assert label == f"Selective refresh · {operation.impact['files_to_process']} files"
    audited = LogEntry.objects.filter(additional_data__operation_id=operation.public_id).first()
    assert audited.additional_data["label"] == label
    browser = Client()
    browser.force_login(admin.user)
    page = browser.get(f"/ingestions/{loaded_by_month.public_id}/").content.decode()
    assert label in page
