"""archive.py: member discovery, tolerant line iteration, hostile archives, extraction."""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from prolific_ingest.archive import BATCH, COLLECTION, ArchiveLimits, FileEntry, open_archive
from prolific_ingest.archive import _reader as archive_mod
from prolific_ingest.errors import (
    ArchiveError,
    ArchiveSecurityError,
    BadRecordError,
    CorruptArchiveError,
    MissingMemberError,
)

SUB = b'{"submission_id": "s1", "participant_id": "p1", "batch_id": "b1", "tasks": []}\n'


def make_zip(
    path: Path,
    entries: list[tuple[str, bytes]],
    *,
    symlinks: frozenset[str] = frozenset(),
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data in entries:
                info = zipfile.ZipInfo(name)
                info.compress_type = compression
                if name in symlinks:
                    info.create_system = 3
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, data)
    return path


def test_discovers_members_under_a_root_folder(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "a.zip",
        [
            ("export-1/responses-by-submission.jsonl", SUB),
            ("export-1/batch.json", b'{"id": "b1", "instructions": []}'),
            ("export-1/README.md", b"# hi"),
            ("export-1/files/s1/k1/a b.png", b"PNG"),
        ],
    )
    with open_archive(path) as archive:
        assert archive.kind == BATCH
        assert archive.root == "export-1/"
        assert archive.members == {
            "responses-by-submission.jsonl": "export-1/responses-by-submission.jsonl",
            "batch.json": "export-1/batch.json",
            "README.md": "export-1/README.md",
        }
        assert archive.metadata == {"id": "b1", "instructions": []}
        assert archive.has("batch.json")
        assert not archive.has("responses-by-task.jsonl")
        assert archive.file_entries() == [
            FileEntry("export-1/files/s1/k1/a b.png", 3, "s1", "k1", "a b.png")
        ]
        assert archive.open_file("files/s1/k1/a b.png").read() == b"PNG"
        assert archive.open_file("export-1/files/s1/k1/a b.png").read() == b"PNG"
        with pytest.raises(MissingMemberError):
            archive.open_file("files/s1/k1/missing.png")
        with pytest.raises(MissingMemberError):
            archive.open_file("batch.json")  # not an uploaded file
        with pytest.raises(MissingMemberError):
            list(archive.iter_lines("responses-by-task.jsonl"))


def test_collection_kind_and_flat_root(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "c.zip",
        [("responses.jsonl", b""), ("collection.json", b'\xef\xbb\xbf{"id": "c1"}')],
    )
    with open_archive(path) as archive:
        assert archive.kind == COLLECTION
        assert archive.root == ""
        assert archive.metadata == {"id": "c1"}


def test_kind_can_be_forced_and_empty_archive_defaults_to_batch(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "e.zip", [("README.md", b"x")])
    with open_archive(path) as archive:
        assert archive.kind == BATCH
        assert archive.metadata == {}
    with open_archive(path, kind="collection") as archive:
        assert archive.kind == COLLECTION
    with pytest.raises(ValueError, match="kind"):
        open_archive(path, kind="study")


def test_iter_lines_bom_crlf_blank_lines_and_numbers(tmp_path: Path) -> None:
    data = b'\xef\xbb\xbf{"a": 1}\r\n\r\n  \n{"b": "\xc3\xa9"}\r\n\n{"c": 3}'
    path = make_zip(tmp_path / "a.zip", [("responses-by-submission.jsonl", data)])
    with open_archive(path) as archive:
        lines = list(archive.iter_lines("responses-by-submission.jsonl"))
    assert lines == [(1, b'{"a": 1}'), (4, b'{"b": "\xc3\xa9"}'), (6, b'{"c": 3}')]


def test_iter_lines_handles_lines_longer_than_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_mod, "CHUNK_BYTES", 1024)
    huge = b'{"v": "' + b"x" * 50_000 + b'"}'
    data = b"\xef\xbb\xbf" + b'{"a": 1}\n' + huge + b"\r\n" + b'{"b": 2}\n' * 300
    path = make_zip(tmp_path / "a.zip", [("responses.jsonl", data)])
    with open_archive(path) as archive:
        lines = list(archive.iter_lines("responses.jsonl"))
        chunks = list(archive.iter_chunks("responses.jsonl"))
    assert lines[0] == (1, b'{"a": 1}')
    assert lines[1] == (2, huge)
    assert lines[-1] == (302, b'{"b": 2}')
    assert len(lines) == 302
    assert max(len(c) for c in chunks) <= 1024  # the member is streamed, never whole


