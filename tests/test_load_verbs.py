"""The load verbs: one list of options handed to one body, and the deprecated spellings."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import pytest

import prolific_ingest
from prolific_ingest import (
    ConfigurationError,
    ExportCache,
    LakeTarget,
    ProlificClient,
    RetryPolicy,
    Settings,
    api,
    committed_exports,
    load_batch_export,
)
from prolific_ingest.exports import ExportRef
from prolific_ingest.pipeline._options import DEFAULTS, LoadRequest

VERBS = [("load_batch_export", "batch"), ("load_collection_export", "collection")]


def _recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ExportRef, LoadRequest]]:
    seen: list[tuple[ExportRef, LoadRequest]] = []

    def record(ref: ExportRef, request: LoadRequest) -> Any:
        seen.append((ref, request))
        return "loaded"

    monkeypatch.setattr(api, "load_export", record)
    return seen


@pytest.mark.parametrize(("verb", "kind"), VERBS)
def test_each_load_verb_hands_every_option_by_its_own_name_to_the_shared_body(
    verb: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _recorded(monkeypatch)
    fn = getattr(prolific_ingest, verb)
    marks: dict[str, Any] = {name: object() for name in DEFAULTS}  # a distinct value each
    marks["output"] = LakeTarget("lake")
    marks["cache"] = "cache-dir"

    assert fn("OWNER", **marks) == "loaded"

    [(ref, request)] = seen
    assert ref == ExportRef(kind, "OWNER")
    assert [name for name in DEFAULTS if getattr(request, name) is not marks[name]] == []


def test_load_batch_exports_hands_the_same_options_to_each_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _recorded(monkeypatch)
    settings = Settings()
    report = prolific_ingest.load_batch_exports(["a", "b", "a"], client=settings, max_age=0)
    assert sorted(report.results) == ["a", "b"]
    assert sorted(ref.id for ref, _ in seen) == ["a", "b"]
    assert all(r.client is settings and r.max_age == 0 for _, r in seen)


def test_the_load_verbs_show_one_signature_of_at_most_fourteen_parameters() -> None:
    batch = inspect.signature(prolific_ingest.load_batch_export).parameters
    collection = inspect.signature(prolific_ingest.load_collection_export).parameters
    many = inspect.signature(prolific_ingest.load_batch_exports).parameters
    assert len(batch) <= 14
    assert next(iter(batch)) == "batch_id" and next(iter(collection)) == "collection_id"
    assert list(batch)[1:] == list(collection)[1:] == list(many)[2:] == list(DEFAULTS)
    assert batch["max_age"].default is DEFAULTS["max_age"]
    assert "token" not in batch and "incremental" not in batch


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("token", "T0K", "token"),
        ("base_url", "https://api.example.org", "base_url"),
        ("retry", RetryPolicy(max_attempts=2), "retry"),
        ("timeout", 5.0, "wait_timeout"),
    ],
)
def test_a_connection_keyword_still_works_and_warns(
    name: str, value: Any, field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _recorded(monkeypatch)
    with pytest.warns(DeprecationWarning, match=rf"load_batch_export\({name}=.*client="):
        load_batch_export("b", **{name: value})
    [(_, request)] = seen
    assert getattr(request, field) == value


@pytest.mark.parametrize("name", ["token", "base_url", "retry"])
def test_a_connection_keyword_beside_client_is_refused_not_ignored(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _recorded(monkeypatch)
    value = RetryPolicy() if name == "retry" else "x"
    with (
        pytest.warns(DeprecationWarning, match=f"{name}="),
        pytest.raises(ConfigurationError, match=f"{name}= is ignored when client= is given"),
    ):
        load_batch_export("b", client=Settings(), **{name: value})


def test_timeout_beside_client_still_bounds_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _recorded(monkeypatch)
    with pytest.warns(DeprecationWarning, match="wait_timeout"):
        load_batch_export("b", client=Settings(), timeout=3.0)
    assert seen[0][1].wait_timeout == 3.0


def test_flat_sink_keywords_still_work_and_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _recorded(monkeypatch)
    opts = {"anon": True}
    with pytest.warns(DeprecationWarning, match=r"output=LakeTarget\(url, incremental="):
        load_batch_export(
            "b",
            output="s3://bucket/lake",
            incremental=True,
            overwrite=True,
            partition_by=["date"],
            storage_options=opts,
        )
    [(_, request)] = seen
    assert request.output == LakeTarget(
        "s3://bucket/lake",
        storage_options=opts,
        partition_by=("date",),
        incremental=True,
        overwrite=True,
    )
    assert request.cache_options == opts  # as before: the cache's options too


def test_a_flat_sink_keyword_beside_a_lake_target_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _recorded(monkeypatch)
    with (
        pytest.warns(DeprecationWarning, match="overwrite="),
        pytest.raises(ConfigurationError, match="in output=LakeTarget"),
    ):
        load_batch_export("b", output=LakeTarget("lake"), overwrite=True)


def test_an_unknown_keyword_is_a_type_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _recorded(monkeypatch)
    with pytest.raises(TypeError, match="unexpected keyword argument 'outptu'"):
        load_batch_export("b", outptu="lake")  # type: ignore[call-arg]


def test_the_new_spellings_warn_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    _recorded(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_batch_export(
            "b",
            output=LakeTarget("lake", incremental=True),
            cache=ExportCache("memory://c"),
            client=ProlificClient(Settings()),
        )


def test_a_lake_target_repr_shows_no_credentials() -> None:
    target = LakeTarget("s3://KEY:SECRET@bucket/lake", storage_options={"secret": "S3CR3T"})
    assert "SECRET" not in repr(target) and "S3CR3T" not in repr(target)
    assert "bucket/lake" in repr(target)


def test_a_load_with_the_deprecated_spellings_still_loads_and_warns(
    prolific_emulator: Any, tmp_path: Path
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=12, n_submissions=3)
    out = str(tmp_path / "lake")
    with pytest.warns(DeprecationWarning, match="is deprecated") as caught:
        exp = load_batch_export(
            batch_id,
            token=emu.token,
            base_url=emu.base_url,
            output=out,
            incremental=True,
            cache=str(tmp_path / "cache"),
            progress=False,
        )
    assert {str(w.message).split("(")[1].split("=")[0] for w in caught} >= {"token", "base_url"}
    assert len(exp.answers) == emu.ground_truth(batch_id).counts["answers"]
    assert [r["export_id"] for r in committed_exports(out)] == [exp.export_id]


def test_export_to_lake_takes_a_lake_target_and_its_flat_keywords_warn(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    batch_id = prolific_emulator.add_batch(seed=14, n_submissions=2)
    exp = load_batch_export(batch_id, **conn)
    lake = str(tmp_path / "lake")
    assert not exp.to_lake(LakeTarget(lake, storage_options={})).skipped
    with pytest.warns(DeprecationWarning, match=r"Export\.to_lake\(overwrite=\.\.\.\)"):
        again = exp.to_lake(lake, overwrite=True)
    assert not again.skipped  # overwrite: loaded again
    assert exp.to_lake(lake).skipped
    with pytest.raises(ConfigurationError, match="incremental"):
        exp.to_lake(LakeTarget(lake, incremental=True))
