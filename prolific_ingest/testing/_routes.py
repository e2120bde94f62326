"""The emulated Prolific API: routing, auth, the export lifecycle rules."""

from __future__ import annotations

import hmac
import logging
import re
import threading
import uuid
from typing import Any

from ._content import KNOWN_INSTRUCTION_TYPES
from ._core import EmulatorCore
from ._metadata import instruction_defs, owner_object
from ._reply import Reply
from .faults import FaultRule
from .state import FilterError, Job, Owner, file_etag, iso_seconds, parse_filter

__all__ = ["EXPORT_CAP", "api", "error", "fault_reply", "job_status"]

logger = logging.getLogger(__name__)

EXPORT_CAP = 10
_BUILD_WAIT = 5.0  # a poll waits this long for a small archive; big ones stay "generating"
_ROUTE = re.compile(
    r"^/api/v1/data-collection/(batches|collections)/([^/]+)"
    r"(?:/(export|responses|status|instructions)(?:/([^/]+))?)?/?$"
)
_TITLES = {
    400: "Bad Request",
    401: "Not Authenticated",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    429: "Too Many Requests",
}
FEATURE_OFF = "You do not currently have permission to access this feature."


def error(status: int, detail: Any, headers: dict[str, str] | None = None) -> Reply:
    """An error in Prolific's envelope (spec §3)."""
    body = {
        "error": {
            "status": status,
            "error_code": 100000 + status * 100,
            "title": _TITLES.get(status, "Server Error"),
            "detail": detail,
        }
    }
    return Reply(status, body, headers)


def _echo_reply(rule: FaultRule, auth: str | None, target: str, download_url: str) -> Reply:
    """An error that repeats the caller's secrets back (see ``Faults.echo_token``)."""
    status = int(rule.params["status"])
    query = target.partition("?")[2]
    host = download_url.split("://", 1)[-1]
    leaky = f"http://reader:hunter2-pass@{host}/prolific-exports/x.zip?X-Amz-Signature=0f1e2d3c4b5a"
    body = {
        "error": {
            "status": status,
            "error_code": 100000 + status * 100,
            "title": f"Rejected {auth}",
            "detail": [f"The header 'Authorization: {auth}' was refused", f"query: {query}"],
            "additional_information": f"retry at {leaky} with {auth}",
        }
    }
    return Reply(status, body, {"WWW-Authenticate": f'Token realm="{auth}"'})


def fault_reply(emu: EmulatorCore, rule: FaultRule, auth: str | None, target: str) -> Reply:
    """The answer of an injected API error: a 429, a 5xx, or one echoing the caller's secrets."""
    if rule.kind == "echo_token":
        return _echo_reply(rule, auth, target, emu.download_url)
    status = int(rule.params["status"])
    if rule.kind == "rate_limit":
        headers = {}
        after = rule.params.get("retry_after")
        if after is not None:
            headers["Retry-After"] = (
                after
                if isinstance(after, str)
                else (f"{after:g}" if after % 1 else str(int(after)))
            )
        return error(429, "Request was throttled.", headers)
    return error(status, "The server encountered an unexpected condition (injected fault).")


def api(
    emu: EmulatorCore, method: str, path: str, query: dict[str, str], auth: str | None
) -> Reply:
    """Answer one API request."""
    expected = f"Token {emu.token}"
    if auth is None or not hmac.compare_digest(auth.encode(), expected.encode()):
        return error(401, "Invalid token.")
    m = _ROUTE.match(path)
    if m is None:
        return error(404, "Not found.")
    kind = "batch" if m[1] == "batches" else "collection"
    if kind == "collection" and not emu.collections_enabled:
        return error(403, FEATURE_OFF)
    owner = emu._owner(kind, m[2])
    if owner is None:
        return error(404, f"{kind.capitalize()} not found.")
    if not owner.access:
        return error(403, f"You do not have access to this {kind}'s workspace.")
    sub, export_id = m[3], m[4]
    if sub == "export":
        if export_id is None:
            if method == "POST":
                return _post_export(emu, owner, query)
            if method == "GET":
                with emu._lock:
                    return Reply(200, [j.info() for j in owner.jobs if not j.deleted])
        elif method == "GET":
            return job_status(emu, owner, export_id)
        elif method == "DELETE":
            return _delete_export(emu, owner, export_id)
        return error(405, f'Method "{method}" not allowed.')
    if export_id is not None or (sub in ("status", "instructions") and kind != "batch"):
        return error(404, "Not found.")
    if method != "GET":
        return error(405, f'Method "{method}" not allowed.')
    return _read_endpoint(emu, owner, sub)


