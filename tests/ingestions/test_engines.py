"""Engine behaviour, run against every engine backend on a throwaway catalog and warehouse."""

import sys
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from ingestions.engines import ENGINE_CHOICES, Engine, load_engine, validate_table_name
from ingestions.engines.iceberg import IcebergEngine
from ingestions.errors import EngineError, EngineUnavailableError, SchemaMismatchError

from .conftest import SPARK_TEST_MASTER, free_port

TABLE = "sales.orders"

# "spark": Spark local[2] with Iceberg's own Spark runtime, its JDBC catalog over the same
# catalog database as the iceberg engine's.
ENGINE_KINDS = ["iceberg", "spark"]


def build_engine(
    kind: str, *, catalog_uri: str, warehouse: str, spark_master: str = SPARK_TEST_MASTER
) -> Engine:
    if kind == "iceberg":
        return IcebergEngine(catalog_name="test", catalog_uri=catalog_uri, warehouse=warehouse)
    if kind == "spark":
        from ingestions.engines.spark import SparkEngine, shared_catalog_conf

        return SparkEngine(
            master=spark_master,
            catalog="test",
            warehouse=warehouse,
            conf=shared_catalog_conf(
                catalog_name="test", catalog_uri=catalog_uri, warehouse=warehouse
            ),
            shared_catalog_uri=catalog_uri,
        )
    raise AssertionError(f"no test builder for engine {kind!r}")


@pytest.fixture(params=ENGINE_KINDS)
def engine_kind(request) -> str:
    if request.param == "spark":
        request.getfixturevalue("spark_session")  # started on first use, shared
    return request.param


@pytest.fixture
def engine(engine_kind, tmp_path) -> Engine:
    return build_engine(
        engine_kind,
        catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=(tmp_path / "warehouse").as_uri(),
    )


@pytest.fixture
def warehouse_data_files(tmp_path):
    """Lists the Parquet data files currently in the warehouse directory."""
    return lambda: sorted((tmp_path / "warehouse").rglob("*.parquet"))


def orders(*ids: int) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "name": [f"order {i}" for i in ids]})


def test_append_creates_namespace_and_table_on_first_load(engine):
    assert engine.table_exists(TABLE) is False

    engine.append(TABLE, orders(1, 2), properties={})

    assert engine.table_exists(TABLE) is True
    assert engine.table_schema(TABLE).names == ["id", "name"]


def test_describe_reports_rows_and_bytes_from_snapshot_summary(engine, warehouse_data_files):
    engine.append(TABLE, orders(1, 2, 3), properties={})
    snapshot_id = engine.append(TABLE, orders(4), properties={})

    info = engine.describe_table(TABLE)

    data_files = warehouse_data_files()
    assert info.exists is True
    assert info.row_count == 4
    # A file per append here; Spark writes one per partition of the rows.
    assert info.file_count == len(data_files) >= 2
    assert info.size_bytes == sum(path.stat().st_size for path in data_files)
    assert info.snapshot_id == snapshot_id
    assert info.last_updated_at.tzinfo is not None


def test_describe_reports_a_missing_table_as_not_existing(engine):
    info = engine.describe_table("sales.nothing_here")

    assert info.exists is False
    assert (info.row_count, info.size_bytes, info.file_count) == (0, 0, 0)
    assert info.snapshot_id is None
    assert info.last_updated_at is None


def test_append_returns_snapshot_id_and_its_properties_are_listed(engine):
    before = datetime.now(UTC).replace(microsecond=0)
    first = engine.append(TABLE, orders(1), properties={"run_id": "r1", "batch": "0"})
    second = engine.append(TABLE, orders(2), properties={"run_id": "r1", "batch": "1"})

    snapshots = engine.list_snapshots(TABLE)

    assert [snapshot.snapshot_id for snapshot in snapshots] == [first, second]
    assert snapshots[1].properties["batch"] == "1"
    assert snapshots[1].properties["operation"] == "append"
    assert snapshots[1].properties["total-records"] == "2"
    assert snapshots[0].committed_at >= before
    assert engine.find_snapshot(TABLE, key="batch", value="0").snapshot_id == first
    assert engine.find_snapshot(TABLE, key="run_id", value="r1").snapshot_id == second
    assert engine.find_snapshot(TABLE, key="batch", value="9") is None


def test_list_and_find_snapshots_of_a_missing_table(engine):
    assert engine.list_snapshots(TABLE) == []
    assert engine.find_snapshot(TABLE, key="run_id", value="r1") is None


def test_append_of_no_rows_still_commits_a_snapshot(engine):
    engine.append(TABLE, orders(1), properties={})

    snapshot_id = engine.append(TABLE, orders(2).slice(0, 0), properties={"batch": "empty"})

    assert engine.find_snapshot(TABLE, key="batch", value="empty").snapshot_id == snapshot_id
    assert engine.describe_table(TABLE).row_count == 1


