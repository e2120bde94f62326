"""What the generator writes: :class:`ExportSpec`, the one description of an export."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from ._content import INSTRUCTION_TYPES

__all__ = ["SPEC_FIELDS", "ExportSpec"]


@dataclass(frozen=True, kw_only=True)
class ExportSpec:
    """What a generated export holds and how its archive is written.

    Every field has a default, so ``ExportSpec()`` is a small, awkward batch of 20
    submissions; change what a test needs (``ExportSpec(n_submissions=5, crlf=True)``)
    or derive one from another with :func:`dataclasses.replace`. The same spec is taken
    by :func:`make_batch_export`, :func:`make_collection_export` and
    :meth:`Emulator.add_batch` / :meth:`Emulator.add_collection`.

    Parameters
    ----------
    n_submissions : int
        Number of submissions.
    tasks_per_submission, raters_per_task : int
        Batches only: each submission answers one task group of ``tasks_per_submission``
        tasks; ``raters_per_task`` consecutive submissions share a group. A collection
        has no tasks (both count as 1).
    instruction_types : sequence of str
        One instruction per entry; see :data:`INSTRUCTION_TYPES` (kept as a tuple).
    uploads : bool
        Write uploaded files under ``files/``. When false, upload answers still name
        their files but ``files/`` is absent (and ``file_path`` is ``None``).
    seed : int
        Everything is deterministic from the seed (and the owner id).
    owner_id : str or None
        The batch or collection id (default: derived from ``seed``).
    study_ids : sequence of str or None
        The studies submissions belong to (default: two, derived from ``seed``).
    created_start : datetime or None
        ``created_at`` of the first response (default 2026-11-01T00:00:00Z);
        submissions spread over about five days.
    layout : {"v1", "flat"}
        Grouped records (the spec's assumed layout) or flat ``TaskBuilderTaskResponse``
        (``CollectionResponse``) records in every JSONL member.
    omit_optional : bool
        Leave out ``study_id``, ``task_group_id``, ``datapoint`` and ``metadata``.
    unknown_keys : bool
        Add undocumented keys at the submission, task, response and answer levels.
    huge_line_bytes : int or None
        Make the first submission's line about this large (one huge ``free_text``
        value; needs a ``free_text`` instruction).
    empty : bool
        No responses (empty JSONL members).
    omit_jsonl : bool
        No JSONL members at all.
    root_folder : str or None
        Put every member under this top-level folder.
    crlf, bom, blank_lines : bool
        CRLF line ends, UTF-8 BOM, blank lines in the JSONL members.
    compression, compresslevel : int, int or None
        ZIP compression method and level.

    Raises
    ------
    ValueError
        For an unknown ``layout``, or ``huge_line_bytes`` without a ``free_text``
        instruction.
    """

    n_submissions: int = 20
    tasks_per_submission: int = 3
    raters_per_task: int = 3
    instruction_types: Sequence[str] = INSTRUCTION_TYPES
    uploads: bool = True
    seed: int = 0
    owner_id: str | None = None
    study_ids: Sequence[str] | None = None
    created_start: datetime | None = None
    layout: str = "v1"
    omit_optional: bool = False
    unknown_keys: bool = True
    huge_line_bytes: int | None = None
    empty: bool = False
    omit_jsonl: bool = False
    root_folder: str | None = None
    crlf: bool = False
    bom: bool = False
    blank_lines: bool = False
    compression: int = zipfile.ZIP_DEFLATED
    compresslevel: int | None = None

    def __post_init__(self) -> None:
        # Sequences are kept as tuples: a spec is immutable and hashable.
        object.__setattr__(self, "instruction_types", tuple(self.instruction_types))
        if self.study_ids is not None:
            object.__setattr__(self, "study_ids", tuple(self.study_ids))
        if self.layout not in ("v1", "flat"):
            msg = f"layout must be 'v1' or 'flat', not {self.layout!r}"
            raise ValueError(msg)
        if self.huge_line_bytes is not None and "free_text" not in self.instruction_types:
            msg = "huge_line_bytes needs a 'free_text' instruction"
            raise ValueError(msg)


#: The names of every :class:`ExportSpec` field.
SPEC_FIELDS = frozenset(f.name for f in fields(ExportSpec))
