"""The embedded demo source: synthetic Sentinel-2 L2A scene stacks, no network, no account.

Pixels come from :mod:`agrimon.sources.synth`, rendered lazily one dask chunk at a time:
building a stack for a 100 × 100 km AOI costs a graph, not pixels. The source also hands out
its ground truth (cover classes, the woody-encroachment mask, crop fields with yields and
crop calendars) for training and scoring the later models.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from functools import partial

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from pyproj import Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from agrimon.errors import SourceError
from agrimon.grid import Tile
from agrimon.sources import synth
from agrimon.sources.base import ALL_BANDS, BANDS, DEFAULT_CHUNK_PX, SCL, Scene
from agrimon.sources.lazy import lazy_stack

NAME = "demo"


class DemoSource:
    """Deterministic synthetic Sentinel-2 L2A acquisitions every 5 days, anywhere."""

    name = NAME

    def check(self) -> None:
        """Nothing to check: the demo source needs no settings, files or network."""

    def find_scenes(self, tile: Tile, start: date, end: date) -> tuple[Scene, ...]:
        """Demo acquisitions of ``tile`` between ``start`` and ``end`` (inclusive)."""
        lon = -183.0 + 6.0 * tile.zone  # central meridian: one overpass time per zone
        scenes = []
        for day in synth.acquisition_dates(start, end):
            cloud = 100.0 * synth.cloud_cover_fraction(day, southern=tile.hemisphere == "S")
            scenes.append(
                Scene(
                    id=f"DEMO_S2_L2A_{day:%Y%m%d}_{tile.id}",
                    time=synth.acquisition_time(day, lon),
                    cloud_cover=round(cloud, 1),
                )
            )
        return tuple(scenes)

    def load(
        self,
        tile: Tile,
        scenes: Sequence[Scene],
        *,
        bands: Sequence[str] = ALL_BANDS,
        chunk_px: int = DEFAULT_CHUNK_PX,
    ) -> xr.Dataset:
        """Lazy scene stack of ``tile.geobox`` (see :meth:`agrimon.sources.base.Source.load`)."""
        unknown = [b for b in bands if b not in ALL_BANDS]
        if unknown:
            raise SourceError(
                f"demo source has no band(s) {', '.join(unknown)}: "
                f"choose from {', '.join(ALL_BANDS)}"
            )
        return render_stack(
            tile.geobox,
            [s.time for s in scenes],
            bands=bands,
            chunk_px=chunk_px,
            southern=tile.hemisphere == "S",
        )

    def describe(self) -> dict[str, str]:
        """Endpoint and settings of the source."""
        return {"endpoint": "embedded synthetic scenes (no network)", "credentials": "none needed"}


def render_stack(
    geobox: GeoBox,
    times: Sequence[datetime],
    *,
    bands: Sequence[str] = ALL_BANDS,
    chunk_px: int = DEFAULT_CHUNK_PX,
    southern: bool = True,
) -> xr.Dataset:
    """Lazy synthetic scene stack on any pixel grid.

    One task per spatial chunk computes the static landscape; one task per chunk and date
    renders every band and the SCL from it; each variable picks its band from that task, so
    asking for three bands costs one render, not three.
    """
    days = [when.date() for when in times]
    return lazy_stack(
        geobox,
        times,
        bands,
        fetch=partial(_render_block, days=days, southern=southern, bands=tuple(bands)),
        prepare=_block_landscape,
        name=NAME,
        chunk_px=chunk_px,
        token=southern,
        attrs={"source": NAME, "processing_level": "L2A (synthetic)"},
    )


def lonlat_grid(geobox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude of every pixel centre of a grid (2-D arrays)."""
    ny, nx = geobox.shape
    a = geobox.affine
    xs = a.c + a.a * (np.arange(nx) + 0.5)
    ys = a.f + a.e * (np.arange(ny) + 0.5)
    xx, yy = np.meshgrid(xs, ys)
    tr = Transformer.from_crs(str(geobox.crs), "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(xx, yy)
    return np.asarray(lon), np.asarray(lat)


def _block_landscape(geobox: GeoBox) -> synth.Landscape:
    return synth.landscape(*lonlat_grid(geobox))


def _render_block(
    t: int,
    block: GeoBox,
    land: synth.Landscape,
    *,
    days: Sequence[date],
    southern: bool,
    bands: Sequence[str],
) -> dict[str, np.ndarray]:
    refl, scl = synth.render(land, days[t], southern=southern)
    # Only the requested bands leave the task: what dask holds stays small.
    out = {band: refl[BANDS.index(band)].astype(np.float32) for band in bands if band in BANDS}
    if SCL in bands:
        out[SCL] = scl
    return out


# --- ground truth ---------------------------------------------------------------------


def cover_truth(geobox: GeoBox) -> xr.DataArray:
    """Cover class of every pixel (see ``synth.CLASS_NAMES``), computed now."""
    land = _block_landscape(geobox)
    coords = xr_coords(geobox, crs_coord_name="spatial_ref")
    return xr.DataArray(
        land.cover,
        dims=("y", "x"),
        coords=coords,
        name="cover",
        attrs={"classes": str(synth.CLASS_NAMES)},
    )


def woody_truth(geobox: GeoBox) -> xr.DataArray:
    """Woody-encroachment mask (1 = woody shrubs) of every pixel, computed now."""
    cover = cover_truth(geobox)
    return (cover == synth.SHRUB).astype(np.uint8).rename("woody")


def field_truth(
    geometry: BaseGeometry, seasons: Sequence[int], *, southern: bool = True
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Crop fields that intersect a lon/lat geometry, and their yields and calendars.

    Args:
        geometry: Area in EPSG:4326.
        seasons: Seasons (harvest years, see ``synth.season_of``) to report.
        southern: Whether the seasons follow the southern-hemisphere calendar.

    Returns:
        ``(fields, seasons_table)``: fields with ``field_id``, ``area_ha`` and their polygon
        (EPSG:4326); a tidy table with one row per field and season: ``yield_t_ha``,
        ``peak_greenness`` and the dates of sowing, start, peak and end of season.
    """
    minx, miny, maxx, maxy = geometry.bounds
    grid_i, grid_j = np.meshgrid(
        np.arange(
            np.floor(minx / synth.FIELD_DEG), np.floor(maxx / synth.FIELD_DEG) + 1, dtype=np.int64
        ),
        np.arange(
            np.floor(miny / synth.FIELD_DEG), np.floor(maxy / synth.FIELD_DEG) + 1, dtype=np.int64
        ),
    )
    ci, cj = grid_i.ravel(), grid_j.ravel()
    keep = synth.is_field_cell(ci, cj)
    ci, cj = ci[keep], cj[keep]
    m, d = synth.FIELD_MARGIN_DEG, synth.FIELD_DEG
    polys = [
        box(i * d + m, j * d + m, (i + 1) * d - m, (j + 1) * d - m)
        for i, j in zip(ci, cj, strict=True)
    ]
    fields = gpd.GeoDataFrame(
        {"field_id": [_field_id(int(i), int(j)) for i, j in zip(ci, cj, strict=True)]},
        geometry=polys,
        crs=4326,
    )
    hit = fields.intersects(geometry).to_numpy()
    fields, ci, cj = fields[hit].reset_index(drop=True), ci[hit], cj[hit]
    fields["area_ha"] = fields.to_crs(fields.estimate_utm_crs()).area / 1e4 if len(fields) else []

    rows = []
    for season in seasons:
        cycle = synth.crop_cycle(ci, cj, season)
        start = synth.season_start(season, southern=southern)
        yields = synth.field_yield(ci, cj, season)
        for k in range(len(ci)):
            rows.append(
                {
                    "field_id": fields.at[k, "field_id"],
                    "season": season,
                    "yield_t_ha": round(float(yields[k]), 3),
                    "peak_greenness": float(np.asarray(cycle.peak_greenness)[k]),
                    **{
                        name: start + timedelta(days=float(np.asarray(getattr(cycle, name))[k]))
                        for name in ("sowing", "start", "peak", "end")
                    },
                }
            )
    return fields, pd.DataFrame(rows)


def _field_id(ci: int, cj: int) -> str:
    return f"F{ci:+06d}{cj:+06d}"
