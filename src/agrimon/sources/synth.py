"""Synthetic savanna landscape behind the demo source: pure numpy, no I/O.

Everything is a deterministic function of longitude, latitude and date, so the same request
gives the same pixels, neighbouring tiles agree on their shared edge, and any block can be
rendered on its own (which is what keeps the demo source lazy per dask chunk).

The landscape imitates farmland in a semi-arid savanna (Namibia's maize triangle):

* crop fields on a lon/lat cadastre, sown between mid-November and late December, with a
  sowing–peak–harvest greenness cycle whose height depends on the season's rainfall and the
  field's potential (and the field's yield on that height, plus noise);
* savanna grassland, green in the rainy season and senescent in the dry season;
* patches of encroaching woody shrubs that green up earlier and stay green well into the dry
  season, with lower red and SWIR than dry grass;
* bare sandy soil, small ponds, and per-date clouds, thin cirrus and cloud shadows with their
  Sen2Cor SCL codes (3, 8, 9, 10).

Reflectances are linear mixtures of end-member spectra taken from ``notes/spectra.md``
(typical L2A surface reflectance of each cover in the savanna) weighted by a greenness
fraction that follows the season.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtri

F64 = NDArray[np.float64]
U64 = NDArray[np.uint64]

SEED = 0x5A7A11
#: First acquisition of the demo constellation; every 5 days after it is another.
EPOCH = date(2015, 7, 6)
REVISIT_DAYS = 5

# Cover classes of the truth map.
GRASS, SHRUB, CROP, BARE, WATER = 1, 2, 3, 4, 5
CLASS_NAMES = {
    GRASS: "grassland",
    SHRUB: "woody shrubs",
    CROP: "crop",
    BARE: "bare soil",
    WATER: "water",
}

# Sen2Cor scene classification codes used by the demo.
SCL_SHADOW, SCL_VEG, SCL_NOT_VEG, SCL_WATER = 3, 4, 5, 6
SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10

# End-member spectra, bands in agrimon.sources.base.BANDS order:
#              blue  green  red   re1   re2   re3   nir   nir08 swir16 swir22
CROP_GREEN = (0.030, 0.070, 0.040, 0.100, 0.280, 0.370, 0.400, 0.420, 0.200, 0.100)
GRASS_GREEN = (0.040, 0.080, 0.060, 0.120, 0.240, 0.290, 0.300, 0.320, 0.240, 0.140)
GRASS_DRY = (0.070, 0.100, 0.130, 0.170, 0.210, 0.230, 0.240, 0.250, 0.340, 0.270)
SHRUB_WET = (0.030, 0.060, 0.040, 0.090, 0.220, 0.280, 0.300, 0.310, 0.170, 0.080)
SHRUB_DRY = (0.050, 0.080, 0.080, 0.120, 0.200, 0.240, 0.250, 0.260, 0.240, 0.150)
SOIL = (0.100, 0.150, 0.200, 0.230, 0.250, 0.270, 0.280, 0.290, 0.380, 0.330)
WATER_SPEC = (0.060, 0.050, 0.030, 0.020, 0.015, 0.012, 0.010, 0.010, 0.005, 0.003)
CLOUD = (0.500, 0.500, 0.510, 0.520, 0.530, 0.540, 0.540, 0.550, 0.420, 0.320)
N_BANDS = 10
RED, NIR = 2, 6

# Fields: cells of a lon/lat cadastre, shrunk by a margin (tracks and fire breaks).
FIELD_DEG = 0.005
FIELD_MARGIN_DEG = 0.0004
POND_DEG = 0.03
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON = 111.320
_U64 = np.uint64


def _mix(x: U64) -> U64:
    """splitmix64 finaliser: a fast, well-mixed integer hash."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U64(30))
        x = x * _U64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> _U64(27))
        x = x * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def hash_bits(*keys: NDArray[np.int64] | int, seed: int) -> U64:
    """64 random bits per element from integer keys (broadcast together)."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray(seed, dtype=np.int64).astype(_U64) + _U64(0x9E3779B97F4A7C15))
        for key in keys:
            h = _mix(h ^ (np.asarray(key, dtype=np.int64).astype(_U64) + _U64(0x9E3779B97F4A7C15)))
    return np.asarray(h, dtype=_U64)


def hash_u01(*keys: NDArray[np.int64] | int, seed: int) -> F64:
    """Uniform numbers in [0, 1) from integer keys."""
    return (hash_bits(*keys, seed=seed) >> _U64(11)).astype(np.float64) / float(1 << 53)


def value_noise(x_km: F64, y_km: F64, *, scale_km: float, seed: int, octaves: int = 1) -> F64:
    """Smooth lattice noise in [0, 1] of planar coordinates in kilometres.

    Each octave halves the scale and the weight; the sum is renormalised to [0, 1].
    """
    total = np.zeros(np.broadcast(x_km, y_km).shape)
    weight_sum = 0.0
    for octave in range(octaves):
        scale = scale_km / (2**octave)
        weight = 0.5**octave
        gx, gy = x_km / scale, y_km / scale
        ix, iy = np.floor(gx), np.floor(gy)
        fx, fy = gx - ix, gy - iy
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        i, j = ix.astype(np.int64), iy.astype(np.int64)
        s = seed + 1013 * octave
        v00, v10 = hash_u01(i, j, seed=s), hash_u01(i + 1, j, seed=s)
        v01, v11 = hash_u01(i, j + 1, seed=s), hash_u01(i + 1, j + 1, seed=s)
        top = v00 + (v10 - v00) * fx
        bottom = v01 + (v11 - v01) * fx
        total += weight * (top + (bottom - top) * fy)
        weight_sum += weight
    return np.asarray(total / weight_sum)


def planar_km(lon: F64, lat: F64) -> tuple[F64, F64]:
    """Sinusoidal-projection kilometres: continuous across UTM zones, near-isotropic."""
    return lon * KM_PER_DEG_LON * np.cos(np.radians(lat)), lat * KM_PER_DEG_LAT


def _logistic(z: F64 | float) -> F64:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))))


# --- calendar -------------------------------------------------------------------------


def acquisition_dates(start: date, end: date) -> list[date]:
    """Demo acquisition dates between ``start`` and ``end`` inclusive (every 5 days)."""
    first = -(-(start - EPOCH).days // REVISIT_DAYS)
    last = (end - EPOCH).days // REVISIT_DAYS
    return [EPOCH + timedelta(days=REVISIT_DAYS * k) for k in range(first, last + 1)]


def season_of(day: date, *, southern: bool = True) -> tuple[int, int]:
    """Growing season and day within it.

    Seasons run from 1 July to 30 June in the southern hemisphere (labelled by the year of
    the harvest, e.g. 2024 for 2023-07-01..2024-06-30) and from 1 January to 31 December in
    the northern hemisphere, whose rains come half a year later.

    Returns:
        ``(season, day_of_season)`` with day 0 on the season's first day.
    """
    if southern:
        season = day.year + 1 if day.month >= 7 else day.year
        return season, (day - date(season - 1, 7, 1)).days
    return day.year, (day - date(day.year, 1, 1)).days


def season_start(season: int, *, southern: bool = True) -> date:
    """First day of a season (see :func:`season_of`)."""
    return date(season - 1, 7, 1) if southern else date(season, 1, 1)


def rainfall(season: int) -> float:
    """Relative rainfall of a season, 0.6 (drought) to 1.3 (wet year)."""
    return 0.6 + 0.7 * float(hash_u01(season, seed=SEED + 10))


# Rainy-season timing in days since 1 July (southern hemisphere).
GRASS_ONSET, GRASS_OFFSET = 150.0, 290.0
SHRUB_ONSET, SHRUB_OFFSET = 115.0, 335.0


def rain_shift(season: int) -> float:
    """Days by which a season's rains come early (<0) or late (>0): −12..+12."""
    return 24.0 * float(hash_u01(season, seed=SEED + 12)) - 12.0


