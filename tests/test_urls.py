"""Storage URLs: validated once before anything is written; credentials never leave the options.

Loads run against the loopback emulator, buckets against moto's S3 server on loopback.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from prolific_ingest import (
    ConfigurationError,
    ExportCache,
    LakeTarget,
    load_batch_export,
    read_dataset,
    read_export,
)
from prolific_ingest._urls import (
    is_https_or_loopback,
    parse_storage_url,
    redact_url,
    url_secrets,
)
from prolific_ingest.errors import MissingPathError
from prolific_ingest.testing import ExportSpec, make_batch_export

BAD_URLS = ["sss3://lake/x", "s3:/lake", "s3:lake", "s3://", "s3:///lake", "", "   "]

SECRET = "s3cr3t-Pa55word"  # what must never reach a log line


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_or_unknown_output_is_refused_before_any_request_or_write(
    url, prolific_emulator, conn, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    batch_id = prolific_emulator.add_batch(seed=1, n_submissions=2)
    before = len(prolific_emulator.requests)
    with pytest.raises(ConfigurationError) as info:
        load_batch_export(batch_id, output=url, **conn)
    assert "output location" in str(info.value)
    if url.strip():
        assert repr(url) in str(info.value)
    assert len(prolific_emulator.requests) == before  # no export was requested
    assert not (tmp_path / "s3:").exists()
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_or_unknown_cache_location_is_refused(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if url.strip():
        with pytest.raises(ConfigurationError, match="cache location"):
            ExportCache(url)
    assert _files_under(tmp_path) == []
    assert not (tmp_path / "s3:").exists()


@pytest.mark.parametrize("url", [u for u in BAD_URLS if u.strip()])
def test_a_malformed_or_unknown_archive_url_is_refused(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="read location"):
        read_export(url)


def test_a_one_slash_url_is_refused_but_a_dotted_local_folder_of_that_name_works(tmp_path):
    folder = tmp_path / "s3:" / "lake"
    folder.mkdir(parents=True)
    make_batch_export(folder / "export.zip", ExportSpec(n_submissions=2, seed=3))
    with pytest.raises(ConfigurationError, match=r"two slashes"):
        parse_storage_url("s3:/lake")
    exp = read_export(str(folder / "export.zip"))
    assert exp.row_counts["submissions"] == 2


def test_reading_a_dataset_or_archive_that_does_not_exist_raises_a_typed_error(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist") as info:
        read_dataset(str(tmp_path / "no-such-lake"), "responses")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ConfigurationError)
    with pytest.raises(MissingPathError, match=r"no-such\.zip"):
        read_export(str(tmp_path / "no-such.zip"))


def test_a_read_only_protocol_is_refused_as_an_output_but_accepted_to_read():
    with pytest.raises(ConfigurationError, match="read-only"):
        parse_storage_url("https://example.org/lake", purpose="output")
    assert parse_storage_url("https://example.org/x.zip", purpose="read").protocol == "https"


def test_url_credentials_move_into_the_storage_options():
    loc = parse_storage_url(f"s3://AKIDEXAMPLE:{SECRET}%2Fend@bucket/lake", {"anon": False})
    assert loc.url == "s3://bucket/lake"
    assert loc.display == "s3://bucket/lake"
    assert loc.storage_options == {"anon": False, "key": "AKIDEXAMPLE", "secret": f"{SECRET}/end"}
    assert SECRET not in repr(loc) and SECRET not in str(loc)
    assert parse_storage_url("S3://bucket/Lake").url == "s3://bucket/Lake"
    assert parse_storage_url("ftp://me:pw@host/x").storage_options == {
        "username": "me",
        "password": "pw",
    }


def test_conflicting_or_unsupported_url_credentials_are_refused_without_echoing_them():
    with pytest.raises(ConfigurationError, match="different one") as info:
        parse_storage_url(f"s3://AKID:{SECRET}@bucket/x", {"secret": "other"})
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigurationError, match="storage options") as info:
        parse_storage_url(f"memory://user:{SECRET}@x/y")
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigurationError, match="chained") as info:
        parse_storage_url(f"simplecache::s3://AKID:{SECRET}@bucket/x.zip", purpose="read")
    assert SECRET not in str(info.value)


def test_non_credential_user_info_stays_in_the_url():
    # abfs names its container before the @; no password, nothing to move
    with pytest.raises(ConfigurationError) as info:
        parse_storage_url("abfs://container@account.dfs.core.windows.net/lake")
    assert "package" in str(info.value) or "adlfs" in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"s3://AKID:{SECRET}@bucket/x?versionId=1#f", "s3://bucket/x"),
        (f"s3://AKID:{SECRET}/slash@bucket/x", "s3://bucket/x"),  # unescaped / in the secret
        ("https://h:8443/p?X-Amz-Signature=abc", "https://h:8443/p"),
        (f"simplecache::s3://AKID:{SECRET}@b/x", "simplecache::s3://b/x"),
        ("/a/local?path", "/a/local?path"),
    ],
)
def test_redaction_drops_user_info_query_and_fragment(url, shown):
    assert redact_url(url) == shown


def test_the_secrets_of_a_url_are_found_even_with_an_unescaped_slash():
    assert url_secrets(f"s3://AKID:{SECRET}/x@bucket/lake") == [f"{SECRET}/x"]
    assert url_secrets("https://h/p?X-Amz-Signature=abc&a=1") == [
        "X-Amz-Signature=abc&a=1",
        "abc",
        "1",
    ]
    assert url_secrets(f"simplecache::s3://AKID:{SECRET}@b/x") == [SECRET]
    assert url_secrets("/local/path?x") == [] and url_secrets(None) == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.prolific.com", True),
        ("http://127.0.0.1:8080", True),
        ("http://[::1]:8080", True),
        ("http://localhost", True),
        ("http://api.prolific.com", False),
        ("ftp://127.0.0.1/x", False),
        ("https://", False),
    ],
)
def test_api_and_download_urls_must_be_https_or_loopback(url, allowed):
    assert is_https_or_loopback(url) is allowed


def test_s3_credentials_in_a_url_never_reach_any_log_record(prolific_emulator, conn, s3, caplog):
    caplog.set_level(logging.DEBUG)  # every logger: ours, fsspec, s3fs, botocore
    batch_id = prolific_emulator.add_batch(seed=4, n_submissions=3)
    options = {"client_kwargs": {"endpoint_url": s3.endpoint}}
    creds = f"AKIDEXAMPLE:{SECRET}"
    exp = load_batch_export(
        batch_id,
        output=LakeTarget(f"s3://{creds}@{s3.bucket}/lake", storage_options=options),
        **{
            **conn,
            "cache": ExportCache(f"s3://{creds}@{s3.bucket}/cache", storage_options=options),
        },
    )
    assert exp.written is not None and SECRET not in exp.written.output
    assert SECRET not in exp.archive_url
    s3.fs.invalidate_cache()
    assert s3.fs.find(f"{s3.bucket}/lake/_loads/_delta_log")
    assert s3.fs.exists(f"{s3.bucket}/cache/batch/{batch_id}/{exp.export_id}/archive.zip")
    assert len(exp.answers) == prolific_emulator.ground_truth(batch_id).counts["answers"]
    with pytest.raises(ConfigurationError, match="already loaded") as info:
        load_batch_export(
            batch_id,
            output=LakeTarget(
                f"s3://{creds}@{s3.bucket}/lake", storage_options=options, incremental=True
            ),
            until="2000-01-01T00:00:00Z",
            **conn,
        )
    assert SECRET not in str(info.value) and f"s3://{s3.bucket}/lake" in str(info.value)
    assert any(r.name.startswith("s3fs") for r in caplog.records)  # the log was on
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.name


@pytest.mark.parametrize("url", ["sss3://files/x", "s3:/files", "s3://"])
def test_extracting_uploaded_files_to_a_malformed_url_is_refused_before_writing(
    url, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "export.zip"
    make_batch_export(path, ExportSpec(n_submissions=2, seed=4))
    exp = read_export(str(path))
    with pytest.raises(ConfigurationError, match="output location"):
        exp.extract_files(url)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.zip"]


@pytest.mark.parametrize("scheme", ["file", "FILE", "File", "local"])
def test_a_local_url_is_read_whatever_the_case_of_its_scheme(tmp_path, scheme):
    loc = parse_storage_url(f"{scheme}://{tmp_path}", purpose="read")
    assert loc.is_local
    assert loc.url == f"{scheme.lower()}://{tmp_path}"
    with pytest.raises(MissingPathError):
        parse_storage_url(f"{scheme}://{tmp_path}/absent", purpose="read")
