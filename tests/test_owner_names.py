"""An owner of either kind is named by an ExportRef; the older spellings still work and warn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import (
    ConfigurationError,
    ExportRef,
    LakeTarget,
    ProlificClient,
    Settings,
    committed_exports,
    delete_export,
    list_exports,
    load_batch_export,
    load_collection_export,
    prune_exports,
    read_dataset,
)


@pytest.fixture
def loaded(prolific_emulator: Any, conn: dict[str, Any]) -> tuple[str, str]:
    """A batch loaded twice (two export jobs on the server); its id and the first export's."""
    batch_id = prolific_emulator.add_batch(seed=21, n_submissions=2)
    first = load_batch_export(batch_id, since="2026-01-01T00:00:00Z", max_age=0, **conn)
    load_batch_export(batch_id, max_age=0, **conn)
    return batch_id, first.export_id


def test_list_exports_by_id_and_kind_still_lists_and_warns(
    loaded: tuple[str, str], conn: dict[str, Any]
) -> None:
    batch_id, _ = loaded
    by_ref = list_exports(ExportRef("batch", batch_id), client=conn["client"])
    with pytest.warns(DeprecationWarning, match=r"list_exports\(owner_id, kind=\.\.\.\)"):
        by_id = list_exports(batch_id, kind="batch", client=conn["client"])
    assert [j.export_id for j in by_id] == [j.export_id for j in by_ref]
    assert len(by_ref) == 2


def test_delete_and_prune_by_id_still_work_and_warn(
    loaded: tuple[str, str], conn: dict[str, Any]
) -> None:
    batch_id, export_id = loaded
    with pytest.warns(DeprecationWarning, match="ExportRef"):
        delete_export(batch_id, export_id, client=conn["client"])
    ref = ExportRef("batch", batch_id)
    assert export_id not in {j.export_id for j in list_exports(ref, client=conn["client"])}
    with pytest.warns(DeprecationWarning, match="ExportRef"):
        pruned = prune_exports(batch_id, keep=0, cache=conn["cache"], client=conn["client"])
    assert len(pruned) == 1
    assert list_exports(ref, client=conn["client"]) == []


def test_the_connection_keywords_of_the_job_verbs_still_work_and_warn(
    loaded: tuple[str, str], prolific_emulator: Any
) -> None:
    batch_id, _ = loaded
    emu = prolific_emulator
    with pytest.warns(DeprecationWarning, match=r"list_exports\((token|base_url)=\.\.\.\)"):
        jobs = list_exports(ExportRef("batch", batch_id), token=emu.token, base_url=emu.base_url)
    assert len(jobs) == 2


def test_a_connection_keyword_beside_client_is_refused_by_the_job_verbs() -> None:
    with (
        pytest.warns(DeprecationWarning, match="token="),
        pytest.raises(ConfigurationError, match="token= is ignored when client= is given"),
    ):
        list_exports(ExportRef("batch", "b"), client=Settings(), token="t")


def test_kind_beside_an_export_ref_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="drop kind="):
        list_exports(ExportRef("batch", "b"), kind="collection", client=ProlificClient(Settings()))


def test_read_dataset_and_committed_exports_by_id_still_work_and_warn(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    out, other = str(tmp_path / "lake"), str(tmp_path / "collections")  # a lake per kind
    batch_id = prolific_emulator.add_batch(seed=22, n_submissions=2)
    collection_id = prolific_emulator.add_collection(seed=23, n_submissions=2)
    load_batch_export(batch_id, output=LakeTarget(out), **conn)
    load_collection_export(collection_id, output=other, **conn)
    batch, collection = ExportRef("batch", batch_id), ExportRef("collection", collection_id)
    rows = read_dataset(out, "answers", batch)
    assert read_dataset(out, "answers", batch_id).equals(rows)  # a batch id, as it was
    assert read_dataset(out, "answers", batch_id=batch_id).equals(rows)
    by_collection = read_dataset(other, "answers", collection)
    with pytest.warns(DeprecationWarning, match=r"read_dataset\(collection_id=\.\.\.\)"):
        assert read_dataset(other, "answers", collection_id=collection_id).equals(by_collection)
    records = committed_exports(out, batch)
    with pytest.warns(DeprecationWarning, match=r"committed_exports\(owner_id=\.\.\.\)"):
        assert committed_exports(out, owner_id=batch_id) == records
    with pytest.warns(DeprecationWarning, match="committed_exports"):
        old = committed_exports(other, kind="collection", owner_id=collection_id)
    assert old == committed_exports(other, collection) != []


def test_the_old_name_of_the_lifecycle_delete_warns() -> None:
    from prolific_ingest import exports

    with pytest.warns(DeprecationWarning, match="exports.delete_export"):
        old = exports.delete_export
    assert old is exports.delete_job
