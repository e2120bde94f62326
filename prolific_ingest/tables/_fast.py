"""The block fast path: a whole block of grouped-by-submission lines at once.

Instead of one Python call per response and per answer (the per-line
:class:`~._builder.RecordBuilder`), a block is handled like this:

1. one byte scan of the whole block for integers that may exceed 64 bits
   (:func:`long_number_lines`); only the lines it flags are parsed with the stdlib;
2. every other line is parsed with ``orjson``;
3. the known keys of every level (submission, task, response, answer) are converted to
   Arrow in **one** C-level call (``pa.array`` with a nested struct type), which also
   validates their JSON types; the levels are then flattened with Arrow list offsets;
4. only what Arrow cannot do is done in Python, in a few passes over the answer and
   response objects: the mixed-type ``value``, and the objects with unknown keys.

It handles the common shape only (every line grouped by submission, well-typed known
keys, no per-response overrides of the submission's ids). Anything else raises
:class:`Fallback` *before* any state changes, and the caller re-reads the block line by
line, which produces exactly the same rows (the shared finishing code lives in
:mod:`._arrow`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from ._arrow import extra_column, file_paths, json_column, timestamps
from ._builder import RecordBuilder
from ._columns import (
    Fallback,
    _check_sizes,
    _children,
    _coerce_answers,
    _extra_column,
    _extras,
    _grouped,
    _offsets,
    _restore,
    _value_columns,
)
from ._records import _ANSWER_KNOWN, stdlib_loads, task_key

__all__ = [
    "BlockTables",
    "Fallback",
    "build_block",
    "commit_block",
    "long_number_lines",
    "parse_block",
    "split_block",
]

_SIMPLE_RESPONSE = frozenset(("id", "created_at", "instruction_id", "type", "answer"))
_OVERRIDES = frozenset(("submission_id", "participant_id", "study_id"))
_S = pa.string()
_F = pa.float64()
_ANSWER_T = pa.struct(
    [
        ("unit", _S),
        ("explanation", _S),
        ("file_key", _S),
        ("file_name", _S),
        ("file_size_mb", _F),
        ("content_type", _S),
    ]
)
_RESPONSE_T = pa.struct(
    [
        ("id", _S),
        ("created_at", _S),
        ("instruction_id", _S),
        ("type", _S),
        ("answer", pa.list_(_ANSWER_T)),
    ]
)
_TASK_T = pa.struct([("task_id", _S), ("responses", pa.list_(_RESPONSE_T))])
#: ``_records.LONG_DIGITS`` (``[:,\[]\s*-?[0-9]{19}``), found with byte operations.
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_RUN = b"0" * 19
_LINE_SPACE = frozenset(b" \t\r\f\v")
_OPENERS = frozenset(b":,[")


def _record_type(owner: str, batch: bool) -> pa.DataType:
    children = ("tasks", pa.list_(_TASK_T)) if batch else ("responses", pa.list_(_RESPONSE_T))
    ids = [(k, _S) for k in ("submission_id", "participant_id", "study_id", owner)]
    return pa.struct([*ids, children])


_RECORD_T = {
    "batch": _record_type("batch_id", True),
    "collection": _record_type("collection_id", False),
}


def split_block(block: bytes) -> list[bytes]:
    """Return the non-blank lines of a block (a trailing ``\\r`` is left on the line)."""
    return [line for line in block.split(b"\n") if line and not line.isspace()]


def long_number_lines(block: bytes) -> set[int]:
    """Return the 0-based indices (in ``block.split(b"\\n")``) of lines that may hold an
    integer beyond 64 bits: exactly the lines ``_records.maybe_big_int`` flags.

    One ``bytes.translate`` and ``bytes.find`` over the block replace a regex per line.
    """
    zeros = block.translate(_DIGITS_TO_ZERO)
    flagged: set[int] = set()
    at = zeros.find(_RUN)
    while at >= 0:
        j = at - 1
        if j >= 0 and block[j] == 0x2D:  # "-"
            j -= 1
        while j >= 0 and block[j] in _LINE_SPACE:
            j -= 1
        if j >= 0 and block[j] in _OPENERS:
            flagged.add(block.count(b"\n", 0, at))
        at = zeros.find(_RUN, at + 1)
    return flagged


def _parse(block: bytes) -> list[Any]:
    flagged = long_number_lines(block)
    try:
        if not flagged:
            return list(map(orjson.loads, split_block(block)))
        records = []
        for i, line in enumerate(block.split(b"\n")):
            if line and not line.isspace():
                records.append(stdlib_loads(line) if i in flagged else orjson.loads(line))
    except ValueError as exc:  # orjson.JSONDecodeError, json.JSONDecodeError, UnicodeError
        raise Fallback from exc
    return records


@dataclass(frozen=True)
class BlockTables:
    """The tables of one block, before the export-wide task de-duplication.

    ``tables`` are in emission order; a ``tasks`` batch there holds every task row of
    the block, ``task_keys`` their :func:`~._records.task_key` digests (one per
    row). :func:`commit_block` keeps the rows not seen before. Built without touching
    the builder's state, so a worker process can build it.
    """

    tables: list[tuple[str, pa.RecordBatch]]
    task_keys: list[bytes]
    coerced: int


def build_block(block: bytes, b: RecordBuilder) -> list[tuple[str, pa.RecordBatch]]:
    """Return the batches of a block of whole lines, or raise :class:`Fallback`."""
    return commit_block(parse_block(block, b), b)


def commit_block(result: BlockTables, b: RecordBuilder) -> list[tuple[str, pa.RecordBatch]]:
    """Add a block's :class:`BlockTables` to the export: new task rows only, counts."""
    b.coerced += result.coerced
    out = []
    for name, batch in result.tables:
        if name == "tasks":
            keep = b.claim_tasks(result.task_keys)
            if not all(keep):
                batch = batch.filter(pa.array(keep, type=pa.bool_()))
            if not batch.num_rows:
                continue
        out.append((name, batch))
    return out


