"""A run's QGIS project opens in QGIS (Debian's python3-qgis) styled, grouped and in place.

A PyQGIS script runs under the system interpreter (QGIS is not importable from the venv),
reads the run's ``.qgz`` with ``QgsProject.read``, loads each product alone as a user
adding it would (styles from the ``.qml`` beside a raster, from ``layer_styles`` in the
GeoPackage), renders the map to PNGs, and reports what QGIS sees as JSON. The checks
compare that with the symbology and with what rasterio and pyogrio read from the files.

The checks take a probed folder, so they also run on any run folder by hand::

    .venv/bin/python -m tests.test_qgis_project outputs/<aoi>/<start>_<end>
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
from numpy.typing import NDArray
from PIL import Image

from agrimon.plan import RunPlan
from agrimon.products.change import CHANGE_LAYER
from agrimon.products.cog import Layer
from agrimon.products.project import GROUPS, ProjectLayer, write_project
from agrimon.products.qgis import raster_group, vector_group, write_qgis_products
from agrimon.products.styles import raster_qml, vector_qml
from agrimon.products.symbology import (
    Categorized,
    Graduated,
    Outline,
    StyleContext,
    VectorSymbology,
    raster_symbology,
    vector_symbology,
)
from tests.test_qgis import qgis_missing_reason, run_probe

#: Prefix of the one stdout line that carries the probe's JSON result.
RESULT_PREFIX = "AGRIMON-QGIS-PROJECT "
#: Width of the rendered maps, pixels.
RENDER_PX = 400
#: Renderer type QGIS reports for each kind of vector symbology.
VECTOR_RENDERERS = {Graduated: "graduatedSymbol", Categorized: "categorizedSymbol"}
#: Share of a rendered map's pixels that must differ from the white background.
MIN_DRAWN = 0.05
#: Tolerance on extents, in CRS units (metres); QGIS and GDAL read the same numbers.
EXTENT_TOL = 1e-3

#: Run with SYSTEM_PYTHON; reads a JSON request on stdin, prints one RESULT_PREFIX line.
PROBE_SCRIPT = r"""
import json
import os
import sys
import zipfile

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtXml import QDomDocument


def rect(r):
    return [r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum()]


def colour(c):
    return c.name()


def raster_style(layer):
    renderer = layer.renderer()
    out = {"renderer": renderer.type()}
    out["legend"] = [[label, colour(c)] for label, c in renderer.legendSymbologyItems()]
    if renderer.type() == "paletted":
        out["classes"] = [[c.value, c.label, colour(c.color)] for c in renderer.classes()]
    elif renderer.type() == "singlebandpseudocolor":
        shader = renderer.shader().rasterShaderFunction()
        out.update(
            band=renderer.band(),
            minimum=renderer.classificationMin(),
            maximum=renderer.classificationMax(),
            ramp_type=int(shader.colorRampType()),
            clip=shader.clip(),
            items=[[i.value, colour(i.color), i.label] for i in shader.colorRampItemList()],
            limits=int(renderer.minMaxOrigin().limits()),
        )
    return out


def symbol_fill(symbol):
    layer = symbol.symbolLayer(0)
    no_fill = layer.brushStyle() == Qt.NoBrush if hasattr(layer, "brushStyle") else False
    return {"fill": None if no_fill else colour(layer.color())}


def vector_style(layer):
    renderer = layer.renderer()
    out = {"renderer": renderer.type(), "fields": [f.name() for f in layer.fields()]}
    if renderer.type() == "graduatedSymbol":
        out["attr"] = renderer.classAttribute()
        out["ranges"] = [
            [r.lowerValue(), r.upperValue(), r.label(), colour(r.symbol().color())]
            for r in renderer.ranges()
        ]
    elif renderer.type() == "categorizedSymbol":
        out["attr"] = renderer.classAttribute()
        out["categories"] = [
            [c.value(), c.label(), colour(c.symbol().color())] for c in renderer.categories()
        ]
    elif renderer.type() == "singleSymbol":
        out.update(symbol_fill(renderer.symbol()))
    out["labels"] = None
    if layer.labelsEnabled() and layer.labeling() is not None:
        settings = layer.labeling().settings()
        out["labels"] = {"expression": settings.fieldName, "is_expression": settings.isExpression}
    out["feature_count"] = layer.featureCount()
    return out


