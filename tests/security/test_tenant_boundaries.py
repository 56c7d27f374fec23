"""Tenant boundaries, played as an attacker would through the real API (issue 9).

Each test is one attack: it asserts the refusal **and** that the victim is untouched — the
victim's rows read from outside with plain pyiceberg, its processed-file history, and its
audit entries. The victim is acme (`tenant`), whose ingestion "sales-data" has loaded
3 files x 10 rows into `raw.sales_data` (physically `acme__raw.sales_data`); the attacker is
globex (`other_tenant`) unless the attack is against the server itself.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
from auditlog.models import LogEntry
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from pyiceberg.exceptions import NoSuchTableError

from ingestions.engines import load_engine
from ingestions.errors import FileReadError
from ingestions.locations import location_grant, location_revoke, source_open
from ingestions.models import Ingestion, ProcessedFile, Role, RunStatus, StorageLocation
from ingestions.run_executor import run_execute
from ingestions.runs import run_request
from ingestions.secrets import new_secrets_key
from ingestions.sources import read_source_file
from refresh.models import RefreshOperation

from ..factories import IngestionFactory, grant_location
from ..helpers import open_table, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)

ROWS_PER_FILE = 10
VICTIM_FILES = 3
SECRET = "abc123secret"
# A dry-run must answer within seconds, never hold a web worker (issue 9, item 4).
DRY_RUN_SECONDS = 5.0


# --- the victim and the attacker ----------------------------------------------------------


class VictimState(NamedTuple):
    """What an attack must leave as it was."""

    rows_by_file: dict[str, int]
    history: list[tuple[str, int]]
    audit_entry_ids: frozenset[int]


def table_rows_by_file(identifier: str) -> dict[str, int]:
    """Rows per `_source_file`, read from outside the product with plain pyiceberg."""
    data = open_table(identifier).scan(selected_fields=("_source_file",)).to_arrow()
    counts: dict[str, int] = {}
    for path in data["_source_file"].to_pylist():
        counts[path] = counts.get(path, 0) + 1
    return counts


def table_row_count(identifier: str) -> int:
    return open_table(identifier).scan().to_arrow().num_rows


def state_of(ingestion: Ingestion) -> VictimState:
    return VictimState(
        rows_by_file=table_rows_by_file(ingestion.table_identifier),
        history=sorted(
            ProcessedFile.objects.filter(ingestion=ingestion).values_list("path", "rows")
        ),
        audit_entry_ids=frozenset(
            LogEntry.objects.filter(additional_data__tenant=ingestion.tenant.slug).values_list(
                "pk", flat=True
            )
        ),
    )


def assert_untouched(ingestion: Ingestion, before: VictimState, *, by_owner: bool = False) -> None:
    """Rows, history and audit as they were; an attack by the owner itself may add audit
    entries of its own (a dry-run), another tenant's never."""
    after = state_of(ingestion)
    assert after.rows_by_file == before.rows_by_file, "the victim's rows changed"
    assert after.history == before.history, "the victim's processed-file history changed"
    assert before.audit_entry_ids <= after.audit_entry_ids, "an audit entry of the victim went"
    if not by_owner:
        assert after.audit_entry_ids == before.audit_entry_ids, "written into the victim's audit"


def table_exists(identifier: str) -> bool:
    try:
        open_table(identifier)
    except NoSuchTableError:
        return False
    return True


@pytest.fixture
def victim(tenant, source_dir, drain_queue):
    """acme's ingestion "sales-data", loaded: 3 files x 10 rows in acme__raw.sales_data."""
    write_csv_files(source_dir, files=VICTIM_FILES, rows=ROWS_PER_FILE)
    ingestion = IngestionFactory(
        tenant=tenant,
        public_id="sales-data",
        name="Sales data",
        source_uri=str(source_dir),
        source_format="csv",
        destination_table="raw.sales_data",
    )
    run = run_request(ingestion=ingestion)
    drain_queue()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS, run.error
    assert ingestion.table_identifier == "acme__raw.sales_data"
    assert table_row_count(ingestion.table_identifier) == VICTIM_FILES * ROWS_PER_FILE
    return ingestion


@pytest.fixture
def acme_admin(member):
    return member(Role.ADMIN)


@pytest.fixture
def globex_admin(member, other_tenant):
    return member(Role.ADMIN, tenant_obj=other_tenant)


@pytest.fixture
def globex_dir(tmp_path, other_tenant):
    """globex's own location, with 2 files x 5 rows (ids apart from acme's)."""
    folder = tmp_path / "globex"
    write_csv_files(folder, files=2, rows=5, start=50)
    assert grant_location(other_tenant, str(folder)) is not None
    return folder


@pytest.fixture
def elsewhere(tmp_path):
    """A folder no tenant was granted, holding a CSV file."""
    folder = tmp_path / "elsewhere"
    write_csv_files(folder, files=1, rows=3, start=90)
    return folder


def ingestion_body(uri: str, *, table: str = "raw.sales_data", **extra) -> dict:
    source = {"uri": uri, "format": extra.pop("format", "csv")}
    if "pattern" in extra:
        source["pattern"] = extra.pop("pattern")
    return {
        "id": extra.pop("id", "steal"),
        "name": "Attack",
        "source": source,
        "destination": {"table": table},
        **extra,
    }


def assert_source_not_allowed(response, *, allowed: list[str]) -> None:
    assert response.status_code == 400, (response.status_code, response.json())
    body = response.json()
    assert body["error_code"] == "SOURCE_NOT_ALLOWED", body
    assert "administrator" in body["help"]
    # The caller is told its own locations, never another tenant's.
    assert body["allowed_locations"] == allowed


def location_prefix(folder: Path) -> str:
    return f"file://{os.path.realpath(folder)}/"


# --- 1. another tenant's table: create, run, drop --------------------------------------------


