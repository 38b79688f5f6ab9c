"""Implausible unit-years of yield statistics: flag them for review, drop them if need be.

Official yield statistics carry errors a model would learn as signal: a unit-year typed in
the wrong unit (kg/ha for t/ha), a year in which the table's rows were shifted or mixed up,
a missing harvest recorded as 0. Three rules, each on its own row of the flags:

``physical``
    The yield is not in ``(0, max]`` t/ha, ``max`` from :data:`MAX_YIELD` for the crop
    (:data:`DEFAULT_MAX_YIELD` otherwise): above any field record of the crop, or no
    harvest. Such rows are also kept out of the trends below.
``history``
    The yield is more than ``ratio`` times (default 3) off the unit's own trend. The trend
    is a Theil–Sen line through the unit's log yields against the year (the median of the
    pairwise slopes; robust to up to 29 % bad years), fitted when the unit has
    ``min_years`` (default 5) plausible years. A trend and not the unit's median is the
    reference because yields rise with technology (ES maize: median 8.3 t/ha in 1998, 11.7 in
    2020), so the first and last years of a long record sit far from its median without
    being wrong. A ratio on log yields and not a z-score because the spread of units' records
    differs a lot (the MAD of ES maize log residuals runs from 0.01 to 0.27): on the real data
    a robust z-score above 4 flags 24 rows outside the corrupt year 2002 (2 %, ordinary years
    of steady units) for 25 in it, the ratio 3 flags 2 outside for 23 in it (a ratio of 2: 5
    for 25).
``year``
    The median over the units of ``yield / trend`` in a year is more than ``year_ratio``
    times (default 2) off 1, with at least ``min_units`` (default 5) units that year: the
    whole year is flagged, every unit. A median over units averages their noise away, hence
    a lower bound than ``ratio``; a year in which the typical unit is at half or double its
    trend is most often a broken table, and its plausible-looking rows come from the same
    table. It can also be a real catastrophe (a drought over a rainfed country, such as
    southern Africa's maize in 1992): the flags are for review, and a caller who trusts such
    a year keeps the rows whose only rule is ``year`` (see :func:`drop_flagged`).

On the real CY-Bench maize data of Spain as read (1998–2020, 1 095 unit-years of the 50
units with a crop calendar) the year-wide medians of ``yield / trend`` lie between 0.98 and
1.04 in every year but 2002, where the median is 0.15: 28 of its 38 rows are 1.6–15 times
below their trend, with harvest areas and productions that do not fit the unit's other years
either (the table of that year is mixed up), while 10 rows (ES432, ES611–ES618, ES705) look
ordinary. The default rules flag all 38 rows of 2002 (23 of them on ``history`` as well) and
3 other rows: ES130 2020 (0 t/ha, with zero harvest area: a missing value) and ES611 2011
and 2013 (1.1 t/ha, 0.3 times the trend of a small, erratic unit).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from agrimon.yieldcast.data import MIN_YEARS, YieldData, keep_units

#: Highest plausible yield (t/ha, fresh weight as statistics report it) of major crops:
#: above the field records of each crop, so only a wrong number exceeds it.
MAX_YIELD: Mapping[str, float] = {
    "maize": 25.0,
    "wheat": 18.0,
    "rice": 17.0,
    "barley": 15.0,
    "sorghum": 20.0,
    "millet": 10.0,
    "soybean": 10.0,
    "sunflower": 8.0,
    "rapeseed": 8.0,
    "cassava": 90.0,
    "potato": 120.0,
    "sugarbeet": 150.0,
    "sugarcane": 300.0,
}

#: Highest plausible yield (t/ha) of a crop missing from :data:`MAX_YIELD`.
DEFAULT_MAX_YIELD = 50.0

#: Columns of the flags table.
FLAG_COLUMNS: tuple[str, ...] = ("unit", "year", "yield", "expected", "rule", "reason")


def flag_implausible(
    data: YieldData,
    *,
    ratio: float = 3.0,
    year_ratio: float = 2.0,
    min_years: int = 5,
    min_units: int = 5,
    max_yield: float | None = None,
) -> pd.DataFrame:
    """Unit-years whose yield is implausible, by the rules of the module docstring.

    Args:
        data: The yield data.
        ratio: How many times off its unit's trend a yield may be.
        year_ratio: How many times off their trends the median unit of a year may be.
        min_years: Fewest plausible years a unit needs for its trend to be fitted; units
            with fewer are checked against the physical limits only.
        min_units: Fewest units with a trend a year needs for the year-wide rule.
        max_yield: Highest plausible yield (t/ha); default from :data:`MAX_YIELD`.

    Returns:
        One row per flagged unit-year, columns :data:`FLAG_COLUMNS`: ``unit``, ``year``,
        ``yield``; ``expected`` (the unit's trend that year, t/ha, NaN without a trend);
        ``rule`` (the rules that flagged it, ``"physical"``, ``"history"``, ``"year"``,
        joined by ``+``); ``reason`` (one line per rule, joined by ``"; "``). Sorted by
        unit and year; empty when nothing is implausible.

    Raises:
        ValueError: ``ratio`` or ``year_ratio`` is not above 1.
    """
    if ratio <= 1.0 or year_ratio <= 1.0:
        raise ValueError("ratio and year_ratio must be above 1")
    top = max_yield if max_yield is not None else MAX_YIELD.get(data.crop, DEFAULT_MAX_YIELD)
    yields = data.yields
    values = yields["yield"].to_numpy(dtype="float64")
    physical = ~((values > 0.0) & (values <= top))
    expected = _trends(yields, ~physical, min_years)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(values / expected)
    # A yield outside the physical range is not compared with a trend: its ratio means nothing.
    history = ~physical & (np.abs(log_ratio) > np.log(ratio))

    # Year-wide rule: the median over units of log(yield / trend), zeros and no trend aside.
    frame = pd.DataFrame({"year": yields["year"], "r": log_ratio})
    frame = frame[~physical & np.isfinite(frame["r"])]
    by_year = frame.groupby("year")["r"].agg(["median", "size"])
    bad_years = by_year[
        (by_year["size"] >= min_units) & (by_year["median"].abs() > np.log(year_ratio))
    ]
    year_flag = yields["year"].isin(bad_years.index).to_numpy()

    units = yields["unit"].astype(str).to_numpy()
    years = yields["year"].to_numpy(dtype="int64")
    rows = []
    for i in np.flatnonzero(physical | history | year_flag):
        unit, year, value = str(units[i]), int(years[i]), float(values[i])
        rules, reasons = [], []
        if physical[i]:
            rules.append("physical")
            reasons.append(
                f"{value:g} t/ha is outside (0, {top:g}] t/ha, the range of {data.crop or 'a crop'}"
            )
        if history[i]:
            rules.append("history")
            reasons.append(
                f"{value:g} t/ha is {value / expected[i]:.2f}× the unit's trend of "
                f"{expected[i]:.2f} t/ha (limit {ratio:g}×)"
            )
        if year_flag[i]:
            median = float(np.exp(by_year.at[year, "median"]))
            rules.append("year")
            reasons.append(
                f"in {year} the median unit is at {median:.2f}× its trend "
                f"(limit {year_ratio:g}×): the year's figures look broken"
            )
        rows.append((unit, year, value, expected[i], "+".join(rules), "; ".join(reasons)))
    flags = pd.DataFrame(rows, columns=list(FLAG_COLUMNS))
    return flags.astype(
        {
            "unit": str,
            "year": "int64",
            "yield": "float64",
            "expected": "float64",
            "rule": str,
            "reason": str,
        }
    )


def drop_flagged(data: YieldData, flags: pd.DataFrame) -> YieldData:
    """``data`` without the flagged unit-years.

    A unit left with fewer than :data:`~agrimon.yieldcast.data.MIN_YEARS` years is left out
    altogether (in every table) and listed in ``dropped``. To keep some flags, filter
    ``flags`` first (e.g. ``flags[flags["rule"] != "year"]``).

    Args:
        data: The yield data.
        flags: Rows with ``unit`` and ``year`` (from :func:`flag_implausible`).

    Returns:
        New YieldData; a note says how many unit-years were dropped.
    """
    pairs = pd.MultiIndex.from_frame(flags[["unit", "year"]].astype({"unit": str, "year": "int64"}))
    key = pd.MultiIndex.from_frame(data.yields[["unit", "year"]])
    yields = data.yields[~key.isin(pairs)].reset_index(drop=True)
    removed = len(data.yields) - len(yields)
    counts = yields.groupby("unit").size().reindex(data.units, fill_value=0)
    short = {
        str(u): f"fewer than {MIN_YEARS} years left after dropping implausible years"
        for u in counts.index[counts < MIN_YEARS]
    }
    note = f"dropped {removed} implausible unit-year(s)"
    trimmed = YieldData(
        yields=yields,
        calendar=data.calendar,
        series=data.series,
        static=data.static,
        crop=data.crop,
        country=data.country,
        source=data.source,
        dropped=data.dropped,
        notes=(*data.notes, note),
    )
    return keep_units(trimmed, [u for u in data.units if u not in short], short)


def _trends(yields: pd.DataFrame, usable: NDArray[np.bool_], min_years: int) -> NDArray[np.float64]:
    """Each row's Theil–Sen trend of its unit's log yields (t/ha); NaN without a trend."""
    expected = np.full(len(yields), np.nan)
    years = yields["year"].to_numpy(dtype="float64")
    logs = np.log(np.where(usable, yields["yield"].to_numpy(dtype="float64"), np.nan))
    for indices in yields.groupby("unit").indices.values():
        rows = np.asarray(indices, dtype=np.intp)
        fit = rows[usable[rows]]
        if fit.size < max(min_years, 2):
            continue
        x, v = years[fit] - years[fit].mean(), logs[fit]
        i, j = np.triu_indices(fit.size, k=1)
        slope = float(np.median((v[j] - v[i]) / (x[j] - x[i])))
        intercept = float(np.median(v - slope * x))
        expected[rows] = np.exp(intercept + slope * (years[rows] - years[fit].mean()))
    return expected
