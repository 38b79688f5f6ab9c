"""How every product is drawn: fixed colour ramps, class palettes and vector symbols.

Pure data, shared by the QGIS styles (:mod:`agrimon.products.styles`), the quicklooks and
charts (:mod:`agrimon.products.pictures`) and the report, so that a map looks the same in
QGIS, in the PNG and in the report. Ranges are fixed and meaningful (NDVI −0.2…0.9), never
stretched to a run's own minimum and maximum, so two runs' maps compare by eye.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from itertools import pairwise

from agrimon.products.cog import Layer

#: Brown (bare) → yellow → green (dense green vegetation).
GREENNESS = ("#a6611a", "#dfc27d", "#f5f5c8", "#a6d96a", "#1a9641", "#00441b")
#: Dry (brown) → wet (blue): moisture and water indices.
MOISTURE = ("#8c510a", "#dfc27d", "#f6e8c3", "#80cdc1", "#2166ac")
#: Sequential light → dark for counts, lengths and integrals.
SEQUENTIAL = ("#ffffcc", "#a1dab4", "#41b6c4", "#2c7fb8", "#253494")
#: Pale yellow → dark red: probability of encroachment. Not white at 0 %, which would read as
#: nodata on QGIS's white canvas.
PROBABILITY = ("#ffffd4", "#fee391", "#fe9929", "#cc4c02", "#662506")
#: Pale lilac → purple: uncertainty (not white at 0 %, as above).
UNCERTAINTY = ("#f2f0f7", "#dadaeb", "#9e9ac8", "#6a51a3", "#3f007d")
#: Loss (brown) ← no change (white) → gain (green): anomalies and differences.
DIVERGING = ("#8c510a", "#d8b365", "#f5f5f5", "#5ab4ac", "#01665e")
#: Colours through a season: early (blue) → mid (green, yellow) → late (red).
SEASON = ("#2c7bb6", "#abd9e9", "#ffffbf", "#fdae61", "#d7191c")


@dataclass(frozen=True)
class Ramp:
    """A continuous raster drawn with a colour ramp over a fixed range.

    Attributes:
        minimum: Value drawn with the first colour (and below it).
        maximum: Value drawn with the last colour (and above it).
        colors: Hex colours at evenly spaced stops from ``minimum`` to ``maximum``.
        title: Legend title, with units.
        stops: Explicit ``(value, colour)`` stops, when not evenly spaced (they win over
            ``colors``); a jump between two stops one unit apart draws a discontinuity,
            e.g. where a day-of-year wraps at 1 January in a southern season.
        labels: ``(value, text)`` legend ticks (e.g. dates for days of the year); empty for
            plain numbers.
    """

    minimum: float
    maximum: float
    colors: tuple[str, ...]
    title: str
    stops: tuple[tuple[float, str], ...] = ()
    labels: tuple[tuple[float, str], ...] = ()

    def color_stops(self) -> tuple[tuple[float, str], ...]:
        """The ramp's ``(value, colour)`` stops, in increasing value."""
        if self.stops:
            return self.stops
        n = len(self.colors)
        span = self.maximum - self.minimum
        return tuple(
            (self.minimum + span * i / (n - 1), colour) for i, colour in enumerate(self.colors)
        )


@dataclass(frozen=True)
class Classes:
    """A class raster drawn with one colour per pixel value (QGIS's paletted renderer).

    Attributes:
        entries: ``(pixel value, class name, hex colour)`` per class, nodata excluded.
        title: Legend title.
    """

    entries: tuple[tuple[int, str, str], ...]
    title: str


@dataclass(frozen=True)
class Graduated:
    """Polygons filled by classes of a numeric field, with fixed breaks.

    Attributes:
        field: Attribute the colour follows.
        breaks: Class limits, increasing: ``len(colors) + 1`` values.
        colors: Fill colour of each class.
        title: Legend title, with units.
        label: QGIS expression of the label drawn on each feature, or ``""`` for none.
    """

    field: str
    breaks: tuple[float, ...]
    colors: tuple[str, ...]
    title: str
    label: str = ""

    def __post_init__(self) -> None:
        if len(self.breaks) != len(self.colors) + 1:
            raise ValueError("a graduated style needs one break more than it has colours")


@dataclass(frozen=True)
class Categorized:
    """Polygons filled by the value of a text field.

    Attributes:
        field: Attribute the colour follows.
        entries: ``(value, legend label, fill colour)`` per category.
        title: Legend title.
        label: QGIS label expression, or ``""``.
    """

    field: str
    entries: tuple[tuple[str, str, str], ...]
    title: str
    label: str = ""


