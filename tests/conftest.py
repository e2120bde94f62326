"""Shared fixtures: a real S3 API (moto server on loopback) and sink targets.

``moto_server`` starts one ``ThreadedMotoServer`` on 127.0.0.1 (free port) per
session; ``s3`` resets it per test (``POST /moto-api/reset``), sets fake AWS
credentials so boto never looks for real ones, and creates a fresh bucket.
``sink_target`` parametrizes a lake test over a local path and ``s3://``.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pytest

from prolific_ingest import Settings

_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class S3Env:
    """A bucket on the moto server, with an s3fs filesystem and URL-form options."""

    endpoint: str
    bucket: str
    fs: Any
    storage_options: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str = "") -> str:
        return f"s3://{self.bucket}/{path}".rstrip("/")


@dataclass
class SinkTarget:
    """Where a sink test writes: ``output`` plus ``storage_options``, and a raw fs."""

    name: str
    output: str
    storage_options: dict[str, Any] | None
    fs: Any
    root: str  # fs path of ``output``

    def exists(self, rel: str) -> bool:
        self.fs.invalidate_cache()
        return bool(self.fs.exists(f"{self.root}/{rel}"))

    def find(self, rel: str = "") -> list[str]:
        """Files under ``rel``, relative to the output root."""
        self.fs.invalidate_cache()
        base = f"{self.root}/{rel}".rstrip("/")
        return sorted(p[len(self.root) + 1 :] for p in self.fs.find(base))


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on 127.0.0.1 (one per test session)."""
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Env:
    """A fresh moto state and bucket, fake credentials in the environment."""
    s3fs = pytest.importorskip("s3fs")
    for key, value in _FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with _no_proxy_opener().open(request, timeout=30) as resp:
        assert resp.status == 200
    options: dict[str, Any] = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": moto_server},
        "use_listings_cache": False,
    }
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return S3Env(endpoint=moto_server, bucket=bucket, fs=fs, storage_options=options)


@pytest.fixture
def memory_prefix() -> Iterator[str]:
    """A unique ``memory://`` prefix; the memory filesystem is cleared afterwards."""
    prefix = f"memory://t-{uuid.uuid4().hex[:12]}"
    yield prefix
    mem = fsspec.filesystem("memory")
    mem.store.clear()
    mem.pseudo_dirs.clear()
    mem.pseudo_dirs.append("")


@pytest.fixture(params=["local", "s3"])
def sink_target(request: pytest.FixtureRequest, tmp_path: Path) -> SinkTarget:
    """Where a lake test writes: a local folder, or s3:// on the moto server."""
    kind = request.param
    if kind == "local":
        out = tmp_path / "lake"
        return SinkTarget("local", str(out), None, fsspec.filesystem("file"), str(out))
    env: S3Env = request.getfixturevalue("s3")
    return SinkTarget("s3", env.url("lake"), env.storage_options, env.fs, f"{env.bucket}/lake")


# --- hand-made export tables with the fixed schemas of docs/internals.md ("Tables") ----------


