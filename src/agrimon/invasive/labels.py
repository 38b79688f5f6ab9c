"""Training labels for the bush-encroachment model: read, rasterise, and a file to draw them in.

A user draws polygons (or clicks points) in a GIS and gives each one a class, e.g.
``encroached`` (dense woody shrubs) or ``open`` (grassland, not encroached). `read_labels`
reads such a file and checks it, `rasterise_labels` burns it onto the feature raster's grid
as a ``uint8`` mask (`IGNORE` where nothing is known, class *i* of `Labels.classes` as
*i + 1*), and `write_template` writes an empty GeoPackage that QGIS opens with a drop-down of
the classes and one colour per class, so that labelling needs no GIS set-up at all.

Every problem a user can fix raises `LabelError` with a one-line message that names the file
and says how to fix it. The checks and conversions are pure functions of in-memory values
(`labels_from_frame`, `rasterise_labels`, `class_pixel_counts`, `labels_qml`); only
`read_labels` and `write_template` touch files.
"""

from __future__ import annotations

import math
import os
import sqlite3
import uuid
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from numpy.typing import NDArray
from odc.geo.crs import CRS as OdcCRS  # noqa: N811
from odc.geo.geobox import GeoBox
from pyproj import CRS
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

from agrimon.aoi import read_aoi
from agrimon.errors import LabelError
from agrimon.products.gpkg import add_enum_constraint as _add_enum_constraint
from agrimon.products.gpkg import add_styles as _add_styles
from agrimon.products.gpkg import link_into_place
from agrimon.products.styles import field_widget as _field_widget
from agrimon.products.styles import qml_root as _qml_root
from agrimon.products.styles import qml_text as _qml_text
from agrimon.products.styles import value_map

__all__ = [
    "DEFAULT_TEMPLATE_CLASSES",
    "IGNORE",
    "MAX_CLASSES",
    "TEMPLATE_AOI_LAYER",
    "TEMPLATE_LAYER",
    "LabelWarning",
    "Labels",
    "check_classes",
    "class_pixel_counts",
    "coverage",
    "labels_from_frame",
    "labels_qml",
    "rasterise_labels",
    "read_labels",
    "write_template",
]

IGNORE: int = 0
"""Value of unlabelled (or ambiguous) pixels in a label mask; class *i* has value *i + 1*."""

MAX_CLASSES: int = 254
"""Most classes a label set may have: values 1..254 of a ``uint8`` mask (255 stays free)."""

DEFAULT_TEMPLATE_CLASSES: tuple[str, ...] = ("encroached", "open")
"""Classes of a new template: ``encroached`` (dense woody shrubs, bush encroachment) and
``open`` (grassland or savanna that is not encroached)."""

TEMPLATE_LAYER: str = "labels"
"""Name of the polygon layer a template holds, and the layer `read_labels` prefers."""

TEMPLATE_AOI_LAYER: str = "aoi"
"""Name of the template's layer with the AOI outline (for orientation; never read as labels)."""

#: The fields of a template's label layer.
CLASS_FIELD = "class"
NOTE_FIELD = "note"
#: Name of the GeoPackage data-column constraint (GDAL field domain) of the class field.
DOMAIN_NAME = "label_class"

#: Fill colours (RGB) of the classes, in class order, repeating after the last.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (217, 95, 2),  # orange: encroached
    (102, 166, 30),  # green: open
    (117, 112, 179),
    (231, 41, 138),
    (27, 158, 119),
    (230, 171, 2),
    (166, 118, 29),
    (102, 102, 102),
)
#: Fill opacity of the class colours (0..255): the imagery stays visible beneath.
FILL_ALPHA = 110

_POLYGONAL = frozenset({"Polygon", "MultiPolygon"})
_PUNCTUAL = frozenset({"Point", "MultiPoint"})
_ZIP_MEMBER_SUFFIXES = (".shp", ".geojson", ".json", ".gpkg")
_FORMATS = "GeoPackage (.gpkg), GeoJSON (.geojson) or Shapefile (.shp, or zipped as .zip)"
_WGS84 = CRS.from_epsg(4326)


class LabelWarning(UserWarning):
    """Some label features were changed or dropped to make the file usable."""


