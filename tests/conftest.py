"""Shared fixtures: paths to the real data and one small demo run reused by many tests."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry

from agrimon import monitor as stages
from agrimon.config import RunSpec, make_spec
from agrimon.plan import RunPlan

#: Real Earth-observation data laid beside the project (see its README); never copied here.
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"

#: The small demo run: the shipped AOI, one quarter, 512 px tiles (so the mosaic has seams).
DEMO_START, DEMO_END = date(2024, 1, 1), date(2024, 3, 31)


def agrimon_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed ``agrimon`` command with ``args``; its output captured as text."""
    command = str(Path(sys.executable).with_name("agrimon"))
    return subprocess.run([command, *args], capture_output=True, text=True, timeout=timeout)


def real_path(*parts: str) -> Path:
    """Path under the real data folder, skipping the test when it is missing."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is missing: lay shared/data/real beside the project")
    return path


def run_gpkg(run: Path) -> Path:
    """The GeoPackage of every vector layer of the run in folder ``run``."""
    return run / f"{run.parent.name}_{run.name}.gpkg"


def demo_spec(out: Path) -> RunSpec:
    """Run spec of the small demo run writing under ``out``."""
    return make_spec(out=out, start=DEMO_START, end=DEMO_END, tile_px=512, chunk_px=256)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunPlan, Path]:
    """Plan and product folder of the small demo run, made once with the library stages."""
    spec = demo_spec(tmp_path_factory.mktemp("demo-run"))
    plan = stages.make_plan(spec)
    return plan, stages.run_monitor(spec)


#: The season runs' AOI: a farm block of the demo world (fields to forecast, bush to map),
#: with a zone inside the whole (zones may overlap), and their two seasons.
SEASON_AREA = box(18.158, -19.598, 18.187, -19.577)
SEASON_NORTH = box(18.158, -19.587, 18.187, -19.577)
SEASONS = ((date(2022, 7, 1), date(2023, 6, 30)), (date(2023, 7, 1), date(2024, 6, 30)))


@pytest.fixture(scope="session")
def season_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two whole-season demo runs of one AOI: every product type, and change between them.

    The earlier season runs first, so the later run finds it and maps change against it.
    Returns the earlier and the later run's folder.
    """
    tmp = tmp_path_factory.mktemp("season-runs")
    aoi = tmp / "farm block.geojson"
    features = [
        {"type": "Feature", "properties": {"name": name}, "geometry": mapping(geometry)}
        for name, geometry in (("farm block", SEASON_AREA), ("north & camp", SEASON_NORTH))
    ]
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    folders = [
        stages.run_monitor(
            make_spec(aoi=aoi, out=tmp / "out", start=start, end=end, tile_px=256, chunk_px=256)
        )
        for start, end in SEASONS
    ]
    return folders[0], folders[1]


SLOVENIA = REAL_DATA / "slovenia-s2"
#: Acquisition dates of the five real scenes, and their band index in ndvi_timeseries.tif.
SLOVENIA_DATES = ("2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09")


def slovenia_aoi() -> BaseGeometry:
    """The real scenes' footprint in lon/lat, shrunk by ~50 m so every tile is inside."""
    scenes = real_path("slovenia-s2", "scenes")
    with rasterio.open(scenes / f"S2_L1C_{SLOVENIA_DATES[0]}.tif") as src:
        west, south, east, north = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    pad = 0.0006
    return box(west + pad, south + pad, east - pad, north - pad)


def pick_nearest(
    data: np.ndarray,
    src_transform: Affine,
    src_crs: object,
    geobox: GeoBox,
    *,
    src_nodata: float | None = np.nan,
    dtype: type = np.float32,
) -> np.ndarray:
    """A 2-D array picked onto ``geobox`` by nearest neighbour, NaN outside.

    This is how the sources sample the real scenes, so the references they are checked
    against are sampled the same way.
    """
    out: np.ndarray = np.full(geobox.shape, np.nan, dtype=dtype)
    rasterio.warp.reproject(
        data.astype(dtype),
        out,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=src_nodata,
        dst_transform=geobox.affine,
        dst_crs=str(geobox.crs),
        dst_nodata=np.nan,
        resampling=Resampling.nearest,
    )
    return out


def reference_ndvi(geobox: GeoBox, index: int) -> np.ndarray:
    """Band ``index`` (0-based date) of the real NDVI series on ``geobox``.

    Pixels are picked by nearest neighbour, as the sources pick them from the scenes' odd
    native grid: the independent reference every source must match.
    """
    with rasterio.open(real_path("slovenia-s2", "ndvi_timeseries.tif")) as src:
        return pick_nearest(src.read(index + 1), src.transform, src.crs, geobox)


def assert_ndvi_matches_reference(stack: xr.Dataset) -> None:
    """NDVI of a computed stack equals the real reference series date by date (1e-6)."""
    geobox = stack.odc.geobox
    red = stack["red"].values.astype(np.float64)
    nir = stack["nir"].values.astype(np.float64)
    ndvi = (nir - red) / (nir + red)
    dates = [str(t)[:10] for t in stack.time.values]
    assert dates == list(SLOVENIA_DATES[: len(dates)]) or set(dates) <= set(SLOVENIA_DATES)
    for t, day in enumerate(dates):
        ref = reference_ndvi(geobox, SLOVENIA_DATES.index(day))
        assert np.isfinite(ref).mean() > 0.5
        np.testing.assert_allclose(ndvi[t], ref, rtol=0, atol=1e-6, equal_nan=True)
