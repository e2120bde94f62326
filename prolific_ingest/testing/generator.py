"""Generate Prolific export archives (ZIP of JSONL) with their ground truth.

:func:`make_batch_export` and :func:`make_collection_export` write an archive that is
consistent across all of its members and return a :class:`GroundTruth` describing what
a correct reader must find in it. Content is a pure function of ``seed`` (and of the
owner id); every response is regenerated from a derived seed, so archives of any size
are written with bounded memory (pass ``keep_rows=False`` for large ones).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from . import _content as c
from ._build import make
from ._records import SubmissionSpec
from ._truth import GroundTruth

__all__ = [
    "INSTRUCTION_TYPES",
    "GroundTruth",
    "SubmissionSpec",
    "make_batch_export",
    "make_collection_export",
]

INSTRUCTION_TYPES = c.INSTRUCTION_TYPES


def make_batch_export(
    path: str | Path | None,
    *,
    n_submissions: int = 20,
    tasks_per_submission: int = 3,
    raters_per_task: int = 3,
    instruction_types: Sequence[str] = INSTRUCTION_TYPES,
    uploads: bool = True,
    seed: int = 0,
    layout: str = "v1",
    root_folder: str | None = None,
    batch_id: str | None = None,
    study_ids: Sequence[str] | None = None,
    crlf: bool = False,
    bom: bool = False,
    blank_lines: bool = False,
    huge_line_bytes: int | None = None,
    omit_optional: bool = False,
    unknown_keys: bool = True,
    empty: bool = False,
    omit_jsonl: bool = False,
    created_start: datetime | None = None,
    keep_rows: bool = True,
    compression: int = zipfile.ZIP_DEFLATED,
    compresslevel: int | None = None,
    submissions: Sequence[SubmissionSpec] | None = None,
    study_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> GroundTruth:
    """Write a batch export ZIP at ``path`` and return its ground truth.

    Parameters
    ----------
    path : str, Path or None
        Where to write the archive; ``None`` computes the ground truth only.
    n_submissions : int
        Number of submissions (ignored when ``submissions`` is given).
    tasks_per_submission, raters_per_task : int
        Each submission answers one task group of ``tasks_per_submission`` tasks;
        ``raters_per_task`` consecutive submissions share a group.
    instruction_types : sequence of str
        One instruction per entry; see :data:`INSTRUCTION_TYPES`.
    uploads : bool
        Write uploaded files under ``files/``. When false, upload answers still name
        their files but ``files/`` is absent (and ``file_path`` is ``None``).
    seed : int
        Everything is deterministic from the seed (and the batch id).
    layout : {"v1", "flat"}
        Grouped records (the spec's assumed layout) or flat ``TaskBuilderTaskResponse``
        records in both JSONL members.
    root_folder : str or None
        Put every member under this top-level folder.
    batch_id, study_ids : optional
        Fixed ids (default: derived from ``seed``; two study ids).
    crlf, bom, blank_lines : bool
        CRLF line ends, UTF-8 BOM, blank lines in the JSONL members.
    huge_line_bytes : int or None
        Make the first submission's line about this large (one huge ``free_text`` value).
    omit_optional : bool
        Leave out ``study_id``, ``task_group_id``, ``datapoint`` and ``metadata``.
    unknown_keys : bool
        Add undocumented keys at the submission, task, response and answer levels.
    empty, omit_jsonl : bool
        No responses (empty JSONL members), or no JSONL members at all.
    created_start : datetime or None
        ``created_at`` of the first response (default 2026-11-01T00:00:00Z);
        submissions spread over about five days.
    keep_rows : bool
        Fill the row lists of the ground truth (``counts`` is always filled). Use
        ``False`` for large archives: memory then stays bounded.
    compression, compresslevel
        ZIP compression method and level.
    submissions : sequence of SubmissionSpec or None
        Internal (the emulator's snapshots): exact submissions to write.
    study_id, since, until
        The export filter: keep submissions of ``study_id`` and responses with
        ``since <= created_at < until``; submissions left empty are dropped.

    Returns
    -------
    GroundTruth
    """
    return make(
        "batch",
        path,
        n_submissions=n_submissions,
        tasks_per_submission=tasks_per_submission,
        raters_per_task=raters_per_task,
        instruction_types=instruction_types,
        uploads=uploads,
        seed=seed,
        layout=layout,
        root_folder=root_folder,
        owner_id=batch_id,
        study_ids=study_ids,
        crlf=crlf,
        bom=bom,
        blank_lines=blank_lines,
        huge_line_bytes=huge_line_bytes,
        omit_optional=omit_optional,
        unknown_keys=unknown_keys,
        empty=empty,
        omit_jsonl=omit_jsonl,
        created_start=created_start,
        keep_rows=keep_rows,
        compression=compression,
        compresslevel=compresslevel,
        submissions=submissions,
        study_id=study_id,
        since=since,
        until=until,
    )


def make_collection_export(
    path: str | Path | None,
    *,
    n_submissions: int = 20,
    instruction_types: Sequence[str] = INSTRUCTION_TYPES,
    uploads: bool = True,
    seed: int = 0,
    layout: str = "v1",
    root_folder: str | None = None,
    collection_id: str | None = None,
    study_ids: Sequence[str] | None = None,
    crlf: bool = False,
    bom: bool = False,
    blank_lines: bool = False,
    huge_line_bytes: int | None = None,
    omit_optional: bool = False,
    unknown_keys: bool = True,
    empty: bool = False,
    omit_jsonl: bool = False,
    created_start: datetime | None = None,
    keep_rows: bool = True,
    compression: int = zipfile.ZIP_DEFLATED,
    compresslevel: int | None = None,
    submissions: Sequence[SubmissionSpec] | None = None,
    study_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> GroundTruth:
    """Write a collection export ZIP at ``path`` and return its ground truth.

    The archive holds ``responses.jsonl`` (one line per submission, each answering
    every instruction once), ``collection.json``, ``README.md`` and ``files/``. The
    flat layout writes ``CollectionResponse`` records. Parameters are those of
    :func:`make_batch_export` (without tasks); ``collection_id`` fixes the id.

    Returns
    -------
    GroundTruth
        With ``tasks`` empty and ``task_id`` ``None`` everywhere.
    """
    return make(
        "collection",
        path,
        n_submissions=n_submissions,
        tasks_per_submission=1,
        raters_per_task=1,
        instruction_types=instruction_types,
        uploads=uploads,
        seed=seed,
        layout=layout,
        root_folder=root_folder,
        owner_id=collection_id,
        study_ids=study_ids,
        crlf=crlf,
        bom=bom,
        blank_lines=blank_lines,
        huge_line_bytes=huge_line_bytes,
        omit_optional=omit_optional,
        unknown_keys=unknown_keys,
        empty=empty,
        omit_jsonl=omit_jsonl,
        created_start=created_start,
        keep_rows=keep_rows,
        compression=compression,
        compresslevel=compresslevel,
        submissions=submissions,
        study_id=study_id,
        since=since,
        until=until,
    )