@dataclass(frozen=True, eq=False)
class Labels:
    """A checked set of label features.

    Attributes:
        frame: One row per usable feature, in the file's order and CRS (never None),
            indexed by the feature's 0-based position in the file. The
            class column holds the class names as ``str``; geometries are valid Polygons,
            MultiPolygons, Points or MultiPoints.
        classes: The class names; class ``classes[i]`` is burnt as value ``i + 1``. Sorted
            unique values of the class column unless given to `read_labels`.
        column: Name of the class column in `frame`.
        path: The file the labels came from.
    """

    frame: gpd.GeoDataFrame
    classes: tuple[str, ...]
    column: str
    path: Path

    def value_of(self, name: str) -> int:
        """The mask value of a class.

        Args:
            name: One of `classes`.

        Returns:
            Its value in masks made by `rasterise_labels` (1-based position in `classes`).

        Raises:
            KeyError: `name` is not one of `classes`.
        """
        try:
            return self.classes.index(name) + 1
        except ValueError:
            raise KeyError(name) from None


# --- pure checks and conversions ----------------------------------------------------------


def check_classes(classes: Iterable[str], what: str) -> tuple[str, ...]:
    """Check a list of class names given by a user.

    Args:
        classes: The names, in the order their values are given.
        what: Start of the error message saying where they come from, e.g.
            ``"labels file 'a.gpkg'"``.

    Returns:
        The names with surrounding blanks removed.

    Raises:
        LabelError: A name is empty, names repeat, fewer than two or more than
            `MAX_CLASSES` are given.
    """
    names = tuple(str(c).strip() for c in classes)
    fix = "give the classes as a comma-separated list such as --classes encroached,open"
    if any(not n for n in names):
        raise LabelError(f"{what}: a class name is empty in {list(names)}: {fix}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise LabelError(f"{what}: class {', '.join(map(repr, repeated))} is repeated: {fix}")
    if len(names) < 2:
        raise LabelError(
            f"{what}: {len(names)} class given ({', '.join(names) or 'none'}), "
            f"needs at least two classes to train: {fix}"
        )
    if len(names) > MAX_CLASSES:
        raise LabelError(
            f"{what}: {len(names)} classes given, more than the {MAX_CLASSES} a label mask "
            "holds: merge classes"
        )
    return names


def labels_from_frame(
    frame: gpd.GeoDataFrame,
    class_column: str,
    classes: Sequence[str] | None = None,
    *,
    path: Path,
) -> Labels:
    """Check label features already in memory and make them `Labels`.

    Args:
        frame: The features as read from `path`.
        class_column: Column holding each feature's class.
        classes: The allowed classes in value order; None takes the sorted unique values.
        path: The file the features come from, for messages.

    Returns:
        The checked labels: features without class or geometry dropped, invalid
        geometries repaired.

    Raises:
        LabelError: No features, no CRS, no such column, no class values, a class not in
            `classes`, a geometry that is neither polygon nor point, fewer than two classes.

    Warns:
        LabelWarning: Features were dropped (no class, no geometry) or repaired.
    """
    where = f"labels file '{path}'"
    if classes is not None:
        classes = check_classes(classes, where)
    if len(frame) == 0:
        raise LabelError(
            f"{where} has no features: draw polygons of each class in it (`agrimon labels "
            "template` writes a GeoPackage to draw them in)"
        )
    if frame.crs is None:
        raise LabelError(f"{where} has no CRS: save it with one, e.g. EPSG:4326")
    columns = [str(c) for c in frame.columns if c != frame.geometry.name]
    if class_column not in frame.columns or class_column == frame.geometry.name:
        raise LabelError(
            f"{where} has no column '{class_column}' (it has: {', '.join(columns) or 'none'}): "
            "name the column holding the classes with --class-column"
        )
    frame = frame.copy()
    frame[class_column] = [_class_text(v) for v in frame[class_column]]
    numbers = np.arange(1, len(frame) + 1)  # feature numbers in the file, for messages
    unnamed = frame[class_column].isna()
    if unnamed.all():
        raise LabelError(
            f"{where}: none of its {len(frame)} features has a value in column "
            f"'{class_column}': give each polygon a class, or name the right column with "
            "--class-column"
        )
    if unnamed.any():
        warnings.warn(
            f"{where}: dropped {int(unnamed.sum())} of {len(frame)} features with an empty "
            f"'{class_column}' (features {_feature_list(numbers[unnamed.to_numpy()])})",
            LabelWarning,
            stacklevel=2,
        )
    named = ~unnamed.to_numpy()
    frame = _clean_geometries(frame[named], numbers[named], where)
    present = sorted(set(frame[class_column]))
    if classes is not None:
        unknown = [c for c in present if c not in classes]
        if unknown:
            raise LabelError(
                f"{where}: class {', '.join(map(repr, unknown))} in column '{class_column}' "
                f"is not one of --classes {','.join(classes)}: correct the features' class "
                "or add it to --classes"
            )
    if len(present) < 2:
        raise LabelError(
            f"{where} has only class '{present[0]}' in column '{class_column}', and needs at "
            "least two classes to train: add polygons of another class"
        )
    return Labels(
        frame=frame,
        classes=tuple(classes) if classes is not None else tuple(present),
        column=class_column,
        path=path,
    )


def rasterise_labels(labels: Labels, geobox: GeoBox) -> NDArray[np.uint8]:
    """Burn labels onto a pixel grid: the training target of the feature raster on that grid.

    A pixel takes a polygon's class when its centre lies inside the polygon or on its edge;
    a point marks the pixel that contains it (a point on a pixel edge belongs to the pixel
    right of / below the edge). Pixels that two different classes claim are set to `IGNORE`:
    the mask never guesses. Features outside the grid are left out.

    Args:
        labels: The labels, in any CRS (reprojected to the grid's).
        geobox: The grid: ``shape`` (rows, columns), ``affine`` and ``crs``.

    Returns:
        Array of the grid's shape: `IGNORE` (0) where unlabelled or in conflict, else the
        class's value (`Labels.value_of`).

    Raises:
        LabelError: No pixel of the grid gets a class: every feature lies outside the grid,
            or those inside are too small to cover a pixel centre, or every labelled pixel
            is in conflict.
    """
    shape = (int(geobox.shape[0]), int(geobox.shape[1]))
    transform = geobox.affine
    geoms = _in_grid_crs(labels, geobox)
    names = labels.frame[labels.column].to_numpy()
    mask = np.zeros(shape, dtype=np.uint8)
    conflict = np.zeros(shape, dtype=bool)
    claimed_any = False
    for value, name in enumerate(labels.classes, start=1):
        claimed = _claimed_pixels(geoms[names == name], shape, transform)
        claimed_any = claimed_any or bool(claimed.any())
        conflict |= claimed & (mask != IGNORE)
        mask[claimed & (mask == IGNORE)] = value
    mask[conflict] = IGNORE
    if mask.any():
        return mask
    where = f"labels file '{labels.path}'"
    grid = _grid_text(geobox)
    if claimed_any:
        raise LabelError(
            f"{where}: every pixel its features cover inside the feature raster ({grid}) is "
            "claimed by two classes: polygons of different classes overlap there; remove "
            "the overlaps"
        )
    inside = coverage(labels, geobox)
    total = len(labels.frame)
    if inside == 0:
        raise LabelError(
            f"{where}: none of its {total} features falls inside the feature raster ({grid}; "
            f"the labels lie within {_lonlat_bounds(labels)}): check the file's CRS and area"
        )
    size = abs(float(geobox.resolution.x))
    raise LabelError(
        f"{where}: its {inside} of {total} features inside the feature raster ({grid}) cover "
        f"no pixel centre: draw polygons at least one pixel ({size:g} m) across, or points"
    )


def coverage(labels: Labels, geobox: GeoBox) -> int:
    """Count the label features that touch a grid's extent.

    Args:
        labels: The labels.
        geobox: The grid.

    Returns:
        How many features of `labels.frame` intersect the grid's footprint.
    """
    footprint = geobox.extent.geom
    return int(shapely.intersects(_in_grid_crs(labels, geobox), footprint).sum())


def class_pixel_counts(mask: NDArray[np.uint8], classes: Sequence[str]) -> dict[str, int]:
    """Count the pixels of each class in a label mask.

    Args:
        mask: A mask from `rasterise_labels`.
        classes: The class names, in value order (`Labels.classes`).

    Returns:
        Pixels per class, in class order, zero for an absent class; `IGNORE` is not counted.

    Raises:
        ValueError: The mask holds a value above ``len(classes)``.
    """
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=len(classes) + 1)
    if len(counts) > len(classes) + 1:
        raise ValueError(
            f"mask holds value {len(counts) - 1}, more than its {len(classes)} classes"
        )
    return {name: int(counts[i]) for i, name in enumerate(classes, start=1)}