@dataclass(frozen=True)
class Outline:
    """Polygons drawn as outlines only (AOI, zones), optionally labelled.

    Attributes:
        color: Line colour.
        width_mm: Line width in millimetres.
        title: Legend title.
        label: QGIS label expression, or ``""``.
    """

    color: str
    width_mm: float
    title: str
    label: str = ""


RasterSymbology = Ramp | Classes
VectorSymbology = Graduated | Categorized | Outline


@dataclass(frozen=True)
class StyleContext:
    """What a run's styles depend on beyond the product's name.

    Attributes:
        season_start: (month, day) on which the AOI's season starts (1 July in the south).
        n_dates: Number of acquisition dates of the run (top of the clear-count ramp).
        classes: Class names and colours of an encroachment map, when the run has one.
    """

    season_start: tuple[int, int] = (7, 1)
    n_dates: int = 73
    classes: tuple[tuple[int, str, str], ...] = field(default_factory=tuple)


#: Fixed ranges of the index composites: (minimum, maximum, colours).
INDEX_RANGES: dict[str, tuple[float, float, tuple[str, ...]]] = {
    "ndvi": (-0.2, 0.9, GREENNESS),
    "evi": (-0.2, 0.9, GREENNESS),
    "evi2": (-0.2, 0.9, GREENNESS),
    "savi": (-0.2, 0.8, GREENNESS),
    "msavi2": (-0.2, 0.8, GREENNESS),
    "gndvi": (-0.2, 0.9, GREENNESS),
    "ndre": (-0.2, 0.7, GREENNESS),
    "ndwi": (-0.8, 0.6, MOISTURE),
    "mndwi": (-0.8, 0.6, MOISTURE),
    "ndmi": (-0.6, 0.6, MOISTURE),
    "nbr": (-0.5, 0.9, GREENNESS),
    "ndsi": (-0.8, 0.8, MOISTURE),
    "bsi": (-0.5, 0.5, tuple(reversed(GREENNESS))),
}
#: Range of a difference of two index composites (change products).
ANOMALY_RANGE = (-0.3, 0.3)

#: Encroachment change classes: pixel value, name, colour (0 is nodata).
CHANGE_CLASSES: tuple[tuple[int, str, str], ...] = (
    (1, "stable: not encroached", "#e0f3db"),
    (2, "gained: newly encroached", "#d7301f"),
    (3, "lost: no longer encroached", "#2b8cbe"),
    (4, "stable: encroached", "#a6611a"),
)

#: Breaks of yield forecasts, t/ha (maize and the other cereals of the region).
YIELD_BREAKS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 100.0)
#: Breaks of encroached-area percentages.
PERCENT_BREAKS = (0.0, 5.0, 10.0, 20.0, 40.0, 60.0, 100.0)


def season_labels(season_start: tuple[int, int], *, step_months: int = 2) -> list[tuple[int, str]]:
    """Day-of-year ticks every ``step_months`` from the season's start, as ``"1 Jul"`` text."""
    month, day = season_start
    ticks = []
    for k in range(0, 12, step_months):
        m = (month - 1 + k) % 12 + 1
        d = date(2001, m, min(day, 28))
        ticks.append((d.timetuple().tm_yday, d.strftime("%-d %b")))
    return ticks


def season_ramp(season_start: tuple[int, int], title: str) -> Ramp:
    """Day of year drawn as dates of the season: one colour run from the season's start.

    Days of year wrap at 1 January; a season starting on 1 July (day 182) runs 182…365 and
    then 1…181. The ramp's stops follow the season, with a jump between the day before the
    start and the start, so that colour follows time within the season.
    """
    start = date(2001, *season_start).timetuple().tm_yday
    n = len(SEASON)
    # A colour's place in the season: 0 at the start, 365 at its last day.
    by_offset = [(365 * i / (n - 1), colour) for i, colour in enumerate(SEASON)]
    days = {1, 366, *(int((start - 1 + o) % 365) + 1 for o, _ in by_offset[:-1])}
    if start > 1:
        days |= {start - 1, start}
    stops = tuple(
        (float(d), _interpolate(by_offset, float(min(365, (d - start) % 366))))
        for d in sorted(days)
    )
    return Ramp(
        1.0,
        366.0,
        SEASON,
        title,
        stops=stops,
        labels=tuple(sorted((float(v), t) for v, t in season_labels(season_start))),
    )


def _interpolate(stops: list[tuple[float, str]], x: float) -> str:
    """Colour at ``x`` of a piecewise-linear ramp (stops increasing in value)."""
    for (x0, c0), (x1, c1) in pairwise(stops):
        if x0 <= x <= x1:
            t = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
            a, b = _rgb(c0), _rgb(c1)
            return "#" + "".join(f"{round(p + (q - p) * t):02x}" for p, q in zip(a, b, strict=True))
    return stops[0][1] if x < stops[0][0] else stops[-1][1]


