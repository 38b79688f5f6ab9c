"""The leave-one-year-out backtest and the ``agrimon`` blend, on synthetic yields.

Two worlds share 12 units over 14 years and a greenness series per unit-year: in one the
yield departs from its trend with the season's greenness (a model can learn it), in the
other the departures are noise (nothing to learn: ``agrimon`` must fall back to a baseline
rather than add noise).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from agrimon.yieldcast.backtest import (
    AGRIMON,
    BacktestOptions,
    backtest,
    baseline_models,
    chosen_counts,
    format_table,
    with_season,
)
from agrimon.yieldcast.data import (
    YieldData,
    assemble,
    calendar_table,
    series_table,
    yields_table,
)

UNITS = [f"U{k:02d}" for k in range(12)]
YEARS = list(range(2005, 2019))
SOS, EOS = 100.0, 280.0


def _world(signal: float, seed: int = 0) -> YieldData:
    rng = np.random.default_rng(seed)
    greenness = rng.normal(0.0, 1.0, (len(UNITS), len(YEARS)))
    level = rng.uniform(6, 10, len(UNITS))
    slope = rng.uniform(0.0, 0.15, len(UNITS))
    noise = rng.normal(0.0, 0.6, greenness.shape)
    rows, obs = [], []
    for u, unit in enumerate(UNITS):
        for y, year in enumerate(YEARS):
            value = level[u] + slope[u] * y + signal * greenness[u, y] + (1 - signal) * noise[u, y]
            rows.append((unit, year, value))
            # A season of 10-day NDVI whose mid-season peak carries the greenness.
            for day in range(int(SOS) - 30, int(EOS), 10):
                bump = np.exp(-(((day - 190) / 40.0) ** 2))
                ndvi = 0.3 + 0.4 * bump * (1 + 0.3 * greenness[u, y]) + rng.normal(0, 0.01)
                date = pd.Timestamp(year, 1, 1) + pd.Timedelta(days=day - 1)
                obs.append((unit, "ndvi", date, ndvi))
    yields = pd.DataFrame(rows, columns=["unit", "year", "yield"])
    calendar = pd.DataFrame({"unit": UNITS, "sos": SOS, "eos": EOS})
    series = pd.DataFrame(obs, columns=["unit", "indicator", "date", "value"])
    return assemble(
        yields_table(yields, "synthetic", unit="unit", year="year", value="yield"),
        calendar_table(calendar, "synthetic", unit="unit", sos="sos", eos="eos"),
        series=series_table([series]),
        crop="maize",
        country="XX",
        source="synthetic",
    )


OPTIONS = BacktestOptions(leads=("eos",), inner_folds=4, test_years=tuple(YEARS[-6:]))


def test_agrimon_uses_the_season_where_it_carries_skill() -> None:
    data = _world(signal=0.9)
    result = backtest(data, baseline_models(data), OPTIONS)
    scores = {m: s["eos"]["nrmse"] for m, s in result.scores.items()}
    print(format_table(result.scores))
    assert scores["random_forest"] < scores["trend"] - 1.0
    # The blend gives the forest most of the weight in every held-out year.
    blends = chosen_counts(result.predictions)["eos"]
    assert sum(blends.values()) == 6
    assert all(b.startswith("random_forest") for b in blends)
    assert scores[AGRIMON] <= scores["random_forest"] + 0.3
    # Every held-out unit-year once per model; the intervals are conformal widths.
    preds = result.predictions
    assert len(preds) == 4 * len(UNITS) * 6
    assert (preds["lo"] <= preds["predicted"]).all() and (preds["predicted"] <= preds["hi"]).all()


def test_agrimon_falls_back_where_the_season_carries_none() -> None:
    data = _world(signal=0.0)
    result = backtest(data, baseline_models(data), OPTIONS)
    scores = {m: s["eos"]["nrmse"] for m, s in result.scores.items()}
    print(format_table(result.scores))
    best = min(scores["naive"], scores["trend"], scores["random_forest"])
    assert scores[AGRIMON] <= best + 0.5


def test_a_held_out_years_yields_never_reach_its_forecast() -> None:
    data = _world(signal=0.9)
    year = YEARS[-1]
    base = backtest(data, baseline_models(data), OPTIONS).predictions
    changed = data.yields.copy()
    changed.loc[changed["year"] == year, "yield"] *= 3.0
    other = dataclasses.replace(data, yields=changed)
    again = backtest(other, baseline_models(other), OPTIONS).predictions
    mine = (base["year"] == year) & (base["model"] != AGRIMON)
    np.testing.assert_array_equal(
        base.loc[mine, "predicted"].to_numpy(), again.loc[mine, "predicted"].to_numpy()
    )
    # Other years did see it (it is in their training years).
    assert not np.array_equal(
        base.loc[~mine & (base["model"] == "naive"), "predicted"].to_numpy(),
        again.loc[~mine & (again["model"] == "naive"), "predicted"].to_numpy(),
    )


def test_unit_years_without_a_season_are_left_out() -> None:
    """As CY-Bench aligns its inputs: yields before the satellite series began are not used."""
    data = _world(signal=0.9)
    first = YEARS[0]
    series = data.series[data.series["date"].dt.year != first]
    lacking = dataclasses.replace(data, series=series.reset_index(drop=True))
    kept = with_season(lacking)
    assert first not in set(kept["year"]) and len(kept) == len(data.yields) - len(UNITS)
    assert len(with_season(data)) == len(data.yields)
