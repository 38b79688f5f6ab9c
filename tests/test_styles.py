"""QGIS styles from the symbology: the QML documents and the styles stored in a GeoPackage.

Pure checks of the XML (renderer types, ranges, class names, colours, labels) against the
layout QGIS 3.22 writes itself; that QGIS reads them the same way is checked in
``test_qgis_project.py``.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from itertools import pairwise
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import box

from agrimon.errors import ProductError
from agrimon.products.change import CHANGE_LAYER
from agrimon.products.cog import Layer
from agrimon.products.styles import (
    NODATA_GREY,
    graduated_classes,
    qml_path,
    ramp_items,
    raster_qml,
    store_gpkg_styles,
    vector_qml,
    write_qml,
)
from agrimon.products.symbology import (
    GREENNESS,
    YIELD_BREAKS,
    Classes,
    Graduated,
    Outline,
    Ramp,
    StyleContext,
    raster_symbology,
    season_ramp,
    vector_symbology,
)

NDVI = Layer("ndvi_median", "Median NDVI", "float32", float("nan"), "1")


def parse(qml: str) -> ET.Element:
    """The root of a QML document, which must carry QGIS's doctype."""
    assert qml.startswith("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>")
    root = ET.fromstring(qml)
    assert root.tag == "qgis"
    assert root.get("version", "").startswith("3.22")
    return root


def rgba(colour: str) -> str:
    """``#rrggbb`` as QGIS's ``r,g,b,255``."""
    return ",".join(str(int(colour[i : i + 2], 16)) for i in (1, 3, 5)) + ",255"


def one(root: ET.Element, path: str) -> ET.Element:
    """The one element at ``path``."""
    found = root.findall(path)
    assert len(found) == 1, f"{len(found)} elements at {path}"
    return found[0]


def fill_props(symbol: ET.Element) -> dict[str, str]:
    """A fill symbol's SimpleFill properties (the ``Option`` map QGIS 3.16+ reads)."""
    layer = one(symbol, "layer")
    assert layer.get("class") == "SimpleFill"
    props = {o.get("name", ""): o.get("value", "") for o in layer.findall("Option/Option")}
    # The legacy ``prop`` items say the same.
    assert {p.get("k"): p.get("v") for p in layer.findall("prop")} == props
    return props


# --- rasters -------------------------------------------------------------------------------


