"""Forecast metrics the way CY-Bench computes them: pure numpy/pandas, no I/O.

CY-Bench (WUR-AI/AgML-CY-Bench) scores a model per country *and per test year*:
``cybench/runs/run_benchmark.py`` (``compute_metrics``) splits the leave-one-year-out
predictions by year and calls ``cybench/evaluation/eval.py`` on each year's units:

* ``normalized_rmse``: ``100 · RMSE / mean(observed)`` over the units of that year;
* ``mape``: scikit-learn's ``mean_absolute_percentage_error`` (a fraction,
  ``mean(|y − ŷ| / max(|y|, eps))`` with ``eps`` the float64 machine epsilon), turned into a
  percentage (× 100) by ``cybench/runs/process_results.py``;
* ``r2``: scikit-learn's ``r2_score``.

The per-year values are then reduced over the years: the README's example takes the
*mean*, the published leaderboard tables (``process_results.write_results_to_table``) the
*median*. :func:`nrmse` takes the mean by default and the median on request. (The
dashboards of WUR-AI/AgML-CY-Bench-Modeling, ``cybench/evaluation/aggregated_metrics.py``,
show another NRMSE, pooled over all region-years, as a fraction of mean ``|observed|``;
it is not the benchmark's figure.)

What agrimon reports as single numbers (:func:`score`): NRMSE per year, reduced over the
years as above; MAPE and R² pooled over all unit-years (the per-year CY-Bench values are in
:func:`per_year`); interval coverage and mean width when the table has ``lo``/``hi``.

Unlike CY-Bench, which silently drops pairs with a NaN, a non-finite value is an error:
a NaN forecast is a bug to see, not a unit to forget.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from agrimon.errors import TrainingError

Reduce = Literal["mean", "median"]

#: Columns of a scored table; ``lo`` and ``hi`` are optional.
TABLE_COLUMNS = ("year", "observed", "predicted")

# scikit-learn's guard against division by zero in MAPE, which CY-Bench inherits.
_MAPE_EPS = float(np.finfo(np.float64).eps)


def finite_values(name: str, values: ArrayLike, *, use: str = "to score") -> NDArray[np.float64]:
    """Return ``values`` as a 1-D float array, refusing empty or non-finite input.

    Args:
        name: What the values are, for the message.
        values: The values.
        use: What they are for, in the message ("to score", "to calibrate").
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise TrainingError(f"{name}: no values {use}; give at least one unit-year")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise TrainingError(
            f"{name}: {bad} of {arr.size} values are NaN or infinite; "
            f"drop those unit-years or fix the forecast before using them {use}"
        )
    return arr


