"""A cold load inflates the primary member once; its CRC, checked by the parse, gates the commit.

Each test loads from the real emulator over sockets. A corrupt archive is put in the
emulator's storage "at rest" (its ETag recomputed, as for an object whose bytes were
already wrong when stored, or a multipart upload's ETag that is no MD5), so the download
itself succeeds and only the members' CRC-32 can tell.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import (
    BadRecordError,
    CorruptArchiveError,
    ExportRef,
    ProlificClient,
    Settings,
    committed_exports,
    load_batch_export,
    request_export,
    wait_for_export,
)
from prolific_ingest.archive import _reader as archive_mod
from prolific_ingest.archive._budget import CountedMember
from prolific_ingest.tables import _parallel as parallel
from prolific_ingest.testing.state import file_etag
from tests._truth import assert_matches_truth

PRIMARY = "responses-by-submission.jsonl"


@dataclass
class Served:
    """One complete export job on the emulator, with its archive file in storage."""

    emu: Any
    batch_id: str
    export_id: str
    job: Any  # the emulator's job record: its archive, size and ETag

    @property
    def path(self) -> Path:
        return Path(self.job.archive)

    def store(self, data: bytes) -> None:
        """Replace the stored archive's bytes (and the size and ETag storage reports)."""
        self.path.write_bytes(data)
        self.job.size, self.job.etag = len(data), file_etag(self.path)


def _serve(emu: Any, batch_id: str) -> Served:
    client = ProlificClient(Settings.from_env(token=emu.token, base_url=emu.base_url))
    job = wait_for_export(client, request_export(client, ExportRef("batch", batch_id)))
    owner = emu._owner("batch", batch_id)  # the emulator has no public hook for its storage
    record = next(j for j in owner.jobs if j.export_id == job.export_id)
    return Served(emu, batch_id, job.export_id, record)


def _member_name(data: bytes, suffix: str) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return next(n for n in zf.namelist() if n.endswith(suffix))


def _swap_case_of_a_value(data: bytes) -> bytes:
    """Swap the case of the first letter of a JSON string value past the middle."""
    at = data.index(b'":"', len(data) // 2) + 3
    while not chr(data[at]).isalpha():
        at = data.index(b'":"', at) + 3
    return data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1 :]


