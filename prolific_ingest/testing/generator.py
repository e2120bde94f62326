"""Generate Prolific export archives (ZIP of JSONL) with their ground truth.

:func:`make_batch_export` and :func:`make_collection_export` write the archive an
:class:`ExportSpec` describes, consistent across all of its members, and return a
:class:`GroundTruth` describing what a correct reader must find in it. Content is a pure
function of the spec (its ``seed`` and owner id); every response is regenerated from a
derived seed, so archives of any size are written with bounded memory (pass
``keep_rows=False`` for large ones).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .._version import refuse_unknown
from . import _content as c
from ._build import ExportFilter, make
from ._records import SubmissionSpec
from ._spec import SPEC_FIELDS, ExportSpec
from ._truth import GroundTruth

__all__ = [
    "INSTRUCTION_TYPES",
    "ExportSpec",
    "GroundTruth",
    "SubmissionSpec",
    "make_batch_export",
    "make_collection_export",
]

INSTRUCTION_TYPES = c.INSTRUCTION_TYPES

_BATCH_ONLY = frozenset({"tasks_per_submission", "raters_per_task"})


def _spec_from_keywords(
    kind: str, spec: ExportSpec | None, keywords: dict[str, Any]
) -> tuple[ExportSpec, Sequence[SubmissionSpec] | None]:
    """The spec (and ``submissions``) of a call; the old keywords build one, with a warning."""
    if not keywords:
        return spec or ExportSpec(), None
    func = f"make_{kind}_export"
    id_keyword = f"{kind}_id"
    allowed = (SPEC_FIELDS - {"owner_id"} | {id_keyword, "submissions"}) - (
        _BATCH_ONLY if kind == "collection" else frozenset()
    )
    refuse_unknown(func, keywords, allowed)
    if spec is not None:
        msg = f"{func}() takes an ExportSpec or the deprecated keyword arguments, not both"
        raise TypeError(msg)
    warnings.warn(
        f"{func}(path, {', '.join(f'{k}=...' for k in sorted(keywords))}) is deprecated: pass "
        f"{func}(path, ExportSpec(...)) ({id_keyword}= is ExportSpec.owner_id); "
        "the keywords go in 0.3",
        DeprecationWarning,
        stacklevel=3,
    )
    options = dict(keywords)
    submissions = options.pop("submissions", None)
    if id_keyword in options:
        options["owner_id"] = options.pop(id_keyword)
    return ExportSpec(**options), submissions


def make_batch_export(
    path: str | Path | None,
    spec: ExportSpec | None = None,
    *,
    study_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    keep_rows: bool = True,
    **deprecated: Any,
) -> GroundTruth:
    """Write the batch export ``spec`` describes at ``path`` and return its ground truth.

    Parameters
    ----------
    path : str, Path or None
        Where to write the archive; ``None`` computes the ground truth only.
    spec : ExportSpec or None
        What the export holds and how it is written (default: ``ExportSpec()``).
    study_id, since, until
        The export filter: keep submissions of ``study_id`` and responses with
        ``since <= created_at < until``; submissions left empty are dropped.
    keep_rows : bool
        Fill the row lists of the ground truth (``counts`` is always filled). Use
        ``False`` for large archives: memory then stays bounded.
    **deprecated
        The fields of :class:`ExportSpec` as keywords (``batch_id=`` for ``owner_id``),
        the old spelling: still accepted, with a ``DeprecationWarning``, until 0.3.

    Returns
    -------
    GroundTruth

    Raises
    ------
    TypeError
        For an unknown keyword, or both ``spec`` and deprecated keywords.
    """
    spec, submissions = _spec_from_keywords("batch", spec, deprecated)
    flt = ExportFilter(study_id, since, until)
    return make(spec, "batch", path, flt=flt, keep_rows=keep_rows, submissions=submissions)


def make_collection_export(
    path: str | Path | None,
    spec: ExportSpec | None = None,
    *,
    study_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    keep_rows: bool = True,
    **deprecated: Any,
) -> GroundTruth:
    """Write the collection export ``spec`` describes at ``path``; return its ground truth.

    The archive holds ``responses.jsonl`` (one line per submission, each answering
    every instruction once), ``collection.json``, ``README.md`` and ``files/``. The
    flat layout writes ``CollectionResponse`` records. Parameters are those of
    :func:`make_batch_export`; the spec's ``tasks_per_submission`` and
    ``raters_per_task`` do not apply (the deprecated keywords are those of
    :class:`ExportSpec` without them, ``collection_id=`` for ``owner_id``).

    Returns
    -------
    GroundTruth
        With ``tasks`` empty and ``task_id`` ``None`` everywhere.
    """
    spec, submissions = _spec_from_keywords("collection", spec, deprecated)
    flt = ExportFilter(study_id, since, until)
    return make(spec, "collection", path, flt=flt, keep_rows=keep_rows, submissions=submissions)
