"""Stratified random sample design for area estimation: size, allocation, drawing the points.

Pure numpy. The class map is read window by window through a callable the caller passes
(a rasterio dataset's ``read`` wrapped by the I/O layer, or an in-memory array in tests),
so memory is bounded by one window and nothing here imports rasterio.

* :func:`sample_size`: the sample size that gives a target standard error of the overall
  accuracy under stratified random sampling, Olofsson et al. (2014) eq. 13 (Cochran 1977,
  eq. 5.25): ``n = (Σ_i W_i S_i / S(Ô))²`` with ``S_i = sqrt(U_i (1 − U_i))``.
* :func:`allocate`: ``n`` spread over the strata, proportional, equal or Neyman
  (``n_h ∝ N_h S_h``, Cochran 1977 §5.5), with a floor per stratum, in integers that sum to
  ``n`` exactly (largest-remainder rounding), deterministically.
* :func:`draw_points`: a stratified random sample without replacement of map pixels.

References:
    Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A.
    (2014). Good practices for estimating area and assessing accuracy of land change.
    Remote Sensing of Environment 148, 42–57. doi:10.1016/j.rse.2014.02.015

    Cochran, W. G. (1977). Sampling Techniques, 3rd ed. Wiley, New York.

Map convention: a 2-D ``uint8`` array of class values, ``0`` = nodata, value ``v`` =
stratum ``v − 1`` (so the stratum index equals the class index when the strata are the map
classes, as the estimator's ``stratum`` and ``map_class`` expect).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agrimon.errors import ConfigError

Method = Literal["proportional", "equal", "neyman"]

#: Olofsson et al. (2014, §5.1.2) advise 50–100 sample units for a rare class; the default
#: floor per stratum is the lower end of that range when the sample is large enough.
RARE_CLASS_FLOOR = 50

#: A stratum needs 2 units for a sample variance (the estimator refuses fewer).
MIN_PER_STRATUM = 2

Ints = NDArray[np.int64]


def sample_size(weights: ArrayLike, expected_user_accuracy: ArrayLike, target_se: float) -> int:
    """Sample size for a target standard error of the overall accuracy (Olofsson eq. 13).

    Args:
        weights: ``W_i``, the share of the map of each stratum (map class); pixel counts
            are accepted too and normalised to sum 1.
        expected_user_accuracy: ``U_i``, the user's accuracy expected of each class (0..1),
            which gives its standard deviation ``S_i = sqrt(U_i (1 − U_i))``.
        target_se: ``S(Ô)``, the standard error of the overall accuracy to reach (0..1).

    Returns:
        ``n = ceil((Σ W_i S_i / S(Ô))²)``, at least 1.

    Raises:
        ConfigError: Inputs of different lengths or out of range.
    """
    w = np.asarray(weights, dtype=np.float64)
    u = np.asarray(expected_user_accuracy, dtype=np.float64)
    if w.ndim != 1 or w.shape != u.shape or w.size == 0:
        raise ConfigError(
            f"weights ({w.shape}) and expected_user_accuracy ({u.shape}) need one value per stratum"
        )
    if not np.all(np.isfinite(w) & (w >= 0)) or w.sum() <= 0:
        raise ConfigError(f"weights {w.tolist()} must be >= 0 with a positive sum")
    if not np.all((u >= 0) & (u <= 1)):
        raise ConfigError(f"expected_user_accuracy {u.tolist()} must lie in 0..1")
    if not (math.isfinite(target_se) and 0 < target_se < 1):
        raise ConfigError(f"target_se {target_se} must lie strictly between 0 and 1")
    spread = float(np.sum(w / w.sum() * np.sqrt(u * (1 - u))))
    # The tolerance keeps float noise (640.0000000001) from adding a unit.
    return max(1, math.ceil((spread / target_se) ** 2 - 1e-9))


def default_minimum(n: int, strata: int) -> int:
    """The default floor per stratum: at most half the sample goes to floors.

    ``clip(n // (2 · strata), 2, 50)``: never below 2 (a variance needs 2 units), never above
    :data:`RARE_CLASS_FLOOR` (Olofsson's 50 for rare classes), and small enough that the
    chosen allocation still decides where at least half of the units go.
    """
    return int(np.clip(n // (2 * max(strata, 1)), MIN_PER_STRATUM, RARE_CLASS_FLOOR))


def allocate(
    n: int,
    stratum_pixels: ArrayLike,
    *,
    method: Method = "proportional",
    expected_user_accuracy: ArrayLike | None = None,
    minimum: int | None = None,
) -> Ints:
    """Spread ``n`` sample units over the strata.

    The real-valued allocation is ``x_h = clip(λ · share_h, min(minimum, N_h), N_h)`` with
    ``λ`` such that ``Σ x_h = n``: strata below the floor get the floor, strata smaller than
    their share are sampled whole, and the rest share what is left in proportion to their
    shares. It is then rounded by the largest remainder (ties to the lower stratum index),
    so the counts are integers that sum to ``n`` and respect the floor.

    Args:
        n: Total sample size.
        stratum_pixels: ``N_h``, pixels of each stratum; an empty stratum gets 0 units.
        method: ``proportional`` (``share ∝ N_h``), ``equal`` (same share for every
            non-empty stratum) or ``neyman`` (``share ∝ N_h S_h``, ``S_h`` from
            ``expected_user_accuracy``).
        expected_user_accuracy: ``U_h`` per stratum, for ``neyman``.
        minimum: Floor per stratum; default :func:`default_minimum`. At least 2.

    Returns:
        ``n_h`` per stratum (int64), summing to ``n``.

    Raises:
        ConfigError: ``n`` cannot be placed: smaller than the floors, larger than the map, a
            stratum of a single pixel, or inputs out of range.
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"sample size {n!r} must be a positive integer")
    sizes = np.asarray(stratum_pixels)
    if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer):
        raise ConfigError(f"stratum_pixels {sizes.tolist()} must be integer pixel counts")
    sizes = sizes.astype(np.int64)
    if np.any(sizes < 0) or sizes.sum() == 0:
        raise ConfigError(f"stratum_pixels {sizes.tolist()} must be >= 0, not all 0")
    single = np.flatnonzero(sizes == 1)
    if single.size:
        raise ConfigError(
            f"stratum {int(single[0])} has a single pixel and cannot get the 2 sample units "
            "its variance needs; merge it into another stratum"
        )
    floor_value = default_minimum(n, int(np.count_nonzero(sizes))) if minimum is None else minimum
    if floor_value < MIN_PER_STRATUM:
        raise ConfigError(f"minimum {floor_value} per stratum must be at least 2")
    low = np.minimum(floor_value, sizes)
    if not (low.sum() <= n <= sizes.sum()):
        raise ConfigError(
            f"sample size {n} must lie between the strata's floors ({int(low.sum())}) and the "
            f"map's pixels ({int(sizes.sum())}); change n or minimum"
        )
    shares = _shares(sizes, method, expected_user_accuracy)
    return _round(_water_fill(n, shares, low, sizes), n)


