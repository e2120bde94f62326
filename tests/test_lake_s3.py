"""The lake on S3 (moto's server on loopback), and the fsspec -> delta-rs option translation."""

from __future__ import annotations

from typing import Any

import pytest
from deltalake import DeltaTable

from prolific_ingest import (
    ConfigurationError,
    ExportRef,
    LakeNotFoundError,
    LakeTarget,
    SinkError,
    committed_exports,
    load_batch_export,
    read_dataset,
)
from prolific_ingest.lake import delta_storage_options


def test_a_load_with_fsspec_options_writes_delta_tables_on_s3(
    prolific_emulator: Any, conn: dict[str, Any], s3: Any
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=91, n_submissions=6)
    out, opts = s3.url("lake"), s3.storage_options
    exp = load_batch_export(
        batch_id, output=LakeTarget(out, incremental=True, storage_options=opts), **conn
    )
    emu.add_submissions(batch_id, 2)
    load_batch_export(
        batch_id, output=LakeTarget(out, incremental=True, storage_options=opts), **conn
    )
    s3.fs.invalidate_cache()
    assert s3.fs.exists(f"{s3.bucket}/lake/responses/_delta_log/00000000000000000000.json")
    truth = emu.ground_truth(batch_id)
    back = read_dataset(out, "responses", ExportRef("batch", batch_id), storage_options=opts)
    assert sorted(back["response_id"]) == sorted(r["response_id"] for r in truth.responses)
    delta = DeltaTable(f"{out}/answers", storage_options=delta_storage_options(out, opts))
    assert delta.to_pyarrow_dataset().count_rows() == truth.counts["answers"]
    loads = committed_exports(out, storage_options=opts)
    assert loads[0]["export_id"] == exp.export_id and len(loads) == 2


def test_a_missing_s3_lake_is_a_typed_error_without_the_secret(s3: Any) -> None:
    opts = dict(s3.storage_options, secret="very-secret-value")
    with pytest.raises(LakeNotFoundError) as info:
        read_dataset(s3.url("nothing-here"), "responses", storage_options=opts)
    assert "very-secret-value" not in str(info.value)
    with pytest.raises(SinkError) as failed:
        read_dataset("s3://no-such-bucket-xyz/lake", "answers", storage_options=opts)
    assert "very-secret-value" not in str(failed.value)
    assert "very-secret-value" not in repr(failed.value)


def test_fsspec_s3_options_translate_to_delta_rs_options() -> None:
    got = delta_storage_options(
        "s3://bucket/lake",
        {
            "key": "AK",
            "secret": "SK",
            "token": "ST",
            "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
            "use_listings_cache": False,
        },
        environ={},
    )
    assert got == {
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK",
        "AWS_SESSION_TOKEN": "ST",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_REGION": "eu-west-1",
        "AWS_ALLOW_HTTP": "true",
    }
    assert delta_storage_options("s3://b/l", {"anon": True}, environ={}) == {
        "AWS_SKIP_SIGNATURE": "true"
    }
    assert delta_storage_options("s3://b/l", {"profile": "dev"}, environ={}) == {
        "AWS_PROFILE": "dev"
    }
    # delta-rs options by their own names pass through, as text.
    assert delta_storage_options("s3://b/l", {"aws_allow_http": True}, environ={}) == {
        "AWS_ALLOW_HTTP": "true"
    }


def test_the_aws_environment_is_completed_for_delta_rs() -> None:
    env = {"AWS_ENDPOINT_URL": "http://localhost:4566", "AWS_DEFAULT_REGION": "us-east-2"}
    got = delta_storage_options("s3://b/l", None, environ=env)
    assert got == {"AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-2"}
    assert delta_storage_options("s3://b/l", None, environ={"AWS_REGION": "x"}) == {}


def test_gcs_and_azure_options_translate_too() -> None:
    assert delta_storage_options("gs://b/l", {"token": "/keys/sa.json"}, environ={}) == {
        "GOOGLE_SERVICE_ACCOUNT": "/keys/sa.json"
    }
    assert delta_storage_options("gs://b/l", {"token": "anon"}, environ={}) == {
        "GOOGLE_SKIP_SIGNATURE": "true"
    }
    got = delta_storage_options(
        "abfs://container/lake", {"account_name": "acct", "account_key": "k"}, environ={}
    )
    assert got == {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "k"}


def test_an_option_delta_rs_cannot_take_is_named_never_dropped() -> None:
    with pytest.raises(ConfigurationError, match="requester_pays") as info:
        delta_storage_options("s3://b/l", {"requester_pays": "secret-looking"}, environ={})
    assert "secret-looking" not in str(info.value)
    with pytest.raises(ConfigurationError, match="client_kwargs"):
        delta_storage_options("s3://b/l", {"client_kwargs": {"proxies": {}}}, environ={})


def test_credentials_in_an_s3_url_become_options_and_never_show(s3: Any) -> None:
    from prolific_ingest.lake._storage import resolve_lake

    lake = resolve_lake("s3://AKID:pass%2Fword@bucket/lake", None)
    assert lake.uri == "s3://bucket/lake" and lake.display == "s3://bucket/lake"
    assert lake.options["AWS_ACCESS_KEY_ID"] == "AKID"
    assert lake.options["AWS_SECRET_ACCESS_KEY"] == "pass/word"
    assert "pass" not in repr(lake)