# --- reading ------------------------------------------------------------------------------


def read_labels(
    path: str | Path,
    class_column: str,
    classes: Sequence[str] | None = None,
    *,
    layer: str | None = None,
) -> Labels:
    """Read and check a labels file.

    Args:
        path: GeoPackage, GeoJSON, Shapefile or zipped Shapefile of polygons, multipolygons
            or points, in any CRS.
        class_column: Column holding each feature's class.
        classes: The allowed classes, in value order; None takes the sorted unique values
            of the column (as text).
        layer: Layer of a multi-layer file; None takes the only one, or `TEMPLATE_LAYER`.

    Returns:
        The checked labels.

    Raises:
        LabelError: The file is missing or unreadable, or its content is unusable (see
            `labels_from_frame`).

    Warns:
        LabelWarning: Features were dropped or repaired.
    """
    path = Path(path)
    where = f"labels file '{path}'"
    if not path.exists():
        raise LabelError(f"{where} does not exist: check the path")
    if not path.is_file():
        raise LabelError(f"{where} is not a file: give a {_FORMATS} file")
    if path.stat().st_size == 0:
        raise LabelError(f"{where} is empty: save the labels again as {_FORMATS}")
    source = _gdal_source(path, where)
    try:
        chosen = _choose_layer(source, layer, where)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
            frame = pyogrio.read_dataframe(source, layer=chosen)
    except (RuntimeError, ValueError) as err:  # pyogrio's errors derive from RuntimeError
        raise LabelError(
            f"{where} cannot be read ({_one_line(str(err)).replace(source, 'the file')}): "
            f"save it as {_FORMATS}"
        ) from err
    return labels_from_frame(frame, class_column, classes, path=path)