def describe(layer):
    out = {
        "name": layer.name(),
        "valid": layer.isValid(),
        "source": layer.source(),
        "crs": layer.crs().authid(),
        "extent": rect(layer.extent()),
    }
    if not layer.isValid():
        out["error"] = layer.error().summary()
        return out
    if isinstance(layer, QgsRasterLayer):
        out["kind"] = "raster"
        out.update(raster_style(layer))
    else:
        out["kind"] = "vector"
        out.update(vector_style(layer))
    return out


def render(layers, crs, extent, path, px):
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setBackgroundColor(QColor(255, 255, 255))
    height = round(px * extent.height() / extent.width())
    settings.setOutputSize(QSize(px, max(height, 1)))
    settings.setExtent(extent)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(path, "PNG")
    return {"path": path, "errors": [e.message for e in job.errors()]}


def canvas_view(qgs_text):
    doc = QDomDocument()
    doc.setContent(qgs_text)
    nodes = doc.elementsByTagName("mapcanvas")
    if nodes.count() == 0:
        return None
    settings = QgsMapSettings()
    settings.readXml(nodes.item(0))
    return {"extent": rect(settings.extent()), "crs": settings.destinationCrs().authid()}


def main():
    request = json.load(sys.stdin)
    app = QgsApplication([], False)
    QgsApplication.setPrefixPath("/usr", True)
    QgsApplication.initQgis()
    result = {"qgis_version": Qgis.QGIS_VERSION}
    keep = []  # every layer stays alive until os._exit: no GDAL dataset closes mid-run
    project = QgsProject.instance()
    result["read"] = project.read(request["project"])
    with zipfile.ZipFile(request["project"]) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".qgs"))
        result["canvas"] = canvas_view(archive.read(name).decode("utf-8"))
    view = project.viewSettings().defaultViewExtent()
    result.update(
        title=project.title(),
        crs=project.crs().authid(),
        absolute_paths=project.readBoolEntry("Paths", "/Absolute", True)[0],
        view={"extent": rect(view), "crs": view.crs().authid()},
    )
    root = project.layerTreeRoot()
    result["groups"] = [
        [group.name(), [node.layerId() for node in group.findLayers()]]
        for group in root.children()
        if group.nodeType() == 0  # QgsLayerTreeNode.NodeGroup
    ]
    result["order"] = [layer.id() for layer in root.layerOrder()]
    result["visible"] = [node.layerId() for node in root.findLayers() if node.isVisible()]
    result["layers"] = {lid: describe(layer) for lid, layer in project.mapLayers().items()}
    # Each product alone, added as a user would: styled by its .qml or its layer_styles.
    result["alone"] = {}
    for item in request["rasters"]:
        layer = QgsRasterLayer(item["path"], item["name"])
        keep.append(layer)
        result["alone"][item["name"]] = describe(layer)
    for item in request["vectors"]:
        layer = QgsVectorLayer(item["path"], item["name"], "ogr")
        keep.append(layer)
        result["alone"][item["name"]] = describe(layer)
    # Renders: the project as it opens, then two layers each alone.
    crs = project.crs()
    extent = view if not view.isNull() else project.layerTreeRoot().layerOrder()[0].extent()
    visible = [project.mapLayer(lid) for lid in result["visible"]]
    out, px = request["out"], request["px"]
    whole = render(visible, crs, extent, os.path.join(out, "project.png"), px)
    result["renders"] = {"project": whole}
    for lid in request["render_alone"]:
        path = os.path.join(out, lid + ".png")
        result["renders"][lid] = render([project.mapLayer(lid)], crs, extent, path, px)
    print("AGRIMON-QGIS-PROJECT " + json.dumps(result), flush=True)


try:
    main()
except BaseException as exc:  # report, then leave without QGIS teardown either way
    print("probe failed: %r" % (exc,), file=sys.stderr, flush=True)
    os._exit(1)
