"""The README's snippets work as written: each Python block runs verbatim, the plan matches."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from agrimon.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_the_python_blocks_this_file_checks() -> None:
    assert len(PYTHON_BLOCKS) == 2


def _run_block(
    code: str, where: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], str]:
    """Run a README block as a user would, from a folder holding the shipped ``aoi/``."""
    (where / "aoi").symlink_to(ROOT / "aoi")
    monkeypatch.chdir(where)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)
    return namespace, printed.getvalue()


def test_the_demo_truth_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = next(b for b in PYTHON_BLOCKS if "woody_truth" in b)
    namespace, printed = _run_block(block, tmp_path, monkeypatch)
    woody, fields, seasons = namespace["woody"], namespace["fields"], namespace["seasons"]
    assert int(woody.sum()) > 0
    assert len(seasons) == 7 * len(fields) > 0
    assert printed.strip() == (
        f"{int(woody.sum())} woody pixels, {len(fields)} fields, {len(seasons)} field-seasons"
    )


@pytest.mark.slow
def test_the_python_api_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = next(b for b in PYTHON_BLOCKS if "make_spec" in b)
    namespace, printed = _run_block(block, tmp_path, monkeypatch)
    folder = Path(str(namespace["folder"]))
    assert folder == Path("outputs/grootfontein/2024-01-01_2024-01-31")
    assert printed.strip().splitlines()[-1] == str(folder)
    assert not (tmp_path / folder.parent / f".{folder.name}.work").exists()  # removed
    assert "dask.array" in printed  # the lazy layer, printed before anything computed
    with rasterio.open(tmp_path / folder / "ndvi_median.tif") as src:
        ndvi = src.read(1)
        assert src.crs.to_epsg() == 32734
    inside = np.isfinite(ndvi)
    assert inside.mean() > 0.5
    assert float(np.nanmin(ndvi)) >= -1.0 and float(np.nanmax(ndvi)) <= 1.0
    assert 0.1 < float(np.nanmedian(ndvi)) < 0.8  # green savanna in the rains


def test_the_plan_shown_in_the_readme_is_what_plan_prints() -> None:
    shown = re.search(r"```\n\$ agrimon plan\n(.*?)\n\.\.\.\n```", README, flags=re.S)
    assert shown is not None
    result = CliRunner().invoke(app, ["plan"])
    assert result.exit_code == 0, result.output
    printed = [" ".join(line.split()) for line in result.stdout.splitlines()]
    for line in shown.group(1).splitlines():
        expected = " ".join(line.split())
        if expected.startswith("AOI"):  # the README shortens the path
            expected = expected.replace(".../", str(ROOT / "src" / "agrimon" / "data") + "/")
            assert any(p.endswith(expected.split("/")[-1]) for p in printed), line
            continue
        assert expected in printed, line
