"""Tiling grid: zones, alignment and exact cover, on hand-made and real AOIs."""

from __future__ import annotations

import math

import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from agrimon.aoi import read_aoi
from agrimon.grid import from_lonlat, plan_tiles, snap_bounds, utm_epsg, zone_pieces

from .conftest import real_path


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (18.2, -19.6, 32734),  # Grootfontein
        (17.99, -19.6, 32733),
        (18.0, -19.6, 32734),  # a zone's western border belongs to it
        (36.8, -1.3, 32737),  # Nairobi
        (36.8, 0.0, 32637),  # the equator counts as north
        (-180.0, 10.0, 32601),
        (180.0, 10.0, 32660),
        (2.35, 48.85, 32631),  # Paris
    ],
)
def test_utm_epsg(lon: float, lat: float, epsg: int) -> None:
    assert utm_epsg(lon, lat) == epsg


def test_snap_bounds_grows_to_the_10m_grid() -> None:
    assert snap_bounds((200971.2, 7823641.0, 211075.0, 7833779.99), 10.0) == (
        200970.0,
        7823640.0,
        211080.0,
        7833780.0,
    )
    assert snap_bounds((5.0, 5.0, 95.0, 95.0), 10.0, within=(0.0, 0.0, 50.0, 50.0)) == (
        0.0,
        0.0,
        50.0,
        50.0,
    )


def test_default_aoi_tiles() -> None:
    tiles = plan_tiles(box(18.15, -19.66, 18.245, -19.57))
    # 10 km fits in 1024 px tiles (10.24 km) but straddles one column and one row border.
    assert [t.id for t in tiles] == [
        "34S_0019_0765",
        "34S_0020_0765",
        "34S_0019_0764",
        "34S_0020_0764",
    ]
    t = tiles[2]
    assert t.bounds == (19 * 10240.0, 764 * 10240.0, 20 * 10240.0, 765 * 10240.0)
    assert t.geobox.crs is not None
    assert t.geobox.crs.epsg == 32734
    assert t.geobox.affine.a == 10.0 and t.geobox.affine.e == -10.0
    # The loaded area is the footprint's bounding box, on the 10 m grid, inside the tile.
    left, bottom, right, top = t.area_bounds
    assert right == t.bounds[2] and top == t.bounds[3]
    assert left % 10 == 0 and bottom % 10 == 0 and left > t.bounds[0]


def test_zone_border_gives_tiles_in_both_zones() -> None:
    aoi = box(17.95, -19.7, 18.05, -19.6)
    tiles = plan_tiles(aoi)
    assert {t.epsg for t in tiles} == {32733, 32734}
    # Each zone's footprints lie on their side of 18°E.
    for t in tiles:
        lon = t.footprint_lonlat().bounds
        if t.epsg == 32733:
            assert lon[2] <= 18.0 + 1e-6
        else:
            assert lon[0] >= 18.0 - 1e-6


def _assert_exact_cover(aoi: BaseGeometry, tile_px: int) -> None:
    tiles = plan_tiles(aoi, tile_px=tile_px)
    pieces = zone_pieces(aoi)
    assert {t.epsg for t in tiles} == set(pieces)
    for epsg, piece in pieces.items():
        local = from_lonlat(piece, epsg)
        mine = [t for t in tiles if t.epsg == epsg]
        assert mine, f"no tile for zone {epsg}"
        prints = [t.footprint for t in mine]
        assert all(p is not None for p in prints)
        total = sum(p.area for p in prints if p is not None)
        union = shapely.union_all(prints)
        # Sum of areas equals the union's: no overlap; union equals the piece: no gap.
        assert total == pytest.approx(union.area, rel=1e-9, abs=1e-3)
        assert union.symmetric_difference(local).area <= 1e-6 * max(local.area, 1.0)
        for t in mine:
            span = t.span
            left, bottom, right, top = t.bounds
            # Tile origins are multiples of the tile size; pixels align to the 10 m grid.
            assert left == t.col * span and bottom == t.row * span
            assert math.isclose(left % span, 0.0, abs_tol=1e-9)
            assert t.geobox.affine.c % t.res == 0 and t.geobox.affine.f % t.res == 0
            fb = t.area_bounds
            assert left <= fb[0] < fb[2] <= right and bottom <= fb[1] < fb[3] <= top
            assert box(*fb).buffer(1e-6).contains(t.footprint)
    ids = [t.id for t in tiles]
    assert len(ids) == len(set(ids))


