"""Export records -> Arrow tables with fixed schemas; the :class:`ExportTables` container.

One pass over the primary JSONL member (``responses-by-submission.jsonl``, else
``responses-by-task.jsonl``; ``responses.jsonl`` for collections) builds every table.
Record batches are emitted as they fill, so a sink can write row groups while parsing.
The schemas and JSON-text conventions are those of docs/internals.md ("Tables").

Choices the contract leaves open:

* ``answers.answer_index`` is 0-based. ``value_type`` is ``"null"`` both for
  ``"value": null`` and for an item without a ``value`` key. ``n_answers`` is 0 when
  ``answer`` is absent or null.
* In the flat and grouped-by-task shapes, ``submissions`` rows are aggregated per
  ``submission_id`` (first-seen ``participant_id``/``study_id``) and emitted last; records
  without a ``submission_id`` are counted under one row per ``participant_id`` with a null
  ``submission_id``. Ids of the wrong JSON type (lists and objects too) are grouped by
  JSON type and value.
* A known key holding a value of the wrong JSON type (e.g. a numeric ``submission_id``)
  is not coerced: the cell is null and the value is kept in that row's ``extra``. An
  unparseable ``created_at`` is kept as ``{"created_at": raw}`` in ``extra``.
* In the flat shape, unknown keys inside ``response`` go to ``extra["response"]``;
  ``metadata`` (and ``task_group_id``) feed the ``tasks`` table.
* A collection line grouped by task has no ``tasks`` table to feed: its keys other than
  ``task_id``/``collection_id``/``responses`` are kept in each of its responses'
  ``extra["task"]`` (``"_task"`` if the response has its own ``task`` key).
* ``tasks`` has one row per distinct row content (``task_id``, ``batch_id``,
  ``task_group_id``, ``datapoint``, ``metadata``, ``extra``, as exact JSON text): identical
  repeats of a task give one row, an occurrence of a ``task_id`` that differs in any value
  gives another (so ``task_id`` may repeat), and a task without ``task_id`` gives a row
  with a null ``task_id`` when it holds anything besides its responses.
* An ``answer`` that is not a list of objects is kept, not rejected (the shape of
  ``video_narration`` answers is undocumented): a single object is a one-item list, a
  bare scalar or a non-object list item becomes an item whose ``value`` is that scalar
  (arrays/objects as JSON text, as usual). One WARNING per member gives the count.
* A line whose structure is otherwise wrong (``tasks``/``responses`` not a list, a task
  or response not an object) is a bad record, like an unparseable one. Unparseable
  includes ``NaN``/``Infinity``, numbers beyond the double range (``1e400``) and lone
  surrogate escapes, on the stdlib parser (lines with integers beyond 64 bits) as on
  orjson.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from ..archive import BATCH, ExportArchive
from ..archive import _reader as _archive
from ..archive._metadata import has_lone_surrogate
from ..errors import BadRecordError, redact_url
from ._arrow import dumps
from ._builder import RecordBuilder
from ._collector import no_collections
from ._fast import BlockTables, Fallback, build_block, commit_block
from ._pandas import to_pandas as _to_pandas
from ._parallel import Outcome, block_outcomes, parse_workers
from ._records import BadLine, check_record, parse_line
from ._schema import TABLE_NAMES, schema_for, table_names

__all__ = [
    "TABLE_NAMES",
    "ExportTables",
    "build_tables",
    "iter_record_batches",
    "schema_for",
    "table_names",
]

logger = logging.getLogger(__name__)

OnBadRecords = Literal["raise", "quarantine", "skip"]
_INSTRUCTION_KNOWN = frozenset(("id", "type", "description", "options"))
#: (column, key in batch.json) of the instructions table's text columns.
_INSTRUCTION_TEXT = (("instruction_id", "id"), ("type", "type"), ("description", "description"))


@dataclass(frozen=True)
class ExportTables:
    """Every table of one export, each with its fixed schema (see :func:`schema_for`).

    Attributes
    ----------
    kind : str
        ``"batch"`` or ``"collection"``.
    tables : dict of str to pyarrow.Table
        One entry per name of :func:`table_names` ``(kind)``, always present.
    """

    kind: str
    tables: dict[str, pa.Table]

    def __getitem__(self, name: str) -> pa.Table:
        return self.tables[name]

    def to_pandas(self) -> dict[str, pd.DataFrame]:
        """Return every table as a DataFrame with ``pd.ArrowDtype`` columns.

        ``submissions.extra`` and ``tasks.datapoint``/``metadata``/``extra`` are also
        expanded to one column per key (nested keys joined with dots).
        """
        return {name: _to_pandas(name, table) for name, table in self.tables.items()}

    @property
    def row_counts(self) -> dict[str, int]:
        """Number of rows per table."""
        return {name: table.num_rows for name, table in self.tables.items()}


def primary_member(archive: ExportArchive) -> str | None:
    """Return the logical JSONL member the responses are read from (``None`` if absent)."""
    order = (
        ("responses-by-submission.jsonl", "responses-by-task.jsonl")
        if archive.kind == BATCH
        else ("responses.jsonl",)
    )
    return next((m for m in order if archive.has(m)), None)


def _files_batch(archive: ExportArchive) -> pa.RecordBatch:
    entries = archive.file_entries()
    return pa.RecordBatch.from_pylist(
        [
            {
                "path": e.path,
                "size_bytes": e.size_bytes,
                "submission_id": e.submission_id,
                "file_key": e.file_key,
                "file_name": e.file_name,
            }
            for e in entries
        ],
        schema=schema_for("files", archive.kind),
    )


def _instructions_batch(archive: ExportArchive) -> pa.RecordBatch:
    rows: list[dict[str, str | None]] = []
    items = archive.metadata.get("instructions")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            rows.append({"extra": dumps({"instruction": item})})
            continue
        extra = {k: v for k, v in item.items() if k not in _INSTRUCTION_KNOWN}
        options = item.get("options")
        row: dict[str, str | None] = {
            "options": None if options is None else dumps(options),
        }
        for column, key in _INSTRUCTION_TEXT:
            value = item.get(key)
            if value is None or (type(value) is str and not has_lone_surrogate(value)):
                row[column] = value
            else:  # a wrong JSON type, or text with a lone surrogate (no Arrow string can
                # hold it), is not coerced: null cell, the value kept in extra (escaped)
                row[column] = None
                extra[key] = value
        row["extra"] = dumps(extra) if extra else None
        rows.append(row)
    return pa.RecordBatch.from_pylist(rows, schema=schema_for("instructions", archive.kind))


def _sliced(
    batches: Iterator[tuple[str, pa.RecordBatch]], size: int
) -> Iterator[tuple[str, pa.RecordBatch]]:
    for name, batch in batches:
        for offset in range(0, batch.num_rows, size):
            yield name, batch.slice(offset, size)


class _BlockReader:
    """Feed one block of lines to the fast path, else line by line to the builder."""

    def __init__(
        self, builder: RecordBuilder, archive: ExportArchive, policy: str, *, fast_path: bool
    ) -> None:
        self.builder = builder
        self.policy = policy
        self.fast_path = fast_path
        self.source = archive.source
        self.shown = redact_url(archive.source) if "://" in archive.source else archive.source
        self.member = ""
        self.rejected: list[dict[str, Any]] = []
        self.skipped = 0
        self.fallbacks = 0

    def read(
        self, start: int, block: bytes, outcome: Outcome = None
    ) -> list[tuple[str, pa.RecordBatch]]:
        """Add a block's rows; return the fast path's batches (empty if it fell back).

        ``outcome`` is what a worker process made of the block, if one did.
        """
        if isinstance(outcome, BlockTables):
            return commit_block(outcome, self.builder)
        records: list[Any] | None = None
        if outcome == "fallback":
            self.fallbacks += 1
        elif self.fast_path:
            try:
                return build_block(block, self.builder)
            except Fallback as fallback:
                records = fallback.records
            self.fallbacks += 1
        numbers: list[int] = []
        lines: list[bytes] = []
        for offset, line in enumerate(block.split(b"\n")):
            if line.endswith(b"\r"):
                line = line[:-1]
            if line and not line.isspace():
                numbers.append(start + offset)
                lines.append(line)
        for i, (number, line) in enumerate(zip(numbers, lines, strict=True)):
            try:
                record = check_record(records[i]) if records else parse_line(line)
                self.builder.add(record)
            except BadLine as exc:
                self._bad(number, line, exc)
        return []

    def _bad(self, number: int, line: bytes, exc: BadLine) -> None:
        if self.policy == "raise":
            msg = f"bad record in {self.member} line {number} of {self.shown}: {exc}"
            raise BadRecordError(msg, source=self.source, member=self.member, line=number) from exc
        if self.policy == "skip":
            self.skipped += 1
            return
        self.rejected.append(
            {
                "member": self.member,
                "line_number": number,
                "raw": line.decode("utf-8", errors="backslashreplace"),
                "error": str(exc),
            }
        )


def iter_record_batches(
    archive: ExportArchive,
    *,
    on_bad_records: OnBadRecords = "raise",
    batch_rows: int = 65536,
    workers: int | None = None,
    fast_path: bool = True,
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Stream ``(table, record batch)`` pairs for every table of the export.

    Each batch has exactly :func:`schema_for` ``(table, archive.kind)``. ``responses``,
    ``answers`` and ``tasks`` come while the member is parsed; ``submissions``, ``files``,
    ``instructions`` and ``rejected`` may come at the end. A table without rows yields no
    batch.

    Parameters
    ----------
    archive : ExportArchive
    on_bad_records : {"raise", "quarantine", "skip"}
        What to do with a line that is not a JSON object of a known shape: raise
        :class:`~prolific_ingest.BadRecordError` (naming member and line), keep it whole in
        the ``rejected`` table, or skip it with one WARNING giving the count.
    batch_rows : int
        Rows per emitted batch (responses/answers).
    workers : int, optional
        Processes that parse the member's blocks (``1``: in this process). By default
        the ``PROLIFIC_INGEST_PARSE_WORKERS`` environment variable, else one per core for a
        member of 16 MiB or more and 1 below. The rows and their order are the same
        for any count; if workers cannot start, the parse continues in this process
        (with one WARNING per process).
    fast_path : bool, default True
        Parse blocks of lines with the block fast path, falling back to the per-line
        builder for a block it cannot take; ``False``: the per-line builder only, in this
        process (the same tables: the tests compare the two).

    Raises
    ------
    CorruptArchiveError
        The primary member fails its CRC-32 (checked as its last bytes are read, so
        before the last batches) or is truncated. A caller that consumed the whole
        stream has therefore parsed an intact member.
    BadRecordError
        A bad line, with ``on_bad_records="raise"``.
    """
    if on_bad_records not in ("raise", "quarantine", "skip"):
        msg = f"on_bad_records must be 'raise', 'quarantine' or 'skip', not {on_bad_records!r}"
        raise ValueError(msg)
    kind = archive.kind
    files = _files_batch(archive)
    builder = RecordBuilder(
        kind,
        files_prefix=archive.root + "files/",
        existing_files=files.column(0).to_pylist(),
        batch_rows=batch_rows,
    )
    reader = _BlockReader(builder, archive, on_bad_records, fast_path=fast_path)
    logical = primary_member(archive)
    if logical is not None:
        reader.member = archive.members[logical]
        n = 1
        if fast_path:
            size = archive.member_size(logical)
            n = parse_workers(workers, size, _archive.CHUNK_BYTES)
        outcomes = block_outcomes(archive.iter_blocks(logical), n, builder)
        while True:
            # Reading the next block, decoding a worker's tables and parsing make millions
            # of short-lived containers and no cycles: collections would only cost time.
            with no_collections():
                item = next(outcomes, None)
                if item is None:
                    break
                fast = reader.read(*item)
            if fast:
                yield from _sliced(builder.flush(force=True), batch_rows)
                yield from _sliced(iter(fast), batch_rows)
            elif builder.full:
                yield from _sliced(builder.flush(), batch_rows)
    yield from _sliced(builder.flush(final=True), batch_rows)
    yield from _sliced(
        iter([("files", files), ("instructions", _instructions_batch(archive))]), batch_rows
    )
    if builder.coerced:
        logger.warning(
            "%s of %s: %d answer items were not objects in a list; kept as answer items",
            reader.member,
            reader.shown,
            builder.coerced,
        )
    if reader.skipped:
        logger.warning(
            "skipped %d bad records in %s of %s", reader.skipped, reader.member, reader.shown
        )
    if reader.rejected:
        logger.info("quarantined %d bad records in %s", len(reader.rejected), reader.member)
        rejected = pa.RecordBatch.from_pylist(reader.rejected, schema=schema_for("rejected", kind))
        yield from _sliced(iter([("rejected", rejected)]), batch_rows)


def build_tables(
    archive: ExportArchive,
    *,
    on_bad_records: OnBadRecords = "raise",
    workers: int | None = None,
    fast_path: bool = True,
) -> ExportTables:
    """Read every table of ``archive`` into memory.

    See :func:`iter_record_batches` for ``on_bad_records``, ``workers`` and ``fast_path``.
    """
    batches: dict[str, list[pa.RecordBatch]] = {name: [] for name in table_names(archive.kind)}
    stream = iter_record_batches(
        archive, on_bad_records=on_bad_records, workers=workers, fast_path=fast_path
    )
    for name, batch in stream:
        batches[name].append(batch)
    tables = {
        name: pa.Table.from_batches(parts, schema=schema_for(name, archive.kind))
        for name, parts in batches.items()
    }
    return ExportTables(archive.kind, tables)