os._exit(0)  # exitQgis() can crash at teardown in 3.22 headless
"""


@dataclass(frozen=True)
class ProjectProbe:
    """What QGIS saw of a run folder's project, beside what the files say.

    Attributes:
        folder: The run folder.
        project: The ``.qgz``.
        gpkg: The run's GeoPackage.
        qgs: The ``.qgs`` text inside the project.
        result: The probe's JSON report.
        ids: Project layer id by datasource as written (``./ndvi_median.tif``).
        rasters: COG path by product name (file stem).
        vectors: Spatial layer names of the GeoPackage, with their fields.
        epsg: The run's CRS: the GeoPackage's ``aoi`` layer's.
        touched: Files of the folder that the probe added, removed or changed.
    """

    folder: Path
    project: Path
    gpkg: Path
    qgs: str
    result: dict[str, Any]
    ids: dict[str, str]
    rasters: dict[str, Path]
    vectors: dict[str, list[str]]
    epsg: int
    touched: list[str]

    def layer(self, source: str) -> dict[str, Any]:
        """What QGIS saw of the project layer with datasource ``source``."""
        seen: dict[str, Any] = self.result["layers"][self.ids[source]]
        return seen

    def png(self, key: str) -> NDArray[np.uint8]:
        """A rendered map as an RGB(A) array: ``project`` or a layer id."""
        with Image.open(self.result["renders"][key]["path"]) as image:
            return np.asarray(image.convert("RGB"))


def run_stem(folder: Path) -> str:
    """File stem of a run's project and GeoPackage: ``<aoi>_<start>_<end>``."""
    return f"{folder.parent.name}_{folder.name}"


def style_name(layer: str, fields: list[str]) -> str:
    """The name a GeoPackage layer's style goes by: zones without a map are an outline."""
    if layer == "zones" and "encroached_percent" not in fields:
        return "zones_outline"
    return layer


def probe_folder(folder: Path, tmp: Path) -> ProjectProbe:
    """Open a run folder's project and products in QGIS and report.

    Args:
        folder: The run folder (``<out>/<aoi>/<start>_<end>``).
        tmp: Scratch folder for the probe's HOME and the rendered PNGs.

    Returns:
        The probe.
    """
    project = folder / f"{run_stem(folder)}.qgz"
    gpkg = folder / f"{run_stem(folder)}.gpkg"
    assert project.exists(), f"the run wrote no QGIS project {project.name}"
    with zipfile.ZipFile(project) as archive:
        (name,) = (n for n in archive.namelist() if n.endswith(".qgs"))
        qgs = archive.read(name).decode("utf-8")
    root = ET.fromstring(qgs)
    ids = {str(ml.findtext("datasource")): str(ml.findtext("id")) for ml in root.iter("maplayer")}
    rasters = {p.stem: p for p in sorted(folder.glob("*.tif"))}
    vectors = {
        layer: list(pyogrio.read_info(gpkg, layer=layer)["fields"])
        for layer, geometry in pyogrio.list_layers(gpkg)
        if geometry
    }
    epsg = int(str(pyogrio.read_info(gpkg, layer="aoi")["crs"]).split(":")[1])
    # Two layers drawn alone must differ: the NDVI median and the clear-sky count, which
    # every run writes (else the first two rasters of the project).
    raster_ids = [
        ids[f"./{p.name}"]
        for p in sorted(
            rasters.values(), key=lambda p: p.stem not in ("ndvi_median", "clear_count")
        )
        if f"./{p.name}" in ids
    ]
    out = tmp / "renders"
    out.mkdir(parents=True, exist_ok=True)
    request = {
        "project": str(project),
        "out": str(out),
        "px": RENDER_PX,
        "rasters": [{"name": n, "path": str(p)} for n, p in rasters.items()],
        "vectors": [{"name": layer, "path": f"{gpkg}|layername={layer}"} for layer in vectors]
        + [{"name": p.name, "path": str(p)} for p in geojson_twins(folder, vectors)],
        "render_alone": raster_ids[:2],
    }
    before = folder_state(folder)
    result = run_probe(request, tmp, script=PROBE_SCRIPT, prefix=RESULT_PREFIX, timeout=300)
    after = folder_state(folder)
    touched = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return ProjectProbe(folder, project, gpkg, qgs, result, ids, rasters, vectors, epsg, touched)


def geojson_twins(folder: Path, layers: Iterable[str]) -> list[Path]:
    """The GeoJSON copies of GeoPackage layers, named after them (``yield_forecast.geojson``)."""
    return [
        folder / f"{layer}.geojson" for layer in layers if (folder / f"{layer}.geojson").exists()
    ]


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


# --- the checks, each on a probed folder ----------------------------------------------------


def check_project_reads_in_the_run_crs(probe: ProjectProbe) -> None:
    """The project reads, in the run's UTM CRS, with relative paths."""
    seen = probe.result
    assert seen["read"], "QgsProject.read failed"
    assert seen["crs"] == f"EPSG:{probe.epsg}"
    assert seen["absolute_paths"] is False
    assert seen["title"] == run_stem(probe.folder)


