"""``prolific-ingest lake history|vacuum|optimize URL`` and ``--out`` writing the Delta lake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from prolific_ingest.cli import main


def _json(capsys: Any, argv: list[str]) -> Any:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_out_writes_delta_tables_and_lake_commands_keep_house(
    env: Any, tmp_path: Path, capsys: Any
) -> None:
    batch_id = env.add_batch(seed=95, n_submissions=4)
    lake = str(tmp_path / "lake")
    loaded = _json(capsys, ["batch", batch_id, "--out", lake, "--max-age", "0"])
    assert loaded["output"] == lake
    env.add_submissions(batch_id, 2)
    again = _json(capsys, ["batch", batch_id, "--out", lake, "--incremental"])
    assert again["output"] == lake and again["export_id"] != loaded["export_id"]
    assert DeltaTable(f"{lake}/responses").version() >= 1

    history = _json(capsys, ["lake", "history", lake])
    assert {"responses", "answers", "_loads"} <= set(history)
    exports = {c.get("prolific_ingest.export_id") for c in history["responses"]}
    assert loaded["export_id"] in exports

    optimized = _json(capsys, ["lake", "optimize", lake])
    assert optimized["responses"]["numFilesRemoved"] >= 2  # two loads' files compacted
    assert len(DeltaTable(f"{lake}/responses").file_uris()) == 1

    dry = _json(capsys, ["lake", "vacuum", lake])
    assert all(isinstance(files, list) for files in dry.values())
    # delta-rs's retention default (7 days) keeps the files optimize just replaced.
    assert all(not Path(f).is_absolute() or Path(f).exists() for f in dry["responses"])
    capsys.readouterr()
    assert main(["lake", "vacuum", lake, "--apply"]) == 0
    assert "file(s)" in capsys.readouterr().out


def test_lake_commands_on_a_missing_lake_exit_with_the_lake_code(
    tmp_path: Path, capsys: Any
) -> None:
    assert main(["lake", "history", str(tmp_path / "nowhere")]) == 7
    assert "no Delta tables" in capsys.readouterr().err
