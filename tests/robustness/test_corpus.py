"""Every bad input of the corpus fails through the real CLI in one line, with exit code 2.

The command runs in this process (typer's runner on ``agrimon.cli.app``, the entry point of
the ``agrimon`` script), its commands' error guard wrapped to note the error's class.
Each case must leave its output folder as it was and no stray temporary folder behind.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import agrimon.cli
import agrimon.cli_area
import agrimon.cli_deploy
import agrimon.cli_invasive
import agrimon.cli_yield
from agrimon import errors
from agrimon.cli import app

from .corpus import CASES, CLEANUP, UNUSUAL, Case, Unusual

runner = CliRunner()


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _temp_entries() -> set[str]:
    """What agrimon or a default ``tempfile`` name would leave in the temp folder.

    Libraries' own caches there (``matplotlib-…``) are not the run's and are left out.
    """
    return {
        p.name
        for p in Path(tempfile.gettempdir()).iterdir()
        if p.name.startswith(("agrimon", "tmp"))
    }


@pytest.fixture
def raised(monkeypatch: pytest.MonkeyPatch) -> list[errors.AgrimonError]:
    """The errors the CLI's guard turns into its one line, in order."""
    seen: list[errors.AgrimonError] = []
    original = agrimon.cli._guard

    def noting(action: Callable[[], Any]) -> Any:
        def run() -> Any:
            try:
                return action()
            except errors.AgrimonError as err:
                seen.append(err)
                raise

        return original(run)

    for module in (agrimon.cli, agrimon.cli_area, agrimon.cli_deploy, agrimon.cli_invasive):
        monkeypatch.setattr(module, "_guard", noting)
    monkeypatch.setattr(agrimon.cli_yield, "_guard", noting)
    return seen


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_fails_in_one_line_with_exit_2(
    case: Case, tmp_path: Path, raised: list[errors.AgrimonError]
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    try:
        _check(case, folder, raised)
    finally:
        if case.id in CLEANUP:
            CLEANUP[case.id](folder)


def _check(case: Case, folder: Path, raised: list[errors.AgrimonError]) -> None:
    args = case.build(folder)
    before, temp_before = _tree(folder), _temp_entries()
    result = runner.invoke(app, args)
    message = result.stderr.strip()
    assert result.exit_code == 2, (case.id, result.exit_code, message, result.exception)
    assert isinstance(result.exception, SystemExit), (case.id, result.exception)
    assert len(message.splitlines()) == 1, (case.id, message)
    assert message.startswith("error: "), (case.id, message)
    assert "Traceback" not in result.output, case.id
    assert case.fragment.lower() in message.lower(), (case.id, message)
    if case.error == "UsageError":  # refused by the parser, before any command runs
        assert not raised and "--help" in message, (case.id, raised)
    else:
        assert raised and isinstance(raised[-1], getattr(errors, case.error)), (case.id, raised)
    assert _tree(folder) == before, (case.id, _tree(folder) - before)
    assert _temp_entries() <= temp_before, (case.id, _temp_entries() - temp_before)


@pytest.mark.parametrize("case", UNUSUAL, ids=[c.id for c in UNUSUAL])
def test_an_unusual_but_valid_input_is_planned_not_refused(case: Unusual, tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    args = case.build(folder)
    before, temp_before = _tree(folder), _temp_entries()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (case.id, result.output, result.stderr, result.exception)
    text = result.stdout + result.stderr
    for pattern in case.expect:
        assert re.search(pattern, text), (case.id, pattern, text)
    assert "error:" not in text and "Traceback" not in text, case.id
    assert _tree(folder) == before and _temp_entries() <= temp_before, case.id


def test_the_corpus_covers_what_it_claims() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    for case in CASES:
        if case.error != "UsageError":
            assert issubclass(getattr(errors, case.error), errors.AgrimonError), case.id


#: The README table's row of each group of the corpus.
README_ROWS = {
    "AOI file": "| AOI files",
    "dates": "| dates",
    "options": "| options",
    "schedules": "| schedules files",
    "cache": "| the cache",
    "models and files": "| models and files",
}


def test_the_readme_table_counts_the_corpus() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| ")
    }
    for group, prefix in README_ROWS.items():
        (line,) = [v for k, v in rows.items() if v.startswith(prefix)]
        cells = [c.strip() for c in line.strip("|").split("|")]
        count = sum(1 for c in CASES if c.group == group)
        assert cells[1:] == [str(count), str(count), "0"], (group, cells[1:], count)
    assert set(README_ROWS) == {c.group for c in CASES}
    (line,) = [v for v in rows.values() if v.startswith("| unusual but valid AOI files")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:] == [str(len(UNUSUAL)), str(len(UNUSUAL)), "0"], cells