def check_every_layer_valid_and_in_place(probe: ProjectProbe) -> None:
    """Every project layer is valid, its CRS and extent those of its file."""
    layers = probe.result["layers"]
    assert layers, "the project has no layers"
    for lid, seen in layers.items():
        assert seen["valid"], f"{lid}: {seen.get('error')}"
    for name, path in probe.rasters.items():
        seen = probe.layer(f"./{path.name}")
        with rasterio.open(path) as src:
            assert seen["crs"] == src.crs.to_string(), name
            assert seen["extent"] == pytest.approx(list(src.bounds), abs=EXTENT_TOL, rel=0)
        assert Path(seen["source"]).resolve() == path.resolve()
    for layer in probe.vectors:
        seen = probe.layer(f"./{probe.gpkg.name}|layername={layer}")
        info = pyogrio.read_info(probe.gpkg, layer=layer, force_total_bounds=True)
        assert seen["crs"] == info["crs"], layer
        assert seen["extent"] == pytest.approx(list(info["total_bounds"]), abs=EXTENT_TOL, rel=0)
        assert Path(seen["source"].split("|")[0]).resolve() == probe.gpkg.resolve()


def check_initial_view_is_the_aoi(probe: ProjectProbe) -> None:
    """The project opens on the AOI (both the canvas and the default view extent)."""
    aoi = pyogrio.read_info(probe.gpkg, layer="aoi", force_total_bounds=True)["total_bounds"]
    width, height = aoi[2] - aoi[0], aoi[3] - aoi[1]
    for where in ("view", "canvas"):
        seen = probe.result[where]
        assert seen is not None, f"the project has no {where}"
        assert seen["crs"] == f"EPSG:{probe.epsg}", where
        xmin, ymin, xmax, ymax = seen["extent"]
        # The whole AOI in view, with no more than a 20 % margin.
        assert xmin <= aoi[0] + EXTENT_TOL and ymin <= aoi[1] + EXTENT_TOL, where
        assert xmax >= aoi[2] - EXTENT_TOL and ymax >= aoi[3] - EXTENT_TOL, where
        assert xmax - xmin <= 1.2 * width and ymax - ymin <= 1.2 * height, where


def check_groups_in_order_with_aoi_on_top(probe: ProjectProbe) -> None:
    """Groups in the documented order, none empty, the AOI outline the top layer."""
    groups = probe.result["groups"]
    names = [name for name, _ in groups]
    assert names == [g for g in GROUPS if g in names], names
    assert all(ids for _, ids in groups), "an empty group"
    aoi = probe.ids[f"./{probe.gpkg.name}|layername=aoi"]
    assert groups[0][0] == "Zones and AOI"
    assert groups[0][1][0] == aoi
    assert probe.result["order"][0] == aoi
    assert aoi in probe.result["visible"]
    # Every map layer is in the tree once.
    in_tree = [lid for _, ids in groups for lid in ids]
    assert sorted(in_tree) == sorted(probe.result["layers"])


def check_datasources_relative(probe: ProjectProbe) -> None:
    """The ``.qgs`` names every file relative to itself, never by an absolute path."""
    root = ET.fromstring(probe.qgs)
    sources = [str(ml.findtext("datasource")) for ml in root.iter("maplayer")]
    assert sources
    assert all(s.startswith("./") for s in sources), sources
    assert str(probe.folder.resolve()) not in probe.qgs
    tree_sources = [n.get("source", "") for n in root.iter("layer-tree-layer")]
    assert sorted(tree_sources) == sorted(sources)


def class_names(path: Path) -> list[tuple[int, str]]:
    """A class raster's ``(value, name)`` pairs from its ``CATEGORY_NAMES`` tag (nodata out)."""
    with rasterio.open(path) as src:
        names = json.loads(src.tags(1)["CATEGORY_NAMES"])
    return [(value, name) for value, name in enumerate(names) if name]


def is_class_raster(path: Path) -> bool:
    """Whether a COG is a class raster (it names its pixel values)."""
    with rasterio.open(path) as src:
        return "CATEGORY_NAMES" in src.tags(1)