@pytest.fixture
def stolen(victim, globex_admin, globex_dir):
    """globex's ingestion "steal" on the victim's destination name, created through the API."""
    response = globex_admin.post(
        "/api/v1/ingestions", ingestion_body(str(globex_dir)), format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()


def test_the_same_destination_name_in_another_tenant_is_another_table(
    victim, globex_admin, globex_dir
):
    before = state_of(victim)

    response = globex_admin.post(
        "/api/v1/ingestions", ingestion_body(str(globex_dir)), format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["destination"] == {
        "table": "raw.sales_data",
        "identifier": "globex__raw.sales_data",
    }
    assert body["table"]["identifier"] == "globex__raw.sales_data"
    # Nothing of acme's table shows through: no row count, no identifier, no snapshot.
    assert body["table"]["exists"] is False
    assert body["table"]["row_count"] in (None, 0)
    assert "acme" not in json.dumps(body)
    assert Ingestion.objects.get(tenant__slug="globex").table_identifier == (
        "globex__raw.sales_data"
    )
    assert_untouched(victim, before)


def test_another_tenants_run_appends_nothing_to_the_victims_table(
    victim, stolen, globex_admin, run_through_api, settings
):
    before = state_of(victim)

    run = run_through_api(globex_admin, "steal")

    assert run["status"] == "SUCCESS", run
    assert run["rows_written"] == 10
    assert table_rows_by_file("globex__raw.sales_data") == {
        "part-0050.csv": 5,
        "part-0051.csv": 5,
    }
    # Each tenant's files under its own warehouse prefix.
    warehouse = settings.AUTOLOADER_WAREHOUSE.rstrip("/")
    assert open_table("globex__raw.sales_data").location().startswith(f"{warehouse}/globex/")
    assert open_table("acme__raw.sales_data").location().startswith(f"{warehouse}/acme/")
    assert_untouched(victim, before)


def test_another_tenant_dropping_its_table_drops_only_its_own(
    victim, stolen, globex_admin, run_through_api
):
    run_through_api(globex_admin, "steal")
    before = state_of(victim)

    # The drop of issue 9, item 1, then the delete with drop_table.
    dropped = globex_admin.delete(
        "/api/v1/ingestions/steal/table", {"confirm": True}, format="json"
    )
    refilled = run_through_api(globex_admin, "steal")
    deleted = globex_admin.delete("/api/v1/ingestions/steal?confirm=true&drop_table=true")

    assert dropped.status_code == 200, dropped.json()
    assert refilled["status"] == "SUCCESS", refilled
    assert deleted.status_code == 200, deleted.json()
    assert deleted.json()["table"]["identifier"] == "globex__raw.sales_data"
    assert deleted.json()["table"]["action"] == "dropped"
    with pytest.raises(NoSuchTableError):
        open_table("globex__raw.sales_data")
    assert_untouched(victim, before)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/v1/ingestions/sales-data", None),
        ("patch", "/api/v1/ingestions/sales-data", {"source": {"uri": "/tmp"}}),
        ("delete", "/api/v1/ingestions/sales-data?confirm=true&drop_table=true", None),
        ("post", "/api/v1/ingestions/sales-data/run", None),
        ("post", "/api/v1/ingestions/sales-data/full-refresh", {"confirm": True}),
        ("post", "/api/v1/ingestions/sales-data/fresh-start", {"confirm": True}),
        ("delete", "/api/v1/ingestions/sales-data/table", {"confirm": True}),
        ("delete", "/api/v1/ingestions/sales-data/processed-files", {"confirm": True}),
    ],
)
def test_another_tenant_cannot_reach_the_victims_ingestion_by_its_id(
    victim, globex_admin, drain_queue, method, path, body
):
    before = state_of(victim)

    response = getattr(globex_admin, method)(path, body, format="json")
    drain_queue()

    assert response.status_code == 404, response.json()
    assert response.json()["error_code"] == "INGESTION_NOT_FOUND"
    assert_untouched(victim, before)


def test_a_destination_spelling_the_victims_physical_name_stays_in_the_callers_namespace(
    victim, globex_admin, globex_dir, run_through_api
):
    before = state_of(victim)

    response = globex_admin.post(
        "/api/v1/ingestions",
        ingestion_body(str(globex_dir), table="acme__raw.sales_data"),
        format="json",
    )
    run = run_through_api(globex_admin, "steal")

    # The tenant prefix always comes first: "acme__" is just part of globex's namespace.
    assert response.status_code == 201, response.json()
    assert response.json()["destination"]["identifier"] == "globex__acme__raw.sales_data"
    assert run["status"] == "SUCCESS", run
    assert table_row_count("globex__acme__raw.sales_data") == 10
    assert_untouched(victim, before)


def test_no_ingestion_can_load_into_or_adopt_a_table_kept_for_undo(
    victim, acme_admin, source_dir, drain_queue
):
    before_rows = table_row_count(victim.table_identifier)
    drop = acme_admin.delete(f"/api/v1/ingestions/{victim.public_id}/table?confirm=true")
    kept = RefreshOperation.objects.get(public_id=drop.json()["operation_id"])
    set_aside = kept.restore_point["table"]["table"]  # "acme__raw.sales_data__autoloader_undo_…"
    logical = set_aside.removeprefix("acme__")

    for extra in ({}, {"existing_table": "adopt"}, {"existing_table": "replace"}):
        response = acme_admin.post(
            "/api/v1/ingestions",
            ingestion_body(str(source_dir), table=logical, id="grab", **extra),
            format="json",
        )
        assert response.status_code == 400, response.json()
        assert "reserved" in str(response.json())
    assert table_row_count(set_aside) == before_rows  # still there for the undo


# --- 2. sources outside the tenant's locations ----------------------------------------------


class Places(NamedTuple):
    """Where the attacker (globex) points its source, relative to the test's folders."""

    own: Path  # globex's location
    victim: Path  # acme's location
    elsewhere: Path  # granted to nobody
    sibling: Path  # "<own>_sibling": shares the location's prefix without the "/"
    link_out: Path  # "<own>/link" -> acme's location
    data_dir: Path
    warehouse_uri: str


@pytest.fixture
def places(victim, source_dir, globex_dir, elsewhere, settings):
    sibling = globex_dir.parent / f"{globex_dir.name}_sibling"
    write_csv_files(sibling, files=1, rows=2, start=95)
    link_out = globex_dir / "link"
    link_out.symlink_to(source_dir, target_is_directory=True)
    return Places(
        own=globex_dir,
        victim=source_dir,
        elsewhere=elsewhere,
        sibling=sibling,
        link_out=link_out,
        data_dir=Path(settings.DATA_DIR),
        warehouse_uri=settings.AUTOLOADER_WAREHOUSE,
    )


# (id, source URI built from the places, source format, pattern)
OUTSIDE_SOURCES = [
    ("absolute-etc", lambda p: "/etc", "csv", "passwd"),
    ("file-etc", lambda p: "file:///etc", "csv", "passwd"),
    ("file-localhost-etc", lambda p: "file://localhost/etc", "csv", "passwd"),
    ("upper-case-scheme", lambda p: "FILE:///etc", "csv", "passwd"),
    ("dot-dot-to-victim", lambda p: f"file://{p.own}/../{p.victim.name}", "csv", ""),
    ("double-slash-dot-dot", lambda p: f"file://{p.own}//..//{p.elsewhere.name}", "csv", ""),
    ("encoded-dot-dot", lambda p: f"file://{p.own}/%2e%2e/{p.victim.name}", "csv", ""),
    ("encoded-slashes", lambda p: f"file://{p.own}/..%2F..%2F..%2Fetc", "csv", "passwd"),
    ("bare-dot-dot", lambda p: f"{p.own}/../{p.victim.name}", "csv", ""),
    ("relative-path", lambda p: "../source", "csv", ""),
    ("prefix-sibling", lambda p: str(p.sibling), "csv", ""),
    ("symlink-to-victim", lambda p: str(p.link_out), "csv", ""),
    ("symlink-child", lambda p: f"file://{p.link_out}/", "csv", ""),
    ("data-dir", lambda p: str(p.data_dir), "csv", "secret_key"),
    ("data-dir-uri", lambda p: p.data_dir.as_uri(), "csv", ""),
    ("warehouse", lambda p: p.warehouse_uri, "parquet", ""),
    ("victim-location", lambda p: str(p.victim), "csv", ""),
    ("victim-location-uri", lambda p: f"file://{p.victim}/", "csv", ""),
    ("gs", lambda p: "gs://bucket/x", "csv", ""),
    ("hdfs", lambda p: "hdfs://host/x", "csv", ""),
    ("abfs", lambda p: "abfs://c@a.dfs.core.windows.net/x", "csv", ""),
    ("http-metadata", lambda p: "http://169.254.169.254/latest/meta-data", "csv", ""),
    (
        "s3-endpoint-override",
        lambda p: "s3://bucket/x?endpoint_override=169.254.169.254",
        "csv",
        "",
    ),
    ("s3-user-and-port", lambda p: "s3://key:secret@bucket:9000/x", "csv", ""),
    ("s3-ungranted", lambda p: "s3a://bucket/x", "csv", ""),
    ("file-query", lambda p: "file:///x?y", "csv", ""),
    ("own-location-with-query", lambda p: f"file://{p.own}?endpoint_override=x", "csv", ""),
    ("own-location-with-fragment", lambda p: f"file://{p.own}#x", "csv", ""),
    ("file-with-host", lambda p: f"file://169.254.169.254{p.own}", "csv", ""),
]