def _shares(
    sizes: Ints, method: Method, expected_user_accuracy: ArrayLike | None
) -> NDArray[np.float64]:
    if method == "proportional":
        return sizes.astype(np.float64)
    if method == "equal":
        return (sizes > 0).astype(np.float64)
    if method == "neyman":
        if expected_user_accuracy is None:
            raise ConfigError("neyman allocation needs expected_user_accuracy per stratum")
        u = np.asarray(expected_user_accuracy, dtype=np.float64)
        if u.shape != sizes.shape or not np.all((u >= 0) & (u <= 1)):
            raise ConfigError(
                f"expected_user_accuracy {u.tolist()} must be {sizes.size} values in 0..1"
            )
        return np.asarray(sizes * np.sqrt(u * (1 - u)), dtype=np.float64)
    raise ConfigError(f"allocation method {method!r} is not one of proportional, equal, neyman")


def _water_fill(n: int, shares: NDArray[np.float64], low: Ints, high: Ints) -> NDArray[np.float64]:
    """``clip(λ · shares, low, high)`` with the ``λ`` that makes it sum to ``n``."""

    def filled(lam: float) -> NDArray[np.float64]:
        return np.clip(lam * shares, low, high).astype(np.float64)

    positive = shares > 0
    if filled(0.0).sum() >= n:
        return filled(0.0)
    if np.where(positive, high, low).sum() < n:
        raise ConfigError(
            f"sample size {n} exceeds the pixels of the strata with a positive share; "
            "use another allocation method"
        )
    # Σ clip(λ s_h, lo_h, hi_h) is piecewise linear and non-decreasing in λ: find the piece.
    knots = np.unique(
        np.concatenate([low[positive], high[positive]]) / np.tile(shares[positive], 2)
    )
    totals = np.array([filled(k).sum() for k in knots])
    i = int(np.searchsorted(totals, n))
    lo_k, lo_t = (0.0, filled(0.0).sum()) if i == 0 else (knots[i - 1], totals[i - 1])
    lam = lo_k + (knots[i] - lo_k) * (n - lo_t) / (totals[i] - lo_t)
    return filled(float(lam))


