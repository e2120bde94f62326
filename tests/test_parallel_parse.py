"""The parse on worker processes: the same tables as on one worker, and a safe fallback.

Blocks are made small (``archive._reader.CHUNK_BYTES``) so that a small export has many of them;
real worker processes parse them.
"""

from __future__ import annotations

import json
import logging
import sys
import zipfile
from pathlib import Path

import pytest

from prolific_ingest.archive import _reader as archive_mod
from prolific_ingest.archive import open_archive
from prolific_ingest.errors import ConfigurationError
from prolific_ingest.tables import ExportTables, build_tables, iter_record_batches
from prolific_ingest.tables import _parallel as parallel
from prolific_ingest.testing import ExportSpec, make_batch_export

MEMBER = "responses-by-submission.jsonl"


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_mod, "CHUNK_BYTES", 32 * 1024)
    monkeypatch.delenv(parallel.ENV_WORKERS, raising=False)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated export whose member also repeats lines far apart and holds bad lines."""
    src = tmp_path_factory.mktemp("gen") / "export.zip"
    make_batch_export(src, ExportSpec(n_submissions=120, seed=3))
    out = src.with_name("mixed.zip")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(MEMBER):
                lines = data.splitlines()
                # repeats of earlier lines (same tasks: de-duplicated across blocks and
                # workers), an unparseable line and a wrongly shaped one (fallback blocks)
                lines[60:60] = [b"{not json", b'{"tasks": "oops"}']
                lines += [*lines[:5], b"[1, 2]"]
                data = b"\n".join(lines) + b"\n"
            zout.writestr(info, data)
    return out


def _tables(path: Path, workers: int | None, policy: str = "quarantine") -> ExportTables:
    with open_archive(path) as archive:
        return build_tables(archive, on_bad_records=policy, workers=workers)  # type: ignore[arg-type]


def _assert_identical(a: ExportTables, b: ExportTables) -> None:
    assert a.tables.keys() == b.tables.keys()
    for name in a.tables:
        assert a[name].equals(b[name]), name


def test_worker_processes_give_the_tables_of_one_worker(
    export: Path,
    small_blocks: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    one = _tables(export, 1)
    decoded: list[int] = []
    real = parallel.wire.decode_result
    monkeypatch.setattr(parallel.wire, "decode_result", lambda p: decoded.append(1) or real(p))
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        two = _tables(export, 2)
        three = _tables(export, 3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(decoded) > 10  # blocks really came back from worker processes
    _assert_identical(one, two)
    _assert_identical(one, three)
    assert one.row_counts["rejected"] == 3
    assert one.row_counts["answers"] > 1000
    # the repeated lines added no task rows
    tasks = one["tasks"].to_pylist()
    assert len({tuple(sorted(map(str, row.items()))) for row in tasks}) == len(tasks)


def test_streamed_batches_come_in_the_same_order_on_any_worker_count(
    export: Path, small_blocks: None
) -> None:
    def stream(workers: int) -> list[tuple[str, int, list[object]]]:
        with open_archive(export) as archive:
            return [
                (name, batch.num_rows, batch.column(0).to_pylist())
                for name, batch in iter_record_batches(
                    archive, on_bad_records="quarantine", workers=workers
                )
            ]

    assert stream(2) == stream(1)


def test_a_bad_record_raises_the_same_error_with_workers(export: Path, small_blocks: None) -> None:
    from prolific_ingest.errors import BadRecordError

    with pytest.raises(BadRecordError) as one:
        _tables(export, 1, "raise")
    with pytest.raises(BadRecordError) as two:
        _tables(export, 2, "raise")
    assert str(one.value) == str(two.value)
    assert one.value.line == two.value.line == 61


def test_workers_that_cannot_start_fall_back_to_one_logged_once(
    export: Path,
    small_blocks: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    one = _tables(export, 1)
    monkeypatch.setattr(parallel, "_warned", type(parallel._warned)())
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with caplog.at_level(logging.INFO, logger="prolific_ingest"):
        first = _tables(export, 2)
        second = _tables(export, 2)
    _assert_identical(one, first)
    _assert_identical(one, second)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "parsing on one worker" in warnings[0].getMessage()


def test_a_worker_that_dies_leaves_its_blocks_to_this_process(
    export: Path,
    small_blocks: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    one = _tables(export, 1)
    dying = tmp_path / "dying-python"
    dying.write_text("#!/bin/sh\necho 'worker crashed on purpose' >&2\nexit 7\n")
    dying.chmod(0o755)
    monkeypatch.setattr(parallel, "_warned", type(parallel._warned)())
    monkeypatch.setattr(sys, "executable", str(dying))
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        two = _tables(export, 2)
    _assert_identical(one, two)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "code 7" in warning
    assert "crashed on purpose" in warning


def test_a_worker_killed_mid_parse_loses_no_rows(
    export: Path,
    small_blocks: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import os
    import signal

    one = _tables(export, 1)
    real = parallel._Worker.result
    calls: list[int] = []

    def kill_on_the_fourth_answer(self: parallel._Worker, timeout: float) -> parallel.Outcome:
        calls.append(self.proc.pid)
        if len(calls) == 4:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            while not self.results.empty():  # answers already on their way are lost too
                self.results.get()
            self.results.put(None)
        return real(self, timeout)

    monkeypatch.setattr(parallel._Worker, "result", kill_on_the_fourth_answer)
    monkeypatch.setattr(parallel, "_warned", type(parallel._warned)())
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        two = _tables(export, 2)
    assert len(calls) == 4  # after the kill, every block was parsed here
    _assert_identical(one, two)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "exited" in warning


def test_small_members_are_parsed_without_worker_processes(
    export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(parallel.ENV_WORKERS, raising=False)

    def no_processes() -> parallel._Worker:
        raise AssertionError("a worker was started for a small export")

    monkeypatch.setattr(parallel._Pool, "_start", staticmethod(no_processes))
    assert _tables(export, None).row_counts["answers"] > 1000  # type: ignore[arg-type]
    assert parallel.parse_workers(None, parallel.MIN_PARALLEL_BYTES - 1, 2**20) == 1


def test_the_worker_count_follows_the_cores_the_blocks_and_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(parallel.ENV_WORKERS, raising=False)
    monkeypatch.setattr(parallel, "_usable_cpus", lambda: 4)
    big = 100 * 2**20
    assert parallel.parse_workers(None, big, 2**20) == 4
    assert parallel.parse_workers(None, parallel.MIN_PARALLEL_BYTES, 8 * 2**20) == 2
    assert parallel.parse_workers(3, big, 2**20) == 3
    assert parallel.parse_workers(8, 3 * 2**20, 2**20) == 3  # never more than blocks
    monkeypatch.setenv(parallel.ENV_WORKERS, "1")
    assert parallel.parse_workers(None, big, 2**20) == 1
    assert parallel.parse_workers(2, big, 2**20) == 2  # the argument wins
    monkeypatch.setenv(parallel.ENV_WORKERS, "many")
    with pytest.raises(ConfigurationError, match="PROLIFIC_INGEST_PARSE_WORKERS"):
        parallel.parse_workers(None, big, 2**20)
    with pytest.raises(ConfigurationError, match="at least 1"):
        parallel.parse_workers(0, big, 2**20)


def test_the_env_setting_pins_workers_for_a_build(
    export: Path, small_blocks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts: list[int] = []
    real = parallel.block_outcomes

    def spy(blocks, workers, builder):  # type: ignore[no-untyped-def]
        counts.append(workers)
        return real(blocks, workers, builder)

    import prolific_ingest.tables as tables_mod

    monkeypatch.setattr(tables_mod, "block_outcomes", spy)
    monkeypatch.setenv(parallel.ENV_WORKERS, "2")
    pinned = _tables(export, None)
    assert counts == [2]
    _assert_identical(pinned, _tables(export, 1))


def test_a_parse_worker_converts_blocks_without_importing_pandas(export: Path) -> None:
    """pyarrow would import pandas on the first ``pa.array`` (CPU and memory per worker)."""
    import subprocess

    import orjson

    from prolific_ingest.tables import _worker as wire

    with zipfile.ZipFile(export) as zf:
        name = next(n for n in zf.namelist() if n.endswith("responses-by-submission.jsonl"))
        block = zf.read(name)[: 2**16]
    block = block[: block.rfind(b"\n") + 1]
    config = {"kind": "batch", "files_prefix": "files/", "existing": [], "batch_rows": 100}
    frames = b"".join(
        wire.HEADER.pack(tag, len(body)) + body
        for tag, body in ((wire.INIT, orjson.dumps(config)), (wire.BLOCK, block), (wire.END, b""))
    )
    boot = parallel._BOOT.rsplit(";", 1)[0]  # the worker's own start, up to main()
    script = boot + ";main();print('pandas' in sys.modules, file=sys.stderr)"
    package = str(Path(parallel.__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(sys.path), package],
        input=frames,
        capture_output=True,
        check=True,
    )
    assert done.stdout[:1] == bytes([wire.OK])  # the block's tables came back
    assert done.stderr.decode().strip().splitlines()[-1] == "False"


def test_parse_workers_start_with_one_blas_thread(
    export: Path, small_blocks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy's OpenBLAS pool spins one thread per core at import: a worker needs none."""
    import subprocess

    envs: list[dict[str, str]] = []
    real = subprocess.Popen

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        envs.append(kwargs["env"])
        return real(*args, **kwargs)

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
    monkeypatch.setattr(parallel.subprocess, "Popen", spy)
    two = _tables(export, 2)
    assert len(envs) == 2
    assert all(env["OPENBLAS_NUM_THREADS"] == "1" for env in envs)
    _assert_identical(two, _tables(export, 1))
