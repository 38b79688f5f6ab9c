"""Area and accuracy of a class map from a stratified reference sample: pure numpy, no I/O.

The estimator is the general one of Stehman (2014), which stays unbiased (ratios: consistent)
when the strata are *not* the map's classes (a stratification by an older map, by zones, by
a buffer around change). When the strata are the map classes it gives exactly the closed
forms of Olofsson et al. (2014), eqs. 4–11, apart from the finite-population correction.

References:
    Stehman, S. V. (2014). Estimating area and map accuracy for stratified random sampling
    when the strata are different from the map classes. International Journal of Remote
    Sensing 35(13), 4923–4939. doi:10.1080/01431161.2014.930207

    Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A.
    (2014). Good practices for estimating area and assessing accuracy of land change.
    Remote Sensing of Environment 148, 42–57. doi:10.1016/j.rse.2014.02.015

Every figure is a population total of an indicator ``y_u`` of the sample units, or a ratio
of two such totals. With ``N_h`` pixels and ``n_h`` sample units in stratum ``h``, ``ȳ_h``
and ``s²_yh`` the sample mean and variance (``ddof=1``) of ``y`` in the stratum:

* total: ``T̂_y = Σ_h N_h ȳ_h``, with ``V̂(T̂_y) = Σ_h N_h² (1 − n_h/N_h) s²_yh / n_h``
  (Stehman eqs. 3 and 25, times ``N²``);
* ratio: ``R̂ = T̂_y / T̂_x``, with the linearised (Taylor) variance
  ``V̂(R̂) = Σ_h N_h² (1 − n_h/N_h) (s²_yh + R̂² s²_xh − 2 R̂ s_xyh) / n_h / T̂_x²``
  (eqs. 27–29): the variance of the total of the residual ``d_u = y_u − R̂ x_u`` over
  ``T̂_x²``, which is how it is computed here.

Stehman keeps the finite-population correction ``1 − n_h/N_h``; Olofsson et al. drop it.
It is kept (``fpc=True``): for pixel populations it differs from 1 by ``n_h/N_h`` (under
0.1 % in both papers' examples), so both papers' figures are reproduced either way.

What each figure is, for a unit with map class ``m``, reference class ``r`` and zone
indicator ``z`` (1 everywhere when no zone is given), and ``A`` the zone's area in pixels
(known from the map):

================================  ==========================  ==========================
figure                            y_u                         divided by
================================  ==========================  ==========================
cell ``p_ij`` of the error matrix ``z · [m = i] · [r = j]``    ``A``
area proportion of class ``k``    ``z · [r = k]``              ``A``
overall accuracy                  ``z · [m = r]``              ``A``
user's accuracy of class ``i``    ``z · [m = i] · [r = i]``    ratio to ``z · [m = i]``
producer's accuracy of ``j``      ``z · [m = j] · [r = j]``    ratio to ``z · [r = j]``
================================  ==========================  ==========================

A zone (district, farm) is a *domain*: the sample of the whole map is used with the full
strata's ``N_h`` and ``n_h``, units outside the zone contributing ``y_u = 0``; dividing by
the zone's known area turns the totals into proportions of the zone. The confidence
intervals are the normal ones, ``± 1.96 SE`` (:data:`Z95`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agrimon.errors import AssessmentError

#: Normal quantile of a two-sided 95 % confidence interval (as both papers use).
Z95 = 1.96

Floats = NDArray[np.float64]


def _frozen(values: ArrayLike) -> Floats:
    out = np.array(values, dtype=np.float64)
    out.flags.writeable = False
    return out


def _plain(value: float) -> float | None:
    """A JSON-ready float: NaN (undefined) becomes None."""
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class Estimate:
    """One estimated figure with its standard error."""

    value: float
    se: float

    @property
    def ci95(self) -> float:
        """Half-width of the 95 % confidence interval (``1.96 · se``)."""
        return Z95 * self.se

    def to_dict(self) -> dict[str, float | None]:
        """``{"value", "se", "ci95"}`` as plain floats (None where undefined)."""
        return {"value": _plain(self.value), "se": _plain(self.se), "ci95": _plain(self.ci95)}


@dataclass(frozen=True, eq=False)
class ClassEstimates:
    """One figure estimated per class (NaN where the sample cannot define it)."""

    value: Floats
    se: Floats

    @property
    def ci95(self) -> Floats:
        """Half-widths of the 95 % confidence intervals (``1.96 · se``)."""
        return Z95 * self.se

    def __getitem__(self, k: int) -> Estimate:
        return Estimate(float(self.value[k]), float(self.se[k]))

    def scaled(self, factor: float) -> ClassEstimates:
        """The same estimates in another unit (value and SE times ``factor``)."""
        return ClassEstimates(_frozen(self.value * factor), _frozen(self.se * factor))


@dataclass(frozen=True, eq=False)
class AreaEstimate:
    """Area-adjusted estimates and accuracy of a class map over one zone.

    Attributes:
        classes: Class names; index ``k`` of every per-class array is ``classes[k]``.
        pixel_area_ha: Area of one pixel in hectares.
        zone_pixels: Area of the zone in pixels (the whole map when no zone was given).
        samples: Sample units used (all strata, inside the zone or not).
        samples_in_zone: Sample units inside the zone.
        error_matrix: Estimated ``p_ij``, the proportion of the zone's area mapped as class
            ``i`` (rows) whose reference class is ``j`` (columns).
        overall_accuracy: Proportion of the zone's area mapped correctly.
        users_accuracy: Per map class: proportion of its mapped area that is that class.
        producers_accuracy: Per reference class: proportion of its area mapped as it.
        area_proportion: Per reference class: proportion of the zone's area.
        map_area_ha: Per class: the pixel-count area of the *map* in hectares. It is biased
            by the map's errors (commission adds, omission removes); report
            :attr:`area_ha` instead. None when the map's class counts were not given.
    """

    classes: tuple[str, ...]
    pixel_area_ha: float
    zone_pixels: float
    samples: int
    samples_in_zone: int
    error_matrix: Floats
    overall_accuracy: Estimate
    users_accuracy: ClassEstimates
    producers_accuracy: ClassEstimates
    area_proportion: ClassEstimates
    map_area_ha: Floats | None

    @property
    def zone_area_ha(self) -> float:
        """Area of the zone in hectares."""
        return self.zone_pixels * self.pixel_area_ha

    @property
    def area_ha(self) -> ClassEstimates:
        """Per reference class: the estimated (area-adjusted) area in hectares."""
        return self.area_proportion.scaled(self.zone_area_ha)

    @property
    def area_percent(self) -> ClassEstimates:
        """Per reference class: the estimated area in % of the zone."""
        return self.area_proportion.scaled(100.0)

    def to_dict(self) -> dict[str, Any]:
        """The estimates as JSON-ready plain types (floats, lists, None for undefined)."""
        per_class: dict[str, Any] = {}
        for k, name in enumerate(self.classes):
            per_class[name] = {
                "users_accuracy": self.users_accuracy[k].to_dict(),
                "producers_accuracy": self.producers_accuracy[k].to_dict(),
                "area_proportion": self.area_proportion[k].to_dict(),
                "area_ha": self.area_ha[k].to_dict(),
                "area_percent": self.area_percent[k].to_dict(),
                "map_area_ha_biased": (
                    None if self.map_area_ha is None else float(self.map_area_ha[k])
                ),
            }
        return {
            "classes": list(self.classes),
            "pixel_area_ha": float(self.pixel_area_ha),
            "zone_area_ha": float(self.zone_area_ha),
            "samples": int(self.samples),
            "samples_in_zone": int(self.samples_in_zone),
            "confidence": 0.95,
            "z": Z95,
            "overall_accuracy": self.overall_accuracy.to_dict(),
            "error_matrix": {
                "rows": "map class",
                "columns": "reference class",
                "unit": "proportion of the zone's area",
                "values": [[_plain(v) for v in row] for row in self.error_matrix.tolist()],
            },
            "per_class": per_class,
        }


@dataclass(frozen=True, eq=False)
class _Design:
    """Validated sample: per-unit stratum and the strata's sizes."""

    strata: NDArray[np.int64]
    stratum_pixels: Floats
    sampled: NDArray[np.int64]
    fpc: Floats


