"""The block fast path: a whole block of grouped-by-submission lines at once.

Instead of one Python call per response and per answer (the per-line
:class:`~._tables_builder.RecordBuilder`), the block's records are parsed with orjson
and flattened level by level with list comprehensions and numpy/Arrow index arithmetic.

It handles the common shape only (every line grouped by submission, well-typed known
keys, no per-response overrides of the submission's ids). Anything else raises
:class:`Fallback` *before* any state changes, and the caller re-reads the block line by
line, which produces exactly the same rows (the shared finishing code lives in
:mod:`._tables_arrow` and ``RecordBuilder._batch``).
"""

from __future__ import annotations

from itertools import chain, compress, count, repeat
from operator import not_
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ._tables_arrow import dumps, file_paths, json_column, timestamps
from ._tables_builder import (
    _ANSWER_KNOWN,
    _TASK_KNOWN,
    RecordBuilder,
    _extra,
    maybe_big_int,
)

__all__ = ["Fallback", "build_block"]

_ABSENT: Any = object()
_SIMPLE_RESPONSE = frozenset(("id", "created_at", "instruction_id", "type", "answer"))
_OVERRIDES = ("submission_id", "participant_id", "study_id")
_S = pa.string()


class Fallback(Exception):
    """The block needs the per-line builder; ``records`` are the parsed lines, if parsed."""

    def __init__(self, records: list[Any] | None = None) -> None:
        super().__init__()
        self.records = records


def _strings(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, type=_S)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise Fallback from exc


def _get(items: list[dict[str, Any]], key: str, default: Any = None) -> list[Any]:
    """``[item.get(key, default) for item in items]`` at C speed."""
    n = len(items)
    return list(map(dict.get, items, repeat(key, n), repeat(default, n)))


def _children(parents: list[Any], key: str) -> tuple[list[Any], np.ndarray]:
    """Return the concatenated ``parent[key]`` lists (all dicts) and the count per parent."""
    lists = _get(parents, key)
    if None in lists:
        lists = [[] if x is None else x for x in lists]
    if not set(map(type, lists)) <= {list}:
        raise Fallback
    items = list(chain.from_iterable(lists))
    if not set(map(type, items)) <= {dict}:
        raise Fallback
    counts = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    return items, counts


def _extras(items: list[dict[str, Any]], known: frozenset[str]) -> list[dict[str, Any] | None]:
    """``_extra(item, known)`` for every item, visiting only the items with unknown keys."""
    extras: list[dict[str, Any] | None] = [None] * len(items)
    for i in compress(count(), map(not_, map(known.issuperset, items))):
        extras[i] = _extra(items[i], known)
    return extras


def _type_name(v: Any) -> str:
    return type(v).__name__


def _value_columns(answers: list[dict[str, Any]]) -> tuple[pa.Array, pa.Array]:
    values = _get(answers, "value", _ABSENT)
    kinds: list[Any] = ["string"] * len(values)
    if set(map(type, values)) == {str}:
        return pa.array(values, type=_S), pa.array(kinds, type=_S)
    texts: list[Any] = list(values)
    for i in compress(count(), map(str.__ne__, map(_type_name, values), repeat("str"))):
        v = values[i]
        if v is None or v is _ABSENT:
            texts[i], kinds[i] = None, "null"
        elif type(v) is bool:
            texts[i], kinds[i] = ("true" if v else "false"), "boolean"
        elif type(v) is int:
            texts[i], kinds[i] = int.__repr__(v), "number"
        elif type(v) is float:
            texts[i], kinds[i] = float.__repr__(v), "number"
        else:
            texts[i], kinds[i] = dumps(v), ("object" if type(v) is dict else "array")
    return pa.array(texts, type=_S), pa.array(kinds, type=_S)


def build_block(lines: list[bytes], b: RecordBuilder) -> list[tuple[str, pa.RecordBatch]]:
    """Return the batches of a block of non-blank lines, or raise :class:`Fallback`."""
    if not lines:
        return []
    if any(map(maybe_big_int, lines)):
        raise Fallback  # maybe integers beyond 64 bits: the per-line parser keeps them exact
    try:
        if not _grouped(orjson.loads(lines[0])):
            raise Fallback
        recs = [orjson.loads(line) for line in lines]
    except orjson.JSONDecodeError as exc:
        raise Fallback from exc
    try:
        return _build(recs, b)
    except Fallback:
        raise Fallback(recs) from None


def _grouped(r: Any) -> bool:
    if type(r) is not dict or "response" in r:
        return False
    return "tasks" in r or "submission_id" in r or "task_id" not in r


