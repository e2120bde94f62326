"""Ground truth of a generated archive, accumulated while the archive is written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._records import Plan, Response, SubmissionSpec

__all__ = ["TABLES", "GroundTruth", "TruthBuilder", "table_value"]

TABLES = ("submissions", "tasks", "responses", "answers", "files", "instructions")
_TASK_KEYS = {"task_id", "batch_id", "task_group_id", "datapoint", "metadata"}
_ANSWER_KEYS = (
    "value",
    "unit",
    "explanation",
    "file_key",
    "file_name",
    "file_size_mb",
    "content_type",
)


@dataclass
class GroundTruth:
    """What a correct reader must find in a generated archive.

    Row dicts use the column names of the tables in ``docs/internals.md`` (JSON
    columns such as ``datapoint`` and ``extra`` are given as Python objects, ``None``
    when absent). ``counts`` is always filled; the row lists only with ``keep_rows``.

    Attributes
    ----------
    kind : str
        ``"batch"`` or ``"collection"``.
    owner_id : str
        The batch or collection id.
    submissions, tasks, responses, answers, files, instructions : list of dict
        Expected rows per table.
    counts : dict of str to int
        Expected row count per table.
    jsonl_bytes : int
        Uncompressed size of the primary JSONL member (BOM, blank lines included).
    """

    kind: str
    owner_id: str
    submissions: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    instructions: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    jsonl_bytes: int = 0


def table_value(item: dict[str, Any]) -> tuple[str | None, str]:
    """``(value, value_type)`` of an answer item, with the tables' semantics.

    Strings verbatim; numbers and booleans as ``json.dumps``; objects and arrays as
    compact JSON; JSON null **and an absent ``value`` key** give ``(None, "null")``.
    """
    v = item.get("value")
    if v is None:
        return None, "null"
    if isinstance(v, str):
        return v, "string"
    if isinstance(v, bool):
        return json.dumps(v), "boolean"
    if isinstance(v, int | float):
        return json.dumps(v), "number"
    kind = "object" if isinstance(v, dict) else "array"
    return json.dumps(v, ensure_ascii=False, separators=(",", ":")), kind


class TruthBuilder:
    """Accumulate a :class:`GroundTruth` submission by submission."""

    def __init__(
        self, plan: Plan, result: GroundTruth, keep_rows: bool, prefix: str, uploads: bool
    ) -> None:
        self.plan = plan
        self.result = result
        self.keep = keep_rows
        self.prefix = prefix
        self.uploads = uploads
        self._group: int | None = None
        self._group_tasks: set[str] = set()

    def _add(self, table: str, row: dict[str, Any]) -> None:
        self.result.counts[table] += 1
        if self.keep:
            getattr(self.result, table).append(row)

    def instructions(self, defs: list[dict[str, Any]]) -> None:
        """Record the instruction definitions."""
        for d in defs:
            self._add(
                "instructions",
                {"instruction_id": d["id"], "type": d["type"], "description": d["description"]},
            )

    def _task(self, task: dict[str, Any], flat: bool) -> None:
        if task["task_id"] in self._group_tasks:
            return
        self._group_tasks.add(task["task_id"])
        extra = {k: v for k, v in task.items() if k not in _TASK_KEYS}
        self._add(
            "tasks",
            {
                "task_id": task["task_id"],
                "batch_id": self.plan.owner_id,
                "task_group_id": None if flat else task.get("task_group_id"),
                "datapoint": None if flat else task.get("datapoint"),
                "metadata": task.get("metadata"),
                "extra": None if flat or not extra else extra,
            },
        )

    def submission(self, spec: SubmissionSpec, kept: list[Response]) -> None:
        """Record one submission and the responses of it that the export keeps."""
        plan = self.plan
        flat = plan.layout == "flat"
        study = None if flat or plan.omit_optional else spec.study_id
        who = {"submission_id": spec.submission_id, "participant_id": spec.participant_id}
        self._add(
            "submissions",
            {
                **who,
                "study_id": study,
                plan.owner_key: plan.owner_id,
                "n_responses": len(kept),
                "extra": None if flat else plan.submission_extra(spec),
            },
        )
        group = plan.group_of(spec)
        if group != self._group:
            self._group, self._group_tasks = group, set()
        for r in kept:
            task_id = r.task["task_id"] if r.task is not None else None
            if r.task is not None:
                self._task(r.task, flat)
            base = {"instruction_id": r.body["instruction_id"], "type": r.body["type"]}
            self._add(
                "responses",
                {
                    "response_id": r.body["id"],
                    "created_at": r.body["created_at"],
                    **who,
                    "study_id": study,
                    "task_id": task_id,
                    **base,
                    "n_answers": len(r.body["answer"]),
                    "extra": r.extra,
                },
            )
            for i, item in enumerate(r.body["answer"]):
                self._answer(r, i, item, who, task_id, base)

    def _answer(
        self,
        r: Response,
        index: int,
        item: dict[str, Any],
        who: dict[str, str],
        task_id: str | None,
        base: dict[str, str],
    ) -> None:
        value, value_type = table_value(item)
        row: dict[str, Any] = {
            "response_id": r.body["id"],
            "answer_index": index,
            "submission_id": who["submission_id"],
            "participant_id": who["participant_id"],
            "task_id": task_id,
            **base,
            "value": value,
            "value_type": value_type,
        }
        row.update({k: item.get(k) for k in _ANSWER_KEYS[1:]})
        path = None
        if "file_key" in item and "file_name" in item and self.uploads:
            sub = who["submission_id"]
            path = f"{self.prefix}files/{sub}/{item['file_key']}/{item['file_name']}"
            size = next(u["_size"] for u in r.uploads if u["file_key"] == item["file_key"])
            self._add(
                "files",
                {
                    "path": path,
                    "size_bytes": size,
                    "submission_id": sub,
                    "file_key": item["file_key"],
                    "file_name": item["file_name"],
                },
            )
        row["file_path"] = path
        extra = {k: v for k, v in item.items() if k not in _ANSWER_KEYS}
        row["extra"] = extra or None
        self._add("answers", row)
