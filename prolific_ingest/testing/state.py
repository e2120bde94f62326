"""The emulator's store: batches/collections, export jobs, archives and URL signing."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ._build import ExportFilter, build_plan, default_study_ids, make
from ._records import DEFAULT_START, Plan, SubmissionSpec, plan_submissions
from ._spec import ExportSpec
from ._truth import GroundTruth

__all__ = ["FilterError", "Job", "Owner", "Signer", "parse_filter"]

_STUDY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class FilterError(ValueError):
    """A malformed export filter; ``field`` names the query parameter."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def _parse_time(name: str, raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        msg = f"Enter a valid ISO-8601 date-time, e.g. 2026-11-01T00:00:00Z (got {raw!r})."
        raise FilterError(msg, field=name) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _format_time(moment: datetime) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return moment.strftime(fmt)


def parse_filter(query: dict[str, str]) -> tuple[dict[str, str] | None, ExportFilter]:
    """Parse ``study_id``/``from``/``to``: the normalised filter (``None`` if empty) and its test.

    Raises
    ------
    FilterError
        For a malformed value, or ``from`` not before ``to``.
    """
    shown: dict[str, str] = {}
    study_id = query.get("study_id")
    if study_id is not None:
        if not _STUDY_RE.match(study_id):
            msg = "Enter a valid study id."
            raise FilterError(msg, field="study_id")
        shown["study_id"] = study_id
    since = until = None
    if "from" in query:
        since = _parse_time("from", query["from"])
        shown["from"] = _format_time(since)
    if "to" in query:
        until = _parse_time("to", query["to"])
        shown["to"] = _format_time(until)
    if since is not None and until is not None and since >= until:
        msg = "'to' must be later than 'from'."
        raise FilterError(msg, field="to")
    return (shown or None), ExportFilter(study_id, since, until)


@dataclass
class Owner:
    """A batch or collection held by the emulator: its spec, submissions and jobs."""

    kind: str
    spec: ExportSpec
    access: bool
    specs: list[SubmissionSpec]
    jobs: list[Job] = field(default_factory=list)

    @classmethod
    def create(cls, kind: str, spec: ExportSpec, *, access: bool) -> Owner:
        """Plan the initial submissions of ``spec`` (whose ``owner_id`` is set)."""
        owner = cls(kind, spec, access, [])
        owner.build(None, ExportFilter())  # raises for a spec that cannot be written, now
        owner.specs = list(
            plan_submissions(
                spec.seed,
                owner.owner_id,
                spec.n_submissions,
                study_ids=owner.study_ids,
                created_start=spec.created_start or DEFAULT_START,
                responses_per_submission=owner.responses_per_submission,
            )
        )
        return owner

    @property
    def owner_id(self) -> str:
        """The batch or collection id."""
        assert self.spec.owner_id is not None
        return self.spec.owner_id

    @property
    def study_ids(self) -> tuple[str, ...]:
        """The studies its submissions belong to."""
        return tuple(self.spec.study_ids or default_study_ids(self.spec.seed, self.owner_id))

    @property
    def responses_per_submission(self) -> int:
        """Responses in each submission."""
        tasks = self.spec.tasks_per_submission if self.kind == "batch" else 1
        return max(1, len(self.spec.instruction_types) * tasks)

    def plan(self) -> Plan:
        """The record plan of this owner (for the JSON endpoints)."""
        return build_plan(self.kind, replace(self.spec, huge_line_bytes=None), self.owner_id)

    def add_submissions(self, n: int, created_after: datetime | None) -> None:
        """Append ``n`` submissions whose responses are newer than every existing one."""
        last = max(
            (
                s.started_at.timestamp() + s.interval_us * self.responses_per_submission / 1e6
                for s in self.specs
            ),
            default=DEFAULT_START.timestamp(),
        )
        start = datetime.fromtimestamp(math.floor(last) + 60, UTC)
        if created_after is not None:
            start = max(start, created_after.astimezone(UTC))
        self.specs.extend(
            plan_submissions(
                self.spec.seed,
                self.owner_id,
                n,
                study_ids=self.study_ids,
                created_start=start,
                responses_per_submission=self.responses_per_submission,
                start_index=len(self.specs),
            )
        )

    def build(
        self,
        path: Path | None,
        flt: ExportFilter,
        specs: list[SubmissionSpec] | None = None,
        *,
        keep_rows: bool = False,
    ) -> GroundTruth:
        """Write this owner's archive (or only compute its truth when ``path`` is None)."""
        submissions = self.specs if specs is None else specs
        return make(
            self.spec, self.kind, path, flt=flt, keep_rows=keep_rows, submissions=submissions
        )


