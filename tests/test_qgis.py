"""The demo products open in QGIS (Debian's python3-qgis) and in GDAL in the right place.

QGIS is not importable from the project venv, so a small PyQGIS script runs under the
system interpreter in a subprocess and reports what QGIS sees as JSON. The tests compare
that with what rasterio reads from the same files, independently of QGIS.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from agrimon.plan import RunPlan

#: The interpreter Debian's python3-qgis is installed for.
SYSTEM_PYTHON = Path("/usr/bin/python3")
#: The COGs every monitor run writes (stem -> numpy dtype of band 1).
COGS = {"ndvi_median": "float32", "clear_count": "uint16"}
#: Sample positions as (row, column) fractions of the raster; (0, 0) is the top-left pixel.
FRACTIONS = (
    (0.5, 0.5),
    (0.25, 0.25),
    (0.25, 0.75),
    (0.75, 0.25),
    (0.75, 0.75),
    (0.1, 0.9),
    (0.0, 0.0),
)
#: Tolerance on the extent, in metres.
EXTENT_TOL_M = 1e-6
#: Tolerance between the raster's lon/lat extent and the AOI bounds, in degrees.
LONLAT_TOL_DEG = 0.01
#: Prefix of the one stdout line that carries the probe's JSON result.
RESULT_PREFIX = "AGRIMON-QGIS-PROBE "

#: Run with SYSTEM_PYTHON; reads a JSON request on stdin, prints one RESULT_PREFIX line.
PROBE_SCRIPT = r"""
import json
import os
import sys

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

DTYPES = {
    "Byte": "uint8", "UInt16": "uint16", "Int16": "int16", "UInt32": "uint32",
    "Int32": "int32", "Float32": "float32", "Float64": "float64",
}


def rect(r):
    return [r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum()]


def dtype_name(code):
    for qgis_name, numpy_name in DTYPES.items():
        if code == getattr(Qgis.DataType, qgis_name):
            return numpy_name
    return str(code)


def main():
    request = json.load(sys.stdin)
    app = QgsApplication([], False)
    QgsApplication.setPrefixPath("/usr", True)
    QgsApplication.initQgis()
    context = QgsProject.instance().transformContext()
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    result = {"qgis_version": Qgis.QGIS_VERSION, "rasters": {}, "vectors": {}}
    layers = []  # kept alive until os._exit: no GDAL dataset closes (and writes) mid-run
    for item in request["rasters"]:
        layer = QgsRasterLayer(item["path"], item["name"])
        layers.append(layer)
        out = {"valid": layer.isValid()}
        result["rasters"][item["name"]] = out
        if not layer.isValid():
            out["error"] = layer.error().summary()
            continue
        provider = layer.dataProvider()
        to_wgs84 = QgsCoordinateTransform(layer.crs(), wgs84, context)
        from_wgs84 = QgsCoordinateTransform(wgs84, layer.crs(), context)
        samples = []
        for x, y in item["points"]:
            value, ok = provider.sample(QgsPointXY(x, y), 1)
            samples.append([value, ok])
        lon, lat = item["lonlat"]
        projected = from_wgs84.transform(QgsPointXY(lon, lat))
        out.update(
            crs=layer.crs().authid(),
            extent=rect(layer.extent()),
            extent_4326=rect(to_wgs84.transformBoundingBox(layer.extent())),
            width=layer.width(),
            height=layer.height(),
            band_count=layer.bandCount(),
            band_name=provider.generateBandName(1),
            data_type=dtype_name(provider.dataType(1)),
            has_nodata=provider.sourceHasNoDataValue(1),
            nodata=provider.sourceNoDataValue(1),
            samples=samples,
            lonlat_projected=[projected.x(), projected.y()],
            overviews=sum(1 for p in provider.buildPyramidList() if p.getExists()),
        )
    for item in request["vectors"]:
        layer = QgsVectorLayer(item["path"], item["name"], "ogr")
        layers.append(layer)
        out = {"valid": layer.isValid()}
        result["vectors"][item["name"]] = out
        if layer.isValid():
            out.update(
                crs=layer.crs().authid(),
                feature_count=layer.featureCount(),
                fields=[f.name() for f in layer.fields()],
                names=[f["name"] for f in layer.getFeatures()],
                extent=rect(layer.extent()),
            )
    print("AGRIMON-QGIS-PROBE " + json.dumps(result), flush=True)


try:
    main()
