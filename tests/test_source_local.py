"""The local source: real Slovenia scenes in every layout, parsing rules, and error messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from shapely.geometry import box

from agrimon.errors import AgrimonError, ConfigError, SourceError
from agrimon.grid import Tile, geobox_for, plan_tiles, to_lonlat
from agrimon.sources import get_source
from agrimon.sources.bands import BAND_IDS, dn_to_reflectance
from agrimon.sources.base import ALL_BANDS, BANDS, SCL, Scene, Source
from agrimon.sources.local import (
    BandFile,
    BandRef,
    Entry,
    LocalSource,
    RasterHeader,
    band_from_name,
    bands_from_descriptions,
    classify,
    cover_window,
    group_band_files,
    item_entry,
    parse_timestamp,
    pick_time,
    scene_name,
    select_bands,
    time_from_name,
    warp_window,
)
from agrimon.sources.settings import SourceSettings

from .conftest import pick_nearest, real_path

START, END = date(2015, 7, 1), date(2015, 9, 30)
DAYS = ("2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09")
# Small chunks so that every block reads a window of the files, not the whole file.
CHUNK = 40
#: A tile near the real scenes, for error tests that need no pixels.
ANY_TILE = Tile(32633, 363, 3968, 128)

Array = NDArray[Any]


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> Path:
    return real_path("slovenia-s2")


@pytest.fixture(scope="module")
def scene_files(real: Path) -> list[Path]:
    files = [real / "scenes" / f"S2_L1C_{day}.tif" for day in DAYS]
    missing = [f for f in files if not f.exists()]
    if missing:
        pytest.skip(f"real scenes {missing[0]} missing: lay shared/data/real beside the project")
    return files


@pytest.fixture(scope="module")
def times(real: Path) -> list[datetime]:
    stamps = json.loads((real / "timestamps.json").read_text())["timestamps"]
    return [datetime.fromisoformat(s) for s in stamps[: len(DAYS)]]


@pytest.fixture(scope="module")
def tiles(scene_files: list[Path]) -> tuple[Tile, ...]:
    """Tiles of the scenes' footprint, shrunk by 15 m so no tile edge grazes the files."""
    with rasterio.open(scene_files[0]) as src:
        left, bottom, right, top = src.bounds
        epsg = src.crs.to_epsg()
    aoi = to_lonlat(box(left + 15, bottom + 15, right - 15, top - 15), epsg)
    found = plan_tiles(aoi, tile_px=128)
    assert len(found) >= 2  # the footprint straddles a tile edge: seams are exercised
    return found


def _source(path: Path) -> LocalSource:
    return LocalSource(SourceSettings(local_path=path))


def _pick(path: Path, index: int, geobox: GeoBox) -> Array:
    """Band of a file reprojected whole onto ``geobox`` by nearest neighbour; NaN outside."""
    with rasterio.open(path) as src:
        data = src.read(index).astype(np.float64)
        if src.nodata is not None:
            data[data == src.nodata] = np.nan
        return pick_nearest(data, src.transform, src.crs, geobox, dtype=np.float64)


def _check_against_reference(
    source: Source, tiles: tuple[Tile, ...], real: Path, scene_files: list[Path]
) -> None:
    """NDVI equals the reference NDVI time series, red equals B04 / 10000, on every tile."""
    for tile in tiles:
        scenes = source.find_scenes(tile, START, END)
        assert len(scenes) == len(DAYS)
        stack = source.load(tile, scenes, chunk_px=CHUNK).compute()
        assert list(stack.data_vars) == list(BANDS)
        ndvi = ((stack.nir - stack.red) / (stack.nir + stack.red)).values
        for t, path in enumerate(scene_files):
            want = _pick(real / "ndvi_timeseries.tif", t + 1, tile.geobox)
            assert np.isfinite(want).sum() > 100
            np.testing.assert_allclose(ndvi[t], want, rtol=0, atol=1e-6, err_msg=f"{tile.id} t={t}")
            red = _pick(path, 4, tile.geobox) / 10000
            np.testing.assert_allclose(stack.red.values[t], red, rtol=0, atol=1e-6)


