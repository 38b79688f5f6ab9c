"""Season features of each unit and harvest year, using only data available at a lead date.

A forecast of harvest year ``Y`` is made at a *lead* date of the unit's season (see
:data:`LEADS`): 60 or 90 days after the start of season, or at its end. Everything here is
built from the observations dated on or before that date, so a forecast never sees the
rest of its season nor any later year (the backtest's no-leakage rule). An observation
counts by its own date as the source gives it; a MODIS composite dated ``d`` summarises a
period starting on ``d``, which is also how CY-Bench cuts its series at a lead time.

Two views of the same observations:

* :func:`season_series`, for the sequence model: each indicator averaged over a fixed
  number of bins (``steps``, default :data:`STEPS`) that split the unit-year's window, from
  :data:`SPINUP_DAYS` days before the start of season to the end of season (both days
  included), into equal parts. The grid is stretched to each unit's calendar, so bin ``k``
  is the same stage of the season (the same share of the window) in every unit and year,
  and the last bin always ends at harvest: the ES maize windows are 175 to 234 days long,
  so their 24 bins are 7.3 to 9.8 days wide, near the 8-day NDVI and 10-day FPAR cadence.
  A bin is the mean of the observations in it; it is NaN where it has none, and every bin
  after the lead date is NaN whatever data exists. The bin holding the lead date keeps the
  observations up to that day. Values keep the source's units: the model standardises
  each indicator with statistics of its training years.
* :func:`season_table`, for the random forest: per indicator, means of windows of fixed
  days after the start of season (a pre-season month, then 30-day windows, then the rest
  of the season), the maximum after the start of season and the mean of the last 30 days
  before the lead date, plus the unit's static features. The columns are the same at every
  lead (windows after the lead are NaN), so forecasts of different leads are comparable;
  the 60- and 90-day leads end a window exactly, so no window is cut short by them.

Both are computed at once for all unit-years from the long ``series`` table with numpy
binning (no loop over observations): a few hundredths of a second per lead for the 50 ES
maize units × 23 years × 2 indicators (about 90 000 observations).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from agrimon.yieldcast.data import YieldData, season_bounds

#: When a forecast is made: days after the start of season, or at the end of season.
Lead = Literal["60d", "90d", "eos"]
LEADS: tuple[Lead, ...] = get_args(Lead)

#: Days after the start of season of the day-offset leads.
LEAD_DAYS: dict[str, int] = {"60d": 60, "90d": 90}

#: Days before the start of season that the features look at: the bare or sown field.
SPINUP_DAYS = 30

#: Bins of :func:`season_series` by default: 7–10 days each for ES maize windows.
STEPS = 24

#: Ends (days after the start of season) of the 30-day windows of :func:`season_table`:
#: ``pre`` is the spin-up up to the start day, ``d30`` days 1–30, …, ``late`` after day 180.
WINDOW_ENDS: tuple[int, ...] = (0, 30, 60, 90, 120, 150, 180)
WINDOWS: tuple[str, ...] = ("pre", *(f"d{e}" for e in WINDOW_ENDS[1:]), "late")
#: Other statistics of :func:`season_table` per indicator.
SUMMARIES: tuple[str, ...] = ("max", "last30")
#: Days before (and including) the lead date of the ``last30`` mean.
LAST_DAYS = 30


@dataclass(frozen=True, eq=False)
class SeasonSeries:
    """Binned season series of unit-years at one lead.

    Attributes:
        values: float32 ``(n_unit_years, steps, n_indicators)``: bin means, NaN where a
            bin has no observation on or before the lead date.
        mask: bool, the shape of ``values``: True where the bin has an observation.
        index: ``(unit, year)`` of each row, sorted by unit then year (every unit of the
            calendar × every year asked for, with or without a yield).
        indicators: Names of the last axis.
        lead: The lead the series were cut at.
        horizon: int64 ``(n_unit_years,)``: bins that start on or before the lead date;
            bins ``horizon`` and later are empty by the lead rule, earlier empty bins lack
            data.
    """

    values: NDArray[np.float32]
    mask: NDArray[np.bool_]
    index: pd.MultiIndex
    indicators: tuple[str, ...]
    lead: Lead
    horizon: NDArray[np.int64]


class _Observations(NamedTuple):
    """Observations inside a unit-year's window and on or before its lead date."""

    row: NDArray[np.int64]  # Row of the unit-year in the bounds table.
    indicator: NDArray[np.int64]  # Position in ``YieldData.indicators``.
    offset: NDArray[np.int64]  # Days after the start of season (>= -spinup).
    value: NDArray[np.float64]


class _Windows(NamedTuple):
    """Per unit-year day numbers (days since 1970-01-01) of the season windows."""

    bounds: pd.DataFrame
    start: NDArray[np.int64]
    end: NDArray[np.int64]
    lead: NDArray[np.int64]


