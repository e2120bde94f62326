"""The data lake on Delta Lake (delta-rs): writer, load records, reader, housekeeping.

::

    _storage       the lake URL, and fsspec-style options translated for delta-rs (one place)
    _layout        table names, natural keys, partition columns, each table's lake schema
    _spool         an export's batch stream -> one local Parquet file per table
    _writer        one table, one commit: append into an empty partition, else MERGE
    _changes       which rows of a reload are new, changed or held
    _stream        a first load's data files, streamed by pyarrow, one commit
    _keyindex      per data file, the hashes of its keys: which files a merge must read
    _keyhash       the stable 64-bit hash those entries keep
    _keyrows       a segment's rows; the entries a first load keeps on disk until its commit
    _retry         bounded, logged back-off around a commit that lost a race
    _loads         the ``_loads`` table: one record per completed load, appended last
    _load          one export: every table, then its load record
    _read          read_dataset (consistent state, time travel, pruning), committed_exports
    _housekeeping  history, vacuum, optimize
    _legacy        refuse the old manifest layout, saying how to rebuild
"""

from __future__ import annotations

from ._housekeeping import lake_history, optimize_lake, vacuum_lake
from ._layout import MERGE_KEYS
from ._load import WriteResult, write_export
from ._read import committed_exports, read_dataset
from ._storage import delta_storage_options

__all__ = [
    "MERGE_KEYS",
    "WriteResult",
    "committed_exports",
    "delta_storage_options",
    "lake_history",
    "optimize_lake",
    "read_dataset",
    "vacuum_lake",
    "write_export",
]
