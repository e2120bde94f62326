"""The record builder: JSONL lines (parsed with orjson) -> columnar rows -> Arrow batches.

One :class:`RecordBuilder` consumes every line of the primary member in one pass. Each
line is detected as one of the record shapes of docs/internals.md (grouped by
submission, grouped by task, flat ``TaskBuilderTaskResponse``). Rows are kept as tuples
and turned into Arrow columns once per flush (see :mod:`._arrow`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ._arrow import file_paths, json_column, timestamps, typed_column
from ._records import (
    _ABSENT,
    _ANSWER_KNOWN,
    _FLAT_INNER_KNOWN,
    _RESPONSE_KNOWN,
    _TASK_KNOWN,
    BadLine,
    TaskDigests,
    _as_dict,
    _as_list,
    _extra,
    _hashable,
    _no_task,
    _value,
    answer_items,
    task_key,
)
from ._schema import schema_for

__all__ = ["RecordBuilder"]


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
