"""Housekeeping commands: server-side export jobs (``exports``), the ``cache``, the ``lake``."""

from __future__ import annotations

import argparse
from typing import Any, Literal

from ._output import emit, iso


def cmd_exports(args: argparse.Namespace) -> int:
    """List, delete or prune the export jobs of one batch or collection on the server."""
    from .. import manage
    from ..exports import ExportRef

    kind: Literal["batch", "collection"] = "collection" if args.collection else "batch"
    owner = ExportRef(kind, args.id)
    if args.action == "list":
        jobs = manage.list_exports(owner)
        text = "\n".join(
            f"{j.export_id}  {j.status:<10}  {iso(j.created_at):<20}  {j.filter.describe()}"
            for j in jobs
        )
        emit(args, [manage.job_summary(j) for j in jobs], text or "(no exports)")
    elif args.action == "delete":
        for export_id in args.export_ids:
            manage.delete_export(owner, export_id)
        emit(args, {"deleted": args.export_ids}, f"deleted {len(args.export_ids)} export(s)")
    else:
        plan = manage.prune_exports(
            owner,
            keep=args.keep,
            cache=args.cache,
            dry_run=args.dry_run,
            storage_options=args.storage_options,
        )
        verb = "would delete" if args.dry_run else "deleted"
        emit(args, [manage.job_summary(j) for j in plan], f"{verb} {len(plan)} export(s)")
    return 0


def _cached_summary(entry: Any) -> dict[str, Any]:
    return {
        "kind": entry.ref.kind,
        "id": entry.ref.id,
        "export_id": entry.export_id,
        "size": entry.size,
        "fetched_at": entry.fetched_at,
        "path": entry.path,
    }


def cmd_cache(args: argparse.Namespace) -> int:
    """Show the cache's path, list its entries, or clear them."""
    from ..cache import ExportCache

    cache = ExportCache(args.cache, storage_options=args.storage_options)
    if args.action == "path":
        emit(args, {"path": cache.root}, str(cache.root))
    elif args.action == "list":
        entries = cache.list()
        text = "\n".join(
            f"{e.ref.kind:<10} {e.ref.id}  {e.export_id}  {e.size:>12,d} B  {e.fetched_at:%Y-%m-%d %H:%M}"
            for e in entries
        )
        emit(args, [_cached_summary(e) for e in entries], text or "(cache is empty)")
    else:
        plan = cache.plan_clear(max_age=args.older_than)
        if not args.dry_run:
            cache.execute(plan)
        verb = "would remove" if args.dry_run else "removed"
        emit(args, [_cached_summary(e) for e in plan], f"{verb} {len(plan)} cached export(s)")
    return 0


def cmd_lake(args: argparse.Namespace) -> int:
    """A Delta lake's history, vacuum (a dry run unless ``--apply``) or optimize."""
    from .. import lake

    payload: dict[str, Any]
    lines: list[str] = []
    if args.action == "history":
        payload = lake.lake_history(
            args.url, limit=args.limit, storage_options=args.storage_options
        )
        for table, commits in payload.items():
            lines.append(f"{table}:")
            for c in commits:
                export = c.get("prolific_ingest.export_id") or ""
                lines.append(
                    f"  v{c.get('version')}  {c.get('operation', ''):<10} {export}".rstrip()
                )
    elif args.action == "vacuum":
        payload = lake.vacuum_lake(
            args.url,
            retention_hours=args.retention_hours,
            dry_run=not args.apply,
            storage_options=args.storage_options,
        )
        verb = "deleted" if args.apply else "would delete"
        lines = [f"{table}: {verb} {len(files)} file(s)" for table, files in payload.items()]
    else:
        payload = lake.optimize_lake(args.url, storage_options=args.storage_options)
        lines = [
            f"{table}: {m.get('numFilesRemoved', 0)} file(s) compacted into "
            f"{m.get('numFilesAdded', 0)}"
            for table, m in payload.items()
        ]
    emit(args, payload, "\n".join(lines))
    return 0