def estimate(
    stratum: ArrayLike,
    map_class: ArrayLike,
    reference: ArrayLike,
    *,
    stratum_pixels: ArrayLike,
    classes: Sequence[str],
    pixel_area_ha: float,
    map_pixels: ArrayLike | None = None,
    in_zone: ArrayLike | None = None,
    stratum_names: Sequence[str] | None = None,
    fpc: bool = True,
) -> AreaEstimate:
    """Estimate the area of every class and the map's accuracy from a stratified sample.

    Args:
        stratum: Per sample unit, its stratum index ``0..H-1``.
        map_class: Per sample unit, the class index ``0..K-1`` of the map being assessed.
        reference: Per sample unit, its reference (true) class index ``0..K-1``.
        stratum_pixels: ``N_h``: pixels in each stratum (length ``H``), over the whole map
            even when estimating for a zone.
        classes: Names of the ``K`` classes (unique).
        pixel_area_ha: Area of one pixel in hectares (0.01 for 10 m pixels).
        map_pixels: Pixels the map gives each class (length ``K``) in the zone, or in the
            whole map without a zone; their sum is the zone's area. Needed with ``in_zone``.
        in_zone: Per sample unit, whether it lies in the zone; None for the whole map.
        stratum_names: Names of the strata for messages (default ``stratum <h>``).
        fpc: Apply the finite-population correction ``1 − n_h/N_h`` (Stehman 2014).

    Returns:
        The estimates; per-class figures the sample cannot define (a class never mapped,
        or never seen, in the sample) are NaN.

    Raises:
        AssessmentError: A class or stratum index is out of range, a stratum with pixels has
            fewer than 2 sample units, or the counts do not fit together.
    """
    names = tuple(classes)
    if len(names) == 0 or len(set(names)) != len(names):
        raise AssessmentError(f"classes {list(names)} must be a non-empty list of unique names")
    if not (math.isfinite(pixel_area_ha) and pixel_area_ha > 0):
        raise AssessmentError(f"pixel_area_ha {pixel_area_ha} must be a positive number")
    n_classes = len(names)
    mapped = _indices(map_class, n_classes, "map class")
    truth = _indices(reference, n_classes, "reference class")
    if not mapped.shape == truth.shape == np.shape(stratum):
        raise AssessmentError(
            f"stratum, map_class and reference have {np.shape(stratum)}, {mapped.shape} and "
            f"{truth.shape} values; give one of each per sample unit"
        )
    design = _design(stratum, stratum_pixels, stratum_names, fpc=fpc)
    zone = _zone(in_zone, mapped.shape)
    counts = _map_counts(map_pixels, n_classes)
    zone_pixels = _zone_pixels(counts, design, zoned=in_zone is not None)

    # One indicator column per error-matrix cell: every other figure is a sum of cells.
    cells = np.zeros((mapped.size, n_classes * n_classes), dtype=np.float64)
    cells[np.arange(mapped.size), mapped * n_classes + truth] = zone
    cell_totals = _totals(cells, design).reshape(n_classes, n_classes)

    correct = cells[:, np.arange(n_classes) * (n_classes + 1)]
    in_map = cells.reshape(-1, n_classes, n_classes).sum(axis=2)
    in_ref = cells.reshape(-1, n_classes, n_classes).sum(axis=1)
    diag = np.diag(cell_totals)
    users = _ratio(correct, in_map, diag, cell_totals.sum(axis=1), design)
    producers = _ratio(correct, in_ref, diag, cell_totals.sum(axis=0), design)

    area_se = np.sqrt(_total_variance(in_ref, design)) / zone_pixels
    oa_se = math.sqrt(float(_total_variance(correct.sum(axis=1, keepdims=True), design)[0]))
    return AreaEstimate(
        classes=names,
        pixel_area_ha=float(pixel_area_ha),
        zone_pixels=zone_pixels,
        samples=int(mapped.size),
        samples_in_zone=int(np.count_nonzero(zone)),
        error_matrix=_frozen(cell_totals / zone_pixels),
        overall_accuracy=Estimate(float(diag.sum() / zone_pixels), oa_se / zone_pixels),
        users_accuracy=users,
        producers_accuracy=producers,
        area_proportion=ClassEstimates(
            _frozen(cell_totals.sum(axis=0) / zone_pixels), _frozen(area_se)
        ),
        map_area_ha=None if counts is None else _frozen(counts * pixel_area_ha),
    )