def parse_block(block: bytes, b: RecordBuilder) -> BlockTables:
    """Return a block's :class:`BlockTables` (``b`` is only read), or raise :class:`Fallback`."""
    recs = _parse(block)
    if not recs:
        return BlockTables([], [], 0)
    undo: list[tuple[dict[str, Any], Any]] = []
    try:
        return _build(recs, b, undo)
    except Fallback:
        _restore(undo)
        raise Fallback(recs) from None
    except (pa.ArrowInvalid, pa.ArrowTypeError, LookupError, TypeError, ValueError) as exc:
        _restore(undo)
        raise Fallback(recs) from exc


def _build(
    recs: list[Any], b: RecordBuilder, undo: list[tuple[dict[str, Any], Any]]
) -> BlockTables:
    batch = b.kind == "batch"
    if not all(map(_grouped, recs)):
        raise Fallback
    if batch and any("responses" in r for r in recs):
        raise Fallback
    n_recs = len(recs)
    # A non-object where an object belongs raises TypeError here (-> Fallback); a string
    # where a list belongs is refused by _children.
    tasks = _children(recs, "tasks") if batch else []
    resps = _children(tasks, "responses") if batch else _children(recs, "responses")
    coerced, answers = _coerce_answers(resps, undo)
    top = pa.array(recs, type=_RECORD_T[b.kind])  # all known keys, type-checked, in C
    sub, part, study, owner = (top.field(i) for i in range(4))
    if batch:
        task_lists = top.field(4)
        task_rec, _ = _offsets(task_lists)
        task_arr = task_lists.flatten()
        resp_lists = task_arr.field(1)
        resp_task, _ = _offsets(resp_lists)
        resp_rec = task_rec[resp_task]
    else:
        resp_lists = top.field(4)
        resp_rec, _ = _offsets(resp_lists)
    resp_arr = resp_lists.flatten()
    ans_lists = resp_arr.field(4)
    if answers is None:
        answers = _children(resps, "answer")
    ans_resp, n_ans = _offsets(ans_lists)
    ans_arr = ans_lists.flatten()
    if len(resps) != len(resp_arr) or len(answers) != len(ans_arr):
        raise Fallback  # a string where a list belongs (Arrow reads it as characters)

    # submissions
    n_responses = np.bincount(resp_rec, minlength=n_recs).astype(np.int64)
    sub_extra = _extra_column(recs, b.sub_known)

    # responses
    created, bad = timestamps(resp_arr.field(1))
    resp_extras: list[dict[str, Any] | None] = []
    grouped = None if bad else extra_column(resps, _SIMPLE_RESPONSE)
    if grouped is None:  # the dict way (also to add unparseable created_at values)
        resp_extras = _extras(resps, _SIMPLE_RESPONSE)
        resp_unknown = set(chain.from_iterable(filter(None, resp_extras)))
    else:
        resp_extra, resp_unknown = grouped
    if not _OVERRIDES.isdisjoint(resp_unknown):
        raise Fallback
    resp_idx = pa.array(resp_rec)
    if batch:
        resp_task_id = task_arr.field(0).take(pa.array(resp_task))
    else:
        resp_task_id = pa.nulls(len(resps), type=_S)

    # answers
    value, value_type = _value_columns(answers)
    size_mb = ans_arr.field(4)
    _check_sizes(size_mb, answers)
    ans_extra = _extra_column(answers, _ANSWER_KNOWN)
    answer_index = np.arange(len(answers), dtype=np.int64) - np.repeat(
        np.cumsum(n_ans) - n_ans, n_ans
    )

    # -- nothing below can fall back ----------------------------------------------------
    out: list[tuple[str, pa.RecordBatch]] = []
    task_keys: list[bytes] = []
    if batch:
        task_rows = _task_rows(tasks, task_rec, owner, b)
        if task_rows:
            task_keys = list(map(task_key, task_rows))
            # the first row of each content only (repeats are never new for commit_block)
            first = dict(zip(reversed(task_keys), range(len(task_keys) - 1, -1, -1), strict=True))
            if len(first) < len(task_keys):
                keep = sorted(first.values())
                task_rows = list(map(task_rows.__getitem__, keep))
                task_keys = list(map(task_keys.__getitem__, keep))
            out.append(("tasks", b._batch("tasks", task_rows, {})))
    for i, raw in bad.items():
        resp_extras[i] = {**(resp_extras[i] or {}), "created_at": raw}
    if grouped is None:
        resp_extra = json_column(resp_extras)
    s = b.schemas
    rid, iid, rtype = resp_arr.field(0), resp_arr.field(2), resp_arr.field(3)
    out.append(
        (
            "responses",
            pa.RecordBatch.from_arrays(
                [
                    rid,
                    created,
                    sub.take(resp_idx),
                    part.take(resp_idx),
                    study.take(resp_idx),
                    resp_task_id,
                    iid,
                    rtype,
                    pa.array(n_ans),
                    resp_extra,
                ],
                schema=s["responses"],
            ),
        )
    )
    ans_idx = pa.array(ans_resp)
    ans_rec = pa.array(resp_rec[ans_resp])
    ans_sub = sub.take(ans_rec)
    file_key, file_name = ans_arr.field(2), ans_arr.field(3)
    out.append(
        (
            "answers",
            pa.RecordBatch.from_arrays(
                [
                    rid.take(ans_idx),
                    pa.array(answer_index),
                    ans_sub,
                    part.take(ans_rec),
                    resp_task_id.take(ans_idx),
                    iid.take(ans_idx),
                    rtype.take(ans_idx),
                    value,
                    value_type,
                    ans_arr.field(0),
                    ans_arr.field(1),
                    file_key,
                    file_name,
                    size_mb,
                    ans_arr.field(5),
                    file_paths(
                        ans_sub, file_key, file_name, prefix=b.files_prefix, existing=b.existing
                    ),
                    ans_extra,
                ],
                schema=s["answers"],
            ),
        )
    )
    out.append(
        (
            "submissions",
            pa.RecordBatch.from_arrays(
                [sub, part, study, owner, pa.array(n_responses), sub_extra],
                schema=s["submissions"],
            ),
        )
    )
    return BlockTables(out, task_keys, coerced)


def _task_rows(
    tasks: list[dict[str, Any]], task_rec: np.ndarray, owner: pa.Array, b: RecordBuilder
) -> list[tuple[Any, ...]]:
    """The ``tasks`` rows of a block's task objects (``None`` rows, tasks without content,
    left out), before de-duplication."""
    owners = owner.to_pylist()
    row_of = b.task_row
    rows = map(row_of, tasks, map(owners.__getitem__, task_rec.tolist()))
    return [row for row in rows if row is not None]
