"""One type vocabulary: Check source and the table page both name Iceberg's types."""

import pyarrow as pa
import pytest

from ingestions.engines.type_names import iceberg_type_name
from ingestions.selectors import table_overview
from ingestions.sources.preview import source_check


@pytest.mark.parametrize(
    ("arrow_type", "name"),
    [
        (pa.string(), "string"),
        (pa.large_string(), "string"),
        (pa.int64(), "long"),
        (pa.int32(), "int"),
        (pa.float64(), "double"),
        (pa.bool_(), "boolean"),
        (pa.timestamp("s"), "timestamp"),
        (pa.timestamp("us", tz="UTC"), "timestamptz"),
        (pa.date32(), "date"),
        (pa.decimal128(10, 2), "decimal(10, 2)"),
        (pa.large_list(pa.large_string()), "list<string>"),
        (pa.map_(pa.string(), pa.int64()), "map<string, long>"),
        (pa.struct([("a", pa.large_string())]), "struct<a: string>"),
        (pa.dictionary(pa.int32(), pa.string()), "string"),
    ],
)
def test_arrow_types_have_their_iceberg_names(arrow_type, name):
    assert iceberg_type_name(arrow_type) == name


@pytest.mark.django_db(transaction=True)
def test_check_source_and_the_table_page_name_the_same_types(loaded, tenant, source_dir):
    checked = source_check(tenant=tenant, actor=None, uri=str(source_dir), file_format="csv")
    sampled = {column["name"]: column["type"] for column in checked["sample"]["columns"]}

    table = {
        column["name"]: column["type"] for column in table_overview(ingestion=loaded)["columns"]
    }

    assert sampled and all(table[name] == kind for name, kind in sampled.items())
    assert "large_string" not in table.values() and "string" in table.values()