def _read_endpoint(emu: EmulatorCore, owner: Owner, sub: str | None) -> Reply:
    with emu._lock:
        specs = list(owner.specs)
    plan = owner.plan()
    if sub is None:
        groups = len({plan.group_of(s) for s in specs})
        return Reply(200, owner_object(plan, n_groups=groups, with_instructions=False))
    if sub == "status":
        return Reply(200, {"status": "READY"})
    # The JSON API's enums list only the documented types; any other type (undocumented
    # video_narration, types newer than the client) appears only in the export archive.
    if sub == "instructions":
        defs = [d for d in instruction_defs(plan) if d.get("type") in KNOWN_INSTRUCTION_TYPES]
        return Reply(200, {"results": defs, "meta": {"count": len(defs)}})
    results = [
        plan.flat_record(r, api=True)
        for spec in specs
        for slot in plan.task_slots()
        for r in plan.responses(spec, slot)
        if r.body.get("type") in KNOWN_INSTRUCTION_TYPES
    ]
    return Reply(200, {"results": results, "meta": {"count": len(results)}})


def _complete_body(emu: EmulatorCore, job: Job) -> dict[str, Any]:
    if job.url is None or emu._now() >= job.expires_at:
        expired = emu.faults.take("expired_url") is not None
        issued = emu._now() - emu.url_ttl - 60 if expired else emu._now()
        job.url, job.expires_at = emu._signer.sign(emu.download_url, job, issued, emu.url_ttl)
    return {"status": "complete", "url": job.url, "expires_at": iso_seconds(job.expires_at)}


def _build(emu: EmulatorCore, job: Job, specs: list[Any]) -> None:
    path = emu._workdir / f"{job.export_id}.zip"
    try:
        job.owner.build(path, job.flt, specs)
        job.size, job.etag, job.archive = path.stat().st_size, file_etag(path), path
    except Exception:
        logger.exception("emulator: building export %s failed", job.export_id)
        job.fail = True
    finally:
        job.ready.set()


def _post_export(emu: EmulatorCore, owner: Owner, query: dict[str, str]) -> Reply:
    try:
        shown, flt = parse_filter(query)
    except FilterError as exc:
        return error(400, {exc.field: [str(exc)]})
    with emu._lock:
        live = [j for j in owner.jobs if not j.deleted]
        for job in live:
            if job.filter == shown and job.status == "generating" and not emu.legacy_post:
                return Reply(202, {"status": "generating", "export_id": job.export_id})
            if job.filter == shown and job.status == "complete" and emu.legacy_post:
                return Reply(200, _complete_body(emu, job))
        if len(live) >= EXPORT_CAP:
            return error(
                409,
                f"This {owner.kind} already has {EXPORT_CAP} export jobs. "
                "Delete finished exports to free a slot.",
            )
        emu._seq += 1
        job = Job(uuid.uuid4().hex, owner, shown, flt, emu._now(), emu._seq)
        job.export_id = str(uuid.UUID(job.export_id))
        job.fail = emu.faults.take("fail_job") is not None
        job.complete_then_fail = emu.faults.take("complete_then_fail") is not None
        owner.jobs.insert(0, job)
        specs = list(owner.specs)
    if emu.legacy_post:
        _build(emu, job, specs)
    else:  # big archives take a while: build in the background, like the real service
        threading.Thread(target=_build, args=(emu, job, specs), daemon=True).start()
    logger.info("emulator: export %s of %s %s requested", job.export_id, owner.kind, owner.owner_id)
    if emu.legacy_post and not job.fail:
        with emu._lock:
            job.status = "complete"
            job.complete_polls = 1
            return Reply(200, _complete_body(emu, job))
    return Reply(202, {"status": "generating", "export_id": job.export_id})


def _find(owner: Owner, export_id: str) -> Job | None:
    return next((j for j in owner.jobs if j.export_id == export_id and not j.deleted), None)


def job_status(emu: EmulatorCore, owner: Owner, export_id: str) -> Reply:
    """GET status: one poll of the job."""
    with emu._lock:
        job = _find(owner, export_id)
    if job is None:
        return error(404, "Export job not found")
    if not job.ready.wait(_BUILD_WAIT):
        return Reply(200, {"status": "generating", "export_id": job.export_id})
    with emu._lock:
        if job.status == "generating":
            job.polls += 1
            if job.polls > emu.polls_until_complete:
                job.status = "complete"
                if job.fail:
                    job.lose_archive()
        elif job.status == "complete" and job.complete_then_fail and job.complete_polls >= 1:
            job.lose_archive()
        if job.status == "complete" and (job.archive is None or not job.archive.exists()):
            job.lose_archive()
        if job.status == "complete":
            job.complete_polls += 1
            return Reply(200, _complete_body(emu, job))
        if job.status == "failed":
            return Reply(200, {"status": "failed"})
        return Reply(200, {"status": "generating", "export_id": job.export_id})


def _delete_export(emu: EmulatorCore, owner: Owner, export_id: str) -> Reply:
    with emu._lock:
        job = _find(owner, export_id)
        if job is None:
            return error(404, "Export job not found")
        if job.status == "generating":
            return error(409, "This export is still generating and cannot be deleted yet.")
        job.deleted = True
        job.url = None
        if job.archive is not None:
            job.archive.unlink(missing_ok=True)
    return Reply(204)
