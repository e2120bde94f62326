"""``batch.json`` / ``collection.json`` objects and the archive's ``README.md``."""

from __future__ import annotations

from typing import Any

from . import _content as c
from ._records import Plan

__all__ = ["instruction_defs", "owner_object", "readme"]

_CREATED_AT = "2026-10-30T09:15:00.000000Z"
_TASK_DETAILS = {
    "task_name": "Rate the answers — 评估回答",
    "task_introduction": "<p>Read each text and answer the questions.</p>",
    "task_steps": "<ol><li>Read</li><li>Answer</li></ol>",
}


def _people(plan: Plan) -> tuple[str, str]:
    rng = c.rng_for(plan.seed, plan.owner_id, "people")
    return c.hex_id(rng), c.hex_id(rng)


def instruction_defs(plan: Plan) -> list[dict[str, Any]]:
    """The instruction definitions of the plan, in instruction order."""
    created_by, _ = _people(plan)
    return [
        c.instruction_definition(
            plan.kind,
            itype,
            instruction_id,
            owner_id=plan.owner_id,
            created_at=_CREATED_AT,
            created_by=created_by,
            index=i,
        )
        for i, (instruction_id, itype) in enumerate(plan.instructions)
    ]


def owner_object(plan: Plan, *, n_groups: int, with_instructions: bool = True) -> dict[str, Any]:
    """The batch (``AITaskBuilderBatch``) or collection (``Collection``) object."""
    created_by, workspace_id = _people(plan)
    defs = instruction_defs(plan)
    rng = c.rng_for(plan.seed, plan.owner_id, "owner")
    obj: dict[str, Any]
    if plan.kind == "batch":
        n_tasks = n_groups * plan.tasks_per_submission
        obj = {
            "id": plan.owner_id,
            "name": f"Emulated batch {plan.seed} — données 🧪",
            "status": "READY",
            "workspace_id": workspace_id,
            "created_at": _CREATED_AT,
            "created_by": created_by,
            "schema_version": 1,
            "task_details": dict(_TASK_DETAILS),
            "total_task_count": n_tasks,
            "total_instruction_count": len(defs),
            "total_task_groups": n_groups,
            "datasets": [
                {
                    "id": c.uuid_from(rng),
                    "total_datapoint_count": n_tasks,
                    "filename": "datapoints.csv",
                }
            ],
        }
    else:
        known = [d for d in defs if d["type"] in c.KNOWN_INSTRUCTION_TYPES]
        obj = {
            "id": plan.owner_id,
            "schema_version": "1",
            "created_at": _CREATED_AT,
            "created_by": created_by,
            "workspace_id": workspace_id,
            "name": f"Emulated collection {plan.seed} 🧪",
            "task_details": dict(_TASK_DETAILS),
            "collection_items": [
                {
                    "id": c.uuid_from(rng),
                    "created_at": _CREATED_AT,
                    "created_by": created_by,
                    "schema_version": "1",
                    "page_items": [{**d, "parent_type": "collection"} for d in known],
                }
            ],
        }
    if with_instructions:
        obj["instructions"] = defs
    return obj


def readme(kind: str) -> str:
    """The short guide Prolific puts in every export."""
    primary = "responses-by-submission.jsonl" if kind == "batch" else "responses.jsonl"
    return (
        f"# Prolific AI Task Builder {kind} export\n\n"
        f"- `{primary}`: one JSON object per line, one submission each.\n"
        + (
            "- `responses-by-task.jsonl`: one JSON object per line, one task each.\n"
            if kind == "batch"
            else ""
        )
        + f"- `{kind}.json`: {kind} metadata and instruction definitions.\n"
        "- `files/`: participant uploads, `files/<submission_id>/<file_key>/<file_name>`.\n\n"
        "```python\nimport pandas as pd\n\n"
        f'df = pd.read_json("{primary}", lines=True)\n```\n'
    )