def _gdal_source(path: Path, where: str) -> str:
    """What GDAL opens for a file: the file, or the one vector file inside a .zip."""
    if path.suffix.lower() != ".zip":
        return str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise LabelError(
            f"{where} is not a readable zip archive ({_one_line(str(err))}): zip the "
            "Shapefile's .shp, .shx, .dbf and .prj files again"
        ) from err
    members = [
        n
        for n in names
        if n.lower().endswith(_ZIP_MEMBER_SUFFIXES)
        and not n.startswith("__MACOSX/")
        and not Path(n).name.startswith("._")
    ]
    if len(members) != 1:
        raise LabelError(
            f"{where} holds {len(members)} vector files ({', '.join(members) or 'none'}), "
            "not one: zip one Shapefile's .shp, .shx, .dbf and .prj files"
        )
    return f"/vsizip/{path.resolve()}/{members[0]}"


def _choose_layer(source: str, layer: str | None, where: str) -> str:
    """The layer to read: the one asked for, the only spatial one, or `TEMPLATE_LAYER`."""
    listed = pyogrio.list_layers(source)
    names = [str(name) for name, _ in listed]
    spatial = [str(name) for name, geometry_type in listed if geometry_type is not None]
    if layer is not None:
        if layer not in names:
            raise LabelError(
                f"{where} has no layer '{layer}' (it has: {', '.join(names) or 'none'}): "
                "name one of its layers with --layer"
            )
        return layer
    if not spatial:
        raise LabelError(f"{where} has no layer with geometry: draw polygons of each class")
    if len(spatial) == 1:
        return spatial[0]
    if TEMPLATE_LAYER in spatial:
        return TEMPLATE_LAYER
    raise LabelError(
        f"{where} has {len(spatial)} layers ({', '.join(spatial)}): choose the one holding "
        "the labels with --layer"
    )


# --- the template -------------------------------------------------------------------------


