"""``prolific-ingest``: the command-line front end (stdlib argparse, no logic of its own).

Exit codes
----------
0 success · 1 other library error · 2 usage or configuration (incl. missing token) ·
3 authentication / permission · 4 not found / not cached · 5 export failed or timed out ·
6 download or archive problem · 7 lake (--out) failed · 8 some batches of several failed ·
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from . import errors
from ._export_models import format_timestamp
from ._version import __version__

__all__ = ["main"]

EXIT_CODES: tuple[tuple[type[BaseException], int, str], ...] = (
    (errors.MissingTokenError, 2, ""),
    (
        errors.MissingPathError,
        4,
        "check the path (a relative path is taken from the current folder)",
    ),
    (errors.ConfigurationError, 2, ""),
    (errors.AuthenticationError, 3, "check PROLIFIC_TOKEN (Prolific app: Settings > API tokens)"),
    (errors.PermissionDeniedError, 3, "the token's account has no access to this resource"),
    (errors.NotFoundError, 4, "check the id (404 can also mean no access)"),
    (errors.CacheMissError, 4, ""),
    (errors.ExportTimeoutError, 5, ""),
    (errors.ExportError, 5, "request a new export (run the command again with --max-age 0)"),
    (errors.DownloadError, 6, ""),
    (errors.ArchiveError, 6, ""),
    (errors.SinkError, 7, ""),
    (errors.ProlificIngestError, 1, ""),
    (OSError, 1, "a local or remote file operation failed"),
)


def _hint_for(exc: BaseException, hint: str) -> str:
    if isinstance(exc, errors.ExportTimeoutError) and exc.export_id:
        return (
            f"the export is still being generated; resume it with --export-id {exc.export_id} "
            "(and a longer --timeout if needed)"
        )
    return hint


#: The environment variable that ``--storage-options`` defaults to.
STORAGE_OPTIONS_ENV = "PROLIFIC_INGEST_STORAGE_OPTIONS"

_TOKEN_MESSAGE = (
    "No Prolific API token: set the PROLIFIC_TOKEN environment variable "
    "(export PROLIFIC_TOKEN=...). Create a token in the Prolific app under Settings > API tokens."
)
#: Library spellings of parameters (``incremental=True``, ``export_id='x'``) -> CLI options.
_FLAGS = {
    "cache": "--cache",
    "export_id": "--export-id",
    "incremental": "--incremental",
    "max_age": "--max-age",
    "offline": "--offline",
    "on_bad_records": "--on-bad-records",
    "output": "--out",
    "overwrite": "--overwrite",
    "partition_by": "--partition-by",
    "since": "--since",
    "storage_options": "--storage-options",
    "study_id": "--study-id",
    "timeout": "--timeout",
    "until": "--until",
}
_PARAM = re.compile(
    r"\b(" + "|".join(_FLAGS) + r")=(True\b|False\b|'([^']*)'|\.\.\.|)"
    r"|\b(" + "|".join(_FLAGS) + r")\b(?=[^=]|$)"
)
#: Phrases about the token, which the CLI takes from the environment only.
_TOKEN_PHRASES = ((" (or token=)", ""), (" or pass token=... .", "."), ("token=", "PROLIFIC_TOKEN"))


def _flag(match: re.Match[str]) -> str:
    if match.group(4):  # a bare parameter name: only names with an underscore are unambiguous
        name = match.group(4)
        return _FLAGS[name] if "_" in name else name
    flag = _FLAGS[match.group(1)]
    return f"{flag} {match.group(3)}" if match.group(3) is not None else flag


def cli_message(exc: BaseException) -> str:
    """The message of ``exc`` in command-line terms (options, not Python parameters)."""
    if isinstance(exc, errors.MissingTokenError):
        return _TOKEN_MESSAGE
    text = str(exc)
    for phrase, replacement in _TOKEN_PHRASES:
        text = text.replace(phrase, replacement)
    text = text.replace("call again with", "run the command again with")
    return _PARAM.sub(_flag, text)


def _fail(exc: BaseException) -> int:
    for cls, code, default_hint in EXIT_CODES:
        if isinstance(exc, cls):
            hint = _hint_for(exc, default_hint)
            text = f"error: {cli_message(exc)}"
            if hint:
                text += f"\nhint: {hint}"
            print(text, file=sys.stderr)
            return code
    raise exc


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    if args.json:
        print(json.dumps(_jsonable(payload), indent=2, ensure_ascii=False))
    else:
        print(text)


def _summary(export: Any) -> dict[str, Any]:
    return {
        "kind": export.kind,
        "id": export.owner_id,
        "export_id": export.export_id,
        "filter": export.filter.to_json() if export.filter is not None else None,
        "fetched_at": export.fetched_at,
        "archive": export.archive_url,
        "rows": export.row_counts,
        "output": export.written.output if export.written else None,
        "output_skipped": export.written.skipped if export.written else None,
    }


def _summary_text(export: Any) -> str:
    lines = [repr(export)]
    for name, frame in export.tables.items():
        cols = ", ".join(map(str, frame.columns[:8])) + (" …" if len(frame.columns) > 8 else "")
        lines.append(f"  {name:<13} {len(frame):>8} rows  [{cols}]")
    if export.written is not None:
        state = "already loaded" if export.written.skipped else "loaded"
        lines.append(f"Delta lake {state}: {export.written.output}")
    return "\n".join(lines)


# -- commands -------------------------------------------------------------------------------


def _load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "study_id": args.study_id,
        "since": args.since,
        "until": args.until,
        "offline": args.offline,
        "output": args.out,
        "incremental": args.incremental,
        "overwrite": args.overwrite,
        "partition_by": tuple(args.partition_by),
        "cache": args.cache,
        "storage_options": args.storage_options,
        "on_bad_records": args.on_bad_records,
        "timeout": args.timeout,
        "progress": False if args.json else None,
    }
    if args.max_age is not None:
        kw["max_age"] = args.max_age
    return kw


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
    from . import api

    ids = _ids(args)
    kw = _load_kwargs(args)
    if args.export_id:
        if len(ids) != 1:
            msg = "--export-id names one export: give exactly one id with it"
            raise errors.ConfigurationError(msg)
        kw["export_id"] = args.export_id
    if len(ids) == 1:
        loader = api.load_collection_export if args.kind == "collection" else api.load_batch_export
        export = loader(ids[0], **kw)
        _emit(args, _summary(export), _summary_text(export))
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
    payload = {
        "results": {k: _summary(v) for k, v in report.results.items()},
        "errors": {k: f"{type(v).__name__}: {v}" for k, v in report.errors.items()},
    }
    text = "\n".join(
        [f"ok     {k}  {v.export_id}  rows={v.row_counts}" for k, v in report.results.items()]
        + [f"FAILED {k}  {type(v).__name__}: {v}" for k, v in report.errors.items()]
    )
    _emit(args, payload, text)
    return 0 if report.ok else 8


def cmd_read(args: argparse.Namespace) -> int:
    from . import api

    export = api.read_export(
        args.archive,
        export_id=args.export_id,
        on_bad_records=args.on_bad_records,
        storage_options=args.storage_options,
    )
    if args.out:
        export.written = export.to_lake(
            args.out,
            overwrite=args.overwrite,
            partition_by=tuple(args.partition_by),
            storage_options=args.storage_options,
        )
    _emit(args, _summary(export), _summary_text(export))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import api
    from .testing import Emulator

    out = args.out or str(Path("prolific-demo-output").resolve())
    with Emulator(polls_until_complete=2) as emu, tempfile.TemporaryDirectory() as tmp:
        batch_id = emu.add_batch(seed=args.seed, n_submissions=args.submissions)
        print(f"emulator running at {emu.base_url}; batch {batch_id}", file=sys.stderr)
        export = api.load_batch_export(
            batch_id,
            base_url=emu.base_url,
            token=emu.token,
            cache=args.cache or str(Path(tmp) / "cache"),
            output=out,
            storage_options=args.storage_options,
            progress=False if args.json else None,
        )
        _emit(args, _summary(export), _summary_text(export))
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from .testing import serve

    serve(port=args.port, seed=args.seed, n_batches=args.batches, tls=args.tls, announce=print)
    return 0


def cmd_exports(args: argparse.Namespace) -> int:
    from . import manage

    kind: Literal["batch", "collection"] = "collection" if args.collection else "batch"
    if args.action == "list":
        jobs = manage.list_exports(args.id, kind=kind)
        text = "\n".join(
            f"{j.export_id}  {j.status:<10}  {_iso(j.created_at):<20}  {j.filter.describe()}"
            for j in jobs
        )
        _emit(args, [manage.job_summary(j) for j in jobs], text or "(no exports)")
    elif args.action == "delete":
        for export_id in args.export_ids:
            manage.delete_export(args.id, export_id, kind=kind)
        _emit(args, {"deleted": args.export_ids}, f"deleted {len(args.export_ids)} export(s)")
    else:
        plan = manage.prune_exports(
            args.id,
            keep=args.keep,
            kind=kind,
            cache=args.cache,
            dry_run=args.dry_run,
            storage_options=args.storage_options,
        )
        verb = "would delete" if args.dry_run else "deleted"
        _emit(args, [manage.job_summary(j) for j in plan], f"{verb} {len(plan)} export(s)")
    return 0


def _iso(value: datetime | None) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC), or ``-`` when unknown."""
    return format_timestamp(value) if value is not None else "-"


