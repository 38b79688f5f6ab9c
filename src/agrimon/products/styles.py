"""QGIS styles of every product, from one small QML builder.

:func:`raster_qml` and :func:`vector_qml` turn the pure symbology of
:mod:`agrimon.products.symbology` into QGIS 3.22 style documents (QML), laid out as QGIS
itself writes them (``saveNamedStyle``). A raster's style goes into a ``.qml`` beside it
(:func:`write_qml`), which QGIS applies when the layer is added; a GeoPackage layer's style
goes into the GeoPackage's ``layer_styles`` table as the layer's default
(:func:`store_gpkg_styles`), which QGIS applies on load. The project
(:mod:`agrimon.products.project`) embeds the same documents.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from agrimon.errors import ProductError
from agrimon.products import gpkg
from agrimon.products.symbology import (
    Categorized,
    Classes,
    Graduated,
    Ramp,
    RasterSymbology,
    VectorSymbology,
    _interpolate,  # the ramps' own: an extra legend item takes exactly the ramp's colour
)
from agrimon.products.vectors import replacing

#: The QGIS version the documents are written for (the LTR agencies run).
QGIS_VERSION = "3.22.0"
#: Colour of nodata pixels when they are not drawn transparent.
NODATA_GREY = "#bdbdbd"
#: Outline of filled polygons: thin dark grey, so neighbouring polygons stay apart.
FILL_OUTLINE = ("#323232", 0.2)
#: ``layerGeometryType`` of polygon layers (QGIS refuses a style of another geometry type).
POLYGON = "2"
#: A class's upper break this many times its lower one is an open end ("≥ 6"), not a limit.
OPEN_END_RATIO = 10.0


# --- the document --------------------------------------------------------------------------


def qml_root(*, read_only: bool) -> ET.Element:
    """The root of a QGIS 3.22 style document (all style categories)."""
    return ET.Element(
        "qgis",
        version=QGIS_VERSION,
        styleCategories="AllStyleCategories",
        readOnly="1" if read_only else "0",
    )


def qml_text(root: ET.Element) -> str:
    """The QML text of a style document, with QGIS's doctype."""
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    return f"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n{body}\n"


def field_widget(fields: ET.Element, name: str, widget: str) -> ET.Element:
    """Add a field's editor widget to ``fieldConfiguration``; return its ``config``."""
    field = ET.SubElement(fields, "field", name=name, configurationFlags="None")
    edit = ET.SubElement(field, "editWidget", type=widget)
    return ET.SubElement(edit, "config")


def value_map(widget: ET.Element, values: Sequence[str]) -> None:
    """Fill a ValueMap widget's ``config`` with ``values`` (each its own label)."""
    options = ET.SubElement(widget, "Option", type="Map")
    entries = ET.SubElement(options, "Option", type="List", name="map")
    for name in values:
        entry = ET.SubElement(entries, "Option", type="Map")
        ET.SubElement(entry, "Option", type="QString", name=name, value=name)