def _build(recs: list[Any], b: RecordBuilder) -> list[tuple[str, pa.RecordBatch]]:
    if not all(_grouped(r) for r in recs):
        raise Fallback
    batch = b.kind == "batch"
    n_recs = len(recs)
    if batch:
        if any("responses" in r for r in recs):
            raise Fallback
        tasks, n_tasks = _children(recs, "tasks")
        resps, n_resp = _children(tasks, "responses")
        task_rec = np.repeat(np.arange(n_recs), n_tasks)
        resp_task = np.repeat(np.arange(len(tasks)), n_resp)
        resp_rec = task_rec[resp_task]
    else:
        tasks = []
        resps, n_resp = _children(recs, "responses")
        resp_rec = np.repeat(np.arange(n_recs), n_resp)
    answers, n_ans = _children(resps, "answer")
    ans_resp = np.repeat(np.arange(len(resps)), n_ans)

    # submissions
    sub = _strings(_get(recs, "submission_id"))
    part = _strings(_get(recs, "participant_id"))
    study = _strings(_get(recs, "study_id"))
    owner = _strings(_get(recs, b.owner))
    n_responses = np.bincount(resp_rec, minlength=n_recs).astype(np.int64)
    sub_extra = json_column(_extras(recs, b.sub_known))

    # responses
    resp_extras = _extras(resps, _SIMPLE_RESPONSE)
    for extra in resp_extras:
        if extra is not None and any(k in extra for k in _OVERRIDES):
            raise Fallback
    rid = _strings(_get(resps, "id"))
    created, bad = timestamps(_get(resps, "created_at"))
    iid = _strings(_get(resps, "instruction_id"))
    rtype = _strings(_get(resps, "type"))
    resp_idx = pa.array(resp_rec)
    if batch:
        task_ids = _strings(_get(tasks, "task_id"))
        resp_task_id = pc.take(task_ids, pa.array(resp_task))
    else:
        resp_task_id = pa.nulls(len(resps), type=_S)

    # answers
    ans_idx = pa.array(ans_resp)
    offsets = np.cumsum(n_ans) - n_ans
    answer_index = np.arange(len(answers), dtype=np.int64) - np.repeat(offsets, n_ans)
    value, value_type = _value_columns(answers)
    opt = {k: _strings(_get(answers, k)) for k in ("unit", "explanation", "file_key", "file_name")}
    content_type = _strings(_get(answers, "content_type"))
    sizes = _get(answers, "file_size_mb")
    if bool in set(map(type, sizes)):
        raise Fallback
    try:
        size_mb = pa.array(sizes, type=pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise Fallback from exc
    ans_extra = json_column(_extras(answers, _ANSWER_KNOWN))

    # -- nothing below can fall back: commit state --------------------------------------
    out: list[tuple[str, pa.RecordBatch]] = []
    if batch:
        rows: list[tuple[Any, ...]] = []
        owners = owner.to_pylist()
        for t, rec_i in zip(tasks, task_rec.tolist(), strict=True):
            tid = t.get("task_id")
            if tid is None or tid in b.seen_tasks:
                continue
            b.seen_tasks.add(tid)
            known = _TASK_KNOWN if b.owner not in t else b.by_task_known
            rows.append(
                (
                    tid,
                    t.get(b.owner, owners[rec_i]),
                    t.get("task_group_id"),
                    t.get("datapoint"),
                    t.get("metadata"),
                    _extra(t, known),
                )
            )
        if rows:
            out.append(("tasks", b._batch("tasks", rows, {})))
    for i, raw in bad.items():
        resp_extras[i] = {**(resp_extras[i] or {}), "created_at": raw}
    s = b.schemas
    out.append(
        (
            "responses",
            pa.RecordBatch.from_arrays(
                [
                    rid,
                    created,
                    pc.take(sub, resp_idx),
                    pc.take(part, resp_idx),
                    pc.take(study, resp_idx),
                    resp_task_id,
                    iid,
                    rtype,
                    pa.array(n_ans),
                    json_column(resp_extras),
                ],
                schema=s["responses"],
            ),
        )
    )
    ans_sub = pc.take(sub, pc.take(resp_idx, ans_idx))
    out.append(
        (
            "answers",
            pa.RecordBatch.from_arrays(
                [
                    pc.take(rid, ans_idx),
                    pa.array(answer_index),
                    ans_sub,
                    pc.take(part, pc.take(resp_idx, ans_idx)),
                    pc.take(resp_task_id, ans_idx),
                    pc.take(iid, ans_idx),
                    pc.take(rtype, ans_idx),
                    value,
                    value_type,
                    opt["unit"],
                    opt["explanation"],
                    opt["file_key"],
                    opt["file_name"],
                    size_mb,
                    content_type,
                    file_paths(
                        ans_sub,
                        opt["file_key"],
                        opt["file_name"],
                        prefix=b.files_prefix,
                        existing=b.existing,
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
    return out