def cmd_cache(args: argparse.Namespace) -> int:
    from .cache import ExportCache

    cache = ExportCache(args.cache, storage_options=args.storage_options)
    if args.action == "path":
        _emit(args, {"path": cache.root}, str(cache.root))
    elif args.action == "list":
        entries = cache.list()
        text = "\n".join(
            f"{e.ref.kind:<10} {e.ref.id}  {e.export_id}  {e.size:>12,d} B  {e.fetched_at:%Y-%m-%d %H:%M}"
            for e in entries
        )
        _emit(args, [_cached_summary(e) for e in entries], text or "(cache is empty)")
    else:
        plan = cache.plan_clear(max_age=args.older_than)
        if not args.dry_run:
            cache.execute(plan)
        verb = "would remove" if args.dry_run else "removed"
        _emit(args, [_cached_summary(e) for e in plan], f"{verb} {len(plan)} cached export(s)")
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


# -- parser ---------------------------------------------------------------------------------


def _bad_records_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-bad-records",
        choices=("raise", "quarantine", "skip"),
        default="raise",
        help="what to do with unparseable JSONL lines (default: raise)",
    )


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="with --out: replace this export if it is already written there",
    )
    parser.add_argument(
        "--partition-by",
        action="append",
        default=[],
        metavar="COLUMN",
        help="with --out: also partition by COLUMN (repeatable; 'date': the day of created_at)",
    )


