"""Test helpers: the Prolific API emulator, archive generator and pytest plugin.

Everything here runs offline: :class:`Emulator` serves the export API and a
presigned-download host on loopback, :func:`make_batch_export` and
:func:`make_collection_export` write realistic archives with their
:class:`GroundTruth`.
"""

from .generator import (
    INSTRUCTION_TYPES,
    GroundTruth,
    SubmissionSpec,
    make_batch_export,
    make_collection_export,
)

__all__ = [
    "INSTRUCTION_TYPES",
    "GroundTruth",
    "SubmissionSpec",
    "make_batch_export",
    "make_collection_export",
]
