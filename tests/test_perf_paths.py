"""The fast paths of issue #5 give exactly the results of their straightforward definitions.

- ``to_pandas`` expands JSON columns from their distinct texts (orjson) instead of row by
  row (stdlib ``json``): compared with the row-by-row reference on awkward inputs.
- The parsed-table cache and the Parquet sink keep row groups few and large.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from prolific_ingest.tables._arrow import dumps
from prolific_ingest.tables._pandas import to_pandas
from prolific_ingest.tables._schema import schema_for

# -- the row-by-row definition of the expansion (the implementation before issue #5) ----------


def _ref_flatten(obj: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            _ref_flatten(value, name + ".", out)
        else:
            out[name] = value


def _ref_column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else dumps(v) for v in values], type=pa.string())


def _ref_expand(table: pa.Table, column: str, prefix: str) -> dict[str, pa.Array]:
    rows: list[dict[str, Any]] = []
    for text in table.column(column).to_pylist():
        flat: dict[str, Any] = {}
        if text is not None:
            obj = json.loads(text)
            if isinstance(obj, dict):
                _ref_flatten(obj, prefix, flat)
        rows.append(flat)
    keys: dict[str, None] = {}
    for flat in rows:
        keys.update(dict.fromkeys(flat))
    return {key: _ref_column([flat.get(key) for flat in rows]) for key in keys}


_REF_EXPANDED = {
    "submissions": {"extra": ""},
    "tasks": {"datapoint": "datapoint.", "metadata": "metadata.", "extra": ""},
}


def reference_to_pandas(name: str, table: pa.Table) -> pd.DataFrame:
    for column, prefix in _REF_EXPANDED.get(name, {}).items():
        for key, array in _ref_expand(table, column, prefix).items():
            label = key if key not in table.column_names else f"{column}.{key}"
            if label in table.column_names:
                continue
            table = table.append_column(label, array)
    frame: pd.DataFrame = table.to_pandas(types_mapper=pd.ArrowDtype)
    return frame


def _tasks(datapoints: list[str | None], extras: list[str | None] | None = None) -> pa.Table:
    n = len(datapoints)
    columns = {
        "task_id": [f"t{i}" for i in range(n)],
        "batch_id": ["b"] * n,
        "task_group_id": [None] * n,
        "datapoint": datapoints,
        "metadata": list(reversed(datapoints)),
        "extra": extras if extras is not None else [None] * n,
    }
    return pa.Table.from_pydict(columns, schema=schema_for("tasks", "batch"))


def assert_same_frames(name: str, table: pa.Table) -> pd.DataFrame:
    expected = reference_to_pandas(name, table)
    got = to_pandas(name, table)
    assert list(got.columns) == list(expected.columns)
    assert list(got.dtypes) == list(expected.dtypes)
    pd.testing.assert_frame_equal(got, expected)  # NaN == NaN here, unlike DataFrame.equals
    return got


AWKWARD = [
    '{"text":"héllo","n":2,"score":2.5}',
    '{"text":"héllo","n":2,"score":2.5}',  # repeated text
    None,
    '{"n":3,"extra_key":"late key keeps its place"}',
    '{"nested":{"a":1,"b":{"c":[1,2]}},"empty":{},"n":null}',
    '{"big":123456789012345678901234567890,"n":1}',  # beyond 64 bits: stdlib semantics
    '{"nan":NaN,"inf":Infinity,"huge":1e400}',  # orjson refuses these: stdlib decides
    '{"mixed":"a"}',
    '{"mixed":1}',  # mixed JSON types under one key: JSON text
    '{"mixed":true,"score":4}',
    "[1,2,3]",  # not an object: no keys
    '"just text"',
    '{"text":"dup","text":"last wins"}',
    '{"u64":18446744073709551615}',
    '{"f":0.1,"g":1e-7,"h":-0.0}',
    '{"list":[{"a":1},{"b":"x"}],"list2":[]}',
]


def test_expansion_matches_the_row_by_row_definition() -> None:
    got = assert_same_frames("tasks", _tasks(AWKWARD, extras=list(reversed(AWKWARD))))
    assert got.loc[0, "datapoint.text"] == "héllo"
    assert got.loc[5, "datapoint.big"] == str(123456789012345678901234567890)
    assert "datapoint.nested.b.c" in got.columns


@pytest.mark.parametrize(
    "texts",
    [
        [],
        [None, None],
        ['{"a":1}'] * 5,
        ['{"a":1}', '{"b":2}', '{"a":"x"}', None, '{"b":2}'],
        ['{"a":null}', '{"a":null}'],  # only nulls under a key
        ['{"x":{}}', None, '{"x":{}}'],
        ['{"task_id":"clash","extra":"clash too"}'],
    ],
)
def test_expansion_edge_cases(texts: list[str | None]) -> None:
    assert_same_frames("tasks", _tasks(texts, extras=texts))
    subs = pa.Table.from_pydict(
        {
            "submission_id": [f"s{i}" for i in range(len(texts))],
            "participant_id": ["p"] * len(texts),
            "study_id": [None] * len(texts),
            "batch_id": ["b"] * len(texts),
            "n_responses": [0] * len(texts),
            "extra": texts,
        },
        schema=schema_for("submissions", "batch"),
    )
    assert_same_frames("submissions", subs)


def test_expansion_of_a_chunked_column() -> None:
    table = _tasks(AWKWARD)
    chunked = pa.concat_tables([table.slice(0, 5), table.slice(5)])
    assert chunked.column("datapoint").num_chunks == 2
    got = assert_same_frames("tasks", chunked)
    pd.testing.assert_frame_equal(got, to_pandas("tasks", table))


# -- row groups: memory-bounded buffering, and never a swarm of tiny row groups ---------------


def _batch(start: int, n: int, width: int = 100) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"i": list(range(start, start + n)), "s": ["x" * width] * n},
        schema=pa.schema([("i", pa.int64()), ("s", pa.string())]),
    )


def test_writers_sharing_a_budget_stay_within_it_and_keep_every_row() -> None:
    import io

    from prolific_ingest._parquet import BufferBudget, RowGroupWriter

    limit = 200_000
    budget = BufferBudget(limit)
    sinks = [io.BytesIO() for _ in range(3)]
    schema = _batch(0, 1).schema
    writers = [RowGroupWriter(fh, schema, 10_000, budget) for fh in sinks]
    for fh in sinks:
        fh.close = lambda: None  # type: ignore[method-assign]  # read back below
    one = _batch(0, 100).nbytes
    for step in range(60):
        writers[step % 3].write(_batch(step * 100, 100))
        assert budget.pending() <= limit
    assert budget.pending() > 0
    for writer in writers:
        writer.close()
    assert budget.writers == []
    import pyarrow.parquet as pq

    for k, fh in enumerate(sinks):
        meta = pq.ParquetFile(io.BytesIO(fh.getvalue())).metadata
        read = pq.read_table(io.BytesIO(fh.getvalue()))
        assert read.column("i").to_pylist() == [
            i for step in range(k, 60, 3) for i in range(step * 100, step * 100 + 100)
        ]
        # flushed only when over budget, biggest first: row groups of about limit / 3
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        assert all(size * one // 100 >= limit // 4 for size in sizes[:-1])
        assert meta.num_row_groups <= 3


def test_the_parsed_table_cache_gathers_small_batches_into_few_record_batches(
    tmp_path: Any,
) -> None:
    import types
    import zipfile

    from pyarrow import ipc

    from prolific_ingest.archive import open_archive
    from prolific_ingest.cache._tables import TableCache
    from prolific_ingest.tables import build_tables, iter_record_batches

    lines = [
        {
            "submission_id": f"s{i}",
            "tasks": [
                {"task_id": f"t{i}", "responses": [{"id": f"r{i}", "answer": [{"value": i}]}]}
            ],
        }
        for i in range(3000)
    ]
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("responses-by-submission.jsonl", "\n".join(map(json.dumps, lines)))
    entry: Any = types.SimpleNamespace(
        path=str(tmp_path / "entry"),
        export_id="e",
        manifest={"sha256": "abc"},
        ref=types.SimpleNamespace(kind="batch"),
    )
    store = TableCache(entry, None)
    counts: dict[str, int] = {}
    with open_archive(path) as archive:
        stream = list(store.tee(iter_record_batches(archive, batch_rows=7), counts))
    assert sum(1 for name, _ in stream if name == "answers") > 400  # many tiny batches
    assert store.commit(counts, {})
    info = store.info()
    assert info is not None
    system = pa.system_memory_pool()
    before = system.bytes_allocated()
    cached = store.read(info)
    assert cached is not None
    # read with the system allocator (mimalloc would keep the decoding garbage)
    answers = cached["answers"]
    assert system.bytes_allocated() - before >= answers.get_total_buffer_size()
    with open_archive(path) as archive:
        direct = build_tables(archive)
    for name, table in direct.tables.items():
        assert cached[name].equals(table)
        with pa.OSFile(f"{entry.path}/tables/{name}.arrow", "rb") as fh:
            reader = ipc.open_file(fh)
            sizes = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        assert sizes == ([table.num_rows] if table.num_rows else []), (name, sizes)
