"""The record builder: JSONL lines (parsed with orjson) -> columnar rows -> Arrow batches.

One :class:`RecordBuilder` consumes every line of the primary member in one pass. Each
line is detected as one of the record shapes of docs/internals.md (grouped by
submission, grouped by task, flat ``TaskBuilderTaskResponse``). Rows are kept as tuples
and turned into Arrow columns once per flush (see :mod:`._tables_arrow`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from ._tables_arrow import dumps, file_paths, json_column, timestamps, typed_column
from ._tables_schema import schema_for

__all__ = [
    "BadLine",
    "RecordBuilder",
    "TaskDigests",
    "answer_items",
    "check_record",
    "maybe_big_int",
    "parse_line",
    "stdlib_loads",
    "task_key",
]

_ABSENT: Any = object()
_ANSWER_KNOWN = frozenset(
    ("value", "unit", "explanation", "file_key", "file_name", "file_size_mb", "content_type")
)
_RESPONSE_KNOWN = frozenset(
    (
        "id",
        "created_at",
        "instruction_id",
        "type",
        "answer",
        "participant_id",
        "submission_id",
        "study_id",
    )
)
_TASK_KNOWN = frozenset(("task_id", "task_group_id", "datapoint", "metadata", "responses"))
_FLAT_INNER_KNOWN = frozenset(("instruction_id", "type", "answer"))
#: A JSON number token of 19+ digits: maybe an integer beyond 64 bits.
_DIGITS = re.compile(rb"[0-9]{19}")
LONG_DIGITS = re.compile(rb"[:,\[]\s*-?[0-9]{19}")
#: A surrogate escape (backslash, ``u``, ``D800``-``DFFF``), or text that looks like one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_STRICT = json.JSONEncoder(ensure_ascii=False)


class BadLine(ValueError):
    """A line that is not a JSON object of a known shape (message says why)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")  # noqa: EM102


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: orjson refuses it, so must we
        raise ValueError(f"number {text} is out of range (infinity as a double)")  # noqa: EM102
    return value


def maybe_big_int(line: bytes) -> bool:
    """Whether ``line`` may hold an integer beyond 64 bits (a cheap scan first)."""
    return _DIGITS.search(line) is not None and LONG_DIGITS.search(line) is not None


