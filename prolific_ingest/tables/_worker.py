"""A parse worker process: blocks of JSONL in on stdin, their Arrow tables out on stdout.

Started by :mod:`._parallel` as a fresh interpreter (``sys.executable``), so it
works the same from scripts, notebooks and on spawn-only platforms, and never imports
the user's ``__main__``. It imports only the block fast path (not pandas, not the
package's ``__init__``) and holds no secret: it is given blocks, the export kind and the
uploaded-file paths, nothing else.

Protocol: frames of ``<tag: u8><length: u64 little-endian><payload>``. The parent sends
one ``INIT`` (JSON: kind, files prefix, uploaded-file paths), then ``BLOCK`` frames (a
block of whole lines) and finally ``END`` (or closes stdin). For each block, in order,
the worker answers ``OK`` (:func:`encode_result`: Arrow IPC streams, no pickling),
``FALLBACK`` (the block needs the per-line builder) or ``ERROR`` (a traceback).
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import struct
import sys
import traceback
from typing import IO

import orjson
import pyarrow as pa

from ._builder import RecordBuilder
from ._fast import BlockTables, Fallback, parse_block

__all__ = ["decode_result", "encode_result", "main", "read_frame", "widen_pipe", "write_frame"]

HEADER = struct.Struct("<BQ")
INIT, BLOCK, END = 1, 2, 3
OK, FALLBACK, ERROR = 1, 2, 3
#: A worker that hears nothing from its parent for this long exits.
IDLE_SECONDS = 600.0
_LENGTH = struct.Struct("<Q")
PIPE_BYTES = 2**20

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def widen_pipe(stream: IO[bytes]) -> None:
    """Give a pipe a 1 MiB buffer where the OS allows it (Linux): fewer, larger reads."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setsize is None:
        return
    # not a pipe, or above /proc/sys/fs/pipe-max-size: keep the default
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(stream.fileno(), setsize, PIPE_BYTES)


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    """``n`` bytes (short reads of a raw pipe are retried); ``None`` at end of stream."""
    first = stream.read(n)
    if first is None or len(first) == n:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        part = stream.read(n - got)
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_frame(stream: IO[bytes]) -> tuple[int, bytes] | None:
    """Read one frame; ``None`` at end of stream (or on a truncated frame)."""
    head = _read_exactly(stream, HEADER.size)
    if head is None:
        return None
    tag, length = HEADER.unpack(head)
    body = _read_exactly(stream, length) if length else b""
    if body is None:
        return None
    return tag, body


def write_frame(stream: IO[bytes], tag: int, *parts: bytes | memoryview | pa.Buffer) -> None:
    """Write one frame made of ``parts`` (no copy into one buffer) and flush it."""
    views = [memoryview(part) for part in parts]
    stream.write(HEADER.pack(tag, sum(view.nbytes for view in views)))
    for view in views:
        stream.write(view)
    stream.flush()


def encode_result(result: BlockTables) -> list[bytes | pa.Buffer]:
    """A block's tables as payload parts: a JSON header, one IPC stream per batch, keys."""
    streams: list[pa.Buffer] = []
    for _, batch in result.tables:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        streams.append(sink.getvalue())
    header = orjson.dumps(
        {
            "names": [name for name, _ in result.tables],
            "sizes": [buf.size for buf in streams],
            "coerced": result.coerced,
            "keys": len(result.task_keys),
        }
    )
    return [_LENGTH.pack(len(header)), header, *streams, b"".join(result.task_keys)]


def decode_result(payload: bytes) -> BlockTables:
    """The inverse of :func:`encode_result`.

    Each table's stream is copied out of ``payload`` (a memcpy per table), so a batch
    kept by a writer's buffer pins its own table's bytes, not the whole block's.
    """
    view = memoryview(payload)
    (size,) = _LENGTH.unpack_from(view)
    at = _LENGTH.size + size
    header = orjson.loads(view[_LENGTH.size : at])
    tables = []
    for name, length in zip(header["names"], header["sizes"], strict=True):
        with pa.ipc.open_stream(pa.py_buffer(bytes(view[at : at + length]))) as reader:
            tables.append((name, reader.read_next_batch()))
        at += length
    keys = [bytes(view[i : i + 16]) for i in range(at, at + 16 * header["keys"], 16)]
    return BlockTables(tables, keys, header["coerced"])


class _NoPandas:
    """A meta path finder refusing ``pandas`` (see :func:`refuse_pandas`)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            msg = "a parse worker does not import pandas"
            raise ModuleNotFoundError(msg, name=name)


def refuse_pandas() -> None:
    """Make ``import pandas`` fail in this process, so that pyarrow never imports it.

    pyarrow imports pandas (when installed) on the first ``pa.array`` call, to check
    whether its argument is a pandas object: in a worker that costs about 0.4 s of CPU
    and 55 MB per process, for a check that can never succeed (the worker only
    converts its own lists). pyarrow treats the failed import as "no pandas".
    """
    if "pandas" not in sys.modules and _NoPandas not in sys.meta_path:
        sys.meta_path.insert(0, _NoPandas)


def main() -> None:
    """Serve blocks until ``END``, end of input, or :data:`IDLE_SECONDS` of silence."""
    refuse_pandas()
    out = os.fdopen(os.dup(1), "wb")  # frames only: a stray print goes to stderr instead
    os.dup2(2, 1)
    # unbuffered: a frame already read ahead into a buffer would be invisible to select()
    source = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    widen_pipe(source)
    widen_pipe(out)
    gc.disable()  # the parse makes millions of short-lived containers and no cycles
    builder: RecordBuilder | None = None
    while True:
        ready, _, _ = select.select([source], [], [], IDLE_SECONDS)
        frame = read_frame(source) if ready else None
        if frame is None or frame[0] == END:
            return
        tag, body = frame
        if tag == INIT:
            config = orjson.loads(body)
            builder = RecordBuilder(
                config["kind"],
                files_prefix=config["files_prefix"],
                existing_files=config["existing"],
                batch_rows=config["batch_rows"],
            )
            continue
        try:
            if builder is None:
                msg = "BLOCK before INIT"
                raise RuntimeError(msg)
            result = parse_block(body, builder)
        except Fallback:
            write_frame(out, FALLBACK)
            gc.collect()
        except Exception:  # noqa: BLE001 - reported to the parent, which re-parses the block
            write_frame(out, ERROR, traceback.format_exc().encode())
            gc.collect()
        else:
            write_frame(out, OK, *encode_result(result))
        del body, frame


if __name__ == "__main__":
    main()
