"""Yield baselines fitted on training unit-years only: pure pandas/numpy/scikit-learn, no I/O.

Every baseline takes a training table and a table of the unit-years to predict, and returns
``unit, year, predicted`` in the order of the latter. It reads the yields of the training
table only, so a forecast for a year cannot see that year's yield unless the caller put it
in the training table (a leave-one-year-out backtest does not).

The baselines follow CY-Bench (WUR-AI/AgML-CY-Bench), whose choices they copy:

* :func:`naive` is ``AverageYieldModel`` (``cybench/models/naive_models.py``): the mean of
  the unit's training yields over all its training years; a unit without training data gets
  the mean of all training yields.
* :func:`trend` is ``LinearTrend``, i.e. ``TrendModel`` (``cybench/models/trend_models.py``).
  For a unit and a target year ``Y`` it looks at the unit's training years before ``Y``: if
  there are at least ``min_window`` (5) of them, it tries the last ``i`` of them for ``i``
  from 5 to ``min(max_window, count)`` (``max_window`` 10), runs the original Mann-Kendall
  test (pymannkendall's ``original_test``, ``alpha`` 0.05) on each window's yields and keeps
  the significant window with the smallest p-value; an ordinary least-squares line through
  that window's (year, yield) is evaluated at ``Y``. If no window before ``Y`` is
  significant, the same search runs over the first years *after* ``Y``. Fewer than 5 years
  on both sides, or no significant window, falls back to the unit's mean yield (so a unit
  with one or two years gets its mean, not an error); a unit without training data gets the
  mean of all training yields (the ``Modeling`` repository's fixed version; the original
  returns NaN there).
* :func:`residual_forest` is ``RFRes`` (``cybench/models/residual_models.py`` with
  ``SklearnRandomForest`` of ``sklearn_models.py``): a random forest with 100 trees and
  ``min_samples_leaf=5`` fitted on trend residuals; forecast = trend + predicted residual.
  CY-Bench's training residual of unit-year ``(u, y)`` uses a trend fitted on the unit's
  *other* training years (falling back to the mean of all training yields when it has
  none); :class:`Trends` always leaves the evaluated year out, which gives exactly that.
  CY-Bench also grid-searches the number of trees (50/100/500, year-grouped CV); agrimon
  keeps 100 for speed and reproducibility.

Differences kept on purpose: Mann-Kendall runs on yields sorted by year (CY-Bench uses the
row order of its table, which is sorted by year in practice), and a duplicated unit-year or a
non-finite yield is an error rather than a silent input.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.ensemble import RandomForestRegressor

from agrimon.errors import TrainingError, YieldDataError

#: Columns of a yields table.
YIELD_COLUMNS = ("unit", "year", "yield")
#: Columns of the returned forecasts.
PREDICTION_COLUMNS = ("unit", "year", "predicted")

_KEY = ["unit", "year"]

# CY-Bench's TrendModel window bounds and the Mann-Kendall significance level it uses.
MIN_TREND_WINDOW = 5
MAX_TREND_WINDOW = 10
TREND_ALPHA = 0.05


def _check_keys(table: pd.DataFrame, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Return ``table``'s ``columns`` with typed ``unit``/``year``, refusing duplicates."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise YieldDataError(
            f"{name} table lacks column(s) {', '.join(missing)}; it needs {', '.join(columns)}"
        )
    out = table.loc[:, list(columns)].reset_index(drop=True)
    out["unit"] = out["unit"].astype(str)
    years = pd.to_numeric(out["year"], errors="coerce")
    if years.isna().any() or not np.all(np.mod(years, 1) == 0):
        raise YieldDataError(f"{name} table: column year must hold whole numbers (e.g. 2019)")
    out["year"] = years.astype(np.int64)
    duplicated = out.duplicated(_KEY)
    if duplicated.any():
        first = out.loc[duplicated, _KEY].iloc[0]
        raise YieldDataError(
            f"{name} table has {int(duplicated.sum())} duplicated unit-year(s), e.g. "
            f"{first['unit']} {first['year']}; keep one row per unit and year"
        )
    return out


def _check_yields(table: pd.DataFrame, name: str = "yields") -> pd.DataFrame:
    """Return a typed copy of a non-empty yields table with finite yields."""
    out = _check_keys(table, name, YIELD_COLUMNS)
    if out.empty:
        raise YieldDataError(f"{name} table is empty; give at least one unit-year of yields")
    out["yield"] = pd.to_numeric(out["yield"], errors="coerce").astype(np.float64)
    bad = ~np.isfinite(out["yield"].to_numpy())
    if bad.any():
        first = out.loc[bad, _KEY].iloc[0]
        raise YieldDataError(
            f"{name} table has {int(bad.sum())} missing or non-numeric yield(s), e.g. "
            f"{first['unit']} {first['year']}; drop those unit-years"
        )
    return out


def _predictions(targets: pd.DataFrame, predicted: NDArray[np.float64]) -> pd.DataFrame:
    """Assemble the ``unit, year, predicted`` output."""
    out = targets.loc[:, _KEY].copy()
    out["predicted"] = predicted
    return out


def naive(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Each unit's mean training yield (CY-Bench ``AverageYieldModel``).

    Args:
        train: Training yields, columns ``unit``, ``year``, ``yield``.
        test: Unit-years to predict, columns ``unit``, ``year`` (a ``yield`` is ignored).

    Returns:
        ``unit, year, predicted`` in the order of ``test``; a unit absent from ``train``
        gets the mean of all training yields.
    """
    yields = _check_yields(train, "training")
    targets = _check_keys(test, "test", ("unit", "year"))
    means = yields.groupby("unit")["yield"].mean()
    predicted = targets["unit"].map(means).fillna(yields["yield"].mean())
    return _predictions(targets, predicted.to_numpy(dtype=np.float64))


