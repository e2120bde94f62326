"""Every JSON body the emulator sends validates against Prolific's published OpenAPI schemas.

Reads ``../shared/spec/prolific-openapi-excerpt.json`` beside the repository; skipped when
that directory is absent.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from prolific_ingest.testing import Emulator
from prolific_ingest.testing._content import KNOWN_INSTRUCTION_TYPES, UNKNOWN_INSTRUCTION_TYPE

jsonschema = pytest.importorskip("jsonschema")

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "prolific-openapi-excerpt.json"
PREFIX = "/api/v1/data-collection"


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip("../shared/spec (the OpenAPI excerpt) is not available")
    doc: dict[str, Any] = json.loads(SPEC.read_text(encoding="utf-8"))
    return doc


def _validate(openapi: dict[str, Any], name: str, body: Any) -> None:
    schema = {**openapi["components"]["schemas"][name], "components": openapi["components"]}
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(body), key=str)
    assert not errors, f"{name}: {errors[0].message}"


def _call(emu: Emulator, method: str, path: str, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Token {emu.token}"}
    return requests.request(
        method, f"{emu.base_url}{PREFIX}{path}", headers=headers, timeout=30, **kw
    )


@pytest.mark.parametrize("kind", ["batches", "collections"])
def test_export_status_bodies(
    prolific_emulator: Emulator, openapi: dict[str, Any], kind: str
) -> None:
    emu = prolific_emulator
    emu.polls_until_complete = 1
    prefix = "Batch" if kind == "batches" else "Collection"
    owner = (emu.add_batch if kind == "batches" else emu.add_collection)(seed=1, n_submissions=3)
    posted = _call(emu, "POST", f"/{kind}/{owner}/export").json()
    _validate(openapi, f"{prefix}ExportStatus", posted)
    export_id = posted["export_id"]
    generating = _call(emu, "GET", f"/{kind}/{owner}/export/{export_id}").json()
    _validate(openapi, f"{prefix}ExportStatus", generating)
    complete = _call(emu, "GET", f"/{kind}/{owner}/export/{export_id}").json()
    assert complete["status"] == "complete"
    _validate(openapi, f"{prefix}ExportStatus", complete)
    _validate(openapi, f"{prefix}ExportComplete", complete)
    emu.delete_archive(owner, export_id)
    failed = _call(emu, "GET", f"/{kind}/{owner}/export/{export_id}").json()
    assert failed == {"status": "failed"}
    _validate(openapi, f"{prefix}ExportStatus", failed)


def test_legacy_post_body(prolific_emulator: Emulator, openapi: dict[str, Any]) -> None:
    emu = prolific_emulator
    emu.legacy_post = True
    batch = emu.add_batch(seed=2, n_submissions=2)
    r = _call(emu, "POST", f"/batches/{batch}/export")
    assert r.status_code == 200
    _validate(openapi, "BatchExportComplete", r.json())


def test_error_bodies(prolific_emulator: Emulator, openapi: dict[str, Any]) -> None:
    emu = prolific_emulator
    batch = emu.add_batch(seed=3, n_submissions=2)
    hidden = emu.add_batch(seed=4, access=False)
    emu.faults.rate_limit(retry_after=1)
    emu.faults.server_error()
    bodies = [
        _call(emu, "POST", f"/batches/{batch}/export").json(),  # 429
        _call(emu, "POST", f"/batches/{batch}/export").json(),  # 503
        requests.get(f"{emu.base_url}{PREFIX}/batches/{batch}", timeout=10).json(),  # 401
        _call(emu, "GET", f"/batches/{hidden}").json(),  # 403
        _call(emu, "GET", f"/batches/{batch}/export/nope").json(),  # 404
        _call(emu, "POST", f"/batches/{batch}/export", params={"from": "x"}).json(),  # 400
    ]
    assert [b["error"]["status"] for b in bodies] == [429, 503, 401, 403, 404, 400]
    for body in bodies:
        _validate(openapi, "Error", body)


def test_batch_object_and_responses(prolific_emulator: Emulator, openapi: dict[str, Any]) -> None:
    emu = prolific_emulator
    batch = emu.add_batch(seed=5, n_submissions=4, instruction_types=KNOWN_INSTRUCTION_TYPES)
    _validate(openapi, "AITaskBuilderBatch", _call(emu, "GET", f"/batches/{batch}").json())
    responses = _call(emu, "GET", f"/batches/{batch}/responses").json()
    assert responses["meta"]["count"] == 4 * 3 * len(KNOWN_INSTRUCTION_TYPES)
    _validate(openapi, "AI Task Builder_GetTaskBuilderBatchTaskResponses_Response_200", responses)
    status = _call(emu, "GET", f"/batches/{batch}/status").json()
    _validate(openapi, "AI Task Builder_GetTaskBuilderBatchStatus_Response_200", status)
    instructions = _call(emu, "GET", f"/batches/{batch}/instructions").json()
    _validate(openapi, "AI Task Builder_GetTaskBuilderInstructions_Response_200", instructions)


def test_collection_object_and_responses(
    prolific_emulator: Emulator, openapi: dict[str, Any]
) -> None:
    emu = prolific_emulator
    collection = emu.add_collection(
        seed=6, n_submissions=3, instruction_types=KNOWN_INSTRUCTION_TYPES
    )
    _validate(openapi, "Collection", _call(emu, "GET", f"/collections/{collection}").json())
    responses = _call(emu, "GET", f"/collections/{collection}/responses").json()
    _validate(openapi, "AI Task Builder_GetCollectionResponses_Response_200", responses)


def test_archive_metadata_follows_schemas(
    prolific_emulator: Emulator, openapi: dict[str, Any]
) -> None:
    emu = prolific_emulator
    emu.polls_until_complete = 0
    batch = emu.add_batch(seed=7, n_submissions=2)
    export_id = _call(emu, "POST", f"/batches/{batch}/export").json()["export_id"]
    url = _call(emu, "GET", f"/batches/{batch}/export/{export_id}").json()["url"]
    with zipfile.ZipFile(io.BytesIO(requests.get(url, timeout=30).content)) as zf:
        meta = json.loads(zf.read("batch.json"))
        lines = [json.loads(x) for x in zf.read("responses-by-submission.jsonl").splitlines()]
    _validate(openapi, "AITaskBuilderBatch", meta)
    known = [i for i in meta["instructions"] if i["type"] in KNOWN_INSTRUCTION_TYPES]
    assert len(known) == len(KNOWN_INSTRUCTION_TYPES)
    for definition in known:
        _validate(openapi, "AITaskBuilderInstruction", definition)
    assert lines


def test_flat_archive_records_are_task_builder_responses(
    tmp_path: Path, openapi: dict[str, Any]
) -> None:
    from prolific_ingest.testing import ExportSpec, make_batch_export

    path = tmp_path / "flat.zip"
    make_batch_export(
        path, ExportSpec(n_submissions=3, layout="flat", instruction_types=KNOWN_INSTRUCTION_TYPES)
    )
    with zipfile.ZipFile(path) as zf:
        for line in zf.read("responses-by-submission.jsonl").splitlines():
            _validate(openapi, "AITaskBuilderTaskResponse", json.loads(line))


def test_json_api_bodies_carry_only_the_types_the_openapi_allows(
    prolific_emulator: Emulator, openapi: dict[str, Any]
) -> None:
    emu = prolific_emulator
    emu.polls_until_complete = 0
    batch = emu.add_batch(seed=8, n_submissions=3)  # every type: documented, undocumented, unknown
    collection = emu.add_collection(seed=9, n_submissions=2)
    responses = _call(emu, "GET", f"/batches/{batch}/responses").json()
    assert responses["results"] and responses["meta"]["count"] == len(responses["results"])
    _validate(openapi, "AI Task Builder_GetTaskBuilderBatchTaskResponses_Response_200", responses)
    instructions = _call(emu, "GET", f"/batches/{batch}/instructions").json()
    _validate(openapi, "AI Task Builder_GetTaskBuilderInstructions_Response_200", instructions)
    collected = _call(emu, "GET", f"/collections/{collection}/responses").json()
    _validate(openapi, "AI Task Builder_GetCollectionResponses_Response_200", collected)
    # the other types stay where the API allows them: in the export archive
    export_id = _call(emu, "POST", f"/batches/{batch}/export").json()["export_id"]
    url = _call(emu, "GET", f"/batches/{batch}/export/{export_id}").json()["url"]
    with zipfile.ZipFile(io.BytesIO(requests.get(url, timeout=30).content)) as zf:
        archived = {i["type"] for i in json.loads(zf.read("batch.json"))["instructions"]}
    assert {"video_narration", UNKNOWN_INSTRUCTION_TYPE} <= archived
    served = {r["response"]["type"] for r in responses["results"]}
    assert served <= set(KNOWN_INSTRUCTION_TYPES)
