"""STAC catalog of a run, validated offline; provenance manifest."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from pystac.errors import STACValidationError
from shapely.geometry import box

from agrimon.plan import RunPlan
from agrimon.products.catalog import (
    CLASSIFICATION_SCHEMA,
    EO_SCHEMA,
    ZoneProducts,
    mean_cloud_cover,
    write_catalog,
)
from agrimon.products.cog import Layer, write_cog
from agrimon.products.manifest import (
    RunClock,
    code_version,
    model_entry,
    sha256_file,
    write_manifest,
)

from .stac_offline import SchemaNotHeldError, requires_schemas, validate_offline

EPSG = 32734
TRANSFORM = Affine(10.0, 0.0, 200_000.0, 0.0, -10.0, 7_800_000.0)
CLASS_LAYER = Layer(
    "invasive_class",
    "Land cover class",
    "uint8",
    0,
    "1",
    "mode",
    ((0, 0, 0, 0), (26, 152, 80, 255), (166, 97, 26, 255)),
    ("", "open", "encroached"),
)
NDVI_LAYER = Layer("ndvi_median", "Median NDVI", "float32", float("nan"), "1")


def _items(catalog: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Each item of a catalog as written: its JSON file and content, by id."""
    links = json.loads(catalog.read_text())["links"]
    items = {}
    for link in links:
        if link["rel"] == "item":
            path = (catalog.parent / link["href"]).resolve()
            item = json.loads(path.read_text())
            items[item["id"]] = (path, item)
    return items


def _assets(catalog: Path) -> dict[Path, dict[str, Any]]:
    """Every asset of every item, by the file it points to."""
    assets = {}
    for path, item in _items(catalog).values():
        for asset in item["assets"].values():
            assert not asset["href"].startswith("/"), asset["href"]  # relative: movable
            assets[(path.parent / asset["href"]).resolve()] = asset
    return assets


def _files_to_list(folder: Path) -> set[Path]:
    """The run folder's files but the catalog's own JSON and the manifest written after it."""
    catalog = folder / "catalog.json"
    own = {catalog.resolve(), (folder / "manifest.json").resolve()}
    own |= {path for path, _ in _items(catalog).values()}
    return {p.resolve() for p in folder.rglob("*") if p.is_file()} - own