@pytest.mark.parametrize(
    ("build_uri", "file_format", "pattern"),
    [case[1:] for case in OUTSIDE_SOURCES],
    ids=[case[0] for case in OUTSIDE_SOURCES],
)
def test_creating_an_ingestion_on_a_source_outside_the_tenants_locations_is_refused(
    victim, globex_admin, places, build_uri, file_format, pattern
):
    before = state_of(victim)
    ingestions_before = Ingestion.objects.count()

    response = globex_admin.post(
        "/api/v1/ingestions",
        ingestion_body(build_uri(places), format=file_format, pattern=pattern),
        format="json",
    )

    assert_source_not_allowed(response, allowed=[location_prefix(places.own)])
    assert Ingestion.objects.count() == ingestions_before
    assert_untouched(victim, before)


@pytest.mark.parametrize(
    ("build_uri", "file_format", "pattern"),
    [case[1:] for case in OUTSIDE_SOURCES],
    ids=[case[0] for case in OUTSIDE_SOURCES],
)
def test_moving_an_ingestions_source_outside_the_tenants_locations_is_refused(
    victim, globex_admin, places, build_uri, file_format, pattern
):
    created = globex_admin.post(
        "/api/v1/ingestions", ingestion_body(str(places.own), id="own"), format="json"
    )
    assert created.status_code == 201, created.json()
    mine = Ingestion.objects.get(public_id="own")
    audit_before = LogEntry.objects.count()
    before = state_of(victim)

    response = globex_admin.patch(
        "/api/v1/ingestions/own",
        {"source": {"uri": build_uri(places), "format": file_format, "pattern": pattern}},
        format="json",
    )

    assert_source_not_allowed(response, allowed=[location_prefix(places.own)])
    mine_after = Ingestion.objects.get(pk=mine.pk)
    assert (mine_after.source_uri, mine_after.source_format, mine_after.source_pattern) == (
        mine.source_uri,
        mine.source_format,
        mine.source_pattern,
    )
    assert LogEntry.objects.count() == audit_before
    assert_untouched(victim, before)


@pytest.mark.parametrize(
    "spelling",
    ["FILE://{own}", "file://{own}//", "file://{own}/./", "file://localhost{own}", "{own}/sub/.."],
)
def test_a_source_inside_the_location_is_accepted_however_it_is_spelled(
    globex_admin, globex_dir, spelling
):
    # The control of the refusals above: normalizing must not refuse the legitimate.
    response = globex_admin.post(
        "/api/v1/ingestions",
        ingestion_body(spelling.format(own=globex_dir), id="own"),
        format="json",
    )

    assert response.status_code == 201, response.json()
    stored = Ingestion.objects.get(public_id="own").source_uri
    assert stored.rstrip("/").endswith(str(globex_dir))
    assert ".." not in stored and "//" not in stored.removeprefix("file://")


# --- 3. a location revoked, or a source swapped for a link, after the check ------------------


def test_a_run_after_the_location_is_revoked_fails_and_loads_nothing(
    victim, source_dir, acme_admin, run_through_api
):
    write_csv_files(source_dir, files=1, rows=ROWS_PER_FILE, start=VICTIM_FILES)
    before = state_of(victim)

    call_command("grant_location", "--revoke", str(source_dir))
    dry_run = acme_admin.post(
        "/api/v1/ingestions/sales-data/full-refresh", {"dry_run": True}, format="json"
    )
    run = run_through_api(acme_admin, "sales-data")

    assert dry_run.status_code == 400, dry_run.json()
    assert dry_run.json()["error_code"] == "SOURCE_NOT_ALLOWED"
    assert dry_run.json()["allowed_locations"] == []
    assert run["status"] == "FAILED", run
    assert "outside your tenant's storage locations" in run["error"]
    assert (run["files_loaded"], run["rows_written"]) == (0, 0)
    after = state_of(victim)
    assert (after.rows_by_file, after.history) == (before.rows_by_file, before.history)
    revoked = LogEntry.objects.filter(additional_data__operation="location_revoked").get()
    assert revoked.additional_data["tenant"] == "acme"


class RevokingEngine:
    """The real engine; right after its first commit, platform staff revoke `location`."""

    def __init__(self, location: StorageLocation):
        self._engine = load_engine()
        self.location = location
        self.commits = 0

    def append(self, *args, **kwargs):
        snapshot_id = self._engine.append(*args, **kwargs)
        self.commits += 1
        if self.commits == 1:
            location_revoke(location=self.location)
        return snapshot_id

    def __getattr__(self, name):
        return getattr(self._engine, name)


def test_a_location_revoked_during_a_run_stops_its_reads(tenant, source_dir, settings):
    settings.AUTOLOADER_BATCH_MAX_FILES = 1  # one file per commit
    write_csv_files(source_dir, files=VICTIM_FILES, rows=ROWS_PER_FILE)
    ingestion = IngestionFactory(
        tenant=tenant,
        public_id="long-run",
        source_uri=str(source_dir),
        destination_table="raw.long_run",
    )
    location = StorageLocation.objects.get(tenant=tenant)

    run = run_execute(
        run_id=run_request(ingestion=ingestion).public_id, engine=RevokingEngine(location)
    )

    # The file committed before the revocation stays; no file is read after it.
    assert not StorageLocation.objects.filter(tenant=tenant).exists()
    assert run.status != RunStatus.SUCCESS, (run.status, run.files_loaded, run.error)
    assert table_rows_by_file("acme__raw.long_run") == {"part-0000.csv": ROWS_PER_FILE}


