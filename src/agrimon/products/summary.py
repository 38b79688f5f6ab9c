"""The short Markdown summary of a finished run folder, for a Prefect artifact.

:func:`run_summary` reads only the folder's own files, each optional (a missing or unreadable
file leaves its part out), and renders GitHub-flavoured Markdown. The readers turn files into
frames and values; the formatters below them only turn those into text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyogrio

from agrimon.area.fieldcheck import ASSESSMENT_JSON, TOTAL
from agrimon.products.change import CHANGE_AREAS_CSV, TARGET
from agrimon.products.manifest import MANIFEST_JSON
from agrimon.products.report import (
    ACCURACY_JSON,
    ASSESSMENT_CSV,
    MAP_AREAS_CSV,
    REPORT_HTML,
    YIELD_CSV,
    ZONAL_CSV,
    cell,
    clear_observations,
    finite,
)

#: Yield forecasts listed before "and N more".
MAX_YIELD_ROWS = 10
#: Characters escaped with a backslash in Markdown text (``|`` would end a table cell).
_SPECIAL = "\\|`*_[]<>"
_CHANGE = ("gained_ha", "lost_ha", "net_ha")


def run_summary(folder: Path) -> str:
    """The Markdown summary of the run in ``folder``.

    Args:
        folder: A run's product folder, ``<out>/<aoi>/<start>_<end>``.

    Returns:
        Markdown text ending with a newline; a part whose file is missing is left out.
    """
    manifest = _read_json(folder / MANIFEST_JSON)
    manifest = manifest if isinstance(manifest, dict) else {}
    aoi, period = _names(folder, manifest)
    gpkg = folder / f"{aoi}_{period}.gpkg"
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    parts = [
        _heading(aoi, period, manifest, finite(_dig(manifest, "run", "seconds"))),
        _products(names, _vector_layers(gpkg), gpkg.name),
        _encroachment(*_encroached(folder), _f1(_read_json(folder / ACCURACY_JSON))),
        _change(_read_table(folder / CHANGE_AREAS_CSV, ["zone", "net_ha"], ["zone"])),
        _yields(_read_table(folder / YIELD_CSV, ["unit", "forecast", "p10", "p90"], ["unit"])),
        _quality(_zonal(folder)),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def report_link(folder: Path) -> str | None:
    """The ``file://`` URI of the run's ``report.html``; ``None`` when it is missing."""
    path = folder / REPORT_HTML
    return path.resolve().as_uri() if path.is_file() else None