def test_non_zip_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(CorruptArchiveError) as info:
        open_archive(path)
    assert info.value.source == str(path)


def test_verify_and_reading_catch_a_flipped_byte(tmp_path: Path) -> None:
    payload = b'{"submission_id": "s1"}\n' * 200
    path = make_zip(
        tmp_path / "a.zip",
        [("responses-by-submission.jsonl", payload), ("README.md", b"ok")],
        compression=zipfile.ZIP_STORED,
    )
    with open_archive(path) as archive:
        archive.verify()  # intact
    raw = bytearray(path.read_bytes())
    at = raw.index(payload) + 1000
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    with open_archive(path) as archive, pytest.raises(CorruptArchiveError) as info:
        archive.verify()
    assert info.value.member == "responses-by-submission.jsonl"
    assert "responses-by-submission.jsonl" in str(info.value)
    with open_archive(path) as archive, pytest.raises(CorruptArchiveError):
        list(archive.iter_lines("responses-by-submission.jsonl"))


@pytest.mark.parametrize("corrupt", ["big.jsonl", "files/s/k/small-7.txt"])
def test_verify_checks_every_member_on_two_threads(tmp_path: Path, corrupt: str) -> None:
    """verify() splits the members over threads; whichever is corrupt is still named,
    the smallest and the largest alike, and no checking thread is left running."""
    big = b'{"submission_id": "s1"}\n' * 5000
    smalls = [(f"files/s/k/small-{i}.txt", f"payload {i:04d} ".encode() * 40) for i in range(12)]
    entries = [("README.md", b"ok"), ("big.jsonl", big), *smalls]
    path = make_zip(tmp_path / "a.zip", entries, compression=zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    payload = dict(entries)[corrupt]
    raw[raw.index(payload) + len(payload) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    before = {t.name for t in threading.enumerate()}
    with open_archive(path) as archive, pytest.raises(CorruptArchiveError) as info:
        archive.verify()
    assert info.value.member == corrupt
    assert isinstance(info.value.__cause__, zipfile.BadZipFile)
    left = {t.name for t in threading.enumerate()} - before
    assert not [name for name in left if name.startswith("prolific-ingest-verify")]


def test_verify_raises_for_a_member_it_cannot_read_on_any_thread(tmp_path: Path) -> None:
    """An encrypted member makes zipfile raise RuntimeError, not a read error: verify()
    must still fail (typed, naming the member), whichever checking thread met it."""
    path = tmp_path / "a.zip"
    name = "files/s/k/locked.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.md", b"ok")
        for i in range(6):
            zf.writestr(f"files/s/k/f{i}.txt", b"x" * 200)
        zf.writestr(name, b"y" * 100_000)
        offset = zf.getinfo(name).header_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 6] |= 0x1  # the "encrypted" flag, in the local header ...
    central = raw.index(b"PK\x01\x02")
    while raw[central + 46 : central + 46 + len(name)] != name.encode():
        central = raw.index(b"PK\x01\x02", central + 4)
    raw[central + 8] |= 0x1  # ... and in its central directory entry
    path.write_bytes(bytes(raw))
    with open_archive(path) as archive, pytest.raises(ArchiveError) as info:
        archive.verify()
    assert info.value.member == "files/s/k/locked.bin"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "encrypted" in str(info.value)