def _round(ideal: NDArray[np.float64], n: int) -> Ints:
    """Largest-remainder rounding of a real allocation that sums to ``n``."""
    base = np.floor(ideal + 1e-9).astype(np.int64)
    short = n - int(base.sum())
    order = np.argsort(-(ideal - base), kind="stable")
    base[order[:short]] += 1
    return base


class WindowLike(Protocol):
    """A block of the map in pixel offsets (``rasterio.windows.Window`` fits)."""

    @property
    def row_off(self) -> float:
        """First row of the block in the full raster."""

    @property
    def col_off(self) -> float:
        """First column of the block in the full raster."""

    @property
    def height(self) -> float:
        """Rows of the block."""

    @property
    def width(self) -> float:
        """Columns of the block."""


W = TypeVar("W", bound=WindowLike)

#: Reads one window of the class map: a ``(height, width)`` array of class values.
Reader = Callable[[W], NDArray[np.integer]]


@dataclass(frozen=True)
class Window:
    """A block of the map: offsets and size in pixels."""

    row_off: int
    col_off: int
    height: int
    width: int


def block_windows(shape: tuple[int, int], block: int = 1024) -> list[Window]:
    """Windows of at most ``block × block`` pixels covering a raster, row by row."""
    if block < 1:
        raise ConfigError(f"block {block} must be at least 1 pixel")
    rows, cols = shape
    return [
        Window(r, c, min(block, rows - r), min(block, cols - c))
        for r in range(0, rows, block)
        for c in range(0, cols, block)
    ]


@dataclass(frozen=True, eq=False)
class SamplePoints:
    """Sample pixels in full-raster indices and the stratum (0-based) each was drawn in."""

    rows: Ints
    cols: Ints
    stratum: Ints

    def __len__(self) -> int:
        return int(self.rows.size)


def count_strata(windows: Sequence[W], read: Reader[W], strata: int) -> Ints:
    """Pixels of each stratum in each window: the first pass of :func:`draw_points`.

    Returns:
        ``counts[w, h]``, the pixels of value ``h + 1`` in ``windows[w]`` (int64).

    Raises:
        ConfigError: A window reads with the wrong shape or holds a value above ``strata``.
    """
    counts = np.zeros((len(windows), strata), dtype=np.int64)
    for i, window in enumerate(windows):
        values = _read(read, window)
        top = int(values.max(initial=0))
        if int(values.min(initial=0)) < 0:
            raise ConfigError(f"window {i} of the map holds negative class values; use 0..255")
        if top > strata:
            raise ConfigError(
                f"window {i} of the map holds class value {top} but only {strata} strata "
                f"(values 1..{strata}) are sampled; pass strata={top} or recode the map"
            )
        counts[i] = np.bincount(values.ravel(), minlength=strata + 1)[1:]
    return counts


