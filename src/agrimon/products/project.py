"""One QGIS project per run: every product styled, grouped, in the run's CRS, paths relative.

:func:`write_project` writes a ``.qgz`` (a zip holding one ``.qgs``) laid out as QGIS 3.22
writes it (``QgsProject.write``), so the run folder opens in QGIS with one double-click and
keeps working when the folder is moved or shared: every datasource is relative to the
project (``./ndvi_median.tif``, ``./run.gpkg|layername=aoi``). Each layer carries its style
(the QML of :mod:`agrimon.products.styles`), the project the run's UTM CRS and the AOI as
its initial view.
"""

from __future__ import annotations

import re
import uuid
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyproj import CRS

from agrimon.products.styles import QGIS_VERSION, qml_text
from agrimon.products.vectors import replacing

#: The layer-tree groups, top to bottom (drawn last to first): outlines over everything.
GROUPS = (
    "Zones and AOI",
    "Bush encroachment",
    "Yield",
    "Change",
    "Season metrics",
    "Vegetation indices",
)
#: Attributes of a style document's root that belong on the project's ``maplayer``.
_LAYER_ATTRIBUTES = ("labelsEnabled", "readOnly", "hasScaleBasedVisibilityFlag")
# Layer ids are stable across runs (QGIS's own are random): same layer, same id.
_ID_NAMESPACE = uuid.UUID("5d1f3e0c-55b3-4a5e-9f0f-3c2b8f1d6a77")


@dataclass(frozen=True)
class ProjectLayer:
    """One layer of a QGIS project.

    Attributes:
        name: Name shown in the layers panel.
        path: The file, relative to the project's folder (``ndvi_median.tif``).
        kind: ``"raster"`` (GDAL) or ``"vector"`` (OGR).
        layer: Layer name inside a GeoPackage, or None for a single-layer file.
        group: Layer-tree group (one of :data:`GROUPS`; another name goes below them).
        qml: The layer's QGIS style document.
        epsg: The layer's CRS.
        extent: ``(xmin, ymin, xmax, ymax)`` in that CRS.
        visible: Whether the layer is switched on when the project opens.
    """

    name: str
    path: str
    kind: Literal["raster", "vector"]
    layer: str | None
    group: str
    qml: str
    epsg: int
    extent: tuple[float, float, float, float]
    visible: bool = True

    @property
    def source(self) -> str:
        """The datasource as QGIS writes it into a project with relative paths."""
        path = Path(self.path).as_posix()
        relative = path if path.startswith(("./", "../")) else f"./{path}"
        return relative if self.layer is None else f"{relative}|layername={self.layer}"

    @property
    def layer_id(self) -> str:
        """A QGIS layer id: the name's word characters and a UUID of the source."""
        stem = re.sub(r"\W+", "_", self.layer or Path(self.path).stem)
        return f"{stem}_{uuid.uuid5(_ID_NAMESPACE, self.source).hex}"