except BaseException as exc:  # report, then leave without QGIS teardown either way
    print("probe failed: %r" % (exc,), file=sys.stderr, flush=True)
    sys.stderr.flush()
    os._exit(1)
os._exit(0)  # exitQgis() can crash at teardown in 3.22 headless
"""


@dataclass(frozen=True)
class RasterTruth:
    """What rasterio reads from one COG, and the points the probe samples.

    Attributes:
        path: The COG.
        crs: Authority string, e.g. ``"EPSG:32734"``.
        bounds: ``(left, bottom, right, top)`` in the raster CRS.
        width: Columns.
        height: Rows.
        count: Bands.
        dtype: Numpy dtype name of band 1.
        nodata: The nodata value (NaN for float rasters).
        description: Description of band 1.
        overviews: Overview factors of band 1.
        points: Pixel-centre map coordinates to sample.
        values: Band 1 values at `points`, as read by rasterio.
        lonlat: A lon/lat point inside the AOI.
        lonlat_projected: `lonlat` projected to the raster CRS by rasterio.
    """

    path: Path
    crs: str
    bounds: tuple[float, float, float, float]
    width: int
    height: int
    count: int
    dtype: str
    nodata: float
    description: str
    overviews: tuple[int, ...]
    points: tuple[tuple[float, float], ...]
    values: tuple[float, ...]
    lonlat: tuple[float, float]
    lonlat_projected: tuple[float, float]

    def is_nodata(self, value: float) -> bool:
        """Whether a pixel value is this raster's nodata (NaN-aware).

        Args:
            value: A pixel value.

        Returns:
            True for the nodata value, or for NaN when nodata is NaN.
        """
        return math.isnan(value) if math.isnan(self.nodata) else value == self.nodata


def cog_paths(folder: Path) -> dict[str, Path]:
    """Find the COG assets of the run's STAC catalog by walking its JSON.

    Args:
        folder: The product folder holding ``catalog.json``.

    Returns:
        Asset file (resolved from its relative href) by file stem, over all items.
    """
    catalog_path = folder / "catalog.json"
    catalog = json.loads(catalog_path.read_text())
    found: dict[str, Path] = {}
    for link in catalog["links"]:
        if link["rel"] != "item":
            continue
        item_path = (catalog_path.parent / link["href"]).resolve()
        item = json.loads(item_path.read_text())
        for asset in item["assets"].values():
            if "image/tiff" in asset.get("type", ""):
                path = (item_path.parent / asset["href"]).resolve()
                found[path.stem] = path
    return found


def read_truth(path: Path, plan: RunPlan) -> RasterTruth:
    """Read a COG with rasterio and choose the pixel centres to sample.

    Args:
        path: The COG.
        plan: The run's plan, for a point inside the AOI.

    Returns:
        The facts the QGIS probe must reproduce.
    """
    inside = plan.aoi.geometry.representative_point()
    with rasterio.open(path) as src:
        band = src.read(1)
        xs, ys = warp_transform("EPSG:4326", src.crs, [inside.x], [inside.y])
        cells = [(int(fr * (src.height - 1)), int(fc * (src.width - 1))) for fr, fc in FRACTIONS]
        cells.append(src.index(xs[0], ys[0]))
        points = tuple((float(x), float(y)) for x, y in (src.xy(r, c) for r, c in cells))
        return RasterTruth(
            path=path,
            crs=src.crs.to_string(),
            bounds=tuple(src.bounds),
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=float(src.nodata),
            description=src.descriptions[0] or "",
            overviews=tuple(src.overviews(1)),
            points=points,
            values=tuple(float(band[r, c]) for r, c in cells),
            lonlat=(inside.x, inside.y),
            lonlat_projected=(float(xs[0]), float(ys[0])),
        )


def probe_env(tmp: Path) -> dict[str, str]:
    """Environment for the system interpreter: headless Qt, private HOME, no venv leakage.

    Args:
        tmp: A scratch folder for HOME and XDG_RUNTIME_DIR.

    Returns:
        The environment mapping.
    """
    leaky = {
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "GDAL_DATA",
        "GDAL_DRIVER_PATH",
        "PROJ_LIB",
        "PROJ_DATA",
    }
    env = {k: v for k, v in os.environ.items() if k not in leaky}
    runtime = tmp / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        XDG_RUNTIME_DIR=str(runtime),
        HOME=str(home),
        # Opening a raster makes QGIS compute statistics, which GDAL would cache in a
        # .aux.xml sidecar beside the product: keep the shared demo folder untouched.
        GDAL_PAM_ENABLED="NO",
    )
    return env


def run_probe(
    request: dict[str, Any],
    tmp: Path,
    *,
    script: str = PROBE_SCRIPT,
    prefix: str = RESULT_PREFIX,
    timeout: float = 180,
) -> dict[str, Any]:
    """Run a PyQGIS probe script under the system interpreter and parse its result.

    Args:
        request: The JSON request the script reads on stdin.
        tmp: A scratch folder for the subprocess's HOME and runtime dir.
        script: The script's source (default: this module's `PROBE_SCRIPT`).
        prefix: The start of the one stdout line that holds the JSON result.
        timeout: Seconds before the probe is killed.

    Returns:
        The decoded JSON result.
    """
    proc = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", script],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=probe_env(tmp),
        timeout=timeout,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(prefix)]
    report = f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, f"PyQGIS probe failed: {report}"
    assert lines, f"PyQGIS probe printed no result: {report}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(prefix))
    return result


def qgis_missing_reason() -> str | None:
    """Say why PyQGIS cannot be used here, or None when it can.

    Returns:
        A skip reason, or None.
    """
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is missing: QGIS tests need Debian's python3-qgis"
    proc = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import qgis.core"],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`{SYSTEM_PYTHON} -c 'import qgis.core'` failed ({last}): install python3-qgis"
    return None


@dataclass(frozen=True)
class Probe:
    """The QGIS probe's result beside the independent rasterio reading."""

    plan: RunPlan
    truths: dict[str, RasterTruth]
    zones_path: Path
    result: dict[str, Any]
    listing_before: frozenset[str]
    listing_after: frozenset[str]


