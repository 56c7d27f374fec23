"""The table page shows the table's history as readers saw it: main's snapshots, and the
staging branches and restore points in their own section."""

import pytest

from ingestions.models import Role
from ingestions.selectors import table_overview
from refresh.models import OperationKind
from refresh.services import refresh_execute

from ..helpers import drain_queue

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_zero_downtime_refresh_shows_as_one_step_in_mains_history(loaded, console):
    admin = console(Role.ADMIN)
    result = refresh_execute(
        ingestion=loaded, kind=OperationKind.FULL_REFRESH, actor=admin.user, confirm=True
    )
    drain_queue()
    operation_id = result.public_id

    overview = table_overview(ingestion=loaded)

    totals = [row["total_records"] for row in overview["snapshots"]]
    assert totals[0] == "100" and "0" not in totals  # never the staging branch's emptied rows
    assert overview["snapshots"][0]["run_id"]  # the published version names its run
    assert overview["snapshots_hidden"] >= 1  # the staging branch's own commits
    assert [ref["kind"] for ref in overview["refs"]] == ["tag"]  # the version kept for undo
    page = admin.get(f"/ingestions/{loaded.public_id}/table/").content.decode()
    history = page.split('data-table="snapshots"', 1)[1].split("</table>", 1)[0]
    assert "delete" not in history
    refs = page.split('data-section="refs"', 1)[1].split("</section>", 1)[0]
    assert "restore point" in refs and overview["refs"][0]["name"] in refs
    # Each names the operation behind it, linked: the published version and the restore point.
    link = f'href="/operations/{operation_id}/" data-operation="{operation_id}"'
    assert link in history.split("<tbody>", 1)[1].split("</tr>", 1)[0] and link in refs
    assert "Full refresh</a>, run" in history
    assert '<td data-label="Operation">\N{EN DASH}</td>' not in history  # Iceberg's named


def test_a_version_no_operation_made_names_no_operation(loaded, console):
    page = console(Role.ADMIN).get(f"/ingestions/{loaded.public_id}/table/").content.decode()

    assert "data-operation=" not in page and "run <a href=" in page
    assert '<td data-label="Operation">append</td>' in page  # Iceberg's own operation


def test_a_plain_table_lists_every_snapshot_and_no_refs(loaded):
    overview = table_overview(ingestion=loaded)

    assert [row["total_records"] for row in overview["snapshots"]] == ["100"]
    assert overview["refs"] == [] and overview["snapshots_hidden"] == 0