def mann_kendall(values: ArrayLike, *, alpha: float = TREND_ALPHA) -> tuple[bool, float]:
    """The original Mann-Kendall trend test, as pymannkendall's ``original_test``.

    ``S = Σ_{i<j} sign(x_j − x_i)``; its variance with the tie correction is
    ``(n(n−1)(2n+5) − Σ_t t(t−1)(2t+5)) / 18``; ``z = (S ∓ 1)/√var`` (continuity
    correction, 0 when ``S = 0``); two-sided ``p = 2(1 − Φ(|z|))``.

    Args:
        values: The series, in time order.
        alpha: Significance level.

    Returns:
        ``(h, p)``: whether a trend is significant (``|z| > Φ⁻¹(1 − alpha/2)``) and the
        p-value.
    """
    # Plain Python: windows hold at most a few dozen years, where numpy's call overhead
    # would cost twenty times the arithmetic.
    x = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    n = len(x)
    s = float(sum((b > a) - (b < a) for i, a in enumerate(x) for b in x[i + 1 :]))
    ties = Counter(x).values()
    var_s = (n * (n - 1) * (2 * n + 5) - sum(t * (t - 1) * (2 * t + 5) for t in ties)) / 18
    # Continuity correction: move S one step towards 0 before standardising.
    z = 0.0 if s == 0 or var_s <= 0 else (s - math.copysign(1.0, s)) / math.sqrt(var_s)
    p = math.erfc(abs(z) / math.sqrt(2.0))  # = 2 (1 − Φ(|z|)), without cancellation
    return abs(z) > NormalDist().inv_cdf(1 - alpha / 2), p


def _line_at(years: NDArray[np.int64], yields: NDArray[np.float64], year: int) -> float:
    """Least-squares line through (years, yields), evaluated at ``year``."""
    x = years.astype(np.float64)
    dx = x - x.mean()
    slope = float(np.sum(dx * (yields - yields.mean())) / np.sum(dx**2))
    return float(yields.mean()) + slope * (year - float(x.mean()))


