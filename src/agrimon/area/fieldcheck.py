"""The field check of a class map: the sample GeoPackage teams fill in, and its assessment.

:func:`write_sample` draws a stratified random sample of a class map (the map classes as
strata) and writes it as a GeoPackage ready for QGIS or QField: one point per sample unit
at its pixel's centre, an empty ``reference`` field with a drop-down of the map's classes,
and a table ``sample_strata`` holding each stratum's pixels and sample size (what the
estimator needs later, whichever map is assessed with the sample).

:func:`assess` reads the filled-in sample and any class map on the same classes (the one
sampled — Olofsson et al. 2014 — or another one, e.g. last season's — Stehman 2014), and
estimates areas and accuracies with their 95 % confidence intervals, in total and per zone.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyogrio.errors
from numpy.typing import NDArray

from agrimon.area import classmap as cm
from agrimon.area.estimator import AreaEstimate, estimate
from agrimon.area.sampling import Method, allocate, count_strata, draw_points, sample_size
from agrimon.errors import AssessmentError, ConfigError
from agrimon.products import gpkg, styles
from agrimon.products.folder import staged_folder, writing
from agrimon.products.manifest import sha256_file

SAMPLE_LAYER = "reference_sample"
STRATA_TABLE = "sample_strata"
REFERENCE_FIELD = "reference"
DOMAIN_NAME = "reference_class"
ASSESSMENT_JSON = "assessment.json"
ASSESSMENT_CSV = "assessment.csv"
TOTAL = "total"


@dataclass(frozen=True)
class SampleDesign:
    """How to draw the sample.

    Attributes:
        n: Sample size; ``None`` computes it by Cochran's formula (Olofsson et al. 2014,
            eq. 13) from ``expected_accuracy`` and ``target_se``.
        allocation: ``proportional``, ``equal`` or ``neyman``.
        expected_accuracy: Expected user's accuracy per map class (one value for all, or
            one per class); needed for ``neyman`` and when ``n`` is ``None``.
        target_se: Standard error of the overall accuracy aimed at, when ``n`` is ``None``.
        minimum: Floor of points per stratum (default: ``sampling.default_minimum``).
        seed: Seed of the draw (the same seed gives the same points).
    """

    n: int | None = None
    allocation: Method = "proportional"
    expected_accuracy: tuple[float, ...] = ()
    target_se: float = 0.01
    minimum: int | None = None
    seed: int = 0


def _expected(design: SampleDesign, classes: Sequence[str]) -> NDArray[np.float64] | None:
    values = design.expected_accuracy
    if not values:
        return None
    if len(values) == 1:
        values = values * len(classes)
    if len(values) != len(classes) or not all(0 < v < 1 for v in values):
        raise ConfigError(
            f"--expected-accuracy {','.join(f'{v:g}' for v in design.expected_accuracy)}: give "
            f"one value in (0, 1), or one per map class ({', '.join(classes)})"
        )
    return np.asarray(values, dtype=np.float64)


def write_sample(map_path: Path, out: Path, design: SampleDesign) -> Path:
    """Draw a stratified random sample of a class map and write it as a GeoPackage.

    Returns:
        ``out``.

    Raises:
        ConfigError: Bad map, design or output name; ``out`` exists (never replaced).
    """
    if out.suffix.lower() != ".gpkg":
        raise ConfigError(f"--out {out}: give a GeoPackage name ending in .gpkg")
    if os.path.lexists(out):
        raise ConfigError(f"--out {out} exists and is never replaced: choose another name")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
    cmap = cm.open_class_map(map_path)
    expected = _expected(design, cmap.classes)
    windows = cmap.windows()
    with cm.class_reader(cmap.path) as read:
        per_window = count_strata(windows, read, len(cmap.classes))
        pixels = per_window.sum(axis=0)
        n = design.n
        if n is None:
            if expected is None:
                raise ConfigError(
                    "give --n, or --expected-accuracy to size the sample by Cochran's formula"
                )
            n = sample_size(pixels / pixels.sum(), expected, design.target_se)
        if design.allocation == "neyman" and expected is None:
            raise ConfigError("--allocation neyman needs --expected-accuracy")
        n_h = allocate(
            n,
            pixels,
            method=design.allocation,
            expected_user_accuracy=expected,
            minimum=design.minimum,
        )
        points = draw_points(
            windows, read, n_h, np.random.default_rng(design.seed), counts=per_window
        )
    x, y = cm.pixel_centres(cmap, points.rows, points.cols)
    names = np.asarray(cmap.classes, dtype=object)
    frame = gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(points) + 1),
            "stratum": names[points.stratum],
            "map_class": names[points.stratum],
            REFERENCE_FIELD: pd.Series([None] * len(points), dtype=object),
            "note": pd.Series([None] * len(points), dtype=object),
        },
        geometry=gpd.points_from_xy(x, y),
        crs=cmap.crs,
    )
    lonlat = frame.geometry.to_crs(4326)
    frame.insert(3, "lon", lonlat.x.round(7))
    frame.insert(4, "lat", lonlat.y.round(7))
    strata = pd.DataFrame(
        {
            "stratum": list(cmap.classes),
            "pixels": pixels,
            "points": n_h,
            "pixel_area_ha": cmap.pixel_area_ha,
        }
    )
    source = f"{map_path.name} (sha256 {sha256_file(map_path)[:12]}), seed {design.seed}"
    _write_gpkg(frame, strata, out, cmap.classes, source)
    return out


def _write_gpkg(
    frame: gpd.GeoDataFrame,
    strata: pd.DataFrame,
    out: Path,
    classes: Sequence[str],
    source: str,
) -> None:
    tmp = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:12]}.tmp.gpkg")
    try:
        with writing(out):
            pyogrio.write_dataframe(
                frame,
                tmp,
                layer=SAMPLE_LAYER,
                driver="GPKG",
                dataset_options={"VERSION": "1.2"},
                layer_options={
                    "DESCRIPTION": f"Stratified random reference sample of {source}: visit "
                    f"each point and fill '{REFERENCE_FIELD}'"
                },
            )
            pyogrio.write_dataframe(strata, tmp, layer=STRATA_TABLE, driver="GPKG")
            with sqlite3.connect(tmp) as db:
                gpkg.add_enum_constraint(
                    db, SAMPLE_LAYER, REFERENCE_FIELD, DOMAIN_NAME, classes, "Reference classes"
                )
                gpkg.add_styles(
                    db, [(SAMPLE_LAYER, "geom", "field check", sample_qml(classes), "")]
                )
            db.close()
            gpkg.link_into_place(tmp, out)
    except FileExistsError:
        raise ConfigError(
            f"--out {out} exists and is never replaced: choose another name"
        ) from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def sample_qml(classes: Sequence[str]) -> str:
    """QGIS style of the sample: points hollow until ``reference`` is filled, a drop-down."""
    root = styles.qml_root(read_only=False)
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        type="RuleRenderer",
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
        referencescale="-1",
    )
    rules = ET.SubElement(renderer, "rules", key="root")
    symbols = ET.SubElement(renderer, "symbols")
    for i, (label, expression, fill) in enumerate(
        (
            ("to visit", f'"{REFERENCE_FIELD}" IS NULL', "255,255,255,0"),
            ("checked", f'"{REFERENCE_FIELD}" IS NOT NULL', "40,160,60,255"),
        )
    ):
        ET.SubElement(rules, "rule", key=f"r{i}", symbol=str(i), label=label, filter=expression)
        _marker(symbols, str(i), fill)
    fields = ET.SubElement(root, "fieldConfiguration")
    styles.value_map(styles.field_widget(fields, REFERENCE_FIELD, "ValueMap"), classes)
    editable = ET.SubElement(root, "editable")
    for name in ("id", "stratum", "map_class", "lon", "lat"):
        ET.SubElement(editable, "field", name=name, editable="0")
    ET.SubElement(root, "layerGeometryType").text = "0"
    return styles.qml_text(root)


def _marker(parent: ET.Element, name: str, fill: str) -> None:
    symbol = ET.SubElement(
        parent, "symbol", type="marker", name=name, alpha="1", clip_to_extent="1", force_rhr="0"
    )
    layer = ET.SubElement(
        symbol, "layer", {"class": "SimpleMarker", "enabled": "1", "locked": "0", "pass": "0"}
    )
    props = {
        "name": "circle",
        "color": fill,
        "outline_color": "20,20,20,255",
        "outline_width": "0.5",
        "size": "3",
        "size_unit": "MM",
    }
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    for key, value in props.items():
        ET.SubElement(layer, "prop", k=key, v=value)


# --- assessment -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A filled-in reference sample.

    Attributes:
        points: The sample points (map CRS of the assessed map).
        stratum: Stratum index of every point.
        reference: Reference class index of every point (in the map's classes).
        strata: Stratum names.
        stratum_pixels: ``N_h`` of every stratum (of the map the sample was drawn on).
    """

    points: gpd.GeoDataFrame
    stratum: NDArray[np.int64]
    reference: NDArray[np.int64]
    strata: tuple[str, ...]
    stratum_pixels: NDArray[np.int64]