def test_a_source_folder_swapped_for_a_link_out_after_creation_reads_nothing(
    tenant, source_dir, globex_dir, acme_admin, run_through_api
):
    daily = source_dir / "daily"
    write_csv_files(daily, files=1, rows=4, start=7)
    created = acme_admin.post(
        "/api/v1/ingestions",
        ingestion_body(str(daily), id="daily", table="raw.daily"),
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert run_through_api(acme_admin, "daily")["status"] == "SUCCESS"
    loaded = table_rows_by_file("acme__raw.daily")

    # After the check at creation: the folder becomes a link to globex's location.
    for path in daily.iterdir():
        path.unlink()
    daily.rmdir()
    daily.symlink_to(globex_dir, target_is_directory=True)
    run = run_through_api(acme_admin, "daily")

    assert run["status"] == "FAILED", run
    assert "outside your tenant's storage locations" in run["error"]
    assert table_rows_by_file("acme__raw.daily") == loaded


# --- 4. symlinks inside a granted source -----------------------------------------------------


@pytest.fixture
def trapped(tenant, source_dir, globex_dir, elsewhere):
    """acme's ingestion "trapped" over <location>/landing: 2 real files x 10 rows, and every
    link an attacker would plant beside them."""
    landing = source_dir / "landing"
    write_csv_files(landing, files=2, rows=ROWS_PER_FILE)
    (landing / "loop").symlink_to(".", target_is_directory=True)
    (landing / "up").symlink_to("..", target_is_directory=True)
    (landing / "nested").mkdir()
    (landing / "nested" / "back").symlink_to("../..", target_is_directory=True)
    (landing / "passwd.csv").symlink_to("/etc/passwd")
    (landing / "theirs.csv").symlink_to(globex_dir / "part-0050.csv")
    (landing / "outside").symlink_to(elsewhere, target_is_directory=True)
    return IngestionFactory(
        tenant=tenant,
        public_id="trapped",
        source_uri=str(landing),
        source_format="csv",
        destination_table="raw.trapped",
    )


def test_a_dry_run_over_links_lists_each_real_file_once_and_nothing_outside(trapped, acme_admin):
    started = time.monotonic()
    response = acme_admin.post(
        "/api/v1/ingestions/trapped/full-refresh", {"dry_run": True}, format="json"
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.json()
    assert response.json()["impact"]["files_to_process"] == 2
    assert elapsed < DRY_RUN_SECONDS


def test_a_run_over_links_loads_each_real_file_once_and_nothing_outside(
    trapped, globex_dir, acme_admin, run_through_api
):
    theirs = (globex_dir / "part-0050.csv").read_bytes()

    run = run_through_api(acme_admin, "trapped")

    assert run["status"] == "SUCCESS", run
    assert (run["files_found"], run["rows_written"]) == (2, 2 * ROWS_PER_FILE)
    assert table_rows_by_file("acme__raw.trapped") == {
        "part-0000.csv": ROWS_PER_FILE,
        "part-0001.csv": ROWS_PER_FILE,
    }
    assert (globex_dir / "part-0050.csv").read_bytes() == theirs


@pytest.mark.parametrize(
    "path",
    ["passwd.csv", "theirs.csv", "outside/part-0090.csv", "../../elsewhere/part-0090.csv"],
)
def test_reading_a_file_that_resolves_outside_the_location_is_refused(tenant, trapped, path):
    # The read re-checks what the listing checked: a link planted after the listing (or a
    # path that was never listed) reads nothing.
    source = source_open(tenant=tenant, uri=trapped.source_uri)

    with pytest.raises(FileReadError, match="resolves outside the storage location"):
        read_source_file(source=source, path=path, file_format="csv")


def test_a_dangling_link_hides_no_file_of_its_folder(tenant, source_dir, acme_admin):
    # Links that resolve nowhere sit among the files, wherever the directory order puts them.
    landing = source_dir / "landing"
    write_csv_files(landing, files=40, rows=1)
    for index in range(10):
        (landing / f"dangling-{index}.csv").symlink_to(landing / f"gone-{index}.csv")
    IngestionFactory(
        tenant=tenant,
        public_id="dangling",
        source_uri=str(landing),
        source_format="csv",
        destination_table="raw.dangling",
    )

    response = acme_admin.post(
        "/api/v1/ingestions/dangling/full-refresh", {"dry_run": True}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["impact"]["files_to_process"] == 40


# --- 5. the listing is bounded ---------------------------------------------------------------


def test_a_dry_run_past_the_entry_bound_answers_at_once_with_a_listing_limit(
    victim, source_dir, acme_admin, settings, run_through_api
):
    settings.AUTOLOADER_LISTING_MAX_ENTRIES = 50
    write_csv_files(source_dir, files=200, rows=1, start=VICTIM_FILES)
    before = state_of(victim)

    started = time.monotonic()
    dry_run = acme_admin.post(
        "/api/v1/ingestions/sales-data/full-refresh", {"dry_run": True}, format="json"
    )
    elapsed = time.monotonic() - started
    run = run_through_api(acme_admin, "sales-data")

    assert dry_run.status_code == 400, dry_run.json()
    assert dry_run.json()["error_code"] == "SOURCE_LISTING_LIMIT"
    assert elapsed < DRY_RUN_SECONDS
    assert run["status"] == "FAILED", run
    assert "more than 50 files" in run["error"]
    assert run["rows_written"] == 0
    after = state_of(victim)
    assert (after.rows_by_file, after.history) == (before.rows_by_file, before.history)


def test_a_listing_past_the_time_bound_stops_with_a_listing_limit(
    victim, source_dir, acme_admin, settings
):
    settings.AUTOLOADER_LISTING_MAX_SECONDS = 0.0
    for index in range(600):  # past 512 entries, where the clock is read
        (source_dir / f"empty-{index:04d}.csv").touch()
    before = state_of(victim)

    dry_run = acme_admin.post(
        "/api/v1/ingestions/sales-data/full-refresh", {"dry_run": True}, format="json"
    )

    assert dry_run.status_code == 400, dry_run.json()
    assert dry_run.json()["error_code"] == "SOURCE_LISTING_LIMIT"
    assert_untouched(victim, before, by_owner=True)


# --- 6. errors never echo file content -------------------------------------------------------


def make_ingestion(tenant, folder: Path, files: dict[str, str], **fields) -> Ingestion:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return IngestionFactory(tenant=tenant, source_uri=str(folder), **fields)


def assert_nothing_echoed(run: dict, *secrets: str) -> None:
    shown = json.dumps(run)
    for secret in secrets:
        assert secret not in shown, f"{secret!r} was echoed: {run['failed_files']}"


def test_a_csv_parse_error_does_not_echo_the_offending_line(
    tenant, source_dir, acme_admin, run_through_api
):
    make_ingestion(
        tenant,
        source_dir / "tsv",
        {
            "a-good.tsv": "1\tx\n2\ty\n",
            "b-fewer.tsv": f"1\tx\nSECRET_KEY={SECRET}\n2\ty\n",
            "c-more.tsv": f"1\tx\nSECRET_KEY\t{SECRET}\textra\n",
        },
        public_id="tsv",
        source_format="csv",
        source_options={"delimiter": "\t", "header": False},
        destination_table="raw.tsv",
    )

    run = run_through_api(acme_admin, "tsv")

    assert run["status"] == "PARTIAL_SUCCESS", run
    errors = {failure["path"]: failure["error"] for failure in run["failed_files"]}
    assert set(errors) == {"b-fewer.tsv", "c-more.tsv"}
    assert "Expected 2 columns, got 1" in errors["b-fewer.tsv"]
    assert "Expected 2 columns, got 3" in errors["c-more.tsv"]
    assert_nothing_echoed(run, SECRET, "SECRET_KEY")


def test_a_json_parse_error_does_not_echo_the_offending_value(
    tenant, source_dir, acme_admin, run_through_api
):
    make_ingestion(
        tenant,
        source_dir / "json",
        {
            "a-good.json": '{"id": 1}\n',
            "b-bare.json": f'{{"id": 2}}\n{{"id": {SECRET}}}\n',
            "c-unterminated.json": f'{{"id": 3}}\n{{"id": "{SECRET}\n',
            "d-not-json.json": f"SECRET_KEY={SECRET}\n",
        },
        public_id="json",
        source_format="json",
        destination_table="raw.json",
    )

    run = run_through_api(acme_admin, "json")

    assert run["status"] == "PARTIAL_SUCCESS", run
    assert {failure["path"] for failure in run["failed_files"]} == {
        "b-bare.json",
        "c-unterminated.json",
        "d-not-json.json",
    }
    assert_nothing_echoed(run, SECRET, "SECRET_KEY")


def test_a_conversion_error_does_not_echo_the_value_that_failed(
    tenant, source_dir, acme_admin, run_through_api
):
    # 2**53 + 1 has no exact double: fitting it into the table's double column fails, and
    # the value must not be quoted (a secret can be a number: a card, an account).
    secret_number = "9007199254740993"
    make_ingestion(
        tenant,
        source_dir / "amounts",
        {"a-good.csv": "id,amount\n1,1.5\n", "b-huge.csv": f"id,amount\n2,{secret_number}\n"},
        public_id="amounts",
        source_format="csv",
        destination_table="raw.amounts",
    )

    run = run_through_api(acme_admin, "amounts")

    assert run["status"] == "PARTIAL_SUCCESS", run
    assert [failure["path"] for failure in run["failed_files"]] == ["b-huge.csv"]
    assert_nothing_echoed(run, secret_number)


def test_a_schema_error_does_not_echo_a_header_line(
    tenant, source_dir, acme_admin, run_through_api
):
    # Read with the default header: the first line of a secrets file becomes column names.
    make_ingestion(
        tenant,
        source_dir / "headers",
        {
            "a-good.tsv": "id\tname\n1\tx\n",
            "b-env.tsv": f"SECRET_KEY={SECRET}\nDEBUG=1\n",
            "c-duplicate.tsv": f"{SECRET}\t{SECRET}\n1\t2\n",
        },
        public_id="headers",
        source_format="csv",
        source_options={"delimiter": "\t"},
        destination_table="raw.headers",
    )

    run = run_through_api(acme_admin, "headers")

    assert run["status"] == "PARTIAL_SUCCESS", run
    assert {failure["path"] for failure in run["failed_files"]} == {"b-env.tsv", "c-duplicate.tsv"}
    assert_nothing_echoed(run, SECRET)


# --- 7. locations never overlap each other or the product's files ---------------------------


@pytest.fixture
def acme_landing(tmp_path, tenant):
    """acme's location at <tmp>/landing/acme (deeper than the product's test folders)."""
    folder = tmp_path / "landing" / "acme"
    folder.mkdir(parents=True)
    location_grant(tenant=tenant, uri=str(folder))
    location_grant(tenant=tenant, uri="s3://acme-landing/in/")
    return folder


def sqlite_database_or_skip(_: Path) -> str:
    database = django_settings.DATABASES["default"]
    if not database["ENGINE"].endswith("sqlite3"):
        pytest.skip("the state database is not a file on this backend")
    return str(database["NAME"])


def alias_of_acme(landing: Path) -> str:
    alias = landing.parent.parent / "alias"
    alias.symlink_to(landing, target_is_directory=True)
    return str(alias)


# (id, URI built from acme's landing folder, the reason the refusal gives)
OVERLAPPING_GRANTS = [
    ("inside-acme", lambda landing: str(landing / "sub"), "location"),
    ("containing-acme", lambda landing: str(landing.parent), "location"),
    ("same-as-acme", lambda landing: f"FILE://{landing}//", "location"),
    ("dot-dot-into-acme", lambda landing: f"{landing.parent}/x/../acme/in", "location"),
    ("link-to-acme", alias_of_acme, "location"),
    ("s3-containing-acme", lambda landing: "s3://acme-landing/", "location"),
    ("s3-inside-acme", lambda landing: "s3://acme-landing/in/sub/", "location"),
    ("s3a-same-as-acme", lambda landing: "s3a://acme-landing/in", "location"),
    ("data-dir", lambda landing: str(django_settings.DATA_DIR), "product"),
    ("inside-data-dir", lambda landing: f"{django_settings.DATA_DIR}/landing", "product"),
    ("containing-data-dir", lambda landing: str(django_settings.DATA_DIR.parent), "product"),
    ("warehouse", lambda landing: django_settings.AUTOLOADER_WAREHOUSE, "product"),
    (
        "inside-warehouse",
        lambda landing: f"{django_settings.AUTOLOADER_WAREHOUSE}/acme__raw",
        "product",
    ),
    (
        "catalog",
        lambda landing: django_settings.AUTOLOADER_CATALOG_URI.removeprefix("sqlite:///"),
        "product",
    ),
    ("state-database", sqlite_database_or_skip, "product"),
    ("whole-filesystem", lambda landing: "/", "filesystem"),
]
REASONS = {
    "location": "overlaps the location",
    "product": "of the product",
    "filesystem": "whole filesystem",
}


@pytest.fixture(params=["service", "command"])
def grant(request):
    """Grant through `location_grant` or `manage.py grant_location`; both must refuse."""

    def through_service(tenant, uri: str) -> None:
        location_grant(tenant=tenant, uri=uri)

    def through_command(tenant, uri: str) -> None:
        call_command("grant_location", tenant.slug, uri)

    grant_with = through_service if request.param == "service" else through_command
    grant_with.refusal = ValidationError if request.param == "service" else CommandError
    return grant_with


@pytest.mark.parametrize(
    ("build_uri", "reason"),
    [case[1:] for case in OVERLAPPING_GRANTS],
    ids=[case[0] for case in OVERLAPPING_GRANTS],
)
def test_a_location_overlapping_another_tenants_or_the_products_files_is_refused(
    other_tenant, acme_landing, grant, build_uri, reason
):
    acme_locations = sorted(
        StorageLocation.objects.filter(tenant__slug="acme").values_list("uri", flat=True)
    )
    uri = build_uri(acme_landing)

    with pytest.raises(grant.refusal) as refusal:
        grant(other_tenant, uri)

    assert REASONS[reason] in str(refusal.value)
    assert not StorageLocation.objects.filter(tenant=other_tenant).exists()
    assert (
        sorted(StorageLocation.objects.filter(tenant__slug="acme").values_list("uri", flat=True))
        == acme_locations
    )


def test_an_s3_location_overlapping_an_s3_warehouse_is_refused(other_tenant, grant, settings):
    settings.AUTOLOADER_WAREHOUSE = "s3://lake/warehouse"

    with pytest.raises(grant.refusal, match="of the product"):
        grant(other_tenant, "s3://lake/")

    assert not StorageLocation.objects.filter(tenant=other_tenant).exists()


@pytest.mark.parametrize(
    "build_uri",
    [lambda landing: f"{landing}-2", lambda landing: "s3://acme-landing/in-2/"],
    ids=["local-sibling", "s3-sibling"],
)
def test_a_location_beside_another_tenants_is_granted(other_tenant, acme_landing, build_uri):
    # The control of the refusals above: sharing a prefix without the "/" is no overlap.
    location = location_grant(tenant=other_tenant, uri=build_uri(acme_landing))

    assert location.tenant == other_tenant


# --- 8. deleting an ingestion, and another one on the same table ----------------------------


@pytest.fixture
def deleted_victim(victim, acme_admin):
    """The victim, deleted with confirmation: its table acme__raw.sales_data is kept."""
    response = acme_admin.delete("/api/v1/ingestions/sales-data", {"confirm": True}, format="json")
    assert response.status_code == 200, response.json()
    return victim


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/ingestions/sales-data", None),
        ("/api/v1/ingestions/sales-data", {"confirm": False}),
        ("/api/v1/ingestions/sales-data?confirm=false", None),
        ("/api/v1/ingestions/sales-data?drop_table=true", None),
    ],
)
def test_deleting_without_confirmation_deletes_nothing(victim, acme_admin, path, body):
    before = state_of(victim)

    response = acme_admin.delete(path, body, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["error_code"] == "CONFIRMATION_REQUIRED"
    assert Ingestion.objects.filter(pk=victim.pk).exists()
    assert_untouched(victim, before)


def test_deleting_a_protected_ingestion_is_refused(victim, acme_admin):
    Ingestion.objects.filter(pk=victim.pk).update(protected=True)
    before = state_of(victim)

    response = acme_admin.delete("/api/v1/ingestions/sales-data?confirm=true&drop_table=true")

    assert response.status_code == 423, response.json()
    assert response.json()["error_code"] == "TABLE_PROTECTED"
    assert Ingestion.objects.filter(pk=victim.pk).exists()
    assert_untouched(victim, before)


def test_deleting_with_confirmation_keeps_the_table_says_so_and_is_audited(victim, acme_admin):
    rows = table_rows_by_file(victim.table_identifier)

    response = acme_admin.delete("/api/v1/ingestions/sales-data", {"confirm": True}, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["id"], body["deleted"]) == ("sales-data", True)
    assert body["table"]["name"] == "raw.sales_data"
    assert body["table"]["identifier"] == "acme__raw.sales_data"
    assert body["table"]["action"] == "kept"
    assert "adopt" in body["table"]["help"]
    assert not Ingestion.objects.filter(pk=victim.pk).exists()
    assert table_rows_by_file("acme__raw.sales_data") == rows
    entry = LogEntry.objects.get(additional_data__operation="ingestion_deleted")
    assert entry.additional_data["tenant"] == "acme"
    assert entry.additional_data["table_action"] == "kept"
    assert entry.actor == acme_admin.user


def test_recreating_an_ingestion_on_a_kept_table_without_saying_what_to_do_is_refused(
    deleted_victim, acme_admin, source_dir
):
    rows = table_rows_by_file("acme__raw.sales_data")

    response = acme_admin.post(
        "/api/v1/ingestions", ingestion_body(str(source_dir), id="again"), format="json"
    )

    assert response.status_code == 409, response.json()
    assert response.json()["error_code"] == "TABLE_EXISTS"
    assert not Ingestion.objects.exists()
    assert table_rows_by_file("acme__raw.sales_data") == rows


def test_adopting_a_kept_table_loads_old_files_never_and_new_files_once(
    deleted_victim, acme_admin, source_dir, run_through_api
):
    rows = table_rows_by_file("acme__raw.sales_data")

    created = acme_admin.post(
        "/api/v1/ingestions",
        ingestion_body(str(source_dir), id="again", existing_table="adopt"),
        format="json",
    )
    first = run_through_api(acme_admin, "again")
    rows_after_first = table_rows_by_file("acme__raw.sales_data")
    write_csv_files(source_dir, files=1, rows=ROWS_PER_FILE, start=VICTIM_FILES)
    second = run_through_api(acme_admin, "again")
    third = run_through_api(acme_admin, "again")

    assert created.status_code == 201, created.json()
    assert (first["status"], first["rows_written"]) == ("SUCCESS", 0), first
    assert rows_after_first == rows
    assert (second["status"], second["rows_written"]) == ("SUCCESS", ROWS_PER_FILE), second
    assert third["rows_written"] == 0, third
    assert table_rows_by_file("acme__raw.sales_data") == {
        **rows,
        f"part-{VICTIM_FILES:04d}.csv": ROWS_PER_FILE,
    }


def test_replacing_a_kept_table_needs_the_permission_to_drop_tables(
    deleted_victim, member, source_dir
):
    rows = table_rows_by_file("acme__raw.sales_data")
    operator = member(Role.OPERATOR)

    response = operator.post(
        "/api/v1/ingestions",
        ingestion_body(str(source_dir), id="again", existing_table="replace"),
        format="json",
    )

    assert response.status_code == 403, response.json()
    assert response.json()["error_code"] == "INSUFFICIENT_PERMISSIONS"
    assert not Ingestion.objects.exists()
    assert table_rows_by_file("acme__raw.sales_data") == rows


def test_replacing_a_kept_table_drops_it_and_reloads_every_file_once(
    deleted_victim, acme_admin, source_dir, run_through_api
):
    rows = table_rows_by_file("acme__raw.sales_data")

    created = acme_admin.post(
        "/api/v1/ingestions",
        ingestion_body(str(source_dir), id="again", existing_table="replace"),
        format="json",
    )
    dropped = not table_exists("acme__raw.sales_data")
    run = run_through_api(acme_admin, "again")

    assert created.status_code == 201, created.json()
    assert dropped
    assert run["status"] == "SUCCESS", run
    assert table_rows_by_file("acme__raw.sales_data") == rows  # each file once, no duplicates


@pytest.mark.parametrize("existing_table", ["adopt", "replace"])
def test_another_tenant_cannot_adopt_or_replace_a_kept_table(
    deleted_victim, globex_admin, globex_dir, run_through_api, existing_table
):
    rows = table_rows_by_file("acme__raw.sales_data")
    audit_before = set(
        LogEntry.objects.filter(additional_data__tenant="acme").values_list("pk", flat=True)
    )

    created = globex_admin.post(
        "/api/v1/ingestions",
        ingestion_body(str(globex_dir), existing_table=existing_table),
        format="json",
    )
    run = run_through_api(globex_admin, "steal")

    assert created.status_code == 201, created.json()
    assert created.json()["destination"]["identifier"] == "globex__raw.sales_data"
    assert run["status"] == "SUCCESS", run
    assert table_row_count("globex__raw.sales_data") == 10
    assert table_rows_by_file("acme__raw.sales_data") == rows
    assert not ProcessedFile.objects.filter(path__in=list(rows)).exists()
    assert (
        set(LogEntry.objects.filter(additional_data__tenant="acme").values_list("pk", flat=True))
        == audit_before
    )


@pytest.mark.slow
def test_upgrading_a_database_where_two_tenants_load_the_same_table_name_succeeds():
    # Before the tenant boundaries, two tenants choosing "raw.sales_data" (or the attack of
    # issue 9) shared one physical table. The upgrade must still apply, and leave no two
    # ingestions on one table: the first owner keeps it.
    before_boundaries = [("ingestions", "0001_initial")]
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before_boundaries)
    old_apps = executor.loader.project_state(before_boundaries).apps
    OldTenant = old_apps.get_model("ingestions", "Tenant")
    OldIngestion = old_apps.get_model("ingestions", "Ingestion")
    for slug in ("acme", "globex"):
        OldIngestion.objects.create(
            tenant=OldTenant.objects.create(slug=slug, name=slug.title()),
            public_id=f"{slug}-sales",
            name="Sales",
            source_uri=f"/data/{slug}",
            source_format="csv",
            destination_table="raw.sales_data",
        )

    try:
        MigrationExecutor(connection).migrate(latest)
        upgraded = dict(Ingestion.objects.values_list("public_id", "table_identifier"))
    finally:
        # Whatever happened, leave the schema at the latest state for the next tests.
        executor = MigrationExecutor(connection)
        if executor.migration_plan(latest):
            OldIngestion.objects.all().delete()
            executor.migrate(latest)

    assert upgraded["acme-sales"] == "raw.sales_data"
    assert upgraded["globex-sales"] != "raw.sales_data"


# --- 9. S3: one client per location, with the location's own keys ---------------------------


class S3Account(NamedTuple):
    bucket: str
    access_key: str
    secret_key: str


class S3World(NamedTuple):
    endpoint: str
    acme: S3Account  # may read acme's bucket only
    globex: S3Account  # may read globex's bucket only
    server: S3Account  # the server's default keys: may read every bucket (bucket "")


def csv_body(first_id: int, rows: int) -> bytes:
    lines = ["id,name,amount", *(f"{first_id + row},n{row},{row}.5" for row in range(rows))]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def s3_world(moto_server, settings):
    """Two buckets on moto's S3 with IAM checks on: acme's keys read acme's bucket only,
    globex's keys globex's only, the server's default keys (AUTOLOADER_S3_*) both."""
    import boto3
    import requests

    suffix = uuid.uuid4().hex[:8]
    setup = {
        "endpoint_url": moto_server,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    s3, iam = boto3.client("s3", **setup), boto3.client("iam", **setup)
    accounts = {}
    for name in ("acme", "globex", "server"):
        bucket = f"{name}-{suffix}" if name != "server" else ""
        if bucket:
            s3.create_bucket(Bucket=bucket)
            for index in range(2):
                first_id = (1000 if name == "acme" else 2000) + index * 100
                s3.put_object(Bucket=bucket, Key=f"in/part-{index}.csv", Body=csv_body(first_id, 5))
        resources = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"] if bucket else ["*"]
        user = f"{name}-{suffix}"
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user,
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": resources}],
                }
            ),
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        accounts[name] = S3Account(bucket, key["AccessKeyId"], key["SecretAccessKey"])
    settings.AUTOLOADER_SECRETS_KEY = new_secrets_key()
    settings.AUTOLOADER_S3_ENDPOINT_URL = moto_server
    settings.AUTOLOADER_S3_REGION = "us-east-1"
    settings.AUTOLOADER_S3_ACCESS_KEY_ID = accounts["server"].access_key
    settings.AUTOLOADER_S3_SECRET_ACCESS_KEY = accounts["server"].secret_key
    # From here on every S3 request is signed-checked against IAM, as on a real store.
    requests.post(f"{moto_server}/moto-api/reset-auth", data=b"0", timeout=10)
    try:
        yield S3World(moto_server, **accounts)
    finally:
        requests.post(f"{moto_server}/moto-api/reset-auth", data=b"inf", timeout=10)