def write_template(
    aoi_path: str | Path,
    out: str | Path,
    classes: Sequence[str] = DEFAULT_TEMPLATE_CLASSES,
) -> Path:
    """Write an empty GeoPackage to draw labels in, ready for QGIS.

    The file holds an empty MultiPolygon layer `TEMPLATE_LAYER` (EPSG:4326; fields
    ``class`` and ``note``, text) and the AOI's zones as layer `TEMPLATE_AOI_LAYER`. The
    allowed classes are stored as a GeoPackage Schema ``enum`` constraint on ``class``
    (GDAL's coded field domain `DOMAIN_NAME`) and as the default QGIS style of the layer
    (``layer_styles`` table): a drop-down of the classes and one semi-transparent colour
    per class. The file appears complete or not at all: it is written beside `out` under
    a temporary name, then linked into place. An existing `out` is never replaced.

    Args:
        aoi_path: AOI file (any format `agrimon.aoi.read_aoi` reads).
        out: The GeoPackage to write; must end in ``.gpkg`` and must not exist.
        classes: The class names, in value order.

    Returns:
        `out` as a `Path`.

    Raises:
        LabelError: `out` exists, does not end in ``.gpkg`` or its folder is missing, or
            the classes are unusable (`check_classes`).
        AoiError: The AOI cannot be read.
    """
    out = Path(out)
    where = f"labels template '{out}'"
    names = check_classes(classes, where)
    if out.suffix.lower() != ".gpkg":
        raise LabelError(
            f"{where} does not end in .gpkg: give a GeoPackage name such as labels.gpkg"
        )
    if os.path.lexists(out):
        raise LabelError(
            f"{where} exists already and is never overwritten: choose another --out, or move "
            "the file away"
        )
    if not out.parent.is_dir():
        raise LabelError(
            f"{where}: folder '{out.parent}' does not exist: create it or choose another --out"
        )
    aoi = read_aoi(aoi_path)
    tmp = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:12]}.tmp.gpkg")
    try:
        _write_layers(tmp, aoi.zones, names, description=f"AOI {aoi.name}")
        _link_into_place(tmp, out, where)
    except (OSError, RuntimeError, sqlite3.Error) as err:  # pyogrio's errors: RuntimeError
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise LabelError(
            f"{where} cannot be written ({_one_line(reason)}): check the "
            "folder's permissions and free space"
        ) from err
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
    return out


def _write_layers(
    path: Path, zones: gpd.GeoDataFrame, classes: tuple[str, ...], *, description: str
) -> None:
    """Write the template's two layers, its field domain and its QGIS styles to `path`."""
    empty = gpd.GeoDataFrame(
        {CLASS_FIELD: pd.Series([], dtype=object), NOTE_FIELD: pd.Series([], dtype=object)},
        geometry=gpd.GeoSeries([], crs=_WGS84),
    )
    pyogrio.write_dataframe(
        empty,
        path,
        layer=TEMPLATE_LAYER,
        driver="GPKG",
        geometry_type="MultiPolygon",
        # GeoPackage 1.2: read without warnings by the GDAL of older QGIS releases too.
        dataset_options={"VERSION": "1.2"},
        layer_options={
            "DESCRIPTION": "Training labels: draw polygons and pick a class for each "
            f"({', '.join(classes)})"
        },
    )
    pyogrio.write_dataframe(
        zones[["zone_id", "name", "geometry"]].to_crs(_WGS84),
        path,
        layer=TEMPLATE_AOI_LAYER,
        driver="GPKG",
        promote_to_multi=True,
        layer_options={"DESCRIPTION": f"{description}: where to draw the labels"},
    )
    with sqlite3.connect(path) as db:
        _add_enum_constraint(
            db, TEMPLATE_LAYER, CLASS_FIELD, DOMAIN_NAME, classes, "Training label classes"
        )
        geometry_column = {
            table: column
            for table, column in db.execute(
                "SELECT table_name, column_name FROM gpkg_geometry_columns"
            )
        }
        _add_styles(
            db,
            [
                (
                    TEMPLATE_LAYER,
                    geometry_column[TEMPLATE_LAYER],
                    "labels by class",
                    labels_qml(classes),
                    labels_sld(classes),
                ),
                (
                    TEMPLATE_AOI_LAYER,
                    geometry_column[TEMPLATE_AOI_LAYER],
                    "AOI outline",
                    aoi_qml(),
                    "",
                ),
            ],
        )
    # sqlite3's context manager commits but does not close.
    db.close()


def _link_into_place(tmp: Path, out: Path, where: str) -> None:
    """Give the finished `tmp` the name `out`, failing rather than replacing an existing file."""
    try:
        link_into_place(tmp, out)
    except FileExistsError:
        raise LabelError(
            f"{where} exists already and is never overwritten: choose another --out, or move "
            "the file away"
        ) from None


def class_colours(classes: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """The fill colour (RGB) of each class: `PALETTE` in class order.

    Args:
        classes: The class names.

    Returns:
        Colour per class name.
    """
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(classes)}


