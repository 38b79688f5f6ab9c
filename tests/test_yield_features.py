"""Season features at a lead date: bins by hand, the new-year crossing, no leakage, real ES.

The bin and window means of small hand-made series are worked out by hand in the comments.
No leakage is checked by perturbation: changing (or deleting) every observation after the
lead date of a unit-year leaves its features bit-identical, and changing one observation
before the lead date changes them, on a synthetic data set (always) and on the real
CY-Bench maize data of Spain (skipped where it is missing).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from agrimon.yieldcast import features
from agrimon.yieldcast.cybench import read_cybench
from agrimon.yieldcast.data import (
    YieldData,
    assemble,
    calendar_table,
    season_bounds,
    series_table,
    yields_table,
)
from agrimon.yieldcast.features import LEADS, Lead, lead_date, season_series, season_table
from tests.conftest import REAL_DATA, real_path

Obs = tuple[str, str, str, float]  # unit, indicator, ISO date, value


def _data(
    calendar: dict[str, tuple[float, float]],
    obs: Sequence[Obs],
    *,
    static: pd.DataFrame | None = None,
) -> YieldData:
    """YieldData of calendars and observations; every unit has yields of 2000 and 2001."""
    units = sorted(calendar)
    yields = pd.DataFrame(
        [(u, y, 5.0) for u in units for y in (2000, 2001)], columns=["unit", "year", "yield"]
    )
    cal = pd.DataFrame([(u, *calendar[u]) for u in units], columns=["unit", "sos", "eos"])
    series = pd.DataFrame(obs, columns=["unit", "indicator", "date", "value"])
    series["date"] = pd.to_datetime(series["date"])
    return assemble(
        yields_table(yields, "test"),
        calendar_table(cal, "test"),
        series=series_table([series]),
        static=static,
        crop="maize",
        source="test",
    )


def _day(year: int, doy: int) -> str:
    """ISO date of day of year ``doy`` of ``year``."""
    return (pd.Timestamp(year, 1, 1) + pd.Timedelta(days=doy - 1)).date().isoformat()


def _bits(values: np.ndarray) -> bytes:
    """The bytes of an array, so that NaN == NaN and -0.0 != 0.0."""
    return np.ascontiguousarray(values).tobytes()


# --- leads ---------------------------------------------------------------------------------


def test_lead_dates() -> None:
    cal = pd.DataFrame({"unit": ["A", "B"], "sos": [100.0, 100.0], "eos": [219.0, 150.0]})
    bounds = season_bounds(cal, [2010])
    # Day 100 of 2010 is 10 April; day 219 is 7 August, day 150 is 30 May.
    expected = {
        "60d": ["2010-06-09", "2010-05-30"],  # B's season ends before sos + 60
        "90d": ["2010-07-09", "2010-05-30"],
        "eos": ["2010-08-07", "2010-05-30"],
    }
    for lead in LEADS:
        got = lead_date(bounds, lead)
        assert got.dtype == "datetime64[ns]"
        assert [d.date().isoformat() for d in got] == expected[lead]
    with pytest.raises(ValueError, match="lead must be one of 60d, 90d, eos"):
        lead_date(bounds, "30d")  # type: ignore[arg-type]


# --- the bin grid by hand ------------------------------------------------------------------

#: sos 100, eos 219 (2010: 10 April to 7 August): the window runs from day 70 (11 March) to
#: day 219, 150 days, so 15 steps are 10-day bins: bin k = days 70 + 10k … 79 + 10k.
HAND_CAL = {"A": (100.0, 219.0)}
HAND_OBS: list[Obs] = [
    ("A", "ndvi", _day(2010, 69), 999.0),  # the day before the window: in no bin
    ("A", "ndvi", _day(2010, 70), 10.0),  # bin 0
    ("A", "ndvi", _day(2010, 75), 20.0),  # bin 0 -> mean 15
    ("A", "ndvi", _day(2010, 80), 30.0),  # bin 1
    ("A", "ndvi", _day(2010, 160), 40.0),  # bin 9, day 160 = the 60d lead (sos + 60)
    ("A", "ndvi", _day(2010, 161), 60.0),  # bin 9, after the 60d lead
    ("A", "ndvi", _day(2010, 219), 70.0),  # bin 14, the end of season
    ("A", "ndvi", _day(2010, 220), 999.0),  # after the end of season: in no bin
    ("A", "fpar", _day(2010, 99), 5.0),  # bin 2 (days 90-99)
    ("A", "fpar", _day(2010, 100), 7.0),  # bin 3 (days 100-109)
]


def test_bins_by_hand() -> None:
    data = _data(HAND_CAL, HAND_OBS)
    eos = season_series(data, [2010], lead="eos", steps=15)
    assert eos.indicators == ("fpar", "ndvi")
    assert eos.values.shape == (1, 15, 2) and eos.values.dtype == np.float32
    assert list(eos.index) == [("A", 2010)]
    assert eos.index.names == ["unit", "year"]
    ndvi = np.full(15, np.nan)
    ndvi[[0, 1, 9, 14]] = [15.0, 30.0, 50.0, 70.0]
    fpar = np.full(15, np.nan)
    fpar[[2, 3]] = [5.0, 7.0]
    np.testing.assert_array_equal(eos.values[0, :, 1], ndvi)
    np.testing.assert_array_equal(eos.values[0, :, 0], fpar)
    np.testing.assert_array_equal(eos.mask, ~np.isnan(eos.values))
    assert eos.horizon.tolist() == [15]

    # At 60d (day 160) bin 9 keeps day 160 only; bins 10- are empty even where data exists.
    early = season_series(data, [2010], lead="60d", steps=15)
    ndvi[9], ndvi[14] = 40.0, np.nan
    np.testing.assert_array_equal(early.values[0, :, 1], ndvi)
    assert early.horizon.tolist() == [10]
    # At 90d (day 190) bin 12 is the last that starts on or before the lead date.
    assert season_series(data, [2010], lead="90d", steps=15).horizon.tolist() == [13]


def test_bins_of_uneven_width() -> None:
    # 24 steps over 150 days: 6.25 days each; day p of the window is in bin floor(p * 24 / 150).
    obs: list[Obs] = [
        ("A", "ndvi", _day(2010, 70 + 6), 1.0),  # p 6: 0.96 -> bin 0
        ("A", "ndvi", _day(2010, 70 + 7), 2.0),  # p 7: 1.12 -> bin 1
        ("A", "ndvi", _day(2010, 70 + 12), 3.0),  # p 12: 1.92 -> bin 1
        ("A", "ndvi", _day(2010, 70 + 25), 4.0),  # p 25: 4.00 -> bin 4
        ("A", "ndvi", _day(2010, 70 + 149), 5.0),  # p 149: 23.84 -> bin 23
    ]
    got = season_series(_data(HAND_CAL, obs), [2010], lead="eos").values[0, :, 0]
    assert got.shape == (features.STEPS,) == (24,)
    want = np.full(24, np.nan)
    want[[0, 1, 4, 23]] = [1.0, 2.5, 4.0, 5.0]
    np.testing.assert_array_equal(got, want)


def test_table_by_hand() -> None:
    static = pd.DataFrame({"awc": [12.5]}, index=pd.Index(["A"], name="unit"))
    data = _data(HAND_CAL, HAND_OBS, static=static)
    names = [*features.WINDOWS, *features.SUMMARIES]
    assert names == [
        *("pre", "d30", "d60", "d90", "d120", "d150", "d180", "late"),
        *("max", "last30"),
    ]
    # Days after sos (day 100): ndvi at -30, -25, -20 (pre: mean 20), 60 (d60), 61 (d90),
    # 119 (d120); fpar at -1 (pre) and 0 (pre: mean 6). last30 at 60d: days 31-60 -> 40.
    nan = np.nan
    ndvi = {
        "60d": [20.0, nan, 40.0, nan, nan, nan, nan, nan, 40.0, 40.0],
        "90d": [20.0, nan, 40.0, 60.0, nan, nan, nan, nan, 60.0, 60.0],  # last30: 61-90
        "eos": [20.0, nan, 40.0, 60.0, 70.0, nan, nan, nan, 70.0, 70.0],  # last30: 90-119
    }
    fpar = [6.0, *[nan] * 9]  # at every lead: nothing after the start day
    for lead in LEADS:
        table = season_table(data, [2010], lead=lead)
        assert list(table.columns) == [
            *(f"fpar_{n}" for n in names),
            *(f"ndvi_{n}" for n in names),
            "awc",
        ]
        assert table.index.names == ["unit", "year"]
        assert list(table.index) == [("A", 2010)]
        row = table.iloc[0]
        np.testing.assert_array_equal(row[[f"ndvi_{n}" for n in names]], ndvi[lead])
        np.testing.assert_array_equal(row[[f"fpar_{n}" for n in names]], fpar)
        assert row["awc"] == 12.5


def test_season_crossing_the_new_year() -> None:
    # sos 300, eos 120: harvest year 2010 runs 27 Oct 2009 - 30 Apr 2010; the window starts
    # 30 days earlier, 27 Sep 2009: 216 days, so 24 bins of 9 days.
    obs: list[Obs] = [
        ("W", "ndvi", "2009-09-26", 999.0),  # the day before the window
        ("W", "ndvi", "2009-09-27", 1.0),  # p 0 -> bin 0
        ("W", "ndvi", "2009-12-31", 2.0),  # p 95 -> bin 10
        ("W", "ndvi", "2010-01-01", 4.0),  # p 96 -> bin 10: mean 3 across the new year
        ("W", "ndvi", "2010-04-30", 5.0),  # p 215 -> bin 23, the end of season
        ("W", "ndvi", "2010-09-27", 6.0),  # day 0 of the window of harvest year 2011
    ]
    data = _data({"W": (300.0, 120.0)}, obs)
    bounds = season_bounds(data.calendar, [2010])
    assert bounds.loc[0, "start"] == pd.Timestamp("2009-10-27")
    assert lead_date(bounds, "60d")[0] == pd.Timestamp("2009-12-26")
    got = season_series(data, [2010, 2011], lead="eos")
    assert list(got.index) == [("W", 2010), ("W", 2011)]
    want = np.full((2, 24), np.nan)
    want[0, [0, 10, 23]] = [1.0, 3.0, 5.0]
    want[1, 0] = 6.0
    np.testing.assert_array_equal(got.values[:, :, 0], want)
    # At 60d (26 Dec 2009, p 90 -> bin 10) the December and January values are not known.
    early = season_series(data, [2010], lead="60d")
    assert early.horizon.tolist() == [11]
    assert np.flatnonzero(early.mask[0, :, 0]).tolist() == [0]
    table = season_table(data, [2010], lead="eos").iloc[0]  # the row of (W, 2010)
    # Days after sos: -30 (pre), 65 and 66 (d90), 185 (late).
    assert (table["ndvi_pre"], table["ndvi_d90"], table["ndvi_late"]) == (1.0, 3.0, 5.0)
    assert table["ndvi_max"] == 5.0 and table["ndvi_last30"] == 5.0


def test_bad_arguments() -> None:
    data = _data(HAND_CAL, HAND_OBS)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        season_series(data, [2010], lead="eos", steps=0)
    with pytest.raises(ValueError, match="lead must be one of"):
        season_table(data, [2010], lead="harvest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="years is empty"):
        season_series(data, [], lead="eos")
    clash = pd.DataFrame({"ndvi_max": [1.0]}, index=pd.Index(["A"], name="unit"))
    with pytest.raises(ValueError, match="ndvi_max have the name of a season feature"):
        season_table(_data(HAND_CAL, HAND_OBS, static=clash), [2010], lead="eos")


# --- no leakage, by perturbation -----------------------------------------------------------


def _synthetic() -> YieldData:
    """Three units (one crossing the new year, one of fractional days), obs every 4-5 days."""
    rng = np.random.default_rng(7)
    calendar = {"A": (100.0, 219.0), "W": (300.0, 120.0), "F": (150.4, 290.6)}
    days = pd.date_range("2004-01-01", "2013-12-31", freq="D")
    obs: list[Obs] = []
    for unit in calendar:
        for indicator, every in (("ndvi", 4), ("fpar", 5)):
            for day in days[rng.integers(0, every) :: every]:
                obs.append((unit, indicator, day.date().isoformat(), float(rng.normal(100, 20))))
    return _data(calendar, obs)


@functools.cache
def _real() -> YieldData:
    return read_cybench(REAL_DATA / "cybench", "maize", "ES")


def _features(data: YieldData, years: Sequence[int], lead: Lead) -> tuple[bytes, ...]:
    """The bytes of every feature of the unit-years of ``years``, one entry per unit-year."""
    series = season_series(data, years, lead=lead)
    table = season_table(data, years, lead=lead).to_numpy()
    return tuple(
        _bits(series.values[i]) + _bits(series.mask[i]) + _bits(table[i])
        for i in range(len(series.index))
    )


def _after_lead(data: YieldData, year: int, lead: Lead) -> np.ndarray:
    """Rows of ``data.series`` dated after the unit's lead date of harvest year ``year``."""
    cut = lead_date(season_bounds(data.calendar, [year]), lead)
    cut.index = pd.Index(data.units)
    own_cut = cut.reindex(data.series["unit"].astype(str)).to_numpy()
    return np.asarray(data.series["date"].to_numpy() > own_cut)


