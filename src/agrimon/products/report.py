"""The run's report: one self-contained HTML file that opens offline and can be mailed.

Every picture is inlined as a base64 ``data:`` URI and the style sheet is inline: no script,
no link to the network, no path to another file. The report reads the run folder's standard
tables where they exist (map areas, the field-check assessment, yield forecasts, zonal
statistics, the demo accuracy) and takes the rest (pictures, model cards, the change since an
earlier run) from :class:`ReportInputs`. Every string that comes from a file is
HTML-escaped.
"""

from __future__ import annotations

import base64
import calendar
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from agrimon.products.folder import writing

if TYPE_CHECKING:
    from agrimon.products.change import ChangeSummary

REPORT_HTML = "report.html"
MAP_AREAS_CSV = "invasive_map_areas.csv"
ASSESSMENT_CSV = "assessment.csv"
YIELD_CSV = "yield_forecast.csv"
ZONAL_PARQUET = "zonal_stats.parquet"
ZONAL_CSV = "zonal_stats.csv"
ACCURACY_JSON = "invasive_accuracy.json"
#: Section ids and headings, in the report's order.
SECTIONS = (
    ("maps", "Maps"),
    ("encroached-area", "Encroached area"),
    ("yield-forecasts", "Yield forecasts"),
    ("data-quality", "Data quality"),
    ("models", "Models"),
    ("change", "Change"),
    ("open-in-qgis", "Open in QGIS"),
)
_PNG = b"\x89PNG\r\n\x1a\n"
#: Narrow no-break space: the thousands separator of "12 400 ha".
_THIN = "\u202f"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
margin:0 auto;max-width:1180px;padding:0 1.2em 2em}
header{border-bottom:2px solid #1a9641;margin-bottom:1em}
h1{font-size:1.6em;margin:.6em 0 .1em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
nav a{margin-right:1em;color:#1a6b3a}p.sub{color:#555;margin:.2em 0 .6em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1em}
figure{margin:0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#444}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f2f2f2}td.t,th.t{text-align:left}tr.total td{font-weight:600}
td.q0{background:#fcd5cf}td.q1{background:#fdebc8}td.q2{background:#dff0d8}td.na{color:#999}
.note{background:#f7f7f2;border-left:4px solid #d8b365;padding:.4em .8em}
code,pre{background:#f4f4f4;padding:0 .2em}pre{padding:.5em;overflow-x:auto}
.card{border:1px solid #ddd;padding:.2em 1em;margin:.8em 0}
@media print{.grid{display:block}figure{page-break-inside:avoid}}
"""


@dataclass(frozen=True)
class ChangeReport:
    """What changed since an earlier run of the same AOI, as the report shows it.

    Attributes:
        earlier: The earlier run's folder name (or any label).
        earlier_period: Its period (start, end), when known.
        gained_ha: Hectares newly encroached, over the AOI.
        lost_ha: Hectares no longer encroached.
        net_ha: Gained minus lost.
        zones: Per zone, figures by key: ``gained_ha``, ``lost_ha``, ``net_ha``,
            ``<index>_anomaly`` (the zone's mean difference of the index medians) or any
            other number (shown as a column named after its key).
        quicklooks: ``(title, PNG)`` of the change maps.
    """

    earlier: str
    earlier_period: tuple[date, date] | None = None
    gained_ha: float | None = None
    lost_ha: float | None = None
    net_ha: float | None = None
    zones: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    quicklooks: Sequence[tuple[str, Path]] = ()

    @classmethod
    def from_summary(
        cls,
        summary: ChangeSummary,
        *,
        quicklooks: Sequence[tuple[str, Path]] = (),
    ) -> ChangeReport:
        """The report's view of :func:`agrimon.products.change.write_change`'s summary."""
        return cls(
            earlier=summary.earlier.folder.name,
            earlier_period=(summary.earlier.start, summary.earlier.end),
            gained_ha=summary.total.get("gained_ha"),
            lost_ha=summary.total.get("lost_ha"),
            net_ha=summary.total.get("net_ha"),
            zones={name: dict(row) for name, row in summary.zones.items()},
            quicklooks=tuple(quicklooks),
        )


@dataclass(frozen=True)
class ReportInputs:
    """What the report needs beyond the run folder's standard files.

    Attributes:
        title: The report's title.
        aoi_name: Name of the AOI.
        period: First and last day of the run's period.
        project_file: File name of the run's QGIS project (``<stem>.qgz``).
        quicklooks: ``(title, PNG)`` per map, in the order shown.
        zone_charts: ``(zone name, PNG)`` per zone time-series chart.
        model_cards: ``(title, Markdown or plain text)`` per model used.
        change: The change since an earlier run, or None (no Change section).
        seasons: Per zone, the dates of the season's ``start``, ``peak`` and ``end``
            (:func:`agrimon.products.pictures.season_dates`), shown beside the charts.
        layer_groups: ``(group, layer names)`` of the QGIS project, as listed in the
            "Open in QGIS" section; empty for a general description.
        written: When the run was made, shown under the title.
        max_rows: Most rows of a long table (yield forecasts, zones); the rest are in the CSV.
        clear_threshold: Clear fraction from which a date counts as a clear observation.
    """

    title: str
    aoi_name: str
    period: tuple[date, date]
    project_file: str
    quicklooks: Sequence[tuple[str, Path]] = ()
    zone_charts: Sequence[tuple[str, Path]] = ()
    model_cards: Sequence[tuple[str, str]] = ()
    change: ChangeReport | None = None
    seasons: Mapping[str, Mapping[str, date | None]] = field(default_factory=dict)
    layer_groups: Sequence[tuple[str, Sequence[str]]] = ()
    written: datetime | None = None
    max_rows: int = 50
    clear_threshold: float = 0.5


def write_report(folder: Path, inputs: ReportInputs) -> Path:
    """Write ``folder/report.html`` from the folder's tables and ``inputs``.

    Args:
        folder: The run folder (its tables written).
        inputs: Pictures, model cards, change and the run's names.

    Returns:
        The report's path.
    """
    path = folder / REPORT_HTML
    text = render_report(folder, inputs)
    with writing(path):
        path.write_text(text, encoding="utf-8")
    return path


def render_report(folder: Path, inputs: ReportInputs) -> str:
    """The report's HTML (what :func:`write_report` writes)."""
    start, end = inputs.period
    sections = {
        "maps": _maps(inputs),
        "encroached-area": _encroached(folder, inputs),
        "yield-forecasts": _yields(folder, inputs),
        "data-quality": _quality(folder, inputs),
        "models": _models(inputs),
        "change": _change(inputs.change) if inputs.change is not None else None,
        "open-in-qgis": _qgis(folder, inputs),
    }
    shown = [(sid, heading) for sid, heading in SECTIONS if sections[sid] is not None]
    nav = "".join(f'<a href="#{sid}">{_e(heading)}</a>' for sid, heading in shown)
    written = f" · written {inputs.written:%Y-%m-%d %H:%M}" if inputs.written else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(inputs.title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(inputs.title)}</h1>",
        f'<p class="sub">{_e(inputs.aoi_name)} · {start:%Y-%m-%d} to {end:%Y-%m-%d}{written}</p>',
        f"<nav>{nav}</nav></header>",
    ]
    for sid, heading in shown:
        parts.append(f'<section id="{sid}"><h2>{_e(heading)}</h2>{sections[sid]}</section>')
    parts.append(
        f"<footer><p class='sub'>agrimon {_e(_version())} · {_e(inputs.aoi_name)}/"
        f"{_e(_period_name(inputs))}</p></footer>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def clear_observations(table: pd.DataFrame, *, threshold: float = 0.5) -> pd.DataFrame:
    """Per zone and month: dates observed, dates clear and the mean clear fraction.

    A date counts once per zone whatever the number of indices in the table (the clear
    fraction is the zone's, the same for every index).

    Args:
        table: ``zonal_stats`` rows (``name``, ``time``, ``clear_fraction``; ``zone_id``
            optional).
        threshold: Clear fraction from which a date is a clear observation.

    Returns:
        Columns ``zone``, ``month`` (``YYYY-MM``), ``dates``, ``clear_dates``,
        ``mean_clear_fraction``; zones in the table's order, months in time order.
    """
    frame = table.assign(time=pd.to_datetime(table["time"]), zone=table["name"].astype(str))
    keys = ["zone_id", "zone"] if "zone_id" in frame else ["zone"]
    order = {z: k for k, z in enumerate(dict.fromkeys(frame["zone"]))}
    per_date = frame.groupby([*keys, "time"], sort=False)["clear_fraction"].max().reset_index()
    per_date["month"] = per_date["time"].dt.strftime("%Y-%m")
    per_date["clear"] = per_date["clear_fraction"] >= threshold
    out = (
        per_date.groupby([*keys, "month"], sort=False)
        .agg(
            dates=("time", "size"),
            clear_dates=("clear", "sum"),
            mean_clear_fraction=("clear_fraction", "mean"),
        )
        .reset_index()
    )
    out["_order"] = out["zone"].map(order)
    out = out.sort_values(["_order", "month"], kind="stable").reset_index(drop=True)
    out["clear_dates"] = out["clear_dates"].astype(int)
    return out[["zone", "month", "dates", "clear_dates", "mean_clear_fraction"]]


def markdown_html(text: str) -> str:
    """A small, safe subset of Markdown as HTML: headings, lists, tables, paragraphs.

    Everything is escaped first; only `code` spans and **bold** become markup. Enough for
    agrimon's model cards; anything else shows as its plain text.
    """
    out: list[str] = []
    block: list[str] = []
    kind = ""

    def flush() -> None:
        nonlocal kind
        if kind == "p":
            out.append(f"<p>{' '.join(_inline(line) for line in block)}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(line)}</li>" for line in block) + "</ul>")
        elif kind == "table":
            out.append(_markdown_table(block))
        block.clear()
        kind = ""

    for raw in text.splitlines():
        line = raw.strip()
        heading = re.fullmatch(r"(#{1,6})\s+(.*)", line)
        this = (
            ""
            if not line or heading
            else "ul"
            if re.match(r"[-*]\s", line)
            else "table"
            if line.startswith("|")
            else "p"
        )
        if this != kind or not line:
            flush()
        if heading:
            level = min(3 + len(heading.group(1)), 6)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            continue
        if this:
            kind = this
            block.append(line[2:].strip() if this == "ul" else line)
    flush()
    return "\n".join(out)


# --- sections ------------------------------------------------------------------------------


def _maps(inputs: ReportInputs) -> str:
    parts = []
    if inputs.quicklooks:
        parts.append(_figures(inputs.quicklooks))
    else:
        parts.append("<p>This run has no map pictures.</p>")
    if inputs.zone_charts:
        parts.append("<h3>Zones through the period</h3>")
        parts.append(
            "<p>Each zone's mean index over time; filled markers are clear observations "
            f"(at least {_share(inputs.clear_threshold)} of the zone unmasked), hollow ones cloudy "
            "or partial; the band is ± 1 standard deviation of the zone's pixels.</p>"
        )
        if inputs.seasons:
            parts.append(_season_table(inputs.seasons))
        parts.append(_figures(inputs.zone_charts))
    return "\n".join(parts)


def _season_table(seasons: Mapping[str, Mapping[str, date | None]]) -> str:
    rows = [
        [f'<td class="t">{_e(zone)}</td>']
        + [f"<td>{_date(dates.get(k))}</td>" for k in ("start", "peak", "end")]
        for zone, dates in seasons.items()
    ]
    caption = "Season dates: median over each zone's pixels"
    return _table(["Zone", "Start", "Peak", "End"], rows, caption=caption)


def _encroached(folder: Path, inputs: ReportInputs) -> str:
    parts: list[str] = []
    assessment, note = _read_csv(
        folder / ASSESSMENT_CSV,
        ["zone", "class", "area_ha", "area_ha_ci95"],
        text=["zone", "class"],
    )
    areas, areas_note = _read_csv(
        folder / MAP_AREAS_CSV, ["zone", "class", "map_area_ha_biased"], text=["zone", "class"]
    )
    parts += [n for n in (note, areas_note) if n]
    if assessment is not None:
        parts.append(
            "<p>Area-adjusted estimates from the field-check sample (stratified estimator of "
            "Olofsson et al. 2014 and Stehman 2014), with 95 % confidence intervals "
            "(± 1.96 standard errors). The map area is the pixel count, biased by the map's "
            "errors; report the area-adjusted figure.</p>"
        )
        parts.append(_assessment_table(assessment, areas))
    elif areas is not None:
        parts.append(_map_area_table(areas))
        parts.append(_sample_note(folder, inputs))
    else:
        parts.append("<p>This run has no encroachment map.</p>")
    parts.append(_accuracy(folder / ACCURACY_JSON))
    return "\n".join(p for p in parts if p)


def _assessment_table(table: pd.DataFrame, areas: pd.DataFrame | None) -> str:
    biased: dict[tuple[str, str], float] = {}
    if areas is not None:
        biased = {
            (str(z), str(c)): float(v)
            for z, c, v in zip(
                areas["zone"], areas["class"], areas["map_area_ha_biased"], strict=True
            )
        }
    rows = []
    for _, r in table.iterrows():
        zone, cls = str(r["zone"]), str(r["class"])
        mapped = cell(r, "map_area_ha_biased")
        if mapped is None:
            mapped = biased.get((zone, cls))
        area, ci = cell(r, "area_ha"), cell(r, "area_ha_ci95")
        users = _pm(_pct(cell(r, "users_accuracy")), _pct(cell(r, "users_accuracy_ci95")))
        producers = _pm(
            _pct(cell(r, "producers_accuracy")),
            _pct(cell(r, "producers_accuracy_ci95")),
        )
        low = None if area is None or ci is None else area - ci
        high = None if area is None or ci is None else area + ci
        rows.append(
            [
                f'<td class="t">{_e(zone)}</td>',
                f'<td class="t">{_e(cls)}</td>',
                f"<td>{_num(mapped)}</td>",
                f"<td>{_pm(area, ci)}</td>",
                f"<td>{_num(low)} – {_num(high)}</td>",
                f"<td>{_pm(cell(r, 'area_percent'), cell(r, 'area_percent_ci95'))}</td>",
                f"<td>{users}</td>",
                f"<td>{producers}</td>",
                f"<td>{_num(cell(r, 'samples_in_zone'), 0)}</td>",
            ]
        )
    headers = [
        "Zone",
        "Class",
        "Map area (ha, pixel count, biased)",
        "Area-adjusted (ha) ± 95 % CI",
        "95 % CI (ha)",
        "% of zone ± 95 % CI",
        "User's accuracy (%)",
        "Producer's accuracy (%)",
        "Samples in zone",
    ]
    # "total": the AOI as a whole (agrimon.area.fieldcheck.TOTAL), listed first.
    totals = [str(z) == "total" for z in table["zone"]]
    return _table(headers, rows, total_rows=totals)


def _map_area_table(areas: pd.DataFrame) -> str:
    rows = [
        [
            f'<td class="t">{_e(r["zone"])}</td>',
            f'<td class="t">{_e(r["class"])}</td>',
            f"<td>{_num(cell(r, 'map_area_ha_biased'))}</td>",
            f"<td>{_num(cell(r, 'map_area_percent'))}</td>",
        ]
        for _, r in areas.iterrows()
    ]
    headers = ["Zone", "Class", "Map area (ha, pixel count, biased)", "% of zone (map)"]
    return _table(headers, rows, caption="Map areas: pixel counts of the encroachment map")


def _sample_note(folder: Path, inputs: ReportInputs) -> str:
    maps = sorted(p.name for p in folder.glob("invasive_class*.tif"))
    name = maps[0] if maps else "invasive_class.tif"
    start, end = inputs.period
    # The run's final place (the report is written while the folder is still staged).
    where = f"outputs/{inputs.aoi_name}/{_period_name(inputs)}"
    return (
        '<p class="note">These map areas are pixel counts: they carry the map\'s errors (every '
        "commission adds area, every omission removes some) and have no confidence interval. "
        "Confidence intervals need a field-check sample: draw one with "
        f"<code>agrimon sample {_e(where)}/{_e(name)} --n 300 --allocation proportional "
        "--seed 1 --out field_check.gpkg</code>, fill in its <code>reference</code> field on "
        "the ground (or on very-high-resolution imagery), then rerun with "
        f"<code>agrimon run &lt;AOI file&gt; --start {start:%Y-%m-%d} --end {end:%Y-%m-%d} "
        "--reference field_check.gpkg</code> (or <code>agrimon assess</code>): the report then "
        "shows area-adjusted estimates with 95 % confidence intervals.</p>"
    )


def _accuracy(path: Path) -> str:
    if not path.is_file():
        return ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f'<p class="note">Cannot read {_e(path.name)}: {_e(err)}.</p>'
    if not isinstance(data, dict):
        return ""
    parts = ["<h3>Map accuracy against the demo truth</h3>"]
    if "truth" in data:
        parts.append(f"<p>Truth: {_e(data['truth'])}.</p>")
    overall = finite(data.get("overall_accuracy"))
    pixels = finite(data.get("pixels"))
    parts.append(
        f"<p>Overall accuracy {_num(_pct(overall))} % over {_num(pixels, 0)} pixels "
        "(every AOI pixel scored: the demo world's truth is known everywhere).</p>"
    )
    classes = data.get("classes")
    if isinstance(classes, dict):
        keys = ("precision", "recall", "f1", "iou")
        rows = []
        for name, stats in classes.items():
            stats = stats if isinstance(stats, dict) else {}
            cells = [f"<td>{_num(finite(stats.get(k)), 3)}</td>" for k in keys]
            support = _num(finite(stats.get("support")), 0)
            rows.append([f'<td class="t">{_e(name)}</td>', *cells, f"<td>{support}</td>"])
        parts.append(_table(["Class", "Precision", "Recall", "F1", "IoU", "Pixels"], rows))
    return "\n".join(parts)


def _yields(folder: Path, inputs: ReportInputs) -> str:
    table, note = _read_csv(
        folder / YIELD_CSV, ["unit", "forecast", "p10", "p90"], text=["unit", "lead", "model"]
    )
    if note:
        return note
    if table is None:
        return "<p>This run has no yield forecast.</p>"
    parts = []
    leads = ", ".join(sorted({str(v) for v in table["lead"]})) if "lead" in table else ""
    model = _first(table, "model")
    version = _first(table, "model_version")
    issued = _first(table, "issued")
    text = f"<p>{len(table)} forecasts for {table['unit'].nunique()} units"
    text += f" (lead: {_e(leads)})" if leads else ""
    text += f", issued {_e(issued)}" if issued else ""
    text += f" by the model {_e(model)}" if model else ""
    text += f" (version {_e(version)})" if version else ""
    text += (
        ". Each forecast is in t/ha with its 80 % interval (p10 to p90: the yield falls below "
        "p10 one year in ten, and above p90 one year in ten).</p>"
    )
    parts.append(text)
    if {"area_ha", "production_t"} <= set(table.columns):
        area = float(pd.to_numeric(table["area_ha"], errors="coerce").sum())
        production = float(pd.to_numeric(table["production_t"], errors="coerce").sum())
        parts.append(
            f"<p>Total: {_num(production, 0)} t expected over {_num(area, 0)} ha (the sum of "
            "the units' forecasts; their intervals do not add up to an interval of the "
            "total).</p>"
        )
        table = table.sort_values("production_t", ascending=False, kind="stable")
    shown = table.head(inputs.max_rows)
    rows = [
        [
            f'<td class="t">{_e(r["unit"])}</td>',
            f"<td>{_e(_text(r.get('year')))}</td>",
            f'<td class="t">{_e(_text(r.get("lead")))}</td>',
            f"<td>{_num(cell(r, 'forecast'), 2)}</td>",
            f"<td>{_num(cell(r, 'p10'), 2)}</td>",
            f"<td>{_num(cell(r, 'p90'), 2)}</td>",
            f"<td>{_num(cell(r, 'area_ha'))}</td>",
            f"<td>{_num(cell(r, 'production_t'))}</td>",
        ]
        for _, r in shown.iterrows()
    ]
    headers = [
        "Unit",
        "Year",
        "Lead",
        "Forecast (t/ha)",
        "p10 (t/ha)",
        "p90 (t/ha)",
        "Area (ha)",
        "Production (t)",
    ]
    order = "largest expected production first" if "production_t" in table else "as listed"
    parts.append(_table(headers, rows, caption=f"Yield forecasts, {order}"))
    if len(table) > len(shown):
        parts.append(f"<p>{len(table) - len(shown)} more in <code>{YIELD_CSV}</code>.</p>")
    return "\n".join(parts)


def _quality(folder: Path, inputs: ReportInputs) -> str:
    table: pd.DataFrame | None = None
    try:
        if (folder / ZONAL_PARQUET).is_file():
            table = pd.read_parquet(folder / ZONAL_PARQUET)
        elif (folder / ZONAL_CSV).is_file():
            table = pd.read_csv(
                folder / ZONAL_CSV, dtype={"name": str}, keep_default_na=False, na_values=[""]
            )
    except (OSError, ValueError) as err:
        return f'<p class="note">Cannot read the zonal statistics: {_e(err)}.</p>'
    if table is None:
        return "<p>This run has no zonal statistics.</p>"
    missing = {"name", "time", "clear_fraction"} - set(table.columns)
    if missing:
        return f'<p class="note">The zonal statistics lack {_e(", ".join(sorted(missing)))}.</p>'
    counts = clear_observations(table, threshold=inputs.clear_threshold)
    months = _months(*inputs.period) or sorted(set(counts["month"]))
    months += sorted(set(counts["month"]) - set(months))
    zones = list(dict.fromkeys(counts["zone"]))
    by_key = {(str(r["zone"]), str(r["month"])): r for r in counts.to_dict(orient="records")}
    rows = []
    for zone in zones[: inputs.max_rows]:
        cells = [f'<td class="t">{_e(zone)}</td>']
        for month in months:
            r = by_key.get((zone, month))
            if r is None:
                cells.append('<td class="na" title="no acquisition">–</td>')
                continue
            clear = int(r["clear_dates"])
            level = "q0" if clear == 0 else "q1" if clear == 1 else "q2"
            tip = f"{clear} of {int(r['dates'])} dates clear; mean clear fraction "
            tip += f"{_num(_pct(finite(r['mean_clear_fraction'])), 0)} %"
            cells.append(f'<td class="{level}" title="{_e(tip)}">{clear}</td>')
        mine = counts[counts["zone"] == zone]
        cells.append(f"<td>{int(mine['clear_dates'].sum())} / {int(mine['dates'].sum())}</td>")
        # Mean over the zone's dates (each date once, whatever the number of indices).
        weights = mine["dates"].to_numpy(dtype=float)
        fractions = mine["mean_clear_fraction"].to_numpy(dtype=float)
        mean = finite((weights * fractions).sum() / weights.sum()) if weights.sum() else None
        cells.append(f"<td>{_num(_pct(mean), 0)} %</td>")
        rows.append(cells)
    headers = ["Zone", *(_month_label(m) for m in months), "Clear / all dates", "Mean clear"]
    intro = (
        f"<p>Clear observations per zone and month: dates on which at least "
        f"{_share(inputs.clear_threshold)} of the zone's pixels were unmasked (no cloud, shadow, "
        "snow or missing data). Months with fewer than two make the composites and the "
        "season dates of that time of year less certain. Hover a cell for the number of "
        "dates and the mean clear fraction.</p>"
    )
    parts = [intro, _table(headers, rows)]
    if len(zones) > inputs.max_rows:
        parts.append(f"<p>{len(zones) - inputs.max_rows} more zones in the zonal statistics.</p>")
    return "\n".join(parts)


def _models(inputs: ReportInputs) -> str:
    if not inputs.model_cards:
        return "<p>No model was used in this run.</p>"
    cards = [
        f'<div class="card"><h3>{_e(title)}</h3>{markdown_html(text)}</div>'
        for title, text in inputs.model_cards
    ]
    return "\n".join(cards)


def _change(change: ChangeReport) -> str:
    period = ""
    if change.earlier_period is not None:
        a, b = change.earlier_period
        period = f" ({a:%Y-%m-%d} to {b:%Y-%m-%d})"
    parts = [f"<p>Compared with the earlier run <code>{_e(change.earlier)}</code>{period}.</p>"]
    if any(v is not None for v in (change.gained_ha, change.lost_ha, change.net_ha)):
        parts.append(
            "<p>Encroachment over the AOI (pixel counts of the two maps): "
            f"gained {_num(change.gained_ha)} ha, lost {_num(change.lost_ha)} ha, "
            f"net {_num(change.net_ha, signed=True)} ha.</p>"
        )
    if change.zones:
        keys = _change_keys(change.zones.values())
        rows = [
            [f'<td class="t">{_e(zone)}</td>']
            + [
                f"<td>{_num(finite(row.get(k)), 3 if k.endswith('_anomaly') else 1)}</td>"
                for k in keys
            ]
            for zone, row in change.zones.items()
        ]
        parts.append(_table(["Zone", *(_change_label(k) for k in keys)], rows))
    if change.quicklooks:
        parts.append(_figures(change.quicklooks))
    return "\n".join(parts)


def _qgis(folder: Path, inputs: ReportInputs) -> str:
    project = _e(inputs.project_file)
    parts = [
        f"<p>Open <code>{project}</code> in QGIS 3 (double-click it, or "
        "<em>Project ▸ Open…</em> and choose it): every layer opens in place, styled with "
        "the colours of these pictures and with its legend.</p>"
    ]
    if inputs.layer_groups:
        items = "".join(
            f"<li><strong>{_e(group)}</strong>: {_e(', '.join(layers))}</li>"
            for group, layers in inputs.layer_groups
        )
        parts.append(f"<p>The project's layer groups:</p><ul>{items}</ul>")
    else:
        parts.append(
            "<p>The layers are grouped in the project's layers panel, top to bottom: zones and "
            "AOI, bush encroachment, yield, change, season metrics, vegetation indices.</p>"
        )
    parts.append(
        "<p>The project refers to its layers by paths relative to itself: zip this folder "
        f"(<code>{_e(_period_name(inputs))}</code>), mail it, unzip it anywhere, and the "
        "project still opens complete.</p>"
        "<p>Each GeoJSON and COG has a QGIS style of the same name beside it "
        "(<code>ndvi_median.qml</code> for <code>ndvi_median.tif</code>): a layer added by "
        "hand (<em>Layer ▸ Add Layer</em> or dragged in) opens with the same style.</p>"
    )
    files = _folder_files(folder)
    if files:
        items = "".join(
            f"<li>{_e(kind)}: {', '.join(f'<code>{_e(n)}</code>' for n in names)}</li>"
            for kind, names in files
        )
        parts.append(f"<p>In this folder:</p><ul>{items}</ul>")
    return "\n".join(parts)


# --- pieces --------------------------------------------------------------------------------


def _figures(items: Iterable[tuple[str, Path]]) -> str:
    figures = []
    for title, path in items:
        figures.append(f"<figure>{_img(path, title)}<figcaption>{_e(title)}</figcaption></figure>")
    return f'<div class="grid">{"".join(figures)}</div>'


def _img(path: Path, alt: str) -> str:
    """``path`` as an inline PNG; a note in its place when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return f'<p class="note">Picture {_e(Path(path).name)} is missing.</p>'
    if not data.startswith(_PNG):
        return f'<p class="note">Picture {_e(Path(path).name)} is not a PNG.</p>'
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    caption: str = "",
    total_rows: Sequence[bool] = (),
) -> str:
    """A table: ``headers`` are plain text (escaped), each row's cells ready ``<td>`` HTML."""
    head = "".join(f"<th{' class=t' if k == 0 else ''}>{_e(h)}</th>" for k, h in enumerate(headers))
    body = []
    for k, row in enumerate(rows):
        cls = ' class="total"' if k < len(total_rows) and total_rows[k] else ""
        body.append(f"<tr{cls}>{''.join(row)}</tr>")
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _markdown_table(lines: list[str]) -> str:
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    cells = [row for row in cells if not all(re.fullmatch(r":?-{2,}:?", c) for c in row)]
    if not cells:
        return ""
    head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    escaped = _e(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _read_csv(
    path: Path, required: Sequence[str], *, text: Sequence[str] = ()
) -> tuple[pd.DataFrame | None, str | None]:
    """A CSV as a frame (``None`` when absent) and a note when it cannot be used."""
    if not path.is_file():
        return None, None
    try:
        # Names such as "NA" stay names; only empty cells are missing values.
        table = pd.read_csv(
            path, dtype=dict.fromkeys(text, str), keep_default_na=False, na_values=[""]
        )
    except (OSError, ValueError) as err:
        return None, f'<p class="note">Cannot read {_e(path.name)}: {_e(err)}.</p>'
    missing = [c for c in required if c not in table.columns]
    if missing:
        return None, f'<p class="note">{_e(path.name)} lacks {_e(", ".join(missing))}.</p>'
    return table, None


def _folder_files(folder: Path) -> list[tuple[str, list[str]]]:
    kinds = (
        ("QGIS project", (".qgz",)),
        ("rasters (COG)", (".tif",)),
        ("vectors", (".geojson", ".gpkg")),
        ("tables", (".csv", ".parquet")),
    )
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    found = [(kind, [n for n in names if n.endswith(ext)]) for kind, ext in kinds]
    return [(kind, files) for kind, files in found if files]


def cell(row: Any, key: str) -> float | None:
    """A number of a table row, ``None`` where the column is absent or the cell empty."""
    return finite(row.get(key)) if hasattr(row, "get") else None


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _num(value: float | None, digits: int = 1, *, signed: bool = False) -> str:
    """``12 400.5``: a number with a thin-space thousands separator; ``–`` when missing."""
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:{'+' if signed else ''},.{digits}f}".replace(",", _THIN)
    return text.replace("-", "−")


def _pm(value: float | None, ci: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return _num(value, digits) if ci is None else f"{_num(value, digits)} ± {_num(ci, digits)}"


def _date(value: date | None) -> str:
    return "–" if value is None else f"{value:%Y-%m-%d}"


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return str(value)


def _first(table: pd.DataFrame, column: str) -> str:
    if column not in table.columns or table.empty:
        return ""
    values = [str(v) for v in dict.fromkeys(table[column]) if _text(v)]
    return ", ".join(values[:3])


def _months(start: date, end: date) -> list[str]:
    months = []
    y, m = start.year, start.month
    while (y, m) <= (end.year, end.month):
        months.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


def _month_label(month: str) -> str:
    year, m = month.split("-")
    return f"{calendar.month_abbr[int(m)]} {year}"


def _change_keys(rows: Iterable[Mapping[str, float]]) -> list[str]:
    seen = list(dict.fromkeys(k for row in rows for k in row))
    first = [k for k in ("gained_ha", "lost_ha", "net_ha") if k in seen]
    return first + sorted(k for k in seen if k not in first)


def _change_label(key: str) -> str:
    labels = {"gained_ha": "Gained (ha)", "lost_ha": "Lost (ha)", "net_ha": "Net (ha)"}
    if key in labels:
        return labels[key]
    if key.endswith("_anomaly"):
        return f"{key.removesuffix('_anomaly').upper()} anomaly (zone mean)"
    return key


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _period_name(inputs: ReportInputs) -> str:
    """The run folder's name, ``<start>_<end>``."""
    start, end = inputs.period
    return f"{start:%Y-%m-%d}_{end:%Y-%m-%d}"


def _share(fraction: float) -> str:
    """``50 %``: a fraction as a whole percentage."""
    return f"{100 * fraction:g} %"


def _version() -> str:
    from agrimon import __version__

    return __version__
