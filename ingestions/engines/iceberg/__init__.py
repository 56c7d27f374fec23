"""The embedded engine: Iceberg tables written in-process by pyiceberg, no cluster needed.

The package: `engine` (tables, staged versions, restore points), `maintenance` (expiry,
compaction, orphan files), `snapshots` (what expiring frees), `catalog` (the process's
SQL catalog and what its failures mean).
"""

from ingestions.engines.iceberg.engine import IcebergEngine

__all__ = ["IcebergEngine"]