def read_reference(
    path: Path, classes: Sequence[str], *, field: str = REFERENCE_FIELD
) -> Reference:
    """Read and check a filled-in sample against the classes of the map to assess.

    Raises:
        AssessmentError: Unreadable, no reference field or strata table, empty or
            unknown reference values, a point's stratum not among the strata.
    """
    where = f"reference sample {path}"
    if not path.is_file():
        raise AssessmentError(f"{where} does not exist: give the GeoPackage 'agrimon sample' wrote")
    try:
        points = gpd.read_file(path, layer=SAMPLE_LAYER)
        strata = pyogrio.read_dataframe(path, layer=STRATA_TABLE, read_geometry=False)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as err:
        raise AssessmentError(
            f"{where} has no layers '{SAMPLE_LAYER}' and '{STRATA_TABLE}' ({err}): give the "
            "GeoPackage 'agrimon sample' wrote, with its reference field filled in"
        ) from err
    if field not in points.columns:
        raise AssessmentError(
            f"{where} has no field '{field}': fill the sample's reference field in QGIS or "
            "QField, or name the field with --reference-field"
        )
    names = tuple(str(s) for s in strata["stratum"])
    text = points[field].map(lambda v: None if v is None or pd.isna(v) else str(v).strip() or None)
    missing = points["id"][text.isna()].tolist()
    if missing:
        raise AssessmentError(
            f"{where}: {len(missing)} point(s) have no reference class (ids "
            f"{_ids(missing)}): visit and fill them in; dropping points would bias the estimate"
        )
    unknown = sorted(set(text) - set(classes))
    if unknown:
        raise AssessmentError(
            f"{where}: reference class(es) {', '.join(map(repr, unknown))} are not classes of "
            f"the map ({', '.join(classes)}): correct them to one of the map's classes"
        )
    stratum_text = points["stratum"].astype(str)
    stray = sorted(set(stratum_text) - set(names))
    if stray:
        raise AssessmentError(
            f"{where}: stratum {', '.join(map(repr, stray))} is not in its '{STRATA_TABLE}' "
            "table: the sample was edited; use the file 'agrimon sample' wrote"
        )
    index = {c: i for i, c in enumerate(classes)}
    strata_index = {s: i for i, s in enumerate(names)}
    return Reference(
        points=points,
        stratum=np.array([strata_index[s] for s in stratum_text], dtype=np.int64),
        reference=np.array([index[c] for c in text], dtype=np.int64),
        strata=names,
        stratum_pixels=strata["pixels"].to_numpy(dtype=np.int64),
    )


