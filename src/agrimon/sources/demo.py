"""The embedded demo source: synthetic Sentinel-2 L2A scene stacks, no network, no account.

Pixels come from :mod:`agrimon.sources.synth`, rendered lazily one dask chunk at a time:
building a stack for a 100 × 100 km AOI costs a graph, not pixels. The source also hands out
its ground truth (dominant cover classes, the encroaching shrub cover fraction and the
encroachment mask, crop fields with yields and crop calendars) for training and scoring the
later models.
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
from shapely import segmentize
from shapely.geometry import Polygon
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
    """Longitude and latitude of every pixel centre of a grid (2-D arrays).

    Centres come from global pixel indices (see :func:`_centres`), so a pixel gets the same
    lon/lat, bit for bit, in every block of a grid it is rendered in.
    """
    ny, nx = geobox.shape
    a = geobox.affine
    xs = _centres(a.c, a.a, nx)
    ys = _centres(a.f, a.e, ny)
    xx, yy = np.meshgrid(xs, ys)
    tr = Transformer.from_crs(str(geobox.crs), "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(xx, yy)
    return np.asarray(lon), np.asarray(lat)


def _centres(origin: float, step: float, n: int) -> np.ndarray:
    """Pixel-centre coordinates along one axis of a grid, from global pixel indices.

    A block's origin is its grid's origin plus a whole number of pixels, rounded to a float:
    ``origin + step * (i + 0.5)`` would give a pixel other low bits in another block. Here
    the centre is ``step * (k + 0.5 + phase)`` for the pixel's index ``k`` on the lattice of
    the grid (``phase``: the lattice's sub-pixel offset from 0, rounded, usually exactly 0),
    which is the same in every block; on a 10 m grid with origins on whole metres it is
    exactly ``origin + step * (i + 0.5)``.
    """
    first = round(origin / step)
    phase = round(origin / step - first, 6)
    return np.asarray(step * (np.arange(first, first + n, dtype=np.float64) + (0.5 + phase)))


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


def _truth(geobox: GeoBox, values: np.ndarray, name: str, **attrs: str) -> xr.DataArray:
    coords = xr_coords(geobox, crs_coord_name="spatial_ref")
    return xr.DataArray(values, dims=("y", "x"), coords=coords, name=name, attrs=attrs)


def cover_truth(geobox: GeoBox) -> xr.DataArray:
    """Dominant cover class of every pixel (see ``synth.CLASS_NAMES``), computed now.

    Woody canopy, grass and bare soil share most savanna pixels; the class is the largest
    share (crop fields and ponds are whole pixels).
    """
    land = _block_landscape(geobox)
    return _truth(geobox, land.cover, "cover", classes=str(synth.CLASS_NAMES))


def woody_cover_truth(geobox: GeoBox) -> xr.DataArray:
    """Fraction (0..1, float32) of every pixel under ENCROACHING shrub canopy, computed now.

    Scattered large trees and riparian woodland are woody but not encroachment: they are not
    counted (their cover shows in :func:`cover_truth` as ``TREES`` / ``RIPARIAN``).
    """
    land = _block_landscape(geobox)
    return _truth(geobox, land.shrub.astype(np.float32), "woody_cover", units="1")


def encroached_truth(geobox: GeoBox) -> xr.DataArray:
    """Bush-encroachment mask (uint8), computed now.

    1 where the encroaching shrub cover is at least ``synth.ENCROACHED_COVER`` (30 %), else 0.
    """
    land = _block_landscape(geobox)
    values = land.encroached.astype(np.uint8)
    return _truth(geobox, values, "encroached", threshold=str(synth.ENCROACHED_COVER))


def woody_truth(geobox: GeoBox) -> xr.DataArray:
    """Woody-encroachment mask of every pixel: :func:`encroached_truth` named ``woody``."""
    return encroached_truth(geobox).rename("woody")


def field_truth(
    geometry: BaseGeometry, seasons: Sequence[int], *, southern: bool = True
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Crop fields that intersect a lon/lat geometry, and their yields and calendars.

    Fields are the cultivated Voronoi parcels of ``synth`` shrunk by their margin, exactly
    the pixels rendered as crop (a pixel whose centre lies in a polygon is that field's).

    Args:
        geometry: Area in EPSG:4326.
        seasons: Seasons (harvest years, see ``synth.season_of``) to report.
        southern: Whether the seasons follow the southern-hemisphere calendar.

    Returns:
        ``(fields, seasons_table)``: fields with ``field_id``, ``area_ha`` and their polygon
        (EPSG:4326); a tidy table with one row per field and season: ``yield_t_ha``,
        ``peak_greenness`` and the dates of sowing, start (half green-up), peak (highest
        greenness) and end of season (half senescence, earlier after a dry spell). The
        yield grows with the peak greenness but depends on more (the sowing date, the
        season's dry spell, the field's patchiness and management; see
        ``synth.field_yield``).
    """
    minx, miny, maxx, maxy = geometry.bounds
    lons = np.array([minx, maxx, minx, maxx, minx, maxx], dtype=np.float64)
    lats = np.array([miny, miny, maxy, maxy, 0.0, 0.0], dtype=np.float64)
    if not miny < 0.0 < maxy:
        lons, lats = lons[:4], lats[:4]
    xs, ys = synth.planar_km(lons, lats)
    step = synth.FIELD_KM
    grid_i, grid_j = np.meshgrid(
        np.arange(np.floor(xs.min() / step) - 2, np.floor(xs.max() / step) + 3, dtype=np.int64),
        np.arange(np.floor(ys.min() / step) - 2, np.floor(ys.max() / step) + 3, dtype=np.int64),
    )
    ci, cj = grid_i.ravel(), grid_j.ravel()
    keep = synth.is_field_cell(ci, cj)
    ci, cj = ci[keep], cj[keep]
    polys = [_parcel_lonlat(int(i), int(j)) for i, j in zip(ci, cj, strict=True)]
    fields = gpd.GeoDataFrame(
        {"field_id": [_field_id(int(i), int(j)) for i, j in zip(ci, cj, strict=True)]},
        geometry=polys,
        crs=4326,
    )
    hit = (~fields.is_empty & fields.intersects(geometry)).to_numpy()
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


def _parcel_lonlat(ci: int, cj: int) -> BaseGeometry:
    """Field polygon of parcel ``(ci, cj)`` in lon/lat.

    The parcel is straight-edged in the planar (sinusoidal) kilometres of ``synth``; its
    edges are densified every 10 m before going to lon/lat, where they bend slightly.
    """
    vertices = synth.parcel_polygon(ci, cj)
    if len(vertices) < 3:
        return Polygon()
    ring = np.asarray(segmentize(Polygon(vertices), 0.01).exterior.coords)
    lat = ring[:, 1] / synth.KM_PER_DEG_LAT
    lon = ring[:, 0] / (synth.KM_PER_DEG_LON * np.cos(np.radians(lat)))
    return Polygon(np.column_stack([lon, lat]))


def _field_id(ci: int, cj: int) -> str:
    return f"F{ci:+06d}{cj:+06d}"
