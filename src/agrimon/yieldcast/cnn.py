"""The Torch model as a backtest model: its inputs from :class:`YieldData`, fit and forecast.

:class:`SeasonInputs` bins every unit-year's season at every lead once
(:func:`agrimon.yieldcast.features.season_series`) and hands out rows of it;
:func:`fit_cnn` trains :mod:`agrimon.yieldcast.model` on the trend residuals of training
unit-years (one network for all leads), and :func:`cnn_forecaster` wraps both as a
:class:`~agrimon.yieldcast.backtest.Forecaster`. A fit serves the three leads: it is kept
for the training set it was made on, so a backtest trains once per training set, not
once per lead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from agrimon.yieldcast import baselines
from agrimon.yieldcast import model as nets
from agrimon.yieldcast.data import YieldData
from agrimon.yieldcast.features import LEADS, STEPS, Lead, season_series

#: Fits kept by :func:`cnn_forecaster`: more than a backtest year's training sets.
CACHE_FITS = 16


@dataclass(eq=False)
class SeasonInputs:
    """The model inputs of every unit-year of a :class:`YieldData`, at every lead.

    Attributes:
        data: The data.
        years: Harvest years binned (those with yields, plus any forecast year asked for).
        steps: Bins per season.
    """

    data: YieldData
    years: tuple[int, ...]
    steps: int = STEPS
    _series: dict[Lead, NDArray[np.float32]] = field(default_factory=dict, repr=False)
    _rows: pd.Series | None = field(default=None, repr=False)

    def _binned(self, lead: Lead) -> NDArray[np.float32]:
        if lead not in self._series:
            binned = season_series(self.data, self.years, lead=lead, steps=self.steps)
            self._series[lead] = binned.values
            if self._rows is None:
                self._rows = pd.Series(np.arange(len(binned.index)), index=binned.index)
        return self._series[lead]

    def static_columns(self) -> tuple[str, ...]:
        """Names of the static features the model reads."""
        return tuple(str(c) for c in self.data.static.columns)

    def rows(self, keys: pd.DataFrame, leads: Sequence[Lead]) -> nets.Inputs:
        """Inputs of the unit-years ``keys`` (``unit, year``) cut at each of ``leads``.

        Rows are lead-major: all of ``keys`` at ``leads[0]``, then at ``leads[1]``, …
        """
        series = [self._binned(lead) for lead in leads]
        assert self._rows is not None
        wanted = pd.MultiIndex.from_arrays(
            [keys["unit"].astype(str), keys["year"].astype(np.int64)], names=["unit", "year"]
        )
        rows = self._rows.reindex(wanted).to_numpy()
        if np.isnan(rows.astype(np.float64)).any():
            raise ValueError("unit-years outside the binned years were asked for")
        rows = rows.astype(np.int64)
        static = (
            self.data.static.reindex(pd.Index(wanted.get_level_values("unit")))
            .to_numpy(dtype=np.float32)
            .reshape(len(wanted), -1)
        )
        return nets.Inputs(
            series=np.concatenate([s[rows] for s in series]),
            static=np.concatenate([static] * len(leads)),
            lead=np.concatenate([np.full(len(rows), LEADS.index(lead)) for lead in leads]),
        )


def fit_cnn(
    inputs: SeasonInputs, train: pd.DataFrame, options: nets.FitOptions
) -> tuple[baselines.Trends, nets.Fitted]:
    """The unit trends of ``train`` and the network fitted on their residuals, all leads."""
    trends = baselines.fit_trends(train)
    residuals = baselines.detrend(train, trends)["residual"].to_numpy()
    fitted = nets.fit(
        inputs.rows(train, LEADS),
        np.tile(residuals, len(LEADS)),
        leads=len(LEADS),
        options=options,
        copies=len(LEADS),
    )
    return trends, fitted


def forecast_cnn(
    inputs: SeasonInputs,
    trends: baselines.Trends,
    fitted: nets.Fitted,
    keys: pd.DataFrame,
    lead: Lead,
) -> NDArray[np.float64]:
    """Yield quantiles ``(n, 3)`` (10/50/90 %): the unit trend plus the residual quantiles."""
    residual = nets.predict(fitted, inputs.rows(keys, [lead]))
    return trends.at(keys["unit"], keys["year"])[:, None] + residual


def cnn_forecaster(
    data: YieldData, options: nets.FitOptions | None = None
) -> Callable[[pd.DataFrame, pd.DataFrame, Lead], pd.DataFrame]:
    """``fit_predict(train, test, lead)`` of the Torch model, one fit per training set.

    Its forecasts carry the network's 10 % and 90 % quantiles (``q10``, ``q90``) beside the
    median (``predicted``), which the backtest calibrates by conformalised quantile
    regression.
    """
    years = tuple(sorted(int(y) for y in data.yields["year"].unique()))
    inputs = SeasonInputs(data, years)
    options = options or nets.FitOptions()
    cache: OrderedDict[tuple[tuple[str, int], ...], tuple[baselines.Trends, nets.Fitted]] = (
        OrderedDict()
    )

    def fit_predict(train: pd.DataFrame, test: pd.DataFrame, lead: Lead) -> pd.DataFrame:
        key = tuple(zip(train["unit"].astype(str), train["year"].astype(int), strict=True))
        if key not in cache:
            # A backtest year's training sets (inner folds and all) recur at every lead.
            while len(cache) >= CACHE_FITS:
                cache.popitem(last=False)
            cache[key] = fit_cnn(inputs, train, options)
        cache.move_to_end(key)
        trends, fitted = cache[key]
        quantiles = forecast_cnn(inputs, trends, fitted, test, lead)
        return (
            test[["unit", "year"]]
            .reset_index(drop=True)
            .assign(predicted=quantiles[:, 1], q10=quantiles[:, 0], q90=quantiles[:, 2])
        )

    return fit_predict
