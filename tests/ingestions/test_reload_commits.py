"""A commit that replaces source files' rows rewrites each data file it must under a name
of its own (issue 24). Two data files each holding a replaced file's rows and other files'
rows are both rewritten in one commit: a reload through the engine, through a run, and the
removal of files gone from the source. (Found by review: each rewrite was written under
the same name, so the second overwrote the first.)"""

import collections

import pyarrow as pa
import pytest

from ingestions.models import RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import run_request

from ..factories import IngestionFactory
from ..helpers import open_table
from .test_changed_files import NEW_AMOUNTS, amounts_by_file, correct_in_place

TABLE = "sales.orders"


def rows(files: list[str], version: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(len(files)), pa.int64()),
            "version": pa.array([version] * len(files), pa.int64()),
            "_source_file": files,
        }
    )


def test_a_reload_rewriting_two_mixed_data_files_keeps_every_other_row(engine):
    engine.append(TABLE, rows(["a.csv", "b.csv"], 0), properties={})
    engine.append(TABLE, rows(["c.csv", "d.csv"], 0), properties={})

    engine.append(TABLE, rows(["a.csv", "c.csv"], 1), properties={}, replacing=["a.csv", "c.csv"])

    table = engine._load_table(TABLE)
    paths = [task.file.file_path for task in table.scan().plan_files()]
    assert [p for p, n in collections.Counter(paths).items() if n > 1] == []
    got = table.scan().to_arrow().select(["_source_file", "version"]).to_pylist()
    assert sorted((row["_source_file"], row["version"]) for row in got) == [
        ("a.csv", 1),
        ("b.csv", 0),
        ("c.csv", 1),
        ("d.csv", 0),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_run_reloading_files_of_two_earlier_runs_keeps_their_neighbours(tenant, source_dir):
    """The same through a run: runs 1 and 2 each load two files (one data file each);
    one file of each is corrected; the reload run must keep the two untouched files."""
    header = "id,name,amount\n"
    for name in ("a", "b"):
        (source_dir / f"{name}.csv").write_text(header + "1,x,1.00\n")
    ingestion = IngestionFactory(
        tenant=tenant, public_id="sales", source_uri=str(source_dir), destination_table="raw.sales"
    )
    assert run_execute(run_id=run_request(ingestion=ingestion).public_id).status == (
        RunStatus.SUCCESS
    )
    for name in ("c", "d"):
        (source_dir / f"{name}.csv").write_text(header + "1,x,1.00\n")
    assert run_execute(run_id=run_request(ingestion=ingestion).public_id).status == (
        RunStatus.SUCCESS
    )
    correct_in_place(source_dir / "a.csv")
    correct_in_place(source_dir / "c.csv")

    run = run_execute(run_id=run_request(ingestion=ingestion).public_id)

    assert (run.status, run.files_changed) == (RunStatus.SUCCESS, 2)
    assert amounts_by_file(ingestion) == {
        "a.csv": NEW_AMOUNTS,
        "b.csv": [1.0],
        "c.csv": NEW_AMOUNTS,
        "d.csv": [1.0],
    }
    table = open_table(ingestion.table_identifier)
    paths = [task.file.file_path for task in table.scan().plan_files()]
    assert len(paths) == len(set(paths))


@pytest.mark.django_db(transaction=True)
def test_removing_gone_files_of_two_earlier_runs_keeps_their_neighbours(tenant, source_dir):
    """`gone_files=remove` goes through the same path (`Engine.remove_source_files` appends
    an empty table with `replacing`): two source files deleted, each from a data file it
    shares with others, and the others' rows must stay exactly once."""
    header = "id,name,amount\n"
    ingestion = IngestionFactory(
        tenant=tenant,
        public_id="sales",
        source_uri=str(source_dir),
        destination_table="raw.sales",
        gone_files="remove",
    )
    for names in (("a", "b", "e"), ("c", "d", "f")):
        for name in names:
            (source_dir / f"{name}.csv").write_text(header + "1,x,1.00\n")
        assert run_execute(run_id=run_request(ingestion=ingestion).public_id).status == (
            RunStatus.SUCCESS
        )
    (source_dir / "a.csv").unlink()
    (source_dir / "c.csv").unlink()

    run = run_execute(run_id=run_request(ingestion=ingestion).public_id)

    assert run.status == RunStatus.SUCCESS, run.error
    assert run.gone_removed
    assert amounts_by_file(ingestion) == {
        name: [1.0] for name in ("b.csv", "d.csv", "e.csv", "f.csv")
    }


def test_a_reload_racing_a_conflicting_writer_is_planned_again_and_keeps_both(engine, monkeypatch):
    """Another writer reloads `m.csv` (rewriting the data file `a.csv` shares with it)
    between this reload's plan and its commit: pyiceberg refuses the stale overwrite, the
    engine plans it again on the new table, and both reloads hold, each row once."""
    from pyiceberg.table import Table

    from ingestions.engines.iceberg import IcebergEngine

    engine.append(TABLE, rows(["a.csv", "b.csv", "m.csv", "z.csv"], 0), properties={})
    other = IcebergEngine(
        catalog_name=engine.catalog_name,
        catalog_uri=engine.catalog_uri,
        warehouse=engine.warehouse,
    )
    commit, raced = Table._do_commit, []

    def commit_after_a_rival(self, updates, requirements):
        if not raced:
            raced.append(True)
            other.append(TABLE, rows(["m.csv"], 7), properties={}, replacing=["m.csv"])
        return commit(self, updates, requirements)

    monkeypatch.setattr(Table, "_do_commit", commit_after_a_rival)

    engine.append(TABLE, rows(["a.csv"], 1), properties={}, replacing=["a.csv"])

    got = engine._load_table(TABLE).scan().to_arrow().select(["_source_file", "version"])
    assert sorted((row["_source_file"], row["version"]) for row in got.to_pylist()) == [
        ("a.csv", 1),
        ("b.csv", 0),
        ("m.csv", 7),
        ("z.csv", 0),
    ]