def check_raster_styles(probe: ProjectProbe) -> None:
    """Class rasters paletted with their class names, the others a fixed colour ramp.

    Checked twice: as the project draws them, and as QGIS draws a COG added alone (from
    the ``.qml`` beside it).
    """
    assert "ndvi_median" in probe.rasters
    for name, path in probe.rasters.items():
        for seen in (probe.layer(f"./{path.name}"), probe.result["alone"][name]):
            if is_class_raster(path):
                assert seen["renderer"] == "paletted", name
                assert [(v, n) for v, n, _ in seen["classes"]] == class_names(path)
                # The legend shows the class names.
                assert [label for label, _ in seen["legend"]] == [n for _, n in class_names(path)]
                continue
            assert seen["renderer"] == "singlebandpseudocolor", name
            assert seen["band"] == 1
            assert seen["ramp_type"] == 0, "not an interpolated ramp"  # Interpolated
            assert seen["clip"] is False, "values beyond the range are not drawn"
            assert seen["limits"] == 0, "QGIS would stretch the ramp to the data"  # None
            values = [v for v, _, _ in seen["items"]]
            assert values == sorted(values)
            assert seen["minimum"] == values[0] and seen["maximum"] == values[-1]
            assert seen["minimum"] < seen["maximum"]
            if name == "ndvi_median":
                assert (seen["minimum"], seen["maximum"]) == pytest.approx((-0.2, 0.9))
                assert seen["items"][0][1] == "#a6611a"  # brown: bare
                assert seen["items"][-1][1] == "#00441b"  # dark green: dense
            if name.endswith("_doy"):
                # Days of the year read as dates in the legend.
                assert "1 Jul" in [label for _, _, label in seen["items"]]


def check_vector_styles(probe: ProjectProbe) -> None:
    """Each GeoPackage layer drawn by its symbology: in the project and loaded alone.

    Loaded alone, QGIS applies the default style stored in the GeoPackage's
    ``layer_styles`` (and to a GeoJSON copy of the layer, the ``.qml`` beside it); without
    it a layer would come up in a random single colour.
    """
    twins = {p.stem: p.name for p in geojson_twins(probe.folder, probe.vectors)}
    for layer, fields in probe.vectors.items():
        try:
            sym = vector_symbology(style_name(layer, fields))
        except KeyError:
            continue
        seen = [probe.layer(f"./{probe.gpkg.name}|layername={layer}")]
        seen.append(probe.result["alone"][layer])
        if layer in twins:
            seen.append(probe.result["alone"][twins[layer]])
        for one in seen:
            check_vector_style(layer, one, sym)


def check_vector_style(layer: str, seen: dict[str, Any], sym: VectorSymbology) -> None:
    """One vector layer as QGIS sees it against its symbology."""
    assert seen["valid"], layer
    if isinstance(sym, Outline):
        assert seen["renderer"] == "singleSymbol", layer
        assert seen["fill"] is None, f"{layer}: an outline has no fill"
    else:
        assert seen["renderer"] == VECTOR_RENDERERS[type(sym)], layer
        assert seen["attr"] == sym.field, layer
    if isinstance(sym, Graduated):
        assert [(lo, hi) for lo, hi, _, _ in seen["ranges"]] == list(
            zip(sym.breaks[:-1], sym.breaks[1:], strict=True)
        )
        assert [c for _, _, _, c in seen["ranges"]] == list(sym.colors)
    if isinstance(sym, Categorized):
        assert [(v, lb, c) for v, lb, c in seen["categories"]] == list(sym.entries)
    if sym.label:
        assert seen["labels"] == {"expression": sym.label, "is_expression": True}, layer
    else:
        assert seen["labels"] is None, layer


def check_rendered_maps(probe: ProjectProbe) -> None:
    """The project draws a map; two layers drawn alone draw different maps."""
    renders = probe.result["renders"]
    assert all(not r["errors"] for r in renders.values()), renders
    project = probe.png("project")
    assert project.shape[1] == RENDER_PX
    drawn = np.any(project != 255, axis=-1).mean()
    assert drawn > MIN_DRAWN, f"only {drawn:.1%} of the project map is drawn"
    assert len(np.unique(project.reshape(-1, 3), axis=0)) > 10, "the map is nearly one colour"
    alone = [k for k in renders if k != "project"]
    assert len(alone) == 2
    first, second = (probe.png(k) for k in alone)
    for image, key in ((first, alone[0]), (second, alone[1])):
        assert np.any(image != 255, axis=-1).mean() > MIN_DRAWN, f"{key} draws nothing"
    assert first.shape == second.shape
    assert np.any(first != second, axis=-1).mean() > MIN_DRAWN, "two layers draw the same map"