def _indices(
    values: ArrayLike, count: int, what: str, among: str = "map classes"
) -> NDArray[np.int64]:
    """Indices as int64, each in ``0..count-1`` (class or stratum indices)."""
    array = np.asarray(values)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise AssessmentError(
            f"{what} must be a 1-D array of integer class indices, got {array.dtype} of "
            f"shape {array.shape}"
        )
    bad = np.flatnonzero((array < 0) | (array >= count))
    if bad.size:
        raise AssessmentError(
            f"{what} index {int(array[bad[0]])} of sample unit {int(bad[0])} is not one of the "
            f"{count} {among} (0..{count - 1}); give every unit one of them or drop it"
        )
    return array.astype(np.int64)


def _design(
    stratum: ArrayLike,
    stratum_pixels: ArrayLike,
    stratum_names: Sequence[str] | None,
    *,
    fpc: bool,
) -> _Design:
    sizes = np.asarray(stratum_pixels, dtype=np.float64)
    if sizes.ndim != 1 or sizes.size == 0 or not np.all(np.isfinite(sizes) & (sizes >= 0)):
        raise AssessmentError(
            f"stratum_pixels {sizes.tolist()} must be a non-empty list of pixel counts >= 0"
        )
    n_strata = sizes.size
    labels = (
        list(stratum_names)
        if stratum_names is not None
        else [f"stratum {h}" for h in range(n_strata)]
    )
    if len(labels) != n_strata:
        raise AssessmentError(
            f"stratum_names has {len(labels)} names for {n_strata} strata; give one per stratum"
        )
    strata = _indices(stratum, n_strata, "stratum", "strata of stratum_pixels")
    sampled = np.bincount(strata, minlength=n_strata)
    for h in range(n_strata):
        name, n_h, big_n = labels[h], int(sampled[h]), sizes[h]
        if big_n == 0 and n_h > 0:
            raise AssessmentError(
                f"{name} has {n_h} sample unit(s) but 0 pixels; check stratum_pixels"
            )
        if big_n > 0 and n_h < 2:
            raise AssessmentError(
                f"{name} has {n_h} sample unit(s): its variance cannot be estimated with "
                "fewer than 2 points; add reference points there"
            )
        if n_h > big_n:
            raise AssessmentError(
                f"{name} has {n_h} sample units but only {big_n:g} pixels; check stratum_pixels"
            )
    with np.errstate(divide="ignore", invalid="ignore"):
        correction = np.where(sizes > 0, 1.0 - sampled / sizes, 0.0) if fpc else np.ones(n_strata)
    return _Design(strata, sizes, sampled, correction)