def _storage_options(text: str) -> dict[str, Any]:
    """Parse ``--storage-options`` JSON; the message never repeats the text (it may hold keys)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:  # its msg/lineno/colno quote none of the text
        msg = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        raise argparse.ArgumentTypeError(msg) from None
    if not isinstance(value, dict):
        msg = f"must be a JSON object ({{...}}), not a JSON {type(value).__name__}"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (exposed for documentation and tests)."""
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="log INFO (-vv: DEBUG) to stderr"
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common.add_argument(
        "--cache", help="cache location (path or fsspec URL); default $PROLIFIC_INGEST_CACHE"
    )
    common.add_argument(
        "--storage-options",
        type=_storage_options,
        metavar="JSON",
        help=(
            "fsspec options (a JSON object) for every path or URL of the command, "
            f'e.g. \'{{"client_kwargs": {{"endpoint_url": "http://…"}}}}\'; '
            f"default ${STORAGE_OPTIONS_ENV}"
        ),
    )

    parser = argparse.ArgumentParser(
        prog="prolific-ingest",
        description="Load Prolific Task Builder exports into DataFrames and a Delta lake.",
        epilog="Set PROLIFIC_TOKEN (and optionally PROLIFIC_API_URL) first. Exit codes: see docs/cli.md.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"prolific-ingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_, description=help_, parents=[common], allow_abbrev=False
        )
        p.set_defaults(func=func, usage_error=p.error)
        return p

    for kind in ("batch", "collection"):
        p = add(
            kind,
            cmd_load,
            f"load one or more {kind} exports (and merge them into a Delta lake with --out)",
        )
        p.set_defaults(kind=kind)
        p.add_argument("ids", nargs="*", metavar="ID", help=f"{kind} id(s)")
        p.add_argument("--from-file", help="read more ids from this file, one per line")
        p.add_argument("--out", help="Delta lake root: a path or s3://, gs://, abfs:// URL")
        p.add_argument("--study-id", help="only responses of this study")
        p.add_argument(
            "--since", help="only responses created at or after this ISO-8601 time (UTC)"
        )
        p.add_argument("--until", help="only responses created before this ISO-8601 time (UTC)")
        p.add_argument("--export-id", help="load this existing export (resume after a timeout)")
        p.add_argument(
            "--max-age",
            type=float,
            help="reuse an export younger than this many seconds (0: new)",
        )
        p.add_argument("--offline", action="store_true", help="use the cache only; no network")
        p.add_argument(
            "--timeout",
            type=float,
            metavar="SECONDS",
            help="wait this long for the export to complete (default 600)",
        )
        p.add_argument(
            "--incremental",
            action="store_true",
            help="with --out: only responses since the last load",
        )
        _output_options(p)
        _bad_records_option(p)
        if kind == "batch":  # several collections load one after the other
            p.add_argument(
                "--max-workers", type=int, default=4, help="concurrent loads for several ids"
            )

    p = add("read", cmd_read, "read an export ZIP already on disk or in a bucket (no API call)")
    p.add_argument("archive", help="path or fsspec URL of the ZIP")
    p.add_argument("--out", help="also load it into the Delta lake here")
    p.add_argument(
        "--export-id",
        help="the export id in the lake (default: its cache entry id, else sha256-<checksum>)",
    )
    _output_options(p)
    _bad_records_option(p)

    p = add(
        "demo", cmd_demo, "run the whole pipeline against the built-in emulator (no token needed)"
    )
    p.add_argument("--out", help="where to write the Delta lake (default ./prolific-demo-output)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated batch")
    p.add_argument("--submissions", type=int, default=50, help="submissions in the generated batch")

    p = add("emulator", cmd_emulator, "serve the Prolific API emulator on loopback until Ctrl-C")
    p.add_argument("--port", type=int, default=0, help="API port (default: a free port)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--batches", type=int, default=1, help="generated batches to serve")
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve downloads over https with a generated CA (printed as PROLIFIC_CA_BUNDLE)",
    )

    p = add("exports", cmd_exports, "list, delete or prune export jobs on the server")
    p.add_argument(
        "action",
        choices=("list", "delete", "prune"),
        help="list: jobs newest first; delete: the given EXPORT_IDs; prune: old finished jobs",
    )
    p.add_argument("id", help="batch id (collection id with --collection)")
    p.add_argument(
        "export_ids", nargs="*", metavar="EXPORT_ID", help="with delete: the exports to delete"
    )
    p.add_argument("--collection", action="store_true", help="the id is a collection id")
    p.add_argument(
        "--keep", type=int, default=3, help="with prune: newest finished exports to keep"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="with prune: only show what would be deleted"
    )

    p = add("cache", cmd_cache, "show the cache path, list cached exports, or clear them")
    p.add_argument(
        "action",
        choices=("list", "clear", "path"),
        help="path: where the cache is; list: cached exports; clear: remove them",
    )
    p.add_argument("--older-than", type=float, help="with clear: only entries older than N seconds")
    p.add_argument(
        "--dry-run", action="store_true", help="with clear: only show what would be removed"
    )
    _add_lake_commands(add)
    return parser