def _assert_every_file_listed_with_its_checksum(folder: Path) -> None:
    assets = _assets(folder / "catalog.json")
    assert set(assets) == _files_to_list(folder)
    for path, asset in assets.items():
        assert asset["file:size"] == path.stat().st_size, path
        assert asset["file:checksum"] == "1220" + sha256_file(path), path


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a class COG, an index COG, tables and the files a run adds."""
    folder = tmp_path_factory.mktemp("small-run")
    grid = GeoBox((40, 60), TRANSFORM, f"EPSG:{EPSG}")
    rng = np.random.default_rng(5)
    classes = rng.integers(0, 3, size=(40, 60)).astype(np.uint8)
    ndvi = rng.uniform(-0.1, 0.8, size=(40, 60)).astype(np.float32)
    ndvi[:5] = np.nan
    write_cog(folder / "invasive_class.tif", grid, [(grid, classes)], CLASS_LAYER)
    write_cog(folder / "ndvi_median.tif", grid, [(grid[:20, :], ndvi[:20])], NDVI_LAYER)
    (folder / "zonal_stats.csv").write_text("zone,ndvi\na,0.5\n")
    (folder / "change.csv").write_text("zone,delta\na,0.1\n")
    (folder / "ndvi_median.qml").write_text("<qgis/>\n")
    (folder / "ndvi_median.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "report.html").write_text("<html></html>\n")
    (folder / "small.qgz").write_bytes(b"PK\x05\x06" + bytes(18))
    (folder / "small.gpkg").write_bytes(b"SQLite format 3\x00")
    (folder / "charts").mkdir()
    (folder / "charts" / "ndvi.svg").write_text("<svg/>\n")
    footprint = box(18.1, -19.7, 18.2, -19.6)
    zone = ZoneProducts(
        EPSG,
        footprint,
        (40, 60),
        list(TRANSFORM)[:6],
        {
            "invasive_class": folder / "invasive_class.tif",
            "ndvi_median": folder / "ndvi_median.tif",
        },
        cloud_cover=mean_cloud_cover([10.0, None, 30.0]),
    )
    write_catalog(
        folder,
        run_id="small-2024",
        title="small run",
        start=date(2024, 1, 1),
        end=date(2024, 3, 31),
        zones=[zone],
        layers={layer.name: layer for layer in (CLASS_LAYER, NDVI_LAYER)},
        tables={"csv": folder / "zonal_stats.csv", "change_csv": folder / "change.csv"},
        aoi=footprint,
    )
    return folder


@requires_schemas
def test_the_demo_catalog_validates_offline(demo_run: tuple[RunPlan, Path]) -> None:
    plan, folder = demo_run
    ids = validate_offline(folder / "catalog.json")
    assert f"grootfontein-{plan.spec.period}-32734" in ids
    assert f"grootfontein-{plan.spec.period}-zones" in ids


def test_every_file_of_the_demo_run_is_an_asset_with_its_checksum(
    demo_run: tuple[RunPlan, Path],
) -> None:
    _, folder = demo_run
    _assert_every_file_listed_with_its_checksum(folder)
    links = json.loads((folder / "catalog.json").read_text())["links"]
    assert {"rel": "describedby", "href": "./manifest.json"}.items() <= next(
        link for link in links if link["rel"] == "describedby"
    ).items()


def test_raster_statistics_of_the_demo_run_equal_numpy(demo_run: tuple[RunPlan, Path]) -> None:
    _, folder = demo_run
    cogs = {p: a for p, a in _assets(folder / "catalog.json").items() if "raster:bands" in a}
    assert {p.name for p in cogs} >= {"ndvi_median.tif", "clear_count.tif"}
    for path, asset in cogs.items():
        (band,) = asset["raster:bands"]
        with rasterio.open(path) as src:
            values = src.read(1).astype(np.float64)
            assert band["data_type"] == src.dtypes[0]
            assert band["spatial_resolution"] == pytest.approx(src.res[0])
            assert band["unit"] == src.units[0]
            nodata = src.nodata
        valid = ~np.isnan(values)
        if nodata is not None and not np.isnan(nodata):
            valid &= values != nodata
            assert band["nodata"] == nodata
        else:
            assert band["nodata"] == "nan"
        picked = values[valid]
        stats = band["statistics"]
        assert stats["valid_percent"] == pytest.approx(100 * valid.mean(), rel=1e-12), path
        assert stats["minimum"] == picked.min()
        assert stats["maximum"] == picked.max()
        assert stats["mean"] == pytest.approx(picked.mean(), rel=1e-10), path
        assert stats["stddev"] == pytest.approx(picked.std(), rel=1e-10), path


@requires_schemas
def test_a_run_with_classes_styles_and_a_report_validates_and_lists_every_file(
    small_run: Path,
) -> None:
    catalog = small_run / "catalog.json"
    assert sorted(validate_offline(catalog)) == [
        "small-2024-32734",
        "small-2024-run",
        "small-2024-zones",
    ]
    _assert_every_file_listed_with_its_checksum(small_run)
    items = {item_id: item for item_id, (_, item) in _items(catalog).items()}
    run = items["small-2024-run"]["assets"]
    kinds = {key: (a["type"], a["roles"]) for key, a in run.items()}
    assert kinds["ndvi_median_qml"] == ("application/xml", ["style"])
    assert kinds["ndvi_median_png"] == ("image/png", ["overview"])
    assert kinds["report"] == ("text/html", ["report"])
    assert kinds["qgis_project"] == ("application/zip", ["project"])
    assert kinds["small_gpkg"] == ("application/geopackage+sqlite3", ["data"])
    assert kinds["invasive_class_tif_aux_xml"] == ("application/xml", ["metadata"])
    assert kinds["charts_ndvi_svg"][0] == "image/svg+xml"
    assert run["ndvi_median_qml"]["title"] == "QGIS style of Median NDVI"
    tables = items["small-2024-zones"]["assets"]
    assert set(tables) == {"zonal_stats_csv", "change_csv"}
    zone = items["small-2024-32734"]
    assert zone["properties"]["proj:code"] == f"EPSG:{EPSG}"
    assert zone["properties"]["eo:cloud_cover"] == 20.0
    assert EO_SCHEMA in zone["stac_extensions"]


def test_classification_classes_match_the_class_raster(small_run: Path) -> None:
    (_, zone) = _items(small_run / "catalog.json")["small-2024-32734"]
    assert CLASSIFICATION_SCHEMA in zone["stac_extensions"]
    asset = zone["assets"]["invasive_class"]
    with rasterio.open(small_run / "invasive_class.tif") as src:
        names = json.loads(src.tags(1)["CATEGORY_NAMES"])
        colours = src.colormap(1)
    want = [
        {
            "value": value,
            "name": name,
            "description": name,
            "color_hint": "{:02X}{:02X}{:02X}".format(*colours[value][:3]),
        }
        for value, name in enumerate(names)
        if name
    ]
    assert asset["classification:classes"] == want
    assert [c["name"] for c in want] == ["open", "encroached"]
    assert "classification:classes" not in zone["assets"]["ndvi_median"]


@requires_schemas
def test_a_tampered_catalog_fails_offline_validation(small_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(small_run, folder)
    path, item = _items(folder / "catalog.json")["small-2024-32734"]
    good = item["assets"]["ndvi_median"]["file:checksum"]
    item["assets"]["ndvi_median"]["file:checksum"] = "sha256:" + good[4:]
    path.write_text(json.dumps(item))
    with pytest.raises(STACValidationError, match=r"file/v2\.1\.0"):
        validate_offline(folder / "catalog.json")
    # A schema nobody holds fails loudly instead of reaching for the network.
    item["assets"]["ndvi_median"]["file:checksum"] = good
    item["stac_extensions"].append("https://stac-extensions.github.io/sat/v1.0.0/schema.json")
    path.write_text(json.dumps(item))
    with pytest.raises(Exception, match="not held offline") as err:
        validate_offline(folder / "catalog.json")
    assert isinstance(err.value, SchemaNotHeldError) or isinstance(
        err.value.__cause__, SchemaNotHeldError
    )


def test_mean_cloud_cover_ignores_unknown_scenes() -> None:
    assert mean_cloud_cover([None, None]) is None
    assert mean_cloud_cover([12.5, None, 7.5, float("nan")]) == 10.0


def test_model_entry_records_the_checksum_of_the_file_loaded(tmp_path: Path) -> None:
    model = tmp_path / "yield" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    digest = sha256_file(model)
    entry = model_entry("yield", model.parent, digest, crop="maize")
    assert entry == {
        "task": "yield",
        "path": str(model.parent),
        "sha256": digest,
        "bytes": 7,
        "crop": "maize",
    }
    wrong = model_entry("invasive", model, "0" * 64)
    assert wrong["sha256"] == digest and wrong["card_sha256"] == "0" * 64
    gone = model_entry("invasive", tmp_path / "missing.pt", "ab" * 32)
    assert gone["sha256"] == "ab" * 32 and "bytes" not in gone


def test_manifest_records_provenance_times_and_checksums(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.csv").write_text("x\n")
    clock = RunClock(datetime.now(UTC) - timedelta(seconds=5))
    with clock.stage("tiles"):
        pass
    with clock.stage("tiles"):
        pass
    with clock.stage("tables"):
        pass
    record = {
        "flow": "monitor",
        "parameters": {"start": "2024-01-01", "tile_px": 512},
        "source": {"name": "demo"},
        "models": [model_entry("invasive", tmp_path / "a.tif", None, feature_set="s2/v1")],
        "tiles": [
            {"id": "t1", "scenes": ["S2_B", "S2_A"]},
            {"id": "t2", "scenes": ["S2_B", {"id": "S2_C", "cloud_cover": 3.0}]},
        ],
    }
    path = write_manifest(tmp_path, record, started=clock.started, timings=clock.timings)
    manifest = json.loads(path.read_text())
    assert manifest["parameters"] == record["parameters"]
    assert manifest["scenes"] == ["S2_A", "S2_B", "S2_C"]
    assert manifest["models"][0]["sha256"] == sha256_file(tmp_path / "a.tif")
    assert manifest["code"] == code_version()
    run = manifest["run"]
    assert list(run) == ["started", "finished", "seconds", "stages"]
    started, finished = (datetime.fromisoformat(run[k]) for k in ("started", "finished"))
    assert started.tzinfo is not None and finished > started
    assert run["seconds"] >= 5
    assert list(run["stages"]) == ["tiles", "tables"]
    assert all(s >= 0 for s in run["stages"].values())
    assert manifest["created"] == run["finished"]
    assert manifest["files"] == {
        "a.tif": {"bytes": 3, "sha256": sha256_file(tmp_path / "a.tif")},
        "sub/b.csv": {"bytes": 2, "sha256": sha256_file(tmp_path / "sub" / "b.csv")},
    }
    # A naive start is UTC; without times the manifest still says when it was written.
    naive = datetime(2024, 5, 1, 12, 0, 0)
    again = json.loads(write_manifest(tmp_path, {}, started=naive).read_text())
    assert again["run"]["started"] == "2024-05-01T12:00:00+00:00"
    assert "stages" not in again["run"]
    assert set(json.loads(write_manifest(tmp_path, {}).read_text())["run"]) == {"finished"}
