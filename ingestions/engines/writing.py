"""Writing a batch as a table's data files part by part, committed once (`Tables.append`):
the interface an engine's streaming writer implements (`Tables.open_writer`)."""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class WrittenData:
    """A batch's rows written as data files of a table by a `DataWriter`, not committed yet.

    No reader sees them until `Tables.append` commits them (one snapshot); until then they
    are the writer's, which deletes them if the batch does not commit (`DataWriter.discard`).
    """

    rows: int
    schema: pa.Schema  # every written part's columns: what the commit makes the table's
    handle: object = None  # the engine's own: the data files and the schema they carry


class DataWriter(ABC):
    """Writes a batch's rows to the table's data files part by part, so a batch of any size
    costs the memory of a few parts; one `Tables.append` of `finish()` then commits them."""

    @abstractmethod
    def write(self, data: pa.Table) -> None:
        """Write one part of the batch (rows with Iceberg-writable types, lineage included).

        A part may add columns or widen types: the commit evolves the table's schema.

        Raises:
            SchemaMismatchError: The part's types cannot be merged into the table's schema.
            EngineError: Writing failed; the writer must then be discarded.
        """

    @abstractmethod
    def finish(self) -> WrittenData:
        """Close the last data file; returns what `Tables.append` commits."""

    @abstractmethod
    def discard(self) -> None:
        """Delete every data file written (the batch does not commit); safe to call twice,
        and after `finish`."""