@dataclass
class Job:
    """One export job."""

    export_id: str
    owner: Owner
    filter: dict[str, str] | None
    flt: ExportFilter
    created_at: float
    seq: int
    status: str = "generating"
    polls: int = 0
    complete_polls: int = 0
    fail: bool = False
    complete_then_fail: bool = False
    deleted: bool = False
    archive: Path | None = None
    size: int = 0
    etag: str = ""
    url: str | None = None
    expires_at: float = 0.0
    ready: threading.Event = field(default_factory=threading.Event)

    def info(self) -> dict[str, Any]:
        """The list-endpoint item for this job."""
        return {
            "export_id": self.export_id,
            "status": self.status,
            "filter": dict(self.filter) if self.filter else None,
            "created_at": iso_seconds(self.created_at),
        }

    def lose_archive(self) -> None:
        """Storage lost the archive: the job reports ``failed`` from now on."""
        self.status = "failed"
        self.url = None
        if self.archive is not None:
            self.archive.unlink(missing_ok=True)


def iso_seconds(ts: float) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` of a POSIX timestamp."""
    return datetime.fromtimestamp(math.floor(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_etag(path: Path) -> str:
    """Quoted MD5 of a file, as S3 reports it for single-part objects."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f'"{digest.hexdigest()}"'


class Signer:
    """HMAC-signed, expiring S3-style URLs for the download host."""

    BUCKET = "prolific-exports"

    def __init__(self) -> None:
        self._key = uuid.uuid4().bytes

    def _signature(self, path: str, date: str, expires: str) -> str:
        msg = f"GET\n{path}\n{date}\n{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def path_for(self, job: Job) -> str:
        """The object path of a job's archive."""
        owner = job.owner
        folder = "batches" if owner.kind == "batch" else "collections"
        return f"/{self.BUCKET}/{folder}/{owner.owner_id}/{job.export_id}.zip"

    def sign(self, base: str, job: Job, issued: float, ttl: float) -> tuple[str, float]:
        """Return ``(url, expires_at)`` for a URL issued at ``issued`` valid ``ttl`` seconds."""
        issued = math.floor(issued)
        expires = max(1, math.ceil(ttl))
        date = datetime.fromtimestamp(issued, UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.path_for(job)
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"EMULATOR/{date[:8]}/us-east-1/s3/aws4_request",
            "X-Amz-Date": date,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": self._signature(path, date, str(expires)),
        }
        return f"{base}{path}?{urlencode(query)}", float(issued + expires)

    def check(self, path: str, query: dict[str, str], now: float) -> str | None:
        """``None`` when valid, else ``"SignatureDoesNotMatch"`` / ``"AccessDenied"``."""
        date, expires, sig = (
            query.get(k) for k in ("X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature")
        )
        if not (date and expires and sig):
            return "AccessDenied"
        if not hmac.compare_digest(self._signature(path, date, expires), sig):
            return "SignatureDoesNotMatch"
        try:
            issued = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
            lifetime = int(expires)
        except ValueError:
            return "AccessDenied"
        return "Expired" if now >= issued + lifetime else None