def grass_greenness(day_of_season: float, season: int) -> float:
    """Green fraction of savanna grass (before local grazing variation)."""
    shift = rain_shift(season)
    wet = float(_logistic((day_of_season - GRASS_ONSET - shift) / 9.0)) - float(
        _logistic((day_of_season - GRASS_OFFSET - shift) / 12.0)
    )
    return 0.12 + min(0.8, 0.62 * rainfall(season)) * wet


def shrub_greenness(day_of_season: float, season: int) -> float:
    """Green fraction of woody shrubs: early green-up, slow decline into the dry season."""
    shift = rain_shift(season)
    wet = float(_logistic((day_of_season - SHRUB_ONSET - shift) / 10.0)) - float(
        _logistic((day_of_season - SHRUB_OFFSET - shift) / 25.0)
    )
    return 0.15 + 0.8 * wet


@dataclass(frozen=True)
class CropCycle:
    """Phenology of one field in one season, in days since the season's start."""

    sowing: float
    start: float
    peak: float
    end: float
    peak_greenness: float


def crop_cycle(ci: NDArray[np.int64], cj: NDArray[np.int64], season: int) -> CropCycle:
    """Vectorised crop calendar of fields ``(ci, cj)`` in ``season``.

    Sowing falls between 13 November and 23 December; green-up reaches half its height 40
    days later, the peak 82 days later, and senescence falls through half height 125 days
    after sowing. The peak greenness grows with the season's rainfall and the field's
    potential.
    """
    sowing = 135.0 + 40.0 * hash_u01(ci, cj, season, seed=SEED + 8)
    return CropCycle(
        sowing=sowing,  # type: ignore[arg-type]
        start=sowing + 40.0,  # type: ignore[arg-type]
        peak=sowing + 82.0,  # type: ignore[arg-type]
        end=sowing + 125.0,  # type: ignore[arg-type]
        peak_greenness=np.clip(0.25 + 0.55 * rainfall(season) * field_potential(ci, cj), 0.3, 0.98),  # type: ignore[arg-type]
    )