def _write(
    path: Path,
    data: Array,
    like: Mapping[str, Any],
    *,
    descriptions: tuple[str, ...] | None = None,
    tags: Mapping[str, str] | None = None,
    transform: Any = None,
) -> Path:
    """Write ``data`` (bands, y, x) as a GeoTIFF with the CRS of ``like``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(like)
    profile.update(
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=data.dtype.name,
        tiled=False,
        compress="deflate",
    )
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    if transform is not None:
        profile["transform"] = transform
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, text in enumerate(descriptions):
                dst.set_band_description(i + 1, text)
        if tags:
            dst.update_tags(**tags)
    return path


def _read(path: Path) -> tuple[Array, dict[str, Any], tuple[str, ...], dict[str, str]]:
    with rasterio.open(path) as src:
        return src.read(), dict(src.profile), tuple(src.descriptions), dict(src.tags())


NameFn = Callable[[str, datetime, str], str]


def _split_bands(
    scene_files: list[Path],
    out: Path,
    name: NameFn,
    *,
    tag: str | None = "DATETIME",
    describe: bool = False,
    add: int = 0,
    as_float: bool = False,
) -> dict[str, dict[str, Path]]:
    """Write each real scene as one file per band; returns ``{day: {band id: path}}``.

    Args:
        scene_files: The real multi-band scenes.
        out: Folder to write under.
        name: File path (relative to ``out``) of a day, time and band id.
        tag: Tag to write the acquisition time in (``TIFFTAG_DATETIME`` in TIFF format).
        describe: Whether to keep the band description.
        add: DN offset to add (baseline 04.00 files hold DN + 1000).
        as_float: Write float32 reflectance (NaN nodata) instead of DNs.
    """
    written: dict[str, dict[str, Path]] = {}
    for path in scene_files:
        data, profile, descriptions, file_tags = _read(path)
        when = datetime.fromisoformat(file_tags["DATETIME"])
        day = f"{when:%Y-%m-%d}"
        stamp = f"{when:%Y:%m:%d %H:%M:%S}" if tag == "TIFFTAG_DATETIME" else file_tags["DATETIME"]
        written[day] = {}
        for i, band_id in enumerate(descriptions):
            values = data[i : i + 1]
            like = profile
            if add:
                values = np.where(values == 0, 0, values + add).astype(np.uint16)
            if as_float:
                values = dn_to_reflectance(values)
                like = {**profile, "nodata": float("nan")}
            written[day][band_id] = _write(
                out / name(day, when, band_id),
                values,
                like,
                descriptions=(band_id,) if describe else None,
                tags={tag: stamp} if tag else None,
            )
    return written


# --- the real scenes, one multi-band file per date --------------------------------------


def test_real_scenes_found_with_their_times(
    real: Path, scene_files: list[Path], tiles: tuple[Tile, ...], times: list[datetime]
) -> None:
    source = _source(real / "scenes")
    assert isinstance(source, Source)
    for tile in tiles:
        scenes = source.find_scenes(tile, START, END)
        assert [s.time for s in scenes] == times
        assert [s.id for s in scenes] == [p.stem for p in scene_files]
        assert all(s.cloud_cover is None for s in scenes)
        json.dumps([dict(s.meta) for s in scenes])  # meta stays JSON-like
        part = scenes[0].meta["parts"][0]["bands"]
        assert part["red"] == {
            "path": str(scene_files[0]),
            "index": 4,
            "scale": 1e-4,
            "offset": 0.0,
            "nodata": 0.0,
        }
    # The date range is inclusive and filters by acquisition day.
    one = source.find_scenes(tiles[0], date(2015, 7, 31), date(2015, 8, 20))
    assert [s.id for s in one] == ["S2_L1C_2015-07-31", "S2_L1C_2015-08-20"]
    assert source.find_scenes(tiles[0], date(2016, 1, 1), date(2016, 2, 1)) == ()


def test_real_scenes_outside_tile_are_not_found(real: Path, scene_files: list[Path]) -> None:
    far = plan_tiles(box(15.5, 46.0, 15.51, 46.01), tile_px=128)[0]
    assert _source(real / "scenes").find_scenes(far, START, END) == ()


def test_real_scenes_load_matches_reference_ndvi(
    real: Path, scene_files: list[Path], tiles: tuple[Tile, ...]
) -> None:
    source = _source(real / "scenes")
    scenes = source.find_scenes(tiles[0], START, END)
    lazy = source.load(tiles[0], scenes, chunk_px=CHUNK)
    assert SCL not in lazy  # L1C: no scene classification
    assert all(v.dtype == np.float32 for v in lazy.data_vars.values())
    assert lazy.red.chunks is not None and lazy.red.chunks[1][0] == CHUNK
    assert lazy.odc.geobox == tiles[0].geobox
    # The monitor asks for red, nir and scl: L1C scenes give the first two.
    assert list(source.load(tiles[0], scenes, bands=("red", "nir", SCL)).data_vars) == [
        "red",
        "nir",
    ]
    _check_against_reference(source, tiles, real, scene_files)


def test_real_scenes_extra_bands_only_when_asked(
    real: Path, scene_files: list[Path], tiles: tuple[Tile, ...]
) -> None:
    source = _source(real / "scenes")
    scenes = source.find_scenes(tiles[0], START, END)[:1]
    stack = source.load(tiles[0], scenes, bands=("coastal", "red")).compute()
    assert list(stack.data_vars) == ["coastal", "red"]
    want = _pick(scene_files[0], 1, tiles[0].geobox) / 10000
    np.testing.assert_allclose(stack.coastal.values[0], want, rtol=0, atol=1e-6)


def test_parent_folder_skips_unrelated_rasters(real: Path, tiles: tuple[Tile, ...]) -> None:
    # ndvi_timeseries.tif and friends name no bands: they are skipped, the scenes found.
    scenes = _source(real).find_scenes(tiles[0], START, END)
    assert [s.id for s in scenes] == [f"S2_L1C_{day}" for day in DAYS]


# --- one file per band and date ---------------------------------------------------------


BAND_NAMES = {v: k for k, v in BAND_IDS.items()}
RES = {b: 10 if b in ("B02", "B03", "B04", "B08") else 20 for b in BAND_NAMES}
LAYOUTS: dict[str, dict[str, Any]] = {
    "ids-described": {"name": lambda d, w, b: f"S2_{w:%Y%m%d}_{b}.tif", "describe": True},
    "common-names-time-in-name": {
        "name": lambda d, w, b: f"{w:%Y-%m-%dT%H%M%S}_{BAND_NAMES[b]}.tif",
        "tag": None,
    },
    "date-folders-tiff-datetime": {
        "name": lambda d, w, b: f"{d}/{b}.tif",
        "tag": "TIFFTAG_DATETIME",
    },
    "sentinel-names": {
        "name": lambda d, w, b: f"T33TWM_{w:%Y%m%dT%H%M%S}_{b}_{RES[b]}m.tif",
        "tag": None,
    },
    "float-reflectance": {"name": lambda d, w, b: f"S2_{d}_{b}.tif", "as_float": True},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_one_file_per_band_gives_the_same_stack(
    layout: str,
    real: Path,
    scene_files: list[Path],
    tiles: tuple[Tile, ...],
    times: list[datetime],
    tmp_path: Path,
) -> None:
    _split_bands(scene_files, tmp_path, **LAYOUTS[layout])
    split, whole = _source(tmp_path), _source(real / "scenes")
    tile = tiles[0]
    scenes = split.find_scenes(tile, START, END)
    assert [s.time for s in scenes] == times
    assert [len(s.meta["parts"]) for s in scenes] == [1] * len(DAYS)
    got = split.load(tile, scenes, chunk_px=CHUNK).compute()
    want = whole.load(tile, whole.find_scenes(tile, START, END), chunk_px=CHUNK).compute()
    xr.testing.assert_equal(got, want)


def test_band_files_give_reference_ndvi_on_every_tile(
    real: Path, scene_files: list[Path], tiles: tuple[Tile, ...], tmp_path: Path
) -> None:
    _split_bands(scene_files, tmp_path, lambda day, when, b: f"{day}_{BAND_NAMES[b]}.tif")
    _check_against_reference(_source(tmp_path), tiles, real, scene_files)


def test_scl_band_file_is_loaded_as_uint8(
    scene_files: list[Path], tiles: tuple[Tile, ...], tmp_path: Path
) -> None:
    written = _split_bands(scene_files[:1], tmp_path, lambda day, when, b: f"S2_{day}_{b}.tif")
    data, profile, _, file_tags = _read(written[DAYS[0]]["B04"])
    scl = (data % 11 + 1).astype(np.uint8)  # codes 1..11, never nodata
    _write(tmp_path / f"S2_{DAYS[0]}_SCL.tif", scl, {**profile, "nodata": 0}, tags=file_tags)
    source = _source(tmp_path)
    scenes = source.find_scenes(tiles[0], START, END)
    stack = source.load(tiles[0], scenes).compute()
    assert list(stack.data_vars) == [*BANDS, SCL]
    assert stack.scl.dtype == np.uint8
    want = np.nan_to_num(_pick(tmp_path / f"S2_{DAYS[0]}_SCL.tif", 1, tiles[0].geobox), nan=0)
    np.testing.assert_array_equal(stack.scl.values[0], want.astype(np.uint8))


def test_same_time_files_are_mosaicked(
    real: Path, scene_files: list[Path], tiles: tuple[Tile, ...], tmp_path: Path
) -> None:
    data, profile, descriptions, file_tags = _read(scene_files[0])
    half = data.shape[2] // 2
    transform = profile["transform"]
    for stem, cols in (("west", slice(0, half)), ("east", slice(half, None))):
        shift = rasterio.Affine.translation(cols.start * transform.a, 0)
        _write(
            tmp_path / f"{stem}.tif",
            data[:, :, cols],
            profile,
            descriptions=descriptions,
            tags=file_tags,
            transform=shift * transform,
        )
    source, whole = _source(tmp_path), _source(real / "scenes")
    for tile in tiles:
        scenes = source.find_scenes(tile, START, END)
        assert len(scenes) == 1
        got = source.load(tile, scenes, chunk_px=CHUNK).compute()
        want = whole.load(tile, whole.find_scenes(tile, START, END)[:1], chunk_px=CHUNK).compute()
        xr.testing.assert_equal(got, want)


# --- a static STAC catalog --------------------------------------------------------------


def _stac_catalog(
    scene_files: list[Path],
    out: Path,
    *,
    keys: Callable[[str], str],
    add: int,
    properties: Mapping[str, Any],
    offset: float | None,
    eo_bands: bool = False,
) -> Path:
    """A self-contained catalog of one item per date, one asset per band file."""
    files = _split_bands(scene_files, out / "data", lambda d, w, b: f"{d}/{b}.tif", add=add)
    catalog = pystac.Catalog("slovenia", "Real Sentinel-2 L1C scenes split by band")
    for path in scene_files:
        with rasterio.open(path) as src:
            when = datetime.fromisoformat(src.tags()["DATETIME"])
            lonlat = to_lonlat(box(*src.bounds), src.crs.to_epsg())
        day = f"{when:%Y-%m-%d}"
        item = pystac.Item(
            id=f"S2_{day}",
            geometry=json.loads(json.dumps(lonlat.__geo_interface__)),
            bbox=list(lonlat.bounds),
            datetime=when,
            properties={"eo:cloud_cover": 12.5, **properties},
        )
        for band_id, band_path in files[day].items():
            raster: dict[str, Any] = {"nodata": 0, "data_type": "uint16", "scale": 1e-4}
            if offset is not None:
                raster["offset"] = offset
            extra: dict[str, Any] = {"raster:bands": [raster]}
            if eo_bands:
                extra["eo:bands"] = [{"name": band_id, "common_name": BAND_NAMES[band_id]}]
            item.add_asset(
                keys(band_id),
                pystac.Asset(
                    str(band_path), media_type=pystac.MediaType.GEOTIFF, extra_fields=extra
                ),
            )
        item.add_asset("visual", pystac.Asset(str(files[day]["B08"]), roles=["visual"]))
        catalog.add_item(item)
    catalog.normalize_hrefs(str(out))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return out / "catalog.json"


STAC_VARIANTS: dict[str, dict[str, Any]] = {
    # Baseline 04.00: DN + 1000 on disk and offset −0.1 declared: applied once.
    "baseline-04-declared": {
        "keys": lambda b: BAND_NAMES[b],
        "add": 1000,
        "properties": {"s2:processing_baseline": "04.00"},
        "offset": -0.1,
    },
    # Earth Search says the offset is applied already: plain DNs, declared −0.1 ignored.
    "boa-offset-applied": {
        "keys": lambda b: b,
        "add": 0,
        "properties": {"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True},
        "offset": -0.1,
    },
    # Baseline 04.00 with no declared offset: the source subtracts 0.1 itself.
    "baseline-04-undeclared-eo-bands": {
        "keys": lambda b: f"asset-{b.lower()}",
        "add": 1000,
        "properties": {"s2:processing_baseline": "04.00"},
        "offset": None,
        "eo_bands": True,
    },
    # An older baseline: plain DNs, nothing to subtract.
    "baseline-02": {
        "keys": lambda b: BAND_NAMES[b],
        "add": 0,
        "properties": {"s2:processing_baseline": "02.01"},
        "offset": 0.0,
    },
}


@pytest.mark.parametrize("variant", list(STAC_VARIANTS))
def test_stac_catalog_gives_reference_ndvi(
    variant: str,
    real: Path,
    scene_files: list[Path],
    tiles: tuple[Tile, ...],
    times: list[datetime],
    tmp_path: Path,
) -> None:
    catalog = _stac_catalog(scene_files, tmp_path, **STAC_VARIANTS[variant])
    source = _source(catalog if variant == "baseline-02" else tmp_path)
    assert source.describe()["layout"] == "static STAC catalog"
    scenes = source.find_scenes(tiles[0], START, END)
    assert [s.time for s in scenes] == times
    assert [s.id for s in scenes] == [f"S2_{day}" for day in DAYS]
    assert all(s.cloud_cover == 12.5 for s in scenes)
    _check_against_reference(source, tiles, real, scene_files)


def test_stac_item_tree_without_catalog(
    scene_files: list[Path], tiles: tuple[Tile, ...], tmp_path: Path
) -> None:
    catalog = _stac_catalog(scene_files[:2], tmp_path, **STAC_VARIANTS["baseline-02"])
    catalog.unlink()
    scenes = _source(tmp_path).find_scenes(tiles[0], START, END)
    assert [s.id for s in scenes] == [f"S2_{day}" for day in DAYS[:2]]


# --- pure parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("S2_L1C_2015-07-11", datetime(2015, 7, 11)),
        ("S2_20150711_B04", datetime(2015, 7, 11)),
        ("2015-07-11T100008_red", datetime(2015, 7, 11, 10, 0, 8)),
        ("2015-07-11T10:00:08", datetime(2015, 7, 11, 10, 0, 8)),
        ("T33TWM_20150711T100008_B04_10m", datetime(2015, 7, 11, 10, 0, 8)),
        (
            "S2A_MSIL1C_20150711T100008_N0204_R122_T33TWM_20160101T000000",
            datetime(2015, 7, 11, 10, 0, 8),
        ),
        ("S2_2015_07_11", datetime(2015, 7, 11)),
        ("scene_20150711T250000", datetime(2015, 7, 11)),  # impossible time: date only
        ("orbit_1234567890", None),
        ("S2_20151341", None),
        ("2015-0711", None),
        ("B04", None),
    ],
)
def test_time_from_name(text: str, want: datetime | None) -> None:
    assert time_from_name(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2015-07-11T10:00:08", datetime(2015, 7, 11, 10, 0, 8)),
        ("2015:07:11 10:00:08", datetime(2015, 7, 11, 10, 0, 8)),
        ("2015-07-11T10:00:08Z", datetime(2015, 7, 11, 10, 0, 8)),
        ("2015-07-11T12:00:08+02:00", datetime(2015, 7, 11, 10, 0, 8)),
        ("2015-07-11T10:00:08.250000Z", datetime(2015, 7, 11, 10, 0, 8, 250000)),
        ("2015-07-11", datetime(2015, 7, 11)),
        ("acquired 2015/07/11", None),
        ("sensed on 2015-07-11", datetime(2015, 7, 11)),
        ("2015:13:11 10:00:08", None),
        ("", None),
    ],
)
def test_parse_timestamp(text: str, want: datetime | None) -> None:
    assert parse_timestamp(text) == want


def test_pick_time_prefers_acquisition_tags_then_names() -> None:
    at = datetime(2015, 7, 11, 10, 0, 8)
    assert pick_time({"DATETIME": "2015-07-11T10:00:08"}, ["S2_20990101"]) == at
    assert pick_time({"ACQUISITION_DATE": "2015-07-11T10:00:08"}, []) == at
    # TIFFTAG_DATETIME is often the export time: a name with a date wins over it...
    assert pick_time({"TIFFTAG_DATETIME": "2023:01:05 08:00:00"}, ["S2_2015-07-11"]) == (
        datetime(2015, 7, 11)
    )
    # ...but it refines a date-only name on the same day, and stands in for a missing one.
    assert pick_time({"TIFFTAG_DATETIME": "2015:07:11 10:00:08"}, ["S2_2015-07-11"]) == at
    assert pick_time({"TIFFTAG_DATETIME": "2015:07:11 10:00:08"}, ["B04"]) == at
    # Folder names count after the file stem.
    assert pick_time({}, ["B04", "2015-07-11", "scenes"]) == datetime(2015, 7, 11)
    assert pick_time({"DATETIME": "not a date"}, ["B04", "scenes"]) is None


@pytest.mark.parametrize(
    ("stem", "band", "scene"),
    [
        ("S2_20150711_B04", "red", "S2_20150711"),
        ("2015-07-11_red", "red", "2015-07-11"),
        ("B8A", "nir08", ""),
        ("b3", "green", ""),
        ("T33TWM_20150711T100008_B11_20m", "swir16", "T33TWM_20150711T100008"),
        ("S2_20150711_SCL", "scl", "S2_20150711"),
        ("2015-07-11_nir_reflectance", "nir", "2015-07-11_reflectance"),
        ("S2_L1C_2015-07-11", None, None),
        ("lulc", None, None),
    ],
)
def test_band_and_scene_name_from_file_name(stem: str, band: str | None, scene: str | None) -> None:
    hit = band_from_name(stem)
    if band is None:
        assert hit is None
        return
    assert hit is not None and hit[0] == band
    assert scene_name(stem, hit[1]) == scene


def test_bands_from_descriptions() -> None:
    real_order = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10")
    got = bands_from_descriptions((*real_order, "B11", "B12"))
    assert got["red"] == 4 and got["nir08"] == 9 and got["swir22"] == 13
    assert set(BANDS) <= set(got) and {"coastal", "nir09", "cirrus"} <= set(got)
    assert bands_from_descriptions(("red", None, "nir", "mask", "red")) == {"red": 1, "nir": 3}
    assert bands_from_descriptions(("2015-07-11T10:00:08", None)) == {}


def _band_file(
    path: str, band: str, when: datetime, folder: str = "/d", name: str = "S2"
) -> BandFile:
    return BandFile(BandRef(path), band, when, folder, name, box(0, 0, 1, 1))


def _header(
    path: Path,
    descriptions: tuple[str | None, ...] = (None,),
    *,
    dtype: str = "uint16",
    tags: Mapping[str, str] | None = None,
    crs: bool = True,
) -> RasterHeader:
    n = len(descriptions)
    return RasterHeader(
        path=path,
        count=n,
        descriptions=descriptions,
        dtypes=(dtype,) * n,
        nodata=(None,) * n,
        scales=(1.0,) * n,
        offsets=(0.0,) * n,
        tags=dict(tags or {}),
        footprint=box(14.0, 46.0, 14.1, 46.1) if crs else None,
    )


def test_classify_headers() -> None:
    root = Path("/data")
    multi = classify(_header(root / "S2_L1C_2015-07-11.tif", ("B02", "B04", "B08")), root)
    assert isinstance(multi, Entry) and multi.id == "S2_L1C_2015-07-11"
    assert multi.time == datetime(2015, 7, 11) and multi.bands["nir"].index == 3
    assert multi.bands["red"] == BandRef(str(root / "S2_L1C_2015-07-11.tif"), 2, 1e-4, 0.0, 0.0)
    # A per-date folder gives the date; the band token leaves the scene name.
    dated = classify(_header(root / "2015-07-11" / "B04.tif", ("B04",)), root)
    assert isinstance(dated, BandFile) and (dated.band, dated.name) == ("red", "")
    assert dated.time == datetime(2015, 7, 11)
    # Float files are reflectance already; a baseline tag only shifts integer DNs.
    tags = {"PROCESSING_BASELINE": "04.00", "DATETIME": "2022-03-01T10:00:00"}
    flt = classify(_header(root / "x_B04.tif", dtype="float32", tags=tags), root)
    dn = classify(_header(root / "x_B04.tif", tags=tags), root)
    assert isinstance(flt, BandFile) and isinstance(dn, BandFile)
    assert (flt.ref.scale, flt.ref.offset, flt.ref.nodata) == (1.0, 0.0, None)
    assert (dn.ref.scale, dn.ref.offset, dn.ref.nodata) == (1e-4, -0.1, 0.0)
    assert classify(_header(root / "lulc.tif"), root) == "unnamed"
    assert classify(_header(root / "S2_B04.tif"), root) == "undated"
    with pytest.raises(SourceError) as err:
        classify(_header(root / "2015-07-11_red.tif", crs=False), root)
    assert "2015-07-11_red.tif" in str(err.value) and "\n" not in str(err.value)


def test_group_band_files() -> None:
    t1, t2 = datetime(2015, 7, 11, 10), datetime(2015, 7, 31, 10)
    entries = group_band_files(
        [
            _band_file("/d/a_B04.tif", "red", t1),
            _band_file("/d/a_B08.tif", "nir", t1),
            _band_file("/d/b_B04.tif", "red", t2),
            _band_file("/e/2015-07-11/B04.tif", "red", t1, "/e/2015-07-11", ""),
        ]
    )
    assert [(e.id, e.time, sorted(e.bands)) for e in entries] == [
        ("S2", t1, ["nir", "red"]),
        ("2015-07-11", t1, ["red"]),
        ("S2", t2, ["red"]),
    ]
    with pytest.raises(SourceError) as err:
        group_band_files([_band_file("/d/a.tif", "red", t1), _band_file("/d/b.tif", "red", t1)])
    message = str(err.value)
    assert "/d/a.tif" in message and "/d/b.tif" in message and "red" in message
    assert "\n" not in message


def test_select_bands() -> None:
    full = frozenset(BAND_IDS)
    no_scl = full - {SCL}
    assert select_bands(ALL_BANDS, [("a", full)]) == ALL_BANDS
    assert select_bands(ALL_BANDS, [("a", full), ("b", no_scl)]) == BANDS
    assert select_bands(ALL_BANDS, [("a", no_scl - {"blue"})]) == BANDS[1:]
    assert select_bands(ALL_BANDS, []) == BANDS
    assert select_bands(("red", "nir", "red"), [("a", no_scl)]) == ("red", "nir")
    # SCL is optional even when asked for (what the monitor asks of L1C scenes).
    assert select_bands(("red", "nir", SCL), [("a", full), ("b", no_scl)]) == ("red", "nir")
    assert select_bands(("red", SCL), [("a", full)]) == ("red", SCL)
    with pytest.raises(SourceError) as err:
        select_bands(("red", "nir"), [("a", no_scl), ("S2_2015-07-31", no_scl - {"nir"})])
    assert "S2_2015-07-31" in str(err.value) and "nir" in str(err.value)
    with pytest.raises(SourceError, match="ndwi"):
        select_bands(("ndwi",), [("a", full)])
    with pytest.raises(SourceError, match="no reflectance band"):
        select_bands(ALL_BANDS, [("a", frozenset({SCL}))])


def test_cover_window_is_whole_pixels_with_margin() -> None:
    transform = rasterio.Affine(9.99, 0, 1000.3, 0, -9.98, 5000.7)
    win = cover_window((1100.0, 4800.0, 1300.0, 4950.0), transform, 100, 100, margin=2)
    assert win is not None
    assert all(float(v).is_integer() for v in (win.col_off, win.row_off, win.width, win.height))
    left, top = transform * (win.col_off, win.row_off)
    right, bottom = transform * (win.col_off + win.width, win.row_off + win.height)
    assert left <= 1100 - 2 * 9.99 + 1e-9 and right >= 1300 + 2 * 9.99 - 1e-9
    assert top >= 4950 + 2 * 9.98 - 1e-9 and bottom <= 4800 - 2 * 9.98 + 1e-9
    clipped = cover_window((0.0, 0.0, 1100.0, 9000.0), transform, 100, 100)
    assert clipped is not None and (clipped.col_off, clipped.row_off) == (0, 0)
    assert cover_window((-500.0, 0.0, -100.0, 100.0), transform, 100, 100) is None


def test_cover_window_picks_equal_whole_file_picks(scene_files: list[Path]) -> None:
    grid = geobox_for((465300.0, 5079500.0, 465700.0, 5079900.0), 32633, 10.0)
    want = _pick(scene_files[0], 4, grid)
    with rasterio.open(scene_files[0]) as src:
        got = warp_window(src, [4], [0.0], grid)[0]
    np.testing.assert_array_equal(got, want)


def test_item_entry_skips_previews_and_prefers_keyed_assets() -> None:
    item = pystac.Item("x", None, [14.0, 46.0, 14.1, 46.1], datetime(2024, 5, 1, 10), {})
    item.add_asset("red", pystac.Asset("/r.tif"))
    item.add_asset(
        "visual",
        pystac.Asset(
            "/tci.tif",
            roles=["visual"],
            extra_fields={"eo:bands": [{"common_name": c} for c in ("red", "green", "blue")]},
        ),
    )
    item.add_asset(
        "red-jp2", pystac.Asset("/r.jp2", extra_fields={"eo:bands": [{"common_name": "red"}]})
    )
    item.add_asset("SCL", pystac.Asset("/scl.tif"))
    item.add_asset("thumbnail", pystac.Asset("/t.jpg", roles=["thumbnail"]))
    entry = item_entry(item)
    assert not isinstance(entry, str)
    assert {b: r.path for b, r in entry.bands.items()} == {"red": "/r.tif", "scl": "/scl.tif"}
    assert entry.bands["scl"].scale == 1.0 and entry.bands["red"].scale is None
    empty = pystac.Item("y", None, [14.0, 46.0, 14.1, 46.1], datetime(2024, 5, 1), {})
    assert item_entry(empty) == "unnamed"


# --- settings and errors ----------------------------------------------------------------


def _one_line(err: pytest.ExceptionInfo[AgrimonError], *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_get_source_and_describe(tmp_path: Path) -> None:
    source = get_source("local", SourceSettings(local_path=tmp_path))
    assert isinstance(source, LocalSource) and source.name == "local"
    assert source.describe() == {
        "endpoint": str(tmp_path),
        "layout": "folder of GeoTIFFs or STAC items",
        "credentials": "none needed",
    }


def test_missing_local_path_is_a_config_error(tmp_path: Path) -> None:
    # The constructor accepts it (``agrimon sources`` lists the source); check() and the
    # first use refuse it.
    unset = LocalSource(SourceSettings())
    assert unset.describe()["endpoint"] == "not set: pass --local-path DIR"
    for call in (unset.check, partial(unset.find_scenes, ANY_TILE, START, END)):
        with pytest.raises(ConfigError) as err:
            call()
        _one_line(err, "--local-path DIR")
    nowhere = LocalSource(SourceSettings(local_path=tmp_path / "nowhere"))
    for call in (nowhere.check, partial(nowhere.find_scenes, ANY_TILE, START, END)):
        with pytest.raises(ConfigError) as err:
            call()
        _one_line(err, "nowhere", "does not exist", "--local-path")


def test_check_finds_an_empty_folder_before_any_scan(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        _source(tmp_path).check()
    _one_line(err, str(tmp_path), "no GeoTIFFs", "STAC catalog", "--local-path")


def test_check_passes_on_the_real_scenes(real: Path, scene_files: list[Path]) -> None:
    _source(real / "scenes").check()


def test_empty_folder_says_which_layouts_work(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(SourceError) as err:
        _source(tmp_path).find_scenes(ANY_TILE, START, END)
    _one_line(err, str(tmp_path), "no GeoTIFFs", "STAC catalog", "B04")


def test_undated_and_unnamed_files_are_explained(
    scene_files: list[Path], tiles: tuple[Tile, ...], tmp_path: Path
) -> None:
    data, profile, descriptions, _ = _read(scene_files[0])
    _write(tmp_path / "undated" / "scene.tif", data, profile, descriptions=descriptions)
    with pytest.raises(SourceError) as err:
        _source(tmp_path / "undated").find_scenes(tiles[0], START, END)
    _one_line(err, "no acquisition date", "scene.tif", "DATETIME", "file name")
    _write(tmp_path / "unnamed" / "S2_2015-07-11.tif", data, profile)
    with pytest.raises(SourceError) as err:
        _source(tmp_path / "unnamed").find_scenes(tiles[0], START, END)
    _one_line(err, "names its bands", "S2_2015-07-11.tif", "band descriptions")


def test_missing_band_names_scene_and_band(
    scene_files: list[Path], tiles: tuple[Tile, ...], tmp_path: Path
) -> None:
    written = _split_bands(scene_files[:2], tmp_path, lambda d, w, b: f"S2_{d}_{b}.tif")
    written[DAYS[1]]["B08"].unlink()
    source = _source(tmp_path)
    scenes = source.find_scenes(tiles[0], START, END)
    with pytest.raises(SourceError) as err:
        source.load(tiles[0], scenes, bands=("red", "nir"))
    _one_line(err, f"S2_{DAYS[1]}", "nir", "B08")
    # Asking for everything gives what every scene has.
    assert "nir" not in source.load(tiles[0], scenes)
    assert "red" in source.load(tiles[0], scenes)


def test_corrupt_tiff_is_named(
    scene_files: list[Path], tiles: tuple[Tile, ...], tmp_path: Path
) -> None:
    bad = tmp_path / "scan" / "S2_2015-07-11_B04.tif"
    bad.parent.mkdir()
    bad.write_bytes(b"II*\x00 this is not really a TIFF")
    with pytest.raises(SourceError) as err:
        _source(bad.parent).find_scenes(tiles[0], START, END)
    _one_line(err, str(bad), "cannot read")

    # A file that breaks after the scan fails when the pixels are computed.
    data, profile, descriptions, file_tags = _read(scene_files[0])
    later = _write(
        tmp_path / "load" / "scene.tif", data, profile, descriptions=descriptions, tags=file_tags
    )
    source = _source(later.parent)
    stack = source.load(tiles[0], source.find_scenes(tiles[0], START, END))
    later.write_bytes(later.read_bytes()[:600])
    with pytest.raises(SourceError) as err:
        stack.compute()
    _one_line(err, str(later), "cannot read")


def test_scenes_from_another_source_are_refused(tmp_path: Path) -> None:
    foreign = Scene("DEMO_S2_L2A_20240101", datetime(2024, 1, 1, 9))
    with pytest.raises(SourceError) as err:
        _source(tmp_path).load(ANY_TILE, [foreign])
    _one_line(err, "DEMO_S2_L2A_20240101", "find_scenes")
    with pytest.raises(SourceError) as err:
        _source(tmp_path).load(ANY_TILE, [])
    _one_line(err, ANY_TILE.id, "no scenes")


def test_broken_catalog_is_named(tmp_path: Path) -> None:
    (tmp_path / "catalog.json").write_text("{not json")
    with pytest.raises(SourceError) as err:
        _source(tmp_path).find_scenes(ANY_TILE, START, END)
    _one_line(err, "catalog.json", "STAC")


def test_blocks_on_the_file_grid_are_read_bit_for_bit_as_warped(tmp_path: Path) -> None:
    """The no-warp fast path (block on the file's own grid) equals nearest-neighbour warping."""
    from affine import Affine

    from agrimon.sources.local import grid_offset, read_bands

    rng = np.random.default_rng(7)
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    like = {"driver": "GTiff", "crs": "EPSG:32633", "transform": transform, "nodata": 0}
    dn = rng.integers(0, 12000, size=(1, 70, 90), dtype=np.uint16)
    dn[0, :5, :7] = 0
    classes = rng.integers(0, 12, size=(1, 70, 90), dtype=np.uint8)
    reflectance = np.where(dn > 0, dn / 10000, np.nan).astype(np.float32)
    red = _write(tmp_path / "S2_20240105_B04.tif", dn, like)
    scl = _write(tmp_path / "S2_20240105_SCL.tif", classes, like)
    nir = _write(tmp_path / "S2_20240105_B08.tif", reflectance, {**like, "nodata": np.nan})
    refs = {
        "red": BandRef(str(red), 1, 1e-4, -0.1, None),
        "nir": BandRef(str(nir), 1, None, 0.0, None),
        SCL: BandRef(str(scl), 1, 1.0, 0.0, None),
    }
    blocks = {
        "inside": geobox_for((500100.0, 4999500.0, 500400.0, 4999800.0), 32633, 10.0),
        "over the corner": geobox_for((499800.0, 4999200.0, 500300.0, 5000100.0), 32633, 10.0),
        "over the far edges": geobox_for((500700.0, 4999200.0, 501100.0, 4999600.0), 32633, 10.0),
        "outside": geobox_for((600000.0, 4000000.0, 600100.0, 4000100.0), 32633, 10.0),
        "shifted (warped)": GeoBox((20, 20), Affine(10, 0, 500103, 0, -10, 4999797), "EPSG:32633"),
    }
    assert grid_offset(transform, blocks["inside"].affine) == (20, 10)
    assert grid_offset(transform, blocks["over the corner"].affine) == (-10, -20)
    assert grid_offset(transform, blocks["shifted (warped)"].affine) is None
    assert grid_offset(transform, Affine(20, 0, 500000, 0, -20, 5000000)) is None
    for name, block in blocks.items():
        got = read_bands(refs, block)
        want = {
            "red": dn_to_reflectance(_pick(red, 1, block), scale=1e-4, offset=-0.1, nodata=None),
            "nir": _pick(nir, 1, block).astype(np.float32),
            SCL: _pick(scl, 1, block).astype(np.float32),
        }
        for band, values in want.items():
            assert got[band].dtype == np.float32
            np.testing.assert_array_equal(got[band], values, err_msg=f"{band}, {name}")
        with rasterio.open(red) as src:
            raw = warp_window(src, [1], [0.0], block)[0]
        np.testing.assert_array_equal(raw, _pick(red, 1, block), err_msg=name)
    assert np.isnan(read_bands(refs, blocks["outside"])["red"]).all()
