"""A terminal shows progress bars (polling and download) during a slow emulated export."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from prolific_ingest.testing import Emulator

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")


def _run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 120) -> str:
    leader, follower = pty.openpty()
    # A real terminal has a size (a 0x0 pty makes tqdm give up on drawing).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process ended
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        proc.wait(timeout=30)
        os.close(leader)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_terminal_shows_poll_and_download_progress(tmp_path):
    exe = shutil.which("prolific-ingest") or str(Path(sys.executable).parent / "prolific-ingest")
    with Emulator(polls_until_complete=3) as emu:
        batch_id = emu.add_batch(seed=1, n_submissions=40)
        emu.faults.bandwidth(400_000)  # a slow storage host: the download takes a second or so
        env = dict(
            os.environ,
            PROLIFIC_TOKEN=emu.token,
            PROLIFIC_API_URL=emu.base_url,
            PROLIFIC_INGEST_CACHE=str(tmp_path / "cache"),
            PROLIFIC_POLL_INTERVAL="0.3",
            TERM="xterm",
            COLUMNS="120",
        )
        env.pop("PROLIFIC_INGEST_PROGRESS", None)
        screen = _run_in_pty([exe, "batch", batch_id], env)
    assert "\r" in screen, "a progress bar redraws its line"
    assert "generating" in screen or "export" in screen.lower()
    assert "B/s" in screen or "MB" in screen or "kB" in screen, screen[-2000:]
    assert emu.token not in screen


def test_progress_is_silent_without_a_terminal(prolific_emulator, tmp_path):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=1, n_submissions=5)
    exe = shutil.which("prolific-ingest") or str(Path(sys.executable).parent / "prolific-ingest")
    env = dict(
        os.environ,
        PROLIFIC_TOKEN=emu.token,
        PROLIFIC_API_URL=emu.base_url,
        PROLIFIC_INGEST_CACHE=str(tmp_path / "cache"),
    )
    done = subprocess.run(
        [exe, "batch", batch_id], env=env, capture_output=True, text=True, check=True
    )
    assert "\r" not in done.stderr
    assert "B/s" not in done.stderr
