"""An optional `dlt <https://dlthub.com>`_ source: Prolific exports as incremental dlt resources.

Install with ``pip install "prolific-ingest[dlt]"``, then::

    import dlt
    from prolific_ingest.dlt_source import prolific_source

    # A dataset name other than the pipeline name: DuckDB names its catalog after the
    # database file (prolific.duckdb), and a schema of the same name is ambiguous.
    pipeline = dlt.pipeline("prolific", destination="duckdb", dataset_name="prolific_data")
    pipeline.run(prolific_source(batch_ids=["<batch id>"]))

One resource per table (``submissions``, ``tasks``, ``responses``, ``answers``, ``files``,
``instructions``) yields pyarrow Tables with the fixed schemas of ``docs/internals.md`` plus
``export_id`` and the owner column (``batch_id`` / ``collection_id``). Every resource uses
``write_disposition="merge"`` with the table's natural key (the keys the Delta lake of
``output=`` merges on, :data:`prolific_ingest.lake.MERGE_KEYS`) as ``primary_key``, so
rows delivered again are updated in place, never duplicated. ``tasks`` (one row per distinct task content) gets a
``task_key`` column, a hash of that content, as its key.

**Incremental loading.** After a run, the source state keeps, per batch or collection and
per table, a watermark: the latest ``responses.created_at`` loaded. The next run requests
only responses created since ``min(watermark of the selected tables) - overlap`` (the API's
``from`` filter, whose bound semantics are not documented, hence the overlap; the merge
removes the re-delivered rows). Each export is requested, downloaded and parsed once per
run by a hidden parent resource and shared by the table resources (dlt transformers).
Lines the reader cannot parse raise :class:`~prolific_ingest.BadRecordError` (the
``rejected`` table is not a resource).

**Delta Lake through dlt.** To have dlt itself write Delta tables, use its filesystem
destination with ``table_format="delta"`` (``pipeline.run(source, table_format="delta")``,
see dlt's docs). Without dlt, ``load_batch_export(..., output=URL)`` writes the same tables
as a Delta lake directly (docs: "Data lakes").
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

try:
    import dlt
    from dlt.common.typing import TSecretStrValue
    from dlt.extract.exceptions import CurrentSourceNotAvailable
    from dlt.extract.resource import DltResource
except ImportError as exc:  # pragma: no cover - exercised by hiding dlt in a test
    _msg = 'prolific_ingest.dlt_source needs dlt: pip install "prolific-ingest[dlt]"'
    raise ImportError(_msg) from exc

import pyarrow as pa
import pyarrow.compute as pc

from .api import load_batch_export, load_collection_export
from .config import Settings
from .lake import MERGE_KEYS
from .result import Export
from .tables import table_names

__all__ = ["RESOURCE_TABLES", "prolific_source"]

logger = logging.getLogger(__name__)

#: The ``tasks`` resource's primary key: a hash of the row's content (``task_id`` may
#: repeat, and may be null, when an archive gives one task different contents).
TASK_KEY = "task_key"
#: Merge keys per resource: the lake's merge keys, except ``tasks`` (a content hash).
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    name: keys for name, keys in MERGE_KEYS.items() if name != "rejected"
} | {"tasks": (TASK_KEY,)}
#: The tables exposed as dlt resources (``tasks`` stays empty for collections).
RESOURCE_TABLES: tuple[str, ...] = (
    "submissions",
    "tasks",
    "responses",
    "answers",
    "files",
    "instructions",
)

_PARENT = "prolific_exports"
_STATE_KEY = "watermarks"


@dataclass(frozen=True)
class _Loaded:
    """One owner's export of this run, handed from the parent to the table resources."""

    kind: str
    owner_id: str
    export: Export


def _owner_key(kind: str, owner_id: str) -> str:
    return f"{kind}:{owner_id}"


def _as_tuple(ids: str | Iterable[str]) -> tuple[str, ...]:
    """Ids as a tuple; a single string is one id (not its characters)."""
    if isinstance(ids, str):
        return (ids,)
    return tuple(ids)


def _as_utc(value: datetime | str) -> datetime:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _selected_tables() -> tuple[str, ...]:
    """The table resources selected in the running source (all of them if unknown)."""
    try:
        selected = set(dlt.current.source().selected_resources)
    except CurrentSourceNotAvailable:
        return RESOURCE_TABLES
    return tuple(t for t in RESOURCE_TABLES if t in selected) or RESOURCE_TABLES


def _since(
    marks: dict[str, str],
    tables: Iterable[str],
    overlap: timedelta,
    initial_since: datetime | None,
) -> datetime | None:
    """The ``from`` filter: the oldest selected watermark minus ``overlap``.

    Any selected table without a watermark means a full load (from ``initial_since``).
    """
    values = [marks.get(t) for t in tables]
    if not values or any(v is None for v in values):
        return initial_since
    oldest = min(_as_utc(str(v)) for v in values)
    since = (oldest - overlap).replace(microsecond=0)
    if initial_since is not None and initial_since > since:
        since = initial_since
    return since


def _watermark(export: Export) -> datetime | None:
    """The latest ``responses.created_at`` of an export (``None`` without responses)."""
    created = export.arrow.tables["responses"].column("created_at")
    latest = pc.max(created).as_py() if len(created) else None
    if latest is None:
        return None
    return _as_utc(latest)


