"""The load commands: ``prolific-ingest batch|collection ID ...``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import errors
from ..cache import ExportCache
from ..config import Settings
from ..lake._target import LakeTarget
from ._exit import error_summary
from ._output import emit, emit_export, export_summary, progress


def _load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    opts = args.storage_options  # for every path or URL of the command: the lake and the cache
    kw: dict[str, Any] = {
        "study_id": args.study_id,
        "since": args.since,
        "until": args.until,
        "offline": args.offline,
        "output": sink_target(args, incremental=args.incremental),
        "cache": ExportCache(args.cache, storage_options=opts) if opts else args.cache,
        "on_bad_records": args.on_bad_records,
        "client": Settings.from_env(wait_timeout=args.timeout),
        "progress": progress(args),
    }
    if args.max_age is not None:
        kw["max_age"] = args.max_age
    return kw


def sink_target(args: argparse.Namespace, *, incremental: bool = False) -> LakeTarget | None:
    """``--out`` and its options as the load's ``output=`` (``None`` without ``--out``)."""
    if not args.out:
        return None
    return LakeTarget(
        args.out,
        storage_options=args.storage_options,
        partition_by=tuple(args.partition_by),
        incremental=incremental,
        overwrite=args.overwrite,
    )


def _ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.ids)
    if args.from_file:
        text = Path(args.from_file).read_text(encoding="utf-8")
        ids += [
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]
    if not ids:
        msg = "give at least one id (or --from-file)"
        raise errors.ConfigurationError(msg)
    return ids


def cmd_load(args: argparse.Namespace) -> int:
    """Load one or several batch (or collection) exports; exit 8 when some of several failed."""
    from .. import api

    ids = _ids(args)
    kw = _load_kwargs(args)
    if args.export_id:
        if len(ids) != 1:
            msg = "--export-id names one export: give exactly one id with it"
            raise errors.ConfigurationError(msg)
        kw["export_id"] = args.export_id
    if len(ids) == 1:
        loader = api.load_collection_export if args.kind == "collection" else api.load_batch_export
        emit_export(args, loader(ids[0], **kw))
        return 0
    if args.kind == "collection":
        report = api.BatchLoadReport()
        for cid in dict.fromkeys(ids):
            try:
                report.results[cid] = api.load_collection_export(cid, **kw)
            except errors.ProlificIngestError as exc:
                report.errors[cid] = exc
    else:
        report = api.load_batch_exports(ids, max_workers=args.max_workers, **kw)
    failed = {k: error_summary(v) for k, v in report.errors.items()}
    payload = {
        "results": {k: export_summary(v) for k, v in report.results.items()},
        "errors": failed,
    }
    text = "\n".join(
        [f"ok     {k}  {v.export_id}  rows={v.row_counts}" for k, v in report.results.items()]
        + [f"FAILED {k}  {line}" for k, line in failed.items()]
    )
    emit(args, payload, text)
    return 0 if report.ok else 8