def labels_qml(classes: Sequence[str]) -> str:
    """The QGIS style of a template's label layer.

    The ``class`` field gets a ValueMap editor (a drop-down of `classes`, its soft not-null
    constraint warns about a polygon without class); the renderer is categorized on
    ``class``, one semi-transparent fill per class.

    Args:
        classes: The class names.

    Returns:
        The QML document (QGIS 3 layout).
    """
    root = _qml_root(read_only=False)
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        type="categorizedSymbol",
        attr=CLASS_FIELD,
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
        referencescale="-1",
    )
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, (name, (r, g, b)) in enumerate(class_colours(classes).items()):
        ET.SubElement(categories, "category", value=name, symbol=str(i), label=name, render="true")
        _fill_symbol(
            symbols,
            str(i),
            color=f"{r},{g},{b},{FILL_ALPHA}",
            outline=f"{r},{g},{b},255",
            outline_width="0.6",
            style="solid",
        )
    fields = ET.SubElement(root, "fieldConfiguration")
    value_map(_field_widget(fields, CLASS_FIELD, "ValueMap"), classes)
    note_widget = _field_widget(fields, NOTE_FIELD, "TextEdit")
    note_options = ET.SubElement(note_widget, "Option", type="Map")
    ET.SubElement(note_options, "Option", type="bool", name="IsMultiline", value="false")
    ET.SubElement(note_options, "Option", type="bool", name="UseHtml", value="false")
    aliases = ET.SubElement(root, "aliases")
    ET.SubElement(aliases, "alias", field=CLASS_FIELD, index="0", name="Class")
    ET.SubElement(aliases, "alias", field=NOTE_FIELD, index="1", name="Note")
    constraints = ET.SubElement(root, "constraints")
    # constraints="1": not null; strength 2: soft (a warning in the form, saving allowed).
    ET.SubElement(
        constraints,
        "constraint",
        field=CLASS_FIELD,
        constraints="1",
        notnull_strength="2",
        unique_strength="0",
        exp_strength="0",
    )
    ET.SubElement(root, "layerGeometryType").text = "2"
    return _qml_text(root)


def aoi_qml() -> str:
    """The QGIS style of a template's AOI layer: a bold outline, no fill, read-only.

    Returns:
        The QML document (QGIS 3 layout).
    """
    root = _qml_root(read_only=True)
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        type="singleSymbol",
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
        referencescale="-1",
    )
    symbols = ET.SubElement(renderer, "symbols")
    _fill_symbol(
        symbols, "0", color="0,0,0,0", outline="255,255,0,255", outline_width="0.8", style="no"
    )
    ET.SubElement(root, "layerGeometryType").text = "2"
    return _qml_text(root)