def draw_points(
    windows: Sequence[W],
    read: Reader[W],
    n_per_stratum: ArrayLike,
    rng: np.random.Generator,
    *,
    counts: ArrayLike | None = None,
) -> SamplePoints:
    """Draw a stratified random sample (without replacement) of map pixels.

    Each stratum's ``n_h`` pixels are a simple random sample without replacement of its
    ``N_h`` pixels, so every pixel of a stratum has inclusion probability ``n_h / N_h``:
    ``n_h`` distinct ranks are drawn uniformly in ``0..N_h − 1`` and rank ``k`` is the
    ``k``-th pixel of the stratum in window order, then row-major order inside the window.
    The number of points per window is thus multivariate hypergeometric in the windows'
    pixel counts (a multinomial spread would let a window receive more points than it has
    pixels, and is not sampling without replacement).

    Args:
        windows: Blocks that partition the map (e.g. :func:`block_windows`).
        read: Reads one window: a ``(height, width)`` array, ``0`` nodata, ``h + 1`` for
            stratum ``h``. It must return the same values on both passes.
        n_per_stratum: ``n_h`` per stratum (e.g. from :func:`allocate`).
        rng: The random generator; the same seed gives the same points.
        counts: ``counts[w, h]`` from :func:`count_strata`, if the caller has them; else
            the map is read once more to count.

    Returns:
        The points sorted by stratum, row and column.

    Raises:
        ConfigError: A stratum has fewer pixels than points asked, or the map read on the
            second pass differs from its counts.
    """
    wanted = np.asarray(n_per_stratum, dtype=np.int64)
    if wanted.ndim != 1 or np.any(wanted < 0):
        raise ConfigError(f"n_per_stratum {wanted.tolist()} must be counts >= 0")
    per_window = (
        count_strata(windows, read, wanted.size)
        if counts is None
        else np.asarray(counts, dtype=np.int64)
    )
    if per_window.shape != (len(windows), wanted.size):
        raise ConfigError(
            f"counts have shape {per_window.shape}; give one row per window and one column "
            f"per stratum ({len(windows)}, {wanted.size})"
        )
    ranks = _stratum_ranks(per_window, wanted, rng)
    starts = np.cumsum(per_window, axis=0) - per_window
    rows: list[Ints] = []
    cols: list[Ints] = []
    strata: list[Ints] = []
    for i, window in enumerate(windows):
        # Ranks are sorted: this window's points are one slice of each stratum's ranks.
        picked = [
            r[
                np.searchsorted(r, starts[i, h]) : np.searchsorted(
                    r, starts[i, h] + per_window[i, h]
                )
            ]
            for h, r in enumerate(ranks)
        ]
        if not any(p.size for p in picked):
            continue
        flat = _read(read, window).ravel()
        for h, chosen in enumerate(picked):
            if chosen.size == 0:
                continue
            where = np.flatnonzero(flat == h + 1)
            if where.size != per_window[i, h]:
                raise ConfigError(
                    f"window {i} now holds {where.size} pixels of stratum {h} but was counted "
                    f"with {int(per_window[i, h])}; pass counts of this same map"
                )
            r, c = np.divmod(where[chosen - starts[i, h]], int(window.width))
            rows.append(r + int(window.row_off))
            cols.append(c + int(window.col_off))
            strata.append(np.full(r.size, h, dtype=np.int64))
    return _sorted_points(rows, cols, strata)


def _stratum_ranks(per_window: Ints, wanted: Ints, rng: np.random.Generator) -> list[Ints]:
    """Per stratum, ``n_h`` distinct ranks drawn uniformly among its ``N_h`` pixels."""
    totals = per_window.sum(axis=0)
    short = np.flatnonzero(wanted > totals)
    if short.size:
        h = int(short[0])
        raise ConfigError(
            f"stratum {h} has {int(totals[h])} pixels, fewer than the {int(wanted[h])} points "
            "asked; lower its sample size"
        )
    # choice(N, k, replace=False) keeps O(k) memory for k ≪ N (numpy uses Floyd's method).
    return [
        np.sort(rng.choice(int(totals[h]), size=int(wanted[h]), replace=False)).astype(np.int64)
        for h in range(wanted.size)
    ]


def _read(read: Reader[W], window: W) -> NDArray[np.integer]:
    values = np.asarray(read(window))
    shape = (int(window.height), int(window.width))
    if values.shape != shape or not np.issubdtype(values.dtype, np.integer):
        raise ConfigError(
            f"the map reader returned {values.dtype} of shape {values.shape} for a window of "
            f"{shape}; return the window's integer class values"
        )
    return values


def _sorted_points(rows: list[Ints], cols: list[Ints], strata: list[Ints]) -> SamplePoints:
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return SamplePoints(empty, empty.copy(), empty.copy())
    r, c, s = np.concatenate(rows), np.concatenate(cols), np.concatenate(strata)
    order = np.lexsort((c, r, s))
    return SamplePoints(r[order], c[order], s[order])
