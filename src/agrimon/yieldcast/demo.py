"""The demo world's maize-yield history: per-field NDVI series and yields, as YieldData.

The demo source (:mod:`agrimon.sources.demo`) knows the yield of every one of its crop
fields in every season (:func:`agrimon.sources.demo.field_truth`); :func:`demo_history`
pairs those yields with the fields' NDVI series rendered from the demo scenes by the
monitor's own pipeline, so that a yield model can be trained and backtested on the demo
world and then applied to the zonal table of a demo monitor run:

* the scenes are the demo source's (:class:`agrimon.sources.demo.DemoSource` on tiles of
  :func:`agrimon.grid.plan_tiles` over the fields), every acquisition of each season's crop
  calendar window;
* clouds and shadows are masked with the monitor's SCL rule
  (:func:`agrimon.indices.masks.clear_mask` with ``DEFAULT_INVALID_SCL``) and NDVI computed
  by :mod:`agrimon.indices.spectral`;
* each field is a zone (``name`` = ``field_id``) of :mod:`agrimon.indices.zonal`, so every
  value is the mean NDVI of the field's clear pixels on one solar day (``date`` at 00:00),
  and zone-days with less than half the field clear are left out, exactly as
  :func:`agrimon.yieldcast.data.read_agrimon` reads a monitor run's zonal table.

The one difference from a monitor run is the pixel size: ``resolution_m`` (30 m by
default, nine times fewer pixels than the monitor's 10 m) samples each field on a coarser
grid, so a field's mean NDVI differs from a 10 m run's by the sampling of its pixels, not by
its season: by 0.0004 on average and at most 0.002 on the demo's 7–27 ha fields, and about
one field-day in 500 passes the half-clear rule at one pixel size and not at the other.

Every field follows one regional calendar (:data:`DEMO_SOS`, :data:`DEMO_EOS`), which holds
the whole demo crop cycle: sowing 13 November – 23 December, senescence by late May.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from functools import lru_cache

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from dask.base import compute
from shapely.geometry.base import BaseGeometry

from agrimon.errors import YieldDataError
from agrimon.grid import plan_tiles
from agrimon.indices import masks, spectral, zonal
from agrimon.sources.base import SCL
from agrimon.sources.demo import DemoSource, field_truth
from agrimon.yieldcast.data import (
    YieldData,
    assemble,
    calendar_table,
    season_bounds,
    series_table,
    yields_table,
    zonal_series,
)

#: Crop of the demo fields.
DEMO_CROP = "maize"
#: Country code of the demo world (it imitates Namibia's maize triangle).
DEMO_COUNTRY = "NA"
#: Start of the demo's regional maize season, day of year: 1 November (of a common year).
DEMO_SOS = float(date(2023, 11, 1).timetuple().tm_yday)
#: End of the demo's regional maize season, day of year: 31 May (of a common year).
DEMO_EOS = float(date(2023, 5, 31).timetuple().tm_yday)
#: The one indicator of the history, named as the monitor's zonal table names it.
INDICATOR = "ndvi"
#: Pixel size (m) of the rendered series: coarser than the monitor's 10 m, to stay fast.
DEFAULT_RESOLUTION_M = 30.0
#: Tile side (pixels) the fields' area is cut into: one computation holds one tile's season
#: (about 150 MB for a whole tile of 512 × 512 pixels), whatever the area.
DEFAULT_TILE_PX = 512
#: Fewest clear pixels (share of the field) of a field-day to use it, as read_agrimon's.
MIN_CLEAR_FRACTION = 0.5
#: Columns of :func:`demo_fields`.
FIELD_COLUMNS = ["field_id", "area_ha", "geometry"]


def demo_fields(geometry: BaseGeometry) -> gpd.GeoDataFrame:
    """The demo crop fields that intersect a lon/lat geometry.

    Args:
        geometry: Area in EPSG:4326.

    Returns:
        ``field_id``, ``area_ha`` and the field's polygon (EPSG:4326), one row per field
        (see :func:`agrimon.sources.demo.field_truth`).
    """
    return _demo_fields(shapely.to_wkb(geometry)).copy()


@lru_cache(maxsize=4)
def _demo_fields(wkb: bytes) -> gpd.GeoDataFrame:
    # A run asks twice (its tiles' work and its assembly); drawing the fields takes seconds.
    fields, _ = field_truth(shapely.from_wkb(wkb), ())
    return fields.loc[:, FIELD_COLUMNS]


def demo_calendar(units: Iterable[str]) -> pd.DataFrame:
    """The demo crop calendar of some units: :data:`DEMO_SOS` to :data:`DEMO_EOS` for each.

    ``eos < sos``: the season of harvest year ``Y`` starts in ``Y - 1`` (see
    :func:`agrimon.yieldcast.data.season_bounds`).

    Args:
        units: Unit ids (the fields' ``field_id``).

    Returns:
        The ``calendar`` table (``unit, sos, eos``).
    """
    names = sorted(set(units))
    frame = pd.DataFrame({"unit": names, "sos": DEMO_SOS, "eos": DEMO_EOS})
    return calendar_table(frame, "the demo crop calendar")


def demo_zonal_table(
    fields: gpd.GeoDataFrame,
    season: int,
    *,
    resolution_m: float = DEFAULT_RESOLUTION_M,
    tile_px: int = DEFAULT_TILE_PX,
) -> pd.DataFrame:
    """The fields' NDVI zonal table over one season's calendar window, as a monitor writes it.

    The demo scenes of every acquisition from :data:`DEMO_SOS` of ``season - 1`` to
    :data:`DEMO_EOS` of ``season``, rendered tile by tile (one tile's season in memory at
    a time) over the fields, masked, turned into NDVI and averaged per field and solar day.

    Args:
        fields: From :func:`demo_fields` (at least one field).
        season: Harvest year.
        resolution_m: Pixel size in metres.
        tile_px: Tile side in pixels.

    Returns:
        The tidy table of :data:`agrimon.indices.zonal.COLUMNS`: zones numbered 1..n in the
        fields' order, named by ``field_id``; index ``ndvi``.
    """
    zones = gpd.GeoDataFrame(
        {"zone_id": np.arange(1, len(fields) + 1), "name": fields["field_id"].to_numpy()},
        geometry=fields.geometry.to_numpy(),
        crs=fields.crs,
    )
    window = season_bounds(demo_calendar(fields["field_id"]), [season])
    first, last = window["start"].min().date(), window["end"].max().date()
    source = DemoSource()
    bands = (*spectral.required_bands([INDICATOR]), SCL)
    partials = []
    for tile in plan_tiles(zones.union_all(), tile_px=tile_px, res=resolution_m):
        stack = source.load(tile, source.find_scenes(tile, first, last), bands=bands)
        clear = masks.clear_mask(stack, invalid=masks.DEFAULT_INVALID_SCL)
        series = spectral.compute_indices(stack, [INDICATOR], clear=clear)
        # One pass over the scenes for both, as the monitor computes them.
        series, clear = compute(series, clear)  # type: ignore[no-untyped-call]
        partials.append(
            zonal.zonal_partial(
                series, zones, clear=clear, geobox=tile.geobox, footprint=tile.footprint
            )
        )
    return zonal.zonal_table(zonal.combine_partials(partials))


def demo_history(
    geometry: BaseGeometry,
    seasons: Sequence[int],
    *,
    resolution_m: float = DEFAULT_RESOLUTION_M,
    tile_px: int = DEFAULT_TILE_PX,
) -> YieldData:
    """Yields and NDVI series of the demo fields of an area over some seasons.

    Season by season, the NDVI series of every field that intersects ``geometry`` is made
    by :func:`demo_zonal_table` (the monitor's pipeline at ``resolution_m``) and read as
    :func:`agrimon.yieldcast.data.read_agrimon` reads a monitor run's table; the yields
    are the demo truth (``yield_t_ha`` of :func:`agrimon.sources.demo.field_truth`) and
    the calendar is :func:`demo_calendar`. On 2 cores the default AOI (212 fields) takes
    5–6 s a season at 30 m (40–50 s for 2016–2023), and about 0.45 GB of memory.

    Args:
        geometry: Area in EPSG:4326, south of the equator (the demo calendar is the
            southern season's).
        seasons: Harvest years, at least two (every unit needs a yield trend).
        resolution_m: Pixel size of the rendered series in metres.
        tile_px: Tile side in pixels (bounds the memory).

    Returns:
        The data: units are the ``field_id`` values, crop ``maize``, country ``NA``,
        indicator ``ndvi``, no static features.

    Raises:
        YieldDataError: The area is not south of the equator, holds no demo field, or
            fewer than two seasons are asked for.
    """
    years = sorted({int(s) for s in seasons})
    if geometry.bounds[3] >= 0.0:
        raise YieldDataError(
            "the demo yield history follows the southern maize season (November to May): "
            "give an area south of the equator"
        )
    if len(years) < 2:
        raise YieldDataError(
            f"the demo yield history needs at least two seasons (a yield trend needs two), "
            f"got {years or 'none'}: pass e.g. seasons=range(2016, 2024)"
        )
    fields, truth = field_truth(geometry, years)
    if fields.empty:
        raise YieldDataError(
            "the area holds no demo crop field: give an area in the demo's farmland, such as "
            "the shipped AOI (agrimon.aoi.DEFAULT_AOI)"
        )
    fields = fields.loc[:, FIELD_COLUMNS]
    source = f"demo world: {len(fields)} fields, seasons {years[0]}–{years[-1]}, NDVI at "
    source += f"{resolution_m:g} m"
    long = [
        zonal_series(
            demo_zonal_table(fields, year, resolution_m=resolution_m, tile_px=tile_px),
            min_clear_fraction=MIN_CLEAR_FRACTION,
        )
        for year in years
    ]
    yields = yields_table(
        truth.rename(columns={"field_id": "unit", "season": "year", "yield_t_ha": "yield"}),
        source,
    )
    return assemble(
        yields,
        demo_calendar(fields["field_id"]),
        series=series_table(long),
        crop=DEMO_CROP,
        country=DEMO_COUNTRY,
        source=source,
    )