def grant_s3(tenant, world: S3World, account: S3Account, *, keys: S3Account | None = None):
    keys = keys or account
    return location_grant(
        tenant=tenant,
        uri=f"s3://{account.bucket}/in/",
        s3_endpoint_url=world.endpoint,
        s3_region="us-east-1",
        s3_access_key_id=keys.access_key,
        s3_secret_access_key=keys.secret_key,
    )


@pytest.fixture
def s3_victim(tenant, other_tenant, s3_world, acme_admin, run_through_api):
    """acme's S3 ingestion "s3-sales" over its bucket, loaded (2 files x 5 rows); globex
    holds a location on its own bucket."""
    grant_s3(tenant, s3_world, s3_world.acme)
    grant_s3(other_tenant, s3_world, s3_world.globex)
    created = acme_admin.post(
        "/api/v1/ingestions",
        ingestion_body(f"s3://{s3_world.acme.bucket}/in/", id="s3-sales", table="raw.s3_sales"),
        format="json",
    )
    assert created.status_code == 201, created.json()
    run = run_through_api(acme_admin, "s3-sales")
    assert run["status"] == "SUCCESS", run
    return Ingestion.objects.get(public_id="s3-sales")


@pytest.mark.slow
@pytest.mark.parametrize(
    "uri",
    [
        "s3://{acme}/in/",
        "s3a://{acme}/in",
        "s3://{acme}/",
        "s3://{acme}/in/../in/",
        "s3://{acme}//in/",
        "S3://{acme}/in/",
        "s3://{globex}/in/../../{acme}/in/",
    ],
)
def test_another_tenant_cannot_source_the_victims_bucket(
    s3_world, s3_victim, globex_admin, other_tenant, uri
):
    before = state_of(s3_victim)

    response = globex_admin.post(
        "/api/v1/ingestions",
        ingestion_body(uri.format(acme=s3_world.acme.bucket, globex=s3_world.globex.bucket)),
        format="json",
    )

    assert_source_not_allowed(response, allowed=[f"s3://{s3_world.globex.bucket}/in/"])
    assert not Ingestion.objects.filter(tenant=other_tenant).exists()
    assert_untouched(s3_victim, before)


