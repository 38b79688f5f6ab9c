"""Products of a demo run: COG values against a hand computation, catalog, manifest, atomicity."""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import rasterio.transform
import rasterio.warp
from pandas.testing import assert_frame_equal
from rasterio.features import rasterize
from shapely.geometry import box

from agrimon import monitor as stages
from agrimon.grid import from_lonlat, geobox_for
from agrimon.indices import zonal
from agrimon.plan import RunPlan
from agrimon.products.folder import staged_folder
from agrimon.products.manifest import sha256_file
from agrimon.sources import synth
from agrimon.sources.demo import cover_truth, render_stack
from agrimon.tilework import product_layers

from .conftest import DEMO_END, DEMO_START, demo_spec, run_gpkg


def hand_composites(plan: RunPlan, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Median NDVI and clear count computed with plain numpy on the COG's own grid."""
    with rasterio.open(path) as src:
        grid = geobox_for(tuple(src.bounds), src.crs.to_epsg(), src.res[0])
    times = [s.time for s in plan.tiles[0].scenes]
    ds = render_stack(grid, times, bands=("red", "nir", "scl")).compute()
    red, nir, scl = ds["red"].values, ds["nir"].values, ds["scl"].values
    clear = ~np.isin(scl, (0, 1, 3, 8, 9, 10))
    nd = np.where(clear, (nir - red) / (nir + red), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(nd, axis=0)
    inside = (
        rasterize(
            [from_lonlat(plan.aoi.geometry, 32734)], out_shape=grid.shape, transform=grid.affine
        )
        == 1
    )
    return np.where(inside, med, np.nan), np.where(inside, clear.sum(axis=0), 65535)


def test_cog_values_equal_hand_computation(demo_run: tuple[RunPlan, Path]) -> None:
    plan, folder = demo_run
    assert folder == demo_spec(folder.parents[1]).out / "grootfontein" / f"{DEMO_START}_{DEMO_END}"
    assert len(plan.tiles) > 4  # 512 px tiles: the mosaic has seams inside
    med, count = hand_composites(plan, folder / "ndvi_median.tif")
    with rasterio.open(folder / "ndvi_median.tif") as src:
        got = src.read(1)
        assert np.isnan(src.nodata)
    with rasterio.open(folder / "clear_count.tif") as src:
        got_count = src.read(1)
        assert src.nodata == 65535 and src.dtypes[0] == "uint16"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(med))
    np.testing.assert_allclose(got, med, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(got_count, count)
    # The AOI is ~98.5 km²: that many 100 m² pixels inside, within the edge effects.
    assert np.count_nonzero(~np.isnan(got)) * 100 / 1e6 == pytest.approx(
        plan.aoi.area_km2, rel=0.01
    )
    # Rainy-season savanna with fields: a plausible median NDVI.
    assert 0.3 < float(np.nanmedian(got)) < 0.75


def test_cogs_are_cloud_optimised_and_georeferenced(demo_run: tuple[RunPlan, Path]) -> None:
    plan, folder = demo_run
    west, south, east, north = plan.aoi.geometry.bounds
    for name, layer in product_layers(plan.spec).items():
        with rasterio.open(folder / f"{name}.tif") as src:
            assert src.crs.to_epsg() == 32734
            assert src.res == (10.0, 10.0)
            assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0
            assert src.profile["tiled"] and src.block_shapes[0] == (512, 512)
            assert src.overviews(1) == [2]
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert src.compression.name == "deflate"
            assert src.descriptions == (layer.title,)
            assert src.units == (layer.units,)
            assert src.tags()["PERIOD"] == f"{DEMO_START}/{DEMO_END}"
            # The raster's lon/lat box holds the AOI; the UTM grid is turned ~1° from the meridians.
            w, s, e, n = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
            assert w <= west and s <= south and e >= east and n >= north
            assert (e - w) * (n - s) < (east - west) * (north - south) * 1.1


def test_catalog_lists_every_product(demo_run: tuple[RunPlan, Path]) -> None:
    plan, folder = demo_run
    cat = pystac.Catalog.from_file(str(folder / "catalog.json"))
    items = {i.id: i for i in cat.get_items()}
    assert sorted(items) == [
        f"grootfontein-{plan.spec.period}-32734",
        f"grootfontein-{plan.spec.period}-run",  # styles, pictures, report, project
        f"grootfontein-{plan.spec.period}-zones",
    ]
    item = items[f"grootfontein-{plan.spec.period}-32734"]
    assert item.properties["proj:code"] == "EPSG:32734" or item.properties.get("proj:epsg") == 32734
    assert set(item.assets) == set(product_layers(plan.spec))
    for key, asset in item.assets.items():
        href = Path(asset.get_absolute_href() or "")
        assert href == (folder / f"{key}.tif").resolve()
        assert asset.media_type == pystac.MediaType.COG
    assert item.common_metadata.start_datetime is not None
    assert item.common_metadata.start_datetime.date() == DEMO_START
    assert item.bbox == pytest.approx(list(plan.aoi.geometry.bounds), abs=1e-6)
    tables = items[f"grootfontein-{plan.spec.period}-zones"]
    assert {Path(a.get_absolute_href() or "").name for a in tables.assets.values()} == {
        "zonal_stats.parquet",
        "zonal_stats.csv",
        run_gpkg(folder).name,
    }
    # Links are relative: the folder stays valid when moved.
    raw = json.loads((folder / "catalog.json").read_text())
    assert all(not link["href"].startswith("/") for link in raw["links"])


def test_manifest_records_inputs_scenes_and_checksums(demo_run: tuple[RunPlan, Path]) -> None:
    plan, folder = demo_run
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["flow"] == "monitor"
    assert manifest["parameters"]["start"] == str(DEMO_START)
    assert manifest["parameters"]["tile_px"] == 512
    assert manifest["aoi"]["sha256"] == sha256_file(plan.aoi.path)
    assert "Central rangeland" in manifest["aoi"]["zones"]
    assert manifest["source"]["name"] == "demo"
    assert [t["id"] for t in manifest["tiles"]] == [t.tile.id for t in plan.tiles]
    assert len(manifest["tiles"][0]["scenes"]) == 18  # Jan–Mar 2024, every 5 days
    assert manifest["code"]["agrimon"]
    for name in ("ndvi_median.tif", "clear_count.tif", "catalog.json"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert manifest["files"][name]["sha256"] == digest


def test_a_crashed_run_leaves_no_product_and_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = demo_spec(tmp_path).model_copy(update={"end": date(2024, 1, 10)})
    first = stages.run_monitor(spec)
    before = sha256_file(first / "ndvi_median.tif")

    def boom(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("disk full")

    # A complete run is not run again, unless forced.
    assert stages.run_monitor(spec) == first
    assert sha256_file(first / "ndvi_median.tif") == before
    monkeypatch.setattr(stages, "write_catalog", boom)
    forced = spec.model_copy(update={"force": True})
    with pytest.raises(RuntimeError, match="disk full"):
        stages.run_monitor(forced)
    # The earlier complete run is untouched and no partial folder is left beside it: only
    # the pointer to the AOI's latest complete run, which still points to it, and the
    # failed run's work folder with its finished tiles, for the same command to resume.
    work = first.parent / f".{first.name}.work"
    names = sorted(p.name for p in first.parent.iterdir())
    assert names == sorted([first.name, "latest", work.name])
    assert (first.parent / "latest").resolve() == first.resolve()
    assert sha256_file(first / "ndvi_median.tif") == before
    assert (first / "manifest.json").exists() and (first / "catalog.json").exists()
    tiles = sorted((work / "tiles").iterdir())
    assert len(tiles) == len(stages.make_plan(spec).tiles)
    assert all((t / "result.json").is_file() for t in tiles)
    monkeypatch.undo()
    assert stages.run_monitor(forced) == first
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, "latest"])
    assert sha256_file(first / "ndvi_median.tif") == before  # the same pixels


def test_staged_folder_replaces_a_previous_run_only_when_complete(tmp_path: Path) -> None:
    final = tmp_path / "aoi" / "period"
    with staged_folder(final) as stage:
        (stage / "a.txt").write_text("one")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "one"
    with staged_folder(final) as stage:
        (stage / "a.txt").write_text("two")
        assert (final / "a.txt").read_text() == "one"
    assert (final / "a.txt").read_text() == "two"
    assert sorted(p.name for p in final.parent.iterdir()) == ["period"]


def test_an_aoi_across_a_zone_border_gets_products_per_zone(tmp_path: Path) -> None:
    aoi = tmp_path / "border.geojson"
    ring = [[17.98, -19.62], [18.02, -19.62], [18.02, -19.60], [17.98, -19.60], [17.98, -19.62]]
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": "border farm"},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    spec = demo_spec(tmp_path).model_copy(update={"aoi": aoi, "end": date(2024, 1, 10)})
    folder = stages.run_monitor(spec)
    names = sorted(p.name for p in folder.glob("*.tif"))
    assert names == [
        "clear_count_33S.tif",
        "clear_count_34S.tif",
        "ndvi_median_33S.tif",
        "ndvi_median_34S.tif",
    ]
    # Each zone's valid pixels lie on its side of 18°E and reach it (pixel centres).
    lons = {}
    for zone, epsg in (("33S", 32733), ("34S", 32734)):
        with rasterio.open(folder / f"ndvi_median_{zone}.tif") as src:
            assert src.crs.to_epsg() == epsg
            rows, cols = np.nonzero(src.read_masks(1))
            xs, ys = rasterio.transform.xy(src.transform, rows, cols)
            lons[zone] = np.asarray(rasterio.warp.transform(src.crs, "EPSG:4326", xs, ys)[0])
    assert lons["33S"].max() <= 18.0 and lons["33S"].max() == pytest.approx(18.0, abs=1e-4)
    assert lons["34S"].min() >= 18.0 and lons["34S"].min() == pytest.approx(18.0, abs=1e-4)
    items = list(pystac.Catalog.from_file(str(folder / "catalog.json")).get_items())
    assert sorted(i.id.rsplit("-", 1)[1] for i in items) == ["32733", "32734", "run", "zones"]
    assets = {i.id.rsplit("-", 1)[1]: set(i.assets) for i in items}
    assert assets["32733"] == assets["32734"] == {"clear_count", "ndvi_median"}
    # Each zone's raster has its own style and quicklook, listed with the run's files.
    per_zone = {
        f"{prefix}{name}_{zone}_{suffix}"
        for name in ("clear_count", "ndvi_median")
        for zone in ("33S", "34S")
        for prefix, suffix in (("", "qml"), ("pictures_", "png"))
    }
    assert per_zone <= assets["run"]
    assert {"qgis_project", "report"} <= assets["run"]


def test_zonal_tables_equal_a_hand_computation(demo_run: tuple[RunPlan, Path]) -> None:
    plan, folder = demo_run
    table = pd.read_csv(folder / "zonal_stats.csv", parse_dates=["time"])
    n_dates = len(plan.tiles[0].scenes)
    assert len(table) == len(plan.aoi.zones) * n_dates  # one index: ndvi
    assert set(table["name"]) == set(plan.aoi.zones["name"])
    assert_frame_equal(
        pd.read_parquet(folder / "zonal_stats.parquet"), table, check_dtype=False, check_like=True
    )
    # By hand: NDVI of clear pixels whose centre lies in the zone, on the product grid.
    with rasterio.open(folder / "ndvi_median.tif") as src:
        grid = geobox_for(tuple(src.bounds), 32734, 10.0)
    times = [s.time for s in plan.tiles[0].scenes]
    ds = render_stack(grid, times, bands=("red", "nir", "scl")).compute()
    red, nir, scl = ds["red"].values, ds["nir"].values, ds["scl"].values
    nd = np.where(~np.isin(scl, (0, 1, 3, 8, 9, 10)), (nir - red) / (nir + red), np.nan)
    for _, zone in plan.aoi.zones.iterrows():
        inside = (
            rasterize(
                [from_lonlat(zone.geometry, 32734)], out_shape=grid.shape, transform=grid.affine
            )
            == 1
        )
        rows = table[table["name"] == zone["name"]].sort_values("time")
        assert (rows["pixels"] == inside.sum()).all()
        for t in range(0, n_dates, 4):
            values = nd[t][inside]
            clear = values[np.isfinite(values)]
            row = rows.iloc[t]
            assert row["count"] == clear.size
            assert row["clear_fraction"] == pytest.approx(clear.size / inside.sum())
            if clear.size:
                assert row["mean"] == pytest.approx(float(clear.mean()), abs=1e-6)
                # Zones of more than MAX_EXACT_PIXELS get a bounded-memory histogram median.
                tol = zonal.MEDIAN_BIN_WIDTH if inside.sum() > zonal.MAX_EXACT_PIXELS else 1e-6
                assert row["median"] == pytest.approx(float(np.median(clear)), abs=tol)
    # The run's GeoPackage holds the same rows as a table, and the zones' polygons.
    gpkg = run_gpkg(folder)
    rows_gpkg = gpd.read_file(gpkg, layer="zonal_stats")
    assert len(rows_gpkg) == len(table)
    assert rows_gpkg["mean"].to_numpy() == pytest.approx(table["mean"].to_numpy(), nan_ok=True)
    zones = gpd.read_file(gpkg, layer="zones")
    assert list(zones["name"]) == list(plan.aoi.zones["name"]) and zones.crs.to_epsg() == 32734


@pytest.mark.slow
def test_a_full_season_run_writes_phenology_that_separates_shrubs_from_grass(
    tmp_path: Path,
) -> None:
    aoi = tmp_path / "square.geojson"
    square = box(18.200, -19.625, 18.215, -19.611)  # ~1.6 km of fields, grass and shrubs
    gpd.GeoDataFrame({"name": ["square"]}, geometry=[square], crs=4326).to_file(aoi)
    spec = demo_spec(tmp_path).model_copy(
        update={"aoi": aoi, "start": date(2023, 7, 1), "end": date(2024, 6, 30), "tile_px": 256}
    )
    folder = stages.run_monitor(spec)
    layers = product_layers(spec)
    assert {"ndvi_start_doy", "ndvi_peak_doy", "ndvi_end_doy", "ndvi_dry_wet_ratio"} <= set(layers)
    with rasterio.open(folder / "ndvi_dry_wet_ratio.tif") as src:
        ratio = src.read(1)
        grid = geobox_for(tuple(src.bounds), 32734, 10.0)
        assert src.descriptions[0].startswith("NDVI phenology: dry wet ratio")
    with rasterio.open(folder / "ndvi_peak_doy.tif") as src:
        peak = src.read(1)
    cover = cover_truth(grid).values
    shrub = np.nanmedian(ratio[cover == synth.SHRUB])
    grass = np.nanmedian(ratio[cover == synth.GRASS])
    assert shrub > grass + 0.05  # woody plants stay green into the dry season
    # Crops peak in the rains: between January and April (day of year 1..120).
    crop_peak = np.nanmedian(peak[cover == synth.CROP])
    assert 1 <= crop_peak <= 120
    assert layers["ndvi_peak_doy"].units == "day of year"