def test_append_adds_new_columns_to_the_table(engine):
    engine.append(TABLE, orders(1), properties={})
    with_email = orders(2).append_column("email", pa.array(["b@example.com"]))

    engine.append(TABLE, with_email, properties={})

    assert engine.table_schema(TABLE).names == ["id", "name", "email"]
    assert engine.describe_table(TABLE).row_count == 2


def test_append_widens_int_to_long(engine):
    engine.append(TABLE, pa.table({"id": pa.array([1], pa.int32())}), properties={})

    engine.append(TABLE, pa.table({"id": pa.array([2**40], pa.int64())}), properties={})

    assert engine.table_schema(TABLE).field("id").type == pa.int64()


def test_append_of_an_incompatible_type_raises_schema_mismatch(engine):
    engine.append(TABLE, orders(1), properties={})

    with pytest.raises(SchemaMismatchError, match="id"):
        engine.append(TABLE, pa.table({"id": ["one"]}), properties={})

    assert len(engine.list_snapshots(TABLE)) == 1


def test_table_schema_of_a_missing_table_is_none(engine):
    assert engine.table_schema(TABLE) is None


def test_drop_purges_data_files_and_is_idempotent(engine, warehouse_data_files):
    engine.append(TABLE, orders(1, 2), properties={})
    assert warehouse_data_files()

    assert engine.drop_table(TABLE) is True

    assert engine.table_exists(TABLE) is False
    assert warehouse_data_files() == []
    assert engine.drop_table(TABLE) is False


def test_table_recreated_after_drop_starts_fresh(engine):
    engine.append(TABLE, orders(1, 2, 3), properties={"run_id": "old"})
    engine.drop_table(TABLE)

    snapshot_id = engine.append(TABLE, pa.table({"code": ["x"]}), properties={"run_id": "new"})

    info = engine.describe_table(TABLE)
    assert (info.row_count, info.file_count, info.snapshot_id) == (1, 1, snapshot_id)
    assert engine.table_schema(TABLE).names == ["code"]
    assert [snapshot.properties["run_id"] for snapshot in engine.list_snapshots(TABLE)] == ["new"]


# --- restore points (undo): engines that cannot keep one say so, the others restore exactly


def test_a_kept_version_is_restored_whatever_was_written_since(engine, warehouse_data_files):
    engine.append(TABLE, orders(1, 2), properties={})
    if not engine.can_retain:
        with pytest.raises(EngineError):
            engine.retain(TABLE, name="undo_op_1")
        return
    kept_files = warehouse_data_files()
    point = engine.retain(TABLE, name="undo_op_1")
    assert (point["kind"], point["row_count"]) == ("snapshot", 2)
    engine.append(TABLE, orders(3, 4, 5), properties={})

    engine.restore(TABLE, point)
    engine.restore(TABLE, point)  # idempotent

    assert engine.describe_table(TABLE).row_count == 2
    assert warehouse_data_files() == kept_files  # the version undone goes with its files


def test_a_retired_table_comes_back_and_is_purged_when_released(engine, warehouse_data_files):
    engine.append(TABLE, orders(1, 2), properties={})
    if not engine.can_retain:
        with pytest.raises(EngineError):
            engine.retire(TABLE, name="undo_op_1")
        return
    point = engine.retire(TABLE, name="undo_op_1")
    assert point["kind"] == "retired" and not engine.table_exists(TABLE)
    assert engine.retire(TABLE, name="undo_op_1") == point  # idempotent
    engine.append(TABLE, orders(7), properties={})  # a run recreated it meanwhile

    engine.restore(TABLE, point)
    assert engine.describe_table(TABLE).row_count == 2

    again = engine.retire(TABLE, name="undo_op_2")
    assert engine.release(TABLE, again, expire_before=None) > 0
    assert not engine.table_exists(again["table"]) and warehouse_data_files() == []


def test_nothing_to_keep_of_a_missing_table(engine):
    if engine.can_retain:
        assert engine.retain(TABLE, name="undo_op_1")["kind"] == "absent"
        assert engine.retire(TABLE, name="undo_op_1")["kind"] == "absent"


@pytest.mark.parametrize("table_exists", [True, False], ids=["branch", "new-table"])
def test_a_staged_version_is_invisible_until_published_whole(engine, table_exists):
    if table_exists:
        engine.append(TABLE, orders(1, 2), properties={})
    stage = engine.stage_begin(TABLE, name="autoloader_op_1")
    engine.append(stage.write_to, orders(7, 8, 9), properties={"batch": "s"}, branch=stage.branch)

    assert engine.describe_table(TABLE).row_count == (2 if table_exists else 0)
    engine.stage_publish(stage)

    assert engine.describe_table(TABLE).row_count == 3
    assert engine.find_snapshot(TABLE, key="batch", value="s") is not None


