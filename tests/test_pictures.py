"""Quicklooks, season dates and zone charts, on tiny real GeoTIFFs written to tmp_path."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from numpy.typing import NDArray
from PIL import Image
from shapely.geometry import box

from agrimon.products import pictures
from agrimon.products.symbology import (
    GREENNESS,
    SEASON,
    Classes,
    Ramp,
    season_ramp,
)

EPSG = 32734
LEFT, TOP = 500_000.0, 7_800_000.0
NDVI = Ramp(-0.2, 0.9, GREENNESS, "NDVI median")
CLASSES = Classes(((1, "open", "#1a9850"), (2, "encroached", "#a6611a")), "Encroachment")
RGB = NDArray[np.int32]


def write_tif(
    path: Path, values: NDArray[Any], *, nodata: float | None = None, overviews: bool = False
) -> Path:
    """A single-band GeoTIFF of ``values`` on a 10 m UTM grid (34S) at LEFT, TOP."""
    height, width = values.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": values.dtype.name,
        "crs": f"EPSG:{EPSG}",
        "transform": Affine(10.0, 0.0, LEFT, 0.0, -10.0, TOP),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
        if overviews:
            dst.build_overviews([2, 4], rasterio.enums.Resampling.average)
    return path


def rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def read_png(path: Path) -> RGB:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.int32)


def near(pixels: RGB, colour: str, tol: int = 6) -> NDArray[np.bool_]:
    close: NDArray[np.bool_] = np.all(np.abs(pixels - np.array(rgb(colour))) <= tol, axis=-1)
    return close


def block_of(pixels: RGB, colour: str) -> tuple[int, int, int, int]:
    """Bounding columns and rows of the solid block of ``colour`` (the map's uniform part).

    Columns where the colour fills at least half of the tallest such column: the legend or
    colour bar holds the same colour only in a short run.
    """
    hits = near(pixels, colour, tol=2)
    per_col = hits.sum(axis=0)
    cols = np.flatnonzero(per_col >= 0.5 * per_col.max())
    mid = int(np.median(cols))
    rows = np.flatnonzero(hits[:, mid])
    return int(cols.min()), int(cols.max()), int(rows.min()), int(rows.max())


def ramp_colour(ramp: Ramp, value: float) -> tuple[int, int, int]:
    """Linear interpolation between the ramp's stops, by hand."""
    stops = ramp.color_stops()
    for (x0, c0), (x1, c1) in pairwise(stops):
        if x0 <= value <= x1:
            t = (value - x0) / (x1 - x0)
            a, b = rgb(c0), rgb(c1)
            r, g, bl = (round(p + (q - p) * t) for p, q in zip(a, b, strict=True))
            return r, g, bl
    raise AssertionError("value outside the ramp")


@pytest.fixture
def ndvi_tif(tmp_path: Path) -> Path:
    """100 × 100: left half 0.9 (the ramp's top), right top −0.5 (below it), bottom nodata."""
    values = np.full((100, 100), 0.9, dtype=np.float32)
    values[:50, 50:] = -0.5
    values[50:, 50:] = np.nan
    return write_tif(tmp_path / "ndvi_median.tif", values, nodata=float("nan"))


def test_ramp_quicklook_colours_nodata_and_colour_bar(ndvi_tif: Path, tmp_path: Path) -> None:
    outline = box(LEFT + 20, TOP - 980, LEFT + 980, TOP - 20)
    out = pictures.quicklook(
        ndvi_tif, NDVI, title="demo · 2024 · NDVI median", out=tmp_path / "q.png", outline=outline
    )
    assert out == tmp_path / "q.png"
    px = read_png(out)
    # The left half (0.9) is the ramp's last colour, in one solid block.
    x0, x1, y0, y1 = block_of(px, GREENNESS[-1])
    half = x1 - x0 + 1
    assert y1 - y0 > 200 and half > 150
    # Right of it: top below the range draws the first colour, bottom is nodata (white).
    xr = x1 + half // 2
    top, bottom = y0 + (y1 - y0) // 4, y0 + 3 * (y1 - y0) // 4
    assert near(px[top - 5 : top + 5, xr - 5 : xr + 5], GREENNESS[0], tol=3).all()
    assert (px[bottom - 5 : bottom + 5, xr - 5 : xr + 5] == 255).all()
    # The colour bar beside the map holds the whole ramp, first colour to last.
    bar = px[:, x1 + half + 10 :]
    assert near(bar, GREENNESS[0], tol=4).sum() > 20
    assert near(bar, GREENNESS[-1], tol=4).sum() > 20
    middle = ramp_colour(NDVI, 0.35)
    assert near(bar, "#{:02x}{:02x}{:02x}".format(*middle), tol=8).sum() > 5
    # The outline (the AOI's black line) is drawn on the map.
    assert near(px[y0:y1, x0:x1], "#000000", tol=30).sum() > 200
    # About 150 dpi: a 8 × 6.4 inch figure.
    assert 1000 < px.shape[1] < 1400


def test_class_quicklook_colours_and_legend(tmp_path: Path) -> None:
    values = np.full((60, 80), 1, dtype=np.uint8)
    values[:, 40:] = 2
    values[30:, 40:] = 0  # nodata
    values[:10, :10] = 7  # a value without a class: blank
    path = write_tif(tmp_path / "invasive_class.tif", values, nodata=0)
    out = pictures.quicklook(path, CLASSES, title="classes", out=tmp_path / "c.png")
    px = read_png(out)
    x0, x1, y0, y1 = block_of(px, "#1a9850")
    half = x1 - x0 + 1
    right = x1 + half // 2
    top, bottom = y0 + (y1 - y0) // 4, y0 + 3 * (y1 - y0) // 4
    # Exact class colours, as in the legend and in QGIS.
    assert (px[top - 3 : top + 3, right - 3 : right + 3] == rgb("#a6611a")).all()
    assert (px[bottom - 3 : bottom + 3, right - 3 : right + 3] == 255).all()
    assert (px[bottom, x0 + half // 2] == rgb("#1a9850")).all()
    # The unknown value 7 in the top-left corner is blank.
    corner_y, corner_x = y0 + (y1 - y0) // 12, x0 + half // 10
    assert (px[corner_y, corner_x] == 255).all()
    # The legend right of the map: a patch of each class colour.
    legend = px[:, x1 + half + 5 :]
    assert (legend == rgb("#1a9850")).all(axis=-1).sum() > 50
    assert (legend == rgb("#a6611a")).all(axis=-1).sum() > 50


def test_season_quicklook_draws_dates_of_the_season(tmp_path: Path) -> None:
    ramp = season_ramp((7, 1), "NDVI season start (date)")
    values = np.full((40, 40), 250.0, dtype=np.float32)  # 7 Sep
    values[:, 20:] = 20.0  # 20 Jan
    path = write_tif(tmp_path / "ndvi_start_doy.tif", values, nodata=float("nan"))
    out = pictures.quicklook(path, ramp, title="season start", out=tmp_path / "s.png")
    px = read_png(out)
    september = "#{:02x}{:02x}{:02x}".format(*ramp_colour(ramp, 250.0))
    january = "#{:02x}{:02x}{:02x}".format(*ramp_colour(ramp, 20.0))
    _, x1, y0, y1 = block_of(px, september)
    mid_y = (y0 + y1) // 2
    assert near(px[mid_y, x1 + 20 : x1 + 60], january, tol=8).all()
    assert ramp.labels and SEASON[0] in ramp.colors


def test_quicklook_png_of_a_large_raster_is_small(tmp_path: Path) -> None:
    # Smooth fields with the pixel-to-pixel texture of a median composite (σ 0.01).
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:1000, 0:1000] / 1000.0
    values = 0.35 + 0.3 * np.sin(6 * x) * np.cos(4 * y) + rng.normal(0, 0.01, (1000, 1000))
    path = write_tif(tmp_path / "big.tif", values.astype(np.float32), overviews=True)
    out = pictures.quicklook(path, NDVI, title="big", out=tmp_path / "big.png")
    assert out.stat().st_size < 300_000


def test_rasters_are_read_decimated(tmp_path: Path) -> None:
    values = np.ones((300, 600), dtype=np.uint8)
    path = write_tif(tmp_path / "wide.tif", values, overviews=True)
    data, bounds, metres = pictures._read_decimated(path, max_px=150, nearest=True)
    assert data.shape == (75, 150)
    assert bounds == (LEFT, TOP - 3000, LEFT + 6000, TOP)
    assert metres


@pytest.mark.parametrize(
    ("width_m", "length", "label"),
    [(1000, 200, "200 m"), (10_110, 2000, "2 km"), (30_000, 5000, "5 km"), (7000, 1000, "1 km")],
)
def test_scale_bar_length_is_round(width_m: float, length: float, label: str) -> None:
    assert pictures.scale_length(width_m) == length
    assert pictures.scale_label(length) == label


def test_no_pyplot_import() -> None:
    code = (
        "import sys, agrimon.products.pictures, agrimon.products.report; "
        "sys.exit('matplotlib.pyplot' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def _doy_zones() -> gpd.GeoDataFrame:
    # Zones given in lon/lat: season_dates reprojects them to the rasters' UTM grid.
    west = box(LEFT, TOP - 100, LEFT + 50, TOP)
    east = box(LEFT + 50, TOP - 100, LEFT + 100, TOP)
    away = box(LEFT + 5000, TOP - 100, LEFT + 5100, TOP)
    utm = gpd.GeoDataFrame(
        {"name": ["west", "east", "away"]}, geometry=[west, east, away], crs=EPSG
    )
    return utm.to_crs(4326)


def test_season_dates_medians_across_the_new_year(tmp_path: Path) -> None:
    start = np.full((10, 10), 300.0, dtype=np.float32)  # east: DOY 300
    west = np.array([350.0] * 20 + [10.0] * 10 + [20.0] * 20, dtype=np.float32)
    west[:2] = np.nan  # nodata is left out
    start[:, :5] = west.reshape(10, 5)
    peak = np.full((10, 10), np.nan, dtype=np.float32)
    peak[:, :5] = 45.0
    end = np.full((10, 10), 30.0, dtype=np.float32)
    rasters = {
        "start": write_tif(tmp_path / "start.tif", start, nodata=float("nan")),
        "peak": write_tif(tmp_path / "peak.tif", peak, nodata=float("nan")),
        "end": write_tif(tmp_path / "end.tif", end, nodata=float("nan")),
    }
    dates = pictures.season_dates(rasters, _doy_zones(), period_start=date(2023, 7, 1))
    # West, by hand: 18 × DOY 350 (16 Dec 2023), 10 × DOY 10 (10 Jan 2024), 20 × DOY 20
    # (20 Jan 2024); the 24th and 25th of the 48 dates are both 10 Jan. The median of the
    # raw days (20) would be wrong.
    assert dates["west"] == {
        "start": date(2024, 1, 10),
        "peak": date(2024, 2, 14),
        "end": date(2024, 1, 30),
    }
    assert dates["east"] == {"start": date(2023, 10, 27), "peak": None, "end": date(2024, 1, 30)}
    assert dates["away"] == dict.fromkeys(("start", "peak", "end"))
    # Decimated reads of a uniform zone give the same dates.
    small = pictures.season_dates(rasters, _doy_zones(), period_start=date(2023, 7, 1), max_px=3)
    assert small["east"] == dates["east"]


def test_median_date_rounds_half_days_up_and_wraps() -> None:
    period = date(2023, 7, 1)
    assert pictures.median_date(np.array([300.0, 301.0]), period) == date(2023, 10, 28)
    assert pictures.median_date(np.array([30.0]), period) == date(2024, 1, 30)
    assert pictures.median_date(np.array([182.0]), period) == date(2023, 7, 1)
    assert pictures.median_date(np.array([181.0]), period) == date(2024, 6, 29)  # leap year
    assert pictures.median_date(np.array([np.nan]), period) is None
    # A northern season (period from 1 January): days are dates of that year.
    assert pictures.median_date(np.array([1.0, 3.0, 5.0]), date(2024, 1, 1)) == date(2024, 1, 3)


def _series(n: int = 24) -> pd.DataFrame:
    times = [date(2023, 7, 4) + timedelta(days=15 * k) for k in range(n)]
    mean = 0.3 + 0.25 * np.sin(np.linspace(0, np.pi, n))
    clear = np.where(np.arange(n) % 5 == 2, 0.2, 1.0)
    mean[7] = np.nan  # a date without a clear pixel
    return pd.DataFrame(
        {
            "zone_id": 1,
            "name": "west",
            "time": pd.to_datetime(times),
            "index": "ndvi",
            "mean": mean,
            "std": 0.05,
            "clear_fraction": clear,
        }
    )


def test_zone_chart_draws_the_series_and_the_season(tmp_path: Path) -> None:
    season = {"start": date(2023, 11, 1), "peak": date(2024, 1, 20), "end": None}
    out = pictures.zone_chart(
        _series(), title="west · NDVI", out=tmp_path / "chart.png", season=season
    )
    px = read_png(out)
    assert (px < 250).any(axis=-1).mean() > 0.05  # not blank
    assert near(px, pictures.LINE_COLOUR, tol=10).sum() > 300  # line and filled markers
    # Two dashed season lines: columns with many dark-grey pixels.
    grey = near(px, "#444444", tol=12).sum(axis=0)
    columns = np.flatnonzero(grey > 0.3 * px.shape[0] * 0.5)
    assert len(columns) >= 2 and columns.max() - columns.min() > 50


def test_zone_chart_without_observations(tmp_path: Path) -> None:
    empty = _series().assign(mean=np.nan)
    out = pictures.zone_chart(empty, title="empty", out=tmp_path / "empty.png")
    assert read_png(out).shape[0] > 300
