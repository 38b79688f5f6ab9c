"""Pictures of a run: map quicklooks of the COGs and per-zone time-series charts.

Drawn with matplotlib's object API (:class:`~matplotlib.figure.Figure` on an Agg canvas), never
pyplot, so that no global backend or figure state changes for other users of matplotlib in the
process. Colours and ranges come from :mod:`agrimon.products.symbology`, the same data as the
QGIS styles, so a quicklook looks like the layer in QGIS and two runs compare by eye.

Rasters are read decimated (``out_shape``, which GDAL serves from the COG's overviews), so a
picture of a large AOI costs the memory of the picture, not of the raster.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
from affine import Affine
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import (
    BoundaryNorm,
    Colormap,
    LinearSegmentedColormap,
    ListedColormap,
    Normalize,
    to_rgba,
)
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from numpy.typing import NDArray
from PIL import Image
from rasterio.enums import Resampling
from rasterio.windows import Window
from shapely import get_parts
from shapely.geometry.base import BaseGeometry

from agrimon.products.folder import writing
from agrimon.products.symbology import (
    INDEX_RANGES,
    VECTOR_SYMBOLOGY,
    Classes,
    Outline,
    Ramp,
    RasterSymbology,
)

DPI = 150
#: Keys of the season rasters :func:`season_dates` reads, in the order of the season.
SEASON_METRICS = ("start", "peak", "end")
#: Colour of the zone charts' line and markers (the greenness ramp's dark green).
LINE_COLOUR = "#1a9641"
#: Colours of a ramp in a quicklook's palette (the rest are greys for text and lines).
RAMP_LEVELS = 96
_MM_TO_PT = 72.0 / 25.4
F64 = NDArray[np.float64]


def quicklook(
    raster: Path,
    sym: RasterSymbology,
    *,
    title: str,
    out: Path,
    outline: BaseGeometry | None = None,
    max_px: int = 900,
) -> Path:
    """Draw a single-band raster as a PNG map with its legend, scale bar and north arrow.

    Args:
        raster: The (COG) raster; band 1 is drawn.
        sym: How it is drawn: a fixed-range :class:`Ramp` with a colour bar, or the
            :class:`Classes` of a class raster with a legend of its class names.
        title: Title above the map, e.g. ``"grootfontein · 2023-07-01–2024-06-30 · NDVI
            median"``.
        out: PNG to write.
        outline: The AOI (or any geometry) in the raster's CRS, drawn on top.
        max_px: Longest side, in pixels, of the raster as read (decimated beyond that).

    Returns:
        ``out``.
    """
    # Classes and days of year (a ramp with a jump) must not be averaged: no class 1.5, no
    # day half-way between the two ends of the year.
    nearest = isinstance(sym, Classes) or bool(sym.stops)
    data, bounds, metres = _read_decimated(raster, max_px=max_px, nearest=nearest)
    left, bottom, right, top = bounds
    aspect = (top - bottom) / max(right - left, 1e-9)
    map_w = 5.0
    map_h = min(max(map_w * aspect, 2.5), 7.5)
    fig = Figure(figsize=(map_w + 2.4, map_h + 0.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    extent = (left, right, bottom, top)
    if isinstance(sym, Ramp):
        cmap, norm = ramp_colormap(sym)
        image = ax.imshow(data, cmap=cmap, norm=norm, extent=extent, interpolation="nearest")
        bar = fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
        bar.set_label(sym.title)
        if sym.labels:
            bar.set_ticks([v for v, _ in sym.labels], labels=[t for _, t in sym.labels])
        palette = [cmap(i / (RAMP_LEVELS - 1)) for i in range(RAMP_LEVELS)]
    else:
        cmap, norm = classes_colormap(sym)
        ax.imshow(
            class_indices(data, sym), cmap=cmap, norm=norm, extent=extent, interpolation="nearest"
        )
        handles = [Patch(facecolor=c, edgecolor="#555555", label=n) for _, n, c in sym.entries]
        # Beside the map, its title wrapped: a long title must not widen the figure.
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            title=textwrap.fill(sym.title, 20),
            frameon=False,
            fontsize=8,
            title_fontsize=8,
        )
        palette = [to_rgba(c) for _, _, c in sym.entries]
    if outline is not None and not outline.is_empty:
        _draw_outline(ax, outline)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    if metres:
        _scale_bar(ax, bounds)
    _north_arrow(ax)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(textwrap.fill(title, 60), fontsize=9)
    return _save(fig, out, palette)


def ramp_colormap(sym: Ramp) -> tuple[Colormap, Normalize]:
    """The colour map and fixed normalisation of a ramp (values beyond it: the end colours)."""
    span = sym.maximum - sym.minimum or 1.0
    stops = [(min(max((v - sym.minimum) / span, 0.0), 1.0), c) for v, c in sym.color_stops()]
    # matplotlib needs stops from exactly 0 to 1; a ramp's ends carry its end colours.
    if stops[0][0] > 0.0:
        stops.insert(0, (0.0, stops[0][1]))
    if stops[-1][0] < 1.0:
        stops.append((1.0, stops[-1][1]))
    # Many levels: a season ramp jumps within one day of 366.
    cmap = LinearSegmentedColormap.from_list("agrimon", stops, N=1024)
    return cmap.with_extremes(bad=(0.0, 0.0, 0.0, 0.0)), Normalize(
        sym.minimum, sym.maximum, clip=True
    )


def classes_colormap(sym: Classes) -> tuple[Colormap, BoundaryNorm]:
    """Colour map of a class raster recoded by :func:`class_indices` (0, 1, … per entry)."""
    cmap = ListedColormap([c for _, _, c in sym.entries]).with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    n = len(sym.entries)
    return cmap, BoundaryNorm(np.arange(n + 1) - 0.5, n)


def class_indices(data: np.ma.MaskedArray, sym: Classes) -> np.ma.MaskedArray:
    """Pixel values recoded to the entries' positions; values of no entry masked (blank)."""
    values = np.ma.getdata(data).astype(np.float64)
    index = np.full(values.shape, np.nan)
    for k, (value, _, _) in enumerate(sym.entries):
        index[values == value] = k
    return np.ma.masked_array(index, mask=np.ma.getmaskarray(data) | np.isnan(index))