def test_ramp_is_a_pseudocolor_renderer_over_the_fixed_range() -> None:
    root = parse(raster_qml(raster_symbology(NDVI)))
    renderer = one(root, "pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    assert renderer.get("band") == "1"
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("-0.2", "0.9")
    assert renderer.get("nodataColor") == ""  # transparent
    # No stretch to the data: QGIS keeps the range when limits are None.
    assert one(renderer, "minMaxOrigin/limits").text == "None"
    shader = one(renderer, "rastershader/colorrampshader")
    assert shader.get("colorRampType") == "INTERPOLATED"
    assert shader.get("clip") == "0"  # beyond the range: the end colours
    assert (shader.get("minimumValue"), shader.get("maximumValue")) == ("-0.2", "0.9")
    items = shader.findall("item")
    assert [i.get("color") for i in items] == list(GREENNESS)
    assert [float(i.get("value", "nan")) for i in items] == pytest.approx(
        [-0.2, 0.02, 0.24, 0.46, 0.68, 0.9]
    )
    assert [i.get("label") for i in items] == ["-0.2", "0.02", "0.24", "0.46", "0.68", "0.9"]
    assert items[-1].get("value") == "0.9"  # not 0.9000000000000001
    assert one(shader, "rampLegendSettings").get("useContinuousLegend") == "1"


def test_nodata_drawn_grey_when_not_transparent() -> None:
    renderer = one(
        parse(raster_qml(raster_symbology(NDVI), nodata_transparent=False)), ".//rasterrenderer"
    )
    assert renderer.get("nodataColor") == rgba(NODATA_GREY)


def test_day_of_year_ramp_labels_its_ticks_with_dates() -> None:
    ramp = season_ramp((7, 1), "NDVI season start (date)")
    shader = one(parse(raster_qml(ramp)), ".//colorrampshader")
    items = [
        (float(i.get("value", "nan")), i.get("color"), i.get("label")) for i in shader.iter("item")
    ]
    values = [v for v, _, _ in items]
    assert values == sorted(values) and len(set(values)) == len(values)
    labelled = {label: value for value, _, label in items if label}
    assert labelled == {
        "1 Jan": 1,
        "1 Mar": 60,
        "1 May": 121,
        "1 Jul": 182,
        "1 Sep": 244,
        "1 Nov": 305,
    }
    # The ramp's own stops are all there, with their colours: the drawing is the ramp's.
    assert {(v, c) for v, c in ramp.color_stops()} <= {(v, c) for v, c, _ in items}
    # The season starts blue on 1 July, after the red of 30 June.
    by_value = {v: c for v, c, _ in items}
    assert (by_value[181], by_value[182]) == ("#d7191c", "#2c7bb6")
    # Dates need their own legend entries, not a continuous bar from 1 to 366.
    assert one(shader, "rampLegendSettings").get("useContinuousLegend") == "0"


def test_tick_between_stops_takes_the_ramp_colour() -> None:
    ramp = Ramp(0, 10, ("#000000", "#ffffff"), "grey", labels=((5.0, "five"),))
    assert ramp_items(ramp) == [
        (0.0, "#000000", ""),
        (5.0, "#808080", "five"),
        (10.0, "#ffffff", ""),
    ]


def test_class_raster_is_paletted_with_its_class_names() -> None:
    sym = raster_symbology(CHANGE_LAYER)
    assert isinstance(sym, Classes)
    root = parse(raster_qml(sym))
    renderer = one(root, "pipe/rasterrenderer")
    assert renderer.get("type") == "paletted"
    assert renderer.get("band") == "1"
    entries = [
        (e.get("value"), e.get("label"), e.get("color"), e.get("alpha"))
        for e in renderer.findall("colorPalette/paletteEntry")
    ]
    assert entries == [
        ("1", "not encroached", "#e0f3db", "255"),
        ("2", "gained", "#d7301f", "255"),
        ("3", "lost", "#2b8cbe", "255"),
        ("4", "encroached", "#a6611a", "255"),
    ]
    assert root.find(".//colorrampshader") is None


def test_every_raster_product_gets_a_style() -> None:
    context = StyleContext(n_dates=12)
    for name in (
        "clear_count",
        "invasive_probability",
        "ndvi_anomaly",
        "ndvi_end_doy",
        "evi_median",
    ):
        layer = Layer(name, name, "float32", float("nan"), "1")
        renderer = one(parse(raster_qml(raster_symbology(layer, context))), ".//rasterrenderer")
        assert renderer.get("type") == "singlebandpseudocolor", name
    count = one(
        parse(raster_qml(raster_symbology(Layer("clear_count", "", "uint16", 0, "1"), context))),
        ".//rasterrenderer",
    )
    assert count.get("classificationMax") == "12.0"


# --- vectors -------------------------------------------------------------------------------


def test_yield_forecast_is_graduated_on_the_forecast() -> None:
    sym = vector_symbology("yield_forecast")
    assert isinstance(sym, Graduated)
    root = parse(vector_qml(sym))
    assert root.get("labelsEnabled") == "1"
    renderer = one(root, "renderer-v2")
    assert renderer.get("type") == "graduatedSymbol"
    assert renderer.get("attr") == "forecast"
    assert renderer.get("graduatedMethod") == "GraduatedColor"
    ranges = renderer.findall("ranges/range")
    pairs = [(float(r.get("lower", "nan")), float(r.get("upper", "nan"))) for r in ranges]
    assert pairs == list(pairwise(YIELD_BREAKS))
    assert [r.get("label") for r in ranges] == ["0 – 1", "1 – 2", "2 – 3", "3 – 4", "4 – 6", "≥ 6"]
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    fills = [fill_props(symbols[str(r.get("symbol"))])["color"] for r in ranges]
    assert fills == [rgba(c) for c in sym.colors]
    assert one(renderer, "classificationMethod").get("id") == "Custom"
    text = one(root, "labeling/settings/text-style")
    assert one(root, "labeling").get("type") == "simple"
    assert text.get("fieldName") == 'format_number("forecast", 1)'
    assert text.get("isExpression") == "1"
    assert one(root, "layerGeometryType").text == "2"


def test_percent_classes_end_at_100_not_open() -> None:
    sym = vector_symbology("zones")
    assert isinstance(sym, Graduated)
    labels = [label for label, _, _, _ in graduated_classes(sym)]
    assert labels[0] == "0 – 5" and labels[-1] == "60 – 100"
    # The zone label: name, a new line, the percentage (QGIS's '\n' escape kept as is).
    text = one(parse(vector_qml(sym)), ".//text-style")
    assert (
        text.get("fieldName")
        == "\"name\" || '\\n' || format_number(\"encroached_percent\", 1) || ' %'"
    )


def test_encroachment_polygons_are_categorized_on_class() -> None:
    sym = vector_symbology("invasive_polygons")
    root = parse(vector_qml(sym))
    assert root.get("labelsEnabled") == "0"
    assert root.find("labeling") is None
    renderer = one(root, "renderer-v2")
    assert (renderer.get("type"), renderer.get("attr")) == ("categorizedSymbol", "class")
    categories = renderer.findall("categories/category")
    assert [(c.get("value"), c.get("label")) for c in categories] == [
        ("encroached", "encroached"),
        ("open", "open"),
    ]
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    assert [fill_props(symbols[str(c.get("symbol"))])["color"] for c in categories] == [
        rgba("#a6611a"),
        rgba("#1a9850"),
    ]
    change = one(parse(vector_qml(vector_symbology("invasive_change_polygons"))), "renderer-v2")
    assert change.get("attr") == "change"
    assert [c.get("label") for c in change.iter("category")] == ["gained: newly encroached", "lost"]


def test_outline_has_no_fill() -> None:
    sym = vector_symbology("aoi")
    assert isinstance(sym, Outline)
    root = parse(vector_qml(sym))
    renderer = one(root, "renderer-v2")
    assert renderer.get("type") == "singleSymbol"
    props = fill_props(one(renderer, "symbols/symbol"))
    assert props["style"] == "no"
    assert props["outline_color"] == "0,0,0,255"
    assert props["outline_width"] == "0.8" and props["outline_width_unit"] == "MM"
    labelled = parse(vector_qml(vector_symbology("zones_outline")))
    assert one(labelled, ".//text-style").get("fieldName") == '"name"'
    assert labelled.get("labelsEnabled") == "1"


# --- files ---------------------------------------------------------------------------------


def test_qml_beside_the_product(tmp_path: Path) -> None:
    product = tmp_path / "ndvi_median.tif"
    assert qml_path(product) == tmp_path / "ndvi_median.qml"
    assert qml_path(tmp_path / "invasive_polygons.geojson") == tmp_path / "invasive_polygons.qml"
    qml = raster_qml(raster_symbology(NDVI))
    assert write_qml(product, qml) == tmp_path / "ndvi_median.qml"
    assert (tmp_path / "ndvi_median.qml").read_text(encoding="utf-8") == qml
    write_qml(product, qml)  # replaced in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ndvi_median.qml"]


@pytest.fixture
def gpkg(tmp_path: Path) -> Path:
    """A GeoPackage with two polygon layers and an attribute table, as geopandas writes it."""
    path = tmp_path / "run.gpkg"
    polygons = gpd.GeoDataFrame(
        {"name": ["a", "b"]}, geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1)], crs=32734
    )
    polygons.to_file(path, layer="aoi", driver="GPKG")
    polygons.assign(forecast=[1.5, 4.2]).to_file(path, layer="yield_forecast", driver="GPKG")
    pyogrio.write_dataframe(pd.DataFrame({"zone_id": [1]}), path, layer="zonal_stats")
    return path


