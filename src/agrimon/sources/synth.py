"""Synthetic savanna landscape behind the demo source: pure numpy, no I/O.

Everything is a deterministic function of longitude, latitude and date, so the same request
gives the same pixels, neighbouring tiles agree on their shared edge, and any block can be
rendered on its own (which is what keeps the demo source lazy per dask chunk).

The landscape imitates farmland in a semi-arid savanna (Namibia's maize triangle):

* crop fields on a lon/lat cadastre, sown between mid-November and late December, with a
  sowing–peak–harvest greenness cycle whose height depends on the season's rainfall and the
  field's potential, and which a mid-season dry spell marks (wilting, a lower peak, an early
  senescence) where it strikes; the field's maize yield follows that height, the sowing
  date against the rains' onset, the spell's timing against the crop's flowering, the
  field's patchiness, a technology trend and what space does not see (management, pests),
  so that the peak greenness explains about half of it (see :func:`field_yield`);
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

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property, partial

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtri

F64 = NDArray[np.float64]
U64 = NDArray[np.uint64]

SEED = 0x5A7A11
#: First acquisition of the demo constellation; every 5 days after it is another.
EPOCH = date(2015, 7, 6)
REVISIT_DAYS = 5

# Cover classes of the truth map (the dominant cover of each pixel).
GRASS, SHRUB, CROP, BARE, WATER, TREES, RIPARIAN = 1, 2, 3, 4, 5, 6, 7
CLASS_NAMES = {
    GRASS: "grassland",
    SHRUB: "woody shrubs",
    CROP: "crop",
    BARE: "bare soil",
    WATER: "water",
    TREES: "large trees",
    RIPARIAN: "riparian woodland",
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
# Large trees and riparian woodland: the measured forest of notes/spectra.md (2015-07-11,
# visible bands as L2A), and the same canopy with its leaves thinned in the dry season.
TREE_WET = (0.025, 0.050, 0.036, 0.068, 0.212, 0.273, 0.262, 0.300, 0.122, 0.052)
TREE_DRY = (0.040, 0.065, 0.070, 0.100, 0.180, 0.215, 0.220, 0.235, 0.200, 0.120)
# Fresh char and ash of a burnt grass layer (dark, NIR barely above red: NDVI about 0.2).
BURNT = (0.035, 0.045, 0.060, 0.070, 0.080, 0.085, 0.090, 0.095, 0.150, 0.130)
N_BANDS = 10
RED, NIR = 2, 6

#: End members of :func:`ground_reflectance`, in the order of its mixing coefficients.
END_MEMBERS = (
    CROP_GREEN,
    GRASS_GREEN,
    GRASS_DRY,
    SHRUB_WET,
    SHRUB_DRY,
    TREE_WET,
    TREE_DRY,
    SOIL,
    BURNT,
    WATER_SPEC,
)

# Fields: Voronoi parcels around seeds jittered on a planar grid, shrunk by a margin
# (tracks and fire breaks).
FIELD_KM = 0.5
FIELD_JITTER = 0.7
FIELD_MARGIN_KM = 0.04
# Scattered large trees: at most one per cell of this planar grid.
TREE_KM = 0.05
POND_DEG = 0.03
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON = 111.320
#: Encroaching shrub cover at and above which a pixel counts as encroached.
ENCROACHED_COVER = 0.30
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


CellValues = Callable[[NDArray[np.int64], NDArray[np.int64]], tuple[F64, ...]]


class _Cells:
    """Per-cell quantities of the lattice cells around every pixel, each computed once.

    ``fn(i, j)`` gives quantities of cells ``(i, j)`` (a pure function of the integers);
    :meth:`at` gives them for cell ``(gi + di, gj + dj)`` of every pixel. Where the block's
    cells (padded by ``pad``) are no more than its pixels, ``fn`` runs once over them and the
    pixels gather from that table; otherwise it runs per pixel. Both give the same bits:
    ``fn`` is element-wise.
    """

    def __init__(self, gi: NDArray[np.int64], gj: NDArray[np.int64], fn: CellValues, pad: int):
        gi, gj = np.broadcast_arrays(gi, gj)
        self.gi, self.gj, self.fn = gi, gj, fn
        self.table: tuple[F64, ...] | None = None
        if gi.size == 0:
            return
        i0, j0 = int(gi.min()) - pad, int(gj.min()) - pad
        ni, nj = int(gi.max()) + pad + 1 - i0, int(gj.max()) + pad + 1 - j0
        if ni * nj > gi.size:
            return
        cj, ci = np.divmod(np.arange(ni * nj, dtype=np.int64), ni)
        self.table = fn(ci + i0, cj + j0)
        self.index: NDArray[np.int64] = (gj - j0) * ni + (gi - i0)
        self.stride = ni

    def at(self, di: NDArray[np.int64] | int, dj: NDArray[np.int64] | int) -> tuple[F64, ...]:
        """The quantities of cell ``(gi + di, gj + dj)`` of every pixel."""
        if self.table is None:
            return self.fn(self.gi + di, self.gj + dj)
        at = np.asarray(self.index + (np.asarray(dj) * self.stride + di), dtype=np.int64)
        return tuple(np.take(values, at) for values in self.table)


def _lattice_values(i: NDArray[np.int64], j: NDArray[np.int64], *, seed: int) -> tuple[F64]:
    return (hash_u01(i, j, seed=seed),)


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
        lattice = _Cells(i, j, partial(_lattice_values, seed=s), pad=1)
        (v00,), (v10,) = lattice.at(0, 0), lattice.at(1, 0)
        (v01,), (v11,) = lattice.at(0, 1), lattice.at(1, 1)
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


def _wet(day_of_season: float, season: int, onset: float, offset: float, width: float) -> float:
    """Leafy part of the season: 0 before ``onset`` and after ``offset``, 1 between."""
    shift = rain_shift(season)
    return float(_logistic((day_of_season - onset - shift) / width)) - float(
        _logistic((day_of_season - offset - shift) / (2.5 * width))
    )


def grass_greenness(day_of_season: float, season: int) -> float:
    """Green fraction of savanna grass (before local grazing and soil variation)."""
    wet = float(_logistic((day_of_season - GRASS_ONSET - rain_shift(season)) / 9.0)) - float(
        _logistic((day_of_season - GRASS_OFFSET - rain_shift(season)) / 12.0)
    )
    return 0.12 + min(0.8, 0.62 * rainfall(season)) * wet


@dataclass(frozen=True)
class WoodyPhenology:
    """Leaf cycle of a woody species: ``base + amplitude × wet(day)``.

    Attributes:
        name: What the species stands for.
        base: Green fraction of the leafless (or dry-season) canopy.
        amplitude: Added green fraction in full leaf.
        onset: Day of season of half green-up (before the rain shift).
        offset: Day of season of half leaf fall.
        width: Days of the green-up's logistic (leaf fall takes 2.5 times longer).
    """

    name: str
    base: float
    amplitude: float
    onset: float
    offset: float
    width: float

    def greenness(self, day_of_season: float, season: int) -> float:
        """Green fraction of the canopy on a day of a season."""
        wet = _wet(day_of_season, season, self.onset, self.offset, self.width)
        return self.base + self.amplitude * wet


#: Encroaching shrub species, mixed per pixel by :attr:`Landscape.species`.
SHRUB_SPECIES = (
    # Black thorn (Acacia mellifera): deciduous, flushes a month before the rains.
    WoodyPhenology("early deciduous", 0.12, 0.83, SHRUB_ONSET, SHRUB_OFFSET, 10.0),
    # Sickle bush (Dichrostachys cinerea): greens up with the rains, holds its leaves long.
    WoodyPhenology("late deciduous", 0.18, 0.72, GRASS_ONSET + 5.0, 350.0, 9.0),
    # Evergreen shrubs (Catophractes, Rhus): a shallow cycle around a green canopy.
    WoodyPhenology("evergreen", 0.48, 0.32, 130.0, 320.0, 14.0),
)
#: Scattered large trees (Acacia erioloba, Combretum): semi-deciduous, late leaf fall.
TREE_PHENOLOGY = WoodyPhenology("large trees", 0.40, 0.50, 105.0, 355.0, 12.0)
#: Riparian woodland on groundwater along drainage lines: evergreen.
RIPARIAN_PHENOLOGY = WoodyPhenology("riparian woodland", 0.68, 0.27, 120.0, 340.0, 15.0)


def shrub_greenness(day_of_season: float, season: int) -> float:
    """Green fraction of the early-deciduous encroaching shrubs (the first species)."""
    return SHRUB_SPECIES[0].greenness(day_of_season, season)


#: Days from sowing to half green-up and to half senescence (without a dry spell).
CROP_START, CROP_END = 40.0, 125.0
#: Crop stages a dry spell can hit, as (days after sowing, spread in days): canopy growth,
#: flowering (about sowing + 60..85) and grain filling.
VEGETATIVE, FLOWERING, FILLING = (35.0, 12.0), (72.0, 9.0), (100.0, 12.0)
#: Share of the peak greenness taken by a full dry spell during canopy growth.
VEGETATIVE_LOSS = 0.35
#: Share of the greenness a full dry spell takes while it lasts (leaves roll and grey).
WILT_LOSS = 0.30
#: Days by which a full dry spell in grain filling (half that at flowering) ends the season.
SENESCENCE_DAYS = 40.0


@dataclass(frozen=True)
class DrySpell:
    """The mid-season dry spell of a season.

    Attributes:
        day: Its middle, in days since the season's start (28 December .. 8 March).
        length: Its length in days (10..28); it acts as a Gaussian pulse of width
            ``length / 2`` around ``day``.
        severity: Its regional severity, 0 (the rains carried on) .. 1 (no rain at all).
            Fields feel it as :func:`spell_severity`.
    """

    day: float
    length: float
    severity: float

    def pulse(self, day_of_season: float | F64) -> F64:
        """How much of the spell is on a day, 0..1 (1 in its middle)."""
        return np.asarray(np.exp(-0.5 * ((day_of_season - self.day) / (self.length / 2.0)) ** 2))


def dry_spell(season: int) -> DrySpell:
    """The dry spell of a season (every season has one, some of them mild)."""
    return DrySpell(
        day=180.0 + 70.0 * float(hash_u01(season, seed=SEED + 14)),
        length=10.0 + 18.0 * float(hash_u01(season, seed=SEED + 15)),
        severity=float(hash_u01(season, seed=SEED + 16)) ** 1.2,
    )


def spell_severity(x_km: F64, y_km: F64, season: int) -> F64:
    """Severity of the season's dry spell at planar positions (km), patchy at about 8 km.

    Showers are local: the same spell is 0.35..1 times its regional severity a few
    kilometres away, in a pattern that changes every season.
    """
    local = value_noise(x_km, y_km, scale_km=8.0, seed=SEED + 110_000 + season)
    return np.asarray(dry_spell(season).severity * (0.35 + 0.65 * local))


def stage_exposure(spell: DrySpell, sowing: F64, stage: tuple[float, float]) -> F64:
    """Share (0..1) of a crop stage spent in the dry spell, for fields sown on ``sowing``.

    The stage is a Gaussian weight of its spread around ``sowing + centre``; the exposure
    is the stage-weighted mean of :meth:`DrySpell.pulse`, in closed form: smooth in the
    sowing date, nearer 1 for longer spells.
    """
    centre, spread = stage
    width = spell.length / 2.0
    var = spread**2 + width**2
    lag = spell.day - np.asarray(sowing) - centre
    return np.asarray(width / np.sqrt(var) * np.exp(-0.5 * lag**2 / var))


@dataclass(frozen=True)
class CropCycle:
    """Phenology of fields in one season, in days since the season's start (arrays per field).

    Attributes:
        sowing: Day of sowing.
        start: Day the green-up passes half its height.
        end: Day senescence falls through half height (earlier after a dry spell).
        peak_greenness: Height of the green plateau (green fraction, before the
            within-field vigour).
        spell: The season's dry spell.
        wilting: Severity of the spell at each field (:func:`spell_severity`): the share
            of ``WILT_LOSS`` its greenness loses in the middle of the spell.
        flowering_stress: Dry-spell stress at flowering (0..1, see :func:`crop_cycle`).
        filling_stress: Dry-spell stress during grain filling (0..1).
    """

    sowing: F64
    start: F64
    end: F64
    peak_greenness: F64
    spell: DrySpell
    wilting: F64
    flowering_stress: F64
    filling_stress: F64

    @cached_property
    def peak(self) -> F64:
        """Day of the highest greenness of each field (to a quarter day)."""
        if self.sowing.size == 0:
            return np.zeros(self.sowing.shape)
        days = np.arange(np.floor(self.start.min()), np.ceil(self.end.max()), 0.25)[:, None]
        return np.asarray(days[np.argmax(crop_greenness(days, self), axis=0), 0])


def crop_cycle(ci: NDArray[np.int64], cj: NDArray[np.int64], season: int) -> CropCycle:
    """Vectorised crop calendar of fields ``(ci, cj)`` in ``season``.

    Sowing falls between 13 November and 23 December; green-up reaches half its height 40
    days later, and senescence falls through half height 125 days after sowing, the green
    plateau peaking in between (about 80 days after sowing). The peak greenness grows with
    the season's rainfall and the field's potential.

    The season's dry spell (:func:`dry_spell`, felt as :func:`spell_severity` times the
    :func:`stage_exposure` of each stage) shows in the greenness: the crop wilts while it
    lasts (see :func:`crop_greenness`); during canopy growth it lowers the peak greenness
    (by up to ``VEGETATIVE_LOSS``); during grain filling, and half as much at flowering, it
    brings senescence forward (by up to ``SENESCENCE_DAYS``). Its cost in grain (see
    :func:`field_yield`) is highest at flowering, where the canopy shows only the wilting.
    """
    sowing = np.asarray(135.0 + 40.0 * hash_u01(ci, cj, season, seed=SEED + 8))
    spell = dry_spell(season)
    severity = spell_severity(*field_seed(ci, cj), season)
    vegetative, flowering, filling = (
        severity * stage_exposure(spell, sowing, stage)
        for stage in (VEGETATIVE, FLOWERING, FILLING)
    )
    green = np.clip(0.25 + 0.55 * rainfall(season) * field_potential(ci, cj), 0.3, 0.98)
    return CropCycle(
        sowing=sowing,
        start=sowing + CROP_START,
        end=sowing + CROP_END - SENESCENCE_DAYS * (filling + 0.5 * flowering),
        peak_greenness=np.asarray(green * (1.0 - VEGETATIVE_LOSS * vegetative)),
        spell=spell,
        wilting=severity,
        flowering_stress=np.asarray(flowering),
        filling_stress=np.asarray(filling),
    )


def crop_greenness(day_of_season: float | F64, cycle: CropCycle) -> F64:
    """Green fraction of crop fields on a day (0 = bare soil before sowing/after harvest).

    Days broadcast against the fields (a column of days gives one row per day).
    """
    rise = _logistic((day_of_season - cycle.start) / 7.0)
    fall = _logistic((day_of_season - cycle.end) / 8.0)
    wilt = 1.0 - WILT_LOSS * cycle.wilting * cycle.spell.pulse(day_of_season)
    return np.asarray(np.clip(rise - fall, 0.0, 1.0) * cycle.peak_greenness * wilt)


def field_potential(ci: NDArray[np.int64], cj: NDArray[np.int64]) -> F64:
    """Soil potential of a field, 0.75..1.25 (it shows in the crop's greenness)."""
    return 0.75 + 0.5 * hash_u01(ci, cj, seed=SEED + 9)


#: Range of :func:`field_patchiness`.
PATCHINESS = (0.10, 0.55)


def field_patchiness(ci: NDArray[np.int64], cj: NDArray[np.int64]) -> F64:
    """Amplitude of the within-field vigour of fields (``Landscape.crop_vigour``).

    Uneven emergence, waterlogged or compacted patches: the same mean greenness can come
    from an even stand or from a patchwork of strong and weak patches.
    """
    low, high = PATCHINESS
    return np.asarray(low + (high - low) * hash_u01(ci, cj, seed=SEED + 17))


def rain_onset(season: int) -> float:
    """Day of season (since 1 July) on which the season's rains set in."""
    return GRASS_ONSET + rain_shift(season)


#: Best sowing: this many days after the rains set in (the soil wet to depth).
SOWING_LAG = 7.0
#: Spread (days) of the sowing optimum: 30 days off it costs 40 % of the grain.
SOWING_TOLERANCE = 30.0
#: Share of the grain lost to a full dry spell at flowering, and in grain filling.
FLOWERING_LOSS, FILLING_LOSS = 0.70, 0.35
#: Share of the grain lost by the patchiest field (the top of ``PATCHINESS``).
PATCH_LOSS = 0.15
#: Yield trend of better seed and practice: +0.8 % a season from 2015.
TREND_PER_YEAR, TREND_YEAR = 0.008, 2015
#: Log-normal spreads of what space does not see: a field's management (the same every
#: season) and pests, hail and harvest losses (new every season).
MANAGEMENT_SD, SEASON_SD = 0.08, 0.10


def _normal(u: F64) -> F64:
    """Standard normal quantiles of uniform numbers, cut at ±3 (no freak yields)."""
    return np.asarray(np.clip(ndtri(np.clip(u, 1e-6, 1 - 1e-6)), -3.0, 3.0))


def sowing_factor(sowing: F64, season: int) -> F64:
    """Share of the grain a sowing date keeps: best ``SOWING_LAG`` days after the onset.

    Sown into dry soil before the rains, the stand is thin and uneven; sown late, the crop
    flowers in the hot end of the rains and fills its grain as they stop.
    """
    off = (np.asarray(sowing) - rain_onset(season) - SOWING_LAG) / SOWING_TOLERANCE
    return np.asarray(np.exp(-0.5 * off**2))


def field_yield(ci: NDArray[np.int64], cj: NDArray[np.int64], season: int) -> F64:
    """Maize grain yield (t/ha) of fields in a season, at least 0.2.

    ``(0.4 + 6.5 peak^1.5) × sowing × spell × patches × trend × management × luck``:

    * ``peak``: the season's peak greenness (rainfall, soil, a dry spell in canopy growth);
    * ``sowing``: :func:`sowing_factor`;
    * ``spell``: ``(1 - FLOWERING_LOSS flowering_stress) (1 - FILLING_LOSS filling_stress)``
      (see :func:`crop_cycle`); the spell's timing against the field's sowing decides;
    * ``patches``: ``1 - PATCH_LOSS (patchiness / max patchiness)²``: grain is concave in
      vigour, so an uneven stand yields less than its mean greenness suggests;
    * ``trend``: ``1 + TREND_PER_YEAR (season - TREND_YEAR)``;
    * ``management`` and ``luck``: log-normal (``MANAGEMENT_SD`` per field, ``SEASON_SD``
      per field and season).

    Peak greenness alone explains a little under half of the variance; the timing of the
    season (sowing, the spell, an early senescence) is in the greenness series, the rest
    is not.
    """
    cycle = crop_cycle(ci, cj, season)
    base = 0.4 + 6.5 * cycle.peak_greenness**1.5
    spell = (1.0 - FLOWERING_LOSS * cycle.flowering_stress) * (
        1.0 - FILLING_LOSS * cycle.filling_stress
    )
    patches = 1.0 - PATCH_LOSS * (field_patchiness(ci, cj) / PATCHINESS[1]) ** 2
    trend = 1.0 + TREND_PER_YEAR * (season - TREND_YEAR)
    unseen = np.exp(
        MANAGEMENT_SD * _normal(hash_u01(ci, cj, seed=SEED + 18))
        + SEASON_SD * _normal(hash_u01(ci, cj, season, seed=SEED + 13))
    )
    grain = base * sowing_factor(cycle.sowing, season) * spell * patches * trend * unseen
    return np.asarray(np.maximum(0.2, grain))


# --- static landscape -----------------------------------------------------------------


def field_seed(ci: NDArray[np.int64], cj: NDArray[np.int64]) -> tuple[F64, F64]:
    """Planar position (km) of the seed of field parcel ``(ci, cj)``.

    Seeds lie in the central ``FIELD_JITTER`` of their ``FIELD_KM`` grid cell; each parcel
    is the Voronoi cell of its seed, so parcels vary in size, shape and orientation.
    """
    lo = 0.5 * (1.0 - FIELD_JITTER)
    sx = (ci + lo + FIELD_JITTER * hash_u01(ci, cj, seed=SEED + 40)) * FIELD_KM
    sy = (cj + lo + FIELD_JITTER * hash_u01(ci, cj, seed=SEED + 41)) * FIELD_KM
    return np.asarray(sx), np.asarray(sy)


def is_field_cell(ci: NDArray[np.int64], cj: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Whether parcel ``(ci, cj)`` holds a crop field.

    Fields cluster in farming areas (smooth noise at the parcel's seed) and 85 % of the
    parcels there are cultivated.
    """
    x, y = field_seed(ci, cj)
    farm = value_noise(x, y, scale_km=7.0, seed=SEED + 1, octaves=2) > 0.55
    return np.asarray(farm & (hash_u01(ci, cj, seed=SEED + 2) < 0.85))


#: Offsets to the parcels whose seeds can be nearest to a point (or bound its parcel).
_NEIGHBOURS = tuple((di, dj) for dj in range(-2, 3) for di in range(-2, 3))
_NEIGHBOUR_DI = np.array([di for di, _ in _NEIGHBOURS], dtype=np.int64)
_NEIGHBOUR_DJ = np.array([dj for _, dj in _NEIGHBOURS], dtype=np.int64)


def parcels(x: F64, y: F64) -> tuple[NDArray[np.int64], NDArray[np.int64], F64]:
    """Parcel of every point (planar km) and its distance inside the parcel's edge.

    Returns:
        ``(ci, cj, inset)``: the parcel (nearest seed) and the distance (km) from the point
        to the nearest edge of its Voronoi cell, i.e. the nearest bisector with a
        neighbouring seed.
    """
    gi = np.floor(x / FIELD_KM).astype(np.int64)
    gj = np.floor(y / FIELD_KM).astype(np.int64)
    seeds = _Cells(gi, gj, field_seed, pad=2)
    best = np.full(x.shape, np.inf)
    nearest = np.zeros(x.shape, dtype=np.intp)
    for k, (di, dj) in enumerate(_NEIGHBOURS):
        sx, sy = seeds.at(di, dj)
        d2 = (x - sx) ** 2 + (y - sy) ** 2
        closer = d2 < best
        best = np.where(closer, d2, best)
        nearest[closer] = k
    di_best, dj_best = _NEIGHBOUR_DI[nearest], _NEIGHBOUR_DJ[nearest]
    ci, cj = gi + di_best, gj + dj_best
    bx, by = seeds.at(di_best, dj_best)
    inset = np.full(x.shape, np.inf)
    for di, dj in _NEIGHBOURS:
        sx, sy = seeds.at(di, dj)
        gap = 2.0 * np.hypot(sx - bx, sy - by)
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = ((x - sx) ** 2 + (y - sy) ** 2 - best) / gap
        inset = np.minimum(inset, np.where(gap > 0, dist, np.inf))
    return ci, cj, inset


def parcel_polygon(ci: int, cj: int, *, margin_km: float = FIELD_MARGIN_KM) -> F64:
    """Vertices (planar km, ``(n, 2)``) of parcel ``(ci, cj)`` shrunk by ``margin_km``.

    The points whose :func:`parcels` are ``(ci, cj)`` with an inset of at least
    ``margin_km``: the seed's Voronoi cell, each bisector moved inwards by the margin.
    """
    one = np.asarray([ci], dtype=np.int64), np.asarray([cj], dtype=np.int64)
    sx, sy = (float(v[0]) for v in field_seed(*one))
    half = 3.0 * FIELD_KM
    poly = np.array(
        [
            [sx - half, sy - half],
            [sx + half, sy - half],
            [sx + half, sy + half],
            [sx - half, sy + half],
        ]
    )
    for di, dj in _NEIGHBOURS:
        if di == 0 and dj == 0:
            continue
        nb = np.asarray([ci + di]), np.asarray([cj + dj])
        ox, oy = (float(v[0]) for v in field_seed(*nb))
        # Keep p with |p - o|² - |p - s|² >= 2 margin |o - s|, i.e.
        # p·(s - o) >= margin |o - s| + (|s|² - |o|²) / 2.
        normal = np.array([sx - ox, sy - oy])
        level = margin_km * float(np.hypot(*normal)) + 0.5 * (sx**2 + sy**2 - ox**2 - oy**2)
        poly = _clip_half_plane(poly, normal, level)
        if len(poly) == 0:
            break
    return poly


def _clip_half_plane(poly: F64, normal: F64, level: float) -> F64:
    """Sutherland–Hodgman: the part of a convex polygon where ``p · normal >= level``."""
    out: list[F64] = []
    side = poly @ normal - level
    n = len(poly)
    for k in range(n):
        p, q = poly[k], poly[(k + 1) % n]
        sp, sq = side[k], side[(k + 1) % n]
        if sp >= 0:
            out.append(p)
        if (sp >= 0) != (sq >= 0):
            out.append(p + (q - p) * (sp / (sp - sq)))
    return np.asarray(out).reshape(-1, 2)


def _scattered_trees(x: F64, y: F64) -> F64:
    """Canopy fraction of scattered large trees.

    Crowns of 5–12 m radius, at most one per ``TREE_KM`` cell, denser where a smooth noise
    says so.
    """
    gi = np.floor(x / TREE_KM).astype(np.int64)
    gj = np.floor(y / TREE_KM).astype(np.int64)
    crowns = _Cells(gi, gj, _tree_crown, pad=1)
    cover = np.zeros(x.shape)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            tx, ty, radius = crowns.at(di, dj)
            dist = np.hypot(x - tx, y - ty)
            # Share of a 10 m pixel under the crown, ramping over one pixel at its rim.
            cover = np.maximum(
                cover, np.clip((radius - dist) / 0.010 + 0.5, 0.0, 1.0) * (radius > 0)
            )
    return np.asarray(cover)


def _tree_crown(i: NDArray[np.int64], j: NDArray[np.int64]) -> tuple[F64, F64, F64]:
    """Centre (planar km) and crown radius (km, 0 for no tree) of the tree of cell ``(i, j)``."""
    tx = (i + 0.25 + 0.5 * hash_u01(i, j, seed=SEED + 60)) * TREE_KM
    ty = (j + 0.25 + 0.5 * hash_u01(i, j, seed=SEED + 61)) * TREE_KM
    u = hash_u01(i, j, seed=SEED + 62)
    density = value_noise(tx, ty, scale_km=3.0, seed=SEED + 63)
    radius = np.where(u < 0.9 * np.clip(density - 0.3, 0.0, 0.6), 0.005 + 0.007 * u / 0.54, 0.0)
    return np.asarray(tx), np.asarray(ty), np.asarray(radius)


@dataclass(frozen=True)
class Landscape:
    """Static properties of a block of pixels.

    Cover fractions of a pixel add up to one: ``shrub + trees + riparian`` woody canopy
    and, between the canopies, ``herb`` grass and bare soil (``1 - herb``). Crop and water
    pixels are whole.

    Attributes:
        cover: Dominant cover class per pixel (see ``CLASS_NAMES``).
        ci: Field parcel column per pixel (the parcel of the nearest seed, field or not).
        cj: Field parcel row per pixel.
        texture: Multiplicative brightness texture around 1.
        grazing: Grazing pressure, 0 (rested) .. 1 (trampled, around watering points).
        x_km: Planar x of each pixel (for clouds).
        y_km: Planar y of each pixel.
        shrub: Encroaching shrub canopy fraction, 0..1.
        trees: Canopy fraction of scattered large trees.
        riparian: Canopy fraction of riparian woodland along drainage lines.
        herb: Grass share of the ground between the canopies (the rest is bare soil).
        vigour: Multiplier of grass greenness (grazing and soil), about 0.6..1.25.
        soil: Soil brightness, multiplier of the ``SOIL`` spectrum, about 0.6..1.25.
        species: Shares of the ``SHRUB_SPECIES`` in the shrub canopy, ``(3, y, x)``.
        crop_vigour: Within-field multiplier of crop greenness (1 outside fields).
        burn: Two smooth noises mixed per season into that season's burn scars, ``(2, y, x)``.
        burn_day: Smooth noise in [0, 1] setting the day each scar burns.
        fields: Parcels ``(ci, cj)`` of the block's crop fields, ``(2, n)``.
        field_index: Column of ``fields`` of every pixel, -1 outside fields.
    """

    cover: NDArray[np.uint8]
    ci: NDArray[np.int64]
    cj: NDArray[np.int64]
    texture: F64
    grazing: F64
    x_km: F64
    y_km: F64
    shrub: F64
    trees: F64
    riparian: F64
    herb: F64
    vigour: F64
    soil: F64
    species: F64
    crop_vigour: F64
    burn: F64
    burn_day: F64
    fields: NDArray[np.int64]
    field_index: NDArray[np.int64]

    @property
    def encroached(self) -> NDArray[np.bool_]:
        """Encroaching shrub cover of at least ``ENCROACHED_COVER``."""
        return np.asarray(self.shrub >= ENCROACHED_COVER)


def landscape(lon: F64, lat: F64) -> Landscape:
    """Static landscape at pixel centres given in lon/lat (2-D arrays)."""
    x, y = planar_km(lon, lat)
    ci, cj, inset = parcels(x, y)
    in_field = is_field_cell(ci, cj) & (inset >= FIELD_MARGIN_KM)
    pond = _in_pond(lon, lat, x, y)

    # Soils: bright Kalahari sand to darker calcareous loam.
    soil = 0.6 + 0.65 * value_noise(x, y, scale_km=4.0, seed=SEED + 70, octaves=2)
    # Grazing pressure: paddocks of varying stocking, heaviest around the watering points.
    water_pull = _near_pond(lon, lat, x, y)
    grazing = np.clip(
        value_noise(x, y, scale_km=2.5, seed=SEED + 3, octaves=2) + 0.5 * water_pull - 0.1, 0, 1
    )

    # Riparian woodland along drainage lines (a contour of a smooth noise), where the
    # drainage carries water long enough.
    drain = value_noise(x, y, scale_km=3.0, seed=SEED + 50, octaves=2)
    flows = np.clip((value_noise(x, y, scale_km=6.0, seed=SEED + 51) - 0.35) / 0.1, 0.0, 1.0)
    riparian = 0.9 * flows * np.clip(1.4 * (1.0 - np.abs(drain - 0.5) / 0.022), 0.0, 1.0)
    trees = _scattered_trees(x, y) * (1.0 - riparian)

    # Encroaching shrubs: fronts of a regional intensity, patchy at a few hundred metres,
    # thicker under heavy grazing, thinning out along the drainage lines.
    front = _logistic((value_noise(x, y, scale_km=8.0, seed=SEED + 6, octaves=2) - 0.5) / 0.06)
    patch = value_noise(x, y, scale_km=1.2, seed=SEED + 5, octaves=3)
    fine = value_noise(x, y, scale_km=0.12, seed=SEED + 8)
    raw = front * (0.15 + 0.45 * grazing) + 1.6 * (patch - 0.5) + 0.25 * (fine - 0.5)
    shrub = np.clip(raw, 0.0, 0.95) * (1.0 - riparian - trees)

    bare_patch = np.clip(
        (value_noise(x, y, scale_km=0.6, seed=SEED + 4, octaves=2) - 0.72) / 0.06, 0, 1
    )
    herb = np.clip(0.95 - 0.45 * grazing, 0.0, 1.0) * (1.0 - 0.85 * bare_patch)
    vigour = 1.25 - 0.45 * grazing - 0.25 * (soil - 0.6)

    # Shrub species: soft shares of three smooth noises.
    raw_species = np.stack(
        [value_noise(x, y, scale_km=3.5, seed=SEED + 80 + k, octaves=2) for k in range(3)]
    )
    weights = np.exp((raw_species - raw_species.max(axis=0)) / 0.06)
    species = weights / weights.sum(axis=0)

    # Within-field vigour around 0.97, each field as patchy as its field_patchiness.
    vigour_noise = value_noise(x, y, scale_km=0.15, seed=SEED + 90, octaves=2) - 0.5
    crop_vigour = np.where(in_field, 0.97 + field_patchiness(ci, cj) * vigour_noise, 1.0)
    burn = np.stack(
        [value_noise(x, y, scale_km=1.5, seed=SEED + 100 + k, octaves=2) for k in range(2)]
    )
    burn_day = value_noise(x, y, scale_km=5.0, seed=SEED + 102)

    between = 1.0 - shrub - trees - riparian
    shares = np.stack([between * herb, shrub, between * (1.0 - herb), trees, riparian])
    classes = np.array([GRASS, SHRUB, BARE, TREES, RIPARIAN], dtype=np.uint8)
    cover = classes[np.argmax(shares, axis=0)]
    cover[pond] = WATER
    cover[in_field] = CROP
    whole = in_field | pond
    for part in (shrub, trees, riparian):
        part[whole] = 0.0

    texture = 1.0 + 0.10 * (value_noise(x, y, scale_km=0.15, seed=SEED + 7) - 0.5)
    fields, inverse = _unique_cells(ci[in_field], cj[in_field])
    field_index = np.full(x.shape, -1, dtype=np.int64)
    field_index[in_field] = inverse
    f32 = np.float32
    return Landscape(
        cover=cover,
        ci=ci,
        cj=cj,
        texture=texture.astype(f32),
        grazing=grazing.astype(f32),
        x_km=x,
        y_km=y,
        shrub=shrub.astype(f32),
        trees=trees.astype(f32),
        riparian=riparian.astype(f32),
        herb=np.where(whole, 0.0, herb).astype(f32),
        vigour=vigour.astype(f32),
        soil=soil.astype(f32),
        species=species.astype(f32),
        crop_vigour=crop_vigour.astype(f32),
        burn=burn.astype(f32),
        burn_day=burn_day.astype(f32),
        fields=fields.astype(np.int64),
        field_index=field_index,
    )


def _unique_cells(
    ci: NDArray[np.int64], cj: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Distinct cells ``(2, n)`` sorted by ``ci`` then ``cj``, and each input's column.

    What ``np.unique(np.stack([ci, cj]), axis=1, return_inverse=True)`` gives, from one
    sort of integer keys instead of a sort of rows.
    """
    if ci.size == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)
    i0, j0 = int(ci.min()), int(cj.min())
    nj = int(cj.max()) - j0 + 1
    keys, inverse = np.unique((ci - i0) * nj + (cj - j0), return_inverse=True)
    return np.stack([keys // nj + i0, keys % nj + j0]), inverse.ravel()


def _pond_centres(lon: F64, lat: F64) -> tuple[NDArray[np.bool_], F64, F64, F64]:
    pi = np.floor(lon / POND_DEG).astype(np.int64)
    pj = np.floor(lat / POND_DEG).astype(np.int64)
    has = hash_u01(pi, pj, seed=SEED + 20) < 0.35
    clon = (pi + 0.2 + 0.6 * hash_u01(pi, pj, seed=SEED + 21)) * POND_DEG
    clat = (pj + 0.2 + 0.6 * hash_u01(pi, pj, seed=SEED + 22)) * POND_DEG
    radius = 0.06 + 0.12 * hash_u01(pi, pj, seed=SEED + 23)
    cx, cy = planar_km(clon, clat)
    return has, cx, cy, radius


def _in_pond(lon: F64, lat: F64, x: F64, y: F64) -> NDArray[np.bool_]:
    """Small round ponds, at most one per 0.03° cell, kept clear of the cell edges."""
    has, cx, cy, radius = _pond_centres(lon, lat)
    return np.asarray(has & ((x - cx) ** 2 + (y - cy) ** 2 < radius**2))


def _near_pond(lon: F64, lat: F64, x: F64, y: F64) -> F64:
    """Piosphere around the pond of a pixel's 0.03° cell: 1 at the shore, 0 beyond 1.2 km."""
    has, cx, cy, radius = _pond_centres(lon, lat)
    dist = np.hypot(x - cx, y - cy) - radius
    return np.asarray(np.where(has, np.clip(1.0 - dist / 1.2, 0.0, 1.0), 0.0))


# --- one acquisition ------------------------------------------------------------------


def _spec(values: tuple[float, ...]) -> F64:
    return np.asarray(values, dtype=np.float64)[:, None, None]


#: Days over which a burn scar's char fades (e-folding), and the burnt share of the scars.
BURN_FADE_DAYS = 30.0
BURN_FIRST, BURN_LAST = 40.0, 125.0


def burn_scar(land: Landscape, day: date, *, southern: bool = True) -> F64:
    """Char cover of the grass layer on ``day``: 1 on the day a scar burns, then fading.

    Each season burns other patches (the two noises of ``land.burn`` mixed at an angle
    drawn for the season), each on a day between ``BURN_FIRST`` and ``BURN_LAST`` of the
    dry season (set by ``land.burn_day``); rested, grassy ground burns more readily.
    """
    season, dos = season_of(day, southern=southern)
    if dos < BURN_FIRST or dos > BURN_LAST + 8 * BURN_FADE_DAYS:
        return np.zeros(land.cover.shape, dtype=np.float32)
    angle = 2.0 * np.pi * float(hash_u01(season, seed=SEED + 103))
    mixed = 0.5 + (land.burn[0] - 0.5) * np.cos(angle) + (land.burn[1] - 0.5) * np.sin(angle)
    fuel = land.herb * (1.2 - 0.6 * land.grazing)
    burnt = (mixed > 0.67) & (fuel > 0.45)
    shift = float(hash_u01(season, seed=SEED + 104))
    when = BURN_FIRST + (BURN_LAST - BURN_FIRST) * np.mod(land.burn_day + shift, 1.0)
    since = dos - when
    char = np.where(burnt & (since >= 0), np.exp(-np.maximum(since, 0) / BURN_FADE_DAYS), 0.0)
    return np.asarray(char, dtype=np.float32)


def mixing_coefficients(land: Landscape, day: date, *, southern: bool = True) -> F64:
    """Share of each of ``END_MEMBERS`` in every pixel on ``day``, shape ``(10, y, x)``.

    Each cover's fraction is split between its green and its dry end member by that
    cover's greenness on the day; the soil share is scaled by the soil's brightness;
    burnt grass turns to char, scorched shrubs lose part of their green.
    """
    season, dos = season_of(day, southern=southern)
    f32 = np.float32
    char = burn_scar(land, day, southern=southern)
    g_grass = np.clip(grass_greenness(dos, season) * land.vigour, 0.0, 1.0)
    g_shrub = sum(
        land.species[k] * f32(sp.greenness(dos, season)) for k, sp in enumerate(SHRUB_SPECIES)
    )
    g_shrub = np.asarray(g_shrub) * (1.0 - 0.5 * char)
    g_tree = f32(TREE_PHENOLOGY.greenness(dos, season))
    g_rip = f32(RIPARIAN_PHENOLOGY.greenness(dos, season))

    crop = land.cover == CROP
    water = land.cover == WATER
    between = 1.0 - land.shrub - land.trees - land.riparian
    grass = between * land.herb
    coef = np.zeros((len(END_MEMBERS), *land.cover.shape), dtype=f32)
    coef[1] = grass * (1.0 - char) * g_grass
    coef[2] = grass * (1.0 - char) * (1.0 - g_grass)
    coef[3] = land.shrub * g_shrub
    coef[4] = land.shrub * (1.0 - g_shrub)
    coef[5] = land.trees * g_tree + land.riparian * g_rip
    coef[6] = land.trees * (1.0 - g_tree) + land.riparian * (1.0 - g_rip)
    coef[7] = between * (1.0 - land.herb) * land.soil
    coef[8] = grass * char
    if crop.any():
        per_field = crop_greenness(dos, crop_cycle(land.fields[0], land.fields[1], season))
        g_crop = np.clip(per_field[land.field_index[crop]] * land.crop_vigour[crop], 0.0, 1.0)
        coef[0][crop] = g_crop
        coef[7][crop] = (1.0 - g_crop) * land.soil[crop]
    coef[9][water] = 1.0
    return coef


def ground_reflectance(land: Landscape, day: date, *, southern: bool = True) -> F64:
    """Cloud-free surface reflectance, shape ``(10, y, x)``.

    The linear mixture ``END_MEMBERS @ mixing_coefficients`` times the brightness texture
    (water is flat: no texture).

    The mixture is summed member by member in a fixed order, not with a matrix product:
    BLAS kernels block, vectorise and fuse a product differently for every matrix shape, so
    a pixel's reflectance would change in its last bit with the size of the block it is
    rendered in (and flip a rounding or a threshold further on).
    """
    coef = mixing_coefficients(land, day, southern=southern)
    members = np.asarray(END_MEMBERS, dtype=np.float32)[:, :, None, None]  # (member, band)
    refl = members[0] * coef[0]
    for spectrum, share in zip(members[1:], coef[1:], strict=True):
        refl += spectrum * share
    texture = np.where(land.cover == WATER, np.float32(1.0), land.texture)
    return np.asarray(refl * texture[None], dtype=np.float64)


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
