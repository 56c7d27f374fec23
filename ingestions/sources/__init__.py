"""Source files: finding them under a source URI and reading them into Arrow tables."""

from ingestions.sources.discovery import (
    SourceFile,
    list_source_entries,
    list_source_files,
)
from ingestions.sources.readers import (
    METADATA_COLUMNS,
    SUPPORTED_FORMATS,
    conform_to_schema,
    normalize_for_iceberg,
    read_source_file,
    validate_reader_options,
    with_metadata_columns,
)

__all__ = [
    "METADATA_COLUMNS",
    "SUPPORTED_FORMATS",
    "SourceFile",
    "conform_to_schema",
    "list_source_entries",
    "list_source_files",
    "normalize_for_iceberg",
    "read_source_file",
    "validate_reader_options",
    "with_metadata_columns",
]
