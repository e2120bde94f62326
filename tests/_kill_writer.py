"""Helper process for the SIGKILL test of ``prolific_ingest.sinks`` (not a test module).

Usage: ``python _kill_writer.py OUTPUT MODE BATCH_ID EXPORT_ID``

``MODE=write``: stream a big ``responses`` table; once some row groups are in staging,
print ``writing`` and block forever (the test then SIGKILLs this process).
``MODE=commit``: write a small export; after the first file has been moved into its
final place (before the manifest), print ``moved`` and block forever.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from prolific_ingest import sinks

SCHEMA = pa.schema(
    [
        ("response_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("extra", pa.string()),
    ]
)


def _batch(start: int, n: int) -> Any:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.record_batch(
        [
            pa.array([f"r{i:05d}" for i in range(start, start + n)]),
            pa.array(
                [base + timedelta(seconds=i) for i in range(start, start + n)], SCHEMA[1].type
            ),
            pa.array(["x" * 200] * n),
        ],
        schema=SCHEMA,
    )


def _block() -> None:
    sys.stdout.flush()
    threading.Event().wait()  # until SIGKILL


def _big_stream() -> Iterator[tuple[str, Any]]:
    for k in range(5):
        yield "responses", _batch(k * 1000, 1000)
    print("writing", flush=True)
    _block()


def main() -> None:
    output, mode, batch_id, export_id = sys.argv[1:5]
    data: Any
    if mode == "write":
        data = _big_stream()
    elif mode == "commit":
        original = LocalFileSystem.mv

        def mv_then_block(self: Any, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, path1, path2, *args, **kwargs)
            if str(path2).endswith(".parquet") and "/_staging/" not in str(path2):
                print("moved", flush=True)
                _block()
            return result

        LocalFileSystem.mv = mv_then_block  # type: ignore[method-assign]
        data = {"responses": pa.Table.from_batches([_batch(0, 100)])}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sinks.write_parquet(
        data,
        output,
        kind="batch",
        owner_id=batch_id,
        export_id=export_id,
        schemas={"responses": SCHEMA},
        row_group_rows=1000,
    )
    print("finished", flush=True)


if __name__ == "__main__":
    main()