@st.composite
def polygons(draw: st.DrawFn) -> Polygon:
    """Random convex polygons of a few km to ~60 km, often across a zone border or the equator."""
    lon = draw(st.sampled_from([17.8, 18.0, 23.9, 36.0, -0.1, 100.0]))
    lat = draw(st.sampled_from([-19.6, -0.2, 0.0, 45.0]))
    cx = lon + draw(st.floats(-0.3, 0.3))
    cy = lat + draw(st.floats(-0.3, 0.3))
    n = draw(st.integers(3, 8))
    pts = [(cx + draw(st.floats(-0.3, 0.3)), cy + draw(st.floats(-0.3, 0.3))) for _ in range(n)]
    hull = shapely.convex_hull(shapely.MultiPoint(pts))
    if hull.geom_type != "Polygon" or hull.area < 1e-4:
        hull = box(cx - 0.05, cy - 0.05, cx + 0.05, cy + 0.05)
    return hull


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(aoi=polygons(), tile_px=st.sampled_from([256, 1024, 2048]))
def test_tiles_cover_aoi_exactly_once_and_align(aoi: Polygon, tile_px: int) -> None:
    _assert_exact_cover(aoi, tile_px)


def test_real_kenya_crosses_zones_and_equator() -> None:
    aoi = read_aoi(real_path("aoi", "kenya_counties.geojson"), max_area_km2=1e6)
    tiles = plan_tiles(aoi.geometry, tile_px=4096)
    # Kenya spans UTM zones 36 and 37 (and a sliver of 38) on both sides of the equator.
    assert {32636, 32637, 32736, 32737} <= {t.epsg for t in tiles}
    lonlat_area = sum(t.footprint_lonlat().area for t in tiles)
    assert lonlat_area == pytest.approx(aoi.geometry.area, rel=1e-4)


def test_slivers_along_the_equator_hold_no_tile() -> None:
    # Found by hypothesis: an edge at 1e-168° N leaves a north "piece" of no real area.
    aoi = Polygon([(17.8, -0.25), (17.8, 1.038e-168), (18.05, 1.038e-168), (17.8, -0.25)])
    _assert_exact_cover(aoi, 256)
    assert {t.epsg for t in plan_tiles(aoi, tile_px=256)} == {32733, 32734}


def test_aoi_cut_at_the_antimeridian_tiles_in_zones_1_and_60() -> None:
    # What read_aoi makes of a box drawn from 179.9° E to 179.9° W: two parts, one each side.
    west, east = box(179.9, -17.0, 180.0, -16.9), box(-180.0, -17.0, -179.9, -16.9)
    aoi = shapely.MultiPolygon([west, east])

    pieces = zone_pieces(aoi)

    assert set(pieces) == {32701, 32760}
    assert pieces[32760].equals(west)
    assert pieces[32701].equals(east)
    _assert_exact_cover(aoi, 1024)
    tiles = plan_tiles(aoi, tile_px=1024)
    assert len(tiles) == 10
    # Zone 60's tiles end at 180°, zone 1's start there: none wraps round the Earth.
    for t in tiles:
        minx, _, maxx, _ = t.footprint_lonlat().bounds
        if t.epsg == 32760:
            assert 179.9 - 1e-6 <= minx < maxx <= 180.0 + 1e-9
        else:
            assert -180.0 - 1e-9 <= minx < maxx <= -179.9 + 1e-6