def test_invalid_metadata_is_a_bad_record(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", [("batch.json", b"{not json")])
    with pytest.raises(BadRecordError) as info:
        open_archive(path)
    assert info.value.member == "batch.json"
    path = make_zip(tmp_path / "b.zip", [("batch.json", b"[1, 2]")])
    with pytest.raises(BadRecordError):
        open_archive(path)


def test_open_through_memory_url() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("root/responses-by-submission.jsonl", SUB)
    fs = fsspec.filesystem("memory")
    fs.pipe("/exports/a.zip", buf.getvalue())
    try:
        with open_archive("memory://exports/a.zip") as archive:
            assert archive.root == "root/"
            assert list(archive.iter_lines("responses-by-submission.jsonl")) == [(1, SUB.rstrip())]
    finally:
        fs.rm("/exports", recursive=True)


# -- hostile archives ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "/etc/passwd",
        "C:/Windows/evil.dll",
        "c:evil",
        "..\\..\\evil.txt",
        "export/../../evil.txt",
        "a/./b",
    ],
)
def test_unsafe_names_outside_files_are_errors(tmp_path: Path, name: str) -> None:
    path = make_zip(tmp_path / "a.zip", [("responses-by-submission.jsonl", SUB), (name, b"x")])
    with pytest.raises(ArchiveSecurityError) as info:
        open_archive(path)
    assert info.value.member == name


