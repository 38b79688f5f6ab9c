"""The monitor's area products on a small demo AOI.

Polygons across tile seams, map areas, and the area-adjusted estimates when a filled-in
reference sample is configured.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from shapely.geometry import box, mapping

from agrimon.area.fieldcheck import SAMPLE_LAYER, SampleDesign, assess, write_sample
from agrimon.config import make_spec
from agrimon.errors import AssessmentError, ConfigError
from agrimon.monitor import check_inputs, run_monitor
from agrimon.sources.demo import encroached_truth

from .conftest import run_gpkg

pytestmark = pytest.mark.slow

#: A season (the shipped model needs one) over 2.5 × 2.2 km of the demo farmland.
SEASON = {"start": "2023-07-01", "end": "2024-06-30"}
WEST, EAST, SOUTH, NORTH, MID = 18.182, 18.206, -19.62, -19.60, 18.194
TILE_PX = 128  # several tiles: patches cross their seams


def _aoi(tmp_path: Path) -> Path:
    path = tmp_path / "rangeland.geojson"
    features = [
        {"type": "Feature", "properties": {"name": name}, "geometry": mapping(geom)}
        for name, geom in (
            ("west camp", box(WEST, SOUTH, MID, NORTH)),
            ("east camp", box(MID, SOUTH, EAST, NORTH)),
        )
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("area-run")
    spec = make_spec(aoi=_aoi(tmp), out=tmp / "out", tile_px=TILE_PX, **SEASON)
    return run_monitor(spec)


def test_the_run_writes_polygons_merged_across_tile_seams(first_run: Path) -> None:
    with rasterio.open(first_run / "invasive_class.tif") as src:
        label, transform = src.read(1), src.transform
    frame = gpd.read_file(run_gpkg(first_run), layer="invasive_polygons")
    assert len(frame) > 5 and set(frame["class"]) <= {"open", "encroached"}
    assert (frame["area_ha"] >= 0.5).all()  # the default minimum mapping unit
    # Sieving moves small patches into their neighbours: the polygons cover the map.
    assert frame["area_ha"].sum() == pytest.approx((label > 0).sum() * 0.01, abs=0.5)
    assert frame.geometry.is_valid.all()
    # Some polygon crosses a tile seam and is one polygon (tiles are 128 px on the grid).
    seam_x = [transform.c + 10.0 * k for k in range(TILE_PX, label.shape[1], TILE_PX)]
    crossing = [g for g in frame.geometry if any(g.bounds[0] < x < g.bounds[2] for x in seam_x)]
    assert crossing
    lonlat = gpd.read_file(first_run / "invasive_polygons.geojson")
    assert lonlat.crs.to_epsg() == 4326 and len(lonlat) == len(frame)
    bounds = lonlat.total_bounds
    assert bounds[0] > WEST - 0.01 and bounds[2] < EAST + 0.01
    # Map areas per zone and class: the class raster's pixel counts inside each camp.
    with open(first_run / "invasive_map_areas.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["zone"], r["class"]) for r in rows] == [
        (z, c) for z in ("west camp", "east camp") for c in ("open", "encroached")
    ]
    total = sum(float(r["map_area_ha_biased"]) for r in rows)
    assert total == pytest.approx((label > 0).sum() * 0.01, abs=0.02)
    catalog = (first_run / "catalog.json").read_text()
    assert "zones" in catalog
    item = next(first_run.glob("*-zones/*-zones.json"))
    assets = json.loads(item.read_text())["assets"]
    assert {"invasive_polygons_geojson", "invasive_map_areas"} <= set(assets)


def _filled_sample(map_path: Path, tmp: Path) -> Path:
    """A sample of the map, filled in with the demo truth as a field team would."""
    sample = write_sample(map_path, tmp / "sample.gpkg", SampleDesign(n=120, seed=3))
    points = gpd.read_file(sample, layer=SAMPLE_LAYER)
    with rasterio.open(map_path) as src:
        grid = GeoBox(src.shape, src.transform, src.crs)
        classes = json.loads(src.tags(1)["CATEGORY_NAMES"])[1:]
        cols, rows = ~src.transform * (points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    rows, cols = np.floor(rows).astype(int), np.floor(cols).astype(int)
    truth = np.asarray(encroached_truth(grid).values)
    encroached = classes.index("encroached")
    points["reference"] = [
        classes[encroached] if truth[r, c] else classes[1 - encroached]
        for r, c in zip(rows, cols, strict=True)
    ]
    filled = tmp / "filled.gpkg"
    shutil.copy(sample, filled)
    points.to_file(filled, layer=SAMPLE_LAYER, driver="GPKG")
    return filled


def test_a_configured_reference_sample_adds_the_assessment(first_run: Path, tmp_path: Path) -> None:
    filled = _filled_sample(first_run / "invasive_class.tif", tmp_path)
    aoi = _aoi(tmp_path)
    spec = make_spec(aoi=aoi, out=tmp_path / "out", tile_px=TILE_PX, reference=filled, **SEASON)
    folder = run_monitor(spec)
    result = json.loads((folder / "assessment.json").read_text())
    # The same numbers as `agrimon assess` on the run's map with the AOI's zones.
    zones = gpd.read_file(aoi)
    direct = assess(folder / "invasive_class.tif", filled, zones=zones).to_dict()
    assert result["total"] == direct["total"] and result["zones"] == direct["zones"]
    assert set(result["zones"]) == {"west camp", "east camp"}
    enc = result["total"]["per_class"]["encroached"]
    assert enc["area_ha"]["ci95"] > 0 and enc["map_area_ha_biased"] > 0
    assert (folder / "assessment.csv").read_text().startswith("zone,class,")
    item = next(folder.glob("*-zones/*-zones.json"))
    assert {"assessment", "assessment_csv"} <= set(json.loads(item.read_text())["assets"])


def test_a_bad_reference_is_found_before_the_run(first_run: Path, tmp_path: Path) -> None:
    filled = _filled_sample(first_run / "invasive_class.tif", tmp_path)
    aoi = _aoi(tmp_path)
    # A sample of another AOI: its points lie outside this one.
    far = make_spec(aoi=Path("aoi/grootfontein.geojson").resolve(), reference=filled, **SEASON)
    points = gpd.read_file(filled, layer=SAMPLE_LAYER)
    points["geometry"] = points.geometry.translate(xoff=-50_000)
    moved = tmp_path / "moved.gpkg"
    shutil.copy(filled, moved)
    points.to_file(moved, layer=SAMPLE_LAYER, driver="GPKG")
    with pytest.raises(AssessmentError, match="lie outside AOI"):
        check_inputs(far.model_copy(update={"reference": moved}))
    # No map to assess: the run maps no encroachment.
    with pytest.raises(ConfigError, match="makes no encroachment map"):
        check_inputs(make_spec(aoi=aoi, reference=filled, invasive_model="none", **SEASON))
