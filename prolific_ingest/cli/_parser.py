"""The command line's grammar: every command and option, and the usage rules argparse cannot say."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from .._version import __version__
from ._housekeeping import cmd_cache, cmd_exports, cmd_lake
from ._load import cmd_load
from ._read import cmd_demo, cmd_emulator, cmd_read

#: The environment variable that ``--storage-options`` defaults to.
STORAGE_OPTIONS_ENV = "PROLIFIC_INGEST_STORAGE_OPTIONS"

_Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


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


def _common_options() -> argparse.ArgumentParser:
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
    return common


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


def _add_load_commands(add: _Add) -> None:
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


def _add_offline_commands(add: _Add) -> None:
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


def _add_housekeeping_commands(add: _Add) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (exposed for documentation and tests)."""
    common = _common_options()
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

    _add_load_commands(add)
    _add_offline_commands(add)
    _add_housekeeping_commands(add)
    return parser


def check_usage(args: argparse.Namespace) -> None:
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
