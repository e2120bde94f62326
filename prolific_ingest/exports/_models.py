"""Value objects of the export lifecycle: ExportRef, ExportFilter, ExportJob (no I/O).

Re-exported by :mod:`prolific_ingest.exports`, which is where they are documented.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..errors import ConfigurationError, redact_url

__all__ = [
    "ExportFilter",
    "ExportJob",
    "ExportKind",
    "ExportRef",
    "ExportStatus",
    "format_timestamp",
    "parse_timestamp",
]

ExportKind = Literal["batch", "collection"]
ExportStatus = Literal["generating", "complete", "failed"]

_PLURAL = {"batch": "batches", "collection": "collections"}


def parse_timestamp(value: Any) -> datetime | None:
    """Parse an ISO-8601 string or datetime into an aware UTC datetime.

    Naive values are taken as UTC. Returns ``None`` for ``None``/empty values and
    raises ``ValueError`` (``TypeError`` for other types) for anything unparseable.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("z", "Z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    else:
        msg = f"expected an ISO-8601 timestamp, got {type(value).__name__}"
        raise TypeError(msg)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _lenient_timestamp(value: Any) -> datetime | None:
    try:
        return parse_timestamp(value)
    except (TypeError, ValueError):
        return None


def format_timestamp(value: datetime) -> str:
    """Format an aware datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
    dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ExportRef:
    """What is exported: a batch or a collection, by id.

    Parameters
    ----------
    kind : {"batch", "collection"}
    id : str
        The batch or collection id.
    """

    kind: ExportKind
    id: str

    def __post_init__(self) -> None:
        if self.kind not in _PLURAL:
            msg = f"ExportRef.kind must be 'batch' or 'collection', not {self.kind!r}"
            raise ConfigurationError(msg)
        if not isinstance(self.id, str) or not self.id.strip():
            msg = f"ExportRef.id must be a non-empty string, not {self.id!r}"
            raise ConfigurationError(msg)
        if any(c in self.id for c in "/\\?#%") or self.id in {".", ".."}:
            msg = f"ExportRef.id contains characters not allowed in an id: {self.id!r}"
            raise ConfigurationError(msg)

    @property
    def path(self) -> str:
        """API path of the owner: ``"batches/<id>"`` or ``"collections/<id>"``."""
        return f"{_PLURAL[self.kind]}/{self.id}"

    @property
    def owner_column(self) -> str:
        """Owner id column name: ``"batch_id"`` or ``"collection_id"``."""
        return f"{self.kind}_id"


_FILTER_KEYS = frozenset({"study_id", "from", "to", "since", "until"})


@dataclass(frozen=True)
class ExportFilter:
    """The optional filters of an export: study id and a ``[since, until)`` window.

    Datetimes are normalised to aware UTC with whole seconds (the API's precision);
    naive datetimes are taken as UTC. Use :meth:`coerce` to accept ISO strings.

    Raises
    ------
    ConfigurationError
        A timestamp cannot be parsed, or ``since`` is later than ``until`` (checked here,
        before any request, rather than left to the API's 400).
    """

    study_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            raw = getattr(self, name)
            try:
                dt = parse_timestamp(raw)
            except (TypeError, ValueError) as exc:
                msg = f"ExportFilter.{name}: cannot parse {raw!r} as an ISO-8601 timestamp"
                raise ConfigurationError(msg) from exc
            if dt is not None and dt.microsecond:
                # The API takes whole seconds. `from` is inclusive: round down; `to` is
                # exclusive: round up, so no response in the last partial second is lost.
                dt = dt.replace(microsecond=0) + (
                    timedelta(seconds=1) if name == "until" else timedelta(0)
                )
            object.__setattr__(self, name, dt)
        if self.study_id is not None:
            study = str(self.study_id).strip()
            object.__setattr__(self, "study_id", study or None)
        if self.since is not None and self.until is not None and self.since > self.until:
            msg = (
                f"since {format_timestamp(self.since)} is later than until "
                f"{format_timestamp(self.until)}: no response can match [since, until); "
                "swap them or drop one"
            )
            raise ConfigurationError(msg)

    @classmethod
    def coerce(
        cls,
        value: ExportFilter | Mapping[str, Any] | None = None,
        *,
        study_id: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> ExportFilter:
        """Build a filter from an existing one, a JSON mapping, or keyword values.

        Keyword values override those of ``value``. Strings are parsed as ISO-8601,
        naive datetimes are UTC.
        """
        if isinstance(value, ExportFilter):
            base = value
        elif value is None:
            base = cls()
        else:
            base = cls.from_json(value)
        changes: dict[str, Any] = {}
        if study_id is not None:
            changes["study_id"] = study_id
        if since is not None:
            changes["since"] = since
        if until is not None:
            changes["until"] = until
        return replace(base, **changes) if changes else base

    @property
    def is_empty(self) -> bool:
        """``True`` when no filter is set."""
        return self.study_id is None and self.since is None and self.until is None

    def to_params(self) -> dict[str, str]:
        """Query parameters for the API: ``study_id``, ``from``, ``to`` (only those set)."""
        params: dict[str, str] = {}
        if self.study_id is not None:
            params["study_id"] = self.study_id
        if self.since is not None:
            params["from"] = format_timestamp(self.since)
        if self.until is not None:
            params["to"] = format_timestamp(self.until)
        return params

    def to_json(self) -> dict[str, str | None]:
        """JSON form with the API's key names (all three keys, ``None`` when unset)."""
        return {
            "study_id": self.study_id,
            "from": format_timestamp(self.since) if self.since else None,
            "to": format_timestamp(self.until) if self.until else None,
        }

    def describe(self) -> str:
        """One line of compact JSON with only the keys that are set (``{}``: no filter)."""
        shown = {k: v for k, v in self.to_json().items() if v is not None}
        return json.dumps(shown, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ExportFilter:
        """Parse the JSON form (``from``/``to`` or ``since``/``until``); ``None`` = no filter.

        Unparseable timestamps raise :class:`ConfigurationError`.
        """
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            msg = f"an export filter must be a JSON object, not {type(data).__name__}"
            raise ConfigurationError(msg)
        study = data.get("study_id")
        return cls(
            study_id=str(study) if study is not None else None,
            since=data.get("from", data.get("since")),
            until=data.get("to", data.get("until")),
        )

    @classmethod
    def from_api(cls, data: Any) -> ExportFilter | None:
        """Like :meth:`from_json` but returns ``None`` for a filter that cannot be read."""
        try:
            return cls.from_json(data)
        except ConfigurationError:
            return None


@dataclass(frozen=True, repr=False)
class ExportJob:
    """One export job as the API describes it.

    Parameters
    ----------
    ref : ExportRef
        The batch/collection.
    export_id : str
        The job id (``"legacy-…"`` when the API gave none, see ``request_export``).
    status : {"generating", "complete", "failed"}
        Other strings seen in a job list are kept verbatim.
    filter : ExportFilter
        The filters the job was requested with.
    url : str, optional
        Presigned download URL (complete jobs). Never shown by ``repr``.
    expires_at, created_at : datetime, optional
        URL expiry and job creation time (aware UTC).
    filter_known : bool
        ``False`` when the API did not say which filter the job has (a status body, or a
        list item without a readable ``filter``): such a job is never reused for a
        filtered or unfiltered request, since its content is unknown.
    """

    ref: ExportRef
    export_id: str
    status: ExportStatus
    filter: ExportFilter = field(default_factory=ExportFilter)
    url: str | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    filter_known: bool = True

    def __repr__(self) -> str:
        url = redact_url(self.url)
        return (
            f"ExportJob(ref={self.ref!r}, export_id={self.export_id!r}, "
            f"status={self.status!r}, filter={self.filter!r}, url={url!r}, "
            f"expires_at={self.expires_at!r}, created_at={self.created_at!r}, "
            f"filter_known={self.filter_known!r})"
        )

    @property
    def is_complete(self) -> bool:
        """``True`` when the job is complete and has a download URL."""
        return self.status == "complete" and bool(self.url)

    def replace(self, **changes: Any) -> ExportJob:
        """Return a copy with ``changes`` applied."""
        return replace(self, **changes)


def job_from_body(
    ref: ExportRef,
    body: Mapping[str, Any],
    *,
    export_id: str | None,
    filter: ExportFilter | None,
) -> ExportJob | None:
    """Build an :class:`ExportJob` from a status/list body.

    Returns ``None`` when the body has no id or its ``filter`` cannot be read. With
    ``filter=None`` the body's own ``filter`` is used: ``null`` or ``{}`` mean "no
    filter"; a missing key or unknown keys make the job's filter *unknown*
    (``filter_known=False``), so it is never reused in place of another request.
    Status strings are compared in lower case.
    """
    eid = body.get("export_id") or body.get("id") or export_id
    if not eid:
        return None
    raw_status = body.get("status")
    status: Any = (
        raw_status.strip().lower() if isinstance(raw_status, str) and raw_status else "unknown"
    )
    known = True
    if filter is not None:
        flt: ExportFilter | None = filter
    else:
        raw_filter = body.get("filter")
        known = "filter" in body and (
            raw_filter is None
            or (isinstance(raw_filter, Mapping) and set(raw_filter) <= _FILTER_KEYS)
        )
        flt = ExportFilter.from_api(raw_filter) if known else ExportFilter()
    if flt is None:
        # An unreadable filter must never be mistaken for "no filter" (reuse safety).
        return None
    url = body.get("url")
    return ExportJob(
        ref=ref,
        export_id=str(eid),
        status=status,
        filter=flt,
        url=url if isinstance(url, str) and url else None,
        expires_at=_lenient_timestamp(body.get("expires_at")),
        created_at=_lenient_timestamp(body.get("created_at")),
        filter_known=known,
    )
