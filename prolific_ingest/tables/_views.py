"""Derived, notebook-friendly views of the tables (pure pandas, no I/O).

- :func:`option_labels`: ``(instruction_id, value) -> label`` from ``batch.json`` options.
- :func:`with_labels`: the ``answers`` table plus a ``value_label`` column.
- :func:`wide`: one row per submission x task, one column per instruction.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..archive._metadata import has_lone_surrogate
from ._arrow import dumps

__all__ = ["option_labels", "wide", "with_labels"]

_STRING = pd.ArrowDtype(pa.string())


def _value_text(value: Any) -> str:
    # Same text as answers.value: strings verbatim, anything else as the compact JSON text
    # of the tables (objects and arrays included: json.dumps' default separators differ).
    return value if isinstance(value, str) else dumps(value)


def option_labels(instructions: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Map ``(instruction_id, value text)`` to the option's label, for instructions with options."""
    labels: dict[tuple[str, str], str] = {}
    for instruction_id, options in zip(
        instructions["instruction_id"], instructions["options"], strict=True
    ):
        if options is None or options is pd.NA or instruction_id is None:
            continue
        try:
            parsed = json.loads(options)
        except (TypeError, ValueError):
            continue
        for option in parsed if isinstance(parsed, list) else ():
            if isinstance(option, dict) and "value" in option and option.get("label") is not None:
                label, value = str(option["label"]), _value_text(option["value"])
                if has_lone_surrogate(label + value):  # not Unicode text: no label
                    continue  # (the options column keeps it, escaped)
                labels[(str(instruction_id), value)] = label
    return labels


def _strings(series: pd.Series) -> pa.Array | pa.ChunkedArray:
    """The column as Arrow strings: ``str()`` of every non-null value (zero copy if already)."""
    if isinstance(series.dtype, pd.ArrowDtype) and pa.types.is_string(series.dtype.pyarrow_dtype):
        arrow: pa.Array | pa.ChunkedArray = pa.array(series)
        return arrow
    texts = [None if v is None or v is pd.NA else str(v) for v in series]
    return pa.array(texts, type=pa.string())


def with_labels(answers: pd.DataFrame, instructions: pd.DataFrame) -> pd.DataFrame:
    """Return ``answers`` with a ``value_label`` column (the option label, else null)."""
    by_instruction: dict[str, dict[str, str]] = {}
    for (instruction_id, value), label in option_labels(instructions).items():
        by_instruction.setdefault(instruction_id, {})[value] = label
    out = answers.copy()
    ids = _strings(out["instruction_id"])
    values = _strings(out["value"])
    result: pa.ChunkedArray | pa.Array = pa.nulls(len(out), type=pa.string())
    for instruction_id, options in by_instruction.items():
        rows = pc.fill_null(pc.equal(ids, instruction_id), False)
        if not pc.any(rows).as_py():
            continue
        found = pc.take(
            pa.array(list(options.values()), type=pa.string()),
            pc.index_in(values, value_set=pa.array(list(options), type=pa.string())),
        )
        result = pc.if_else(rows, found, result)
    out["value_label"] = pd.Series(pd.arrays.ArrowExtensionArray(result), index=out.index)
    return out


def _column_names(instructions: pd.DataFrame, used: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    taken: set[str] = set()
    described = dict(zip(instructions["instruction_id"], instructions["description"], strict=True))
    for instruction_id in used:
        base = described.get(instruction_id)
        name = str(base).strip() if isinstance(base, str) and base.strip() else str(instruction_id)
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name} ({n})", n + 1
        taken.add(candidate)
        names[instruction_id] = candidate
    return names


def _join_items(items: pd.Series) -> str | None:
    return "; ".join(str(v) for v in items if v is not None) or None


def wide(tables: dict[str, pd.DataFrame], *, kind: str, labels: bool = True) -> pd.DataFrame:
    """One row per submission x task (x submission for collections), one column per instruction.

    Each cell shows the option label (with ``labels``), else the value, else the uploaded
    file's name. Multi-item answers (several selected options, several files) are joined
    with ``"; "`` in ``answer_index`` order. Instructions are ordered as in ``batch.json``.
    """
    answers = tables["answers"]
    instructions = tables["instructions"]
    keys = ["submission_id", "participant_id"] + (["task_id"] if kind == "batch" else [])
    shown = answers["value"]
    if labels:
        answers = with_labels(answers, instructions)
        shown = answers["value_label"].fillna(shown)
    shown = shown.fillna(answers["file_name"])  # uploads: the file's name
    frame = answers[[*keys, "instruction_id", "answer_index"]].copy()
    frame["shown"] = shown.astype(object).where(shown.notna(), None)
    frame = frame.sort_values([*keys, "instruction_id", "answer_index"], kind="stable")
    joined = (
        frame.dropna(subset=["instruction_id"])
        .groupby([*keys, "instruction_id"], dropna=False, sort=False)["shown"]
        .agg(_join_items)
    )
    table = (
        joined.unstack("instruction_id")
        if len(joined)
        else pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=keys))
    )
    order = [i for i in instructions["instruction_id"] if i in table.columns]
    order += [i for i in table.columns if i not in order]
    table = table[order]
    table.columns = [_column_names(instructions, order)[i] for i in order]
    out = table.reset_index()
    for column in out.columns[len(keys) :]:
        out[column] = out[column].astype(_STRING)
    return out