def style_rows(path: Path) -> list[tuple[str, str, str, int, str]]:
    """The ``layer_styles`` rows: table, geometry column, name, default flag, QML."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleName, useAsDefault, styleQML "
            "FROM layer_styles ORDER BY id"
        ).fetchall()
    return list(rows)


def test_styles_stored_as_each_layers_default(gpkg: Path) -> None:
    styles = {name: vector_qml(vector_symbology(name)) for name in ("aoi", "yield_forecast")}
    store_gpkg_styles(gpkg, styles)
    rows = style_rows(gpkg)
    assert [(t, g, n, d) for t, g, n, d, _ in rows] == [
        ("aoi", "geom", "aoi", 1),
        ("yield_forecast", "geom", "yield_forecast", 1),
    ]
    assert [qml for *_, qml in rows] == [styles["aoi"], styles["yield_forecast"]]
    # Still a GeoPackage GDAL reads: layer_styles is an attribute table beside the layers.
    assert dict(pyogrio.list_layers(gpkg))["layer_styles"] is None
    assert len(pyogrio.read_dataframe(gpkg, layer="yield_forecast")) == 2


def test_storing_again_replaces_the_default(gpkg: Path) -> None:
    store_gpkg_styles(gpkg, {"aoi": vector_qml(vector_symbology("aoi"))})
    with sqlite3.connect(gpkg) as db:  # a style the user saved, as their default
        db.execute(
            "INSERT INTO layer_styles (f_table_name, f_geometry_column, styleName, styleQML, "
            "useAsDefault) VALUES ('aoi', 'geom', 'mine', '<qgis/>', 1)"
        )
    newer = vector_qml(vector_symbology("zones_outline"))
    store_gpkg_styles(gpkg, {"aoi": newer})
    rows = style_rows(gpkg)
    assert [(n, d) for _, _, n, d, _ in rows] == [("mine", 0), ("aoi", 1)]
    assert rows[-1][-1] == newer


def test_a_table_without_geometry_takes_no_style(gpkg: Path) -> None:
    with pytest.raises(ProductError, match="zonal_stats"):
        store_gpkg_styles(gpkg, {"zonal_stats": vector_qml(vector_symbology("aoi"))})
    with pytest.raises(ProductError, match="nowhere"):
        store_gpkg_styles(gpkg, {"nowhere": vector_qml(vector_symbology("aoi"))})
