"""The monitor flow as a real Prefect flow run, checked against the library run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from flows.monitor import monitor
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.testing.utilities import prefect_test_harness

from agrimon.plan import RunPlan

from .conftest import demo_spec
from .test_products import hand_composites


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    """A temporary Prefect server and database for this module's flow runs."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_monitor_flow_run_writes_the_same_products(
    harness: None, demo_run: tuple[RunPlan, Path], tmp_path: Path
) -> None:
    plan, library_folder = demo_run
    spec = demo_spec(tmp_path)
    state = monitor(spec, return_state=True)
    assert state.is_completed()
    folder = state.result()
    assert folder == tmp_path / "grootfontein" / spec.period
    # Pixels equal a plain-numpy computation from the demo bands...
    med, count = hand_composites(plan, folder / "ndvi_median.tif")
    with rasterio.open(folder / "ndvi_median.tif") as src:
        np.testing.assert_allclose(src.read(1), med, atol=1e-6, equal_nan=True)
    with rasterio.open(folder / "clear_count.tif") as src:
        np.testing.assert_array_equal(src.read(1), count)
    # ...and the library run's, bit for bit.
    for name in ("ndvi_median", "clear_count"):
        with (
            rasterio.open(folder / f"{name}.tif") as a,
            rasterio.open(library_folder / f"{name}.tif") as b,
        ):
            assert a.transform == b.transform and a.crs == b.crs
            np.testing.assert_array_equal(a.read(1), b.read(1))
    # One task per stage: plan, then one per tile (named after it), then the products.
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    names = sorted(r.name for r in runs)
    assert [n for n in names if n.startswith("plan tiles")] != []
    assert sorted(n for n in names if n.startswith("tile ")) == sorted(
        f"tile {t.tile.id}" for t in plan.tiles
    )
    assert len([n for n in names if n.startswith("assemble products")]) == 1
    assert len([n for n in names if n.startswith("publish artifacts")]) == 1
    assert len(runs) == len(plan.tiles) + 3
    assert all(r.state is not None and r.state.is_completed() for r in runs)


@pytest.mark.slow
def test_monitor_flow_fails_cleanly_on_a_bad_aoi(harness: None, tmp_path: Path) -> None:
    bad = tmp_path / "lines.geojson"
    bad.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", '
        '"properties": {"name": "road"},'
        ' "geometry": {"type": "LineString", "coordinates": [[18.1, -19.6], [18.2, -19.5]]}}]}'
    )
    spec = demo_spec(tmp_path).model_copy(update={"aoi": bad})
    state = monitor(spec, return_state=True)
    assert state.is_failed()
    assert "no polygon" in str(state.message) or "polygon" in repr(
        state.result(raise_on_failure=False)
    )
    assert not (tmp_path / "lines").exists()