def _options(parent: ET.Element, props: Mapping[str, str]) -> None:
    """A QGIS ``Option`` map of strings, and the same as ``prop`` items (read before 3.16)."""
    options = ET.SubElement(parent, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    for key, value in props.items():
        ET.SubElement(parent, "prop", k=key, v=value)


def _rgba(colour: str, alpha: int = 255) -> str:
    """QGIS's ``r,g,b,a`` colour text of a ``#rrggbb`` colour."""
    value = colour.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"{r},{g},{b},{alpha}"


def _number(value: float) -> str:
    """A value as a legend shows it: ``0.2``, ``100``, ``-0.08``."""
    return f"{value:.6g}"


# --- rasters -------------------------------------------------------------------------------


def raster_qml(sym: RasterSymbology, *, nodata_transparent: bool = True) -> str:
    """The QGIS style of a single-band raster product.

    A :class:`Ramp` becomes a ``singlebandpseudocolor`` renderer of band 1 over the ramp's
    fixed range (never a stretch to the data: ``limits`` None), interpolating between its
    colour stops; values beyond the range take the end colours (``clip`` off). A ramp with
    ``labels`` (dates of days of the year) lists its stops in the legend with those texts;
    other ramps show a continuous colour bar from minimum to maximum. :class:`Classes`
    become a ``paletted`` renderer: one legend entry per class, with its name.

    Args:
        sym: How the product is drawn.
        nodata_transparent: Draw nodata pixels transparent; else light grey.

    Returns:
        The QML document.
    """
    root = qml_root(read_only=False)
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="paletted" if isinstance(sym, Classes) else "singlebandpseudocolor",
        band="1",
        opacity="1",
        alphaBand="-1",
        nodataColor="" if nodata_transparent else _rgba(NODATA_GREY),
    )
    if isinstance(sym, Ramp):
        renderer.set("classificationMin", repr(float(sym.minimum)))
        renderer.set("classificationMax", repr(float(sym.maximum)))
    origin = ET.SubElement(renderer, "minMaxOrigin")
    # "None": keep the fixed range; any other limit makes QGIS stretch to the data on load.
    for tag, text in (
        ("limits", "None"),
        ("extent", "WholeRaster"),
        ("statAccuracy", "Estimated"),
        ("cumulativeCutLower", "0.02"),
        ("cumulativeCutUpper", "0.98"),
        ("stdDevFactor", "2"),
    ):
        ET.SubElement(origin, tag).text = text
    if isinstance(sym, Classes):
        palette = ET.SubElement(renderer, "colorPalette")
        for value, name, colour in sym.entries:
            ET.SubElement(
                palette, "paletteEntry", value=str(value), color=colour, alpha="255", label=name
            )
    else:
        _ramp_shader(renderer, sym)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(
        pipe,
        "huesaturation",
        saturation="0",
        grayscaleMode="0",
        invertColors="0",
        colorizeOn="0",
        colorizeRed="255",
        colorizeGreen="128",
        colorizeBlue="128",
        colorizeStrength="100",
    )
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    return qml_text(root)


def ramp_items(ramp: Ramp) -> list[tuple[float, str, str]]:
    """The ``(value, colour, legend label)`` items of a ramp's colour-ramp shader.

    The ramp's stops, each labelled with its number; for a ramp with ``labels``, also an
    item at each tick (in the colour the ramp has there, so the drawing is unchanged),
    labelled with the tick's text, and the stops between ticks left without text.
    """
    # Evenly spaced stops carry float noise (0.9000000000000001): 12 digits are plenty.
    stops = [(float(f"{value:.12g}"), colour) for value, colour in ramp.color_stops()]
    ticks = dict(ramp.labels)
    items = {value: (colour, "" if ticks else _number(value)) for value, colour in stops}
    for value, text in ticks.items():
        colour = items[value][0] if value in items else _interpolate(stops, value)
        items[value] = (colour, text)
    return [(value, colour, label) for value, (colour, label) in sorted(items.items())]


def _ramp_shader(renderer: ET.Element, ramp: Ramp) -> None:
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader")
    shader.attrib.update(
        colorRampType="INTERPOLATED",
        classificationMode="1",  # continuous
        clip="0",
        minimumValue=repr(float(ramp.minimum)),
        maximumValue=repr(float(ramp.maximum)),
        labelPrecision="6",
    )
    for value, colour, label in ramp_items(ramp):
        ET.SubElement(
            shader, "item", value=repr(float(value)), color=colour, alpha="255", label=label
        )
    # A continuous bar reads well for plain numbers; dates need their own legend entries.
    legend = ET.SubElement(
        shader,
        "rampLegendSettings",
        useContinuousLegend="0" if ramp.labels else "1",
        minimumLabel="",
        maximumLabel="",
        prefix="",
        suffix="",
        direction="0",
        orientation="2",
    )
    number = ET.SubElement(ET.SubElement(legend, "numericFormat", id="basic"), "Option", type="Map")
    for kind, name, text in (
        ("QChar", "decimal_separator", ""),
        ("int", "decimals", "6"),
        ("int", "rounding_type", "0"),
        ("bool", "show_plus", "false"),
        ("bool", "show_thousand_separator", "true"),
        ("bool", "show_trailing_zeros", "false"),
        ("QChar", "thousand_separator", ""),
    ):
        ET.SubElement(number, "Option", type=kind, name=name, value=text)


