"""Many real processes against one emulator: every run exits 0 and cleanly.

Guards the abort at interpreter exit after a successful load ("terminate called without an
active exception", exit 134), which showed in a few runs in a hundred, more often with
several processes loading one export into one cache, and after many reads of the
parsed-table cache in one process. Each round runs the CLI once cold then once warm on its
own cache, then three CLI processes at once cold on a shared cache, then three processes at
once that each load the export :data:`WARM_LOADS` times warm from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROUNDS = 4
TOGETHER = 3
WARM_LOADS = 20
WARM = "tables read from the parsed-table cache"
#: Text that must never be on a successful run's stderr.
FORBIDDEN = ("terminate called", "Traceback", "Fatal Python error", "error:")


@dataclass
class Run:
    label: str
    returncode: int
    stderr: str


def _env(emulator: Any, cache: Path) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "PROLIFIC_TOKEN": emulator.token,
        "PROLIFIC_API_URL": emulator.base_url,
        "PROLIFIC_INGEST_CACHE": str(cache),
        "PROLIFIC_POLL_INTERVAL": "0.01",
    }


def _cli(batch_id: str) -> list[str]:
    return [sys.executable, "-m", "prolific_ingest.cli", "batch", batch_id, "-v"]


def _warm_loads(batch_id: str) -> list[str]:
    """A process that loads ``batch_id`` from the cache :data:`WARM_LOADS` times."""
    script = (
        "import logging\n"
        "from prolific_ingest import load_batch_export\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"for _ in range({WARM_LOADS}):\n"
        f"    load_batch_export({batch_id!r}, offline=True, progress=False).arrow\n"
    )
    return [sys.executable, "-c", script]


def _together(label: str, argv: list[str], env: dict[str, str], n: int) -> list[Run]:
    """Start ``n`` processes of ``argv`` at once; wait for every one."""
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    runs = []
    for i, proc in enumerate(procs):
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        runs.append(Run(f"{label} #{i}", proc.returncode, err))
    return runs


def test_many_cli_processes_cold_warm_and_concurrent_all_exit_cleanly(
    prolific_emulator: Any, tmp_path: Path
) -> None:
    prolific_emulator.polls_until_complete = 0
    batch_id = prolific_emulator.add_batch(seed=3, n_submissions=100)
    runs: list[Run] = []
    warm: list[Run] = []
    for r in range(ROUNDS):
        alone = _env(prolific_emulator, tmp_path / f"alone-{r}")
        runs += _together(f"round {r} cold", _cli(batch_id), alone, 1)
        warm += _together(f"round {r} warm", _cli(batch_id), alone, 1)
        shared = _env(prolific_emulator, tmp_path / f"shared-{r}")
        runs += _together(f"round {r} cold x{TOGETHER}", _cli(batch_id), shared, TOGETHER)
        warm += _together(
            f"round {r} {WARM_LOADS} warm loads x{TOGETHER}",
            _warm_loads(batch_id),
            shared,
            TOGETHER,
        )
    runs += warm

    assert len(runs) == ROUNDS * (2 + 2 * TOGETHER)
    bad = [
        f"{run.label}: exit {run.returncode}\n{run.stderr[-2000:]}"
        for run in runs
        if run.returncode != 0 or any(text in run.stderr for text in FORBIDDEN)
    ]
    assert not bad, "\n\n".join(bad)
    # the warm runs really read the parsed-table cache (the path of the exit abort)
    assert [run.label for run in warm if WARM not in run.stderr] == []
    reads = sum(run.stderr.count(WARM) for run in warm)
    assert reads == ROUNDS * (1 + TOGETHER * WARM_LOADS)