def folder_listing(folder: Path) -> frozenset[str]:
    """Every path under a folder, relative to it.

    Args:
        folder: The folder.

    Returns:
        The relative paths as strings.
    """
    return frozenset(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def probe(demo_run: tuple[RunPlan, Path], tmp_path_factory: pytest.TempPathFactory) -> Probe:
    """Open the demo COGs and the AOI zones in QGIS once for the whole module."""
    reason = qgis_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    plan, folder = demo_run
    tmp = tmp_path_factory.mktemp("qgis")
    zones_path = tmp / "zones.geojson"
    plan.aoi.zones.to_file(zones_path, driver="GeoJSON")
    paths = cog_paths(folder)
    truths = {name: read_truth(path, plan) for name, path in paths.items()}
    request = {
        "rasters": [
            {"name": name, "path": str(t.path), "points": t.points, "lonlat": t.lonlat}
            for name, t in truths.items()
        ],
        "vectors": [{"name": "zones", "path": str(zones_path)}],
    }
    before = folder_listing(folder)
    result = run_probe(request, tmp)
    return Probe(plan, truths, zones_path, result, before, folder_listing(folder))


@pytest.mark.qgis
def test_catalog_lists_the_cogs(probe: Probe, demo_run: tuple[RunPlan, Path]) -> None:
    _, folder = demo_run
    assert set(probe.truths) == set(COGS)
    for name, truth in probe.truths.items():
        assert truth.path == (folder / f"{name}.tif").resolve()
        assert truth.dtype == COGS[name]


@pytest.mark.qgis
@pytest.mark.parametrize("name", sorted(COGS))
def test_raster_opens_with_grid_of_rasterio(probe: Probe, name: str) -> None:
    truth = probe.truths[name]
    seen = probe.result["rasters"][name]
    assert seen["valid"], seen.get("error")
    assert seen["crs"] == truth.crs == "EPSG:32734"
    assert seen["extent"] == pytest.approx(list(truth.bounds), abs=EXTENT_TOL_M, rel=0)
    assert (seen["width"], seen["height"]) == (truth.width, truth.height)
    assert seen["band_count"] == truth.count == 1
    assert seen["data_type"] == truth.dtype


@pytest.mark.qgis
@pytest.mark.parametrize("name", sorted(COGS))
def test_raster_band_description_and_nodata(probe: Probe, name: str) -> None:
    truth = probe.truths[name]
    seen = probe.result["rasters"][name]
    assert truth.description, f"{name} has no band description"
    # QGIS 3.22's GDAL provider names bands "Band 1: <GDAL description>".
    assert seen["band_name"] == f"Band 1: {truth.description}"
    if name == "ndvi_median":
        assert truth.description == "Median NDVI of clear observations"
        assert math.isnan(truth.nodata)
    else:
        assert truth.nodata == 65535
    assert seen["has_nodata"]
    assert truth.is_nodata(seen["nodata"])


@pytest.mark.qgis
@pytest.mark.parametrize("name", sorted(COGS))
def test_raster_samples_equal_rasterio_pixels(probe: Probe, name: str) -> None:
    truth = probe.truths[name]
    samples = probe.result["rasters"][name]["samples"]
    assert len(samples) == len(truth.points)
    valid = 0
    for (x, y), expected, (value, ok) in zip(truth.points, truth.values, samples, strict=True):
        if truth.is_nodata(expected):
            # QGIS reports a nodata pixel as "no value": ok False and NaN.
            where = f"({x}, {y}): QGIS {value} where rasterio has nodata"
            assert not ok, where
            assert math.isnan(value), where
        else:
            valid += 1
            where = f"({x}, {y}): QGIS {value}, rasterio {expected}"
            assert ok, where
            assert value == expected, where
    assert valid >= 3, f"only {valid} of the sampled pixels of {name} hold data"
    # The AOI's interior point, last in the list, must hold data.
    assert not truth.is_nodata(truth.values[-1])


@pytest.mark.qgis
@pytest.mark.parametrize("name", sorted(COGS))
def test_raster_lies_over_the_aoi(probe: Probe, name: str) -> None:
    truth = probe.truths[name]
    seen = probe.result["rasters"][name]
    aoi_bounds = probe.plan.aoi.geometry.bounds
    assert seen["extent_4326"] == pytest.approx(list(aoi_bounds), abs=LONLAT_TOL_DEG, rel=0)
    # QGIS and rasterio (two PROJ builds) project the same lon/lat to the same UTM point.
    assert seen["lonlat_projected"] == pytest.approx(list(truth.lonlat_projected), abs=1e-3, rel=0)
    left, bottom, right, top = truth.bounds
    x, y = seen["lonlat_projected"]
    assert left < x < right
    assert bottom < y < top


@pytest.mark.qgis
@pytest.mark.parametrize("name", sorted(COGS))
def test_qgis_sees_the_overviews(probe: Probe, name: str) -> None:
    truth = probe.truths[name]
    assert truth.overviews, f"{name} has no overviews"
    assert probe.result["rasters"][name]["overviews"] == len(truth.overviews)


@pytest.mark.qgis
def test_zones_open_as_vector_layer(probe: Probe) -> None:
    zones = probe.plan.aoi.zones
    seen = probe.result["vectors"]["zones"]
    assert seen["valid"]
    assert seen["crs"] == "EPSG:4326"
    assert seen["feature_count"] == len(zones)
    assert {"zone_id", "name"} <= set(seen["fields"])
    assert seen["names"] == [str(n) for n in zones["name"]]
    assert seen["extent"] == pytest.approx(list(zones.total_bounds), abs=1e-9, rel=0)


@pytest.mark.qgis
def test_opening_in_qgis_leaves_the_folder_untouched(probe: Probe) -> None:
    assert probe.listing_after == probe.listing_before


def gdalinfo_path() -> str | None:
    """Locate gdalinfo on PATH or in /usr/bin.

    Returns:
        Its path, or None when it is missing.
    """
    found = shutil.which("gdalinfo")
    if found is None and Path("/usr/bin/gdalinfo").exists():
        found = "/usr/bin/gdalinfo"
    return found


@pytest.mark.parametrize("name", sorted(COGS))
def test_gdalinfo_reports_a_cog(demo_run: tuple[RunPlan, Path], name: str) -> None:
    gdalinfo = gdalinfo_path()
    if gdalinfo is None:
        pytest.skip("gdalinfo is missing: install gdal-bin")
    _, folder = demo_run
    env = {k: v for k, v in os.environ.items() if k not in {"GDAL_DATA", "PROJ_LIB", "PROJ_DATA"}}
    proc = subprocess.run(
        [gdalinfo, "-json", str(folder / f"{name}.tif")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    info = json.loads(proc.stdout)
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    (band,) = info["bands"]
    assert band["block"] == [512, 512]
    assert len(band.get("overviews", [])) >= 1
    assert band["type"].lower() == COGS[name]
    with rasterio.open(folder / f"{name}.tif") as src:
        assert info["size"] == [src.width, src.height]
        assert band.get("description") == src.descriptions[0]
        assert np.allclose(info["geoTransform"], src.transform.to_gdal(), rtol=0, atol=EXTENT_TOL_M)
