"""Record builders for generated exports: one plan, regenerated on demand from seeds.

A :class:`Plan` knows the owner (batch or collection), its instructions and the
format options. Given a :class:`SubmissionSpec` it re-creates that submission's tasks
and responses from derived seeds, so nothing has to be kept in memory between the
passes that write ``responses-by-submission.jsonl``, ``responses-by-task.jsonl`` and
``files/``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import _content as c

__all__ = ["Plan", "Response", "SubmissionSpec", "plan_submissions"]

DEFAULT_START = datetime(2026, 11, 1, tzinfo=UTC)
_SUBMISSION_EXTRA = {"x_device": {"os": "linux", "mobile": False}, "completion_code": "C1X2Ω"}
_BIG_UNIT = "lorem ipsum dolor sit amet 0123456789 "


@dataclass(frozen=True)
class SubmissionSpec:
    """The identity and timing of one submission; its content is derived from seeds.

    Attributes
    ----------
    index : int
        Position of the submission in its batch/collection (also picks its task group).
    submission_id, participant_id, study_id : str
        Prolific ids (24 hex digits).
    started_at : datetime
        ``created_at`` of its first response (aware UTC).
    interval_us : int
        Microseconds between two consecutive responses of the submission.
    """

    index: int
    submission_id: str
    participant_id: str
    study_id: str
    started_at: datetime
    interval_us: int


def plan_submissions(
    seed: int,
    owner_id: str,
    n: int,
    *,
    study_ids: Sequence[str],
    created_start: datetime,
    responses_per_submission: int,
    start_index: int = 0,
    step_seconds: float | None = None,
) -> Iterator[SubmissionSpec]:
    """Yield ``n`` submission specs, spread over about five days from ``created_start``."""
    step = step_seconds or min(6 * 3600.0, max(2.0, 5 * 86400.0 / max(n, 1)))
    interval = max(1, min(30_000_000, int(step * 1e6 / (responses_per_submission + 2))))
    for i in range(start_index, start_index + n):
        rng = c.rng_for(seed, owner_id, "sub", i)
        jitter = rng.random() * step / 4
        yield SubmissionSpec(
            index=i,
            submission_id=c.hex_id(rng),
            participant_id=c.hex_id(rng),
            study_id=study_ids[rng.randrange(len(study_ids))],
            started_at=created_start + timedelta(seconds=(i - start_index) * step + jitter),
            interval_us=interval,
        )


@dataclass
class Response:
    """One generated response, with everything needed for every record shape."""

    spec: SubmissionSpec
    task_slot: int
    task: dict[str, Any] | None
    body: dict[str, Any]  # id, created_at, instruction_id, type, answer (+ unknown keys)
    extra: dict[str, Any] | None
    created: datetime
    uploads: list[dict[str, Any]] = field(default_factory=list)  # file_key, file_name, _size


@dataclass
class Plan:
    """Everything that is fixed for one batch/collection export format."""

    kind: str
    owner_id: str
    seed: int
    instructions: list[tuple[str, str]]  # (instruction_id, type)
    tasks_per_submission: int = 3
    raters_per_task: int = 3
    layout: str = "v1"
    omit_optional: bool = False
    unknown_keys: bool = True
    huge_line_bytes: int | None = None
    huge_index: int | None = None

    @property
    def owner_key(self) -> str:
        """``batch_id`` or ``collection_id``."""
        return f"{self.kind}_id"

    @property
    def responses_per_submission(self) -> int:
        """How many responses each submission has."""
        slots = self.tasks_per_submission if self.kind == "batch" else 1
        return slots * len(self.instructions)

    def task_slots(self) -> range:
        """Task slots answered by one submission (one pseudo-slot for collections)."""
        return range(self.tasks_per_submission if self.kind == "batch" else 1)

    def group_of(self, spec: SubmissionSpec) -> int:
        """The task group a submission works on."""
        return spec.index // self.raters_per_task

    def task(self, group: int, slot: int) -> dict[str, Any]:
        """Task-level fields of a task, as in the grouped records (unknown keys last)."""
        rng = c.rng_for(self.seed, self.owner_id, "task", group, slot)
        task_id = c.uuid_from(rng)
        row = group * self.tasks_per_submission + slot
        rec: dict[str, Any] = {"task_id": task_id, self.owner_key: self.owner_id}
        if not self.omit_optional:
            rec["task_group_id"] = c.uuid_from(c.rng_for(self.seed, self.owner_id, "group", group))
            rec["datapoint"] = {"text": c.text(rng), "row": row, "score": rng.randint(0, 9) / 2}
            rec["metadata"] = {"dataset_row": row, "source": "emulator", "tags": ["a", "β"]}
        if self.unknown_keys and (group + slot) % 2 == 0:
            rec["x_review_state"] = {"gold": slot == 0, "weight": 0.5}
        return rec

    def submission_extra(self, spec: SubmissionSpec) -> dict[str, Any] | None:
        """Unknown keys written at the submission level (every third submission)."""
        return dict(_SUBMISSION_EXTRA) if self.unknown_keys and spec.index % 3 == 0 else None

    def responses(self, spec: SubmissionSpec, slot: int) -> list[Response]:
        """Re-create the responses of one submission to one task slot."""
        task = self.task(self.group_of(spec), slot) if self.kind == "batch" else None
        out: list[Response] = []
        huge_pending = (
            self.huge_line_bytes is not None and spec.index == self.huge_index and slot == 0
        )
        rng = c.rng_for(self.seed, self.owner_id, "resp", spec.index, slot)
        for k, (instruction_id, itype) in enumerate(self.instructions):
            response_id = c.uuid_from(rng)
            file_seed = f"{rng.getrandbits(64):016x}"
            cover = spec.index * len(self.task_slots()) + slot
            answer = c.answer_items(
                itype, rng, file_seed, unknown_keys=self.unknown_keys, cover=cover
            )
            if huge_pending and itype == "free_text" and self.huge_line_bytes is not None:
                size = self.huge_line_bytes
                answer = [{"value": (_BIG_UNIT * (size // len(_BIG_UNIT) + 1))[:size]}]
                huge_pending = False
            uploads = [dict(item) for item in answer if "_size" in item]
            for item in answer:
                item.pop("_size", None)
            created = spec.started_at + timedelta(
                microseconds=(slot * len(self.instructions) + k) * spec.interval_us
            )
            body: dict[str, Any] = {
                "id": response_id,
                "created_at": c.iso(created),
                "instruction_id": instruction_id,
                "type": itype,
                "answer": answer,
            }
            extra = None
            if self.unknown_keys and rng.random() < 0.25:
                extra = {"time_spent_ms": rng.randint(200, 90_000)}
            out.append(Response(spec, slot, task, body, extra, created, uploads))
        return out

    # ---- record shapes -------------------------------------------------------------

    def _who(self, spec: SubmissionSpec) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "participant_id": spec.participant_id,
            "submission_id": spec.submission_id,
        }
        if not self.omit_optional:
            rec["study_id"] = spec.study_id
        return rec

    def submission_record(self, spec: SubmissionSpec, kept: list[Response]) -> dict[str, Any]:
        """A grouped-by-submission line (``responses-by-submission.jsonl``/``responses.jsonl``)."""
        rec: dict[str, Any] = {"submission_id": spec.submission_id}
        rec.update(self._who(spec))
        rec[self.owner_key] = self.owner_id
        rec.update(self.submission_extra(spec) or {})
        bodies = [{**r.body, **(r.extra or {})} for r in kept]
        if self.kind == "collection":
            rec["responses"] = bodies
            return rec
        tasks: list[dict[str, Any]] = []
        for r, body in zip(kept, bodies, strict=True):
            if not tasks or tasks[-1]["task_id"] != (r.task or {})["task_id"]:
                task = {k: v for k, v in (r.task or {}).items() if k != self.owner_key}
                tasks.append({**task, "responses": []})
            tasks[-1]["responses"].append(body)
        rec["tasks"] = tasks
        return rec

    def task_record(self, task: dict[str, Any], kept: list[Response]) -> dict[str, Any]:
        """A grouped-by-task line (``responses-by-task.jsonl``)."""
        responses = []
        for r in kept:
            body = dict(r.body)
            answer = body.pop("answer")
            rest = {k: body.pop(k) for k in ("instruction_id", "type")}
            responses.append(
                {**body, **self._who(r.spec), **rest, "answer": answer, **(r.extra or {})}
            )
        return {**task, "responses": responses}

    def flat_record(self, r: Response, *, api: bool = False) -> dict[str, Any]:
        """A ``TaskBuilderTaskResponse`` / ``CollectionResponse`` record.

        ``api=True`` adds the optional keys the JSON API sends (``schema_version`` …).
        """
        rec: dict[str, Any] = {
            "id": r.body["id"],
            "created_at": r.body["created_at"],
            self.owner_key: self.owner_id,
            "participant_id": r.spec.participant_id,
            "submission_id": r.spec.submission_id,
        }
        if r.task is not None:
            rec["task_id"] = r.task["task_id"]
            if "metadata" in r.task:
                rec["metadata"] = r.task["metadata"]
        if api and self.kind == "batch":
            rec["schema_version"] = 1
            rec["no_submission"] = False
        rec["response"] = {k: r.body[k] for k in ("instruction_id", "type", "answer")}
        rec.update(r.extra or {})
        return rec