@pytest.mark.slow
def test_each_s3_location_reads_with_its_own_keys(
    tenant, other_tenant, s3_world, acme_admin, globex_admin, run_through_api, settings
):
    # The server's default keys read nothing: every read below used its location's keys.
    settings.AUTOLOADER_S3_ACCESS_KEY_ID = "AKIAWRONGWRONGWRONG0"
    settings.AUTOLOADER_S3_SECRET_ACCESS_KEY = "wrong-secret"
    grant_s3(tenant, s3_world, s3_world.acme)
    grant_s3(other_tenant, s3_world, s3_world.globex)
    for client, account in ((acme_admin, s3_world.acme), (globex_admin, s3_world.globex)):
        created = client.post(
            "/api/v1/ingestions",
            ingestion_body(f"s3://{account.bucket}/in/", id="s3-sales", table="raw.s3_sales"),
            format="json",
        )
        assert created.status_code == 201, created.json()

    acme_run = run_through_api(acme_admin, "s3-sales")
    globex_run = run_through_api(globex_admin, "s3-sales")

    assert acme_run["status"] == "SUCCESS", acme_run
    assert globex_run["status"] == "SUCCESS", globex_run
    assert table_ids("acme__raw.s3_sales") == [*range(1000, 1005), *range(1100, 1105)]
    assert table_ids("globex__raw.s3_sales") == [*range(2000, 2005), *range(2100, 2105)]