# --- vectors -------------------------------------------------------------------------------


def vector_qml(sym: VectorSymbology) -> str:
    """The QGIS style of a polygon layer.

    :class:`Graduated` becomes a ``graduatedSymbol`` renderer on its field with the fixed
    breaks, :class:`Categorized` a ``categorizedSymbol`` renderer, :class:`Outline` a
    ``singleSymbol`` renderer without fill; a ``label`` expression is drawn on each feature
    (simple labelling, white halo).

    Args:
        sym: How the layer is drawn.

    Returns:
        The QML document.
    """
    root = qml_root(read_only=False)
    root.set("labelsEnabled", "1" if sym.label else "0")
    common = {"symbollevels": "0", "enableorderby": "0", "forceraster": "0", "referencescale": "-1"}
    if isinstance(sym, Graduated):
        renderer = ET.SubElement(
            root,
            "renderer-v2",
            {
                "type": "graduatedSymbol",
                "attr": sym.field,
                "graduatedMethod": "GraduatedColor",
                **common,
            },
        )
        ranges = ET.SubElement(renderer, "ranges")
        symbols = ET.SubElement(renderer, "symbols")
        for i, (label, lower, upper, colour) in enumerate(graduated_classes(sym)):
            ET.SubElement(
                ranges,
                "range",
                lower=f"{lower:.15f}",
                upper=f"{upper:.15f}",
                symbol=str(i),
                label=label,
                render="true",
            )
            _fill_symbol(symbols, str(i), colour)
        # Without it QGIS 3.22 falls back to the pre-3.10 "mode" element.
        method = ET.SubElement(renderer, "classificationMethod", id="Custom")
        ET.SubElement(method, "symmetricMode", enabled="0", symmetrypoint="0", astride="0")
        ET.SubElement(
            method, "labelFormat", format="%1 - %2", labelprecision="4", trimtrailingzeroes="1"
        )
        ET.SubElement(ET.SubElement(method, "parameters"), "Option")
        ET.SubElement(method, "extraInformation")
    elif isinstance(sym, Categorized):
        renderer = ET.SubElement(
            root, "renderer-v2", {"type": "categorizedSymbol", "attr": sym.field, **common}
        )
        categories = ET.SubElement(renderer, "categories")
        symbols = ET.SubElement(renderer, "symbols")
        for i, (value, label, colour) in enumerate(sym.entries):
            ET.SubElement(
                categories, "category", value=value, label=label, symbol=str(i), render="true"
            )
            _fill_symbol(symbols, str(i), colour)
    else:
        renderer = ET.SubElement(root, "renderer-v2", {"type": "singleSymbol", **common})
        symbols = ET.SubElement(renderer, "symbols")
        _fill_symbol(symbols, "0", None, outline=(sym.color, sym.width_mm))
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    if sym.label:
        _labeling(root, sym.label)
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    ET.SubElement(root, "legend", type="default-vector", showLabelLegend="0")
    ET.SubElement(root, "layerGeometryType").text = POLYGON
    return qml_text(root)


def graduated_classes(sym: Graduated) -> list[tuple[str, float, float, str]]:
    """The ``(legend label, lower, upper, colour)`` classes of a graduated style.

    The last class reads "≥ lower" when its upper break is only a cap (a yield of 100 t/ha),
    i.e. :data:`OPEN_END_RATIO` times its lower break or more.
    """
    classes = []
    n = len(sym.colors)
    for i, (lower, upper, colour) in enumerate(
        zip(sym.breaks[:-1], sym.breaks[1:], sym.colors, strict=True)
    ):
        open_end = i == n - 1 and lower > 0 and upper >= OPEN_END_RATIO * lower
        label = f"≥ {_number(lower)}" if open_end else f"{_number(lower)} – {_number(upper)}"
        classes.append((label, float(lower), float(upper), colour))
    return classes