def crop_greenness(day_of_season: float, cycle: CropCycle) -> F64:
    """Green fraction of crop fields on a day (0 = bare soil before sowing/after harvest)."""
    rise = _logistic((day_of_season - np.asarray(cycle.start)) / 7.0)
    fall = _logistic((day_of_season - np.asarray(cycle.end)) / 8.0)
    return np.asarray(np.clip(rise - fall, 0.0, 1.0) * np.asarray(cycle.peak_greenness))


def field_potential(ci: NDArray[np.int64], cj: NDArray[np.int64]) -> F64:
    """Soil/management potential of a field, 0.75..1.25."""
    return 0.75 + 0.5 * hash_u01(ci, cj, seed=SEED + 9)


def field_yield(ci: NDArray[np.int64], cj: NDArray[np.int64], season: int) -> F64:
    """Maize grain yield (t/ha) of fields in a season: grows with peak greenness, plus noise."""
    peak = np.asarray(crop_cycle(ci, cj, season).peak_greenness)
    noise = 0.35 * ndtri(np.clip(hash_u01(ci, cj, season, seed=SEED + 13), 1e-6, 1 - 1e-6))
    return np.asarray(np.maximum(0.2, 0.4 + 6.5 * peak**1.5 + noise))


# --- static landscape -----------------------------------------------------------------


