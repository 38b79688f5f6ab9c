"""Shared fixtures: paths to the real data and one small demo run reused by many tests."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from agrimon import monitor as stages
from agrimon.config import RunSpec, make_spec
from agrimon.plan import RunPlan

#: Real Earth-observation data laid beside the project (see its README); never copied here.
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"

#: The small demo run: the shipped AOI, one quarter, 512 px tiles (so the mosaic has seams).
DEMO_START, DEMO_END = date(2024, 1, 1), date(2024, 3, 31)


def real_path(*parts: str) -> Path:
    """Path under the real data folder, skipping the test when it is missing."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is missing: lay shared/data/real beside the project")
    return path


def demo_spec(out: Path) -> RunSpec:
    """Run spec of the small demo run writing under ``out``."""
    return make_spec(out=out, start=DEMO_START, end=DEMO_END, tile_px=512, chunk_px=256)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunPlan, Path]:
    """Plan and product folder of the small demo run, made once with the library stages."""
    spec = demo_spec(tmp_path_factory.mktemp("demo-run"))
    plan = stages.make_plan(spec)
    return plan, stages.run_monitor(spec)