@pytest.mark.parametrize(
    "name",
    [
        "files/../../evil.txt",
        "files/s1/../../../evil.txt",
        "files\\..\\..\\evil.txt",
        "files/s1/k1/..",
    ],
)
def test_unsafe_names_under_files_are_skipped_with_a_warning(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_zip(
        tmp_path / "a.zip",
        [("responses-by-submission.jsonl", SUB), ("files/s1/k1/ok.txt", b"ok"), (name, b"x")],
    )
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"), open_archive(path) as a:
        assert [e.path for e in a.file_entries()] == ["files/s1/k1/ok.txt"]
        written = a.extract_files(str(tmp_path / "out"))
    assert any("unsafe" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert written == [str(tmp_path / "out" / "files/s1/k1/ok.txt")]
    assert not (tmp_path / "evil.txt").exists()


def test_symlinks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = make_zip(
        tmp_path / "a.zip",
        [("responses-by-submission.jsonl", SUB), ("files/s1/k1/link", b"/etc/passwd")],
        symlinks=frozenset({"files/s1/k1/link"}),
    )
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"), open_archive(path) as a:
        assert a.file_entries() == []
    assert "symbolic link" in caplog.text
    path = make_zip(
        tmp_path / "b.zip",
        [("responses-by-submission.jsonl", b"/etc/passwd")],
        symlinks=frozenset({"responses-by-submission.jsonl"}),
    )
    with pytest.raises(ArchiveSecurityError, match="symbolic link"):
        open_archive(path)


def test_duplicates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = make_zip(
        tmp_path / "a.zip",
        [("responses-by-submission.jsonl", SUB), ("responses-by-submission.jsonl", b"{}\n")],
    )
    with pytest.raises(ArchiveSecurityError, match="2 times"):
        open_archive(path)
    path = make_zip(
        tmp_path / "b.zip",
        [("x/batch.json", b"{}"), ("x/batch.json", b"{}"), ("x/responses.jsonl", b"")],
    )
    with pytest.raises(ArchiveSecurityError):
        open_archive(path)
    path = make_zip(
        tmp_path / "c.zip",
        [
            ("responses-by-submission.jsonl", SUB),
            ("files/s1/k/f.txt", b"one"),
            ("files/s1/k/f.txt", b"two"),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"), open_archive(path) as a:
        assert a.file_entries() == []
    assert "duplicate" in caplog.text


def test_zip_bomb_limits(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", [("responses.jsonl", b"\n" * 200_000)])
    with pytest.raises(ArchiveSecurityError, match="ratio"):
        open_archive(path, limits=ArchiveLimits(max_ratio=50, ratio_min_bytes=1024))
    with pytest.raises(ArchiveSecurityError, match="declares"):
        open_archive(path, limits=ArchiveLimits(max_member_bytes=1000))
    with pytest.raises(ArchiveSecurityError, match="uncompressed bytes"):
        open_archive(path, limits=ArchiveLimits(max_total_bytes=1000))
    with pytest.raises(ArchiveSecurityError, match="entries"):
        open_archive(path, limits=ArchiveLimits(max_members=0))
    with open_archive(path) as archive:  # the defaults allow it
        assert archive.kind == COLLECTION


def test_default_limits_refuse_a_real_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("files/a/b/c", "w") as f:
        block = bytes(1 << 20)
        for _ in range(40):
            f.write(block)
    with pytest.raises(ArchiveSecurityError, match="zip bomb"):
        open_archive(path)


# -- extraction ------------------------------------------------------------------------


def _entries() -> list[tuple[str, bytes]]:
    return [
        ("r/responses-by-submission.jsonl", SUB),
        ("r/files/", b""),
        ("r/files/s1/k1/photo 1.png", b"PNG-1"),
        ("r/files/s2/k2/写真.jpeg", b"JPEG"),
        ("r/files/../../escape.txt", b"no"),
    ]


def test_extract_files_local_never_escapes(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", _entries())
    dest = tmp_path / "work" / "dest"
    with open_archive(path) as archive:
        written = archive.extract_files(str(dest))
    assert sorted(written) == sorted(
        [str(dest / "files/s1/k1/photo 1.png"), str(dest / "files/s2/k2/写真.jpeg")]
    )
    assert (dest / "files/s1/k1/photo 1.png").read_bytes() == b"PNG-1"
    every = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert every == {
        "a.zip",
        "work/dest/files/s1/k1/photo 1.png",
        "work/dest/files/s2/k2/写真.jpeg",
    }


def test_extract_files_refuses_a_symlinked_destination(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", _entries())
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "files")
    with open_archive(path) as archive, pytest.raises(ArchiveSecurityError, match="outside"):
        archive.extract_files(str(dest))
    assert list(outside.rglob("*")) == []


def test_extract_files_to_memory_url() -> None:
    fs = fsspec.filesystem("memory")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in _entries():
            zf.writestr(name, data)
    fs.pipe("/src/a.zip", buf.getvalue())
    try:
        with open_archive("memory://src/a.zip") as archive:
            written = archive.extract_files("memory://out/x")
        assert sorted(written) == [
            "memory:///out/x/files/s1/k1/photo 1.png",
            "memory:///out/x/files/s2/k2/写真.jpeg",
        ]
        assert fs.cat("/out/x/files/s2/k2/写真.jpeg") == b"JPEG"
        assert not fs.exists("/escape.txt")
        assert not fs.exists("/out/escape.txt")
    finally:
        for d in ("/src", "/out"):
            if fs.exists(d):
                fs.rm(d, recursive=True)


class _CountedChunk(bytes):
    """A chunk that counts the bytes copied when something is concatenated with it."""

    copied = 0

    def __radd__(self, other: bytes) -> bytes:  # pending + chunk: the subclass goes first
        _CountedChunk.copied += len(other) + len(self)
        return bytes(other) + bytes(self)

    def __add__(self, other: bytes) -> bytes:
        _CountedChunk.copied += len(self) + len(other)
        return bytes(self) + bytes(other)


def test_a_line_spanning_many_chunks_is_joined_once(tmp_path: Path) -> None:
    """One 4 MiB line in 32768 chunks: appending each chunk to the pending bytes copied
    the line so far every time (quadratic, ~70 GB here); joining once copies it once.
    Counted, not timed: every concatenation with a chunk is tallied."""
    huge = b'{"v": "' + b"x" * (4 * 2**20) + b'"}'
    data = b'{"a": 1}\n' + huge + b"\n" + b'{"b": 2}'
    path = make_zip(tmp_path / "a.zip", [("responses.jsonl", data)])
    with open_archive(path) as archive:
        real = archive.iter_chunks

        def counted(logical: str, chunk_bytes: int | None = None) -> Iterator[bytes]:
            for chunk in real(logical, 128):
                yield _CountedChunk(chunk)

        archive.iter_chunks = counted  # type: ignore[method-assign]
        _CountedChunk.copied = 0
        blocks = list(archive.iter_blocks("responses.jsonl"))
    assert b"".join(block for _, block in blocks) == data
    assert [line for _, line in blocks if line.startswith(b'{"v"')] == [huge + b"\n"]
    assert _CountedChunk.copied <= 2 * len(data)


@pytest.mark.parametrize("fast", [True, False])
def test_a_deflated_member_reads_the_same_with_either_inflater_and_a_damaged_one_is_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """The parse and the CRC checks inflate with ISA-L where it is installed, else zlib:
    the same bytes, and damaged deflate data is a CorruptArchiveError either way."""
    import random

    from prolific_ingest.archive import _members

    if fast and _members._isal_zlib is None:
        pytest.skip("isal is not installed")
    if not fast:
        monkeypatch.setattr(_members, "_isal_zlib", None)
    rng = random.Random(5)
    payload = b"".join(
        b'{"submission_id": "s%d", "x": %f}\n' % (i, rng.random()) for i in range(40_000)
    )
    path = make_zip(
        tmp_path / "a.zip",
        [("responses-by-submission.jsonl", payload), ("README.md", b"ok" * 5000)],
        compression=zipfile.ZIP_DEFLATED,
    )
    member = "responses-by-submission.jsonl"
    with open_archive(path) as archive:
        assert b"".join(archive.iter_chunks(member, 4096)) == payload
        archive.verify()
        inflater = archive._open_fast(archive._member_info(member))
        kind = type(inflater._raw._decompressor).__module__  # type: ignore[attr-defined]
        inflater.close()
        assert kind == ("isal_zlib" if fast else "zlib")
        # a stream not read through here (uploaded files, metadata) keeps zlib's inflater
        with archive._open_member(archive._member_info("README.md")) as plain:
            assert type(plain._raw._decompressor).__module__ == "zlib"  # type: ignore[attr-defined]
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw = bytearray(path.read_bytes())
    at = info.header_offset
    name_len, extra_len = (
        int.from_bytes(raw[at + 26 : at + 28], "little"),
        int.from_bytes(raw[at + 28 : at + 30], "little"),
    )
    start = at + 30 + name_len + extra_len  # the deflated data
    for i in range(start + 2000, start + 2400):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    _assert_corrupt_on_read_and_verify(path, member)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_member_whose_crc_does_not_match_is_corrupt_with_either_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool, compression: int
) -> None:
    """The members read through here are checked with ISA-L's CRC-32 where it is installed,
    else zlib's: intact bytes under a wrong CRC are a CorruptArchiveError either way."""
    import struct

    from prolific_ingest.archive import _members

    if fast and _members._isal_zlib is None:
        pytest.skip("isal is not installed")
    if not fast:
        monkeypatch.setattr(_members, "_isal_zlib", None)
    member = "responses-by-submission.jsonl"
    payload = b"".join(b'{"submission_id": "s%d"}\n' % i for i in range(20_000))
    path = make_zip(
        tmp_path / "a.zip", [(member, payload), ("README.md", b"ok")], compression=compression
    )
    with open_archive(path) as archive:
        assert b"".join(archive.iter_chunks(member, 4096)) == payload  # the right CRC passes
        stream = archive._open_fast(archive._member_info(member))
        own = "_update_crc" in vars(stream._raw)  # type: ignore[attr-defined]
        stream.close()
        assert own is fast  # ISA-L's check replaces zipfile's only where it is installed
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw = bytearray(path.read_bytes())
    wrong = (info.CRC ^ 0x1) & 0xFFFFFFFF
    struct.pack_into("<I", raw, info.header_offset + 14, wrong)  # the local header's CRC
    patched = 0
    at = raw.find(b"PK\x01\x02")
    while at >= 0:  # ... and the member's central directory entry's
        name_len = int.from_bytes(raw[at + 28 : at + 30], "little")
        if raw[at + 46 : at + 46 + name_len] == member.encode():
            struct.pack_into("<I", raw, at + 16, wrong)
            patched += 1
        at = raw.find(b"PK\x01\x02", at + 4)
    assert patched == 1
    path.write_bytes(bytes(raw))
    _assert_corrupt_on_read_and_verify(path, member)


def _assert_corrupt_on_read_and_verify(path: Path, member: str) -> None:
    """Both the parse's read and the CRC check of ``path`` fail naming ``member``."""
    with open_archive(path) as archive, pytest.raises(CorruptArchiveError) as error:
        list(archive.iter_blocks(member))
    assert error.value.member == member
    with open_archive(path) as archive, pytest.raises(CorruptArchiveError):
        archive.verify()