def is_field_cell(ci: NDArray[np.int64], cj: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Whether cadastre cell ``(ci, cj)`` holds a crop field.

    Fields cluster in farming areas (smooth noise at the cell centre) and 85 % of the cells
    there are cultivated.
    """
    lon = ((ci + 0.5) * FIELD_DEG).astype(np.float64)
    lat = ((cj + 0.5) * FIELD_DEG).astype(np.float64)
    x, y = planar_km(lon, lat)
    farm = value_noise(x, y, scale_km=7.0, seed=SEED + 1, octaves=2) > 0.55
    return np.asarray(farm & (hash_u01(ci, cj, seed=SEED + 2) < 0.85))


@dataclass(frozen=True)
class Landscape:
    """Static properties of a block of pixels.

    Attributes:
        cover: Cover class per pixel (GRASS, SHRUB, CROP, BARE, WATER).
        ci: Field cadastre column per pixel.
        cj: Field cadastre row per pixel.
        texture: Multiplicative brightness texture around 1.
        grazing: Local scaling of grass greenness, 0.7..1.1.
        x_km: Planar x of each pixel (for clouds).
        y_km: Planar y of each pixel.
    """

    cover: NDArray[np.uint8]
    ci: NDArray[np.int64]
    cj: NDArray[np.int64]
    texture: F64
    grazing: F64
    x_km: F64
    y_km: F64


def landscape(lon: F64, lat: F64) -> Landscape:
    """Static landscape at pixel centres given in lon/lat (2-D arrays)."""
    x, y = planar_km(lon, lat)
    ci = np.floor(lon / FIELD_DEG).astype(np.int64)
    cj = np.floor(lat / FIELD_DEG).astype(np.int64)
    fx = lon / FIELD_DEG - ci
    fy = lat / FIELD_DEG - cj
    m = FIELD_MARGIN_DEG / FIELD_DEG
    in_field = is_field_cell(ci, cj) & (fx >= m) & (fx <= 1 - m) & (fy >= m) & (fy <= 1 - m)

    cover = np.full(lon.shape, GRASS, dtype=np.uint8)
    density = value_noise(x, y, scale_km=9.0, seed=SEED + 6)
    shrubs = value_noise(x, y, scale_km=1.2, seed=SEED + 5, octaves=3) > 0.66 - 0.3 * density
    cover[shrubs] = SHRUB
    cover[value_noise(x, y, scale_km=0.6, seed=SEED + 4, octaves=2) > 0.76] = BARE
    cover[_in_pond(lon, lat, x, y)] = WATER
    cover[in_field] = CROP

    texture = 1.0 + 0.10 * (value_noise(x, y, scale_km=0.15, seed=SEED + 7) - 0.5)
    grazing = 0.7 + 0.4 * value_noise(x, y, scale_km=2.5, seed=SEED + 3)
    return Landscape(cover, ci, cj, texture, grazing, x, y)


def _in_pond(lon: F64, lat: F64, x: F64, y: F64) -> NDArray[np.bool_]:
    """Small round ponds, at most one per 0.03° cell, kept clear of the cell edges."""
    pi = np.floor(lon / POND_DEG).astype(np.int64)
    pj = np.floor(lat / POND_DEG).astype(np.int64)
    has = hash_u01(pi, pj, seed=SEED + 20) < 0.35
    clon = (pi + 0.2 + 0.6 * hash_u01(pi, pj, seed=SEED + 21)) * POND_DEG
    clat = (pj + 0.2 + 0.6 * hash_u01(pi, pj, seed=SEED + 22)) * POND_DEG
    radius = 0.06 + 0.12 * hash_u01(pi, pj, seed=SEED + 23)
    cx, cy = planar_km(clon, clat)
    return np.asarray(has & ((x - cx) ** 2 + (y - cy) ** 2 < radius**2))


# --- one acquisition ------------------------------------------------------------------


def _spec(values: tuple[float, ...]) -> F64:
    return np.asarray(values, dtype=np.float64)[:, None, None]


def greenness(land: Landscape, day: date, *, southern: bool = True) -> F64:
    """Green fraction of every pixel on ``day`` (cover-specific phenology)."""
    season, dos = season_of(day, southern=southern)
    g = np.zeros(land.cover.shape)
    grass = land.cover == GRASS
    g[grass] = grass_greenness(dos, season) * land.grazing[grass]
    g[land.cover == SHRUB] = shrub_greenness(dos, season)
    crop = land.cover == CROP
    if crop.any():
        g[crop] = crop_greenness(dos, crop_cycle(land.ci[crop], land.cj[crop], season))
    return g


def ground_reflectance(land: Landscape, day: date, *, southern: bool = True) -> F64:
    """Cloud-free surface reflectance, shape ``(10, y, x)``."""
    g = greenness(land, day, southern=southern)[None]
    cover = land.cover[None]
    green = np.where(
        cover == CROP,
        _spec(CROP_GREEN),
        np.where(cover == SHRUB, _spec(SHRUB_WET), _spec(GRASS_GREEN)),
    )
    dry = np.where(
        cover == CROP, _spec(SOIL), np.where(cover == SHRUB, _spec(SHRUB_DRY), _spec(GRASS_DRY))
    )
    refl = dry + (green - dry) * g
    refl = np.where(cover == BARE, _spec(SOIL), refl)
    refl = refl * land.texture[None]
    # Water is flat and dark: no texture.
    return np.asarray(np.where(cover == WATER, _spec(WATER_SPEC), refl))


def cloud_cover_fraction(day: date, *, southern: bool = True) -> float:
    """Target cloud fraction of a date: often clear in the dry season, cloudy in the rains."""
    _, dos = season_of(day, southern=southern)
    wet = float(_logistic((dos - 140.0) / 12.0)) - float(_logistic((dos - 280.0) / 12.0))
    k = (day - EPOCH).days
    u = float(hash_u01(k, seed=SEED + 11))
    return float(max(0.0, (0.04 + 0.6 * wet) * u**1.5 - 0.01))


def render(land: Landscape, day: date, *, southern: bool = True) -> tuple[F64, NDArray[np.uint8]]:
    """Render one acquisition of a block.

    Returns:
        ``(reflectance, scl)``: reflectance ``(10, y, x)`` quantised to 1e-4 like L2A
        digital numbers, and the Sen2Cor scene classification ``(y, x)``.
    """
    refl = ground_reflectance(land, day, southern=southern)
    red, nir = refl[RED], refl[NIR]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    scl = np.where(land.cover == WATER, SCL_WATER, np.where(ndvi > 0.4, SCL_VEG, SCL_NOT_VEG))
    scl = scl.astype(np.uint8)

    k = (day - EPOCH).days
    cover_frac = cloud_cover_fraction(day, southern=southern)
    if cover_frac > 0.0:
        # 3-octave value noise is roughly normal around 0.5 with sd 0.11.
        thr = 0.5 + 0.11 * float(ndtri(1.0 - min(cover_frac, 0.999)))
        seed = SEED + 1000 + 7919 * k
        n = value_noise(land.x_km, land.y_km, scale_km=3.0, seed=seed, octaves=3)
        alpha = np.clip((n - thr) / 0.06, 0.0, 1.0)
        shade = value_noise(land.x_km - 0.5, land.y_km + 0.35, scale_km=3.0, seed=seed, octaves=3)
        shadow = (shade > thr + 0.02) & (alpha == 0.0)
        refl = np.where(shadow[None], refl * 0.35, refl)
        refl = refl + (_spec(CLOUD) - refl) * alpha[None]
        scl[shadow] = SCL_SHADOW
        scl[(alpha > 0) & (alpha < 0.25)] = SCL_CIRRUS
        scl[(alpha >= 0.25) & (alpha < 0.6)] = SCL_CLOUD_MED
        scl[alpha >= 0.6] = SCL_CLOUD_HIGH

    # Sensor noise: ±0.004 per band, from one hash per pixel and date.
    pix = (np.round(land.x_km * 100).astype(np.int64), np.round(land.y_km * 100).astype(np.int64))
    bits = hash_bits(pix[0], pix[1], k, seed=SEED + 30)
    shifts = (np.arange(N_BANDS, dtype=np.uint64) * _U64(6))[:, None, None]
    noise = ((bits[None] >> shifts) & _U64(63)).astype(np.float64) / 63.0 - 0.5
    refl = refl + 0.008 * noise
    return np.round(np.clip(refl, 1e-4, 1.0) * 10000.0) / 10000.0, scl


def acquisition_time(day: date, lon: float) -> datetime:
    """Overpass time: 10:30 local solar time at ``lon`` (UTC, naive), to the second."""
    hours = 10.5 - lon / 15.0
    return datetime(day.year, day.month, day.day) + timedelta(seconds=round(hours * 3600))
