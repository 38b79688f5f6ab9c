"""Yield baselines (CY-Bench naive, trend, residual forest), against hand computation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from agrimon.errors import TrainingError, YieldDataError
from agrimon.yieldcast import baselines, metrics


def _yields(rows: dict[str, dict[int, float]]) -> pd.DataFrame:
    """A yields table from {unit: {year: yield}}."""
    return pd.DataFrame(
        [(unit, year, value) for unit, series in rows.items() for year, value in series.items()],
        columns=["unit", "year", "yield"],
    )


def _predict_one(
    fn: Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame],
    train: pd.DataFrame,
    unit: str,
    year: int,
) -> float:
    out = fn(train, pd.DataFrame({"unit": [unit], "year": [year]}))
    return float(out["predicted"].iloc[0])


# A: 2000-2004 yields 1..5, a perfect line yield = year - 1999.
# B: three years 2, 4, 3 -> too few for a trend.
# C: 2000-2005 alternating 5, 3 -> no monotonic trend.
TRAIN = _yields(
    {
        "A": {2000: 1.0, 2001: 2.0, 2002: 3.0, 2003: 4.0, 2004: 5.0},
        "B": {2000: 2.0, 2001: 4.0, 2002: 3.0},
        "C": {2000: 5.0, 2001: 3.0, 2002: 5.0, 2003: 3.0, 2004: 5.0, 2005: 3.0},
    }
)
# Mean of all 14 training yields: (15 + 9 + 24) / 14.
GLOBAL_MEAN = 48 / 14


def test_naive_is_each_units_training_mean() -> None:
    test = pd.DataFrame({"unit": ["A", "B", "C", "D"], "year": [2005, 2005, 2006, 2005]})
    out = baselines.naive(TRAIN, test)
    assert list(out.columns) == ["unit", "year", "predicted"]
    assert out["unit"].tolist() == ["A", "B", "C", "D"]
    # A: 15/5; B: 9/3; C: 24/6; D is unknown -> the mean of all training yields.
    assert out["predicted"].tolist() == pytest.approx([3.0, 3.0, 4.0, GLOBAL_MEAN])


def test_mann_kendall_by_hand() -> None:
    # 1..5: S = 10, var = 5*4*15/18 = 16.67, z = (10-1)/4.082 = 2.2045, p = 0.0275.
    significant, p = baselines.mann_kendall([1, 2, 3, 4, 5])
    assert significant
    assert p == pytest.approx(0.027486336111510353)
    # 1, 1, 2, 3, 4: S = 9, one tie pair: var = (300 - 2*1*9)/18 = 15.67, z = 2.0212, p = 0.0433.
    significant, p = baselines.mann_kendall([1, 1, 2, 3, 4])
    assert significant
    assert p == pytest.approx(0.043262727806910685)
    # Constant: S = 0 and var = 0 -> z = 0, p = 1.
    assert baselines.mann_kendall([4, 4, 4, 4, 4]) == (False, 1.0)


def test_trend_by_hand() -> None:
    # A before 2005: five years, Mann-Kendall p = 0.0275 < 0.05 -> the line at 2005 is 6.
    assert _predict_one(baselines.trend, TRAIN, "A", 2005) == pytest.approx(6.0)
    # B: fewer than five years on both sides of 2003 -> B's mean, (2 + 4 + 3) / 3.
    assert _predict_one(baselines.trend, TRAIN, "B", 2003) == pytest.approx(3.0)
    # C before 2006: window 5 (3,5,3,5,3) has S = 0; window 6 S = -3, z = -0.44: no trend -> mean 4.
    assert _predict_one(baselines.trend, TRAIN, "C", 2006) == pytest.approx(4.0)
    # An unknown unit gets the mean of all training yields.
    assert _predict_one(baselines.trend, TRAIN, "D", 2005) == pytest.approx(GLOBAL_MEAN)


def test_trend_searches_forward_for_an_early_year() -> None:
    # No years before 1999; the five after form A's line, which gives 0 at 1999.
    assert _predict_one(baselines.trend, TRAIN, "A", 1999) == pytest.approx(0.0)


def test_trend_picks_the_most_significant_window() -> None:
    # Before 2007: 5, 1, 1, 2, 3, 4, 5 (2000-2006). Windows of the last 5, 6, 7 years:
    #   1,2,3,4,5       S = 10, p = 0.0275
    #   1,1,2,3,4,5     S = 14, var = (510 - 18)/18 = 27.33, z = 2.487, p = 0.0129  <- best
    #   5,1,1,2,3,4,5   S = 9,  var = (798 - 36)/18 = 42.33, z = 1.230, p = 0.219
    # OLS through 2001..2006 / 1,1,2,3,4,5: mean year 2003.5, mean yield 8/3,
    # slope 15 / 17.5 = 6/7 -> at 2007: 8/3 + 6/7 * 3.5 = 17/3 (window 5 would give 6).
    train = _yields({"E": dict(zip(range(2000, 2007), [5.0, 1, 1, 2, 3, 4, 5], strict=True))})
    assert _predict_one(baselines.trend, train, "E", 2007) == pytest.approx(17 / 3)


def test_trend_residuals_leave_the_year_out() -> None:
    # CY-Bench's residual model fits each training year's trend without that year:
    # B 2000: 2 - mean(4, 3) = -1.5; B 2001: 4 - 2.5 = 1.5; B 2002: 3 - 3 = 0.
    trends = baselines.fit_trends(TRAIN)
    res = baselines.detrend(TRAIN[TRAIN["unit"] == "B"], trends)
    assert res["residual"].tolist() == pytest.approx([-1.5, 1.5, 0.0])
    # A unit with one training year falls back to the mean of all training yields.
    single = baselines.fit_trends(_yields({"S": {2000: 2.0}, "T": {2000: 4.0, 2001: 6.0}}))
    assert single.value("S", 2000) == pytest.approx(4.0)


def test_detrend_retrend_round_trip() -> None:
    rng = np.random.default_rng(0)
    rows = {
        f"u{i}": {
            year: 3 + 0.05 * (year - 2000) * i + rng.normal(0, 0.3) for year in range(2000, 2016)
        }
        for i in range(5)
    }
    table = _yields(rows)
    trends = baselines.fit_trends(table[table["year"] < 2012])
    # Training years, test years and an unknown unit.
    table = pd.concat([table, _yields({"new": {2014: 4.2}})], ignore_index=True)
    back = baselines.retrend(baselines.detrend(table, trends), trends)
    assert back[["unit", "year"]].equals(table[["unit", "year"]])
    np.testing.assert_allclose(back["yield"], table["yield"], rtol=0, atol=1e-12)


# Leave-one-year-out on a tiny table: A = 1..6 over 2000-2005 (k = year - 1999), B = 4 always.
LOYO = _yields(
    {
        "A": {2000 + k - 1: float(k) for k in range(1, 7)},
        "B": {2000 + k - 1: 4.0 for k in range(1, 7)},
    }
)


def _loyo(
    table: pd.DataFrame, fn: Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]
) -> pd.DataFrame:
    """Leave-one-year-out forecasts as a scored table."""
    parts = []
    for year in sorted(table["year"].unique()):
        test = table[table["year"] == year]
        out = fn(table[table["year"] != year], test)
        parts.append(out.assign(observed=test["yield"].to_numpy()))
    return pd.concat(parts, ignore_index=True)


def test_loyo_nrmse_of_naive_by_hand() -> None:
    # Naive for A in year k: mean of the other five, (21 - k)/5; error (21 - 6k)/5:
    #   3, 1.8, 0.6, -0.6, -1.8, -3 for k = 1..6. B is exact.
    # Per year: RMSE = |e| / sqrt(2), mean observed (k + 4)/2 -> NRMSE = 100 sqrt(2) |e| / (k + 4):
    #   84.85, 42.43, 12.12, 10.61, 28.28, 42.43; mean 36.786.
    scored = _loyo(LOYO, baselines.naive)
    per_year = metrics.nrmse_per_year(scored["observed"], scored["predicted"], scored["year"])
    errors = np.array([3, 1.8, 0.6, -0.6, -1.8, -3])
    expected = 100 * np.sqrt(2) * np.abs(errors) / (np.arange(1, 7) + 4)
    np.testing.assert_allclose(per_year.to_numpy(), expected)
    value = metrics.nrmse(scored["observed"], scored["predicted"], scored["year"])
    assert value == pytest.approx(36.786388497443006)


def test_loyo_nrmse_of_trend_by_hand() -> None:
    # Trend for A: 2000 has five years after it and 2005 five before, both significant lines
    # -> exact. 2001-2004 have fewer than five on each side -> the mean, as naive.
    # B is constant: Mann-Kendall var = 0, no trend -> mean 4, exact.
    # Per year: 0, 42.43, 12.12, 10.61, 28.28, 0; mean 15.573.
    scored = _loyo(LOYO, baselines.trend)
    value = metrics.nrmse(scored["observed"], scored["predicted"], scored["year"])
    assert value == pytest.approx(15.573185061846582)


def _features(table: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """One informative and one noise feature per unit-year."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"rain": rng.normal(size=len(table)), "noise": rng.normal(size=len(table))},
        index=pd.MultiIndex.from_frame(table[["unit", "year"]]),
    )


