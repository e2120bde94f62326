"""Test helpers: the Prolific API emulator, archive generator and pytest plugin.

Everything here runs offline: :class:`Emulator` serves the export API and a
presigned-download host on loopback (with :class:`Faults` for fault injection),
:func:`make_batch_export` and :func:`make_collection_export` write the realistic
archive an :class:`ExportSpec` describes, with its :class:`GroundTruth`, and
:func:`serve` runs an emulator until interrupted (``prolific-ingest emulator``).
"""

from .emulator import Emulator, RequestRecord, serve
from .faults import FaultRule, Faults
from .generator import (
    INSTRUCTION_TYPES,
    ExportSpec,
    GroundTruth,
    SubmissionSpec,
    make_batch_export,
    make_collection_export,
)

__all__ = [
    "INSTRUCTION_TYPES",
    "Emulator",
    "ExportSpec",
    "FaultRule",
    "Faults",
    "GroundTruth",
    "RequestRecord",
    "SubmissionSpec",
    "make_batch_export",
    "make_collection_export",
    "serve",
]
