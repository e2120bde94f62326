"""prolific_ingest: Prolific Task Builder exports as Arrow-backed DataFrames and Parquet."""

import logging

from ._version import __version__
from .errors import *  # noqa: F403  (re-exported explicitly below once api.py lands)

logging.getLogger("prolific_ingest").addHandler(logging.NullHandler())

__all__ = ["__version__"]
