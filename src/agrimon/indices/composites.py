"""Temporal composites over a scene stack's time axis.

A composite reduces every pixel's observations within a :class:`Period` (a calendar month, a
custom season, a rolling window) to one value: median, mean, max, min, any percentile, the
clear-observation count, or the greenest-pixel (max-NDVI) composite of all bands.

Everything is lazy on dask: each reducer is a NumPy function over the *last* axis applied
with ``xr.apply_ufunc(..., dask="parallelized")`` after the time axis is gathered into one
chunk per spatial chunk (a pixel's whole series is needed), so memory follows the spatial
chunk size and the output keeps the input's spatial chunks. Missing observations (clouds,
nodata) are NaN and are ignored; a pixel without any observation in a period is NaN (count
0), never an error.

The NaN-aware percentile sorts every pixel's series at once (NaN last) and picks the order
statistics, with the linear interpolation of Hyndman & Fan (1996) definition 7, i.e.
``np.nanpercentile(..., method="linear")``: for ``n`` valid values sorted as
``v[0] <= ... <= v[n-1]`` and ``h = (n - 1) q / 100``,

    P(q) = v[⌊h⌋] + (h - ⌊h⌋) (v[⌊h⌋ + 1] - v[⌊h⌋]).

``np.nanpercentile``/``np.nanmedian`` instead loop over pixels in Python for arrays with
NaN, which is what makes them slow on image stacks. A composite's series are short (a few
to a few dozen dates), so they are sorted by a sorting network applied to all pixels at
once: element-wise minima and maxima of whole rows of dates, which every CPU runs as SIMD,
in strips of pixels that stay in its cache. One ``np.sort`` per pixel's few values costs
several times more, and how much more depends on the CPU's sort kernels (AVX-512 hides
much of it, AVX2 does not).

Reference: Hyndman, R. J. & Fan, Y. (1996), Sample quantiles in statistical packages,
The American Statistician 50(4), 361–365.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import Any, Literal, TypeVar

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from agrimon.errors import ConfigError

#: Reducers of :func:`temporal_reduce` and :func:`composite`.
Reducer = Literal["median", "mean", "max", "min", "percentile", "count"]
REDUCERS: tuple[str, ...] = ("median", "mean", "max", "min", "percentile", "count")


# --- periods --------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A named span of days, both ends inclusive.

    Attributes:
        name: Label of the period in the composite's ``period`` coordinate.
        start: First day.
        end: Last day (inclusive: an observation at any time of that day belongs to it).
    """

    name: str
    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ConfigError(
                f"period '{self.name}' ends ({self.end}) before it starts ({self.start}): "
                "swap or fix its dates"
            )

    @property
    def days(self) -> int:
        """Length in days, both ends counted."""
        return (self.end - self.start).days + 1


def _check_range(start: date, end: date) -> None:
    if end < start:
        raise ConfigError(f"end {end} is before start {start}: give start <= end")


def season_period(start: date, end: date, name: str | None = None) -> Period:
    """One custom period, e.g. a growing season (default name ``"<start>/<end>"``)."""
    _check_range(start, end)
    return Period(name or f"{start.isoformat()}/{end.isoformat()}", start, end)


def monthly_periods(start: date, end: date) -> tuple[Period, ...]:
    """Calendar months from ``start`` to ``end``, clipped to that range.

    Each period is named ``YYYY-MM``; the first and last months start/end at ``start`` and
    ``end`` when those fall inside a month (so a composite never reaches outside the
    requested dates).
    """
    _check_range(start, end)
    out: list[Period] = []
    year, month = start.year, start.month
    while date(year, month, 1) <= end:
        last = date(year, month, calendar.monthrange(year, month)[1])
        out.append(
            Period(f"{year:04d}-{month:02d}", max(start, date(year, month, 1)), min(end, last))
        )
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return tuple(out)