@dataclass(frozen=True, eq=False)
class Trends:
    """Per-unit training yields and the CY-Bench trend rules to evaluate them at any year.

    The trend depends on the target year (its window is the years nearest to it), so what
    is stored is the unit's history, not one fitted line. Evaluating at a year always
    leaves that year out of the unit's history: for a test year it is not there anyway, for
    a training year it gives CY-Bench's out-of-year training residuals.

    Attributes:
        history: Per unit, its training years (sorted) and yields.
        global_mean: Mean of all training yields, for units with no (other) year.
        min_window: Fewest years a trend window may have.
        max_window: Most years a trend window may have.
        alpha: Mann-Kendall significance level for a window to count.
    """

    history: Mapping[str, tuple[NDArray[np.int64], NDArray[np.float64]]] = field(repr=False)
    global_mean: float
    min_window: int = MIN_TREND_WINDOW
    max_window: int = MAX_TREND_WINDOW
    alpha: float = TREND_ALPHA

    def value(self, unit: str, year: int) -> float:
        """The trend yield of ``unit`` at ``year``, fitted without ``year`` itself."""
        if unit not in self.history:
            return self.global_mean
        years, yields = self.history[unit]
        keep = years != year
        years, yields = years[keep], yields[keep]
        if years.size == 0:
            return self.global_mean
        before, after = years < year, years > year
        for side, backward in ((before, True), (after, False)):
            window = self._window(years[side], yields[side], backward=backward)
            if window is not None:
                return _line_at(*window, year)
        return float(yields.mean())

    def _window(
        self, years: NDArray[np.int64], yields: NDArray[np.float64], *, backward: bool
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]] | None:
        """The most significant Mann-Kendall window next to the target year, if any."""
        best: int | None = None
        best_p = math.inf
        for size in range(self.min_window, min(self.max_window, years.size) + 1):
            part = slice(years.size - size, None) if backward else slice(0, size)
            significant, p = mann_kendall(yields[part], alpha=self.alpha)
            if significant and p < best_p:
                best, best_p = size, p
        if best is None:
            return None
        part = slice(years.size - best, None) if backward else slice(0, best)
        return years[part], yields[part]

    def at(self, units: ArrayLike, years: ArrayLike) -> NDArray[np.float64]:
        """Trend yields for aligned arrays of units and years."""
        unit_list = [str(u) for u in np.asarray(units).reshape(-1)]
        year_list = [int(y) for y in np.asarray(years).reshape(-1)]
        if len(unit_list) != len(year_list):
            raise TrainingError(
                f"{len(unit_list)} units but {len(year_list)} years; pass one year per unit"
            )
        return np.array(
            [self.value(u, y) for u, y in zip(unit_list, year_list, strict=True)],
            dtype=np.float64,
        )


def fit_trends(
    yields_train: pd.DataFrame,
    *,
    min_window: int = MIN_TREND_WINDOW,
    max_window: int = MAX_TREND_WINDOW,
    alpha: float = TREND_ALPHA,
) -> Trends:
    """Collect the training yields the CY-Bench trend is evaluated from.

    Args:
        yields_train: Training yields, columns ``unit``, ``year``, ``yield``.
        min_window: Fewest years in a trend window (CY-Bench: 5); at least 2.
        max_window: Most years in a trend window (CY-Bench: 10).
        alpha: Mann-Kendall significance level (CY-Bench: 0.05).

    Returns:
        The :class:`Trends` to evaluate with :meth:`Trends.at`, :func:`detrend`,
        :func:`retrend`.
    """
    if min_window < 2 or max_window < min_window:
        raise TrainingError(
            f"trend window {min_window}..{max_window} is invalid; "
            "need 2 <= min_window <= max_window"
        )
    if not 0 < alpha < 1:
        raise TrainingError(f"trend significance level {alpha} must lie strictly in (0, 1)")
    yields = _check_yields(yields_train, "training").sort_values(_KEY)
    history = {
        str(unit): (
            group["year"].to_numpy(dtype=np.int64),
            group["yield"].to_numpy(dtype=np.float64),
        )
        for unit, group in yields.groupby("unit", sort=True)
    }
    return Trends(
        history=history,
        global_mean=float(yields["yield"].mean()),
        min_window=min_window,
        max_window=max_window,
        alpha=alpha,
    )


def detrend(yields: pd.DataFrame, trends: Trends) -> pd.DataFrame:
    """Residuals ``yield − trend`` of each unit-year.

    Args:
        yields: Columns ``unit``, ``year``, ``yield``.
        trends: From :func:`fit_trends`.

    Returns:
        ``unit, year, residual`` in the order of ``yields``.
    """
    table = _check_yields(yields)
    out = table.loc[:, _KEY].copy()
    out["residual"] = table["yield"].to_numpy() - trends.at(table["unit"], table["year"])
    return out


def retrend(residuals: pd.DataFrame, trends: Trends) -> pd.DataFrame:
    """Yields ``residual + trend`` of each unit-year: the inverse of :func:`detrend`.

    Args:
        residuals: Columns ``unit``, ``year``, ``residual``.
        trends: The same :class:`Trends` the residuals were computed with.

    Returns:
        ``unit, year, yield`` in the order of ``residuals``.
    """
    table = _check_keys(residuals, "residuals", ("unit", "year", "residual"))
    out = table.loc[:, _KEY].copy()
    values = table["residual"].to_numpy(dtype=np.float64)
    out["yield"] = values + trends.at(table["unit"], table["year"])
    return out


