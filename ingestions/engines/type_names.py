"""Iceberg's names for Arrow types: the one vocabulary every page shows a schema in.

Check source reads a sample with Arrow (`int64`, `string`), the table page reads the
table's schema as Arrow (`large_string`); both show what the Iceberg table holds (`long`,
`string`), as pyiceberg names its types and as a table created from that Arrow schema has.
"""

import pyarrow as pa


def iceberg_type_name(arrow_type: pa.DataType) -> str:
    """`long`, `string`, `timestamptz`, `decimal(10, 2)`, `list<string>`...; an Arrow type
    Iceberg has no name for keeps its Arrow name."""
    types = pa.types
    if types.is_dictionary(arrow_type):
        return iceberg_type_name(arrow_type.value_type)
    if types.is_string(arrow_type) or types.is_large_string(arrow_type):
        return "string"
    if types.is_boolean(arrow_type):
        return "boolean"
    if types.is_int64(arrow_type) or types.is_uint32(arrow_type) or types.is_uint64(arrow_type):
        return "long"
    if types.is_integer(arrow_type):
        return "int"
    if types.is_float16(arrow_type) or types.is_float32(arrow_type):
        return "float"
    if types.is_float64(arrow_type):
        return "double"
    if types.is_decimal(arrow_type):
        return f"decimal({arrow_type.precision}, {arrow_type.scale})"
    if types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if types.is_date(arrow_type):
        return "date"
    if types.is_time(arrow_type):
        return "time"
    if types.is_fixed_size_binary(arrow_type):
        return f"fixed[{arrow_type.byte_width}]"
    if types.is_binary(arrow_type) or types.is_large_binary(arrow_type):
        return "binary"
    if types.is_list(arrow_type) or types.is_large_list(arrow_type):
        return f"list<{iceberg_type_name(arrow_type.value_type)}>"
    if types.is_map(arrow_type):
        key, item = iceberg_type_name(arrow_type.key_type), iceberg_type_name(arrow_type.item_type)
        return f"map<{key}, {item}>"
    if types.is_struct(arrow_type):
        fields = ", ".join(f"{field.name}: {iceberg_type_name(field.type)}" for field in arrow_type)
        return f"struct<{fields}>"
    return str(arrow_type)