def _fill_symbol(
    parent: ET.Element,
    name: str,
    fill: str | None,
    *,
    outline: tuple[str, float] = FILL_OUTLINE,
) -> None:
    """A fill symbol of one SimpleFill layer; ``fill`` None draws the outline only."""
    symbol = ET.SubElement(
        parent, "symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0"
    )
    layer = ET.SubElement(
        symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"}
    )
    line, width = outline
    _options(
        layer,
        {
            "color": _rgba(fill) if fill else "0,0,0,0",
            "style": "solid" if fill else "no",
            "outline_color": _rgba(line),
            "outline_style": "solid",
            "outline_width": _number(width),
            "outline_width_unit": "MM",
            "joinstyle": "bevel",
            "offset": "0,0",
            "offset_unit": "MM",
        },
    )


def _labeling(root: ET.Element, expression: str) -> None:
    """Simple labelling with ``expression``: dark text, white halo, inside the polygon."""
    settings = ET.SubElement(
        ET.SubElement(root, "labeling", type="simple"), "settings", calloutType="simple"
    )
    style = ET.SubElement(
        settings,
        "text-style",
        fieldName=expression,
        isExpression="1",
        fontSize="9",
        fontSizeUnit="Point",
        fontWeight="50",
        fontItalic="0",
        textColor="30,30,30,255",
        textOpacity="1",
        multilineHeight="1",
        allowHtml="0",
    )
    # A halo keeps the text legible over any fill or raster.
    ET.SubElement(
        style,
        "text-buffer",
        bufferDraw="1",
        bufferSize="0.8",
        bufferSizeUnits="MM",
        bufferColor="255,255,255,255",
        bufferOpacity="0.8",
        bufferNoFill="1",
        bufferJoinStyle="128",
    )
    ET.SubElement(settings, "text-format", multilineAlign="1", wrapChar="", formatNumbers="0")
    # Over the centroid, moved inside the polygon (placement 1: offset from centroid).
    ET.SubElement(
        settings,
        "placement",
        placement="1",
        centroidInside="1",
        centroidWhole="0",
        fitInPolygonOnly="0",
        polygonPlacementFlags="2",
        offsetType="0",
        quadOffset="4",
        priority="5",
        layerType="PolygonGeometry",
    )
    ET.SubElement(
        settings,
        "rendering",
        drawLabels="1",
        obstacle="1",
        obstacleType="1",
        obstacleFactor="1",
        displayAll="0",
        labelPerPart="0",
        upsidedownLabels="0",
        scaleVisibility="0",
        fontLimitPixelSize="0",
        limitNumLabels="0",
        zIndex="0",
    )


# --- files ---------------------------------------------------------------------------------


def qml_path(path: Path) -> Path:
    """The style file QGIS applies to ``path`` when it is added: same stem, ``.qml``."""
    return path.with_suffix(".qml")


def write_qml(path_of_product: Path, qml: str) -> Path:
    """Write ``qml`` beside a product file, atomically; return the ``.qml`` path."""
    out = qml_path(path_of_product)
    with replacing(out) as tmp:
        tmp.write_text(qml, encoding="utf-8")
    return out


def store_gpkg_styles(path: Path, styles: Mapping[str, str]) -> None:
    """Store QGIS styles in a GeoPackage as the default style of each layer.

    Each style is named after its layer, as QGIS names a layer's default style: a style of
    that name stored earlier is replaced; any other style of the layer is kept but is no
    longer its default, so QGIS applies the new one on load.

    Args:
        path: The GeoPackage.
        styles: QML document by layer (table) name; each layer must have a geometry.

    Raises:
        ProductError: A layer is not in the GeoPackage or has no geometry column.
    """
    db = sqlite3.connect(path)
    try:
        with db:
            columns = dict(
                db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall()
            )
            missing = sorted(set(styles) - set(columns))
            if missing:
                raise ProductError(
                    f"{path} has no layer with a geometry named {', '.join(missing)}: "
                    "only spatial layers take a map style"
                )
            has_styles = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'layer_styles'"
            ).fetchone()
            if has_styles:
                for table in styles:
                    db.execute(
                        "DELETE FROM layer_styles WHERE f_table_name = ? AND styleName = ?",
                        (table, table),
                    )
                    db.execute(
                        "UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?",
                        (table,),
                    )
            gpkg.add_styles(
                db,
                [(table, columns[table], table, qml, "") for table, qml in styles.items()],
            )
    finally:
        db.close()