def trend(
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    min_window: int = MIN_TREND_WINDOW,
    max_window: int = MAX_TREND_WINDOW,
    alpha: float = TREND_ALPHA,
) -> pd.DataFrame:
    """CY-Bench's ``LinearTrend``: each unit's linear yield trend at the test year.

    Args:
        train: Training yields, columns ``unit``, ``year``, ``yield``.
        test: Unit-years to predict, columns ``unit``, ``year`` (a ``yield`` is ignored).
        min_window: See :func:`fit_trends`.
        max_window: See :func:`fit_trends`.
        alpha: See :func:`fit_trends`.

    Returns:
        ``unit, year, predicted`` in the order of ``test``.
    """
    trends = fit_trends(train, min_window=min_window, max_window=max_window, alpha=alpha)
    targets = _check_keys(test, "test", ("unit", "year"))
    return _predictions(targets, trends.at(targets["unit"], targets["year"]))


def feature_rows(features: pd.DataFrame, keys: pd.DataFrame, name: str) -> NDArray[np.float64]:
    """The feature matrix rows of ``keys``' unit-years, refusing any that are missing."""
    if features.index.nlevels != 2:
        raise YieldDataError(
            "features must be indexed by (unit, year); set_index(['unit', 'year']) first"
        )
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric or features.shape[1] == 0:
        raise YieldDataError(
            f"features need numeric columns only; not numeric: {', '.join(map(str, non_numeric))}"
            if non_numeric
            else "features have no columns; give at least one feature"
        )
    index = pd.MultiIndex.from_arrays(
        [
            features.index.get_level_values(0).astype(str),
            features.index.get_level_values(1).astype(np.int64),
        ]
    )
    if index.has_duplicates:
        raise YieldDataError("features have duplicated (unit, year) rows; keep one per unit-year")
    table = features.set_axis(index, axis=0)
    wanted = pd.MultiIndex.from_frame(keys.loc[:, _KEY])
    missing = ~wanted.isin(table.index)
    if missing.any():
        unit, year = wanted[missing][0]
        raise YieldDataError(
            f"features lack {int(missing.sum())} {name} unit-year(s), e.g. {unit} {year}; "
            "compute features for every unit-year to fit or predict"
        )
    return table.loc[wanted].to_numpy(dtype=np.float64)


def residual_forest(
    train: pd.DataFrame, test: pd.DataFrame, features: pd.DataFrame, **options: Any
) -> pd.DataFrame:
    """Trend plus a random forest of the trend residuals (CY-Bench ``RFRes``).

    Args:
        train: Training yields, columns ``unit``, ``year``, ``yield``.
        test: Unit-years to predict, columns ``unit``, ``year`` (a ``yield`` is ignored).
        features: Numeric features indexed by ``(unit, year)``, covering every unit-year
            of ``train`` and ``test``; the forest sees all its columns.
        **options: Those of :func:`fit_residual_forest` (trees, leaf size, seed, trend).

    Returns:
        ``unit, year, predicted`` in the order of ``test``.
    """
    targets = _check_keys(test, "test", ("unit", "year"))
    trends, forest = fit_residual_forest(train, features, **options)
    x_test = feature_rows(features, targets, "test")
    predicted = trends.at(targets["unit"], targets["year"]) + forest.predict(x_test)
    return _predictions(targets, np.asarray(predicted, dtype=np.float64))


def fit_residual_forest(
    train: pd.DataFrame,
    features: pd.DataFrame,
    *,
    n_estimators: int = 100,
    min_samples_leaf: int = 5,
    seed: int = 0,
    min_window: int = MIN_TREND_WINDOW,
    max_window: int = MAX_TREND_WINDOW,
    alpha: float = TREND_ALPHA,
) -> tuple[Trends, RandomForestRegressor]:
    """The unit trends of ``train`` and the forest fitted on their residuals.

    The forecast of a unit-year is the trend at it plus ``forest.predict`` of its feature
    row (:func:`feature_rows`).

    Args:
        train: Training yields, columns ``unit``, ``year``, ``yield``.
        features: Numeric features indexed by ``(unit, year)``, covering every unit-year
            of ``train``; the forest sees all its columns.
        n_estimators: Trees in the forest (CY-Bench: 100 of a 50/100/500 search).
        min_samples_leaf: Fewest training unit-years per leaf (CY-Bench: 5).
        seed: Random state of the forest; it runs on one core (``n_jobs=1``) so the result
            is the same everywhere.
        min_window: See :func:`fit_trends`.
        max_window: See :func:`fit_trends`.
        alpha: See :func:`fit_trends`.
    """
    trends = fit_trends(train, min_window=min_window, max_window=max_window, alpha=alpha)
    residuals = detrend(train, trends)
    x_train = feature_rows(features, residuals, "training")
    forest = RandomForestRegressor(
        n_estimators=n_estimators,
        min_samples_leaf=min_samples_leaf,
        random_state=seed,
        n_jobs=1,
    )
    forest.fit(x_train, residuals["residual"].to_numpy())
    return trends, forest
