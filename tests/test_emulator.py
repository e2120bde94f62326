"""The emulator's API rules, driven over real loopback sockets with plain ``requests``."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from datetime import datetime
from typing import Any

import pytest
import requests

from prolific_ingest.testing import Emulator, ExportSpec, serve
from prolific_ingest.testing._content import KNOWN_INSTRUCTION_TYPES

PREFIX = "/api/v1/data-collection"
ERROR_KEYS = {"status", "error_code", "title", "detail"}


def _url(emu: Emulator, owner: str, *parts: str, kind: str = "batches") -> str:
    return "/".join([f"{emu.base_url}{PREFIX}/{kind}/{owner}", *parts])


def _call(emu: Emulator, method: str, url: str, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Token {emu.token}", **kw.pop("headers", {})}
    return requests.request(method, url, headers=headers, timeout=30, **kw)


def _post(emu: Emulator, owner: str, kind: str = "batches", **params: str) -> requests.Response:
    return _call(emu, "POST", _url(emu, owner, "export", kind=kind), params=params)


def _status(emu: Emulator, owner: str, export_id: str, kind: str = "batches") -> dict[str, Any]:
    r = _call(emu, "GET", _url(emu, owner, "export", export_id, kind=kind))
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def _complete(emu: Emulator, owner: str, kind: str = "batches", **params: str) -> dict[str, Any]:
    export_id = _post(emu, owner, kind, **params).json()["export_id"]
    for _ in range(emu.polls_until_complete + 1):
        body = _status(emu, owner, export_id, kind)
    assert body["status"] == "complete"
    return {**body, "export_id": export_id}


def _assert_error(r: requests.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_KEYS
    assert body["error"]["status"] == status
    detail: dict[str, Any] = body["error"]
    return detail


def _zip(content: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(content))


def _count_lines(zf: zipfile.ZipFile, name: str) -> int:
    return sum(1 for line in zf.read(name).decode("utf-8-sig").split("\n") if line.strip())


@pytest.fixture
def emu(prolific_emulator: Emulator) -> Emulator:
    return prolific_emulator


@pytest.fixture
def batch(emu: Emulator) -> str:
    return emu.add_batch(seed=1, n_submissions=9)


def test_token_required(emu: Emulator, batch: str) -> None:
    url = _url(emu, batch, "export")
    _assert_error(requests.post(url, timeout=10), 401)
    _assert_error(requests.post(url, headers={"Authorization": "Token nope"}, timeout=10), 401)
    bearer = {"Authorization": f"Bearer {emu.token}"}
    _assert_error(requests.get(url, headers=bearer, timeout=10), 401)
    assert emu.jobs(batch) == []


def test_post_answers_202_generating(emu: Emulator, batch: str) -> None:
    r = _post(emu, batch)
    assert r.status_code == 202
    body = r.json()
    assert set(body) == {"status", "export_id"}
    assert body["status"] == "generating"
    assert [j["export_id"] for j in emu.jobs(batch)] == [body["export_id"]]


def test_polls_until_complete_and_status_shapes(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 2
    export_id = _post(emu, batch).json()["export_id"]
    first, second, third = (_status(emu, batch, export_id) for _ in range(3))
    assert first == second == {"status": "generating", "export_id": export_id}
    assert set(third) == {"status", "url", "expires_at"}
    assert third["status"] == "complete"
    datetime.fromisoformat(third["expires_at"])
    assert _status(emu, batch, export_id)["url"] == third["url"]  # stable before expiry


def test_zero_polls_completes_on_first_get(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    export_id = _post(emu, batch).json()["export_id"]
    assert _status(emu, batch, export_id)["status"] == "complete"


def test_reuse_only_while_generating_with_same_filter(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 1
    first = _post(emu, batch).json()["export_id"]
    assert _post(emu, batch).json()["export_id"] == first
    other = _post(emu, batch, **{"from": "2026-11-02T00:00:00Z"}).json()["export_id"]
    assert other != first
    same_other = _post(emu, batch, **{"from": "2026-11-02T00:00:00+00:00"})
    assert same_other.json()["export_id"] == other
    _status(emu, batch, first)
    assert _status(emu, batch, first)["status"] == "complete"
    fresh = _post(emu, batch)
    assert fresh.status_code == 202
    assert fresh.json()["export_id"] not in (first, other)
    assert len(emu.jobs(batch)) == 3


def test_cap_of_ten_jobs(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    ids = [_post(emu, batch, study_id=f"study{i}").json()["export_id"] for i in range(10)]
    assert len(set(ids)) == 10
    err = _assert_error(_post(emu, batch, study_id="study10"), 409)
    assert "10" in err["detail"]
    assert len(emu.jobs(batch)) == 10
    _status(emu, batch, ids[0])
    assert _call(emu, "DELETE", _url(emu, batch, "export", ids[0])).status_code == 204
    assert _post(emu, batch, study_id="study10").status_code == 202


def test_delete_rules(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 1
    export_id = _post(emu, batch).json()["export_id"]
    url = _url(emu, batch, "export", export_id)
    _assert_error(_call(emu, "DELETE", url), 409)
    _status(emu, batch, export_id)
    complete = _status(emu, batch, export_id)
    r = _call(emu, "DELETE", url)
    assert r.status_code == 204
    assert r.content == b""
    assert _assert_error(_call(emu, "GET", url), 404)["detail"] == "Export job not found"
    _assert_error(_call(emu, "DELETE", url), 404)
    assert _call(emu, "GET", _url(emu, batch, "export")).json() == []
    assert requests.get(complete["url"], timeout=10).status_code == 404


def test_list_newest_first(emu: Emulator, batch: str) -> None:
    a = _post(emu, batch).json()["export_id"]
    b = _post(emu, batch, study_id="abc", to="2026-11-03T00:00:00Z").json()["export_id"]
    listed = _call(emu, "GET", _url(emu, batch, "export")).json()
    assert isinstance(listed, list)
    assert [item["export_id"] for item in listed] == [b, a]
    for item in listed:
        assert set(item) == {"export_id", "status", "filter", "created_at"}
        assert item["status"] == "generating"
    assert listed[0]["filter"] == {"study_id": "abc", "to": "2026-11-03T00:00:00Z"}
    assert listed[1]["filter"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01T00:00:00Z"}, "to"),
        ({"from": ""}, "from"),
        ({"from": "2026-11-03T00:00:00Z", "to": "2026-11-02T00:00:00Z"}, "to"),
        ({"study_id": "not a valid id!"}, "study_id"),
    ],
)
def test_malformed_filter_is_400(
    emu: Emulator, batch: str, params: dict[str, str], field: str
) -> None:
    err = _assert_error(_post(emu, batch, **params), 400)
    assert set(err["detail"]) == {field}
    assert emu.jobs(batch) == []


def test_filters_are_applied_to_the_archive(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    truth = emu.ground_truth(batch)
    study = truth.submissions[0]["study_id"]
    stamps = sorted(r["created_at"] for r in truth.responses)
    since, until = stamps[20][:19] + "Z", stamps[120][:19] + "Z"
    cases: list[dict[str, str]] = [{}, {"study_id": study}, {"from": since, "to": until}]
    for params in cases:
        expected = emu.ground_truth(
            batch, study_id=params.get("study_id"), since=params.get("from"), until=params.get("to")
        )
        content = requests.get(_complete(emu, batch, **params)["url"], timeout=30).content
        with _zip(content) as zf:
            assert (
                _count_lines(zf, "responses-by-submission.jsonl") == expected.counts["submissions"]
            )
            records = [json.loads(x) for x in zf.read("responses-by-submission.jsonl").splitlines()]
        ids = {r["id"] for s in records for t in s["tasks"] for r in t["responses"]}
        assert ids == {r["response_id"] for r in expected.responses}
    assert 0 < emu.ground_truth(batch, study_id=study).counts["submissions"] < 9
    window = emu.ground_truth(batch, since=since, until=until)
    assert 0 < window.counts["responses"] < truth.counts["responses"]


def test_access_and_not_found(emu: Emulator, batch: str) -> None:
    hidden = emu.add_batch(seed=2, access=False)
    for method, url in [
        ("POST", _url(emu, hidden, "export")),
        ("GET", _url(emu, hidden, "export")),
        ("GET", _url(emu, hidden)),
    ]:
        _assert_error(_call(emu, method, url), 403)
    unknown = "00000000-0000-4000-8000-000000000000"
    _assert_error(_post(emu, unknown), 404)
    _assert_error(_call(emu, "GET", _url(emu, batch, "export", unknown)), 404)
    _assert_error(_call(emu, "GET", f"{emu.base_url}{PREFIX}/nothing-here"), 404)
    _assert_error(_call(emu, "PUT", _url(emu, batch, "export")), 405)


def test_collections_feature_disabled(emu: Emulator) -> None:
    collection = emu.add_collection(seed=3, n_submissions=4)
    emu.collections_enabled = False
    err = _assert_error(_post(emu, collection, "collections"), 403)
    assert err["detail"] == "You do not currently have permission to access this feature."
    emu.collections_enabled = True
    assert _post(emu, collection, "collections").status_code == 202


def test_collection_export_round_trip(emu: Emulator) -> None:
    emu.polls_until_complete = 0
    collection = emu.add_collection(seed=3, n_submissions=4)
    done = _complete(emu, collection, "collections")
    with _zip(requests.get(done["url"], timeout=30).content) as zf:
        assert _count_lines(zf, "responses.jsonl") == 4
        assert json.loads(zf.read("collection.json"))["id"] == collection
    got = _call(emu, "GET", _url(emu, collection, kind="collections")).json()
    assert got["id"] == collection


def test_complete_can_turn_failed(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    done = _complete(emu, batch)
    emu.delete_archive(batch, done["export_id"])
    assert _status(emu, batch, done["export_id"]) == {"status": "failed"}
    assert requests.get(done["url"], timeout=10).status_code == 404
    assert emu.jobs(batch)[0]["status"] == "failed"
    assert _post(emu, batch).json()["export_id"] != done["export_id"]


def test_legacy_post_answers_200_complete(prolific_emulator: Emulator) -> None:
    emu = prolific_emulator
    emu.legacy_post = True
    batch = emu.add_batch(seed=4, n_submissions=3)
    r = _post(emu, batch)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"status", "url", "expires_at"}
    assert body["status"] == "complete"
    assert requests.get(body["url"], timeout=10).status_code == 200
    again = _post(emu, batch)
    assert again.status_code == 200
    assert len(emu.jobs(batch)) == 1


def test_batch_and_responses_endpoints_match_archive(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    meta = _call(emu, "GET", _url(emu, batch)).json()
    assert meta["id"] == batch
    assert meta["status"] == "READY"
    body = _call(emu, "GET", _url(emu, batch, "responses")).json()
    assert set(body) == {"results", "meta"}
    assert body["meta"] == {"count": len(body["results"])}
    truth = emu.ground_truth(batch)
    # the JSON API carries the documented types only; the archive carries every type
    documented = {r["response_id"] for r in truth.responses if r["type"] in KNOWN_INSTRUCTION_TYPES}
    assert {r["id"] for r in body["results"]} == documented
    first = body["results"][0]
    assert first["batch_id"] == batch
    assert {"instruction_id", "type", "answer"} == set(first["response"])
    assert _call(emu, "GET", _url(emu, batch, "status")).json() == {"status": "READY"}
    instructions = _call(emu, "GET", _url(emu, batch, "instructions")).json()
    known = [i for i in truth.instructions if i["type"] in KNOWN_INSTRUCTION_TYPES]
    assert instructions["meta"]["count"] == len(known)


def test_add_submissions_grows_later_exports(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    before = emu.ground_truth(batch)
    newest = max(r["created_at"] for r in before.responses)
    emu.add_submissions(batch, 4)
    after = emu.ground_truth(batch)
    assert after.counts["submissions"] == before.counts["submissions"] + 4
    added = {r["response_id"] for r in after.responses} - {
        r["response_id"] for r in before.responses
    }
    assert added
    assert all(r["created_at"] > newest for r in after.responses if r["response_id"] in added)
    since = datetime.fromisoformat(newest).replace(microsecond=0).isoformat()
    incremental = emu.ground_truth(batch, since=since)
    assert {r["response_id"] for r in incremental.responses} >= added
    done = _complete(emu, batch)
    with _zip(requests.get(done["url"], timeout=30).content) as zf:
        assert _count_lines(zf, "responses-by-submission.jsonl") == 13


def test_archive_is_a_snapshot_at_post_time(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 1
    export_id = _post(emu, batch).json()["export_id"]
    emu.add_submissions(batch, 2)
    _status(emu, batch, export_id)
    url = _status(emu, batch, export_id)["url"]
    with _zip(requests.get(url, timeout=30).content) as zf:
        assert _count_lines(zf, "responses-by-submission.jsonl") == 9


def test_download_headers_and_range(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    url = _complete(emu, batch)["url"]
    full = requests.get(url, timeout=30)
    assert full.status_code == 200
    assert int(full.headers["Content-Length"]) == len(full.content)
    assert full.headers["ETag"] == f'"{hashlib.md5(full.content).hexdigest()}"'
    assert full.headers["Accept-Ranges"] == "bytes"
    part = requests.get(url, headers={"Range": "bytes=10-99"}, timeout=30)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(full.content)}"
    assert part.content == full.content[10:100]
    tail = requests.get(url, headers={"Range": "bytes=-25"}, timeout=30)
    assert tail.status_code == 206
    assert tail.content == full.content[-25:]
    rest = requests.get(url, headers={"Range": f"bytes={len(full.content) - 5}-"}, timeout=30)
    assert rest.content == full.content[-5:]
    bad = requests.get(url, headers={"Range": f"bytes={len(full.content)}-"}, timeout=30)
    assert bad.status_code == 416
    assert bad.headers["Content-Range"] == f"bytes */{len(full.content)}"
    head = requests.head(url, timeout=30)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(full.content))


def test_download_refusals(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    done = _complete(emu, batch)
    url = done["url"]
    auth = requests.get(url, headers={"Authorization": f"Token {emu.token}"}, timeout=10)
    assert auth.status_code == 400
    assert "<Code>InvalidArgument</Code>" in auth.text
    lower = requests.get(url, headers={"authorization": "AWS4-HMAC-SHA256 x"}, timeout=10)
    assert lower.status_code == 400
    tampered = url[:-3] + ("000" if not url.endswith("000") else "111")
    bad = requests.get(tampered, timeout=10)
    assert bad.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in bad.text
    other_path = url.replace(done["export_id"], "00000000-0000-4000-8000-000000000000")
    assert "SignatureDoesNotMatch" in requests.get(other_path, timeout=10).text
    longer = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=99999")
    assert requests.get(longer, timeout=10).status_code == 403
    unsigned = url.split("?")[0]
    assert requests.get(unsigned, timeout=10).status_code == 403


def test_expiry_and_fresh_url(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    done = _complete(emu, batch)
    emu.advance_time(3601)
    expired = requests.get(done["url"], timeout=10)
    assert expired.status_code == 403
    assert expired.headers["Content-Type"] == "application/xml"
    assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in expired.text
    fresh = _status(emu, batch, done["export_id"])
    assert fresh["url"] != done["url"]
    assert fresh["expires_at"] > done["expires_at"]
    assert requests.get(fresh["url"], timeout=10).status_code == 200


def test_short_url_ttl(prolific_emulator: Emulator) -> None:
    emu = prolific_emulator
    emu.url_ttl = 5
    emu.polls_until_complete = 0
    batch = emu.add_batch(seed=5, n_submissions=2)
    done = _complete(emu, batch)
    assert "X-Amz-Expires=5" in done["url"]
    emu.advance_time(6)
    assert requests.get(done["url"], timeout=10).status_code == 403


def test_request_log_is_redacted(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 0
    url = _complete(emu, batch)["url"]
    requests.get(url, timeout=10)
    log = emu.requests
    assert [r.host for r in log].count("download") == 1
    assert {r.host for r in log} == {"api", "download"}
    assert emu.token not in repr(log)
    api = [r for r in log if r.host == "api"]
    assert all(r.headers["Authorization"] == "<redacted>" for r in api)
    assert api[0].method == "POST"
    assert api[0].status == 202
    download = next(r for r in log if r.host == "download")
    assert download.query["X-Amz-Signature"] == "<redacted>"
    assert "Authorization" not in download.headers
    emu.clear_requests()
    assert emu.requests == []


def test_reset_forgets_everything(emu: Emulator, batch: str) -> None:
    _post(emu, batch)
    emu.faults.rate_limit(times=5)
    emu.advance_time(100)
    emu.polls_until_complete = 7
    emu.reset()
    assert emu.requests == []
    assert emu.faults.rules == []
    assert emu.polls_until_complete == 2
    with pytest.raises(KeyError):
        emu.jobs(batch)
    _assert_error(_post(emu, batch), 404)


def test_add_rejects_bad_options(emu: Emulator) -> None:
    with pytest.raises(TypeError):
        emu.add_batch(seed=1, not_an_option=True)
    with pytest.raises(ValueError, match="layout"):
        emu.add_batch(seed=1, layout="v7")
    existing = emu.add_batch(seed=1)
    with pytest.raises(ValueError, match="exists"):
        emu.add_batch(seed=1, batch_id=existing)


def test_a_spec_adds_the_same_batch_as_its_fields_as_keywords(emu: Emulator) -> None:
    by_keywords = emu.add_batch(seed=4, batch_id="b-kw", n_submissions=3, uploads=False)
    by_spec = emu.add_batch(ExportSpec(seed=4, owner_id="b-spec", n_submissions=3, uploads=False))
    assert by_spec == "b-spec"
    kw_truth, spec_truth = emu.ground_truth(by_keywords), emu.ground_truth(by_spec)
    assert spec_truth.counts == kw_truth.counts
    assert len(spec_truth.responses) == kw_truth.counts["responses"] > 0
    collection = emu.add_collection(ExportSpec(n_submissions=2))
    assert emu.ground_truth(collection).counts["submissions"] == 2
    with pytest.raises(TypeError, match="not both"):
        emu.add_batch(ExportSpec(), n_submissions=3)
    with pytest.raises(TypeError, match="not both"):
        emu.add_batch(ExportSpec(), seed=1)
    with pytest.raises(TypeError, match="tasks_per_submission"):
        emu.add_collection(tasks_per_submission=2)
    with pytest.raises(TypeError, match="keep_rows"):
        emu.add_batch(keep_rows=False)


def test_serve_describes_and_stops() -> None:
    texts: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, kwargs={"n_batches": 2, "announce": texts.append, "stop_event": stop}
    )
    thread.start()
    try:
        for _ in range(200):
            if texts:
                break
            stop.wait(0.05)
        assert texts
        text = texts[0]
        base = next(line.split(": ", 1)[1] for line in text.splitlines() if "API base URL" in line)
        token = next(line.split(": ", 1)[1] for line in text.splitlines() if "Token" in line)
        batch = next(line.split(": ", 1)[1] for line in text.splitlines() if "batch" in line)
        r = requests.get(
            f"{base}{PREFIX}/batches/{batch.strip()}",
            headers={"Authorization": f"Token {token.strip()}"},
            timeout=10,
        )
        assert r.status_code == 200
        assert text.count("batch ") == 2
        assert "PROLIFIC_API_URL" in text
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_standalone_context_manager_stops_servers() -> None:
    with Emulator(polls_until_complete=0) as emu:
        base = emu.base_url
        batch = emu.add_batch(seed=0, n_submissions=1)
        assert _post(emu, batch).status_code == 202
    with pytest.raises(requests.ConnectionError):
        requests.get(base, timeout=5)


def test_add_submissions_created_after(emu: Emulator, batch: str) -> None:
    later = datetime.fromisoformat("2027-03-01T12:00:00+00:00")
    emu.add_submissions(batch, 2, created_after=later)
    newest = emu.ground_truth(batch, since=later)
    assert newest.counts["submissions"] == 2
    assert all(datetime.fromisoformat(r["created_at"]) >= later for r in newest.responses)
    with pytest.raises(KeyError):
        emu.add_submissions("no-such-batch", 1)


def test_plugin_fixture_is_registered_shared_and_reset(
    prolific_emulator: Emulator, prolific_emulator_session: Emulator
) -> None:
    from importlib.metadata import entry_points

    plugins = {ep.value for ep in entry_points(group="pytest11")}
    assert "prolific_ingest.testing.pytest_plugin" in plugins
    assert prolific_emulator is prolific_emulator_session
    assert prolific_emulator.requests == []
    assert prolific_emulator.faults.rules == []
    assert prolific_emulator.polls_until_complete == 2
    assert prolific_emulator.legacy_post is False