def labels_sld(classes: Sequence[str]) -> str:
    """The SLD (1.1) twin of `labels_qml`'s renderer, for the ``styleSLD`` column.

    Args:
        classes: The class names.

    Returns:
        The SLD document.
    """
    sld_ns, se_ns, ogc_ns = (
        "http://www.opengis.net/sld",
        "http://www.opengis.net/se",
        "http://www.opengis.net/ogc",
    )
    ET.register_namespace("sld", sld_ns)
    ET.register_namespace("se", se_ns)
    ET.register_namespace("ogc", ogc_ns)
    root = ET.Element(f"{{{sld_ns}}}StyledLayerDescriptor", version="1.1.0")
    named = ET.SubElement(root, f"{{{sld_ns}}}NamedLayer")
    ET.SubElement(named, f"{{{se_ns}}}Name").text = TEMPLATE_LAYER
    style = ET.SubElement(named, f"{{{sld_ns}}}UserStyle")
    ET.SubElement(style, f"{{{se_ns}}}Name").text = TEMPLATE_LAYER
    feature_style = ET.SubElement(style, f"{{{se_ns}}}FeatureTypeStyle")
    for name, (r, g, b) in class_colours(classes).items():
        rule = ET.SubElement(feature_style, f"{{{se_ns}}}Rule")
        ET.SubElement(rule, f"{{{se_ns}}}Name").text = name
        where = ET.SubElement(rule, f"{{{ogc_ns}}}Filter")
        equal = ET.SubElement(where, f"{{{ogc_ns}}}PropertyIsEqualTo")
        ET.SubElement(equal, f"{{{ogc_ns}}}PropertyName").text = CLASS_FIELD
        ET.SubElement(equal, f"{{{ogc_ns}}}Literal").text = name
        symbolizer = ET.SubElement(rule, f"{{{se_ns}}}PolygonSymbolizer")
        fill = ET.SubElement(symbolizer, f"{{{se_ns}}}Fill")
        colour = f"#{r:02x}{g:02x}{b:02x}"
        ET.SubElement(fill, f"{{{se_ns}}}SvgParameter", name="fill").text = colour
        ET.SubElement(
            fill, f"{{{se_ns}}}SvgParameter", name="fill-opacity"
        ).text = f"{FILL_ALPHA / 255:.2f}"
        stroke = ET.SubElement(symbolizer, f"{{{se_ns}}}Stroke")
        ET.SubElement(stroke, f"{{{se_ns}}}SvgParameter", name="stroke").text = colour
        ET.SubElement(stroke, f"{{{se_ns}}}SvgParameter", name="stroke-width").text = "2"
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _fill_symbol(
    parent: ET.Element, name: str, *, color: str, outline: str, outline_width: str, style: str
) -> None:
    """A QGIS fill symbol with one SimpleFill layer (properties both as Option and prop)."""
    symbol = ET.SubElement(
        parent, "symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0"
    )
    layer = ET.SubElement(
        symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"}
    )
    props = {
        "color": color,
        "style": style,
        "outline_color": outline,
        "outline_style": "solid",
        "outline_width": outline_width,
        "outline_width_unit": "MM",
        "joinstyle": "bevel",
    }
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    for key, value in props.items():  # QGIS before 3.16 reads these
        ET.SubElement(layer, "prop", k=key, v=value)


# --- helpers --------------------------------------------------------------------------------


def _class_text(value: Any) -> str | None:
    """A class value as text; None for a missing or blank value. ``2.0`` reads as ``"2"``."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, np.integer | np.bool_):
        value = value.item()
    text = str(value).strip()
    return text or None


def _clean_geometries(
    frame: gpd.GeoDataFrame, numbers: NDArray[np.int64], where: str
) -> gpd.GeoDataFrame:
    """Drop features without geometry, repair invalid ones, refuse lines and collections.

    `numbers` are the features' 1-based positions in the file, for messages.
    """
    geoms = np.asarray(frame.geometry.array, dtype=object)
    missing = np.array([g is None or g.is_empty for g in geoms], dtype=bool)
    if missing.all():
        raise LabelError(
            f"{where}: none of its {len(frame)} features with a class has a geometry: "
            "draw the polygons again"
        )
    if missing.any():
        warnings.warn(
            f"{where}: dropped {int(missing.sum())} features without geometry (features "
            f"{_feature_list(numbers[missing])})",
            LabelWarning,
            stacklevel=3,
        )
    keep = ~missing
    frame, geoms, numbers = frame[keep], geoms[keep], numbers[keep]
    for number, geom in zip(numbers, geoms, strict=True):
        if geom.geom_type not in _POLYGONAL | _PUNCTUAL:
            raise LabelError(
                f"{where}: feature {number} is a {geom.geom_type}; labels are polygons or "
                "points: draw it as a polygon, or remove it"
            )
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        repaired = [_polygonal(shapely.make_valid(g)) for g in geoms[invalid]]
        geoms = geoms.copy()
        geoms[invalid] = repaired
        lost = np.array([g is None for g in geoms], dtype=bool)
        warnings.warn(
            f"{where}: repaired {int(invalid.sum())} invalid polygons (features "
            f"{_feature_list(numbers[invalid])}; self-intersections or bad rings)"
            + (f", dropped {int(lost.sum())} without area" if lost.any() else ""),
            LabelWarning,
            stacklevel=3,
        )
        if lost.all():
            raise LabelError(
                f"{where}: none of its polygons has an area once repaired: draw them again"
            )
        frame, geoms = frame[~lost], geoms[~lost]
    frame = frame.copy()
    frame[frame.geometry.name] = gpd.GeoSeries(list(geoms), index=frame.index, crs=frame.crs)
    return frame


def _polygonal(geom: BaseGeometry) -> BaseGeometry | None:
    """The polygon parts of a repaired geometry, or None when none has an area."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in _POLYGONAL and p.area > 0]
    if not parts:
        return None
    merged = shapely.union_all(parts)
    return merged if merged.geom_type in _POLYGONAL else None


