"""Deterministic content for generated exports: texts, instruction definitions, answers.

Everything here is a pure function of a :class:`random.Random` (or of a string seed), so
the generator can re-create any response, task or uploaded file on demand instead of
holding it in memory.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

__all__ = [
    "INSTRUCTION_TYPES",
    "KNOWN_INSTRUCTION_TYPES",
    "UNKNOWN_INSTRUCTION_TYPE",
    "answer_items",
    "file_bytes",
    "instruction_definition",
    "iso",
    "rng_for",
    "text",
    "uuid_from",
]

UNKNOWN_INSTRUCTION_TYPE = "likert_slider_v9"
"""An instruction type that no client knows (its answer keys are unknown too)."""

KNOWN_INSTRUCTION_TYPES = (
    "free_text",
    "free_text_with_unit",
    "multiple_choice",
    "multiple_choice_with_free_text",
    "file_upload",
)
"""The types listed in Prolific's OpenAPI enum for responses."""

INSTRUCTION_TYPES = (*KNOWN_INSTRUCTION_TYPES, "video_narration", UNKNOWN_INSTRUCTION_TYPE)
"""Every instruction type the generator can produce (documented, undocumented, unknown)."""

# Text fragments covering the awkward corners of Unicode and of JSON escaping.
_TEXTS = (
    "The model's answer is correct.",
    'She said "no" and left \\ twice',
    "Line one\nLine two\r\nLine three\ttabbed",
    "Emoji: 😀👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈",
    "中文内容：模型的回答很好。",  # noqa: RUF001
    "日本語のテキストです。",
    "한국어 응답입니다",
    "שלום עולם — עברית מימין לשמאל",
    "مرحبا بالعالم، هذا نص عربي",
    "Combining: e\u0301 a\u0308 n\u0303 (decomposed)",
    "Zero\u200bwidth\u200djoiner and\u00a0nbsp",
    "Separators: \u2028 line sep, \u2029 para sep, \x85 NEL inside one string",
    "Ünïcödé naïve café résumé",
    "Math: ∑ x² ≤ ∞, π ≈ 3.14159",
    "Control \x00 nul \x1f unit-sep \x7f del",
    '{"looks": "like json"}',
    "  leading and trailing spaces  ",
    "",
)
_WORDS = ("alpha", "beta", "γάμμα", "дельта", "εψιλον", "ζ", "eta", "θ", "ιώτα", "kappa", "λ", "mu")

_UNITS = (("Kilograms", "kg"), ("Pounds", "lb"), ("Degrees Celsius", "°C"), ("Euro", "€"))
_MC_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("Positive 😀", "positive"),
    ("Neutral", 0),
    ("Negative", -1),
    ("Not sure", False),
    ("Strongly agree", True),
    ("Two and a half", 2.5),
    ("Другое", "другое"),
)
_FILE_NAMES = (
    ("photo 1.png", "image/png"),
    ("résumé final.pdf", "application/pdf"),
    ("写真.jpeg", "image/jpeg"),
    ("notes (v2).txt", "text/plain"),
    ("scan.heic", "image/heic"),
)


def rng_for(*parts: object) -> random.Random:
    """Return a :class:`random.Random` seeded deterministically from ``parts``."""
    return random.Random(":".join(str(p) for p in parts))


