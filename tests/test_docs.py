"""The documentation covers the code: env vars, CLI, public names, table columns.

Fast, static checks only (no mkdocs build: CI runs ``mkdocs build --strict`` separately).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import prolific_ingest
from prolific_ingest.cli import build_parser
from prolific_ingest.tables import TABLE_NAMES, schema_for

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "prolific_ingest"


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _all_docs() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))


def _subparsers() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)  # type: ignore[attr-defined]


def _env_vars_in_source() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        found.update(re.findall(r"\bPROLIFIC_[A-Z][A-Z0-9_]*\b", path.read_text(encoding="utf-8")))
    return found


def test_every_env_var_read_by_the_package_is_documented() -> None:
    env_vars = _env_vars_in_source()
    assert {"PROLIFIC_TOKEN", "PROLIFIC_API_URL", "PROLIFIC_INGEST_CACHE"} <= env_vars
    page = _read("environment.md")
    missing = sorted(v for v in env_vars if f"`{v}`" not in page)
    assert missing == [], f"docs/environment.md does not document {missing}"


def test_every_documented_env_var_exists() -> None:
    documented = set(re.findall(r"`(PROLIFIC_[A-Z][A-Z0-9_]*)`", _read("environment.md")))
    assert documented, "no PROLIFIC_* variable found in docs/environment.md"
    unknown = sorted(documented - _env_vars_in_source())
    assert unknown == [], f"docs/environment.md documents unknown variables {unknown}"


def test_every_cli_subcommand_has_a_section() -> None:
    page = _read("cli.md")
    names = set(_subparsers())
    assert {"batch", "read", "exports", "cache"} <= names
    missing = sorted(n for n in names if not re.search(rf"^## {re.escape(n)}$", page, re.MULTILINE))
    assert missing == [], f"docs/cli.md has no '## <name>' section for {missing}"


def test_every_cli_option_is_documented() -> None:
    page = _read("cli.md")
    missing = [
        f"{name} {option}"
        for name, sub in _subparsers().items()
        for action in sub._actions  # type: ignore[attr-defined]
        for option in action.option_strings
        if option.startswith("--") and option not in page
    ]
    assert missing == [], f"docs/cli.md does not mention {missing}"


def test_every_exit_code_is_documented() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (PACKAGE / "cli").glob("*.py"))
    codes = {int(c) for c in re.findall(r"errors\.\w+, (\d+),", source)}
    codes |= {int(c) for c in re.findall(r"return (\d+)\b", source)}
    codes |= {int(c) for c in re.findall(r"return 0 if report\.ok else (\d+)", source)}
    assert {0, 2, 3, 4, 5, 6, 7, 8, 130} <= codes
    table = _read("cli.md").split("## Exit codes", 1)[1]
    documented = {int(c) for c in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}
    assert codes <= documented, f"undocumented exit codes {sorted(codes - documented)}"


def test_api_reference_renders_the_public_modules() -> None:
    page = _read("api.md")
    directives = re.findall(r"^::: ([\w.]+)\s*$", page, re.MULTILINE)
    assert "prolific_ingest" in directives
    assert "prolific_ingest.testing" in directives


def test_every_public_name_appears_in_the_docs() -> None:
    text = _all_docs()
    from prolific_ingest import testing

    names = [*prolific_ingest.__all__, *testing.__all__]
    missing = sorted(n for n in names if not re.search(rf"\b{re.escape(n)}\b", text))
    assert missing == [], f"public names never mentioned in docs/: {missing}"


@pytest.mark.parametrize("kind", ["batch", "collection"])
def test_every_table_column_is_in_the_data_model(kind: str) -> None:
    page = _read("data-model.md")
    for table in TABLE_NAMES:
        if kind == "collection" and table == "tasks":
            continue
        section = re.search(rf"^## {table}\n(.*?)(?=^#{{1,3}} |\Z)", page, re.MULTILINE | re.DOTALL)
        assert section is not None, f"docs/data-model.md has no '## {table}' section"
        for field in schema_for(table, kind):
            assert f"`{field.name}`" in section.group(1), (
                f"column {table}.{field.name} is not documented in its section"
            )


def test_data_model_types_match_the_schemas() -> None:
    page = _read("data-model.md")
    names = {"string": "string", "int64": "int64", "double": "float64"}
    for table in TABLE_NAMES:
        section = re.search(rf"^## {table}\n(.*?)(?=^#{{1,3}} |\Z)", page, re.MULTILINE | re.DOTALL)
        assert section is not None
        rows = {
            m.group(1): m.group(2)
            for m in re.finditer(r"^\| `(\w+)`[^|]*\| ([^|]+?) \|", section.group(1), re.MULTILINE)
        }
        for field in schema_for(table, "batch"):
            if field.name not in rows:
                continue  # the owner column row names both kinds
            want = names.get(str(field.type), str(field.type))
            assert rows[field.name].startswith(want), (table, field.name, rows[field.name])


def test_changelog_is_included_in_the_site() -> None:
    assert (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").count("## 0.1.0") == 1
    assert '--8<-- "CHANGELOG.md"' in _read("changelog.md")


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    missing = [p for p in pages if f": {p}" not in config]
    assert missing == [], f"pages missing from the mkdocs nav: {missing}"


def _python_blocks() -> list[tuple[str, int, str]]:
    """Every fenced ```python block of README.md and docs/*.md: (file, first line, code)."""
    blocks = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        pattern = r"^([ \t]*)```python[^\n]*\n(.*?)^\1```"
        for match in re.finditer(pattern, text, re.MULTILINE | re.DOTALL):
            indent = len(match.group(1))
            code = "\n".join(line[indent:] for line in match.group(2).splitlines())
            line = text[: match.start()].count("\n") + 2
            blocks.append((path.relative_to(ROOT).as_posix(), line, code))
    return blocks


def test_every_python_block_in_the_docs_parses() -> None:
    import ast

    blocks = _python_blocks()
    assert len(blocks) > 20, "the fenced-block pattern no longer finds the docs' examples"
    broken = []
    for name, line, code in blocks:
        try:
            ast.parse(code)
        except SyntaxError as exc:
            broken.append(f"{name}:{line + (exc.lineno or 1) - 1}: {exc.msg}")
    assert broken == [], f"python blocks that do not parse: {broken}"


def test_every_usage_block_in_the_cli_page_has_exactly_the_parser_options() -> None:
    page = _read("cli.md")
    blocks = re.findall(r"```text\n(usage: prolific-ingest (\w+) .*?)```", page, re.DOTALL)
    subparsers = _subparsers()
    assert sorted(name for _, name in blocks) == sorted(subparsers)
    for block, name in blocks:
        parser_options = {
            option
            for action in subparsers[name]._actions  # type: ignore[attr-defined]
            for option in action.option_strings
            if option.startswith("--")
        }
        shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", block))
        assert shown == parser_options, (name, shown ^ parser_options)
