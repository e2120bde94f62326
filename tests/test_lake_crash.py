"""A SIGKILL at any step of a load leaves each table at its old or new version, never part
of a load; read_dataset shows a consistent state; the next run ends exact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from prolific_ingest import ExportRef, committed_exports, read_dataset
from prolific_ingest.testing import ExportSpec, make_batch_export

HELPER = Path(__file__).with_name("_lake_writer_process.py")
TABLES = ("tasks", "responses", "submissions", "answers", "files", "instructions")
KILL_POINTS = [
    "before-commit:tasks",
    "mid-write:responses",  # data files being written, nothing committed
    "after-commit:responses",  # between table commits
    "after-commit:answers",
    "before-record",  # every table committed, no load record yet
    "after-record",
]


def _run(
    lake: Path,
    archive: Path,
    export_id: str,
    kill_at: str | None = None,
    *flags: str,
    extra_env: dict[str, str] | None = None,
) -> Any:
    env = dict(os.environ)
    env.pop("PROLIFIC_INGEST_TEST_KILL_AT", None)
    if kill_at:
        env["PROLIFIC_INGEST_TEST_KILL_AT"] = kill_at
    env.update(extra_env or {})
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(HELPER), str(lake), str(archive), export_id, *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _rows(table: Any) -> list[tuple[str, ...]]:
    names = sorted(table.column_names)
    cols = [table.column(n).to_pylist() for n in names]
    return sorted(tuple(str(v) for v in row) for row in zip(*cols, strict=True))


def _state(lake: Path) -> dict[str, list[tuple[str, ...]]]:
    """Each table as the latest Delta version shows it (what any engine reads)."""
    return {t: _rows(DeltaTable(str(lake / t)).to_pyarrow_table()) for t in TABLES}


def _consistent(lake: Path) -> dict[str, list[tuple[str, ...]]]:
    return {t: _rows(read_dataset(str(lake), t, as_arrow=True)) for t in TABLES}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A lake holding export A, and the states before and after loading export B."""
    tmp = tmp_path_factory.mktemp("crash")
    first, second = tmp / "a.zip", tmp / "b.zip"
    make_batch_export(first, ExportSpec(owner_id="b-crash", n_submissions=5, seed=71))
    make_batch_export(second, ExportSpec(owner_id="b-crash", n_submissions=8, seed=72))
    base = tmp / "base"
    assert _run(base, first, "export-a").returncode == 0
    after = tmp / "after"
    shutil.copytree(base, after)
    assert _run(after, second, "export-b").returncode == 0
    return {
        "base": base,
        "second": second,
        "before": _state(base),
        "after": _state(after),
    }


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_sigkill_at_any_step_leaves_old_or_new_tables_and_the_rerun_ends_exact(
    scenario: dict[str, Any], tmp_path: Path, point: str
) -> None:
    polars = pytest.importorskip("polars")
    lake = tmp_path / "lake"
    shutil.copytree(scenario["base"], lake)
    done = _run(lake, scenario["second"], "export-b", kill_at=point)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert f"killed at {point}" in done.stdout

    before, after = scenario["before"], scenario["after"]
    seen = _state(lake)
    for table in TABLES:
        assert seen[table] in (before[table], after[table]), f"{table} is part of a load"
        by_polars = _rows(polars.read_delta(str(lake / table)).to_arrow())
        assert by_polars == seen[table]
    # read_dataset shows one state across all tables: B entirely, or not at all.
    recorded = point == "after-record"
    assert _consistent(lake) == (after if recorded else before)

    again = _run(lake, scenario["second"], "export-b")
    assert again.returncode == 0, again.stderr
    assert _state(lake) == after
    assert _consistent(lake) == after
    loads = [r["export_id"] for r in committed_exports(str(lake), ExportRef("batch", "b-crash"))]
    assert loads == ["export-a", "export-b"]


def _spools(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("prolific-ingest-lake-"))


def test_a_spool_left_by_a_killed_writer_is_removed_by_the_next_load(
    scenario: dict[str, Any], tmp_path: Path
) -> None:
    lake, spool_root = tmp_path / "lake", tmp_path / "tmp"
    spool_root.mkdir()
    shutil.copytree(scenario["base"], lake)
    env = {"TMPDIR": str(spool_root)}
    killed = _run(
        lake, scenario["second"], "export-b", "mid-write:responses", "--stream", extra_env=env
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = _spools(spool_root)
    assert len(left) == 1  # the killed writer's spool, named after its pid
    assert (spool_root / left[0] / "responses.parquet").exists()

    again = _run(lake, scenario["second"], "export-b", None, "--stream", extra_env=env)
    assert again.returncode == 0, again.stderr
    assert _spools(spool_root) == []
    assert _state(lake) == scenario["after"]
