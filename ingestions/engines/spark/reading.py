"""How Spark reads a batch's files: paths it may read, one pass per format, rows and
malformed rows counted per file."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ingestions.engines.spark.schemas import long_integers
from ingestions.errors import FileReadError
from ingestions.locations import OutsideLocationError

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from ingestions.locations import SourceHandle

# Columns the engine adds while reading a batch, never written to the table.
INPUT_COLUMN = "__autoloader_input_file"
CORRUPT_COLUMN = "__autoloader_corrupt_record"
# Reader options of the product (sources.readers) and Spark's names for them.
SPARK_CSV_OPTIONS = {
    "delimiter": "sep",
    "header": "header",
    "quote_char": "quote",
    "encoding": "encoding",
    "newlines_in_values": "multiLine",
}
# CSV types are inferred from the batch's first files up to this many bytes (at least one
# file): the rest is read once, with those types.
INFER_SAMPLE_BYTES = 8 * 1024 * 1024
# Hadoop's glob pattern characters, escaped in the paths Spark reads (see `spark_uri`).
GLOB_CHARACTERS = re.compile(r"([{}\[\]*?\\])")


class Reader:
    """Reads files of one format with Spark, counting each file's rows and malformed rows."""

    def __init__(
        self,
        spark: SparkSession,
        *,
        file_format: str,
        options: dict,
        check: Callable[[], None],
    ):
        self.spark = spark
        self.check = check  # raises when the work was cancelled: called before each job
        self.file_format = file_format
        self.options = {
            SPARK_CSV_OPTIONS[key]: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in options.items()
            if key in SPARK_CSV_OPTIONS
        }
        if options.get("null_values"):
            self.options["nullValue"] = options["null_values"][0]
        if file_format == "csv":
            self.options.setdefault("header", "true")

    def read(
        self, uris: list[str], *, sample: list[str] | None = None
    ) -> tuple[DataFrame, dict[str, tuple[int, int]]]:
        """The files' rows, kept by Spark (memory, then disk), and {input file: (rows,
        malformed rows)} for each file with rows. CSV types are inferred from `sample`
        (default: every file)."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        frame = self._frame(uris, sample or uris).withColumn(INPUT_COLUMN, F.input_file_name())
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        self.check()
        try:
            malformed = (
                F.count(F.col(CORRUPT_COLUMN)) if CORRUPT_COLUMN in frame.columns else F.lit(0)
            )
            counts = {
                row[0]: (int(row[1]), int(row[2]))
                for row in frame.groupBy(INPUT_COLUMN).agg(F.count(F.lit(1)), malformed).collect()
            }
        except Exception:
            frame.unpersist()
            raise
        return frame, counts

    def _frame(self, uris: list[str], sample: list[str]) -> DataFrame:
        from pyspark.sql.types import StringType, StructField, StructType

        reader = self.spark.read.options(**self.options)
        if self.file_format == "parquet":
            return reader.parquet(*uris)
        if self.file_format == "json":
            return (
                reader.option("mode", "PERMISSIVE")
                .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
                .json(uris)
            )
        # CSV: infer the types from a bounded sample of the files (as the embedded engine
        # infers), then read every file once with them and a column that catches malformed
        # rows; a file whose header differs from the others' fails the read, and is read
        # by itself instead.
        schema = StructType([*self.infer(sample).fields, StructField(CORRUPT_COLUMN, StringType())])
        return (
            self.spark.read.options(**self.options)
            .schema(schema)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
            .option("enforceSchema", "false")
            .csv(uris)
        )

    def infer(self, sample: list[str]) -> StructType:
        """The CSV types of `sample`'s files (one Spark job over them), integers 64 bits wide
        as the embedded engine infers them."""
        from pyspark.sql.types import StructType

        self.check()
        inferred = self.spark.read.options(**self.options).option("inferSchema", "true")
        fields = inferred.csv(sample).schema.fields
        self.check()
        return StructType(list(map(long_integers, fields)))

    def read_strictly(self, uris: list[str], schema: StructType) -> DataFrame:
        """The CSV files' rows by `schema`, lazily: running it fails on the first malformed
        row, or on a header that does not name `schema`'s columns in order."""
        return (
            self.spark.read.options(**self.options)
            .schema(schema)
            .option("mode", "FAILFAST")
            .option("enforceSchema", "false")
            .csv(uris)
        )


def pin_local(source: SourceHandle, full_path: str) -> tuple[int, int]:
    """Check a local file Spark is about to read by path; returns its (device, inode).

    Spark opens paths itself, following links, so a link is refused outright (the embedded
    engine reads links inside the location through a checked descriptor; Spark cannot).

    Raises:
        FileReadError: a link, not a regular file inside the location, or gone.
    """
    try:
        if os.path.islink(full_path):
            raise FileReadError(
                full_path, "the spark engine reads no symbolic link in a local source"
            )
        return source.filesystem.pin(full_path)
    except FileNotFoundError:
        raise FileReadError(full_path, "the file no longer exists") from None
    except OutsideLocationError as exc:
        raise FileReadError(full_path, str(exc)) from None


def still_pinned(source: SourceHandle, full_path: str, pin: tuple[int, int]) -> bool:
    try:
        return pin_local(source, full_path) == pin
    except FileReadError:
        return False


def spark_uri(source: SourceHandle, full_path: str) -> str:
    """The path Spark reads a source file at: a local file under file://, an S3 object
    through s3a://. Spark takes paths as Hadoop glob patterns: the pattern characters are
    escaped, so that a file named "x*.csv" or "{a,b}.csv" reads itself, not its siblings;
    Hadoop decodes nothing else ("%20" is those three characters)."""
    escaped = GLOB_CHARACTERS.sub(r"\\\1", full_path)
    if source.uri.startswith("s3://"):
        return f"s3a://{escaped}"
    return f"file://{escaped}"


def input_key(name: str) -> str:
    """The file behind Spark's `input_file_name()` (a URI, percent-encoded) as the source's
    full path: "/dir/file" locally, "bucket/key" on S3."""
    parts = urlsplit(name)
    return unquote(f"{parts.netloc}{parts.path}" if parts.scheme == "s3a" else parts.path)


def inference_sample(paths: list[str], sizes: Mapping[str, int] | None) -> set[str]:
    """The first of `paths` up to INFER_SAMPLE_BYTES (every path when sizes are unknown)."""
    if sizes is None:
        return set(paths)
    sample, total = set(), 0
    for path in paths:
        if sample and total + sizes.get(path, 0) > INFER_SAMPLE_BYTES:
            break
        sample.add(path)
        total += sizes.get(path, 0)
    return sample