def check_folder_untouched(probe: ProjectProbe) -> None:
    """Opening and drawing the project writes nothing into the run folder."""
    assert probe.touched == []


CHECKS = (
    check_project_reads_in_the_run_crs,
    check_every_layer_valid_and_in_place,
    check_initial_view_is_the_aoi,
    check_groups_in_order_with_aoi_on_top,
    check_datasources_relative,
    check_raster_styles,
    check_vector_styles,
    check_rendered_maps,
    check_folder_untouched,
)


# --- tests on the demo run ------------------------------------------------------------------


@pytest.fixture(scope="module", params=["demo"])
def run(request: pytest.FixtureRequest, demo_run: tuple[RunPlan, Path]) -> tuple[RunPlan, Path]:
    """The runs whose projects are checked: the small demo run."""
    assert request.param == "demo"
    return demo_run


@pytest.fixture(scope="module")
def probe(run: tuple[RunPlan, Path], tmp_path_factory: pytest.TempPathFactory) -> ProjectProbe:
    """Open the run's project in QGIS once for the whole module."""
    reason = qgis_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    _, folder = run
    return probe_folder(folder, tmp_path_factory.mktemp("qgis-project"))


@pytest.mark.qgis
@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_project_in_qgis(probe: ProjectProbe, check: Any) -> None:
    check(probe)


@pytest.mark.qgis
def test_project_crs_is_the_runs_utm_zone(probe: ProjectProbe, run: tuple[RunPlan, Path]) -> None:
    plan, _ = run
    epsg = min({t.tile.epsg for t in plan.tiles})
    assert probe.epsg == epsg
    assert probe.result["crs"] == f"EPSG:{epsg}"


@pytest.mark.qgis
def test_probe_sees_the_demo_products(probe: ProjectProbe) -> None:
    assert {"ndvi_median", "clear_count"} <= set(probe.rasters)
    assert {"aoi", "zones"} <= set(probe.vectors)
    assert not math.isnan(probe.layer("./ndvi_median.tif")["minimum"])


# --- the project file and the entry point, without QGIS ---------------------------------------

EXTENT = (200_000.0, 7_820_000.0, 210_000.0, 7_830_000.0)
NDVI = Layer("ndvi_median", "Median NDVI", "float32", float("nan"), "1")


def project_layers() -> list[ProjectLayer]:
    """A raster and two vectors, given in an order the project must rearrange."""
    return [
        ProjectLayer(
            "NDVI median",
            "ndvi_median.tif",
            "raster",
            None,
            "Vegetation indices",
            raster_qml(raster_symbology(NDVI)),
            32734,
            EXTENT,
            visible=False,
        ),
        ProjectLayer(
            "Yield",
            "run.gpkg",
            "vector",
            "yield_forecast",
            "Yield",
            vector_qml(vector_symbology("yield_forecast")),
            32734,
            EXTENT,
        ),
        ProjectLayer(
            "AOI",
            "run.gpkg",
            "vector",
            "aoi",
            "Zones and AOI",
            vector_qml(vector_symbology("aoi")),
            32734,
            EXTENT,
        ),
    ]


def read_qgs(path: Path) -> ET.Element:
    """The one ``.qgs`` of a ``.qgz``, named after it."""
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == [f"{path.stem}.qgs"]
        return ET.fromstring(archive.read(f"{path.stem}.qgs"))