def scale_length(width_m: float) -> float:
    """A round scale-bar length (1, 2 or 5 × 10ⁿ m) of at most a fifth of the map's width."""
    target = max(width_m / 5.0, 1e-9)
    power = 10.0 ** math.floor(math.log10(target))
    return max(m * power for m in (1.0, 2.0, 5.0) if m * power <= target * (1 + 1e-9))


def scale_label(length_m: float) -> str:
    """``"2 km"``, ``"500 m"``: a scale-bar length as text."""
    if length_m >= 1000.0:
        return f"{length_m / 1000.0:g} km"
    return f"{length_m:g} m"


def season_dates(
    doy_rasters: Mapping[str, Path],
    zones: gpd.GeoDataFrame,
    *,
    period_start: date,
    max_px: int = 2048,
) -> dict[str, dict[str, date | None]]:
    """Per zone, the median date of each season metric (start, peak, end) inside it.

    A day of year is the date it names within the year from ``period_start`` (day 1 =
    1 January): with a period from 2023-07-01, day 300 is 2023-10-27 and day 30 is
    2024-01-30. The median is taken over these dates, not over the raw days, so a zone whose
    seasons start on either side of 1 January gets the middle date, not a day from the wrong
    end of the year.

    Args:
        doy_rasters: Day-of-year rasters by metric (``"start"``, ``"peak"``, ``"end"``);
            missing metrics give ``None``.
        zones: The zones (``name``; any CRS, reprojected to each raster's).
        period_start: First day of the run's period.
        max_px: Longest side of a zone's window as read (decimated beyond that).

    Returns:
        ``{zone name: {metric: date or None}}``, ``None`` where the zone has no valid pixel.
    """
    names = [str(n) for n in zones["name"]]
    result: dict[str, dict[str, date | None]] = {n: dict.fromkeys(SEASON_METRICS) for n in names}
    for metric, path in doy_rasters.items():
        with rasterio.open(path) as src:
            geoms = zones.geometry if zones.crs is None else zones.geometry.to_crs(src.crs)
            for name, geom in zip(names, geoms, strict=True):
                values = _zone_values(src, geom, max_px=max_px)
                result[name][metric] = median_date(values, period_start)
    return result


