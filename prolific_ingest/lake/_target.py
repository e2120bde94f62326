"""Where a load writes its Delta lake, and how: one value for every sink option."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import redact_url

__all__ = ["LakeTarget"]


@dataclass(frozen=True)
class LakeTarget:
    """The Delta lake a load writes into: ``output=LakeTarget(url, ...)``.

    ``output="s3://bucket/lake"`` is the same as ``output=LakeTarget("s3://bucket/lake")``;
    the object carries the options a bare URL cannot.

    Parameters
    ----------
    url : str or path-like
        The lake root: a local path, ``file://``, ``s3://``, ``gs://`` or ``abfs://`` URL.
        Each table is merged into the Delta table ``<url>/<table>`` on its natural keys,
        partitioned by the owner column (docs: "Data lakes").
    storage_options : mapping, optional
        fsspec-style options (``key``, ``secret``, ``client_kwargs={"endpoint_url": ...}``,
        ``anon``, ``profile`` ...), translated to delta-rs options (delta-rs option names
        are accepted as-is). Never shown in the ``repr``.
    partition_by : sequence of str, default ()
        Extra partitioning; ``("date",)`` splits ``responses`` by the UTC day of ``created_at``.
    incremental : bool, default False
        Request only responses since the watermark of the last load recorded in the lake
        (minus :data:`~prolific_ingest.api.INCREMENTAL_OVERLAP`); the overlap is merged, so
        every row is held once.
    overwrite : bool, default False
        Load the export again even when the lake records it as loaded.
    """

    url: str
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False)
    partition_by: Sequence[str] = ()
    incremental: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", os.fspath(self.url))
        by = self.partition_by
        object.__setattr__(self, "partition_by", (by,) if isinstance(by, str) else tuple(by))
        if self.storage_options is not None:
            object.__setattr__(self, "storage_options", dict(self.storage_options))

    def __repr__(self) -> str:
        shown = [repr(redact_url(self.url))]
        if self.partition_by:
            shown.append(f"partition_by={self.partition_by!r}")
        shown += [f"{name}=True" for name in ("incremental", "overwrite") if getattr(self, name)]
        return f"LakeTarget({', '.join(shown)})"

    @property
    def options(self) -> dict[str, Any] | None:
        """A copy of :attr:`storage_options` (``None`` when not given)."""
        return dict(self.storage_options) if self.storage_options is not None else None

    @classmethod
    def coerce(cls, output: str | os.PathLike[str] | LakeTarget) -> LakeTarget:
        """``output`` as a :class:`LakeTarget` (a URL or path becomes one with no options)."""
        return output if isinstance(output, LakeTarget) else cls(os.fspath(output))
