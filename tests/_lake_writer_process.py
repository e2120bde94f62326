"""Helper process of the lake's kill and concurrency tests (not a test module).

Usage: ``python _lake_writer_process.py LAKE ARCHIVE [EXPORT_ID] [--stream]``: read the
export archive and load it into the lake (``Export.to_lake``), then print ``done``. With
``--stream`` the archive's record batches are streamed into ``lake.write_export`` as a
plain stream instead (the rows are spooled to temporary files, as for a cache on an object
store).

With ``PROLIFIC_INGEST_TEST_KILL_AT=<point>`` in the environment, the process SIGKILLs
itself when the writer reaches that named point (see ``prolific_ingest.lake._checkpoints``:
``before-commit:<table>``, ``mid-write:<table>``, ``after-commit:<table>``,
``before-record``, ``after-record``), so the test sees a real SIGKILL at that step.
"""

from __future__ import annotations

import os
import signal
import sys

from prolific_ingest import read_export
from prolific_ingest.archive import open_archive
from prolific_ingest.lake import _checkpoints, write_export
from prolific_ingest.tables import iter_record_batches


def _install_kill_point() -> None:
    wanted = os.environ.get("PROLIFIC_INGEST_TEST_KILL_AT")
    if not wanted:
        return

    def hook(point: str) -> None:
        if point == wanted:
            print(f"killed at {point}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    _checkpoints.hook = hook


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--stream"]
    lake, archive = args[:2]
    export_id = args[2] if len(args) > 2 else None
    _install_kill_point()
    export = read_export(archive, export_id=export_id)
    if "--stream" in sys.argv:
        with open_archive(archive) as zf:
            write_export(
                iter_record_batches(zf),
                lake,
                kind=export.kind,
                owner_id=export.owner_id,
                export_id=export.export_id,
            )
    else:
        export.to_lake(lake)
    print("done", flush=True)


if __name__ == "__main__":
    main()