def _rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def hex_colour(rgba: tuple[int, int, int, int]) -> str:
    """``#rrggbb`` of an RGBA tuple (alpha dropped)."""
    return "#" + "".join(f"{v:02x}" for v in rgba[:3])


def raster_symbology(layer: Layer, context: StyleContext | None = None) -> RasterSymbology:
    """How the raster product ``layer`` is drawn.

    Args:
        layer: The product (its name decides; class rasters use their own palette).
        context: The run's season, dates and classes.

    Returns:
        A fixed-range :class:`Ramp` or the :class:`Classes` of a class raster.
    """
    ctx = context or StyleContext()
    name = layer.name
    if layer.categories and layer.palette:
        entries = tuple(
            (value, label, hex_colour(layer.palette[value]))
            for value, label in enumerate(layer.categories)
            if label and value < len(layer.palette)
        )
        return Classes(entries, layer.title)
    if name.startswith("invasive_change"):
        return Classes(CHANGE_CLASSES, "Encroachment change")
    if name == "invasive_probability":
        return Ramp(0, 100, PROBABILITY, "Probability of encroachment (%)")
    if name == "invasive_uncertainty":
        return Ramp(0, 100, UNCERTAINTY, "Uncertainty: class entropy (% of maximum)")
    if name == "clear_count":
        return Ramp(0, max(ctx.n_dates, 1), SEQUENTIAL, "Clear-sky observations")
    index, _, metric = name.partition("_")
    lo, hi, colours = INDEX_RANGES.get(index, (-1.0, 1.0, GREENNESS))
    label = index.upper()
    if metric in ("median", "peak_value", "dry_min"):
        what = {"median": "median", "peak_value": "peak", "dry_min": "dry-season minimum"}
        return Ramp(lo, hi, colours, f"{label} {what[metric]}")
    if metric == "anomaly":
        return Ramp(*ANOMALY_RANGE, DIVERGING, f"{label} anomaly (this period − earlier)")
    if metric in ("start_doy", "peak_doy", "end_doy"):
        return season_ramp(ctx.season_start, f"{label} season {metric.split('_')[0]} (date)")
    if metric == "season_length":
        return Ramp(0, 365, SEQUENTIAL, f"{label} season length (days)")
    if metric == "amplitude":
        return Ramp(0, 0.6, SEQUENTIAL, f"{label} seasonal amplitude")
    if metric == "integral":
        return Ramp(0, 250, SEQUENTIAL, f"{label} season integral (index × days)")
    if metric == "dry_wet_ratio":
        # 1 = as green in the dry season as in the wet one (evergreen woody plants).
        return Ramp(0.2, 1.2, GREENNESS, f"{label} dry/wet-season ratio")
    return Ramp(lo, hi, colours, layer.title)


#: Vector products: layer name → how it is drawn.
VECTOR_SYMBOLOGY: dict[str, VectorSymbology] = {
    "aoi": Outline("#000000", 0.8, "Area of interest"),
    "zones": Graduated(
        "encroached_percent",
        PERCENT_BREAKS,
        ("#fff7ec", "#fdd49e", "#fdbb84", "#fc8d59", "#d7301f", "#7f0000"),
        "Encroached area (% of zone, map count)",
        label="\"name\" || '\\n' || format_number(\"encroached_percent\", 1) || ' %'",
    ),
    "zones_outline": Outline("#333333", 0.4, "Zones", label='"name"'),
    "invasive_polygons": Categorized(
        "class",
        (("encroached", "encroached", "#a6611a"), ("open", "open", "#1a9850")),
        "Encroachment polygons",
    ),
    "invasive_change_polygons": Categorized(
        "change",
        (("gained", "gained: newly encroached", "#d7301f"), ("lost", "lost", "#2b8cbe")),
        "Encroachment change",
        label="format_number(\"area_ha\", 1) || ' ha'",
    ),
    "yield_forecast": Graduated(
        "forecast",
        YIELD_BREAKS,
        ("#ffffcc", "#d9f0a3", "#addd8e", "#78c679", "#31a354", "#006837"),
        "Yield forecast (t/ha)",
        label='format_number("forecast", 1)',
    ),
}


def vector_symbology(name: str) -> VectorSymbology:
    """How the vector layer ``name`` is drawn (a per-UTM-zone suffix such as ``_33S`` ignored).

    Raises:
        KeyError: No style for that layer.
    """
    base = name
    for key in sorted(VECTOR_SYMBOLOGY, key=len, reverse=True):
        if name == key or name.startswith(key + "_"):
            base = key
            break
    return VECTOR_SYMBOLOGY[base]