def test_project_layout(tmp_path: Path) -> None:
    out = write_project(
        tmp_path / "run.qgz", title="run", epsg=32734, extent=EXTENT, layers=project_layers()
    )
    assert out == tmp_path / "run.qgz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.qgz"]  # no temporary left
    root = read_qgs(out)
    assert root.get("version", "").startswith("3.22")
    assert root.findtext("title") == "run"
    assert root.findtext("projectCrs/spatialrefsys/authid") == "EPSG:32734"
    assert "UTM zone 34S" in root.findtext("projectCrs/spatialrefsys/wkt", "")
    assert root.findtext("properties/Paths/Absolute") == "false"
    tree = root.find("layer-tree-group")
    assert tree is not None
    groups = [(g.get("name"), [n.get("name") for n in g]) for g in tree.findall("layer-tree-group")]
    assert [(name, [n for n in nodes if n]) for name, nodes in groups] == [
        ("Zones and AOI", ["AOI"]),
        ("Yield", ["Yield"]),
        ("Vegetation indices", ["NDVI median"]),
    ]
    checked = {n.get("name"): n.get("checked") for n in tree.iter("layer-tree-layer")}
    assert checked == {"AOI": "Qt::Checked", "Yield": "Qt::Checked", "NDVI median": "Qt::Unchecked"}
    layers = {ml.findtext("layername"): ml for ml in root.iter("maplayer")}
    assert list(layers) == ["AOI", "Yield", "NDVI median"]
    assert [ml.findtext("datasource") for ml in layers.values()] == [
        "./run.gpkg|layername=aoi",
        "./run.gpkg|layername=yield_forecast",
        "./ndvi_median.tif",
    ]
    assert [ml.findtext("provider") for ml in layers.values()] == ["ogr", "ogr", "gdal"]
    assert [ml.get("type") for ml in layers.values()] == ["vector", "vector", "raster"]
    # Each layer carries its style document's renderer.
    ndvi = layers["NDVI median"].find("pipe/rasterrenderer")
    assert ndvi is not None and ndvi.get("type") == "singlebandpseudocolor"
    yields = layers["Yield"]
    assert yields.get("labelsEnabled") == "1"
    assert yields.find("renderer-v2[@type='graduatedSymbol']") is not None
    assert yields.find("labeling[@type='simple']") is not None
    assert all(ml.findtext("srs/spatialrefsys/authid") == "EPSG:32734" for ml in layers.values())
    order = [e.get("id") for e in root.findall("layerorder/layer")]
    assert order == [ml.findtext("id") for ml in layers.values()]
    # The view: the desktop's canvas, and the default view extent.
    canvas = root.find("mapcanvas")
    assert canvas is not None and canvas.findtext("units") == "meters"
    assert [
        float(canvas.findtext(f"extent/{k}", "nan")) for k in ("xmin", "ymin", "xmax", "ymax")
    ] == list(EXTENT)
    assert canvas.findtext("destinationsrs/spatialrefsys/authid") == "EPSG:32734"
    view = root.find("ProjectViewSettings/DefaultViewExtent")
    assert view is not None
    assert [float(view.get(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")] == list(EXTENT)


def test_project_layer_ids_are_stable(tmp_path: Path) -> None:
    ids = []
    for name in ("a.qgz", "b.qgz"):
        root = read_qgs(
            write_project(
                tmp_path / name, title="t", epsg=32734, extent=EXTENT, layers=project_layers()
            )
        )
        ids.append([ml.findtext("id") for ml in root.iter("maplayer")])
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == 3


def test_project_refuses_a_qgs_and_twice_the_same_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="qgz"):
        write_project(tmp_path / "run.qgs", title="t", epsg=32734, extent=EXTENT, layers=[])
    twice = project_layers()[:1] * 2
    with pytest.raises(ValueError, match="same source"):
        write_project(tmp_path / "run.qgz", title="t", epsg=32734, extent=EXTENT, layers=twice)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("ndvi_median", "Vegetation indices"),
        ("evi_median_33S", "Vegetation indices"),
        ("clear_count", "Vegetation indices"),
        ("ndvi_start_doy", "Season metrics"),
        ("ndvi_season_length", "Season metrics"),
        ("ndvi_dry_wet_ratio", "Season metrics"),
        ("ndvi_peak_value_34S", "Season metrics"),
        ("invasive_class", "Bush encroachment"),
        ("invasive_probability", "Bush encroachment"),
        ("invasive_change", "Change"),
        ("ndvi_anomaly", "Change"),
        ("yield_forecast", "Yield"),
    ],
)
def test_raster_groups(name: str, group: str) -> None:
    assert raster_group(name) == group


def test_vector_groups() -> None:
    assert [vector_group(n) for n in ("aoi", "zones", "zones_outline", "zones_33S")] == [
        "Zones and AOI"
    ] * 4
    assert vector_group("invasive_polygons") == "Bush encroachment"
    assert vector_group("invasive_change_polygons") == "Change"
    assert vector_group("yield_forecast") == "Yield"


def tiny_raster(path: Path, layer: Layer) -> Path:
    """A 4 × 4 GeoTIFF in UTM 34S (all the entry point reads of a raster is its grid)."""
    profile = {
        "driver": "GTiff",
        "width": 4,
        "height": 4,
        "count": 1,
        "dtype": layer.dtype,
        "crs": "EPSG:32734",
        "transform": rasterio.transform.from_origin(EXTENT[0], EXTENT[3], 10, 10),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, 4, 4), dtype=layer.dtype))
    return path