# Readers: a missing or unusable file gives None.


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _read_table(path: Path, required: Sequence[str], text: Sequence[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        # Names such as "NA" stay names; only empty cells are missing values.
        table = pd.read_csv(
            path, dtype=dict.fromkeys(text, str), keep_default_na=False, na_values=[""]
        )
    except (OSError, ValueError):
        return None
    return table if set(required) <= set(table.columns) else None


def _encroached(folder: Path) -> tuple[pd.DataFrame | None, bool]:
    """The encroached class's areas per zone, and whether they are area-adjusted."""
    cols = {"area_ha": "ha", "area_ha_ci95": "ha_ci", "area_percent": "pct"}
    cols["area_percent_ci95"] = "pct_ci"
    table = _read_table(folder / ASSESSMENT_CSV, ["zone", "class", "area_ha"], ["zone", "class"])
    if table is None:
        table = _assessment_json(_read_json(folder / ASSESSMENT_JSON))
    if table is None:
        table = _read_table(folder / MAP_AREAS_CSV, ["zone", "class"], ["zone", "class"])
        cols = {"map_area_ha_biased": "ha", "map_area_percent": "pct"}
    if table is None:
        return None, False
    mine = table[table["class"] == TARGET].rename(columns=cols)
    return mine.reset_index(drop=True), "ha_ci" in cols.values()


def _assessment_json(data: Any) -> pd.DataFrame | None:
    """``assessment.json``'s encroached-class estimates in ``assessment.csv``'s columns."""
    zones = _dig(data, "zones")
    pairs = [(TOTAL, _dig(data, TOTAL)), *(zones.items() if isinstance(zones, dict) else ())]
    rows = []
    for zone, est in pairs:
        if isinstance(figures := _dig(est, "per_class", TARGET), dict):
            row: dict[str, Any] = {"zone": str(zone), "class": TARGET}
            for key in ("area_ha", "area_percent"):
                row |= {key: _dig(figures, key, "value"), f"{key}_ci95": _dig(figures, key, "ci95")}
            rows.append(row)
    return pd.DataFrame(rows) if rows else None


def _vector_layers(gpkg: Path) -> list[str] | None:
    """Names of the GeoPackage's layers with a geometry (not its attribute tables)."""
    if not gpkg.is_file():
        return None
    try:
        layers = pyogrio.list_layers(gpkg)
    except Exception:  # a broken GeoPackage leaves its part out
        return None
    return [str(name) for name, geometry in layers if geometry is not None]


def _zonal(folder: Path) -> pd.DataFrame | None:
    """Per zone: dates with any clear observation (``clear``) and all dates (``dates``)."""
    table = _read_table(folder / ZONAL_CSV, ["name", "time", "clear_fraction"], ["name"])
    if table is None:
        return None
    # Any clear pixel makes a clear observation: the smallest positive fraction.
    counts = clear_observations(table, threshold=math.ulp(0.0))
    grouped = counts.groupby("zone", sort=False)[["clear_dates", "dates"]].sum()
    return grouped.rename(columns={"clear_dates": "clear"}).reset_index()


def _f1(accuracy: Any) -> float | None:
    return finite(_dig(accuracy, "classes", TARGET, "f1"))


# Formatters: values in, Markdown out.


def _heading(aoi: str, period: str, manifest: Mapping[str, Any], seconds: float | None) -> str:
    start, _, end = period.partition("_")
    title = f"# {_md(aoi)}: " + (f"{_md(start)} to {_md(end)}" if end else _md(period))
    counted = ((manifest.get("tiles"), "tile"), (manifest.get("scenes"), "scene"))
    facts = [_count(len(v), noun) for v, noun in counted if isinstance(v, list)]
    source = _dig(manifest, "source", "name") or _dig(manifest, "parameters", "source")
    facts += [f"source **{_md(str(source))}**"] if source else []
    lines = [", ".join(facts) + "."] if facts else []
    return "\n\n".join([title, " ".join([*lines, _duration(seconds)]).strip()]).strip()


def _products(names: Sequence[str], layers: list[str] | None, gpkg: str) -> str:
    rasters = sum(n.endswith(".tif") for n in names)
    tables = len({n.rsplit(".", 1)[0] for n in names if n.endswith((".csv", ".parquet"))})
    lines = [f"- {_count(rasters, 'raster')} (COG)"] if rasters else []
    if layers is not None:
        listed = f": {', '.join(_md(n) for n in layers)}" if layers else ""
        lines.append(f"- {_count(len(layers), 'vector layer')} in `{gpkg}`{listed}")
    if tables:
        lines.append(f"- {_count(tables, 'table')} (CSV or Parquet)")
    lines += [f"- QGIS project: `{n}`" for n in names if n.endswith(".qgz")]
    if REPORT_HTML in names:
        lines.append(f"- Report: `{REPORT_HTML}`")
    return _section("Products", "\n".join(lines))


def _encroachment(areas: pd.DataFrame | None, adjusted: bool, f1: float | None) -> str:
    """``areas``: the encroached class's ``zone``, ``ha``, ``ha_ci``, ``pct``, ``pct_ci``."""
    ci = " ± 95 % CI" if adjusted else ""
    heads = ["Zone", f"Encroached, {'area-adjusted' if adjusted else 'map area'} (ha){ci}"]
    rows = [
        [
            _md(str(r["zone"])),
            *(_pm(cell(r, k), cell(r, f"{k}_ci")) for k in ("ha", "pct")),
        ]
        for _, r in (areas if areas is not None else pd.DataFrame()).iterrows()
    ]
    accuracy = (
        f"F1 of the {TARGET} class (`{ACCURACY_JSON}`): {_num(f1, 3)}." if f1 is not None else ""
    )
    return _section("Bush encroachment", _table([*heads, f"% of zone{ci}"], rows), accuracy)


def _change(change: pd.DataFrame | None) -> str:
    rows = [
        [_md(str(r["zone"])), *(_num(cell(r, k), signed=k == "net_ha") for k in _CHANGE)]
        for _, r in (change if change is not None else pd.DataFrame()).iterrows()
    ]
    table = _table(["Zone", "Gained (ha)", "Lost (ha)", "Net (ha)"], rows)
    return _section("Change since the earlier run", table)


def _yields(table: pd.DataFrame | None) -> str:
    if table is None:
        return ""
    if "production_t" in table.columns:  # as the report: largest expected production first
        table = table.sort_values("production_t", ascending=False, kind="stable")
    rows = [
        [*(_md(_text(r.get(k))) for k in ("unit", "year", "lead")), *_forecast(r)]
        for _, r in table.head(MAX_YIELD_ROWS).iterrows()
    ]
    heads = ["Unit", "Year", "Lead", "Forecast (t/ha)", "10–90 % (t/ha)"]
    more = len(table) - MAX_YIELD_ROWS
    rest = f"and {more} more in `{YIELD_CSV}`." if more > 0 else ""
    return _section("Yield forecasts", _table(heads, rows), rest)


def _forecast(row: Any) -> tuple[str, str]:
    """A forecast row's yield and its 10–90 % interval, in t/ha."""
    low, high = _num(cell(row, "p10"), 2), _num(cell(row, "p90"), 2)
    return _num(cell(row, "forecast"), 2), f"{low} – {high}"


def _quality(counts: pd.DataFrame | None) -> str:
    rows = [
        [_md(str(r["zone"])), str(int(r["clear"])), str(int(r["dates"]))]
        for _, r in (counts if counts is not None else pd.DataFrame()).iterrows()
    ]
    return _section("Data quality", _table(["Zone", "Dates with any clear pixel", "Dates"], rows))


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else ""
    return f"The run took {text or f'{seconds:.1f} s'}."


def _section(title: str, *parts: str) -> str:
    """A ``##`` section of the non-empty ``parts``; empty when all are."""
    kept = [p for p in parts if p]
    return "\n\n".join([f"## {title}", *kept]) if kept else ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of already escaped cells; empty without rows."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows]) if rows else ""


def _md(text: str) -> str:
    """``text`` safe in a Markdown table cell: one line, Markdown characters escaped."""
    text = " ".join(text.splitlines())
    return "".join(f"\\{c}" if c in _SPECIAL else c for c in text)


def _names(folder: Path, manifest: Mapping[str, Any]) -> tuple[str, str]:
    """The AOI name and the period (``<start>_<end>``) of the run folder."""
    aoi = _dig(manifest, "aoi", "name")
    start, end = _dig(manifest, "parameters", "start"), _dig(manifest, "parameters", "end")
    real = folder.resolve()  # not the name of a link such as ``<aoi>/latest``
    period = f"{start}_{end}" if start and end else real.name
    return (str(aoi) if aoi else real.parent.name), period


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _num(value: float | None, digits: int = 1, *, signed: bool = False) -> str:
    return "–" if value is None else f"{value:{'+' if signed else ''}.{digits}f}"


def _pm(value: float | None, ci: float | None) -> str:
    return _num(value) if ci is None or value is None else f"{_num(value)} ± {_num(ci)}"


def _text(value: Any) -> str:
    if isinstance(value, float):  # a year read as a float beside an empty cell
        return "" if not math.isfinite(value) else f"{value:g}"
    return "" if value is None else str(value)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