def stdlib_loads(line: bytes) -> Any:
    """Parse ``line`` with the stdlib ``json``, refusing what orjson refuses too.

    orjson reads integers beyond 64 bits as floats, so lines that may hold one are parsed
    here instead (integers stay exact). Everything else must be judged as orjson judges
    it, so a line is a bad record whichever parser reads it: ``NaN``/``Infinity``, numbers
    beyond the double range (``1e400``) and lone UTF-16 surrogate escapes (``"\\ud83d"``,
    which no UTF-8 text can hold) raise :class:`ValueError`, as does nesting too deep.
    The one difference: "too deep" is about 1000 levels here (Python's recursion limit)
    and 1024 for orjson, so a line nested 1000-1024 levels that also holds a 19+-digit
    integer is a bad record where the same line without it is read.
    """
    try:
        record = json.loads(
            line.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
        if _SURROGATE_ESCAPE.search(line):  # maybe a lone surrogate: strict re-encoding
            _STRICT.encode(record).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("lone surrogate escape in a string (not valid Unicode)") from exc  # noqa: EM101
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc  # noqa: EM101
    return record


def parse_line(line: bytes) -> dict[str, Any]:
    """Parse one JSONL line into a dict; raise :class:`BadLine` when it is not an object.

    orjson reads integers beyond 64 bits as floats; a line with a long run of digits is
    therefore parsed with the stdlib instead (:func:`stdlib_loads`), so such integers stay
    exact.
    """
    try:
        record = stdlib_loads(line) if maybe_big_int(line) else orjson.loads(line)
    except ValueError as exc:  # orjson.JSONDecodeError, json.JSONDecodeError, UnicodeError
        raise BadLine(f"invalid JSON: {exc}") from exc  # noqa: EM102
    return check_record(record)


def check_record(record: Any) -> dict[str, Any]:
    """Return ``record`` if it is a dict; raise :class:`BadLine` otherwise."""
    if type(record) is not dict:
        raise BadLine(f"line is valid JSON but a {type(record).__name__}, not an object")  # noqa: EM102
    return record


def _value(item: dict[str, Any]) -> tuple[str | None, str | None]:
    value = item.get("value", _ABSENT)
    kind = type(value)
    if kind is str:
        return value, "string"
    if value is None or value is _ABSENT:
        return None, "null"
    if kind is bool:
        return ("true" if value else "false"), "boolean"
    if kind is int:
        return int.__repr__(value), "number"
    if kind is float:
        return float.__repr__(value), "number"
    return dumps(value), ("object" if kind is dict else "array")


def _extra(obj: dict[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    if known.issuperset(obj):
        return None
    return {k: v for k, v in obj.items() if k not in known}


def task_key(row: tuple[Any, ...]) -> bytes:
    """The 128-bit digest of a ``tasks`` row's exact content (its de-duplication key).

    A digest, not the text: thousands of long-lived texts scattered through the parse's
    short-lived objects kept ~45 MB of the allocator's arenas in use.
    """
    try:
        text = orjson.dumps(row)
    except TypeError:  # an integer beyond 64 bits
        text = b"\0" + dumps(row).encode("utf-8")
    return hashlib.blake2b(text, digest_size=16).digest()


class TaskDigests:
    """The set of :func:`task_key` digests seen in an export, 16 bytes an entry.

    A Python set of 16-byte ``bytes`` costs about 100 bytes an entry: some 140 MB over a
    10 GB export (about 1.4 million distinct task rows). Here the digests live in a few
    sorted levels, each two NumPy ``uint64`` arrays (the digest's halves, sorted by the
    first: exactly 16 bytes an entry); only the latest, fewer than
    :data:`RECENT`, are in a Python set. :meth:`settle` (called between records and
    blocks, never inside one, so :meth:`forget` only touches the recent set) turns a full
    recent set into a level and merges levels of similar size, like a binary counter: at
    most ``log2(n / RECENT) + 1`` levels, each digest copied O(log n) times. Memory is
    thus proportional to the export's distinct task rows (the ``tasks`` table's own row
    count) at 16 bytes each, plus a set of bounded size.
    """

    #: The recent set is turned into a sorted level when it reaches this size.
    RECENT = 4096

    def __init__(self) -> None:
        self.levels: list[tuple[np.ndarray, np.ndarray]] = []  # (first, second), largest first
        self.recent: set[bytes] = set()

    def __len__(self) -> int:
        return sum(len(first) for first, _ in self.levels) + len(self.recent)

    @property
    def nbytes(self) -> int:
        """Bytes held by the sorted levels (16 per digest)."""
        return sum(first.nbytes + second.nbytes for first, second in self.levels)

    def __contains__(self, key: bytes) -> bool:
        return key in self.recent or bool(self._in_levels([key])[0])

    def _in_levels(self, keys: list[bytes]) -> list[bool]:
        halves = np.frombuffer(b"".join(keys), dtype=np.uint64).reshape(-1, 2)
        order = np.argsort(halves[:, 0])  # sorted needles: searchsorted reads memory in order
        want_first, want_second = halves[order, 0], halves[order, 1]
        found = np.zeros(len(keys), dtype=bool)
        for first, second in self.levels:
            left = np.searchsorted(first, want_first, side="left")
            right = np.searchsorted(first, want_first, side="right")
            hit = (right > left) & (second[np.minimum(left, len(first) - 1)] == want_second)
            found |= hit
            # first halves shared by several digests (about never): look at each of them
            for i in np.flatnonzero(~hit & (right - left > 1)).tolist():
                found[i] |= bool((second[left[i] : right[i]] == want_second[i]).any())
        in_order = np.empty_like(found)
        in_order[order] = found
        return in_order.tolist()

    def add(self, key: bytes) -> None:
        """Mark ``key`` seen (:meth:`settle` later keeps the recent set bounded)."""
        self.recent.add(key)

    def forget(self, keys: list[bytes]) -> None:
        """Unmark keys added since the last :meth:`settle` (a record that was refused)."""
        self.recent.difference_update(keys)

    def claim(self, keys: list[bytes]) -> list[bool]:
        """For each key, whether it is new (and mark it seen), in order; then settle."""
        old = self._in_levels(keys) if self.levels else [False] * len(keys)
        recent = self.recent
        keep = []
        for key, seen in zip(keys, old, strict=True):
            new = not seen and key not in recent
            if new:
                recent.add(key)
            keep.append(new)
        self.settle()
        return keep

    def settle(self) -> None:
        """Turn a full recent set into a sorted level, merging levels of similar size."""
        if len(self.recent) < self.RECENT:
            return
        halves = np.frombuffer(b"".join(self.recent), dtype=np.uint64).reshape(-1, 2)
        self.recent = set()
        order = np.argsort(halves[:, 0], kind="stable")
        first, second = halves[order, 0], halves[order, 1]
        while self.levels and len(self.levels[-1][0]) <= 2 * len(first):
            first, second = _merge(*self.levels.pop(), first, second)
        self.levels.append((first, second))


def _merge(
    a_first: np.ndarray, a_second: np.ndarray, b_first: np.ndarray, b_second: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two levels sorted by first half as one (O(n): no sort)."""
    at = np.searchsorted(a_first, b_first) + np.arange(len(b_first))
    from_b = np.zeros(len(a_first) + len(b_first), dtype=bool)
    from_b[at] = True
    first = np.empty(len(from_b), dtype=np.uint64)
    second = np.empty(len(from_b), dtype=np.uint64)
    first[at], second[at] = b_first, b_second
    first[~from_b], second[~from_b] = a_first, a_second
    return first, second


def _hashable(value: Any) -> Any:
    """``value`` if it is a string or null, else a hashable stand-in for it.

    Ids are grouped and deduplicated by value; an id of the wrong JSON type (a list, an
    object, a number) is grouped by its JSON type and text, so ``1``, ``1.0`` and ``true``
    stay apart and a list or object never raises ``TypeError: unhashable type``.
    """
    if value is None or type(value) is str:
        return value
    return (type(value).__name__, dumps(value))


_NO_TASK_CONTENT = (None, None, None, None)


def _no_task(row: tuple[Any, ...]) -> bool:
    """Whether a task row has neither a ``task_id`` nor content (its owner is the line's)."""
    return row[0] is None and row[2:] == _NO_TASK_CONTENT


def _as_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        raise BadLine(f"{what} is a {type(value).__name__}, not a list")  # noqa: EM102
    return value


def answer_items(answer: Any) -> tuple[list[Any], int]:
    """Return ``answer`` as a list of answer objects, and how many items were coerced.

    The documented shape is a list of objects. Anything else is kept rather than
    rejected (``video_narration`` answers are undocumented): ``null`` or absent is no
    item; a single object is a one-item list; a bare scalar (or any non-object list
    item, arrays included) becomes an item ``{"value": <it>}``, so the usual ``value``
    / ``value_type`` semantics apply. Each such object or scalar counts as coerced.
    """
    if answer is None:
        return [], 0
    kind = type(answer)
    if kind is list:
        odd = sum(type(item) is not dict for item in answer)
        if not odd:
            return answer, 0
        return [item if type(item) is dict else {"value": item} for item in answer], odd
    if kind is dict:
        return [answer], 1
    return [{"value": answer}], 1


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise BadLine(f"{what} is a {type(value).__name__}, not an object")  # noqa: EM102
    return value


class RecordBuilder:
    """Accumulate rows of every table from parsed records; flush them as record batches.

    Parameters
    ----------
    kind : {"batch", "collection"}
    files_prefix : str
        ``"<root>files/"``: prefix of uploaded-file members.
    existing_files : list of str
        Every uploaded-file member path (for ``answers.file_path``).
    batch_rows : int
        Flush responses/answers when either reaches this many rows.
    """

    def __init__(
        self, kind: str, *, files_prefix: str, existing_files: list[str], batch_rows: int
    ) -> None:
        self.kind = kind
        self.owner = f"{kind}_id"
        self.batch_rows = batch_rows
        self.files_prefix = files_prefix
        self.existing = pa.array(existing_files, type=pa.string())
        self.schemas = {
            name: schema_for(name, kind)
            for name in ("submissions", "tasks", "responses", "answers")
        }
        self.sub_known = frozenset(
            ("submission_id", "participant_id", "study_id", self.owner, "responses")
            + (("tasks",) if kind == "batch" else ())
        )
        self.by_task_known = _TASK_KNOWN | {self.owner}
        self.coll_task_known = frozenset(("task_id", self.owner, "responses"))
        flat = {"id", "created_at", self.owner, "participant_id", "submission_id", "study_id"}
        flat |= {"task_id", "response"}
        if kind == "batch":
            flat |= {"task_group_id", "metadata"}
        self.flat_known = frozenset(flat)
        self.submissions: list[tuple[Any, ...]] = []
        self.aggregated: dict[tuple[Any, ...], list[Any]] = {}
        self.tasks: list[tuple[Any, ...]] = []
        self.seen_tasks = TaskDigests()
        self.responses: list[tuple[Any, ...]] = []
        self.answers: list[tuple[Any, ...]] = []
        #: Answer items that were not objects in a list (see :func:`answer_items`).
        self.coerced = 0

    # -- records -------------------------------------------------------------------------
    def add(self, record: dict[str, Any]) -> None:
        """Add the rows of one parsed record; on :class:`BadLine` nothing is kept."""
        marks = (len(self.submissions), len(self.tasks), len(self.responses), len(self.answers))
        coerced = self.coerced
        new_tasks: list[Any] = []
        pending: list[tuple[Any, ...]] = []
        try:
            if "response" in record:
                self._flat(record, new_tasks, pending)
            elif "tasks" in record or "submission_id" in record or "task_id" not in record:
                self._grouped_submission(record, new_tasks)
            else:
                self._grouped_task(record, new_tasks, pending)
        except BadLine:
            del self.submissions[marks[0] :], self.tasks[marks[1] :]
            del self.responses[marks[2] :], self.answers[marks[3] :]
            self.seen_tasks.forget(new_tasks)
            self.coerced = coerced
            raise
        self.seen_tasks.settle()
        for key, sub, part, study, owner in pending:
            row = self.aggregated.get(key)
            if row is None:
                self.aggregated[key] = [sub, part, study, owner, 1]
            else:
                row[4] += 1

    def task_row(self, task: dict[str, Any], owner: Any) -> tuple[Any, ...] | None:
        """The ``tasks`` row of a task object in a submission line whose owner is ``owner``.

        ``None`` when the task holds nothing but its responses (no id, no content).
        """
        own = task.get(self.owner)
        if own is None:
            extra = _extra(task, _TASK_KNOWN if self.owner not in task else self.by_task_known)
        else:
            extra = _extra(task, self.by_task_known)
            owner = own
        row = (
            task.get("task_id"),
            owner,
            task.get("task_group_id"),
            task.get("datapoint"),
            task.get("metadata"),
            extra,
        )
        return None if own is None and _no_task(row) else row

    def claim_tasks(self, keys: list[bytes]) -> list[bool]:
        """For each :func:`task_key`, whether it is new (and mark it seen), in order."""
        return self.seen_tasks.claim(keys) if keys else []

    def add_task(self, row: tuple[Any, ...] | None, new_tasks: list[Any]) -> None:
        """Keep ``row`` unless a task row with exactly the same content was kept before."""
        if row is None:
            return
        key = task_key(row)
        if key in self.seen_tasks:
            return
        self.seen_tasks.add(key)
        new_tasks.append(key)
        self.tasks.append(row)

    def _grouped_submission(self, rec: dict[str, Any], new_tasks: list[Any]) -> None:
        sub = rec.get("submission_id")
        part = rec.get("participant_id")
        study = rec.get("study_id")
        owner = rec.get(self.owner)
        n = 0
        if self.kind == "batch":
            for task in _as_list(rec.get("tasks"), "tasks"):
                task = _as_dict(task, "a task")
                self.add_task(self.task_row(task, owner), new_tasks)
                task_id = task.get("task_id")
                n += self._responses(task.get("responses"), sub, part, study, task_id)
        n += self._responses(rec.get("responses"), sub, part, study, None)
        self.submissions.append((sub, part, study, owner, n, _extra(rec, self.sub_known)))

    def _grouped_task(
        self, rec: dict[str, Any], new_tasks: list[Any], pending: list[tuple[Any, ...]]
    ) -> None:
        task_id = rec.get("task_id")
        owner = rec.get(self.owner)
        outer = None
        if self.kind == "batch":
            extra = _extra(rec, self.by_task_known)
            keys = (rec.get("task_group_id"), rec.get("datapoint"), rec.get("metadata"))
            row = (task_id, owner, *keys, extra)
            self.add_task(None if _no_task(row) else row, new_tasks)
        else:  # no tasks table: the task's other keys go with each of its responses
            outer = _extra(rec, self.coll_task_known)
        start = len(self.responses)
        self._responses(rec.get("responses"), None, None, None, task_id, outer)
        for r in self.responses[start:]:
            key = (_hashable(r[2]),) if r[2] is not None else (None, _hashable(r[3]))
            pending.append((key, r[2], r[3], r[4], owner))

    def _flat(
        self, rec: dict[str, Any], new_tasks: list[Any], pending: list[tuple[Any, ...]]
    ) -> None:
        inner = _as_dict(rec["response"], "response")
        sub = rec.get("submission_id")
        part = rec.get("participant_id")
        study = rec.get("study_id")
        task_id = rec.get("task_id")
        owner = rec.get(self.owner)
        extra = _extra(rec, self.flat_known)
        inner_extra = _extra(inner, _FLAT_INNER_KNOWN)
        if inner_extra:
            extra = {**(extra or {}), "response": inner_extra}
        if self.kind == "batch":
            row = (task_id, owner, rec.get("task_group_id"), None, rec.get("metadata"), None)
            self.add_task(None if _no_task(row) else row, new_tasks)
        merged = {
            "id": rec.get("id"),
            "created_at": rec.get("created_at", _ABSENT),
            "instruction_id": inner.get("instruction_id"),
            "type": inner.get("type"),
            "answer": inner.get("answer"),
        }
        self._response(merged, sub, part, study, task_id, extra)
        key = (_hashable(sub),) if sub is not None else (None, _hashable(part))
        pending.append((key, sub, part, study, owner))

    def _responses(
        self,
        items: Any,
        sub: Any,
        part: Any,
        study: Any,
        task_id: Any,
        outer: dict[str, Any] | None = None,
    ) -> int:
        """Add the responses of a list; ``outer``: keys kept in each one's ``extra["task"]``."""
        items = _as_list(items, "responses")
        for r in items:
            r = _as_dict(r, "a response")
            extra = _extra(r, _RESPONSE_KNOWN)
            if outer is not None:
                key = "task"
                while extra is not None and key in extra:  # the response's own "task" key
                    key = "_" + key
                extra = {**(extra or {}), key: outer}
            # The response's own id, else (absent or null) the enclosing record's.
            own_sub = r.get("submission_id")
            own_part = r.get("participant_id")
            own_study = r.get("study_id")
            self._response(
                r,
                sub if own_sub is None else own_sub,
                part if own_part is None else own_part,
                study if own_study is None else own_study,
                task_id,
                extra,
            )
        return len(items)

    def _response(
        self,
        r: dict[str, Any],
        sub: Any,
        part: Any,
        study: Any,
        task_id: Any,
        extra: dict[str, Any] | None,
    ) -> None:
        rid = r.get("id")
        iid = r.get("instruction_id")
        rtype = r.get("type")
        answer, coerced = answer_items(r.get("answer"))
        self.coerced += coerced
        created = r.get("created_at")
        if created is _ABSENT:
            created = None
        self.responses.append(
            (rid, created, sub, part, study, task_id, iid, rtype, len(answer), extra)
        )
        append = self.answers.append
        for index, item in enumerate(answer):
            text, vtype = _value(item)
            get = item.get
            append(
                (
                    rid,
                    index,
                    sub,
                    part,
                    task_id,
                    iid,
                    rtype,
                    text,
                    vtype,
                    get("unit"),
                    get("explanation"),
                    get("file_key"),
                    get("file_name"),
                    get("file_size_mb"),
                    get("content_type"),
                    None if _ANSWER_KNOWN.issuperset(item) else _extra(item, _ANSWER_KNOWN),
                )
            )

    # -- output --------------------------------------------------------------------------
    @property
    def full(self) -> bool:
        """Whether responses or answers reached ``batch_rows``."""
        return len(self.answers) >= self.batch_rows or len(self.responses) >= self.batch_rows

    def _batch(
        self, name: str, rows: list[tuple[Any, ...]], keys: dict[int, str]
    ) -> pa.RecordBatch:
        schema = self.schemas[name]
        columns = list(zip(*rows, strict=True))
        extras: list[dict[str, Any] | None] = list(columns[-1])
        arrays: dict[int, pa.Array] = {}
        for i, field in enumerate(schema):
            if field.name in ("extra", "created_at", "file_path"):
                continue
            if field.name in ("datapoint", "metadata"):
                arrays[i] = json_column(columns[i])
            else:
                arrays[i] = typed_column(
                    list(columns[i]), field.type, keys.get(i, field.name), extras
                )
        if name == "responses":
            arrays[1], bad = timestamps(columns[1])
            for i, raw in bad.items():
                extras[i] = {**(extras[i] or {}), "created_at": raw}
        if name == "answers":
            arrays[15] = file_paths(
                arrays[2], arrays[11], arrays[12], prefix=self.files_prefix, existing=self.existing
            )
        arrays[len(schema) - 1] = json_column(extras)
        return pa.RecordBatch.from_arrays([arrays[i] for i in range(len(schema))], schema=schema)

    def flush(
        self, *, final: bool = False, force: bool = False
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Yield the accumulated rows as ``(table, batch)``; ``final`` adds aggregated rows."""
        if final:
            self.submissions.extend((*row, None) for row in self.aggregated.values())
            self.aggregated = {}
        for name, rows, keys in (
            ("tasks", self.tasks, {}),
            ("responses", self.responses, {0: "id"}),
            ("answers", self.answers, {0: "id"}),
            ("submissions", self.submissions, {}),
        ):
            if name == "tasks" and self.kind != "batch":
                continue
            if name == "submissions" and not (final or force or len(rows) >= self.batch_rows):
                continue
            if rows:
                yield name, self._batch(name, rows, keys)
                rows.clear()