def _check_no_leakage(data: YieldData, year: int) -> None:
    """Features of ``year`` and earlier ignore later data and react to earlier data."""
    years = [year - 2, year - 1, year]
    for lead in LEADS:
        before = _features(data, years, lead)
        after = _after_lead(data, year, lead)
        assert after.any() and not after.all()
        series = data.series.copy()
        series.loc[after, "value"] = series.loc[after, "value"] * 1.37 + 11.0
        changed = dataclasses.replace(data, series=series)
        assert _features(changed, years, lead) == before, lead
        cut = dataclasses.replace(data, series=data.series[~after].reset_index(drop=True))
        assert _features(cut, years, lead) == before, lead

        # One observation on or before the lead date, the unit's latest, changes its row.
        earlier = data.series[~after]
        last = earlier.groupby("unit", observed=True)["date"].idxmax().to_numpy()
        series = data.series.copy()
        series.loc[last, "value"] += 10.0
        moved = _features(dataclasses.replace(data, series=series), years, lead)
        n = len(years)
        assert all(moved[i * n + 2] != before[i * n + 2] for i in range(len(data.units))), lead


def test_no_leakage_synthetic() -> None:
    _check_no_leakage(_synthetic(), 2010)


def test_no_leakage_real() -> None:
    real_path("cybench", "maize", "ES")
    _check_no_leakage(_real(), 2010)


