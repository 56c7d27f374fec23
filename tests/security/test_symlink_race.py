"""A tenant swaps a file in its own folder for a link to another tenant's file, over and over.

The attack of issue 21: `race/a.csv` flips between a regular file and a symlink to globex's
file (`os.symlink` + `os.replace`, as fast as a thread can) while acme asks for previews and
runs. A check by path followed by an open by path loses this race within a few requests; a
read that checks what it opened never does. Asserted on what came back and on what the table
holds, never on timing.
"""

import os
import threading

import pytest
from pyiceberg.exceptions import NoSuchTableError

from ingestions.models import Role
from ingestions.services import ingestion_create

from ..factories import grant_location
from ..helpers import open_table

SECRET = "TOPSECRET"
CHECK_SOURCE_REQUESTS = 300
RUNS = 20

pytestmark = pytest.mark.django_db(transaction=True)


class Swapper:
    """Flips `path` between a regular file of acme's and a link to `target`, in a thread."""

    def __init__(self, path, target):
        self.path, self.target = path, target
        self.stop = threading.Event()
        self.flips = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        # Hidden names (a leading dot), which no listing takes.
        link = self.path.with_name(f".{self.path.name}.link")
        regular = self.path.with_name(f".{self.path.name}.regular")
        while not self.stop.is_set():
            with open(regular, "w") as handle:
                handle.write("id,name,amount\n1,mine,1.5\n")
            os.replace(regular, self.path)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(self.target, link)
            os.replace(link, self.path)
            self.flips += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def race(tmp_path, tenant, other_tenant, settings):
    # Previews are rate-limited per user and tenant; this test is about the race, not that.
    settings.AUTOLOADER_PREVIEW_RATE_LIMITS = {}
    settings.REFRESH_RATE_LIMITS = {}
    settings.REFRESH_RATE_CEILINGS = {}
    acme = tmp_path / "acme"
    (acme / "race").mkdir(parents=True)
    (acme / "race" / "a.csv").write_text("id,name,amount\n1,mine,1.5\n")
    globex = tmp_path / "globex"
    globex.mkdir()
    secret = globex / "secret.csv"
    secret.write_text(f"id,name,amount\n666,{SECRET},9.9\n")
    grant_location(tenant, str(acme))
    grant_location(other_tenant, str(globex))
    return {"folder": acme / "race", "file": acme / "race" / "a.csv", "secret": secret}


def test_check_source_never_returns_a_file_swapped_in_from_another_tenant(race, member):
    client = member(Role.ADMIN)
    body = {"uri": str(race["folder"]), "format": "csv"}
    before = race["secret"].read_bytes()
    samples = 0
    with Swapper(race["file"], race["secret"]) as swapper:
        for _ in range(CHECK_SOURCE_REQUESTS):
            response = client.post("/api/v1/ingestions/check-source", body, format="json")
            assert response.status_code == 200, response.json()
            assert SECRET not in response.content.decode()
            samples += response.json()["sample"] is not None
    assert swapper.flips > 0
    assert samples > 0  # the race was run against real reads, not only refusals
    assert race["secret"].read_bytes() == before


def test_runs_never_load_a_file_swapped_in_from_another_tenant(
    race, tenant, member, run_through_api
):
    client = member(Role.ADMIN)
    ingestion = ingestion_create(
        tenant=tenant,
        actor=client.user,
        name="Race",
        source_uri=str(race["folder"]),
        source_format="csv",
        destination_table="raw.race",
    )
    before = race["secret"].read_bytes()
    runs = []
    with Swapper(race["file"], race["secret"]) as swapper:
        for _ in range(RUNS):
            client.delete(f"/api/v1/ingestions/{ingestion.public_id}/processed-files?confirm=true")
            runs.append(run_through_api(client, ingestion.public_id))
    assert swapper.flips > 0
    # Each run loaded acme's own file, refused the link, or found the entry mid-swap and
    # skipped it; none read globex's row, not even into an error message.
    assert all(SECRET not in str(run) for run in runs)
    try:
        table = open_table(ingestion.table_identifier).scan().to_arrow()
    except NoSuchTableError:  # no run happened to meet the regular file: nothing loaded
        assert sum(run["rows_written"] for run in runs) == 0
    else:
        assert set(table["_source_file"].to_pylist()) <= {"a.csv"}
        assert SECRET not in table["name"].to_pylist()
        # Each clear + run reloads a.csv in place of its earlier rows (issue 24): once.
        assert table.num_rows == min(1, sum(run["rows_written"] for run in runs))
    assert race["secret"].read_bytes() == before