def _ids(ids: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", … ({len(ids)} in all)" if len(ids) > limit else "")


@dataclass(frozen=True)
class Assessment:
    """Estimates in total and per zone, and where they came from."""

    map_path: Path
    reference_path: Path
    total: AreaEstimate
    zones: dict[str, AreaEstimate]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``total`` and ``zones`` as the estimator writes them."""
        return {
            "map": str(self.map_path),
            "reference": str(self.reference_path),
            "method": (
                "stratified estimator of Stehman (2014), equal to Olofsson et al. (2014) when "
                "the strata are the map's classes; 95 % confidence intervals (± 1.96 SE)"
            ),
            "map_area_note": (
                "map_area_ha_biased counts the map's pixels: it carries the map's errors. "
                "Report area_ha with its ci95."
            ),
            TOTAL: self.total.to_dict(),
            "zones": {name: est.to_dict() for name, est in self.zones.items()},
        }


def assess(
    map_path: Path,
    reference_path: Path,
    *,
    zones: gpd.GeoDataFrame | None = None,
    field: str = REFERENCE_FIELD,
) -> Assessment:
    """Estimate areas and accuracies of a class map from a filled-in reference sample.

    Args:
        map_path: The class map to assess.
        reference_path: The filled-in sample (from :func:`write_sample`, on this map or on
            another one with the same classes).
        zones: Zones to report separately (EPSG-aware frame with a ``name`` column).
        field: The field holding the reference class.

    Raises:
        AssessmentError: Bad reference sample, points outside the map or on its no-data,
            a stratum with fewer than 2 points.
        ConfigError: The map is not a class raster.
    """
    cmap = cm.open_class_map(map_path)
    ref = read_reference(reference_path, cmap.classes, field=field)
    points = ref.points.to_crs(cmap.crs)
    rows, cols = cm.pixel_of(cmap, points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    ids = points["id"].to_numpy()
    outside = ids[rows < 0].tolist()
    if outside:
        raise AssessmentError(
            f"reference sample {reference_path}: point(s) {_ids(outside)} lie outside map "
            f"{map_path}: assess the map the sample covers"
        )
    values = cm.values_at(cmap, rows, cols)
    nodata = ids[values == 0].tolist()
    if nodata or int(values.max(initial=0)) > len(cmap.classes):
        raise AssessmentError(
            f"reference sample {reference_path}: point(s) {_ids(nodata)} lie where map "
            f"{map_path} has no data: assess the map the sample was drawn for"
        )
    of_sample = partial(
        estimate,
        ref.stratum,
        values - 1,
        ref.reference,
        stratum_pixels=ref.stratum_pixels,
        classes=cmap.classes,
        pixel_area_ha=cmap.pixel_area_ha,
        stratum_names=[f"stratum '{s}'" for s in ref.strata],
    )
    total = of_sample(map_pixels=cm.class_counts(cmap))
    by_zone: dict[str, AreaEstimate] = {}
    if zones is not None:
        counts = cm.zone_class_counts(cmap, zones)
        shapes = zones.to_crs(cmap.crs).geometry.to_numpy()
        for i, name in enumerate(zones["name"].astype(str)):
            inside = points.geometry.within(shapes[i]).to_numpy()
            by_zone[name] = of_sample(map_pixels=counts[i], in_zone=inside)
    return Assessment(map_path, reference_path, total, by_zone)


CSV_FIELDS = (
    "zone",
    "class",
    "zone_area_ha",
    "map_area_ha_biased",
    "area_ha",
    "area_ha_ci95",
    "area_percent",
    "area_percent_ci95",
    "users_accuracy",
    "users_accuracy_ci95",
    "producers_accuracy",
    "producers_accuracy_ci95",
    "overall_accuracy",
    "overall_accuracy_ci95",
    "samples_in_zone",
)


def assessment_rows(assessment: Assessment) -> list[dict[str, Any]]:
    """One row per zone (the total first) and class, with the CSV's columns."""
    rows = []
    for zone, est in ((TOTAL, assessment.total), *assessment.zones.items()):
        for k, name in enumerate(est.classes):
            area, percent = est.area_ha[k], est.area_percent[k]
            ua, pa = est.users_accuracy[k], est.producers_accuracy[k]
            values = [
                zone,
                name,
                est.zone_area_ha,
                None if est.map_area_ha is None else float(est.map_area_ha[k]),
                area.value,
                area.ci95,
                percent.value,
                percent.ci95,
                ua.value,
                ua.ci95,
                pa.value,
                pa.ci95,
                est.overall_accuracy.value,
                est.overall_accuracy.ci95,
                est.samples_in_zone,
            ]
            rows.append(dict(zip(CSV_FIELDS, values, strict=True)))
    return rows


def write_assessment(assessment: Assessment, folder: Path) -> dict[str, Path]:
    """Write ``assessment.json`` and ``assessment.csv`` into an existing folder."""
    paths = {"json": folder / ASSESSMENT_JSON, "csv": folder / ASSESSMENT_CSV}
    with writing(paths["json"]):
        paths["json"].write_text(json.dumps(assessment.to_dict(), indent=2, allow_nan=False) + "\n")
        with paths["csv"].open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for row in assessment_rows(assessment):
                writer.writerow({k: _cell(v) for k, v in row.items()})
    return paths


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.6g}"
    return value


def assess_to_folder(
    map_path: Path,
    reference_path: Path,
    out: Path,
    *,
    zones: gpd.GeoDataFrame | None = None,
    field: str = REFERENCE_FIELD,
) -> Path:
    """:func:`assess` and write its tables into the new folder ``out``, atomically."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not empty: choose a new folder")
    result = assess(map_path, reference_path, zones=zones, field=field)
    with staged_folder(out) as folder:
        write_assessment(result, folder)
    return out
