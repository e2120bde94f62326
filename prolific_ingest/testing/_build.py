"""The archive builder behind :mod:`prolific_ingest.testing.generator`."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import _content as c
from ._metadata import instruction_defs, owner_object, readme
from ._records import DEFAULT_START, Plan, Response, SubmissionSpec, plan_submissions
from ._spec import ExportSpec
from ._truth import GroundTruth, TruthBuilder
from ._zipwriter import LineWriter, dumps

__all__ = ["ExportFilter", "build_plan", "default_owner_id", "default_study_ids", "make"]


@dataclass(frozen=True)
class ExportFilter:
    study_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def keep(self, r: Response) -> bool:
        if self.study_id is not None and r.spec.study_id != self.study_id:
            return False
        if self.since is not None and r.created < self.since:
            return False
        return self.until is None or r.created < self.until


def default_owner_id(seed: int, kind: str) -> str:
    return c.uuid_from(c.rng_for(seed, kind, "owner-id"))


def default_study_ids(seed: int, owner_id: str) -> tuple[str, str]:
    rng = c.rng_for(seed, owner_id, "studies")
    return c.hex_id(rng), c.hex_id(rng)


def build_plan(kind: str, spec: ExportSpec, owner_id: str) -> Plan:
    """Return the :class:`Plan` shared by every export of one owner (``spec`` is valid)."""
    rng = c.rng_for(spec.seed, owner_id, "instructions")
    batch = kind == "batch"
    return Plan(
        kind=kind,
        owner_id=owner_id,
        seed=spec.seed,
        instructions=[(c.uuid_from(rng), t) for t in spec.instruction_types],
        tasks_per_submission=max(1, spec.tasks_per_submission) if batch else 1,
        raters_per_task=max(1, spec.raters_per_task) if batch else 1,
        layout=spec.layout,
        omit_optional=spec.omit_optional,
        unknown_keys=spec.unknown_keys,
        huge_line_bytes=spec.huge_line_bytes,
    )


class _Specs:
    """Submission specs: an explicit list, or generated lazily by index."""

    def __init__(
        self, plan: Plan, explicit: Sequence[SubmissionSpec] | None, spec: ExportSpec
    ) -> None:
        self._plan = plan
        self._list = sorted(explicit, key=lambda s: s.index) if explicit is not None else None
        self._spec = spec
        self._n = 0 if spec.empty else spec.n_submissions
        self.n = len(self._list) if self._list is not None else self._n

    def __iter__(self) -> Iterator[SubmissionSpec]:
        if self._list is not None:
            return iter(self._list)
        spec = self._spec
        return plan_submissions(
            self._plan.seed,
            self._plan.owner_id,
            self._n,
            study_ids=spec.study_ids or default_study_ids(spec.seed, self._plan.owner_id),
            created_start=spec.created_start or DEFAULT_START,
            responses_per_submission=self._plan.responses_per_submission,
        )

    def groups(self) -> Iterator[list[SubmissionSpec]]:
        """Specs grouped by task group, in group order (groups are contiguous by index)."""
        current: list[SubmissionSpec] = []
        for spec in self:
            if current and self._plan.group_of(current[0]) != self._plan.group_of(spec):
                yield current
                current = []
            current.append(spec)
        if current:
            yield current

    def n_groups(self) -> int:
        if self._list is None:
            return -(-self.n // self._plan.raters_per_task)
        return len({self._plan.group_of(s) for s in self._list})


def _kept(plan: Plan, spec: SubmissionSpec, flt: ExportFilter) -> list[Response]:
    return [r for slot in plan.task_slots() for r in plan.responses(spec, slot) if flt.keep(r)]


def _write(
    plan: Plan,
    path: str | Path | None,
    specs: _Specs,
    flt: ExportFilter,
    export: ExportSpec,
    keep_rows: bool,
) -> GroundTruth:
    root_folder, uploads = export.root_folder, export.uploads
    prefix = f"{root_folder.strip('/')}/" if root_folder else ""
    truth = TruthBuilder(plan, GroundTruth(plan.kind, plan.owner_id), keep_rows, prefix, uploads)
    truth.instructions(instruction_defs(plan))
    fmt = {
        "crlf": export.crlf,
        "bom": export.bom,
        "blank_lines": export.blank_lines,
        "zip64": not keep_rows,
    }
    primary = "responses-by-submission.jsonl" if plan.kind == "batch" else "responses.jsonl"
    zf = (
        zipfile.ZipFile(path, "w", export.compression, compresslevel=export.compresslevel)
        if path
        else None
    )
    try:
        if zf is not None:
            if prefix:
                zf.writestr(prefix, b"")
            zf.writestr(prefix + "README.md", readme(plan.kind))
            meta = owner_object(plan, n_groups=specs.n_groups())
            zf.writestr(f"{prefix}{plan.kind}.json", dumps(meta) + b"\n")
        if export.omit_jsonl:
            return truth.result
        writer = LineWriter(zf, prefix + primary, **fmt) if zf is not None else None
        for spec in specs:
            kept = _kept(plan, spec, flt)
            if not kept:
                continue
            truth.submission(spec, kept)
            if writer is not None:
                if plan.layout == "flat":
                    for r in kept:
                        writer.write(plan.flat_record(r))
                else:
                    writer.write(plan.submission_record(spec, kept))
        if writer is None or zf is None:
            return truth.result
        writer.close()
        truth.result.jsonl_bytes = writer.bytes_written
        if plan.kind == "batch":
            with LineWriter(zf, prefix + "responses-by-task.jsonl", **fmt) as by_task:
                for record in _task_records(plan, specs, flt):
                    by_task.write(record)
        if uploads and truth.result.counts["files"]:
            _write_files(zf, plan, specs, flt, prefix)
        return truth.result
    finally:
        if zf is not None:
            zf.close()


def _task_records(plan: Plan, specs: _Specs, flt: ExportFilter) -> Iterable[dict[str, Any]]:
    for group in specs.groups():
        for slot in plan.task_slots():
            kept = [r for spec in group for r in plan.responses(spec, slot) if flt.keep(r)]
            if not kept:
                continue
            if plan.layout == "flat":
                yield from (plan.flat_record(r) for r in kept)
            else:
                yield plan.task_record(kept[0].task or {}, kept)


def _write_files(
    zf: zipfile.ZipFile, plan: Plan, specs: _Specs, flt: ExportFilter, prefix: str
) -> None:
    zf.writestr(prefix + "files/", b"")
    for spec in specs:
        for r in _kept(plan, spec, flt):
            for up in r.uploads:
                name = f"{prefix}files/{spec.submission_id}/{up['file_key']}/{up['file_name']}"
                zf.writestr(name, c.file_bytes(up["file_key"], up["_size"]))


def make(
    spec: ExportSpec,
    kind: str,
    path: str | Path | None,
    *,
    flt: ExportFilter | None = None,
    keep_rows: bool = True,
    submissions: Sequence[SubmissionSpec] | None = None,
) -> GroundTruth:
    """Write the ``kind`` export ``spec`` describes at ``path`` (``None``: truth only).

    ``flt`` keeps what an export with that filter holds; ``submissions`` replaces the
    generated ones (the emulator's snapshots).
    """
    plan = build_plan(kind, spec, spec.owner_id or default_owner_id(spec.seed, kind))
    explicit = [] if spec.empty and submissions is not None else submissions
    specs = _Specs(plan, explicit, spec)
    first = next(iter(specs), None)
    plan.huge_index = first.index if first is not None else None
    return _write(plan, path, specs, flt or ExportFilter(), spec, keep_rows)
