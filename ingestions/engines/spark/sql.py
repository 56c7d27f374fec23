"""Spark SQL spelling for the spark engine: quoted names and literals, column definitions in
our sessions' type vocabulary, and what a JVM failure was, in one line."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ingestions.sources.discovery import first_line

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql.types import DataType, StructType

# `timestamp` as a type in a simpleString (not `timestamp_ntz`, not a struct field name).
ZONED_TIMESTAMP = re.compile(r"\btimestamp\b(?!:)")


def check_properties(properties: dict[str, str]) -> None:
    if not all(isinstance(item, str) for pair in properties.items() for item in pair):
        raise TypeError("Snapshot properties must map strings to strings.")


# --- helpers ---------------------------------------------------------------------------


def is_missing_iceberg_runtime(exc: BaseException) -> bool:
    text = str(exc)
    return "org.apache.iceberg" in text and (
        "ClassNotFoundException" in text or "CLASS_NOT_FOUND" in text or "Cannot find" in text
    )


def qualified_name(catalog: str, table_name: str) -> str:
    """`catalog`.`namespace`.`table`, quoted for Spark SQL (names are validated beforehand)."""
    namespace, table = table_name.split(".")
    return ".".join(quote(part) for part in (catalog, namespace, table))


def quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def literal(text: str) -> str:
    """A Spark SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def failure_reason(exc: BaseException) -> str:
    """What went wrong, in one line: for a JVM error, its root cause ("ZipException: Not
    in GZIP format"), not Py4J's "An error occurred while calling o63.csv"."""
    java = getattr(exc, "java_exception", None)
    if java is None:
        return first_line(exc)  # Spark's own messages carry a stack trace after the first line
    try:
        while java.getCause() is not None and java.getCause() != java:
            java = java.getCause()
        name = java.getClass().getSimpleName()
        message = java.getMessage() or ""
    except Exception:  # the JVM is gone: what Py4J said is all there is
        return first_line(exc)
    return f"{name}: {message.splitlines()[0] if message else ''}".rstrip(": ")


def ddl(schema: StructType) -> str:
    """Column definitions for CREATE TABLE, every column nullable (files may lack it)."""
    return ", ".join(f"{quote(field.name)} {sql_type(field.dataType)}" for field in schema.fields)


def sql_type(data_type: DataType) -> str:
    """The type's SQL name in our sessions, where a bare `timestamp` means one without zone
    (`spark.sql.timestampType`): a zoned timestamp is spelled `timestamp_ltz`."""
    return ZONED_TIMESTAMP.sub("timestamp_ltz", data_type.simpleString())
