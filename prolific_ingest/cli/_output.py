"""What the commands print: text for people, ``--json`` for programs."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

from ..exports._models import format_timestamp


def progress(args: argparse.Namespace) -> bool | None:
    """The loads' ``progress=``: never a progress bar beside ``--json``, else automatic."""
    return False if args.json else None


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


def emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    """Print ``payload`` as JSON with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(_jsonable(payload), indent=2, ensure_ascii=False))
    else:
        print(text)


def export_summary(export: Any) -> dict[str, Any]:
    """The ``--json`` view of one loaded or read export."""
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


def export_text(export: Any) -> str:
    """The text view of one loaded or read export: its tables and where it was written."""
    lines = [repr(export)]
    for name, frame in export.tables.items():
        cols = ", ".join(map(str, frame.columns[:8])) + (" …" if len(frame.columns) > 8 else "")
        lines.append(f"  {name:<13} {len(frame):>8} rows  [{cols}]")
    if export.written is not None:
        state = "already loaded" if export.written.skipped else "loaded"
        lines.append(f"Delta lake {state}: {export.written.output}")
    return "\n".join(lines)


def emit_export(args: argparse.Namespace, export: Any) -> None:
    """Print one export (:func:`export_summary` or :func:`export_text`)."""
    emit(args, export_summary(export), export_text(export))


def iso(value: datetime | None) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC), or ``-`` when unknown."""
    return format_timestamp(value) if value is not None else "-"