def _schema(spec: str) -> Any:
    import pyarrow as pa

    types = {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "ts": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([(n, types[t]) for n, t in (item.split(":") for item in spec.split())])


def sink_schemas(kind: str = "batch") -> dict[str, Any]:
    """The fixed table schemas (``<owner>_id`` per ``kind``; ``tasks`` for batches only)."""
    owner = f"{kind}_id"
    schemas = {
        "submissions": _schema(
            f"submission_id:str participant_id:str study_id:str {owner}:str n_responses:int "
            "extra:str"
        ),
        "responses": _schema(
            "response_id:str created_at:ts submission_id:str participant_id:str study_id:str "
            "task_id:str instruction_id:str type:str n_answers:int extra:str"
        ),
        "answers": _schema(
            "response_id:str answer_index:int submission_id:str participant_id:str task_id:str "
            "instruction_id:str type:str value:str value_type:str unit:str explanation:str "
            "file_key:str file_name:str file_size_mb:float content_type:str file_path:str extra:str"
        ),
        "files": _schema("path:str size_bytes:int submission_id:str file_key:str file_name:str"),
        "instructions": _schema(
            "instruction_id:str type:str description:str options:str extra:str"
        ),
        "tasks": _schema(
            "task_id:str batch_id:str task_group_id:str datapoint:str metadata:str extra:str"
        ),
    }
    if kind != "batch":
        del schemas["tasks"]
    return schemas


def make_export(
    owner_id: str,
    n: int,
    *,
    start: int = 0,
    tag: str = "v1",
    day: Any = None,
    kind: str = "batch",
) -> dict[str, Any]:
    """Tables of one export: ``n`` responses ``r<start..start+n>`` (2 answers each).

    Response ``i`` is created at ``day + i minutes`` (default 2026-01-01 UTC); ``tag``
    lands in ``extra`` / ``value`` so tests can tell exports apart.
    """
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    schemas = sink_schemas(kind)
    base = day or datetime(2026, 1, 1, tzinfo=UTC)
    idx = list(range(start, start + n))
    rid = [f"r{i:05d}" for i in idx]
    sub = [f"s{owner_id}-{i // 2:05d}" for i in idx]
    tag_json = f'{{"tag":"{tag}"}}'
    cols = {
        "responses": {
            "response_id": rid,
            "created_at": [base + timedelta(minutes=i) for i in idx],
            "submission_id": sub,
            "participant_id": [f"p{i // 2}" for i in idx],
            "study_id": ["study1"] * n,
            "task_id": [f"t{i % 3}" for i in idx],
            "instruction_id": ["ins1"] * n,
            "type": ["multiple_choice"] * n,
            "n_answers": [2] * n,
            "extra": [tag_json] * n,
        },
        "answers": {
            "response_id": [r for r in rid for _ in range(2)],
            "answer_index": [j for _ in rid for j in range(2)],
            "submission_id": [s for s in sub for _ in range(2)],
            "participant_id": [f"p{i // 2}" for i in idx for _ in range(2)],
            "task_id": [f"t{i % 3}" for i in idx for _ in range(2)],
            "instruction_id": ["ins1"] * 2 * n,
            "type": ["multiple_choice"] * 2 * n,
            "value": [tag] * 2 * n,
            "value_type": ["string"] * 2 * n,
        },
        "submissions": {
            "submission_id": sorted(set(sub)),
            "participant_id": [f"p{s}" for s in sorted(set(sub))],
            f"{kind}_id": [owner_id] * len(set(sub)),
            "n_responses": [2] * len(set(sub)),
            "extra": [tag_json] * len(set(sub)),
        },
        "files": {"path": [], "size_bytes": []},
        "instructions": {"instruction_id": ["ins1"], "type": ["multiple_choice"]},
        "tasks": {"task_id": ["t0", "t1", "t2"], "batch_id": [owner_id] * 3},
    }
    tables = {}
    for name, schema in schemas.items():
        given = cols[name]
        rows = len(next(iter(given.values())))
        arrays = [pa.array(given.get(f.name, [None] * rows), type=f.type) for f in schema]
        tables[name] = pa.Table.from_arrays(arrays, schema=schema)
    return tables


@pytest.fixture(name="make_export")
def _make_export_fixture() -> Any:
    """:func:`make_export` as a fixture (tests import nothing from conftest)."""
    return make_export


@pytest.fixture(name="sink_schemas")
def _sink_schemas_fixture() -> Any:
    """:func:`sink_schemas` as a fixture."""
    return sink_schemas


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: Any) -> None:
    """No real token, API URL or user cache leaks into a test; polls are fast.

    Tests that need a token or URL set them explicitly (the emulator's).
    """
    for name in (
        "PROLIFIC_TOKEN",
        "PROLIFIC_API_URL",
        "PROLIFIC_CA_BUNDLE",
        "PROLIFIC_INGEST_PROGRESS",
        "PROLIFIC_CONNECT_TIMEOUT",
        "PROLIFIC_READ_TIMEOUT",
        "PROLIFIC_REQUEST_TIMEOUT",
        "PROLIFIC_WAIT_TIMEOUT",
        "PROLIFIC_STALL_TIMEOUT",
        "PROLIFIC_STALL_MIN_RATE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROLIFIC_INGEST_CACHE", str(tmp_path_factory.mktemp("user-cache")))
    monkeypatch.setenv("PROLIFIC_POLL_INTERVAL", "0.01")