def _prepare(table: pa.Table, name: str, *, kind: str, owner_id: str, export_id: str) -> pa.Table:
    """Add ``export_id`` and the owner column where missing; mark key columns not-null.

    dlt declares primary-key columns ``NOT NULL``; saying so in the Arrow schema too keeps
    dlt from warning that the hints differ. A key column holding nulls is left as it is
    (the destination refuses such rows) and logged.
    """
    rows = table.num_rows
    owner_col = f"{kind}_id"
    if owner_col not in table.column_names:
        table = table.append_column(owner_col, pa.array([owner_id] * rows, type=pa.string()))
    if "export_id" not in table.column_names:
        table = table.append_column("export_id", pa.array([export_id] * rows, type=pa.string()))
    if name == "tasks" and TASK_KEY not in table.column_names:
        table = table.append_column(TASK_KEY, _task_keys(table))
    schema = table.schema
    for key in PRIMARY_KEYS[name]:
        index = schema.get_field_index(key)
        if table.column(index).null_count:
            logger.warning("%s %s: table %s has null %s values", kind, owner_id, name, key)
            continue
        schema = schema.set(index, schema.field(index).with_nullable(False))
    return table.cast(schema)


def _task_keys(table: pa.Table) -> pa.Array:
    """A stable key per task row: the SHA-256 (hex, 32 digits) of its content columns."""
    content = [c for c in MERGE_KEYS["tasks"] if c in table.column_names]
    rows = zip(*(table.column(c).to_pylist() for c in content), strict=True)
    keys = [
        hashlib.sha256(json.dumps(row, ensure_ascii=False).encode()).hexdigest()[:32]
        for row in rows
    ]
    return pa.array(keys, type=pa.string())


@dlt.source(name="prolific")
def prolific_source(
    batch_ids: str | Iterable[str] = (),
    collection_ids: str | Iterable[str] = (),
    *,
    base_url: str | None = None,
    token: TSecretStrValue | None = None,
    cache: str | None = None,
    overlap: timedelta = timedelta(hours=1),
    initial_since: datetime | str | None = None,
    max_age: timedelta | float | None = None,
) -> Any:
    """Prolific Task Builder exports as dlt resources with incremental loading.

    Parameters
    ----------
    batch_ids : str or iterable of str, default ()
        Task Builder batches to load.
    collection_ids : str or iterable of str, default ()
        Task Builder collections to load (they have no ``tasks`` rows).
    base_url : str, optional
        API root; default ``$PROLIFIC_API_URL`` or ``https://api.prolific.com``.
    token : str, optional
        API token; default dlt's ``sources.prolific.token`` secret (for example
        ``SOURCES__PROLIFIC__TOKEN`` or ``secrets.toml``), then ``$PROLIFIC_TOKEN``.
        Declared a dlt secret, so dlt's trace records it as ``<secret>``; never logged
        and never stored in the pipeline state.
    cache : str, optional
        Export cache location (path or fsspec URL); default the library's cache.
    overlap : timedelta, default 1 hour
        Re-request this much before each watermark on incremental runs; the re-delivered
        rows are merged on their primary keys.
    initial_since : datetime or ISO-8601 str, optional
        Lower bound of the first run (and a floor for later ones); naive means UTC.
        Default: everything.
    max_age : timedelta or seconds, optional
        Reuse a cached or server-side complete export with the same filter younger than
        this (``0``: always a new export). Default: the library's default (15 minutes).

    Returns
    -------
    DltSource
        Resources ``submissions``, ``tasks``, ``responses``, ``answers``, ``files`` and
        ``instructions`` (plus the hidden parent ``prolific_exports``). Select a subset
        with ``.with_resources(...)``; the watermark is then kept per selected table.

    Raises
    ------
    ProlificIngestError
        From loading an export (wrapped by dlt in ``PipelineStepFailed`` during a run).
    """
    batches = _as_tuple(batch_ids)
    collections = _as_tuple(collection_ids)
    floor = _as_utc(initial_since) if initial_since is not None else None
    options: dict[str, Any] = {
        "client": Settings.from_env(token=token, base_url=base_url),
        "cache": cache,
        "progress": False,
    }
    if max_age is not None:
        options["max_age"] = max_age
    owners = [("batch", b) for b in batches] + [("collection", c) for c in collections]

    @dlt.resource(name=_PARENT, selected=False)
    def exports() -> Iterator[_Loaded]:
        state = dlt.current.source_state().setdefault(_STATE_KEY, {})
        for kind, owner_id in owners:
            selected = [t for t in _selected_tables() if t in table_names(kind)]
            if not selected:
                continue  # e.g. only ``tasks`` selected: a collection has none
            marks: dict[str, str] = state.setdefault(_owner_key(kind, owner_id), {})
            since = _since(marks, selected, overlap, floor)
            logger.info(
                "%s %s: loading %s",
                kind,
                owner_id,
                f"since {since.isoformat()}" if since else "everything",
            )
            load = load_batch_export if kind == "batch" else load_collection_export
            export = load(owner_id, since=since, **options)
            yield _Loaded(kind, owner_id, export)
            latest = _watermark(export)
            if latest is not None:
                for name in selected:
                    old = marks.get(name)
                    if old is None or _as_utc(old) < latest:
                        marks[name] = latest.isoformat()

    return [exports, *(_table_resource(exports, name) for name in RESOURCE_TABLES)]


def _table_resource(parent: DltResource, name: str) -> DltResource:
    """The merge transformer that yields table ``name`` of each export from ``parent``."""

    @dlt.transformer(
        data_from=parent,
        name=name,
        primary_key=list(PRIMARY_KEYS[name]),
        write_disposition="merge",
    )
    def rows(loaded: _Loaded) -> Iterator[pa.Table]:
        if name not in table_names(loaded.kind):
            return
        yield _prepare(
            loaded.export.arrow.tables[name],
            name,
            kind=loaded.kind,
            owner_id=loaded.owner_id,
            export_id=loaded.export.export_id,
        )

    return rows