# --- the real data -------------------------------------------------------------------------


def test_real_shapes_and_coverage() -> None:
    real_path("cybench", "maize", "ES")
    data = _real()
    years = list(range(data.years[0], data.years[1] + 1))
    n = len(data.units) * len(years)
    shares: dict[str, np.ndarray] = {}
    columns: list[list[str]] = []
    for lead in LEADS:
        start = time.perf_counter()
        series = season_series(data, years, lead=lead)
        table = season_table(data, years, lead=lead)
        seconds = time.perf_counter() - start
        assert series.values.shape == (n, features.STEPS, 2) == (50 * 23, 24, 2)
        assert series.indicators == ("fpar", "ndvi")
        assert list(series.index) == [(u, y) for u in data.units for y in years]
        np.testing.assert_array_equal(series.mask, ~np.isnan(series.values))
        late = np.arange(features.STEPS)[None, :] >= series.horizon[:, None]
        assert not series.mask[late].any()
        # The series start on 1 January 2001: the earlier harvest years have no season data.
        observed = series.index.get_level_values("year") >= 2001
        assert not series.mask[~observed].any()
        assert table.loc[~observed, "ndvi_pre":"ndvi_last30"].isna().all(axis=None)
        shares[lead] = series.mask[observed].mean(axis=(0, 1))
        assert table.shape == (n, 2 * 10 + 5)
        columns.append(list(table.columns))
        print(f"{lead}: non-empty bins fpar, ndvi {shares[lead].round(3)}; {seconds:.3f} s")
    assert columns[0] == columns[1] == columns[2]
    # At harvest about 90 % of the FPAR bins (10-day data, 7-10-day bins) and 99 % of the
    # NDVI bins (8-day data) hold an observation; earlier leads hold fewer.
    assert np.all(shares["eos"] > [0.85, 0.95])
    assert np.all(shares["60d"] < shares["90d"]) and np.all(shares["90d"] < shares["eos"])
    assert data.series["date"].min() == pd.Timestamp("2001-01-01")