def _with_wrong_crc(src: Path, suffix: str, mutate: Callable[[bytes], bytes]) -> bytes:
    """The archive at ``src`` with member ``suffix`` changed by ``mutate``, its CRC kept.

    The member is still a valid deflate stream: only the CRC-32 of the central directory
    and local header, which is the original member's, tells.
    """
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(suffix):
                name, crc = info.filename, zlib.crc32(data)
                data = mutate(data)
                assert zlib.crc32(data) != crc
            zout.writestr(info.filename, data)
    raw = bytearray(out.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        offset = zf.getinfo(name).header_offset
        pos = zf.start_dir  # type: ignore[attr-defined]
    struct.pack_into("<I", raw, offset + 14, crc)  # the local header's CRC-32
    while raw[pos + 46 : pos + 46 + len(name)] != name.encode():
        n_name, n_extra, n_comment = struct.unpack_from("<HHH", raw, pos + 28)
        pos += 46 + n_name + n_extra + n_comment
    struct.pack_into("<I", raw, pos + 16, crc)  # ... and the central directory's
    return bytes(raw)


@pytest.fixture
def inflated(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """``(member, bytes inflated)`` of every member stream opened and closed, in order."""
    seen: list[tuple[str, int]] = []
    real_close = CountedMember.close

    def close(self: CountedMember) -> None:
        if not self.closed:
            seen.append((self._info.filename, self.inflated))
        real_close(self)

    monkeypatch.setattr(CountedMember, "close", close)
    return seen


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts)


def _downloads(emu: Any) -> int:
    return len(
        [
            r
            for r in emu.requests
            if r.host == "download" and r.method == "GET" and r.status in (200, 206)
        ]
    )


# -- one decompression ---------------------------------------------------------------------------


def test_a_cold_load_inflates_each_member_once_and_a_warm_load_none(
    prolific_emulator: Any, conn: dict[str, Any], inflated: list[tuple[str, int]]
) -> None:
    batch_id = prolific_emulator.add_batch(seed=11, n_submissions=30)
    served = _serve(prolific_emulator, batch_id)
    with zipfile.ZipFile(served.path) as zf:
        sizes = {i.filename: i.file_size for i in zf.infolist() if not i.is_dir()}
    primary = next(n for n in sizes if n.endswith(PRIMARY))
    assert len(sizes) > 2  # batch.json, a JSONL member and uploaded files
    exp = load_batch_export(batch_id, export_id=served.export_id, **conn)
    assert_matches_truth(exp.arrow.tables, prolific_emulator.ground_truth(batch_id))
    opened = Counter(name for name, _ in inflated)
    totals: Counter[str] = Counter()
    for name, n in inflated:
        totals[name] += n
    assert opened[primary] == 1  # the parse's read; no separate CRC pass
    assert totals[primary] == sizes[primary]
    for name, size in sizes.items():  # every other member verified (metadata read on opening)
        assert totals[name] >= size, name
    assert len(list(Path(conn["cache"]).rglob("manifest.json"))) == 1

    inflated.clear()
    again = load_batch_export(batch_id, export_id=served.export_id, **conn)
    assert inflated == []  # committed: no member re-verified, tables from the table cache
    assert again.row_counts == exp.row_counts


# -- a corrupt primary member --------------------------------------------------------------------


def _entry_files(conn: dict[str, Any], served: Served) -> list[Path]:
    return _files(Path(conn["cache"]) / "batch" / served.batch_id / served.export_id)


def _corrupt_then_healthy(
    emu: Any,
    conn: dict[str, Any],
    batch_id: str,
    after_failure: Callable[[], None] | None = None,
    **load_kw: Any,
) -> tuple[CorruptArchiveError, Served]:
    """Load a primary member with a wrong CRC (nothing cached), then the healthy archive."""
    served = _serve(emu, batch_id)
    healthy = served.path.read_bytes()
    served.store(_with_wrong_crc(served.path, PRIMARY, _swap_case_of_a_value))
    member = _member_name(healthy, PRIMARY)
    downloads = _downloads(emu)
    with pytest.raises(CorruptArchiveError) as info:
        load_batch_export(batch_id, export_id=served.export_id, **conn, **load_kw)
    assert info.value.member == member
    assert served.export_id in str(info.value)
    assert member in str(info.value)
    assert "CRC" in str(info.value)
    assert _entry_files(conn, served) == []  # no manifest, no archive, no table file
    assert _downloads(emu) == downloads + 1
    if after_failure is not None:
        after_failure()

    served.store(healthy)
    exp = load_batch_export(batch_id, export_id=served.export_id, **conn, **load_kw)
    assert _downloads(emu) == downloads + 2  # the next load downloaded it again
    if "output" not in load_kw:
        assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))
    assert [p.name for p in _entry_files(conn, served)].count("manifest.json") == 1
    return info.value, served


def test_a_primary_member_failing_its_crc_commits_nothing_and_the_next_load_downloads_again(
    prolific_emulator: Any, conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(parallel.ENV_WORKERS, "1")
    batch_id = prolific_emulator.add_batch(seed=12, n_submissions=20)
    _corrupt_then_healthy(prolific_emulator, conn, batch_id)


def test_the_parallel_parse_checks_the_primary_member_crc_too(
    prolific_emulator: Any, conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_mod, "CHUNK_BYTES", 32 * 1024)  # many blocks from a small export
    monkeypatch.setenv(parallel.ENV_WORKERS, "2")
    decoded: list[int] = []
    real = parallel.wire.decode_result
    monkeypatch.setattr(parallel.wire, "decode_result", lambda p: decoded.append(1) or real(p))
    batch_id = prolific_emulator.add_batch(seed=13, n_submissions=80)
    _corrupt_then_healthy(prolific_emulator, conn, batch_id)
    assert len(decoded) > 10  # blocks really were parsed on worker processes


def _delta_logs(out: Path) -> dict[Path, bytes]:
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("_delta_log/*") if p.is_file()}


