"""The batch and collection load verbs hand every argument, by its own name, to one body."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import prolific_ingest
from prolific_ingest import api
from prolific_ingest.exports import ExportRef


@pytest.mark.parametrize(
    ("verb", "kind"),
    [("load_batch_export", "batch"), ("load_collection_export", "collection")],
)
def test_each_load_verb_passes_every_argument_by_its_own_name_to_the_shared_body(
    verb: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[ExportRef, dict[str, Any]]] = []

    def record(ref: ExportRef, **kwargs: Any) -> str:
        seen.append((ref, kwargs))
        return "loaded"

    monkeypatch.setattr(api, "load_export", record)
    fn = getattr(prolific_ingest, verb)
    names = [p for p in inspect.signature(fn).parameters if p != f"{kind}_id"]
    marks = {name: object() for name in names}  # one distinct value per parameter

    assert fn("OWNER", **marks) == "loaded"

    [(ref, passed)] = seen
    assert ref == ExportRef(kind, "OWNER")
    assert passed.keys() == marks.keys()
    assert [name for name in names if passed[name] is not marks[name]] == []
