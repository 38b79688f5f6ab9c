"""Tiling grid: UTM zone choice and tiles aligned to a global 10 m grid.

Pure functions on shapely geometries; nothing here reads or writes files. A tile is a square
of ``size`` × ``size`` pixels whose origin is a multiple of the tile size in its UTM zone, so
reruns and neighbouring tiles line up exactly. An AOI is first cut along UTM zone borders and
the equator; each piece is projected into its own zone and covered by that zone's tiles. The
part of a tile that lies in its piece is the tile's *footprint*: footprints partition the AOI,
so every point of it is processed exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS, Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

DEFAULT_TILE_PX = 1024
DEFAULT_RES_M = 10.0
# Densify lon/lat edges before projecting so that long straight edges stay true in UTM.
_DENSIFY_DEG = 0.01
# Slivers below these areas (floating-point leftovers of cutting at a zone border or the
# equator) hold no pixel and are dropped: about 0.01 m² in lon/lat, 1 cm² in metres.
_MIN_PIECE_DEG2 = 1e-12
_MIN_FOOTPRINT_M2 = 1e-4


@dataclass(frozen=True)
class Tile:
    """One grid square of a UTM zone, with the part of the AOI it covers.

    Attributes:
        epsg: EPSG code of the tile's UTM zone (326zz north, 327zz south).
        col: Column index: the tile's left edge is ``col * size * res`` metres.
        row: Row index: the tile's bottom edge is ``row * size * res`` metres.
        size: Tile side in pixels.
        res: Pixel size in metres.
        footprint: Part of the AOI inside this tile, in the tile's CRS.
    """

    epsg: int
    col: int
    row: int
    size: int = DEFAULT_TILE_PX
    res: float = DEFAULT_RES_M
    footprint: BaseGeometry | None = field(default=None, compare=False, repr=False)

    @property
    def zone(self) -> int:
        """UTM zone number, 1..60."""
        return self.epsg % 100

    @property
    def hemisphere(self) -> str:
        """``"N"`` or ``"S"``."""
        return "N" if self.epsg // 100 == 326 else "S"

    @property
    def id(self) -> str:
        """Stable identifier, e.g. ``34S_0070_0754`` (zone, hemisphere, column, row)."""
        return f"{self.zone:02d}{self.hemisphere}_{self.col:04d}_{self.row:04d}"

    @property
    def span(self) -> float:
        """Tile side in metres."""
        return self.size * self.res

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Whole tile as ``(left, bottom, right, top)`` in metres."""
        s = self.span
        return (self.col * s, self.row * s, (self.col + 1) * s, (self.row + 1) * s)

    @cached_property
    def area_bounds(self) -> tuple[float, float, float, float]:
        """Pixel-aligned bounding box of the footprint, inside the tile.

        This is what sources load: the whole tile when no footprint is set.
        """
        if self.footprint is None or self.footprint.is_empty:
            return self.bounds
        return snap_bounds(self.footprint.bounds, self.res, within=self.bounds)

    @property
    def geobox(self) -> GeoBox:
        """Pixel grid of :attr:`area_bounds` (what a source returns for this tile)."""
        return geobox_for(self.area_bounds, self.epsg, self.res)

    @property
    def full_geobox(self) -> GeoBox:
        """Pixel grid of the whole tile."""
        return geobox_for(self.bounds, self.epsg, self.res)

    def footprint_lonlat(self) -> BaseGeometry:
        """Footprint (or whole tile) in EPSG:4326."""
        geom = self.footprint if self.footprint is not None else box(*self.bounds)
        return to_lonlat(shapely.segmentize(geom, self.span / 16), self.epsg)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone containing a lon/lat point.

    Args:
        lon: Longitude in degrees; 180 belongs to zone 60.
        lat: Latitude in degrees; the equator belongs to the northern hemisphere.

    Returns:
        326zz for the northern hemisphere, 327zz for the southern.
    """
    zone = math.floor((lon + 180.0) / 6.0) + 1
    # ``lon + 180`` rounds a longitude a hair west of a border onto it: compare with the
    # zone's exact western border instead.
    if lon < -180.0 + (zone - 1) * 6.0:
        zone -= 1
    return (32600 if lat >= 0 else 32700) + min(max(zone, 1), 60)


def snap_bounds(
    bounds: tuple[float, float, float, float],
    res: float,
    *,
    within: tuple[float, float, float, float] | None = None,
) -> tuple[float, float, float, float]:
    """Grow bounds outward to the global pixel grid (multiples of ``res``).

    Args:
        bounds: ``(left, bottom, right, top)`` in metres.
        res: Pixel size in metres.
        within: Optional bounds to clip the result to (themselves aligned).

    Returns:
        Aligned ``(left, bottom, right, top)``.
    """
    left = math.floor(round(bounds[0] / res, 6)) * res
    bottom = math.floor(round(bounds[1] / res, 6)) * res
    right = math.ceil(round(bounds[2] / res, 6)) * res
    top = math.ceil(round(bounds[3] / res, 6)) * res
    if within is not None:
        left, bottom = max(left, within[0]), max(bottom, within[1])
        right, top = min(right, within[2]), min(top, within[3])
    return (left, bottom, right, top)


def geobox_for(bounds: tuple[float, float, float, float], epsg: int, res: float) -> GeoBox:
    """Pixel grid with north-up pixels of ``res`` metres covering aligned bounds."""
    left, bottom, right, top = bounds
    width = round((right - left) / res)
    height = round((top - bottom) / res)
    return GeoBox((height, width), Affine(res, 0.0, left, 0.0, -res, top), f"EPSG:{epsg}")


def to_lonlat(geometry: BaseGeometry, epsg: int) -> BaseGeometry:
    """Reproject a geometry from ``epsg`` to EPSG:4326 (lon, lat order)."""
    tr = Transformer.from_crs(CRS.from_epsg(epsg), CRS.from_epsg(4326), always_xy=True)
    return shapely.transform(geometry, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def from_lonlat(geometry: BaseGeometry, epsg: int) -> BaseGeometry:
    """Reproject a lon/lat geometry to ``epsg``, densifying edges first."""
    tr = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(epsg), always_xy=True)
    dense = shapely.segmentize(geometry, _DENSIFY_DEG)
    return shapely.transform(dense, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def zone_pieces(geometry: BaseGeometry) -> dict[int, BaseGeometry]:
    """Cut a lon/lat geometry along UTM zone borders and the equator.

    Args:
        geometry: Polygonal geometry in EPSG:4326.

    Returns:
        Mapping of UTM EPSG code to the (lon/lat) part of the geometry in that zone and
        hemisphere; parts without area are dropped.
    """
    minx, miny, maxx, maxy = geometry.bounds
    first = utm_epsg(minx, 0.0) % 100
    last = utm_epsg(maxx, 0.0) % 100
    pieces: dict[int, BaseGeometry] = {}
    for zone in range(first, last + 1):
        west = -180.0 + (zone - 1) * 6.0
        for base, lat0, lat1 in ((32600, 0.0, 90.0), (32700, -90.0, 0.0)):
            if maxy < lat0 or miny > lat1:
                continue
            part = geometry.intersection(box(west, lat0, west + 6.0, lat1))
            part = _polygonal(part)
            if part is not None and part.area >= _MIN_PIECE_DEG2:
                pieces[base + zone] = part
    return pieces


def plan_tiles(
    geometry: BaseGeometry, *, tile_px: int = DEFAULT_TILE_PX, res: float = DEFAULT_RES_M
) -> tuple[Tile, ...]:
    """Cover a lon/lat AOI with pixel-aligned UTM tiles.

    Args:
        geometry: AOI in EPSG:4326 (Polygon or MultiPolygon).
        tile_px: Tile side in pixels.
        res: Pixel size in metres.

    Returns:
        Tiles ordered by zone, then north to south, then west to east; each carries the
        footprint of the AOI inside it, in its own CRS.
    """
    span = tile_px * res
    tiles: list[Tile] = []
    for epsg, piece in sorted(zone_pieces(geometry).items()):
        local = from_lonlat(piece, epsg)
        shapely.prepare(local)
        minx, miny, maxx, maxy = local.bounds
        cols = np.arange(math.floor(minx / span), math.ceil(maxx / span))
        rows = np.arange(math.floor(miny / span), math.ceil(maxy / span))
        grid_c, grid_r = np.meshgrid(cols, rows[::-1])
        cc, rr = grid_c.ravel(), grid_r.ravel()
        boxes = shapely.box(cc * span, rr * span, (cc + 1) * span, (rr + 1) * span)
        hit = shapely.intersects(local, boxes)
        parts = shapely.intersection(local, boxes[hit])
        for col, row, part in zip(cc[hit], rr[hit], parts, strict=True):
            poly = _polygonal(part)
            if poly is None or poly.area < _MIN_FOOTPRINT_M2:
                continue
            tile = Tile(epsg, int(col), int(row), tile_px, res, footprint=poly)
            left, bottom, right, top = tile.area_bounds
            if right > left and top > bottom:  # a footprint thinner than a pixel's rounding
                tiles.append(tile)
    return tuple(tiles)


def _polygonal(geometry: BaseGeometry) -> BaseGeometry | None:
    """Polygonal part of an intersection result, or None when it has no area."""
    if geometry.is_empty:
        return None
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry if geometry.area > 0 else None
    polys = [
        g for g in getattr(geometry, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")
    ]
    if not polys:
        return None
    merged = shapely.union_all(polys)
    return merged if merged.area > 0 else None