def uuid_from(rng: random.Random) -> str:
    """Return a version-4 UUID string drawn from ``rng``."""
    n = rng.getrandbits(128)
    n = (n & ~(0xF000 << 64) | (4 << 76)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def hex_id(rng: random.Random) -> str:
    """Return a Prolific-style 24-hex-digit object id drawn from ``rng``."""
    return f"{rng.getrandbits(96):024x}"


def iso(moment: datetime) -> str:
    """Format an aware UTC datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    m = moment
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond:06d}Z"
    )


def text(rng: random.Random) -> str:
    """Return a Unicode-rich string (sometimes a fixed tricky fragment, sometimes words)."""
    if rng.random() < 0.6:
        return rng.choice(_TEXTS)
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 8)))


def _mixed_value(rng: random.Random) -> Any:
    """A free-text ``value``: mostly strings, sometimes numbers or booleans."""
    roll = rng.random()
    if roll < 0.7:
        return text(rng)
    if roll < 0.8:
        return rng.randint(-5, 1000)
    if roll < 0.9:
        return rng.randint(1, 9999) / 4
    return rng.random() < 0.5


def instruction_definition(
    kind: str,
    itype: str,
    instruction_id: str,
    *,
    owner_id: str,
    created_at: str,
    created_by: str,
    index: int,
) -> dict[str, Any]:
    """Return the definition of one instruction as written in ``batch.json``/``collection.json``.

    Follows Prolific's ``AITaskBuilderInstruction`` schema for the known types; the
    undocumented and unknown types get plausible keys of their own.
    """
    base: dict[str, Any] = {
        "id": instruction_id,
        "type": itype,
        "description": f"Question {index + 1} ({itype}): {_TEXTS[index % 8]}",
        "created_at": created_at,
        "parent_id": owner_id,
        "parent_type": kind,
        "created_by": created_by,
    }
    if kind == "collection":
        base["order"] = index
    if itype == "multiple_choice":
        base["answer_limit"] = 2
        base["options"] = [{"label": label, "value": value} for label, value in _MC_OPTIONS]
    elif itype == "multiple_choice_with_free_text":
        base["answer_limit"] = 1
        base["options"] = [
            {"label": label, "value": value, "heading": "Group A" if i < 3 else "Group B"}
            for i, (label, value) in enumerate(_MC_OPTIONS)
        ]
    elif itype == "free_text_with_unit":
        base["unit_options"] = [{"label": label, "value": value} for label, value in _UNITS]
        base["unit_position"] = "suffix"
        base["default_unit"] = "kg"
    elif itype == "free_text":
        base["helper_text"] = "Answer in your own words ✍️"
        base["validation"] = {"type": "string", "min": 0, "max": None}
    elif itype == "file_upload":
        base["accepted_file_types"] = [".png", ".pdf", ".jpeg", ".txt", ".heic"]
        base["max_file_size_mb"] = 25
        base["min_file_count"] = 1
        base["max_file_count"] = 2
    elif itype == "video_narration":
        base["max_duration_seconds"] = 120
    else:
        base["scale"] = {"min": 0, "max": 1, "anchors": ["never", "always"]}
    return base


def answer_items(
    itype: str, rng: random.Random, file_seed: str, *, unknown_keys: bool, cover: int = -1
) -> list[dict[str, Any]]:
    """Return the ``answer`` array of one response of type ``itype``.

    ``cover`` (when in range) picks the tricky text fragment of that number for a
    ``free_text`` value, so that small archives still contain every fragment.
    Upload items carry ``_size`` (the byte count of the file) for the caller, which
    removes it before writing; file contents come from :func:`file_bytes`.
    """
    items: list[dict[str, Any]]
    value: Any
    if itype == "free_text":
        value = _TEXTS[cover] if 0 <= cover < len(_TEXTS) else _mixed_value(rng)
        items = [{"value": value}]
    elif itype == "free_text_with_unit":
        number = rng.randint(1, 4000) / 4
        items = [{"value": str(number) if rng.random() < 0.5 else number}]
        items[0]["unit"] = rng.choice(_UNITS)[1]
    elif itype == "multiple_choice":
        chosen = rng.sample(range(len(_MC_OPTIONS)), rng.randint(1, 2))
        items = [{"value": _MC_OPTIONS[i][1]} for i in chosen]
    elif itype == "multiple_choice_with_free_text":
        items = [{"value": rng.choice(_MC_OPTIONS)[1], "explanation": text(rng)}]
    elif itype in ("file_upload", "video_narration"):
        items = []
        for n in range(1 if itype == "video_narration" else rng.randint(1, 2)):
            name, ctype = (
                ("narration.webm", "video/webm")
                if itype == "video_narration"
                else rng.choice(_FILE_NAMES)
            )
            size = rng.randint(16, 3000)
            item: dict[str, Any] = {
                "file_key": f"{file_seed}-{n}",
                "file_name": name,
                "file_size_mb": round(size / 1048576, 6),
                "content_type": ctype,
                "_size": size,
            }
            if itype == "video_narration":
                item["duration_seconds"] = rng.randint(10, 1200) / 10
                item["transcript"] = text(rng)
            items.append(item)
    else:
        items = [
            {
                "score": rng.randint(0, 100) / 100,
                "rationale": text(rng),
                "anchors": {"low": "never", "high": "always"},
            }
        ]
    if unknown_keys:
        for item in items:
            if rng.random() < 0.2:
                item["confidence"] = rng.randint(0, 10) / 10
    return items


def file_bytes(file_key: str, size: int) -> bytes:
    """Return the deterministic content of an uploaded file."""
    return rng_for("file", file_key).randbytes(size)