def _zone(in_zone: ArrayLike | None, shape: tuple[int, ...]) -> Floats:
    if in_zone is None:
        return np.ones(shape, dtype=np.float64)
    zone = np.asarray(in_zone)
    if zone.shape != shape or zone.dtype != np.bool_:
        raise AssessmentError(
            f"in_zone must be one boolean per sample unit ({shape[0]}), got {zone.dtype} of "
            f"shape {zone.shape}"
        )
    return zone.astype(np.float64)


def _map_counts(map_pixels: ArrayLike | None, n_classes: int) -> Floats | None:
    if map_pixels is None:
        return None
    counts = np.asarray(map_pixels, dtype=np.float64)
    if counts.shape != (n_classes,) or not np.all(np.isfinite(counts) & (counts >= 0)):
        raise AssessmentError(
            f"map_pixels {counts.tolist()} must be {n_classes} pixel counts >= 0, one per class"
        )
    return counts


def _zone_pixels(counts: Floats | None, design: _Design, *, zoned: bool) -> float:
    """Area of the zone in pixels: the map's count inside it, or all strata without one."""
    total = float(design.stratum_pixels.sum())
    if counts is None:
        if zoned:
            raise AssessmentError(
                "in_zone needs map_pixels, the map's pixel count of each class in the zone"
            )
        return total
    area = float(counts.sum())
    if area <= 0:
        raise AssessmentError("map_pixels are all 0: the zone has no mapped pixel")
    if not zoned and not math.isclose(area, total, rel_tol=1e-9):
        raise AssessmentError(
            f"map_pixels sum to {area:g} pixels but the strata to {total:g}; without a zone "
            "both must count the same map"
        )
    return area


def _totals(values: Floats, design: _Design) -> Floats:
    """``T̂ = Σ_h N_h ȳ_h`` of every column of ``values`` (one row per sample unit)."""
    sums = np.zeros((design.stratum_pixels.size, values.shape[1]))
    np.add.at(sums, design.strata, values)
    weights = np.divide(
        design.stratum_pixels,
        design.sampled,
        out=np.zeros_like(design.stratum_pixels),
        where=design.sampled > 0,
    )
    return np.asarray(weights @ sums, dtype=np.float64)


def _total_variance(values: Floats, design: _Design) -> Floats:
    """``V̂(T̂) = Σ_h N_h² (1 − n_h/N_h) s²_h / n_h`` of every column of ``values``."""
    variance = np.zeros(values.shape[1])
    for h in np.flatnonzero(design.sampled):
        rows = values[design.strata == h]
        n_h = rows.shape[0]
        scale = design.stratum_pixels[h] ** 2 * design.fpc[h] / n_h
        variance += scale * rows.var(axis=0, ddof=1)
    return variance


def _ratio(
    numerator: Floats, denominator: Floats, num_totals: Floats, den_totals: Floats, design: _Design
) -> ClassEstimates:
    """Ratio estimates ``T̂_y / T̂_x`` per column and their linearised standard errors."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den_totals > 0, num_totals / den_totals, np.nan)
    residual = numerator - np.nan_to_num(ratio) * denominator
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(
            den_totals > 0, np.sqrt(_total_variance(residual, design)) / den_totals, np.nan
        )
    return ClassEstimates(_frozen(ratio), _frozen(se))
