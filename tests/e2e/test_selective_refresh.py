"""A selective refresh in a real browser: choose one file of the history by searching for it,
preview it (the file, its rows, the table's end state), confirm by the table's name; the real
worker reloads that file only, and every other file's rows stay exactly as they were."""

import os
import re
from pathlib import Path

import pyarrow.compute as pc
import pytest
from playwright.sync_api import expect

from ingestions.models import Role
from ingestions.runs import run_request
from refresh.models import OperationStatus, RefreshOperation

from ..helpers import drain_queue, open_table, write_csv_files
from .conftest import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# With AUTOLOADER_SCREENSHOTS=1 the preview joins the README's pictures.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHOSEN = "2025-06/part-0003.csv"


def rows_by_file(ingestion) -> dict[str, list]:
    table = open_table(ingestion.table_identifier).scan().to_arrow()
    return {
        path: sorted(
            zip(
                *(
                    table.filter(pc.equal(table["_source_file"], path))[column].to_pylist()
                    for column in ("id", "name", "_ingested_at")
                ),
                strict=True,
            )
        )
        for path in pc.unique(table["_source_file"]).to_pylist()
    }


def test_reload_one_file_chosen_from_the_history(
    page, csv_ingestion, source_dir, user_of, request, tmp_path
):
    write_csv_files(source_dir / "2025-05", files=2, rows=10)
    write_csv_files(source_dir / "2025-06", files=2, rows=10, start=2)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    # The chosen file was corrected upstream since: 15 rows now.
    write_csv_files(source_dir / "2025-06", files=1, rows=15, start=3)
    before = rows_by_file(csv_ingestion)
    assert sorted(before) == [
        "2025-05/part-0000.csv",
        "2025-05/part-0001.csv",
        "2025-06/part-0002.csv",
        CHOSEN,
    ]

    log_in(page, user_of(Role.ADMIN))
    page.goto(f"/ingestions/{csv_ingestion.public_id}/")
    page.get_by_role("link", name="Selective refresh", exact=True).click()
    expect(page.get_by_role("heading", name="Selective refresh of raw.sales")).to_be_visible()
    files = page.locator("#selective-files")
    expect(files).to_contain_text("The history holds 4 files")
    page.get_by_label("Search the history").fill("0003")
    expect(files).to_contain_text("1 file of the history match")
    expect(files.locator('input[name="files"]')).to_have_count(1)
    files.get_by_label(re.compile(re.escape(CHOSEN))).check()
    expect(page.get_by_label("Files chosen from the history")).to_be_checked()
    page.get_by_role("button", name="Preview the selective refresh").click()

    expect(page.get_by_text("Preview · nothing has been executed")).to_be_visible()
    scope = page.locator("[data-scope]")
    expect(scope.locator("tr[data-path]")).to_have_count(1)
    expect(scope.locator(f'tr[data-path="{CHOSEN}"]')).to_contain_text("10")
    expect(scope.locator('[data-scope-figure="rows_replaced"]')).to_have_text("10")
    expect(page.locator("[data-end-state]")).to_contain_text(
        "keeps the 30 rows of the files out of the scope"
    )
    folder = SCREENSHOTS if os.environ.get("AUTOLOADER_SCREENSHOTS") else tmp_path
    page.locator(".panel-preview").screenshot(
        path=str(folder / "selective-preview.png"), animations="disabled"
    )

    page.get_by_role("button", name="Continue…").click()
    dialog = page.get_by_role("dialog", name="Confirm selective refresh")
    submit = dialog.locator("[data-confirm-button]")
    expect(submit).to_be_disabled()
    dialog.get_by_label("Type the table name").fill("raw.sales")
    submit.click()

    result = page.locator("#operation-result")
    expect(result).to_contain_text("Selective refresh · 1 file")
    expect(
        page.get_by_role("heading", name=re.compile(r"^Selective refresh · 1 file accepted"))
    ).to_be_visible()
    operation = RefreshOperation.objects.get()
    assert operation.request["scope"] == {"files": [CHOSEN]}

    request.getfixturevalue("worker")  # the real worker loads and publishes it
    expect(page.locator("[data-operation-status]")).to_have_attribute(
        "data-operation-status", "published", timeout=120_000
    )
    operation.refresh_from_db()
    assert operation.status == OperationStatus.PUBLISHED
    after = rows_by_file(csv_ingestion)
    for path, rows in before.items():
        if path == CHOSEN:
            assert len(after[path]) == 15  # its new content, once
        else:
            assert after[path] == rows  # the very same rows, same load time
    expect(page.locator("#operation-list")).to_contain_text("Selective refresh · 1 file")