def rolling_periods(start: date, end: date, window_days: int, step_days: int) -> tuple[Period, ...]:
    """Windows of ``window_days`` days starting every ``step_days`` days from ``start``.

    Only whole windows that end on or before ``end`` are returned (e.g. 30-day windows every
    15 days); each is named ``"<first day>/<last day>"``.

    Raises:
        ConfigError: When a length is not positive or the range is shorter than one window.
    """
    _check_range(start, end)
    if window_days < 1 or step_days < 1:
        raise ConfigError(
            f"rolling window {window_days} d every {step_days} d: both must be at least 1 day"
        )
    span = (end - start).days + 1
    if span < window_days:
        raise ConfigError(
            f"{start}..{end} spans {span} days, less than one {window_days}-day window: "
            "shorten the window or widen the dates"
        )
    out = []
    first = start
    while first + timedelta(days=window_days - 1) <= end:
        last = first + timedelta(days=window_days - 1)
        out.append(Period(f"{first.isoformat()}/{last.isoformat()}", first, last))
        first += timedelta(days=step_days)
    return tuple(out)


def period_index(times: ArrayLike, period: Period) -> NDArray[np.intp]:
    """Positions of ``times`` (datetime64) on the days of ``period`` (ends inclusive)."""
    days = np.asarray(times, dtype="datetime64[ns]").astype("datetime64[D]")
    lo, hi = np.datetime64(period.start, "D"), np.datetime64(period.end, "D")
    return np.flatnonzero((days >= lo) & (days <= hi))


# --- NumPy reducers over the last axis ------------------------------------------------


def _float(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """``dtype`` if floating, else float64 (results that can be NaN)."""
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _float_dtype(values: NDArray[Any]) -> np.dtype[Any]:
    return _float(values.dtype)


#: Longest series sorted by a sorting network (:func:`_network`); longer ones use np.sort.
NETWORK_MAX = 96
#: Values per strip of pixels sorted at once: small enough to stay in a core's cache.
STRIP_VALUES = 1 << 18


@cache
def _network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort of ``n`` values.

    The network for the next power of two, without the comparators that reach beyond
    ``n``: those would compare with padding that is larger than every value, and never
    swap. Reference: Batcher (1968), Sorting networks and their applications, AFIPS
    Spring Joint Computer Conference 32, 307–314.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return tuple(pairs)


def _sorted_series(block: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.intp]]:
    """Each column of ``block`` ``(time, pixels)`` sorted, NaN last (as +inf).

    The columns are sorted all at once by the comparators of :func:`_network`, each one an
    element-wise minimum and maximum of two rows, so the work is SIMD across pixels whatever
    the CPU, instead of one short sort per pixel.

    Returns:
        ``(sorted values (time, pixels), valid values per pixel)``.
    """
    length = block.shape[0]
    if np.issubdtype(block.dtype, np.floating):
        missing = np.isnan(block)
        count = length - np.count_nonzero(missing, axis=0)
        work = np.fmin(block, np.inf)  # NaN → +inf: sorts last
    else:
        count = np.full(block.shape[1], length, dtype=np.intp)
        work = block.copy()
    rows = list(work)
    spare = np.empty_like(rows[0])
    for i, j in _network(length):
        np.minimum(rows[i], rows[j], out=spare)
        np.maximum(rows[i], rows[j], out=rows[j])
        rows[i], spare = spare, rows[i]
    return np.stack(rows), count


