"""Where an export's members are: its root folder and its uploaded files under ``files/``."""

from __future__ import annotations

from dataclasses import dataclass

from ._names import KNOWN_MEMBERS

__all__ = ["FileEntry", "file_entry", "find_root"]


@dataclass(frozen=True)
class FileEntry:
    """One uploaded file under ``files/``.

    ``path`` is the full member path (with the root folder, if any); the other fields come
    from ``files/<submission_id>/<file_key>/<file_name>`` (``None`` when the path is shorter).
    """

    path: str
    size_bytes: int
    submission_id: str | None
    file_key: str | None
    file_name: str


def file_entry(name: str, size_bytes: int, prefix: str) -> FileEntry:
    """The :class:`FileEntry` of member ``name``, which starts with ``prefix`` (``<root>files/``)."""
    parts = name[len(prefix) :].split("/")
    if len(parts) >= 3:
        return FileEntry(name, size_bytes, parts[0], parts[1], "/".join(parts[2:]))
    return FileEntry(name, size_bytes, None, None, parts[-1])


def find_root(names: list[str]) -> str:
    """The folder every member sits in (``"<folder>/"``), or ``""`` when they are at the top."""
    for name in names:
        if name in KNOWN_MEMBERS or name.startswith("files/"):
            return ""
    for name in names:
        head, sep, rest = name.partition("/")
        if sep and (rest in KNOWN_MEMBERS or rest.startswith("files/")):
            return head + "/"
    tops = {n.partition("/")[0] for n in names if "/" in n}
    if len(tops) == 1 and all("/" in n for n in names) and tops != {"files"}:
        return tops.pop() + "/"
    return ""
