"""Land-surface phenology per pixel from a vegetation-index time series.

The pipeline for each pixel, all vectorised over the pixels of a block:

1. **Regular grid.** The series is resampled to a regular grid of ``step_days`` (default 5
   days, Sentinel-2's revisit) starting at the first acquisition.
2. **Gap filling.** Each grid day takes the linear interpolation, in time, between the last
   valid (clear) observation on or before it and the first one on or after it, provided the
   two are at most ``max_gap_days`` apart; longer gaps, and the ends of the series before
   the first / after the last valid observation, stay NaN (no extrapolation).
3. **Smoothing.** A NaN-aware Savitzky–Golay filter: at every grid day a polynomial of
   degree ``polyorder`` is fitted by least squares to the valid grid values within
   ``± smooth_days / 2`` and evaluated at the centre. Where the window is full this is the
   classical Savitzky & Golay (1964) filter; near gaps and the series' ends it uses the
   valid values only (an asymmetric window) instead of spreading NaN. It keeps the height
   and timing of peaks better than a moving average (Chen et al. 2004). Values stay NaN
   where the gap-filled series is NaN.
4. **Metrics** on the smoothed curve ``s(t)`` (piecewise linear between grid days):

   * ``peak``: the date of the maximum, refined below the grid step by the vertex of the
     parabola through the maximum and its two neighbours; ``peak_value``: its height.
   * ``base_left`` / ``base_right``: the minimum of ``s`` before / after the peak;
     ``base`` = their mean (one of them where the other is undefined);
     ``amplitude`` = ``peak_value − base``.
   * ``start``: the last date before the peak where ``s`` rises through
     ``base_left + threshold × (peak_value − base_left)``; ``end``: the first date after the
     peak where it falls through ``base_right + threshold × (peak_value − base_right)``
     (linear interpolation between grid days). The default ``threshold = 0.5`` (half the
     seasonal amplitude on each side) is the "seasonal amplitude" method of TIMESAT
     (Jönsson & Eklundh 2004) and of the MODIS land-cover-dynamics product (MCD12Q2 uses
     the 50 % point of the green-up / green-down as its mid-green-up / mid-green-down
     dates).
   * ``integral``: ``∫ max(s(t) − base, 0) dt`` from start to end (index · days), the
     "small seasonal integral" of TIMESAT.
   * ``dry_min``: minimum of ``s`` over the grid days in ``dry_months``;
     ``dry_wet_ratio``: mean of ``s`` in ``dry_months`` ÷ mean of ``s`` in ``wet_months``
     (defaults for the southern-hemisphere savanna: dry = Aug–Oct, wet = Jan–Mar). Woody
     plants keep their leaves longer into the dry season than grass, so the ratio is higher
     for them.

Dates are reported twice: as **days since the season's start** (``start``, ``peak``,
``end``; the season starts on ``season_start`` = (month, day), by default 1 July, the last
such day on or before the first acquisition), which is monotonic across the new year of a
southern-hemisphere season; and as **day of year** (``start_doy`` …, 1 = 1 January, with the
fraction of the day), which wraps at the new year.

Metrics are float32 and NaN where undefined: fewer than ``min_observations`` valid
observations, no crossing of the threshold on one side of the peak (the season is cut by
the series' ends or by a gap longer than ``max_gap_days``), or — for the timing metrics and
the integral — an amplitude below ``min_amplitude`` (a flat curve: bare soil, water).

References:
    Savitzky, A. & Golay, M. J. E. (1964), Smoothing and differentiation of data by
    simplified least squares procedures, Analytical Chemistry 36(8), 1627–1639.
    Jönsson, P. & Eklundh, L. (2004), TIMESAT — a program for analyzing time-series of
    satellite sensor data, Computers & Geosciences 30(8), 833–845.
    Chen, J. et al. (2004), A simple method for reconstructing a high-quality NDVI
    time-series data set based on the Savitzky–Golay filter, Remote Sensing of Environment
    91(3–4), 332–344.
    Zhang, X. et al. (2003), Monitoring vegetation phenology using MODIS, Remote Sensing of
    Environment 84(3), 471–475.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy.ndimage import correlate1d

from agrimon.errors import ConfigError

F64 = NDArray[np.float64]

#: Variables of :func:`phenology`, in order, with their units.
#: The season metrics a run writes as rasters (``<index>_<metric>``) and models read.
LAYER_METRICS: tuple[str, ...] = (
    "start_doy",
    "peak_doy",
    "end_doy",
    "season_length",
    "peak_value",
    "amplitude",
    "integral",
    "dry_min",
    "dry_wet_ratio",
)
METRICS: dict[str, str] = {
    "start": "days since season start",
    "peak": "days since season start",
    "end": "days since season start",
    "start_doy": "day of year",
    "peak_doy": "day of year",
    "end_doy": "day of year",
    "season_length": "days",
    "peak_value": "index",
    "base": "index",
    "amplitude": "index",
    "integral": "index * days",
    "dry_min": "index",
    "dry_wet_ratio": "1",
    "n_obs": "count",
}


@dataclass(frozen=True)
class PhenologyParams:
    """Parameters of :func:`phenology` (see the module docstring for the method).

    Attributes:
        step_days: Spacing of the regular grid the series is resampled to (days).
        max_gap_days: Longest time between two valid observations that is bridged by
            linear interpolation (days); longer gaps stay NaN.
        smooth_days: Width of the Savitzky–Golay window (days); the window holds
            ``2 * round(smooth_days / (2 * step_days)) + 1`` grid days.
        polyorder: Degree of the Savitzky–Golay polynomial.
        threshold: Fraction of the seasonal amplitude (on each side of the peak) whose
            crossing marks the start and the end of the season.
        min_observations: Fewest valid observations for any metric.
        min_amplitude: Smallest amplitude (index units) for which start, peak, end, season
            length and integral are reported.
        season_start: (month, day) on which a season starts (1 July: southern hemisphere).
        dry_months: Months of the dry-season window.
        wet_months: Months of the wet-season window.
    """

    step_days: float = 5.0
    max_gap_days: float = 45.0
    smooth_days: float = 30.0
    polyorder: int = 2
    threshold: float = 0.5
    min_observations: int = 10
    min_amplitude: float = 0.05
    season_start: tuple[int, int] = (7, 1)
    dry_months: tuple[int, ...] = (8, 9, 10)
    wet_months: tuple[int, ...] = (1, 2, 3)

    def __post_init__(self) -> None:
        problems = []
        if not self.step_days > 0:
            problems.append(f"step_days={self.step_days} must be > 0")
        if not self.max_gap_days >= 0:
            problems.append(f"max_gap_days={self.max_gap_days} must be >= 0")
        if self.polyorder < 0:
            problems.append(f"polyorder={self.polyorder} must be >= 0")
        elif self.window_points < self.polyorder + 1:
            problems.append(
                f"smooth_days={self.smooth_days} gives {self.window_points} grid days, fewer "
                f"than polyorder + 1 = {self.polyorder + 1}"
            )
        if not 0 < self.threshold < 1:
            problems.append(f"threshold={self.threshold} must be within (0, 1)")
        if self.min_observations < 1:
            problems.append(f"min_observations={self.min_observations} must be >= 1")
        try:
            date(2001, *self.season_start)
        except (TypeError, ValueError):
            problems.append(f"season_start={self.season_start} is not a (month, day)")
        for name in ("dry_months", "wet_months"):
            months = getattr(self, name)
            if not months or any(not 1 <= m <= 12 for m in months):
                problems.append(f"{name}={months} must be months 1..12")
        if problems:
            raise ConfigError("phenology parameters: " + "; ".join(problems))

    @property
    def half_window(self) -> int:
        """Grid days on each side of the centre of the smoothing window."""
        return max(0, round(self.smooth_days / (2 * self.step_days)))

    @property
    def window_points(self) -> int:
        """Grid days in the smoothing window."""
        return 2 * self.half_window + 1


# --- pure NumPy, time on the last axis ------------------------------------------------


def regular_grid(t: F64, step_days: float) -> F64:
    """Grid days ``t[0], t[0] + step, …`` up to ``t[-1]`` (``t`` sorted, in days)."""
    if len(t) == 0:
        return np.zeros(0)
    n = int(np.floor((t[-1] - t[0]) / step_days + 1e-9)) + 1
    return np.asarray(t[0] + step_days * np.arange(n), dtype=np.float64)


def fill_gaps(t: F64, values: NDArray[Any], grid: F64, max_gap_days: float) -> F64:
    """Linear interpolation in time onto ``grid``, bridging gaps up to ``max_gap_days``.

    Args:
        t: Observation times (days, sorted ascending), shape ``(T,)``.
        values: Observations ``(..., T)``, NaN where missing.
        grid: Target times (days), shape ``(G,)``.
        max_gap_days: Longest span between the two bracketing valid observations that is
            interpolated.

    Returns:
        ``(..., G)`` float64: the observation where a grid day coincides with one, the
        interpolation between the bracketing valid observations where they are at most
        ``max_gap_days`` apart, NaN elsewhere (including before the first and after the
        last valid observation).
    """
    values = np.asarray(values, dtype=np.float64)
    n_t = len(t)
    if n_t == 0:
        return np.full((*values.shape[:-1], len(grid)), np.nan)
    valid = ~np.isnan(values)
    pos = np.arange(n_t)
    prev = np.maximum.accumulate(np.where(valid, pos, -1), axis=-1)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(valid, pos, n_t), -1), axis=-1), -1)
    k_prev = np.searchsorted(t, grid, side="right") - 1  # last observation <= grid day
    k_next = np.searchsorted(t, grid, side="left")  # first observation >= grid day
    p = np.where(k_prev >= 0, prev[..., np.clip(k_prev, 0, n_t - 1)], -1)
    n = np.where(k_next < n_t, nxt[..., np.clip(k_next, 0, n_t - 1)], n_t)
    pc, nc = np.clip(p, 0, n_t - 1), np.clip(n, 0, n_t - 1)
    tp, tn = t[pc], t[nc]
    vp = np.take_along_axis(values, pc, axis=-1)
    vn = np.take_along_axis(values, nc, axis=-1)
    span = tn - tp
    w = np.where(span > 0, (grid - tp) / np.where(span > 0, span, 1.0), 0.0)
    ok = (p >= 0) & (n < n_t) & (span <= max_gap_days)
    return np.asarray(np.where(ok, vp + (vn - vp) * w, np.nan))


def savgol_nan(values: NDArray[Any], half_window: int, polyorder: int) -> F64:
    """NaN-aware Savitzky–Golay smoothing along the last axis (regular sampling).

    At each position ``i`` the polynomial ``c_0 + c_1 u + … + c_p u^p`` minimising
    ``Σ_u w_{i+u} (y_{i+u} − c(u))²`` over ``u = −h..h`` (``w`` = 1 for valid values, 0 for
    NaN or outside the series) is fitted and ``c_0`` returned. ``c_0`` is linear in the
    window's values, with weights that depend only on which of them are valid: for windows
    of up to 15 values the weights of every validity pattern are tabulated once and the
    filter is ``2h + 1`` gathers; longer windows solve the normal equations
    ``Σ_k M_{j+k} c_k = B_j`` (moments ``M_m = Σ w u^m``, ``B_j = Σ w y u^j``) per position.
    With every value valid this is exactly the classical filter
    (``scipy.signal.savgol_filter`` away from the ends).

    Args:
        values: Regularly sampled series ``(..., G)``, NaN where missing.
        half_window: ``h``: values on each side of the centre.
        polyorder: ``p``: polynomial degree.

    Returns:
        ``(..., G)``: the fit where the window holds at least ``p + 1`` valid values and the
        input is valid, NaN elsewhere.
    """
    y = np.asarray(values, dtype=np.float64)
    if y.shape[-1] == 0:
        return y.copy()
    if 2 * half_window + 1 <= _MAX_TABLE_WINDOW:
        return _savgol_table_filter(y, half_window, polyorder)
    return _savgol_solve(y, half_window, polyorder)


_MAX_TABLE_WINDOW = 15


@lru_cache(maxsize=16)
def _savgol_weights(half_window: int, polyorder: int) -> F64:
    """Weights of ``c_0`` for every validity pattern of a window, ``(2**w, w)``.

    Bit ``j`` of the pattern says whether value ``j`` of the window is valid; rows with
    fewer than ``polyorder + 1`` valid values are NaN.
    """
    width = 2 * half_window + 1
    u = np.arange(-half_window, half_window + 1, dtype=np.float64)
    table = np.full((2**width, width), np.nan)
    for pattern in range(2**width):
        mask = (pattern >> np.arange(width)) & 1 == 1
        if mask.sum() < polyorder + 1:
            continue
        vander = np.vander(u[mask], polyorder + 1, increasing=True)
        table[pattern] = 0.0
        table[pattern, mask] = np.linalg.pinv(vander)[0]
    return table


def _savgol_table_filter(y: F64, half_window: int, polyorder: int) -> F64:
    table = _savgol_weights(half_window, polyorder)
    width = 2 * half_window + 1
    n = y.shape[-1]
    pad = [(0, 0)] * (y.ndim - 1) + [(half_window, half_window)]
    padded = np.pad(y, pad, constant_values=np.nan)
    valid = ~np.isnan(padded)
    pattern = np.zeros(y.shape, dtype=np.intp)
    for j in range(width):
        pattern |= valid[..., j : j + n].astype(np.intp) << j
    out = np.zeros(y.shape)
    filled = np.where(valid, padded, 0.0)
    for j in range(width):
        out += table[pattern, j] * filled[..., j : j + n]
    return np.asarray(np.where(np.isnan(y), np.nan, out))


def _savgol_solve(y: F64, half_window: int, polyorder: int) -> F64:
    valid = ~np.isnan(y)
    w = valid.astype(np.float64)
    wy = np.where(valid, y, 0.0)
    u = np.arange(-half_window, half_window + 1, dtype=np.float64)
    moments = [correlate1d(w, u**m, axis=-1, mode="constant") for m in range(2 * polyorder + 1)]
    rhs = [correlate1d(wy, u**j, axis=-1, mode="constant") for j in range(polyorder + 1)]
    k = polyorder + 1
    a = np.empty((*y.shape, k, k))
    for i in range(k):
        for j in range(k):
            a[..., i, j] = moments[i + j]
    b = np.stack(rhs, axis=-1)[..., None]
    enough = moments[0] >= k - 0.5
    a[~enough] = np.eye(k)
    coef = np.linalg.solve(a, b)[..., 0, 0]
    return np.asarray(np.where(enough & valid, coef, np.nan))


def _interp_crossing(g0: F64, g1: F64, s0: F64, s1: F64, level: F64) -> F64:
    """Where the segment from ``(g0, s0)`` to ``(g1, s1)`` crosses ``level``."""
    ds = s1 - s0
    frac = np.where(ds != 0, (level - s0) / np.where(ds != 0, ds, 1.0), 0.0)
    return np.asarray(g0 + np.clip(frac, 0.0, 1.0) * (g1 - g0))


def _day_of_year(days: F64, season_start: np.datetime64) -> F64:
    """Day of year (1 = 1 January, plus the day's fraction) of days since ``season_start``."""
    ok = np.isfinite(days)
    whole = np.floor(np.where(ok, days, 0.0))
    day = season_start + whole.astype("timedelta64[D]")
    jan1 = day.astype("datetime64[Y]").astype("datetime64[D]")
    doy = (day - jan1).astype(np.float64) + 1.0 + (np.where(ok, days, 0.0) - whole)
    return np.asarray(np.where(ok, doy, np.nan))


def season_metrics(
    grid: F64,
    smooth: F64,
    n_obs: NDArray[np.integer],
    params: PhenologyParams,
    *,
    dry: NDArray[np.bool_],
    wet: NDArray[np.bool_],
    season_start: np.datetime64,
) -> F64:
    """Phenology metrics of smoothed, regularly sampled curves.

    Args:
        grid: Grid days since the season start ``(G,)`` (regular).
        smooth: Smoothed index ``(..., G)``, NaN where unknown.
        n_obs: Valid observations per pixel ``(...)``.
        params: Thresholds and windows.
        dry: Grid days in the dry window ``(G,)``.
        wet: Grid days in the wet window ``(G,)``.
        season_start: Day the season starts (for the day-of-year variants).

    Returns:
        ``(..., len(METRICS))`` float64 in the order of :data:`METRICS`.
    """
    s = np.asarray(smooth, dtype=np.float64)
    lead = s.shape[:-1]
    n_grid = s.shape[-1]
    out = np.full((*lead, len(METRICS)), np.nan)
    col = {name: i for i, name in enumerate(METRICS)}
    out[..., col["n_obs"]] = n_obs
    if n_grid == 0:
        return out
    valid = ~np.isnan(s)
    usable = valid.any(axis=-1) & (np.asarray(n_obs) >= params.min_observations)
    step = float(grid[1] - grid[0]) if n_grid > 1 else params.step_days
    idx = np.arange(n_grid)

    # Peak, refined by the parabola through the maximum and its neighbours.
    p = np.argmax(np.where(valid, s, -np.inf), axis=-1)

    def take(i: NDArray[np.integer]) -> F64:
        picked = np.take_along_axis(s, np.clip(i, 0, n_grid - 1)[..., None], axis=-1)
        return np.asarray(picked[..., 0])

    top, left, right = take(p), take(p - 1), take(p + 1)
    curv = left - 2 * top + right
    fine = (p > 0) & (p < n_grid - 1) & np.isfinite(left) & np.isfinite(right) & (curv < 0)
    offset = np.where(
        fine, np.clip(0.5 * (left - right) / np.where(fine, curv, -1.0), -0.5, 0.5), 0.0
    )
    peak_value = np.where(fine, top - 0.25 * (left - right) * offset, top)
    peak_day = grid[p] + offset * step

    # Bases on each side of the peak.
    before = valid & (idx < p[..., None])
    after = valid & (idx > p[..., None])
    base_left = np.fmin.reduce(np.where(before, s, np.nan), axis=-1)
    base_right = np.fmin.reduce(np.where(after, s, np.nan), axis=-1)
    with np.errstate(invalid="ignore"):
        base = np.where(
            np.isnan(base_left),
            base_right,
            np.where(np.isnan(base_right), base_left, 0.5 * (base_left + base_right)),
        )
    amplitude = peak_value - base

    # Start: last grid day before the peak below the left threshold (a NaN stops the search).
    f = params.threshold
    level_left = base_left + f * (peak_value - base_left)
    level_right = base_right + f * (peak_value - base_right)
    with np.errstate(invalid="ignore"):
        stop_left = (~valid | (s < level_left[..., None])) & (idx < p[..., None])
        stop_right = (~valid | (s < level_right[..., None])) & (idx > p[..., None])
    i0 = np.max(np.where(stop_left, idx, -1), axis=-1)
    j1 = np.min(np.where(stop_right, idx, n_grid), axis=-1)
    i0c, i1c = np.clip(i0, 0, n_grid - 1), np.clip(i0 + 1, 0, n_grid - 1)
    j0c, j1c = np.clip(j1 - 1, 0, n_grid - 1), np.clip(j1, 0, n_grid - 1)
    start_ok = (i0 >= 0) & np.isfinite(take(i0))
    end_ok = (j1 < n_grid) & np.isfinite(take(j1))
    start = np.where(
        start_ok, _interp_crossing(grid[i0c], grid[i1c], take(i0c), take(i1c), level_left), np.nan
    )
    end = np.where(
        end_ok, _interp_crossing(grid[j0c], grid[j1c], take(j0c), take(j1c), level_right), np.nan
    )

    # Integral of the piecewise-linear curve above the base, from start to end.
    g0, g1 = grid[:-1], grid[1:]
    a = np.maximum(g0, start[..., None])
    b = np.minimum(g1, end[..., None])
    seg = (b > a) & valid[..., :-1] & valid[..., 1:]
    slope = (s[..., 1:] - s[..., :-1]) / step
    sa = s[..., :-1] + slope * (a - g0)
    sb = s[..., :-1] + slope * (b - g0)
    above = np.maximum(sa - base[..., None], 0.0) + np.maximum(sb - base[..., None], 0.0)
    integral = np.sum(np.where(seg, 0.5 * (b - a) * above, 0.0), axis=-1)
    integral = np.where(np.isfinite(start) & np.isfinite(end), integral, np.nan)

    # Dry/wet windows.
    dry_vals = np.where(valid & dry, s, np.nan)
    wet_vals = np.where(valid & wet, s, np.nan)
    n_dry = np.count_nonzero(valid & dry, axis=-1)
    n_wet = np.count_nonzero(valid & wet, axis=-1)
    dry_min = np.fmin.reduce(dry_vals, axis=-1)
    dry_mean = np.where(
        n_dry > 0, np.nansum(np.nan_to_num(dry_vals), axis=-1) / np.maximum(n_dry, 1), np.nan
    )
    wet_mean = np.where(
        n_wet > 0, np.nansum(np.nan_to_num(wet_vals), axis=-1) / np.maximum(n_wet, 1), np.nan
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(wet_mean > 0, dry_mean / np.where(wet_mean > 0, wet_mean, 1.0), np.nan)

    seasonal = usable & (amplitude >= params.min_amplitude)
    timing = {
        "start": start,
        "peak": peak_day,
        "end": end,
        "season_length": end - start,
        "integral": integral,
    }
    for name, value in timing.items():
        out[..., col[name]] = np.where(seasonal, value, np.nan)
    for name, day in (("start_doy", "start"), ("peak_doy", "peak"), ("end_doy", "end")):
        out[..., col[name]] = _day_of_year(out[..., col[day]], season_start)
    levels = {
        "peak_value": peak_value,
        "base": base,
        "amplitude": amplitude,
        "dry_min": dry_min,
        "dry_wet_ratio": ratio,
    }
    for name, value in levels.items():
        out[..., col[name]] = np.where(usable, value, np.nan)
    return out


#: Pixels processed together inside a block: bounds the smoother's (pixels, grid, k, k)
#: normal-equation arrays (~40 MB at 73 grid days) whatever the dask chunk size.
BATCH_PIXELS = 8192


def _batched(
    func: Callable[[NDArray[Any]], NDArray[Any]], values: NDArray[Any], width: int
) -> NDArray[np.float32]:
    """Apply ``func`` (``(P, T)`` → ``(P, width)``) to batches of pixels of ``(..., T)``."""
    lead = values.shape[:-1]
    flat = values.reshape(-1, values.shape[-1])
    out = np.empty((flat.shape[0], width), dtype=np.float32)
    for i in range(0, flat.shape[0], BATCH_PIXELS):
        out[i : i + BATCH_PIXELS] = func(flat[i : i + BATCH_PIXELS])
    return out.reshape(*lead, width)


def _block(
    values: NDArray[Any],
    *,
    t: F64,
    grid: F64,
    dry: NDArray[np.bool_],
    wet: NDArray[np.bool_],
    season_start: np.datetime64,
    params: PhenologyParams,
) -> NDArray[np.float32]:
    """All metrics of one block ``(..., T)`` → ``(..., len(METRICS))`` float32."""

    def metrics(batch: NDArray[Any]) -> F64:
        n_obs = np.count_nonzero(~np.isnan(batch), axis=-1)
        filled = fill_gaps(t, batch, grid, params.max_gap_days)
        smooth = savgol_nan(filled, params.half_window, params.polyorder)
        return season_metrics(
            grid, smooth, n_obs, params, dry=dry, wet=wet, season_start=season_start
        )

    return _batched(metrics, values, len(METRICS))


def _smooth_block(
    values: NDArray[Any], *, t: F64, grid: F64, params: PhenologyParams
) -> NDArray[np.float32]:
    """Gap-filled, smoothed series of one block ``(..., T)`` → ``(..., G)`` float32."""

    def smooth(batch: NDArray[Any]) -> F64:
        filled = fill_gaps(t, batch, grid, params.max_gap_days)
        return savgol_nan(filled, params.half_window, params.polyorder)

    return _batched(smooth, values, len(grid))


@dataclass(frozen=True)
class _Timeline:
    """Observation times and the regular grid, in days since the season start."""

    season_start: np.datetime64
    t: F64
    grid: F64
    grid_time: NDArray[np.datetime64]
    dry: NDArray[np.bool_]
    wet: NDArray[np.bool_]


def _timeline(times: NDArray[Any], params: PhenologyParams) -> _Timeline:
    stamps = np.asarray(times, dtype="datetime64[ns]")
    if len(stamps) == 0:
        raise ConfigError("phenology needs a series with at least one date: widen the period")
    first = stamps.min().astype("datetime64[D]").item()
    month, day = params.season_start
    s0 = date(first.year, month, day)
    if s0 > first:
        s0 = date(first.year - 1, month, day)
    season_start = np.datetime64(s0, "ns")
    t = (stamps - season_start) / np.timedelta64(1, "D")
    grid = regular_grid(np.asarray(t, dtype=np.float64), params.step_days)
    grid_time = season_start + np.round(grid * 86400e9).astype("timedelta64[ns]")
    months = grid_time.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return _Timeline(
        season_start=np.datetime64(s0, "D"),
        t=np.asarray(t, dtype=np.float64),
        grid=grid,
        grid_time=grid_time,
        dry=np.isin(months, params.dry_months),
        wet=np.isin(months, params.wet_months),
    )


def _sorted(series: xr.DataArray, dim: str) -> xr.DataArray:
    times = series[dim].values
    if len(times) > 1 and not bool(np.all(times[1:] >= times[:-1])):
        series = series.isel({dim: np.argsort(times, kind="stable")})
    return series if series.chunks is None else series.chunk({dim: -1})


def smooth_series(
    series: xr.DataArray, params: PhenologyParams | None = None, *, dim: str = "time"
) -> xr.DataArray:
    """Gap-filled, smoothed series on the regular grid (steps 1–3 of the module docstring).

    Args:
        series: Index ``(time, ...)`` with NaN where not clear; lazy or not.
        params: Gap, grid and smoothing parameters.
        dim: Time dimension (datetime64 coordinates).

    Returns:
        float32 DataArray with ``dim`` replaced by the grid's dates (last dimension).
    """
    params = params or PhenologyParams()
    line = _timeline(series[dim].values, params)
    out: xr.DataArray = xr.apply_ufunc(
        _smooth_block,
        _sorted(series, dim),
        input_core_dims=[[dim]],
        output_core_dims=[[dim]],
        exclude_dims={dim},
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {dim: len(line.grid)}},
        kwargs={"t": line.t, "grid": line.grid, "params": params},
    )
    return out.assign_coords({dim: line.grid_time}).rename(
        f"{series.name}_smooth" if series.name else None
    )


def phenology(
    series: xr.DataArray, params: PhenologyParams | None = None, *, dim: str = "time"
) -> xr.Dataset:
    """Per-pixel season metrics of a vegetation-index time series, lazy on dask.

    The time axis is gathered into one chunk per spatial chunk (a pixel's whole series is
    needed) and spatial chunks are kept, so memory follows the chunk size and results do
    not depend on the chunking.

    Args:
        series: Index ``(time, y, x)`` (any other dims are carried along) with NaN where not
            clear, e.g. ``ndvi(stack).where(clear_mask(stack))``; one season (a longer
            series gives the metrics of its highest peak).
        params: Method parameters (defaults: 5-day grid, gaps up to 45 days, 30-day
            Savitzky–Golay of degree 2, 50 % amplitude threshold, 1 July seasons).
        dim: Time dimension (datetime64 coordinates).

    Returns:
        Dataset with one float32 variable per entry of :data:`METRICS` (attribute ``units``)
        and attributes ``season_start`` (ISO date of day 0) and the parameters.
    """
    params = params or PhenologyParams()
    line = _timeline(series[dim].values, params)
    out: xr.DataArray = xr.apply_ufunc(
        _block,
        _sorted(series, dim),
        input_core_dims=[[dim]],
        output_core_dims=[["metric"]],
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"metric": len(METRICS)}},
        kwargs={
            "t": line.t,
            "grid": line.grid,
            "dry": line.dry,
            "wet": line.wet,
            "season_start": line.season_start,
            "params": params,
        },
    )
    data = {
        name: out.isel(metric=i, drop=True).assign_attrs(units=units)
        for i, (name, units) in enumerate(METRICS.items())
    }
    attrs: dict[str, Any] = {"season_start": str(line.season_start)}
    attrs.update({f"param_{k}": str(v) for k, v in vars(params).items()})
    return xr.Dataset(data, attrs=attrs)