@pytest.fixture
def conn(prolific_emulator: Any, tmp_path: Path) -> dict[str, Any]:
    """Keyword arguments that point a load at the emulator and a private cache."""
    return {
        "client": Settings.from_env(
            token=prolific_emulator.token, base_url=prolific_emulator.base_url
        ),
        "cache": str(tmp_path / "cache"),
        "progress": False,
    }


@pytest.fixture
def env(prolific_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The CLI pointed at the emulator (environment variables) and a private cache."""
    monkeypatch.setenv("PROLIFIC_TOKEN", prolific_emulator.token)
    monkeypatch.setenv("PROLIFIC_API_URL", prolific_emulator.base_url)
    monkeypatch.setenv("PROLIFIC_INGEST_CACHE", str(tmp_path / "cache"))
    return prolific_emulator


# --- the slow marker: `pytest -m "not slow"` is the fast loop ---------------------------------
#
# End-to-end tests that take seconds each (measured with --durations over the whole suite) are
# marked here, in one place: whole modules, then single tests, then every test on the moto S3
# server. The full suite (plain `pytest`, as in CI) still runs them all.

#: Modules whose every test is slow, and why.
SLOW_MODULES = {
    "test_notebooks": "executes the notebooks in a Jupyter kernel",
    "test_lake_crash": "SIGKILLs writer subprocesses at every step of a lake commit",
    "test_lake_concurrency": "several writer processes race on one lake",
    "test_lake_readers": "reads the lake with polars, duckdb and daft",
    "test_lake_changed_rows": "reloads changed rows and reads them with every engine",
    "test_parallel_parse": "parses on worker processes, one of them killed",
    "test_progress_tty": "drives the CLI in a subprocess on a pseudo-terminal",
    "test_full_disk": "downloads onto a real tmpfs mounted for the test",
    "test_slow_hosts": "waits out real stalls and drips of the emulator",
    "test_dlt": "runs dlt pipelines end to end",
}

#: Single slow tests by module: a function name (every parametrization) or one test id.
SLOW_TESTS = {
    "test_cache": {
        "test_commit_is_atomic_when_killed_before_the_manifest",  # kills a subprocess
        "test_one_download_across_processes",
    },
    "test_cli": {
        "test_console_script_is_installed_and_prints_version",  # subprocesses
        "test_emulator_command_prints_url_and_token_then_serves",
    },
    "test_echoed_secrets": {"test_an_echoed_token_never_reaches_the_cli_error_line[500]"},
    "test_faults": {"test_soak_random_faults_every_load_exact_or_typed"},
    "test_hostile_archives": {
        "test_a_bomb_split_into_small_members_is_refused_before_inflating",
        "test_a_load_of_deeply_nested_metadata_fails_the_cli_typed_and_caches_nothing",
    },
    "test_load": {"test_tls_download_host_with_the_emulator_ca"},
    "test_load_edge_cases": {
        "test_scheduled_loads_keep_working_at_the_export_job_cap",  # fill the 10-job cap
        "test_at_the_cap_jobs_not_in_the_cache_are_never_deleted",
    },
}


def _module_name(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    return str(getattr(module, "__name__", "")).rpartition(".")[2]


def _is_slow(item: pytest.Item) -> bool:
    name = _module_name(item)
    listed = SLOW_TESTS.get(name, set())
    if name in SLOW_MODULES or item.name in listed:
        return True
    if getattr(item, "originalname", item.name) in listed:
        return True
    callspec = getattr(item, "callspec", None)
    on_s3 = callspec is not None and callspec.params.get("sink_target") == "s3"
    # every test on the moto S3 server (its own requests are slow, and it starts once)
    return on_s3 or bool({"s3", "moto_server"} & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests ``slow`` (tests/test_suite_markers.py checks the lists above)."""
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