def median_date(doy: NDArray[np.floating], period_start: date) -> date | None:
    """The median of days of year taken as dates of the year from ``period_start``."""
    doy = doy[np.isfinite(doy)]
    if doy.size == 0:
        return None
    offsets = doy_offsets(doy, period_start)
    return period_start + timedelta(days=math.floor(float(np.median(offsets)) + 0.5))


def doy_offsets(doy: NDArray[np.floating], period_start: date) -> F64:
    """Days from ``period_start`` to the dates that days of year name within its year."""
    this_year = (date(period_start.year, 1, 1) - period_start).days
    next_year = (date(period_start.year + 1, 1, 1) - period_start).days
    days = doy.astype(np.float64) - 1.0
    return np.where(this_year + days >= 0, this_year + days, next_year + days)


def zone_chart(
    series: pd.DataFrame,
    *,
    title: str,
    out: Path,
    season: Mapping[str, date | None] | None = None,
    clear_threshold: float = 0.5,
) -> Path:
    """Chart a zone's index over time: mean, ±1 std band, clear and cloudy observations.

    Args:
        series: The ``zonal_stats`` rows of one zone and one index (``time``, ``index``,
            ``mean``, ``std``, ``clear_fraction``).
        title: Chart title.
        out: PNG to write.
        season: Dates of the season's ``start``, ``peak`` and ``end`` (from
            :func:`season_dates`), drawn as labelled vertical lines.
        clear_threshold: Clear fraction from which an observation counts as clear (filled
            marker); below it the marker is hollow.

    Returns:
        ``out``.
    """
    frame = series.assign(time=pd.to_datetime(series["time"])).sort_values("time")
    times = frame["time"].to_numpy()
    mean = frame["mean"].to_numpy(dtype=np.float64)
    std = frame["std"].to_numpy(dtype=np.float64) if "std" in frame else np.full_like(mean, np.nan)
    clear = frame["clear_fraction"].to_numpy(dtype=np.float64) >= clear_threshold
    index = str(frame["index"].iloc[0]) if "index" in frame and len(frame) else ""
    label = index.upper() or "index"

    fig = Figure(figsize=(7.5, 3.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ok = np.isfinite(mean)
    if ok.any():
        ax.fill_between(
            times[ok],
            (mean - std)[ok],
            (mean + std)[ok],
            color=LINE_COLOUR,
            alpha=0.18,
            linewidth=0,
            label="± 1 std of the zone's pixels",
        )
        ax.plot(times[ok], mean[ok], color=LINE_COLOUR, linewidth=1.2, label=f"{label} zone mean")
        ax.scatter(
            times[ok & clear],
            mean[ok & clear],
            s=16,
            color=LINE_COLOUR,
            zorder=3,
            label=f"clear (≥ {100 * clear_threshold:g} % of the zone unmasked)",
        )
        ax.scatter(
            times[ok & ~clear],
            mean[ok & ~clear],
            s=16,
            facecolors="none",
            edgecolors=LINE_COLOUR,
            zorder=3,
            label="cloudy or partial",
        )
    else:
        ax.text(
            0.5, 0.5, "no clear observation", transform=ax.transAxes, ha="center", color="#777777"
        )
    if index in INDEX_RANGES:
        lo, hi, _ = INDEX_RANGES[index]
        ax.set_ylim(lo, hi)
    for key in SEASON_METRICS:
        when = (season or {}).get(key)
        if when is None:
            continue
        x = _date_x(when)
        ax.axvline(x, color="#444444", linestyle="--", linewidth=0.9)
        ax.text(
            x,
            0.98,
            f" {key}\n {when:%-d %b}",
            transform=ax.get_xaxis_transform(),
            va="top",
            ha="left",
            fontsize=7,
            color="#444444",
        )
    # matplotlib.dates has no type hints.
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.set_title(title, fontsize=10)
    if ok.any():
        ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    return _save(fig, out)


def _read_decimated(
    path: Path, *, max_px: int, nearest: bool
) -> tuple[np.ma.MaskedArray, tuple[float, float, float, float], bool]:
    """Band 1 at most ``max_px`` on its longest side, nodata and NaN masked.

    Returns:
        The pixels, the raster's bounds (left, bottom, right, top) and whether its CRS is
        in metres (a scale bar makes sense).
    """
    with rasterio.open(path) as src:
        factor = max(src.width, src.height) / max(max_px, 1)
        shape = (src.height, src.width)
        if factor > 1:
            shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
        # GDAL serves the read from the overview nearest in size; they hold the layer's own
        # resampling already.
        resampling = Resampling.nearest if nearest else Resampling.average
        data = src.read(1, out_shape=shape, masked=True, resampling=resampling)
        bounds = (src.bounds.left, src.bounds.bottom, src.bounds.right, src.bounds.top)
        metres = bool(src.crs and src.crs.is_projected and src.crs.linear_units == "metre")
    if data.dtype.kind == "f":
        data = np.ma.masked_invalid(data)
    return data, bounds, metres


def _zone_values(src: rasterio.DatasetReader, geom: BaseGeometry, *, max_px: int) -> F64:
    """Valid pixel values of ``src`` whose centres fall in ``geom`` (decimated if large)."""
    if geom is None or geom.is_empty:
        return np.empty(0)
    minx, miny, maxx, maxy = geom.bounds
    inverse = ~src.transform
    corners = [inverse * (x, y) for x in (minx, maxx) for y in (miny, maxy)]
    col0 = max(0, math.floor(min(c for c, _ in corners)))
    col1 = min(src.width, math.ceil(max(c for c, _ in corners)))
    row0 = max(0, math.floor(min(r for _, r in corners)))
    row1 = min(src.height, math.ceil(max(r for _, r in corners)))
    if col1 <= col0 or row1 <= row0:
        return np.empty(0)
    window = Window(col0, row0, col1 - col0, row1 - row0)
    step = max(1, math.ceil(max(window.width, window.height) / max_px))
    shape = (math.ceil(window.height / step), math.ceil(window.width / step))
    data = src.read(1, window=window, out_shape=shape, masked=True, resampling=Resampling.nearest)
    transform = src.window_transform(window) * Affine.scale(
        window.width / shape[1], window.height / shape[0]
    )
    inside = rasterio.features.geometry_mask([geom], shape, transform, invert=True)
    values = np.ma.getdata(data).astype(np.float64)
    keep = inside & ~np.ma.getmaskarray(data) & np.isfinite(values)
    return np.asarray(values[keep], dtype=np.float64)


def _date_x(when: date) -> float:
    """A date as matplotlib's date number (days since its epoch)."""
    return float(mdates.date2num(when))  # type: ignore[no-untyped-call]


def _draw_outline(ax: Axes, geom: BaseGeometry) -> None:
    style = VECTOR_SYMBOLOGY["aoi"]
    colour, width = (style.color, style.width_mm) if isinstance(style, Outline) else ("k", 0.8)
    lines: Iterable[BaseGeometry] = get_parts(
        geom.boundary if geom.geom_type.endswith("Polygon") else geom
    )
    for line in lines:
        for part in get_parts(line):
            if part.geom_type in ("LineString", "LinearRing"):
                x, y = part.xy
                ax.plot(x, y, color=colour, linewidth=width * _MM_TO_PT, zorder=4)


def _scale_bar(ax: Axes, bounds: tuple[float, float, float, float]) -> None:
    """A black bar of a round length at the lower left, on a white box (units: metres)."""
    left, bottom, right, top = bounds
    width, height = right - left, top - bottom
    length = scale_length(width)
    x0, y0 = left + 0.04 * width, bottom + 0.05 * height
    bar_h = 0.012 * height
    ax.add_patch(
        Rectangle(
            (x0 - 0.015 * width, y0 - 0.025 * height),
            length + 0.03 * width,
            0.09 * height,
            facecolor="white",
            edgecolor="none",
            alpha=1.0,
            zorder=5,
        )
    )
    ax.add_patch(Rectangle((x0, y0), length, bar_h, facecolor="black", edgecolor="black", zorder=6))
    ax.text(
        x0 + length / 2,
        y0 + bar_h * 1.6,
        scale_label(length),
        ha="center",
        va="bottom",
        fontsize=8,
        zorder=6,
    )


def _north_arrow(ax: Axes) -> None:
    # UTM grid north is within a few degrees of true north: an upright arrow is honest.
    ax.annotate(
        "N",
        xy=(0.95, 0.96),
        xytext=(0.95, 0.84),
        xycoords="axes fraction",
        ha="center",
        va="center",
        fontsize=9,
        fontweight="bold",
        zorder=6,
        arrowprops={"arrowstyle": "-|>", "color": "black", "linewidth": 1.2},
        bbox={
            "boxstyle": "circle,pad=0.15",
            "facecolor": "white",
            "edgecolor": "none",
            "alpha": 1.0,
        },
    )


def _save(
    fig: Figure, out: Path, colours: Sequence[tuple[float, float, float, float]] | None = None
) -> Path:
    """Write ``fig`` as an 8-bit palette PNG, a third of the size of an RGB one.

    Args:
        fig: The figure.
        out: PNG to write.
        colours: The symbology's colours (RGBA 0–1), which become the palette with greys
            for text and lines; without them the palette adapts to the picture (a chart).
    """
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    buffer.seek(0)
    with Image.open(buffer) as rgba:
        rgb = rgba.convert("RGB")
    # No dithering: a colour of the symbology stays that exact colour, as in the legend.
    if colours is None:
        small = rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    else:
        small = _to_palette(rgb, colours)
    with writing(out):
        small.save(out, format="PNG", optimize=True)
    return out


def _to_palette(
    rgb: Image.Image, colours: Sequence[tuple[float, float, float, float]]
) -> Image.Image:
    """``rgb`` with each pixel the nearest of ``colours`` (at most 192) and greys, exactly.

    PIL's own palette lookup rounds colours into buckets, which turns white into a light grey
    and moves a class colour off its legend; here each distinct colour finds its nearest
    entry in full 8-bit precision.
    """
    ramp = np.array([[round(255 * v) for v in c[:3]] for c in colours[:192]], dtype=np.int32)
    greys = np.linspace(0, 255, 256 - len(ramp)).round().astype(np.int32)
    palette = np.concatenate([ramp.reshape(-1, 3), np.repeat(greys[:, None], 3, axis=1)])
    pixels = np.asarray(rgb, dtype=np.int32)
    packed = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    unique, inverse = np.unique(packed, return_inverse=True)
    colour = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
    nearest = np.empty(len(unique), dtype=np.uint8)
    for i in range(0, len(unique), 8192):
        block = colour[i : i + 8192, None, :] - palette[None, :, :]
        nearest[i : i + 8192] = np.argmin((block * block).sum(axis=2), axis=1)
    image = Image.fromarray(nearest[inverse].reshape(packed.shape))  # "L", then "P"
    image.putpalette(palette.astype(np.uint8).tobytes())
    return image