def write_project(
    path: Path,
    *,
    title: str,
    epsg: int,
    extent: tuple[float, float, float, float],
    layers: Sequence[ProjectLayer],
) -> Path:
    """Write a QGIS 3.22 project (``.qgz``) of ``layers``, atomically.

    Args:
        path: The ``.qgz`` to write; the layers' paths are relative to its folder.
        title: Project title.
        epsg: Project CRS (the run's UTM zone).
        extent: Initial map view ``(xmin, ymin, xmax, ymax)`` in the project CRS.
        layers: The layers; within a group they are listed (and drawn on top of each
            other) in the order given, the first on top.

    Returns:
        ``path``.

    Raises:
        ValueError: ``path`` does not end in ``.qgz`` or two layers share a source.
    """
    if path.suffix != ".qgz":
        raise ValueError(f"a QGIS project archive ends in .qgz, not {path.name}")
    ids = [layer.layer_id for layer in layers]
    if len(set(ids)) != len(ids):
        raise ValueError("two project layers have the same source")
    document = project_xml(title=title, epsg=epsg, extent=extent, layers=layers)
    with replacing(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{path.stem}.qgs", document)
    return path


def project_xml(
    *,
    title: str,
    epsg: int,
    extent: tuple[float, float, float, float],
    layers: Sequence[ProjectLayer],
) -> str:
    """The ``.qgs`` document of :func:`write_project`."""
    ordered = _in_group_order(layers)
    root = ET.Element("qgis", projectname=title, version=QGIS_VERSION)
    ET.SubElement(root, "homePath", path="")
    ET.SubElement(root, "title").text = title
    ET.SubElement(root, "autotransaction", active="0")
    ET.SubElement(root, "evaluateDefaultValues", active="0")
    ET.SubElement(root, "trust", active="0")
    _srs(ET.SubElement(root, "projectCrs"), epsg)
    _layer_tree(root, ordered)
    project_layers = ET.SubElement(root, "projectlayers")
    for layer in ordered:
        project_layers.append(_map_layer(layer))
    order = ET.SubElement(root, "layerorder")
    for layer in ordered:
        ET.SubElement(order, "layer", id=layer.layer_id)
    _properties(root)
    # The desktop app sets its canvas from <mapcanvas>, or else from DefaultViewExtent.
    canvas = ET.SubElement(root, "mapcanvas", name="theMapCanvas", annotationsVisible="1")
    geographic = CRS.from_epsg(epsg).is_geographic
    ET.SubElement(canvas, "units").text = "degrees" if geographic else "meters"
    _extent(canvas, extent)
    ET.SubElement(canvas, "rotation").text = "0"
    _srs(ET.SubElement(canvas, "destinationsrs"), epsg)
    ET.SubElement(canvas, "rendermaptile").text = "0"
    metadata = ET.SubElement(root, "projectMetadata")
    ET.SubElement(metadata, "title").text = title
    view = ET.SubElement(root, "ProjectViewSettings", UseProjectScales="0", rotation="0")
    ET.SubElement(view, "Scales")
    xmin, ymin, xmax, ymax = (repr(float(v)) for v in extent)
    default = ET.SubElement(view, "DefaultViewExtent", xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax)
    _srs(default, epsg)
    return qml_text(root)


def _in_group_order(layers: Sequence[ProjectLayer]) -> list[ProjectLayer]:
    """The layers by group in :data:`GROUPS` order (other groups after), stable within."""
    groups = list(GROUPS) + [g for g in dict.fromkeys(lr.group for lr in layers) if g not in GROUPS]
    return sorted(layers, key=lambda layer: groups.index(layer.group))


def _layer_tree(root: ET.Element, layers: Sequence[ProjectLayer]) -> None:
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    groups: dict[str, ET.Element] = {}
    for layer in layers:
        if layer.group not in groups:
            group = ET.SubElement(
                tree, "layer-tree-group", name=layer.group, expanded="1", checked="Qt::Checked"
            )
            ET.SubElement(group, "customproperties")
            groups[layer.group] = group
        node = ET.SubElement(
            groups[layer.group],
            "layer-tree-layer",
            id=layer.layer_id,
            name=layer.name,
            source=layer.source,
            providerKey=_provider(layer),
            checked="Qt::Checked" if layer.visible else "Qt::Unchecked",
            expanded="1",
            legend_exp="",
            patch_size="-1,-1",
            legend_split_behavior="0",
        )
        ET.SubElement(node, "customproperties")
    custom = ET.SubElement(tree, "custom-order", enabled="0")
    for layer in layers:
        ET.SubElement(custom, "item").text = layer.layer_id


def _map_layer(layer: ProjectLayer) -> ET.Element:
    """The ``maplayer`` element: source, CRS, extent, and the style document's content."""
    style = ET.fromstring(layer.qml)
    element = ET.Element(
        "maplayer",
        type=layer.kind,
        styleCategories="AllStyleCategories",
        autoRefreshEnabled="0",
        autoRefreshTime="0",
        refreshOnNotifyEnabled="0",
        refreshOnNotifyMessage="",
        minScale="100000000",
        maxScale="0",
        hasScaleBasedVisibilityFlag="0",
    )
    for name in _LAYER_ATTRIBUTES:
        if name in style.attrib:
            element.set(name, style.attrib[name])
    _extent(element, layer.extent)
    ET.SubElement(element, "id").text = layer.layer_id
    ET.SubElement(element, "datasource").text = layer.source
    ET.SubElement(ET.SubElement(element, "keywordList"), "value").text = ""
    ET.SubElement(element, "layername").text = layer.name
    _srs(ET.SubElement(element, "srs"), layer.epsg)
    if layer.kind == "raster":
        ET.SubElement(element, "provider").text = "gdal"
        nodata = ET.SubElement(element, "noData")
        ET.SubElement(nodata, "noDataList", bandNo="1", useSrcNoData="1")
    else:
        ET.SubElement(element, "provider", encoding="UTF-8").text = "ogr"
    manager = ET.SubElement(element, "map-layer-style-manager", current="default")
    ET.SubElement(manager, "map-layer-style", name="default")
    # A project layer holds what a style document holds: QGIS reads both the same way.
    element.extend(list(style))
    return element


def _provider(layer: ProjectLayer) -> str:
    return "gdal" if layer.kind == "raster" else "ogr"


def _extent(parent: ET.Element, extent: tuple[float, float, float, float]) -> None:
    node = ET.SubElement(parent, "extent")
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), extent, strict=True):
        ET.SubElement(node, tag).text = repr(float(value))


def _srs(parent: ET.Element, epsg: int) -> None:
    """A ``spatialrefsys`` element; QGIS reads the WKT, which carries the EPSG code."""
    crs = CRS.from_epsg(epsg)
    with warnings.catch_warnings():
        # The PROJ string is lossy, hence pyproj's warning; QGIS only falls back to it.
        warnings.simplefilter("ignore", UserWarning)
        proj4 = crs.to_proj4()
    projection = re.search(r"\+proj=(\S+)", proj4)
    ellipsoid = crs.ellipsoid.to_json_dict().get("id") if crs.ellipsoid is not None else None
    srs = ET.SubElement(parent, "spatialrefsys")
    for tag, text in (
        ("wkt", crs.to_wkt("WKT2_2019")),
        ("proj4", proj4.replace(" +type=crs", "")),
        ("srid", str(epsg)),
        ("authid", f"EPSG:{epsg}"),
        ("description", crs.name),
        ("projectionacronym", projection.group(1) if projection else ""),
        ("ellipsoidacronym", f"{ellipsoid['authority']}:{ellipsoid['code']}" if ellipsoid else ""),
        ("geographicflag", "true" if crs.is_geographic else "false"),
    ):
        ET.SubElement(srs, tag).text = text


def _properties(root: ET.Element) -> None:
    properties = ET.SubElement(root, "properties")
    paths = ET.SubElement(properties, "Paths")
    ET.SubElement(paths, "Absolute", type="bool").text = "false"
    spatial = ET.SubElement(properties, "SpatialRefSys")
    ET.SubElement(spatial, "ProjectionsEnabled", type="int").text = "1"