def nanpercentile_last(values: NDArray[Any], q: ArrayLike) -> NDArray[np.floating]:
    """Percentiles over the last axis ignoring NaN; NaN where no value is present.

    Equal to ``np.nanpercentile(values, q, axis=-1, method="linear")`` (up to rounding: the
    interpolation runs in float64) but vectorised: each pixel's series is sorted (NaN
    last), then the two order statistics around ``h = (n - 1) q / 100`` of its ``n`` valid
    values are interpolated. Short series (up to :data:`NETWORK_MAX` values, a composite's
    dates) are sorted by a sorting network across pixels, in strips that stay in the CPU's
    cache (see :func:`_sorted_series`); longer ones by ``np.sort``.

    Args:
        values: Array whose last axis is time.
        q: Percentile(s) in ``[0, 100]``; a scalar or an array of any shape.

    Returns:
        Array of shape ``values.shape[:-1] + np.shape(q)`` (the percentile axes *last*, unlike
        NumPy) in the input's float dtype (float64 for integer input).
    """
    values = np.asarray(values)
    dtype = _float_dtype(values)
    qs = np.asarray(q, dtype=np.float64)
    if np.any(~(qs >= 0) | ~(qs <= 100)):
        raise ConfigError(f"percentiles {qs.tolist()} are not all within 0..100: fix q")
    lead, length = values.shape[:-1], values.shape[-1]
    if length == 0:
        return np.full(lead + qs.shape, np.nan, dtype=dtype)
    if length > NETWORK_MAX:
        ordered = np.sort(values, axis=-1)
        n = np.count_nonzero(~np.isnan(values), axis=-1)
        flat = _order_statistics(
            np.moveaxis(ordered, -1, 0).reshape(length, -1), n.reshape(-1), qs.ravel()
        )
        return flat.reshape(lead + qs.shape).astype(dtype)
    # Time first: one row per date, pixels along the rows (a view of a dask block).
    series = np.moveaxis(values, -1, 0).reshape(length, -1)
    pixels = series.shape[1]
    out = np.empty((pixels, qs.size), dtype=dtype)
    step = max(STRIP_VALUES // length, 1)
    for start in range(0, pixels, step):
        ordered, n = _sorted_series(series[:, start : start + step])
        out[start : start + step] = _order_statistics(ordered, n, qs.ravel())
    return out.reshape(lead + qs.shape)


def _order_statistics(
    ordered: NDArray[Any], n: NDArray[np.integer], qs: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Percentiles ``(pixels, len(qs))`` from sorted series ``(time, pixels)`` (valid first).

    ``n`` holds each pixel's number of valid values; linear interpolation of Hyndman & Fan
    definition 7 between the order statistics around ``h = (n - 1) q / 100``, in float64.
    """
    if qs.shape == (1,) and qs[0] == 50.0:
        return _median_of_sorted(ordered, n)[:, None]
    count = n[:, None]
    h = (count - 1) * (qs / 100.0)
    lo = np.floor(np.maximum(h, 0.0)).astype(np.intp)
    hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
    t = h - lo
    column = np.arange(ordered.shape[1])[:, None]
    a = ordered[lo, column].astype(np.float64)
    b = ordered[hi, column].astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf where a pixel has no value
        diff = b - a
        # NumPy's _lerp: interpolate from the nearer end, exact at t = 0 and t = 1.
        out = np.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)
    return np.where(count > 0, out, np.nan)


def _median_of_sorted(ordered: NDArray[Any], n: NDArray[np.integer]) -> NDArray[np.float64]:
    """:func:`_order_statistics` at q = 50, with the same float64 operations.

    Without the general rank arithmetic: ``v[k]`` for odd ``n`` (``k = (n - 1) / 2``,
    ``t = 0``), and ``v[k + 1] - (v[k + 1] - v[k]) * 0.5`` for even ``n`` (``t = 0.5``).
    """
    pixels = ordered.shape[1]
    lo = np.maximum((n - 1) // 2, 0)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    flat, column = ordered.reshape(-1), np.arange(pixels)
    a = flat.take(lo * pixels + column).astype(np.float64)
    b = flat.take(hi * pixels + column).astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf where a pixel has no value
        diff = b - a
        out = np.where(n % 2 == 1, a + diff * 0.0, b - diff * 0.5)
    return np.where(n > 0, out, np.nan)


def nanmedian_last(values: NDArray[Any]) -> NDArray[np.floating]:
    """Median over the last axis ignoring NaN; NaN where no value is present.

    The 50th percentile of :func:`nanpercentile_last`: one vectorised sort instead of
    ``np.nanmedian``'s per-pixel Python-level work.
    """
    return nanpercentile_last(values, 50.0)


def nancount_last(values: NDArray[Any]) -> NDArray[np.uint16]:
    """Valid observations over the last axis: True values of a boolean mask, else non-NaN."""
    values = np.asarray(values)
    valid = values if values.dtype == np.bool_ else ~np.isnan(values)
    return np.asarray(np.count_nonzero(valid, axis=-1), dtype=np.uint16)


def nanmean_last(values: NDArray[Any]) -> NDArray[np.floating]:
    """Mean over the last axis ignoring NaN (float64 sums); NaN where no value is present."""
    values = np.asarray(values)
    valid = ~np.isnan(values)
    n = np.count_nonzero(valid, axis=-1)
    total = np.sum(np.where(valid, values, 0.0), axis=-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return out.astype(_float_dtype(values))


def nanmax_last(values: NDArray[Any]) -> NDArray[np.floating]:
    """Maximum over the last axis ignoring NaN (``np.fmax``); NaN where no value is present."""
    values = np.asarray(values)
    if values.shape[-1] == 0:
        return np.full(values.shape[:-1], np.nan, dtype=_float_dtype(values))
    return np.asarray(np.fmax.reduce(values, axis=-1), dtype=_float_dtype(values))


def nanmin_last(values: NDArray[Any]) -> NDArray[np.floating]:
    """Minimum over the last axis ignoring NaN (``np.fmin``); NaN where no value is present."""
    values = np.asarray(values)
    if values.shape[-1] == 0:
        return np.full(values.shape[:-1], np.nan, dtype=_float_dtype(values))
    return np.asarray(np.fmin.reduce(values, axis=-1), dtype=_float_dtype(values))


def argmax_valid_last(values: NDArray[Any]) -> NDArray[np.int32]:
    """Position of the maximum over the last axis among non-NaN values; −1 where none.

    Ties go to the earliest position.
    """
    values = np.asarray(values)
    if values.shape[-1] == 0:
        return np.full(values.shape[:-1], -1, dtype=np.int32)
    valid = ~np.isnan(values)
    best = np.argmax(np.where(valid, values, -np.inf), axis=-1)
    return np.where(valid.any(axis=-1), best, -1).astype(np.int32)


def take_last(values: NDArray[Any], index: NDArray[np.integer]) -> NDArray[np.floating]:
    """``values[..., index]`` per pixel; NaN where ``index`` is −1."""
    values = np.asarray(values)
    dtype = _float_dtype(values)
    if values.shape[-1] == 0:
        return np.full(values.shape[:-1], np.nan, dtype=dtype)
    safe = np.maximum(index, 0)[..., None].astype(np.intp)
    picked = np.take_along_axis(values, safe, axis=-1)[..., 0].astype(dtype)
    return np.where(index >= 0, picked, np.nan).astype(dtype)


# --- xarray wrappers ------------------------------------------------------------------


def _gathered(data: xr.DataArray, dim: str) -> xr.DataArray:
    """``data`` with ``dim`` in one chunk (spatial chunks kept) when it is dask-backed."""
    if data.chunks is not None and data.sizes[dim] > 0:
        return data.chunk({dim: -1})
    return data


def _empty(data: xr.DataArray, dim: str, dtype: np.dtype[Any] | type) -> xr.DataArray:
    """Result for a period without observations: NaN (0 for integers, NaT for dates)."""
    kind = np.dtype(dtype).kind
    fill: Any = 0 if kind in "ui" else np.datetime64("NaT", "ns") if kind == "M" else np.nan
    template = data.sum(dim)  # right shape and chunks, lazy on dask
    return xr.full_like(template, fill, dtype=dtype).assign_attrs(data.attrs)


def _apply_last(
    func: Callable[..., NDArray[Any]],
    data: xr.DataArray,
    dim: str,
    dtype: np.dtype[Any] | type,
    **kwargs: Any,
) -> xr.DataArray:
    if data.sizes[dim] == 0:
        return _empty(data, dim, dtype)
    out: xr.DataArray = xr.apply_ufunc(
        _reduce_last,
        _gathered(data, dim),
        input_core_dims=[[dim]],
        dask="allowed",
        keep_attrs=True,
        kwargs={"func": func, "dtype": np.dtype(dtype), **kwargs},
    )
    return out


def _reduce_last(
    values: Any, *, func: Callable[..., Any], dtype: np.dtype[Any], **kwargs: Any
) -> Any:
    """``func`` over the last axis, per block on dask (that axis is one chunk).

    Each block is handed over as it is: ``apply_ufunc(dask="parallelized")`` and
    ``map_blocks(drop_axis=...)`` would first copy it into a new array (dask concatenates
    the blocks along a dropped axis, even one).
    """
    if not isinstance(values, da.Array):
        return func(values, **kwargs)
    kept = tuple(range(values.ndim - 1))
    return da.blockwise(  # type: ignore[no-untyped-call]
        _one_block,
        kept,
        values,
        (*kept, values.ndim - 1),
        concatenate=False,
        dtype=dtype,
        meta=np.empty((0,) * len(kept), dtype=dtype),
        reducer=func,
        **kwargs,
    )


def _one_block(blocks: list[NDArray[Any]], *, reducer: Callable[..., Any], **kwargs: Any) -> Any:
    (block,) = blocks  # the one chunk along the reduced axis
    return reducer(block, **kwargs)


def temporal_reduce(
    data: xr.DataArray,
    reducer: Reducer,
    *,
    q: float | None = None,
    dim: str = "time",
) -> xr.DataArray:
    """Reduce ``dim`` with a NaN-aware reducer, lazily on dask.

    Args:
        data: Observations with NaN where missing (e.g. NDVI masked with the clear mask), or
            a boolean clear mask for ``"count"``.
        reducer: ``median``, ``mean``, ``max``, ``min``, ``percentile`` (with ``q``) or
            ``count`` (number of valid observations, uint16).
        q: Percentile in ``[0, 100]`` for ``reducer="percentile"``.
        dim: Dimension to reduce.

    Returns:
        The reduced array, float (the input's float dtype) or uint16 for ``count``; NaN (0
        for ``count``) where a pixel has no observation.
    """
    if reducer not in REDUCERS:
        raise ConfigError(f"unknown composite reducer '{reducer}': choose from {REDUCERS}")
    if reducer == "count":
        return _apply_last(nancount_last, data, dim, np.uint16)
    dtype = _float(data.dtype)
    if reducer == "percentile":
        if q is None:
            raise ConfigError("the percentile composite needs q (0..100), e.g. q=90")
        return _apply_last(nanpercentile_last, data, dim, dtype, q=float(q))
    funcs: dict[str, Callable[[NDArray[Any]], NDArray[Any]]] = {
        "median": nanmedian_last,
        "mean": nanmean_last,
        "max": nanmax_last,
        "min": nanmin_last,
    }
    return _apply_last(funcs[reducer], data, dim, dtype)


def median(data: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """NaN-aware median composite along ``dim``, lazy on dask arrays.

    The time axis is gathered into one chunk per pixel block (a pixel's whole series is
    needed); spatial chunks are kept, so memory follows the chunk size.
    """
    out = temporal_reduce(data, "median", dim=dim)
    return out.rename(f"{data.name}_median" if data.name else None)


_T = TypeVar("_T", xr.DataArray, xr.Dataset)


def _by_period(parts: Sequence[_T], periods: Sequence[Period]) -> _T:
    """Concatenate per-period results along ``period`` with name/start/end coordinates."""
    out = xr.concat(list(parts), dim="period", coords="minimal", compat="override", join="exact")
    return out.assign_coords(
        period=("period", np.array([p.name for p in periods], dtype=np.str_)),
        period_start=("period", np.array([p.start for p in periods], dtype="datetime64[ns]")),
        period_end=("period", np.array([p.end for p in periods], dtype="datetime64[ns]")),
    )


def _check_periods(periods: Sequence[Period]) -> None:
    if not periods:
        raise ConfigError("no composite periods given: pass at least one Period")
    names = [p.name for p in periods]
    if len(set(names)) != len(names):
        raise ConfigError(f"composite period names repeat ({names}): give each a unique name")


def composite(
    data: xr.DataArray,
    periods: Sequence[Period],
    reducer: Reducer = "median",
    *,
    q: float | Sequence[float] | None = None,
    dim: str = "time",
) -> xr.DataArray:
    """Composite of ``data`` in each period, stacked along a new ``period`` dimension.

    Args:
        data: Observations ``(time, y, x)`` with NaN where missing (or a boolean clear mask
            for ``"count"``); ``dim`` must carry datetime64 coordinates.
        periods: Periods to composite (see :func:`monthly_periods`, :func:`rolling_periods`,
            :func:`season_period`); observations are picked by calendar day, ends inclusive.
        reducer: See :func:`temporal_reduce`.
        q: Percentile(s) for ``reducer="percentile"``: a number, or a sequence of numbers
            which adds a ``quantile`` dimension (last).
        dim: Time dimension.

    Returns:
        DataArray ``(period, ...)`` with coordinates ``period`` (names), ``period_start`` and
        ``period_end``; periods without observations are NaN (count 0).
    """
    _check_periods(periods)
    times = data[dim].values
    multi = q is not None and not isinstance(q, int | float)
    if multi:
        qs: list[float | None] = [float(v) for v in q]  # type: ignore[union-attr]
    else:
        qs = [None if q is None else float(q)]  # type: ignore[arg-type]
    parts = []
    for period in periods:
        sub = data.isel({dim: period_index(times, period)})
        per_q = [temporal_reduce(sub, reducer, q=v, dim=dim) for v in qs]
        if multi:
            stacked = xr.concat(per_q, dim=pd.Index(qs, name="quantile"))
            parts.append(stacked.transpose(..., "quantile"))
        else:
            parts.append(per_q[0])
    out = _by_period(parts, periods)
    suffix: str = reducer
    if reducer == "percentile":
        suffix = "p" + "_".join(f"{v:g}" for v in qs if v is not None)
    return out.rename(f"{data.name}_{suffix}" if data.name else None)


def greenest(
    stack: xr.Dataset,
    ndvi: xr.DataArray,
    *,
    bands: Sequence[str] | None = None,
    dim: str = "time",
) -> xr.Dataset:
    """Greenest-pixel (max-NDVI) composite of all bands over the whole of ``dim``.

    For each pixel, the date where ``ndvi`` is highest among its non-NaN (clear) values is
    chosen and every band is taken from that same date, so the composite is a physically
    consistent spectrum (Holben 1986, Characteristics of maximum-value composite images from
    temporal AVHRR data, Int. J. Remote Sensing 7(11)). Ties go to the earliest date.

    Args:
        stack: Scene stack ``(time, y, x)``.
        ndvi: NDVI with NaN where not clear (e.g. ``ndvi(stack).where(clear)``).
        bands: Variables to composite; default every floating-point variable with ``dim``.
        dim: Time dimension.

    Returns:
        Dataset with the composited bands, ``ndvi`` (the maximum) and ``greenest_time``
        (datetime64, NaT where a pixel has no clear observation).
    """
    names = (
        list(bands)
        if bands is not None
        else [
            str(k)
            for k, v in stack.data_vars.items()
            if dim in v.dims and np.issubdtype(v.dtype, np.floating)
        ]
    )
    missing = [b for b in names if b not in stack]
    if missing:
        raise ConfigError(f"greenest composite: stack has no band(s) {missing}: drop them")
    if ndvi.sizes[dim] == 0:
        empty = {b: _empty(stack[b], dim, _float(stack[b].dtype)) for b in names}
        empty["ndvi"] = _empty(ndvi, dim, _float(ndvi.dtype))
        empty["greenest_time"] = _empty(ndvi, dim, np.dtype("datetime64[ns]"))
        return xr.Dataset(empty)
    index = _apply_last(argmax_valid_last, ndvi, dim, np.int32)
    out: dict[str, xr.DataArray] = {}
    for name in [*names, "ndvi"]:
        var = ndvi if name == "ndvi" else stack[name]
        out[name] = xr.apply_ufunc(
            take_last,
            _gathered(var, dim),
            index,
            input_core_dims=[[dim], []],
            dask="parallelized",
            output_dtypes=[_float(var.dtype)],
            keep_attrs=True,
        )
    times = np.asarray(ndvi[dim].values, dtype="datetime64[ns]")
    out["greenest_time"] = xr.apply_ufunc(
        lambda i: np.where(i >= 0, times[np.maximum(i, 0)], np.datetime64("NaT", "ns")),
        index,
        dask="parallelized",
        output_dtypes=[np.dtype("datetime64[ns]")],
    )
    return xr.Dataset(out)


def greenest_composite(
    stack: xr.Dataset,
    ndvi: xr.DataArray,
    periods: Sequence[Period],
    *,
    bands: Sequence[str] | None = None,
    dim: str = "time",
) -> xr.Dataset:
    """Greenest-pixel composite (see :func:`greenest`) in each period, along ``period``."""
    _check_periods(periods)
    times = ndvi[dim].values
    parts = []
    for period in periods:
        idx = period_index(times, period)
        parts.append(greenest(stack.isel({dim: idx}), ndvi.isel({dim: idx}), bands=bands, dim=dim))
    return _by_period(parts, periods)