def _synthetic(seed: int = 2, years: range = range(2000, 2015)) -> tuple[pd.DataFrame, ...]:
    """Ten flat units at different levels, plus 0.8 x rain plus small noise."""
    rng = np.random.default_rng(seed)
    keys = pd.DataFrame(
        [(f"u{i}", year) for i in range(10) for year in years], columns=["unit", "year"]
    )
    features = _features(keys)
    level = 3 + keys["unit"].str[1:].astype(int) * 0.2
    noise = rng.normal(0, 0.1, len(keys))
    keys["yield"] = level + 0.8 * features["rain"].to_numpy() + noise
    return keys, features


def _forest(features: pd.DataFrame) -> Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]:
    def fn(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
        return baselines.residual_forest(train, test, features, n_estimators=10, seed=0)

    return fn


def test_residual_forest_learns_the_residual() -> None:
    table, features = _synthetic()
    train, test = table[table["year"] != 2014], table[table["year"] == 2014]
    forest = baselines.residual_forest(train, test, features, n_estimators=50, seed=0)
    trend_only = baselines.trend(train, test)
    scored = {
        name: metrics.nrmse(test["yield"], out["predicted"], test["year"])
        for name, out in (("forest", forest), ("trend", trend_only))
    }
    # Rain explains most of the year-to-year variation, which the trend cannot see.
    assert scored["forest"] < 0.7 * scored["trend"]
    # Same seed, same forecasts.
    again = baselines.residual_forest(train, test, features, n_estimators=50, seed=0)
    pd.testing.assert_frame_equal(forest, again)


def test_residual_forest_refuses_missing_features() -> None:
    table, features = _synthetic()
    train, test = table[table["year"] != 2014], table[table["year"] == 2014]
    with pytest.raises(YieldDataError, match="features lack 1 test"):
        baselines.residual_forest(train, test, features.drop(index=("u3", 2014)))


@pytest.mark.parametrize("name", ["naive", "trend", "forest"])
def test_no_leakage_of_the_forecast_year(name: str) -> None:
    table, features = _synthetic(years=range(2000, 2010))
    fn = {"naive": baselines.naive, "trend": baselines.trend, "forest": _forest(features)}[name]
    year = 2005
    perturbed = table.copy()
    perturbed.loc[perturbed["year"] == year, "yield"] += 100.0
    before = _loyo(table, fn)
    after = _loyo(perturbed, fn)
    at_year = before["year"] == year
    # The forecast for the left-out year ignores its yields ...
    np.testing.assert_array_equal(
        before.loc[at_year, "predicted"].to_numpy(), after.loc[at_year, "predicted"].to_numpy()
    )
    # ... which do reach the other years' forecasts, so the perturbation was seen at all.
    assert not np.allclose(before.loc[~at_year, "predicted"], after.loc[~at_year, "predicted"])


def test_test_yields_are_ignored() -> None:
    test = pd.DataFrame({"unit": ["A"], "year": [2005], "yield": [1000.0]})
    assert baselines.naive(TRAIN, test)["predicted"].tolist() == [3.0]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (TRAIN.drop(columns="yield"), "lacks column"),
        (pd.concat([TRAIN, TRAIN.iloc[:1]]), "duplicated unit-year"),
        (TRAIN.assign(**{"yield": np.nan}), "missing or non-numeric"),
        (TRAIN.iloc[:0], "empty"),
    ],
)
def test_bad_training_tables_raise(table: pd.DataFrame, message: str) -> None:
    with pytest.raises(YieldDataError, match=message):
        baselines.naive(table, pd.DataFrame({"unit": ["A"], "year": [2005]}))


def test_bad_trend_parameters_raise() -> None:
    with pytest.raises(TrainingError, match="min_window"):
        baselines.fit_trends(TRAIN, min_window=1)
    with pytest.raises(TrainingError, match="significance"):
        baselines.fit_trends(TRAIN, alpha=1.5)