# -- lake housekeeping: prolific-ingest lake history|vacuum|optimize URL ----------------------


def _add_lake_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("lake", cmd_lake, "housekeeping of a Delta lake: history, vacuum, optimize")
    p.add_argument(
        "action",
        choices=("history", "vacuum", "optimize"),
        help=(
            "history: each table's commits; vacuum: delete files no version within the "
            "retention keeps (dry run unless --apply); optimize: compact small files"
        ),
    )
    p.add_argument("url", help="the lake root (path or s3://, gs://, abfs:// URL)")
    p.add_argument("--limit", type=int, help="with history: at most N commits per table")
    p.add_argument(
        "--retention-hours",
        type=int,
        help="with vacuum: keep files younger than this (default: the table's, 7 days)",
    )
    p.add_argument("--apply", action="store_true", help="with vacuum: really delete the files")


def cmd_lake(args: argparse.Namespace) -> int:
    from . import lake

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
    _emit(args, payload, "\n".join(lines))
    return 0


def _check_usage(args: argparse.Namespace) -> None:
    """Usage rules argparse cannot express; a violation exits with code 2 and the usage."""
    if args.storage_options is None:
        text = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
        try:
            args.storage_options = _storage_options(text) if text else None
        except argparse.ArgumentTypeError as exc:
            args.usage_error(f"${STORAGE_OPTIONS_ENV} is {exc}")
    if args.command in ("batch", "collection", "read") and not args.out:
        needs_out = [
            flag
            for flag, given in (
                ("--incremental", getattr(args, "incremental", False)),
                ("--overwrite", args.overwrite),
                ("--partition-by", args.partition_by),
            )
            if given
        ]
        if needs_out:
            why = (
                " (the watermark is read from the dataset there)"
                if "--incremental" in needs_out
                else ""
            )
            verb = "needs" if len(needs_out) == 1 else "need"
            args.usage_error(f"{' and '.join(needs_out)} {verb} --out{why}")
    if args.command == "exports":
        if args.action == "delete" and not args.export_ids:
            args.usage_error("delete needs at least one EXPORT_ID")
        if args.action != "delete" and args.export_ids:
            args.usage_error(f"EXPORT_ID is only for delete, not {args.action}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prolific-ingest`` console script."""
    args = build_parser().parse_args(argv)
    _check_usage(args)
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # urllib3 logs whole request lines: a presigned URL's query string is a credential.
        logging.getLogger("urllib3").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (errors.ProlificIngestError, OSError) as exc:
        if args.debug:
            raise
        return _fail(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