def _pair(
    observed: ArrayLike, predicted: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return observed and predicted as equal-length finite float arrays."""
    y = finite_values("observed", observed)
    p = finite_values("predicted", predicted)
    if y.shape != p.shape:
        raise TrainingError(
            f"observed has {y.size} values but predicted has {p.size}; pass one forecast "
            "per observed unit-year"
        )
    return y, p


def rmse(observed: ArrayLike, predicted: ArrayLike) -> float:
    """Root mean squared error over all values."""
    y, p = _pair(observed, predicted)
    return float(np.sqrt(np.mean((p - y) ** 2)))


def nrmse_of(observed: ArrayLike, predicted: ArrayLike) -> float:
    """CY-Bench's ``normalized_rmse`` of one group: ``100 · RMSE / mean(observed)``.

    Args:
        observed: Observed yields of the group (one test year).
        predicted: Forecasts, aligned with ``observed``.

    Returns:
        The NRMSE in percent of the group's mean observed yield.

    Raises:
        TrainingError: If the mean observed yield is not positive (no scale to divide by).
    """
    y, p = _pair(observed, predicted)
    mean_y = float(np.mean(y))
    if mean_y <= 0:
        raise TrainingError(
            f"mean observed yield is {mean_y:g}; NRMSE needs a positive mean, "
            "check the yield units or drop the year"
        )
    return 100.0 * float(np.sqrt(np.mean((p - y) ** 2))) / mean_y


def nrmse_per_year(observed: ArrayLike, predicted: ArrayLike, years: ArrayLike) -> pd.Series[float]:
    """NRMSE of each test year over that year's units, as in CY-Bench's ``compute_metrics``.

    Args:
        observed: Observed yields, one per unit-year.
        predicted: Forecasts, aligned with ``observed``.
        years: The test year of each value.

    Returns:
        NRMSE in percent, indexed by year (sorted).
    """
    y, p = _pair(observed, predicted)
    yr = np.asarray(years).reshape(-1)
    if yr.shape != y.shape:
        raise TrainingError(
            f"years has {yr.size} values but observed has {y.size}; pass one year per value"
        )
    frame = pd.DataFrame({"year": yr, "observed": y, "predicted": p})
    values = {
        year: nrmse_of(group["observed"], group["predicted"])
        for year, group in frame.groupby("year", sort=True)
    }
    return pd.Series(values, name="nrmse", dtype=np.float64).rename_axis("year")


def nrmse(
    observed: ArrayLike, predicted: ArrayLike, years: ArrayLike, *, reduce: Reduce = "mean"
) -> float:
    """CY-Bench NRMSE: per test year ``100 · RMSE / mean(observed)``, reduced over years.

    Args:
        observed: Observed yields, one per unit-year.
        predicted: Forecasts, aligned with ``observed``.
        years: The test year of each value.
        reduce: ``"mean"`` over years (CY-Bench README) or ``"median"`` (its leaderboard).

    Returns:
        The NRMSE in percent.
    """
    per_year = nrmse_per_year(observed, predicted, years)
    return float(per_year.mean() if reduce == "mean" else per_year.median())


def mape(observed: ArrayLike, predicted: ArrayLike) -> float:
    """Mean absolute percentage error in percent, pooled over all values.

    The denominator is ``max(|observed|, eps)`` as in scikit-learn (and so CY-Bench): a zero
    observed yield gives an enormous value rather than a division error.
    """
    y, p = _pair(observed, predicted)
    return 100.0 * float(np.mean(np.abs(p - y) / np.maximum(np.abs(y), _MAPE_EPS)))


def r2(observed: ArrayLike, predicted: ArrayLike) -> float:
    """Coefficient of determination ``1 − SS_res / SS_tot`` pooled over all values.

    Returns NaN when the observations are all equal (``SS_tot = 0``): there is no variance
    to explain, and a forced 0 or 1 would read as a result.
    """
    y, p = _pair(observed, predicted)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(np.sum((y - p) ** 2)) / ss_tot


def _interval(lo: ArrayLike, hi: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return the bounds as equal-length finite float arrays."""
    low = finite_values("lo", lo)
    high = finite_values("hi", hi)
    if low.shape != high.shape:
        raise TrainingError(f"lo has {low.size} values but hi has {high.size}; pass both bounds")
    return low, high


def coverage(observed: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> float:
    """Share of observed values inside their closed interval ``[lo, hi]``."""
    y = finite_values("observed", observed)
    low, high = _interval(lo, hi)
    if low.shape != y.shape:
        raise TrainingError(
            f"observed has {y.size} values but the intervals {low.size}; pass one per value"
        )
    return float(np.mean((low <= y) & (y <= high)))


def mean_width(lo: ArrayLike, hi: ArrayLike) -> float:
    """Mean width ``hi − lo`` of the intervals."""
    low, high = _interval(lo, hi)
    return float(np.mean(high - low))


def _check_table(table: pd.DataFrame) -> None:
    """Refuse a table without the scored columns."""
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise TrainingError(
            f"forecast table lacks column(s) {', '.join(missing)}; "
            f"it needs {', '.join(TABLE_COLUMNS)} (and optionally lo, hi)"
        )


def per_year(table: pd.DataFrame) -> pd.DataFrame:
    """CY-Bench's per-year metrics: NRMSE, MAPE and R² over each year's units.

    Args:
        table: Columns ``year``, ``observed``, ``predicted``.

    Returns:
        One row per year (index ``year``, sorted) with columns ``n``, ``nrmse``, ``mape``
        and ``r2`` (NaN for a year whose observations are all equal).
    """
    _check_table(table)
    rows = {
        year: {
            "n": len(group),
            "nrmse": nrmse_of(group["observed"], group["predicted"]),
            "mape": mape(group["observed"], group["predicted"]),
            "r2": r2(group["observed"], group["predicted"]),
        }
        for year, group in table.groupby("year", sort=True)
    }
    out = pd.DataFrame.from_dict(rows, orient="index").rename_axis("year")
    return out.astype({"n": np.int64})


def score(table: pd.DataFrame, *, reduce: Reduce = "mean") -> dict[str, float]:
    """The headline metrics of a forecast table.

    Args:
        table: Columns ``year``, ``observed``, ``predicted``, optionally ``lo`` and ``hi``.
        reduce: How per-year NRMSE is reduced over years (see :func:`nrmse`).

    Returns:
        ``nrmse`` (per year, reduced), ``mape`` and ``r2`` (pooled over unit-years), and
        ``coverage`` and ``mean_width`` when the table has both ``lo`` and ``hi``.
    """
    _check_table(table)
    y, p, years = table["observed"], table["predicted"], table["year"]
    out = {
        "nrmse": nrmse(y, p, years, reduce=reduce),
        "mape": mape(y, p),
        "r2": r2(y, p),
    }
    if "lo" in table.columns and "hi" in table.columns:
        out["coverage"] = coverage(y, table["lo"], table["hi"])
        out["mean_width"] = mean_width(table["lo"], table["hi"])
    return out