def table_ids(identifier: str) -> list[int]:
    return sorted(open_table(identifier).scan(selected_fields=("id",)).to_arrow()["id"].to_pylist())


@pytest.mark.slow
def test_an_s3_location_with_wrong_keys_never_falls_back_to_the_servers_keys(
    tenant, s3_world, acme_admin, run_through_api
):
    # The server's keys could read the bucket; the location's keys are wrong.
    wrong = S3Account(s3_world.acme.bucket, "AKIAWRONGWRONGWRONG0", "wrong-secret")
    grant_s3(tenant, s3_world, s3_world.acme, keys=wrong)
    created = acme_admin.post(
        "/api/v1/ingestions",
        ingestion_body(f"s3://{s3_world.acme.bucket}/in/", id="s3-sales", table="raw.s3_sales"),
        format="json",
    )

    dry_run = acme_admin.post(
        "/api/v1/ingestions/s3-sales/full-refresh", {"dry_run": True}, format="json"
    )
    run = run_through_api(acme_admin, "s3-sales")

    assert created.status_code == 201, created.json()
    assert dry_run.status_code == 400, dry_run.json()
    assert dry_run.json()["error_code"] == "SOURCE_UNAVAILABLE"
    assert run["status"] == "FAILED", run
    assert "Cannot list source" in run["error"]
    assert not table_exists("acme__raw.s3_sales")


