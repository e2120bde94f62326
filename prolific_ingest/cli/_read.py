"""Commands that need no Prolific account: ``read`` a ZIP, the ``demo``, the ``emulator``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..cache import ExportCache
from ..config import Settings
from ..lake._target import LakeTarget
from ._load import sink_target
from ._output import emit_export, progress


def cmd_read(args: argparse.Namespace) -> int:
    """Read an export ZIP on disk or in a bucket (no API call); with ``--out`` load it too."""
    from .. import api

    export = api.read_export(
        args.archive,
        export_id=args.export_id,
        on_bad_records=args.on_bad_records,
        storage_options=args.storage_options,
    )
    target = sink_target(args)  # None without --out
    if target is not None:
        export.written = export.to_lake(target)
    emit_export(args, export)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Load a generated batch from the built-in emulator into a Delta lake."""
    from .. import api
    from ..testing import Emulator

    out = args.out or str(Path("prolific-demo-output").resolve())
    with Emulator(polls_until_complete=2) as emu, tempfile.TemporaryDirectory() as tmp:
        batch_id = emu.add_batch(seed=args.seed, n_submissions=args.submissions)
        print(f"emulator running at {emu.base_url}; batch {batch_id}", file=sys.stderr)
        export = api.load_batch_export(
            batch_id,
            client=Settings.from_env(token=emu.token, base_url=emu.base_url),
            cache=ExportCache(
                args.cache or str(Path(tmp) / "cache"), storage_options=args.storage_options
            ),
            output=LakeTarget(out, storage_options=args.storage_options),
            progress=progress(args),
        )
        emit_export(args, export)
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    """Serve the Prolific API emulator on loopback until interrupted."""
    from ..testing import serve

    serve(port=args.port, seed=args.seed, n_batches=args.batches, tls=args.tls, announce=print)
    return 0
