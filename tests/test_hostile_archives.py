"""Hostile archives and metadata: every failure is typed, names the member, and is bounded."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import ExportCache, ExportRef, read_export
from prolific_ingest.archive import ArchiveLimits, open_archive
from prolific_ingest.cli import main
from prolific_ingest.errors import (
    ArchiveError,
    ArchiveSecurityError,
    BadRecordError,
    CorruptArchiveError,
    ProlificIngestError,
)
from prolific_ingest.testing import ExportSpec, _build, make_batch_export


def _rewrite(src: Path, dest: Path, replace: dict[str, bytes]) -> Path:
    """Copy the archive ``src`` to ``dest`` with the members named in ``replace`` replaced."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            base = info.filename.rsplit("/", 1)[-1]
            data = replace.get(base, zin.read(info))
            zout.writestr(info.filename, data)
    return dest


def _patch_central(
    path: Path, member_suffix: str, *, flag: int = 0, size: int | None = None
) -> None:
    """Set general-purpose ``flag`` bits and/or the declared size of one central-directory entry."""
    with zipfile.ZipFile(path) as zf:
        start = zf.start_dir  # type: ignore[attr-defined]
        count = len(zf.infolist())
    data = bytearray(path.read_bytes())
    pos = start
    for _ in range(count):
        assert data[pos : pos + 4] == b"PK\x01\x02"
        n_name, n_extra, n_comment = struct.unpack_from("<HHH", data, pos + 28)
        name = bytes(data[pos + 46 : pos + 46 + n_name]).decode()
        if name.endswith(member_suffix):
            (bits,) = struct.unpack_from("<H", data, pos + 8)
            struct.pack_into("<H", data, pos + 8, bits | flag)
            if size is not None:
                struct.pack_into("<I", data, pos + 24, size)
                offset = struct.unpack_from("<I", data, pos + 42)[0]
                struct.pack_into("<I", data, offset + 22, size)  # the local header too
        pos += 46 + n_name + n_extra + n_comment
    path.write_bytes(bytes(data))


@pytest.fixture
def export_zip(tmp_path: Path) -> Path:
    path = tmp_path / "export.zip"
    make_batch_export(path, ExportSpec(n_submissions=4))
    return path


def _member(path: Path, suffix: str) -> str:
    with zipfile.ZipFile(path) as zf:
        return next(n for n in zf.namelist() if n.endswith(suffix))


# -- item: whole-archive expansion budget ------------------------------------------------


def _split_bomb(path: Path, members: int, member_bytes: int) -> Path:
    block = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            with zf.open(f"export/files/s{i}/t/zeros{i}.bin", "w") as out:
                for _ in range(member_bytes >> 20):
                    out.write(block)
    return path


def test_a_bomb_split_into_small_members_is_refused_before_inflating(tmp_path: Path) -> None:
    bomb = _split_bomb(tmp_path / "bomb.zip", 100, 31 * 2**20)
    assert bomb.stat().st_size < 40 * 2**20
    with pytest.raises(ArchiveSecurityError) as info:
        open_archive(bomb).close()
    message = str(info.value)
    assert "max_ratio" in message
    assert "PROLIFIC_INGEST_MAX_RATIO" in message
    with pytest.raises(ArchiveSecurityError):
        read_export(str(bomb))


def test_the_expansion_budget_can_be_raised_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = _split_bomb(tmp_path / "bomb.zip", 3, 31 * 2**20)
    with pytest.raises(ArchiveSecurityError, match="max_ratio"):
        open_archive(bomb).close()
    monkeypatch.setenv("PROLIFIC_INGEST_MAX_RATIO", "1e9")
    with open_archive(bomb) as archive:
        assert len(archive.file_entries()) == 3
    monkeypatch.setenv("PROLIFIC_INGEST_MAX_RATIO", "nope")
    with pytest.raises(ProlificIngestError, match="PROLIFIC_INGEST_MAX_RATIO"):
        open_archive(bomb).close()


def test_a_member_whose_header_understates_its_size_is_refused_while_inflating(
    tmp_path: Path,
) -> None:
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("export/batch.json", json.dumps({"id": "b"}))
        zf.writestr("export/responses-by-submission.jsonl", b"")
        zf.writestr("export/files/s/t/big.bin", bytes(4 << 20))
    _patch_central(path, "big.bin", size=1000)
    with open_archive(path) as archive:
        with pytest.raises((ArchiveSecurityError, CorruptArchiveError)) as info:
            archive.verify()
        assert "big.bin" in str(info.value)
        dest = tmp_path / "out"
        with pytest.raises((ArchiveSecurityError, CorruptArchiveError)):
            archive.extract_files(str(dest))
        assert not any(p.is_file() for p in dest.rglob("*")) if dest.exists() else True