def test_write_qgis_products(tmp_path: Path) -> None:
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import box

    gpkg = tmp_path / "a_run.gpkg"
    square = box(*EXTENT)
    frame = gpd.GeoDataFrame({"name": ["a"]}, geometry=[square], crs=32734)
    frame.to_file(gpkg, layer="aoi", driver="GPKG")
    frame.to_file(gpkg, layer="zones", driver="GPKG")
    frame.assign(forecast=[2.5]).to_file(gpkg, layer="yield_forecast", driver="GPKG")
    frame.assign(change=["gained"]).to_file(gpkg, layer="invasive_change_polygons", driver="GPKG")
    pyogrio.write_dataframe(pd.DataFrame({"zone_id": [1]}), gpkg, layer="zonal_stats")
    frame.to_crs(4326).to_file(tmp_path / "yield_forecast.geojson", driver="GeoJSON")
    (tmp_path / "invasive_change.geojson").write_text("{}")
    doy = Layer("ndvi_start_doy", "Start", "float32", float("nan"), "day")
    rasters = {
        layer.name: (tiny_raster(tmp_path / f"{layer.name}.tif", layer), layer)
        for layer in (NDVI, doy, CHANGE_LAYER)
    }
    vectors = {
        name: (gpkg, table)
        for name, table in (
            ("aoi", "aoi"),
            ("zones", "zones"),  # no encroached share: drawn as zones_outline
            ("yield_forecast", "yield_forecast"),
            ("invasive_change_polygons", "invasive_change_polygons"),
            ("zonal_stats", "zonal_stats"),
        )
    }
    out = write_qgis_products(
        tmp_path,
        stem="a_run",
        epsg=32734,
        extent=EXTENT,
        rasters=rasters,
        vectors=vectors,
        context=StyleContext(),
        titles={"ndvi_median": "NDVI (median)"},
    )
    assert out == tmp_path / "a_run.qgz"
    # A .qml beside every raster, and beside the GeoJSON twin of a vector layer; the change
    # raster's .qml is its own, not the change polygons'.
    for name in ("ndvi_median", "ndvi_start_doy", "invasive_change"):
        renderer = ET.fromstring((tmp_path / f"{name}.qml").read_text()).find(".//rasterrenderer")
        assert renderer is not None, name
    assert (
        ET.fromstring((tmp_path / "yield_forecast.qml").read_text()).find(
            "renderer-v2[@type='graduatedSymbol']"
        )
        is not None
    )
    with sqlite3.connect(gpkg) as db:
        stored = dict(db.execute("SELECT f_table_name, useAsDefault FROM layer_styles").fetchall())
    assert stored == {"aoi": 1, "zones": 1, "yield_forecast": 1, "invasive_change_polygons": 1}
    root = read_qgs(out)
    tree = {
        g.get("name"): [(n.get("name"), n.get("checked")) for n in g.iter("layer-tree-layer")]
        for g in root.iter("layer-tree-group")
        if g.get("name")
    }
    assert tree == {
        "Zones and AOI": [("Area of interest", "Qt::Checked"), ("Zones", "Qt::Checked")],
        "Yield": [("Yield forecast (t/ha)", "Qt::Checked")],  # the headline
        "Change": [
            ("Encroachment change", "Qt::Unchecked"),
            ("Encroachment change since the earlier run", "Qt::Unchecked"),
        ],
        "Season metrics": [("NDVI season start (date)", "Qt::Unchecked")],
        "Vegetation indices": [("NDVI (median)", "Qt::Unchecked")],
    }
    sources = [ml.findtext("datasource") for ml in root.iter("maplayer")]
    assert "./a_run.gpkg|layername=zonal_stats" not in sources
    assert "./ndvi_median.tif" in sources


def main(argv: list[str]) -> int:
    """Run every check on the run folders named on the command line."""
    failed = 0
    for arg in argv:
        with tempfile.TemporaryDirectory() as tmp:
            found = probe_folder(Path(arg), Path(tmp))
            for check in CHECKS:
                try:
                    check(found)
                except AssertionError as err:
                    failed += 1
                    print(f"FAIL {check.__name__}: {err}")
                else:
                    print(f"ok   {check.__name__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
