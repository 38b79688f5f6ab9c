"""The in-memory yield data: yields, crop calendars, predictor series and static features.

Every reader (:func:`agrimon.yieldcast.cybench.read_cybench`, :func:`read_agrimon`) returns
one :class:`YieldData`, whose tables follow fixed column contracts so that the quality check,
the features, the baselines and the backtest never look at a file again:

* ``yields``: one row per unit and harvest year: ``unit`` (str), ``year`` (int64), ``yield``
  (float64, t/ha), sorted by unit then year, no duplicate (unit, year), no missing value,
  every unit with at least :data:`MIN_YEARS` years (a yield trend needs two).
* ``calendar``: one row per unit of ``yields``: ``unit`` (str), ``sos`` and ``eos`` (float64,
  day of year of the start and end of the season, in ``[1, 367)``), sorted by unit. When
  ``eos < sos`` the season crosses the new year: the season of harvest year ``Y`` starts in
  ``Y - 1`` (see :func:`season_bounds`).
* ``series``: the time-series predictors in long format: ``unit`` and ``indicator``
  (categorical, categories the data's units and indicators, sorted), ``date``
  (``datetime64[ns]``), ``value`` (float64, in the source's own units: the CY-Bench MODIS
  NDVI, for one, is scaled to about 0–250 and FPAR is in percent), sorted by indicator, unit,
  date; no missing value (an observation without a value carries nothing). Long format keeps
  indicators of different cadence (8-day NDVI, 10-day FPAR, daily weather) in one table
  without padding, and a season is cut out of it for all indicators at once by comparing
  ``date`` with the unit's :func:`season_bounds`. Categorical ids cost one or two bytes a row
  instead of a string each, which matters for daily weather of a thousand units.
* ``static``: one row per unit of ``yields`` (index ``unit``, sorted), one float64 column per
  static feature (soil, location …), NaN where a source lacks the unit; no columns when the
  source has no static features.

Only units that have yields are kept in any table. Units the reader left out (a unit without
a crop calendar, a unit with one year of yields) are listed in ``dropped`` with the reason,
and anything else it left out (a file it could not use) in ``notes``, so that a report can say
what the figures are based on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from agrimon.errors import YieldDataError
from agrimon.indices.zonal import read_zonal_table

#: Fewest harvest years a unit needs: its yield trend is fitted through them.
MIN_YEARS = 2

#: What a reader does with a unit that has yields but no crop calendar, or one year only:
#: leave it out (listing it in ``YieldData.dropped``) or refuse the whole input.
Incomplete = Literal["drop", "error"]

YIELD_COLUMNS: tuple[str, ...] = ("unit", "year", "yield")
CALENDAR_COLUMNS: tuple[str, ...] = ("unit", "sos", "eos")
SERIES_COLUMNS: tuple[str, ...] = ("unit", "indicator", "date", "value")


@dataclass(frozen=True, eq=False)
class YieldData:
    """Yields, crop calendars and predictors of the units of one crop and country.

    See the module docstring for the column contract of each table. Build one with a reader
    or with :func:`assemble`, which checks the contract; the tables are not copied, so treat
    them as read-only.

    Attributes:
        yields: Unit, year, yield (t/ha).
        calendar: Unit, sos, eos (day of year).
        series: Unit, indicator, date, value (long format).
        static: Static features, indexed by unit.
        crop: Crop name (lower case, e.g. ``"maize"``); selects the physical yield limits.
        country: Country code (upper case, e.g. ``"ES"``), or ``""`` when not known.
        source: Where the data came from, for messages (a folder or the files read).
        dropped: Units left out by the reader or by a quality step → why.
        notes: Other things left out (files that could not be used), one line each.
    """

    yields: pd.DataFrame
    calendar: pd.DataFrame
    series: pd.DataFrame
    static: pd.DataFrame
    crop: str
    country: str
    source: str
    dropped: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, table, columns in (
            ("yields", self.yields, YIELD_COLUMNS),
            ("calendar", self.calendar, CALENDAR_COLUMNS),
            ("series", self.series, SERIES_COLUMNS),
        ):
            if tuple(table.columns) != columns:
                raise ValueError(f"YieldData.{name} must have columns {columns}")

    @cached_property
    def units(self) -> tuple[str, ...]:
        """The units with yields, sorted."""
        return tuple(str(u) for u in self.calendar["unit"])

    def __repr__(self) -> str:
        return (
            f"YieldData({self.crop} {self.country}: {len(self.units)} units, "
            f"{len(self.yields)} unit-years {self.years[0]}–{self.years[1]}, "
            f"indicators {', '.join(self.indicators) or 'none'}, "
            f"{self.static.shape[1]} static features, {len(self.dropped)} units dropped; "
            f"from {self.source})"
        )

    @property
    def indicators(self) -> tuple[str, ...]:
        """Names of the time-series indicators, sorted."""
        return tuple(str(c) for c in self.series["indicator"].cat.categories)

    @property
    def years(self) -> tuple[int, int]:
        """First and last harvest year with a yield."""
        years = self.yields["year"]
        return int(years.min()), int(years.max())


def yields_table(
    frame: pd.DataFrame,
    source: str,
    *,
    unit: str = "unit",
    year: str = "year",
    value: str = "yield",
) -> pd.DataFrame:
    """The ``yields`` table of a raw yield table, or a YieldDataError saying what to fix.

    Args:
        frame: The table as read (any dtypes; other columns are ignored).
        source: The file it came from, for messages.
        unit: Column of the unit ids.
        year: Column of the harvest years (whole numbers).
        value: Column of the yields (t/ha).

    Returns:
        Columns ``unit, year, yield`` with the contract's dtypes, sorted by unit and year.

    Raises:
        YieldDataError: A column is missing, a value is missing or not a number, a year is
            not a whole number, or a unit has two yields for one year.
    """
    _require_columns(frame, source, (unit, year, value), "a yield table")
    if frame.empty:
        raise YieldDataError(f"{source} has no yields: add rows of {unit}, {year}, {value}")
    years = _numbers(frame[year], source, year, "a harvest year")
    yields = _numbers(frame[value], source, value, "a yield (t/ha)")
    whole = years.to_numpy()
    bad = np.flatnonzero(whole != np.round(whole))
    if bad.size:
        raise YieldDataError(
            f"{source}: {year} {frame[year].iloc[bad[0]]!r} (line {line(frame, bad[0])}) is "
            "not a whole year: give harvest years as whole numbers such as 2002"
        )
    units = _ids(frame[unit], source, unit)
    table = pd.DataFrame({"unit": units, "year": years.astype("int64"), "yield": yields})
    twice = table.duplicated(["unit", "year"], keep=False)
    if twice.any():
        pairs = listing(
            f"{u} {y}"
            for u, y in table.loc[twice, ["unit", "year"]].drop_duplicates().itertuples(index=False)
        )
        raise YieldDataError(
            f"{source} has two yields for one unit and year ({pairs}): keep one row each"
        )
    return table.sort_values(["unit", "year"], ignore_index=True)


def calendar_table(
    frame: pd.DataFrame,
    source: str,
    *,
    unit: str = "unit",
    sos: str = "sos",
    eos: str = "eos",
) -> pd.DataFrame:
    """The ``calendar`` table of a raw crop calendar, or a YieldDataError saying what to fix.

    A row without sos or eos is refused (it is a calendar row that cannot be used, not a
    unit without a calendar): remove the row to leave its unit out as one without a calendar.

    Args:
        frame: The table as read.
        source: The file it came from, for messages.
        unit: Column of the unit ids.
        sos: Column of the start of season (day of year).
        eos: Column of the end of season (day of year).

    Returns:
        Columns ``unit, sos, eos``, sorted by unit.

    Raises:
        YieldDataError: A column is missing, a value is missing or not a day of year, or a
            unit has two calendars.
    """
    _require_columns(frame, source, (unit, sos, eos), "a crop calendar")
    table = pd.DataFrame(
        {
            "unit": _ids(frame[unit], source, unit),
            "sos": _numbers(frame[sos], source, sos, "a day of year"),
            "eos": _numbers(frame[eos], source, eos, "a day of year"),
        }
    )
    for col in ("sos", "eos"):
        outside = ~table[col].between(1.0, 367.0, inclusive="left")
        if outside.any():
            pos = int(np.flatnonzero(outside.to_numpy())[0])
            day = float(table[col].to_numpy()[pos])
            raise YieldDataError(
                f"{source}: {col} {day:g} (line {line(table, pos)}) is not a day of year: "
                "give the season's start and end as days of year in [1, 367)"
            )
    twice = table["unit"].duplicated(keep=False)
    if twice.any():
        raise YieldDataError(
            f"{source} has two calendars for unit(s) {listing(table.loc[twice, 'unit'].unique())}:"
            " keep one row each"
        )
    return table.sort_values("unit", ignore_index=True)


def series_table(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """The ``series`` table of long frames of ``unit, indicator, date, value``.

    Args:
        frames: Long frames (``date`` already datetimes); rows without a value are left out.

    Returns:
        One table following the contract (possibly empty).
    """
    parts = [f.loc[:, list(SERIES_COLUMNS)] for f in frames]
    table = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({c: pd.Series(dtype=object) for c in SERIES_COLUMNS})
    )
    table = table.dropna(subset=["value"])
    table = pd.DataFrame(
        {
            "unit": table["unit"].astype(str),
            "indicator": table["indicator"].astype(str),
            "date": pd.to_datetime(table["date"]).astype("datetime64[ns]"),
            "value": table["value"].astype("float64"),
        }
    )
    table = table.sort_values(["indicator", "unit", "date"], ignore_index=True)
    table["unit"] = table["unit"].astype("category")
    table["indicator"] = table["indicator"].astype("category")
    return table


def assemble(
    yields: pd.DataFrame,
    calendar: pd.DataFrame,
    *,
    series: pd.DataFrame | None = None,
    static: pd.DataFrame | None = None,
    crop: str,
    country: str = "",
    source: str,
    calendar_source: str | None = None,
    incomplete: Incomplete = "drop",
    notes: Sequence[str] = (),
) -> YieldData:
    """YieldData of checked tables, keeping only the units that have yields and a calendar.

    Args:
        yields: From :func:`yields_table`.
        calendar: From :func:`calendar_table`.
        series: From :func:`series_table`; none: no time series.
        static: Numeric static features indexed by unit; none: no static features.
        crop: Crop name (stored lower case).
        country: Country code (stored upper case).
        source: Where the data came from, for messages.
        calendar_source: The calendar's file, for messages (default ``source``).
        incomplete: A unit with yields but no calendar, or with fewer than :data:`MIN_YEARS`
            years: ``"drop"`` leaves it out (listed in ``dropped``), ``"error"`` refuses.
        notes: What the reader left out otherwise.

    Returns:
        The data; series, static features and calendars of units without yields are left out.

    Raises:
        YieldDataError: ``incomplete="error"`` and a unit is incomplete, or no unit is left.
    """
    counts = yields.groupby("unit").size()
    short = sorted(str(u) for u in counts.index[counts < MIN_YEARS])
    uncalendared = sorted(set(map(str, counts.index)) - set(map(str, calendar["unit"])))
    if incomplete == "error":
        if short:
            raise YieldDataError(
                f"{source}: unit(s) {listing(short)} have yields of one year only, and a "
                f"yield trend needs at least {MIN_YEARS}: add their other years, remove "
                "them, or let the reader leave them out (incomplete='drop'; on the command "
                "line, without --strict)"
            )
        if uncalendared:
            raise YieldDataError(
                f"{calendar_source or source} has no crop calendar (sos, eos) for unit(s) "
                f"{listing(uncalendared)}, which have yields: add their rows, or let the "
                "reader leave them out (incomplete='drop'; on the command line, without "
                "--strict)"
            )
    dropped = {u: "no crop calendar" for u in uncalendared}
    dropped.update({u: f"yields of fewer than {MIN_YEARS} years" for u in short})
    keep = sorted(set(map(str, counts.index)) - set(dropped))
    if not keep:
        raise YieldDataError(
            f"{source}: no unit has both a crop calendar and yields of {MIN_YEARS} years or "
            "more: check that the unit ids of the yields and the calendar match"
        )
    series = series_table(()) if series is None else series
    static = pd.DataFrame(index=pd.Index([], dtype=str, name="unit")) if static is None else static
    data = YieldData(
        yields=yields,
        calendar=calendar,
        series=series,
        static=static,
        crop=crop.lower(),
        country=country.upper(),
        source=source,
        notes=tuple(notes),
    )
    return keep_units(data, keep, dropped)


def keep_units(data: YieldData, units: Iterable[str], dropped: Mapping[str, str]) -> YieldData:
    """``data`` restricted to ``units`` in every table, recording why others left.

    Args:
        data: The data.
        units: Units to keep.
        dropped: Units that leave now → why (added to ``data.dropped``).

    Returns:
        New YieldData; series categories and static rows follow the kept units.
    """
    keep = sorted(set(units))
    yields = data.yields[data.yields["unit"].isin(keep)].reset_index(drop=True)
    calendar = data.calendar[data.calendar["unit"].isin(keep)].reset_index(drop=True)
    series = data.series[data.series["unit"].isin(keep)].reset_index(drop=True)
    series["unit"] = pd.Categorical(series["unit"].astype(str), categories=keep)
    indicators = sorted(str(c) for c in series["indicator"].unique())
    series["indicator"] = pd.Categorical(series["indicator"].astype(str), categories=indicators)
    static = data.static.reindex(pd.Index(keep, dtype=str, name="unit")).astype("float64")
    return replace(
        data,
        yields=yields,
        calendar=calendar,
        series=series,
        static=static,
        dropped={**data.dropped, **dropped},
    )


def season_bounds(calendar: pd.DataFrame, years: Iterable[int]) -> pd.DataFrame:
    """First and last day of each unit's season of each harvest year.

    A day of year ``d`` of year ``Y`` is the date ``Y-01-01 + (d - 1)`` days, rounded to the
    day (CY-Bench gives fractional days: averages over the unit's pixels). When ``eos < sos``
    the season crosses the new year and the season of harvest year ``Y`` starts in ``Y - 1``:
    a wheat sown in October (day 290) is harvested next July (day 190). A day 366 in a year
    of 365 days is 1 January of the next year.

    Args:
        calendar: The ``calendar`` table (unit, sos, eos).
        years: Harvest years (a forecast year need not have yields).

    Returns:
        Columns ``unit`` (str), ``year`` (int64), ``start`` and ``end`` (``datetime64[ns]``,
        both days in the season), one row per unit and year, sorted by unit then year.
    """
    years = sorted(set(int(y) for y in years))
    units = calendar["unit"].astype(str).to_numpy()
    sos = np.round(calendar["sos"].to_numpy(dtype="float64")).astype("int64")
    eos = np.round(calendar["eos"].to_numpy(dtype="float64")).astype("int64")
    unit_col = np.repeat(units, len(years))
    year_col = np.tile(np.asarray(years, dtype="int64"), len(units))
    sos_col, eos_col = np.repeat(sos, len(years)), np.repeat(eos, len(years))
    start_year = year_col - (eos_col < sos_col)
    return pd.DataFrame(
        {
            "unit": pd.Series(unit_col, dtype=str),
            "year": year_col,
            "start": _day_of_year(start_year, sos_col),
            "end": _day_of_year(year_col, eos_col),
        }
    )


def _day_of_year(years: NDArray[np.int64], days: NDArray[np.int64]) -> NDArray[np.datetime64]:
    """``datetime64[ns]`` of day ``days`` (1 = 1 January) of ``years``."""
    first = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    out: NDArray[np.datetime64] = (first + (days - 1).astype("timedelta64[D]")).astype(
        "datetime64[ns]"
    )
    return out


def read_agrimon(
    zonal_table: str | Path,
    yields_csv: str | Path,
    calendar_csv: str | Path,
    *,
    crop: str = "",
    country: str = "",
    statistic: Literal["mean", "median"] = "mean",
    min_clear_fraction: float = 0.5,
    incomplete: Incomplete = "drop",
) -> YieldData:
    """YieldData of agrimon's own zonal time series, a yields CSV and a calendar CSV.

    The zones' ``name`` is the unit id, each zonal ``index`` (ndvi, evi …) an indicator and
    its ``statistic`` over the zone's clear pixels the value. Zone-days with less than
    ``min_clear_fraction`` of the zone clear are left out: their statistic describes only the
    clear part of the zone, often a different land cover than the crop's.

    Args:
        zonal_table: A Parquet or CSV table written by
            :func:`agrimon.indices.zonal.write_zonal_table`.
        yields_csv: CSV with columns ``unit, year, yield`` (t/ha).
        calendar_csv: CSV with columns ``unit, sos, eos`` (day of year).
        crop: Crop name (selects the physical limits of the quality check).
        country: Country code, if any.
        statistic: Zonal statistic to use as the value.
        min_clear_fraction: Fewest clear pixels (share of the zone) of a zone-day to use it.
        incomplete: See :func:`assemble`.

    Returns:
        The data (no static features).

    Raises:
        YieldDataError: A file is missing or unreadable, or its content breaks the contract.
    """
    paths = [Path(p) for p in (zonal_table, yields_csv, calendar_csv)]
    for path in paths:
        if not path.is_file():
            raise YieldDataError(f"{path} does not exist: pass the path of an existing file")
    try:
        zonal = read_zonal_table(paths[0])
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise YieldDataError(
            f"{paths[0]} is not a zonal table written by agrimon ({exc}): pass the "
            "zonal_stats.parquet or .csv of a monitor run"
        ) from exc
    names = zonal.groupby("name")["zone_id"].nunique()
    if (names > 1).any():
        raise YieldDataError(
            f"{paths[0]}: zone name(s) {listing(names.index[names > 1])} are given to more "
            "than one zone, so they cannot name units: give every zone its own name"
        )
    long = zonal_series(zonal, statistic=statistic, min_clear_fraction=min_clear_fraction)
    yields = yields_table(read_csv_file(paths[1], text=["unit"]), str(paths[1]))
    calendar = calendar_table(read_csv_file(paths[2], text=["unit"]), str(paths[2]))
    return assemble(
        yields,
        calendar,
        series=series_table([long]),
        crop=crop,
        country=country,
        source=", ".join(str(p) for p in paths),
        calendar_source=str(paths[2]),
        incomplete=incomplete,
    )


def zonal_series(
    table: pd.DataFrame,
    *,
    statistic: Literal["mean", "median"] = "mean",
    min_clear_fraction: float = 0.5,
) -> pd.DataFrame:
    """Long ``unit, indicator, date, value`` rows of an agrimon zonal table.

    The zone's ``name`` is the unit, its ``index`` the indicator; zone-days with less than
    ``min_clear_fraction`` of the zone clear are left out (their statistic describes only
    the clear part of the zone, often another land cover than the crop's).
    """
    kept = table[table["clear_fraction"].fillna(0.0) >= min_clear_fraction]
    return pd.DataFrame(
        {
            "unit": kept["name"],
            "indicator": kept["index"],
            "date": kept["time"],
            "value": kept[statistic],
        }
    )


def read_csv_file(path: Path, *, text: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV as a frame (columns ``text`` read as text), or a YieldDataError naming the file."""
    try:
        return pd.read_csv(path, dtype=dict.fromkeys(text, str))
    except pd.errors.EmptyDataError as exc:
        raise YieldDataError(
            f"{path} is empty: give a comma-separated file with a header and rows"
        ) from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise YieldDataError(
            f"{path} cannot be read as CSV ({exc}): give a comma-separated file with a header"
        ) from exc


def _require_columns(frame: pd.DataFrame, source: str, columns: Sequence[str], what: str) -> None:
    """Refuse a frame that lacks some of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise YieldDataError(
            f"{source} lacks column(s) {', '.join(missing)}: it has "
            f"{', '.join(map(str, frame.columns)) or 'none'}; {what} needs {', '.join(columns)}"
        )


def _numbers(column: pd.Series, source: str, name: str, what: str) -> pd.Series:
    """``column`` as float64, refusing text, infinities and missing values."""
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    text = (values.isna() & column.notna()) | np.isinf(values)
    if text.any():
        pos = int(np.flatnonzero(text.to_numpy())[0])
        raise YieldDataError(
            f"{source}: {name} {column.iloc[pos]!r} (line {line(column, pos)}) is not {what}: "
            "fix or remove that row"
        )
    if values.isna().any():
        rows = np.flatnonzero(values.isna().to_numpy())
        raise YieldDataError(
            f"{source}: {rows.size} row(s) have no {name} (first at line {line(column, rows[0])}): "
            "fill them in or remove those rows"
        )
    return values


def _ids(column: pd.Series, source: str, name: str) -> pd.Series:
    """Unit ids as stripped text, refusing missing ones."""
    missing = column.isna() | (column.astype(str).str.strip() == "")
    if missing.any():
        pos = int(np.flatnonzero(missing.to_numpy())[0])
        raise YieldDataError(
            f"{source}: the row at line {line(column, pos)} has no {name}: give every row its "
            "unit id"
        )
    return column.astype(str).str.strip()


def line(table: pd.DataFrame | pd.Series, pos: int) -> int:
    """Line of the CSV file (header = 1) of row ``pos`` of a table read with a range index."""
    label = table.index[pos]
    return int(label) + 2 if isinstance(label, (int, np.integer)) else pos + 2


def listing(items: Iterable[object], limit: int = 10) -> str:
    """Comma-separated ``items``, the first ``limit`` of them and a count of the rest."""
    names = [str(i) for i in items]
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