def test_extraction_stops_at_the_declared_size(tmp_path: Path) -> None:
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("export/batch.json", json.dumps({"id": "b"}))
        zf.writestr("export/responses-by-submission.jsonl", b"")
        zf.writestr("export/files/s/t/big.bin", bytes(1 << 20))
    _patch_central(path, "big.bin", size=10)
    dest = tmp_path / "out"
    with open_archive(path) as archive, pytest.raises(ArchiveError):
        archive.extract_files(str(dest))
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) if dest.exists() else 0
    assert written == 0


def test_realistic_exports_stay_within_the_default_budget(export_zip: Path) -> None:
    with open_archive(export_zip) as archive:
        archive.verify()
    assert read_export(str(export_zip)).row_counts["submissions"] == 4


# -- item: encrypted members ---------------------------------------------------------------


def test_an_encrypted_member_is_a_typed_error_naming_it(export_zip: Path) -> None:
    _patch_central(export_zip, "responses-by-submission.jsonl", flag=0x1)
    name = _member(export_zip, "responses-by-submission.jsonl")
    with pytest.raises(ArchiveError) as info:
        read_export(str(export_zip))
    assert name in str(info.value)
    assert "encrypted" in str(info.value)


def test_the_cli_reports_an_encrypted_member_on_one_line(export_zip: Path) -> None:
    _patch_central(export_zip, "responses-by-submission.jsonl", flag=0x1)
    proc = subprocess.run(
        [sys.executable, "-m", "prolific_ingest.cli", "read", str(export_zip)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 6, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "encrypted" in lines[0]


# -- item: deep nesting in metadata ----------------------------------------------------------


@pytest.mark.parametrize("levels", [101, 100_000])
def test_deeply_nested_metadata_is_a_bad_record_naming_the_member(
    tmp_path: Path, export_zip: Path, levels: int
) -> None:
    deep = b'{"id": "b", "x": ' + b"[" * levels + b"]" * levels + b"}"
    path = _rewrite(export_zip, tmp_path / "deep.zip", {"batch.json": deep})
    with pytest.raises(BadRecordError) as info:
        read_export(str(path))
    assert "batch.json" in str(info.value)
    assert main(["read", str(path)]) == 6


def test_deeply_nested_metadata_fails_the_cli_on_one_line(tmp_path: Path, export_zip: Path) -> None:
    deep = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = _rewrite(export_zip, tmp_path / "deep.zip", {"batch.json": deep})
    proc = subprocess.run(
        [sys.executable, "-m", "prolific_ingest.cli", "read", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 6, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "batch.json" in proc.stderr


@pytest.fixture
def deep_batch(prolific_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A batch whose exported ``batch.json`` nests 100,000 levels deep."""
    real_object, real_dumps = _build.owner_object, _build.dumps
    deep = b'{"id": "b", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    def marked(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**real_object(*args, **kwargs), "__deep__": True}

    def spelled(obj: Any) -> bytes:
        return deep if isinstance(obj, dict) and obj.get("__deep__") else real_dumps(obj)

    monkeypatch.setattr(_build, "owner_object", marked)
    monkeypatch.setattr(_build, "dumps", spelled)
    batch_id: str = prolific_emulator.add_batch(seed=5, n_submissions=3)
    return batch_id


def test_a_load_of_deeply_nested_metadata_fails_the_cli_typed_and_caches_nothing(
    prolific_emulator: Any, deep_batch: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "PROLIFIC_TOKEN": prolific_emulator.token,
        "PROLIFIC_API_URL": prolific_emulator.base_url,
        "PROLIFIC_INGEST_CACHE": str(cache),
        "PROLIFIC_POLL_INTERVAL": "0.01",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "prolific_ingest.cli", "batch", deep_batch],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 6, proc.stderr  # BadRecordError is an ArchiveError (docs/cli.md)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "batch.json" in lines[0], proc.stderr
    assert ExportCache(str(cache)).list(ExportRef("batch", deep_batch)) == []
    assert not [p for p in cache.rglob("*") if p.name in ("archive.zip", "_tables.json")]


def test_ordinary_nesting_in_metadata_still_loads(tmp_path: Path, export_zip: Path) -> None:
    nested = json.dumps({"id": "b", "x": [[[{"a": [1]}]]]}).encode()
    path = _rewrite(export_zip, tmp_path / "ok.zip", {"batch.json": nested})
    assert read_export(str(path)).metadata["x"] == [[[{"a": [1]}]]]


_ = ArchiveLimits
