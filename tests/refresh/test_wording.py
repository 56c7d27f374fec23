"""Previews speak of one file and one row in the singular: every dry-run's sentences
(warnings, notes, end state, quota) for a table of one file holding one row."""

import re

import pytest

from ingestions.models import Role
from ingestions.runs import run_request

from ..helpers import drain_queue, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1/ingestions/sales"
DRY_RUNS = [
    ("post", f"{API}/full-refresh", {"dry_run": True}),
    ("post", f"{API}/full-refresh", {"dry_run": True, "mode": "drop_first"}),
    ("post", f"{API}/fresh-start", {"dry_run": True}),
    ("delete", f"{API}/table?dry_run=true", None),
    ("delete", f"{API}/processed-files?dry_run=true", None),
]
# A count of one before a plural noun: "1 files", "1 rows", "1 processed files"...
ONE_BEFORE_PLURAL = re.compile(r"\b1 (?:[A-Za-z_-]+ )?(?:files|rows|operations|entries)\b")


@pytest.fixture
def one_file_one_row(csv_ingestion, source_dir):
    write_csv_files(source_dir, files=1, rows=1)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    return csv_ingestion


@pytest.mark.parametrize(("method", "url", "body"), DRY_RUNS)
def test_a_one_file_one_row_table_is_told_in_the_singular(
    one_file_one_row, member, settings, method, url, body
):
    settings.REFRESH_RATE_LIMITS = {key: "1/h" for key in settings.REFRESH_RATE_LIMITS}
    client = member(Role.ADMIN)

    preview = getattr(client, method)(url, body, format="json").json()

    told = [
        *preview["warnings"],
        *preview["notes"],
        preview["end_state"]["sentence"],
        preview["quota"]["description"],
        preview["estimate"]["basis"] or "",
    ]
    assert preview["impact"]["files_to_process"] in (0, 1)
    assert [line for line in told if ONE_BEFORE_PLURAL.search(line)] == []
    assert any(re.search(r"\b1 (?:processed |source |NEW )?(?:file|row)\b", line) for line in told)