def marked(ids: list[int], at: datetime) -> pa.Table:
    return pa.table(
        {
            "order_id": pa.array(ids, pa.int64()),
            "_ingested_at": pa.array([at] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def test_a_batch_is_found_by_its_rows_mark_on_main_or_its_branch(engine):
    """Recovery's second witness after the batch's snapshot (which a cluster may expire):
    rows carrying the batch's exact `_ingested_at`, on main or on the staged branch."""
    first = datetime(2026, 12, 6, 5, 0, 0, 123456, tzinfo=UTC)
    second = first + timedelta(microseconds=1)
    assert not engine.holds_rows_ingested_at(TABLE, first)  # no table yet
    engine.append(TABLE, marked([1, 2], first), properties={})

    assert engine.holds_rows_ingested_at(TABLE, first)
    assert not engine.holds_rows_ingested_at(TABLE, second)  # to the microsecond
    if engine.can_stage:
        stage = engine.stage_begin(TABLE, name="autoloader_op_1")
        engine.append(stage.write_to, marked([3], second), properties={}, branch=stage.branch)
        assert engine.holds_rows_ingested_at(stage.write_to, second, branch=stage.branch)
        assert not engine.holds_rows_ingested_at(TABLE, second)  # main has not seen it


def test_ping_answers_on_a_reachable_catalog(engine):
    engine.ping()


def test_unreachable_catalog_raises_engine_unavailable(engine_kind, tmp_path):
    unreachable = build_engine(
        engine_kind,
        catalog_uri=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'catalog.db'}",
        warehouse=(tmp_path / "warehouse").as_uri(),
        # Nothing listens there: a cluster that is down.
        spark_master=f"spark://127.0.0.1:{free_port()}",
    )

    with pytest.raises(EngineUnavailableError, match="unreachable") as raised:
        unreachable.ping()
    assert raised.value.error_code == "CLUSTER_UNAVAILABLE"
    with pytest.raises(EngineUnavailableError):
        unreachable.describe_table(TABLE)


def test_invalid_table_name_is_refused_before_reaching_the_catalog(engine):
    with pytest.raises(ValueError, match=r"namespace\.table"):
        engine.append("orders", orders(1), properties={})


# Engines take physical names, which carry the tenant's prefix: parts up to 128 characters.
@pytest.mark.parametrize(
    "name", ["sales.orders", "_raw.t_2024", "acme__raw.sales", "a." + "b" * 128]
)
def test_validate_table_name_accepts(name):
    assert validate_table_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["orders", "a.b.c", "Sales.orders", "sales.2024", "sales.or-ders", "sales.", "a." + "b" * 129],
)
def test_validate_table_name_refuses(name):
    with pytest.raises(ValueError, match=r"Table name"):
        validate_table_name(name)


def test_validate_table_name_holds_logical_names_to_their_own_part_length():
    assert validate_table_name("a." + "b" * 64, max_part_length=64) == "a." + "b" * 64
    with pytest.raises(ValueError, match=r"must be 1 to 64 lowercase"):
        validate_table_name("a." + "b" * 65, max_part_length=64)


def test_iceberg_catalog_is_built_once_per_process(tmp_path):
    settings = {
        "catalog_name": "test",
        "catalog_uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "warehouse": (tmp_path / "warehouse").as_uri(),
    }

    assert IcebergEngine(**settings)._catalog() is IcebergEngine(**settings)._catalog()


def test_load_engine_reads_settings_at_call_time(settings, tmp_path):
    settings.AUTOLOADER_CATALOG_NAME = "overridden"
    settings.AUTOLOADER_CATALOG_URI = f"sqlite:///{tmp_path / 'catalog.db'}"
    settings.AUTOLOADER_WAREHOUSE = (tmp_path / "warehouse").as_uri()

    engine = load_engine()

    assert isinstance(engine, IcebergEngine)
    assert engine.name == "iceberg"
    assert (engine.catalog_name, engine.catalog_uri) == (
        "overridden",
        settings.AUTOLOADER_CATALOG_URI,
    )


def test_load_engine_refuses_an_unknown_engine():
    with pytest.raises(ValueError, match="known engines: iceberg, spark"):
        load_engine("duckdb")


def test_load_engine_spark_without_pyspark_says_how_to_install(monkeypatch):
    assert "spark" in ENGINE_CHOICES
    # None in sys.modules makes the import fail as if pyspark were not installed.
    monkeypatch.setitem(sys.modules, "pyspark", None)

    with pytest.raises(ImportError, match=r"pip install 'autoloader-console\[spark\]'"):
        load_engine("spark")
