"""The ``slow`` marker: the lists in conftest name real modules and tests, and mark them.

``pytest -m "not slow"`` is the fast loop of the README's Development section; a module or
test renamed without its entry would silently move back into it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import SLOW_MODULES, SLOW_TESTS

TESTS = Path(__file__).parent


def test_every_slow_module_exists() -> None:
    missing = [name for name in SLOW_MODULES if not (TESTS / f"{name}.py").is_file()]
    assert missing == []


@pytest.mark.parametrize("module", sorted(SLOW_TESTS))
def test_every_listed_slow_test_exists(module: str) -> None:
    mod = importlib.import_module(f"tests.{module}")
    missing = [t for t in sorted(SLOW_TESTS[module]) if not hasattr(mod, t.partition("[")[0])]
    assert missing == []
    assert module not in SLOW_MODULES  # listed once


def test_the_marker_is_registered(pytestconfig: pytest.Config) -> None:
    markers = pytestconfig.getini("markers")
    assert any(line.startswith("slow:") for line in markers)


def test_this_module_is_in_the_fast_loop(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("slow") is None


class _Item:
    """What the marking rule reads of a collected test."""

    def __init__(self, module: str, name: str, fixtures: tuple[str, ...] = (), **params: str):
        self.module = SimpleNamespace(__name__=f"tests.{module}")
        self.name = name
        self.originalname = name.partition("[")[0]
        self.fixturenames = ["tmp_path", *fixtures]
        self.callspec = SimpleNamespace(params=params) if params else None


@pytest.mark.parametrize(
    ("item", "slow"),
    [
        (_Item("test_notebooks", "test_notebook_runs_without_errors[01-quickstart]"), True),
        (_Item("test_faults", "test_soak_random_faults_every_load_exact_or_typed"), True),
        (_Item("test_faults", "test_dropped_download_resumes_with_range"), False),
        (
            _Item(
                "test_echoed_secrets", "test_an_echoed_token_never_reaches_the_cli_error_line[500]"
            ),
            True,
        ),
        (
            _Item(
                "test_echoed_secrets", "test_an_echoed_token_never_reaches_the_cli_error_line[401]"
            ),
            False,
        ),
        (_Item("test_cache", "test_s3_root", ("s3", "moto_server")), True),
        (_Item("test_lake_writes", "test_x[s3]", ("sink_target",), sink_target="s3"), True),
        (_Item("test_lake_writes", "test_x[local]", ("sink_target",), sink_target="local"), False),
        (_Item("test_client", "test_headers_timeout_and_path"), False),
    ],
    ids=lambda v: v.name if isinstance(v, _Item) else str(v),
)
def test_the_rule_marks_modules_listed_tests_and_s3(item: _Item, slow: bool) -> None:
    from tests.conftest import _is_slow

    assert _is_slow(item) is slow  # type: ignore[arg-type]  # a stand-in, not a pytest.Item