def _in_grid_crs(labels: Labels, geobox: GeoBox) -> NDArray[np.object_]:
    """The label geometries in the grid's CRS; a feature that cannot be projected is empty."""
    crs = CRS.from_user_input(_grid_crs(geobox).to_wkt())
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        projected = labels.frame.geometry.to_crs(crs)
    geoms = np.asarray(projected.array, dtype=object)
    bounds = shapely.bounds(geoms)
    broken = ~np.isfinite(bounds).all(axis=1)
    if broken.any():
        geoms = geoms.copy()
        geoms[broken] = shapely.Polygon()
    return geoms


def _claimed_pixels(
    geoms: NDArray[np.object_], shape: tuple[int, int], transform: Any
) -> NDArray[np.bool_]:
    """Pixels whose centre one of the polygons covers (edge included), or a point falls in."""
    claimed = np.zeros(shape, dtype=bool)
    if len(geoms) == 0:
        return claimed
    parts = shapely.get_parts(geoms)
    kinds = shapely.get_type_id(parts)
    polygons = parts[kinds == shapely.GeometryType.POLYGON]
    points = parts[kinds == shapely.GeometryType.POINT]
    polygons = polygons[~shapely.is_empty(polygons)]
    if len(polygons):
        claimed |= rasterize(
            polygons,
            out_shape=shape,
            transform=transform,
            fill=0,
            default_value=1,
            all_touched=False,
            dtype="uint8",
        ).astype(bool)
        # GDAL's scan line breaks ties (a centre exactly on an edge) by direction; settle
        # every pixel an edge passes through by testing its centre, edges included.
        edges = rasterize(
            shapely.boundary(polygons),
            out_shape=shape,
            transform=transform,
            fill=0,
            default_value=1,
            all_touched=True,
            dtype="uint8",
        )
        rows, cols = np.nonzero(edges)
        if len(rows):
            xs, ys = transform * (cols + 0.5, rows + 0.5)
            tree = shapely.STRtree(polygons)
            hits = tree.query(shapely.points(xs, ys), predicate="intersects")[0]
            inside = np.zeros(len(rows), dtype=bool)
            inside[hits] = True
            claimed[rows, cols] = inside
    points = points[~shapely.is_empty(points)]
    if len(points):
        coords = shapely.get_coordinates(points)
        cols_f, rows_f = ~transform * (coords[:, 0], coords[:, 1])
        cols_i = np.floor(np.asarray(cols_f)).astype(np.int64)
        rows_i = np.floor(np.asarray(rows_f)).astype(np.int64)
        ok = (rows_i >= 0) & (rows_i < shape[0]) & (cols_i >= 0) & (cols_i < shape[1])
        claimed[rows_i[ok], cols_i[ok]] = True
    return claimed


def _grid_crs(geobox: GeoBox) -> OdcCRS:
    """The grid's CRS; a grid without one is a programming error."""
    if geobox.crs is None:
        raise ValueError("the feature raster's grid has no CRS")
    return geobox.crs


def _crs_name(crs: Any) -> str:
    epsg = getattr(crs, "epsg", None)
    return f"EPSG:{epsg}" if epsg is not None else str(crs)


def _grid_text(geobox: GeoBox) -> str:
    """The grid's bounds and CRS for a message, e.g. ``bounds 500000, ... in EPSG:32733``."""
    left, bottom, right, top = geobox.boundingbox[:4]
    digits = 6 if _grid_crs(geobox).geographic else 0
    numbers = ", ".join(f"{v:.{digits}f}" for v in (left, bottom, right, top))
    return f"bounds {numbers} in {_crs_name(geobox.crs)}"


def _lonlat_bounds(labels: Labels) -> str:
    """The labels' bounds in lon/lat for a message."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bounds = labels.frame.geometry.to_crs(_WGS84).total_bounds
    return ", ".join(f"{v:.6f}" for v in bounds) + " in EPSG:4326"


def _feature_list(numbers_: Iterable[Any], limit: int = 10) -> str:
    """Feature numbers for a message, the first `limit` of them."""
    numbers = [str(int(i)) for i in numbers_]
    more = f" and {len(numbers) - limit} more" if len(numbers) > limit else ""
    return ", ".join(numbers[:limit]) + more


def _one_line(text: str) -> str:
    return " ".join(text.split())
