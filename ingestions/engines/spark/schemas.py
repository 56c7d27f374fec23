"""Spark's schemas of a table and of a batch: what an append may change, and the
translations to and from Arrow."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from ingestions.errors import SchemaMismatchError

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql.types import DataType, StructField, StructType


def merge_schemas(table: StructType, data: StructType) -> StructType:
    """The table's schema after appending `data`: new columns added, safe widenings applied.

    Raises:
        SchemaMismatchError: A column's type in `data` is neither the table's nor a widening
            Iceberg allows (int to long, float to double, a decimal's precision).
    """
    from pyspark.sql.types import StructField, StructType

    data_fields = {field.name: field for field in data.fields}
    fields = []
    for field in table.fields:
        incoming = data_fields.get(field.name)
        data_type = field.dataType
        if incoming is not None and incoming.dataType != field.dataType:
            if _is_widening(incoming.dataType, field.dataType):
                pass  # a narrower value fits the table's column as it is
            elif not _is_widening(field.dataType, incoming.dataType):
                raise SchemaMismatchError(
                    f"Column {field.name!r} is {field.dataType.simpleString()} in the table "
                    f"but {incoming.dataType.simpleString()} in the data."
                )
            else:
                data_type = incoming.dataType
        fields.append(StructField(field.name, data_type, nullable=True))
    known = {field.name for field in table.fields}
    fields += [
        StructField(field.name, field.dataType, nullable=True)
        for field in data.fields
        if field.name not in known
    ]
    return StructType(fields)


def _is_widening(table_type: DataType, data_type: DataType) -> bool:
    from pyspark.sql.types import (
        ByteType,
        DecimalType,
        DoubleType,
        FloatType,
        IntegerType,
        LongType,
        ShortType,
    )

    integer_widths = {ByteType: 1, ShortType: 2, IntegerType: 4, LongType: 8}
    if type(table_type) in integer_widths and type(data_type) in integer_widths:
        return integer_widths[type(data_type)] > integer_widths[type(table_type)]
    if isinstance(table_type, FloatType):
        return isinstance(data_type, DoubleType)
    if isinstance(table_type, DecimalType) and isinstance(data_type, DecimalType):
        return data_type.scale == table_type.scale and data_type.precision > table_type.precision
    return False


def from_arrow_schema(schema: pa.Schema) -> StructType:
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    fields = []
    for field in schema:
        arrow_type = field.type
        if pa.types.is_large_string(arrow_type):
            arrow_type = pa.string()
        fields.append(StructField(field.name, from_arrow_type(arrow_type), nullable=True))
    return StructType(fields)


def to_arrow_schema(schema: StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema as spark_to_arrow

    return spark_to_arrow(schema)


def long_integers(field: StructField) -> StructField:
    """An inferred integer column as the embedded engine infers it: 64 bits (Spark infers
    `int` when the values it saw fit), so that both engines give a table the same schema."""
    from pyspark.sql.types import ByteType, IntegerType, LongType, ShortType, StructField

    if isinstance(field.dataType, ByteType | ShortType | IntegerType):
        return StructField(field.name, LongType(), field.nullable, field.metadata)
    return field


def conform_to_table(frame, table: StructType):
    """`frame` with each zone-less timestamp column the table holds with a zone (a table an
    earlier release of the spark engine created) cast to it: in UTC, the same instants."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampNTZType, TimestampType

    table_types = {field.name: field.dataType for field in table.fields}
    for field in frame.schema.fields:
        if isinstance(field.dataType, TimestampNTZType) and isinstance(
            table_types.get(field.name), TimestampType
        ):
            frame = frame.withColumn(field.name, F.col(field.name).cast("timestamp_ltz"))
    return frame