@pytest.mark.slow
def test_an_s3_location_with_another_tenants_keys_cannot_read_the_victims_bucket(
    other_tenant, s3_world, globex_admin, run_through_api, settings
):
    # Staff mistakenly grants globex acme's bucket prefix with globex's keys: the keys, not
    # the server's, decide, so nothing of acme's is read.
    location_grant(
        tenant=other_tenant,
        uri=f"s3://{s3_world.acme.bucket}/in/",
        s3_endpoint_url=s3_world.endpoint,
        s3_access_key_id=s3_world.globex.access_key,
        s3_secret_access_key=s3_world.globex.secret_key,
    )
    created = globex_admin.post(
        "/api/v1/ingestions",
        ingestion_body(f"s3://{s3_world.acme.bucket}/in/", table="raw.s3_sales"),
        format="json",
    )

    dry_run = globex_admin.post(
        "/api/v1/ingestions/steal/full-refresh", {"dry_run": True}, format="json"
    )
    run = run_through_api(globex_admin, "steal")

    assert created.status_code == 201, created.json()
    assert dry_run.status_code == 400, dry_run.json()
    assert dry_run.json()["error_code"] == "SOURCE_UNAVAILABLE"
    assert run["status"] == "FAILED", run
    assert not table_exists("globex__raw.s3_sales")


@pytest.mark.slow
def test_an_s3_listing_past_the_entry_bound_is_refused(tenant, s3_world, acme_admin, settings):
    # pyarrow's S3 client lists a prefix whole before it returns (no streaming, no max-keys
    # to set): the bound applies to what it returns, and its request timeouts bound the time.
    # docs/security.md says so.
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    bucket = s3_world.acme.bucket
    for index in range(3000):
        s3_backends[DEFAULT_ACCOUNT_ID]["aws"].put_object(
            bucket, f"in/many/{index:05d}.csv", b"id\n1\n"
        )
    grant_s3(tenant, s3_world, s3_world.acme)
    IngestionFactory(
        tenant=tenant,
        public_id="many",
        source_uri=f"s3://{bucket}/in/many/",
        source_format="csv",
        destination_table="raw.many",
    )
    settings.AUTOLOADER_LISTING_MAX_ENTRIES = 50

    response = acme_admin.post(
        "/api/v1/ingestions/many/full-refresh", {"dry_run": True}, format="json"
    )

    assert response.status_code == 400, response.json()
    assert response.json()["error_code"] == "SOURCE_LISTING_LIMIT"


@pytest.mark.slow
def test_location_keys_are_encrypted_at_rest_and_never_shown(s3_world, s3_victim, acme_admin):
    stored = StorageLocation.objects.filter(tenant__slug="acme").values().get()

    listed = acme_admin.get("/api/v1/locations")
    shown = acme_admin.get("/api/v1/ingestions/s3-sales")

    assert s3_world.acme.secret_key not in json.dumps(stored, default=str)
    assert listed.status_code == 200
    assert [location["uri"] for location in listed.json()] == [f"s3://{s3_world.acme.bucket}/in/"]
    for response in (listed, shown):
        assert s3_world.acme.secret_key not in response.content.decode()
        assert s3_world.acme.access_key not in response.content.decode()


SETTINGS_PROBE = """
import json, django
django.setup()
from django.conf import settings
from ingestions.locations import warehouse_filesystem
import pyarrow.fs as pafs
names = ["ENDPOINT_URL", "REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY"]
filesystem, path = warehouse_filesystem("s3://%s/in")
listed = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
print(json.dumps({
    "settings": {name: getattr(settings, "AUTOLOADER_S3_" + name) for name in names},
    "listed": sorted(info.path for info in listed),
}))
"""


def probe_settings(tmp_path: Path, bucket: str, variables: dict[str, str]) -> dict:
    """Import the settings in a new interpreter with only `variables` for S3."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "AUTOLOADER_S3_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings",
        AUTOLOADER_DATA_DIR=str(tmp_path / "probe-data"),
        # No shared credentials file or instance metadata to fall back on.
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        **variables,
    )
    completed = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE % bucket],
        env=env,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_standard_aws_variables_reach_the_s3_clients(s3_world, tmp_path):
    server = s3_world.server

    probed = probe_settings(
        tmp_path,
        s3_world.acme.bucket,
        {
            "AWS_ENDPOINT_URL": s3_world.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
        },
    )

    assert probed["settings"] == {
        "ENDPOINT_URL": s3_world.endpoint,
        "REGION": "us-east-1",
        "ACCESS_KEY_ID": server.access_key,
        "SECRET_ACCESS_KEY": server.secret_key,
    }
    assert probed["listed"] == [
        f"{s3_world.acme.bucket}/in/part-0.csv",
        f"{s3_world.acme.bucket}/in/part-1.csv",
    ]


@pytest.mark.slow
def test_the_autoloader_s3_variables_win_over_the_aws_ones(s3_world, tmp_path):
    acme = s3_world.acme

    probed = probe_settings(
        tmp_path,
        acme.bucket,
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_REGION": "eu-west-3",
            "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0",
            "AWS_SECRET_ACCESS_KEY": "wrong-secret",
            "AUTOLOADER_S3_ENDPOINT_URL": s3_world.endpoint,
            "AUTOLOADER_S3_REGION": "us-east-1",
            "AUTOLOADER_S3_ACCESS_KEY_ID": acme.access_key,
            "AUTOLOADER_S3_SECRET_ACCESS_KEY": acme.secret_key,
        },
    )

    assert probed["settings"] == {
        "ENDPOINT_URL": s3_world.endpoint,
        "REGION": "us-east-1",
        "ACCESS_KEY_ID": acme.access_key,
        "SECRET_ACCESS_KEY": acme.secret_key,
    }
    assert len(probed["listed"]) == 2