def test_a_lake_gets_nothing_from_an_archive_whose_primary_member_fails_its_crc(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    batch_id = prolific_emulator.add_batch(seed=14, n_submissions=12)
    out = tmp_path / "lake"
    first = load_batch_export(batch_id, output=str(out), **conn)  # an earlier export
    before = _delta_logs(out)
    records = committed_exports(str(out), ExportRef("batch", batch_id))
    assert [r["export_id"] for r in records] == [first.export_id]

    def unchanged() -> None:  # right after the failed load: no table version, no load record
        assert _delta_logs(out) == before
        assert committed_exports(str(out), ExportRef("batch", batch_id)) == records

    _, served = _corrupt_then_healthy(
        prolific_emulator, conn, batch_id, after_failure=unchanged, output=str(out)
    )
    after = committed_exports(str(out), ExportRef("batch", batch_id))
    assert [r["export_id"] for r in after] == [first.export_id, served.export_id]


# -- the other members, and failures that are not corruption ----------------------------------


def _flip_a_bit(data: bytes) -> bytes:
    at = len(data) // 2
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize("member", ["responses-by-task.jsonl", "upload"])
def test_a_corrupt_member_the_parse_does_not_read_fails_the_load_with_nothing_committed(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path, member: str
) -> None:
    batch_id = prolific_emulator.add_batch(seed=16, n_submissions=10)
    served = _serve(prolific_emulator, batch_id)
    with zipfile.ZipFile(served.path) as zf:
        files = [i for i in zf.infolist() if "files/" in i.filename and not i.is_dir()]
        if member == "upload":
            name = max(files, key=lambda i: i.file_size).filename
        else:
            name = next(n for n in zf.namelist() if n.endswith(member))
    served.store(_with_wrong_crc(served.path, name, _flip_a_bit))
    out = tmp_path / "lake"
    with pytest.raises(CorruptArchiveError) as info:
        load_batch_export(batch_id, export_id=served.export_id, output=str(out), **conn)
    assert info.value.member == name
    assert served.export_id in str(info.value)
    assert _files(Path(conn["cache"])) == []
    assert not out.exists() or _delta_logs(out) == {}  # no table version, no load record


def test_a_bad_record_leaves_the_sound_archive_cached_for_the_next_policy(
    prolific_emulator: Any, conn: dict[str, Any]
) -> None:
    batch_id = prolific_emulator.add_batch(seed=17, n_submissions=10)
    served = _serve(prolific_emulator, batch_id)
    with zipfile.ZipFile(served.path) as zin:
        parts = {i.filename: zin.read(i) for i in zin.infolist()}
    member = next(n for n in parts if n.endswith(PRIMARY))
    lines = parts[member].split(b"\n")
    lines.insert(3, b'{"submission_id": "s-broken", "tasks": [ nope')
    parts[member] = b"\n".join(lines)
    rebuilt = io.BytesIO()
    with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in parts.items():
            zout.writestr(name, data)
    served.store(rebuilt.getvalue())
    with pytest.raises(BadRecordError):
        load_batch_export(batch_id, export_id=served.export_id, **conn)
    assert len(list(Path(conn["cache"]).rglob("manifest.json"))) == 1
    exp = load_batch_export(
        batch_id, export_id=served.export_id, on_bad_records="quarantine", **conn
    )
    assert exp.row_counts["rejected"] == 1
    assert _downloads(prolific_emulator) == 1  # the archive came from the cache


def test_corruption_that_breaks_a_line_before_the_crc_is_reported_as_corruption(
    prolific_emulator: Any, conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_mod, "CHUNK_BYTES", 32 * 1024)  # parsed before the end is read
    batch_id = prolific_emulator.add_batch(seed=18, n_submissions=20)
    served = _serve(prolific_emulator, batch_id)

    def break_a_line(data: bytes) -> bytes:  # a bad record long before the member's end
        at = data.index(b"\n{", len(data) // 3) + 1
        return data[:at] + b"[" + data[at + 1 :]

    served.store(_with_wrong_crc(served.path, PRIMARY, break_a_line))
    with pytest.raises(CorruptArchiveError) as info:
        load_batch_export(batch_id, export_id=served.export_id, **conn)
    assert isinstance(info.value.__cause__, BadRecordError)
    assert "CRC" in str(info.value)
    assert _files(Path(conn["cache"])) == []


def test_verify_leaves_the_skipped_member_to_its_reader(tmp_path: Path) -> None:
    from prolific_ingest.archive import open_archive
    from prolific_ingest.testing import ExportSpec, make_batch_export

    good = tmp_path / "good.zip"
    make_batch_export(good, ExportSpec(n_submissions=6))
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_with_wrong_crc(good, PRIMARY, _swap_case_of_a_value))
    with open_archive(bad) as archive:
        archive.verify(skip=PRIMARY)  # every other member is intact
        with pytest.raises(CorruptArchiveError) as info:
            archive.verify()
        assert info.value.member == archive.members[PRIMARY]
        with pytest.raises(CorruptArchiveError):  # the reader checks the skipped member
            for _ in archive.iter_chunks(PRIMARY):
                pass
