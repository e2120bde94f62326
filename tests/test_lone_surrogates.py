"""Lone surrogates in metadata text (``"\\udc80"`` in batch.json) load losslessly.

No UTF-8 text, so no Arrow string, can hold a lone surrogate. A text column holding one
is a null cell with the value kept in ``extra``; JSON-text columns write it as its
``\\uXXXX`` escape, so ``json.loads`` gives the original value back.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from prolific_ingest import load_batch_export
from prolific_ingest.tables._arrow import dumps as text_of
from prolific_ingest.tables._arrow import json_column
from prolific_ingest.testing import _build
from prolific_ingest.testing._zipwriter import dumps

BAD_DESCRIPTION = "Rate \udc80 this"
BAD_LABEL = "Yes \ud800"


@pytest.fixture
def surrogate_instructions(prolific_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    real = _build.owner_object

    def odd_instructions(*args: Any, **kwargs: Any) -> dict[str, Any]:
        meta = real(*args, **kwargs)
        first = meta["instructions"][0]
        first["description"] = BAD_DESCRIPTION
        first["options"] = [{"label": BAD_LABEL, "value": 1}, {"label": "No", "value": 0}]
        first["x_note"] = "\udfff"
        return meta

    monkeypatch.setattr(_build, "owner_object", odd_instructions)
    # the archive spells them as JSON escapes (no UTF-8 text can hold them)
    monkeypatch.setattr(_build, "dumps", lambda obj: dumps(obj, ascii_only=True))
    batch_id: str = prolific_emulator.add_batch(seed=3, n_submissions=4)
    return batch_id


def _check(instructions: Any) -> None:
    first = instructions.iloc[0]
    assert pd.isna(first["description"])
    extra = json.loads(first["extra"])
    assert (extra["x_note"], extra["description"]) == ("\udfff", BAD_DESCRIPTION)
    options = json.loads(first["options"])
    assert options == [{"label": BAD_LABEL, "value": 1}, {"label": "No", "value": 0}]
    assert "\\ud800" in first["options"]  # the escape: valid UTF-8, same value


def test_lone_surrogates_in_instructions_load_cold_and_warm_losslessly(
    surrogate_instructions: str, conn: dict[str, Any]
) -> None:
    cold = load_batch_export(surrogate_instructions, **conn)
    _check(cold.tables["instructions"])
    assert "value_label" in cold.tables["answers"]  # the label view did not fail either
    warm = load_batch_export(surrogate_instructions, offline=True, export_id=cold.export_id, **conn)
    _check(warm.tables["instructions"])
    assert warm.row_counts == cold.row_counts


@pytest.mark.parametrize(
    "value", ["\udc80", {"k\ud800": ["a\udfffb", 1e-05]}, ["ok", {"x": "\ud83d"}], 2**70]
)
def test_json_text_escapes_lone_surrogates_and_reads_back_the_same(value: Any) -> None:
    column = json_column([None, value, {"plain": "é"}])
    column.validate(full=True)  # valid UTF-8
    texts = column.to_pylist()
    assert texts[0] is None and texts[2] == '{"plain":"é"}'
    assert json.loads(texts[1]) == value
    assert texts[1] == text_of(value)