def lead_date(bounds: pd.DataFrame, lead: Lead) -> pd.Series:
    """Forecast date of each unit-year of ``bounds`` at ``lead``.

    Args:
        bounds: From :func:`agrimon.yieldcast.data.season_bounds` (``start``, ``end``).
        lead: ``"60d"`` or ``"90d"``: that many days after ``start``, but not after ``end``
            (a season shorter than the lead is forecast at harvest); ``"eos"``: ``end``.

    Returns:
        ``datetime64[ns]`` dates, index of ``bounds``.

    Raises:
        ValueError: ``lead`` is not one of :data:`LEADS`.
    """
    _check_lead(lead)
    end = bounds["end"]
    if lead == "eos":
        return end.copy()
    date = bounds["start"] + pd.Timedelta(days=LEAD_DAYS[lead])
    return date.where(date <= end, end)


def season_series(
    data: YieldData,
    years: Iterable[int],
    *,
    lead: Lead,
    steps: int = STEPS,
    spinup_days: int = SPINUP_DAYS,
) -> SeasonSeries:
    """Each indicator binned onto the season grid of every unit and harvest year.

    See the module docstring for the grid. Bin ``k`` of a unit-year whose window runs
    ``n`` days from ``start - spinup_days`` holds the observations of days ``p`` of the
    window (0-based) with ``floor(p * steps / n) == k``.

    Args:
        data: The data (``series`` and ``calendar`` are used).
        years: Harvest years (a forecast year need not have yields).
        lead: When the forecast is made (see :func:`lead_date`).
        steps: Bins per season window.
        spinup_days: Days before the start of season where the window begins.

    Returns:
        The binned series; see :class:`SeasonSeries`.

    Raises:
        ValueError: ``lead`` is unknown, ``steps`` < 1, ``spinup_days`` < 0 or no year is
            given.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    windows = _windows(data, years, lead, spinup_days)
    obs = _observations(data, windows, spinup_days)
    n, k = len(windows.bounds), len(data.indicators)
    length = windows.end - windows.start + 1 + spinup_days  # Window days, both ends in.
    # Integer arithmetic keeps the bin edges exact (no float rounding at a boundary).
    position = obs.offset + spinup_days
    step = position * steps // length[obs.row]
    flat = (obs.row * steps + step) * k + obs.indicator
    means, counts = _means(flat, obs.value, n * steps * k)
    lead_position = windows.lead - windows.start + spinup_days
    return SeasonSeries(
        values=means.astype(np.float32).reshape(n, steps, k),
        mask=(counts > 0).reshape(n, steps, k),
        index=_index(windows.bounds),
        indicators=data.indicators,
        lead=lead,
        horizon=np.minimum(lead_position * steps // length + 1, steps).astype(np.int64),
    )


def season_table(
    data: YieldData,
    years: Iterable[int],
    *,
    lead: Lead,
    spinup_days: int = SPINUP_DAYS,
) -> pd.DataFrame:
    """Tabular season features of every unit and harvest year, for the random forest.

    Columns, per indicator ``i`` of ``data.indicators`` in order: ``i_pre`` (mean of the
    ``spinup_days`` days before the start of season and the start day), ``i_d30`` …
    ``i_d180`` (means of days 1–30, 31–60 … 151–180 after the start), ``i_late`` (mean
    after day 180 to the end of season), ``i_max`` (maximum after the start day),
    ``i_last30`` (mean of the 30 days ending on the lead date, within the window); then
    the static features of ``data.static``. Only observations on or before the lead date
    count; NaN where a window has none (after the lead date, or no data).

    Args:
        data: The data.
        years: Harvest years.
        lead: When the forecast is made (see :func:`lead_date`).
        spinup_days: Days before the start of season of the ``pre`` window.

    Returns:
        float64 features indexed by ``(unit, year)``, sorted by unit then year.

    Raises:
        ValueError: ``lead`` is unknown, ``spinup_days`` < 0, no year is given or a static
            feature has the name of a season feature.
    """
    windows = _windows(data, years, lead, spinup_days)
    obs = _observations(data, windows, spinup_days)
    n, k = len(windows.bounds), len(data.indicators)
    group = obs.row * k + obs.indicator  # One (unit-year, indicator) pair.
    window = np.searchsorted(np.asarray(WINDOW_ENDS), obs.offset, side="left")
    means, _ = _means(group * len(WINDOWS) + window, obs.value, n * k * len(WINDOWS))
    in_season = obs.offset > 0
    peak = np.full(n * k, -np.inf)
    np.maximum.at(peak, group[in_season], obs.value[in_season])
    peak[np.isneginf(peak)] = np.nan
    lead_offset = (windows.lead - windows.start)[obs.row]
    last = obs.offset > lead_offset - LAST_DAYS
    recent, _ = _means(group[last], obs.value[last], n * k)
    stats = np.concatenate(
        [means.reshape(n, k, len(WINDOWS)), peak.reshape(n, k, 1), recent.reshape(n, k, 1)],
        axis=2,
    ).reshape(n, -1)
    columns = [f"{i}_{s}" for i in data.indicators for s in (*WINDOWS, *SUMMARIES)]
    clash = sorted(set(columns) & set(map(str, data.static.columns)))
    if clash:
        raise ValueError(
            f"static feature(s) {', '.join(clash)} have the name of a season feature: rename them"
        )
    index = _index(windows.bounds)
    static = data.static.reindex(pd.Index(index.get_level_values("unit"), name="unit"))
    table = pd.DataFrame(stats, index=index, columns=columns)
    for col in static.columns:
        table[str(col)] = static[col].to_numpy(dtype=np.float64)
    return table


def _check_lead(lead: str) -> None:
    """Refuse a lead that is not one of :data:`LEADS`."""
    if lead not in LEADS:
        raise ValueError(f"lead must be one of {', '.join(LEADS)}, got {lead!r}")


def _windows(data: YieldData, years: Iterable[int], lead: Lead, spinup_days: int) -> _Windows:
    """Season bounds of all units × ``years`` and their day numbers."""
    _check_lead(lead)
    if spinup_days < 0:
        raise ValueError(f"spinup_days must be 0 or more, got {spinup_days}")
    years = sorted(set(int(y) for y in years))
    if not years:
        raise ValueError("years is empty: give at least one harvest year")
    bounds = season_bounds(data.calendar, years)
    return _Windows(
        bounds=bounds,
        start=_days(bounds["start"]),
        end=_days(bounds["end"]),
        lead=_days(lead_date(bounds, lead)),
    )


def _observations(data: YieldData, windows: _Windows, spinup_days: int) -> _Observations:
    """The observations of ``data.series`` that each unit-year of ``windows`` may use.

    An observation of day ``d`` and unit ``u`` belongs to harvest year ``Y`` when
    ``start(Y) - spinup_days <= d <= lead(Y)``. Such a ``Y`` is the calendar year of ``d``
    up to two years later (a season starts in ``Y - 1`` at the earliest), or one year
    earlier (an ``eos`` of day 366 falls on 1 January); the few candidates are tried as
    whole arrays, and an observation in two overlapping windows is kept for both.
    """
    bounds = windows.bounds
    years = np.unique(bounds["year"].to_numpy(dtype=np.int64))
    first = int(years[0])
    year_pos = np.full(int(years[-1]) - first + 1, -1, dtype=np.int64)
    year_pos[years - first] = np.arange(years.size)
    series = data.series
    # Codes → positions: robust even if the categories list units without a calendar.
    unit_of_code = pd.Index(data.units).get_indexer(series["unit"].cat.categories.astype(str))
    code = series["unit"].cat.codes.to_numpy()
    unit = np.where(code >= 0, unit_of_code[code], -1).astype(np.int64)
    ind_of_code = pd.Index(data.indicators).get_indexer(
        series["indicator"].cat.categories.astype(str)
    )
    indicator = ind_of_code[series["indicator"].cat.codes.to_numpy()].astype(np.int64)
    day = _days(series["date"])
    year = day.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    value = series["value"].to_numpy(dtype=np.float64)
    first_day = windows.start - spinup_days
    parts: list[tuple[NDArray[np.int64], NDArray[np.intp]]] = []
    for shift in (-1, 0, 1, 2):
        candidate = year + shift - first
        known = (unit >= 0) & (candidate >= 0) & (candidate < year_pos.size)
        pos = np.flatnonzero(known)
        ypos = year_pos[candidate[pos]]
        pos, ypos = pos[ypos >= 0], ypos[ypos >= 0]
        row = unit[pos] * years.size + ypos
        inside = (day[pos] >= first_day[row]) & (day[pos] <= windows.lead[row])
        parts.append((row[inside], pos[inside]))
    row = np.concatenate([p[0] for p in parts])
    pos = np.concatenate([p[1] for p in parts])
    return _Observations(
        row=row,
        indicator=indicator[pos],
        offset=day[pos] - windows.start[row],
        value=value[pos],
    )


def _means(
    flat: NDArray[np.int64], value: NDArray[np.float64], size: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Means (NaN where empty) and counts of ``value`` grouped by ``flat`` in ``[0, size)``."""
    sums = np.bincount(flat, weights=value, minlength=size)
    counts = np.bincount(flat, minlength=size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return means, counts


def _days(dates: pd.Series) -> NDArray[np.int64]:
    """Days since 1970-01-01 of ``datetime64`` dates (a time of day is dropped)."""
    return dates.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)


def _index(bounds: pd.DataFrame) -> pd.MultiIndex:
    """``(unit, year)`` index of the rows of ``bounds``."""
    return pd.MultiIndex.from_arrays(
        [bounds["unit"].astype(str), bounds["year"].astype(np.int64)], names=["unit", "year"]
    )
