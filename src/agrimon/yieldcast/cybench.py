"""Reader of the CY-Bench data layout: one folder per crop and country, one CSV per input.

CY-Bench (Paudel et al. 2025, the crop-yield benchmark of WUR and the JRC) ships its inputs
as ``<data>/<crop>/<CC>/<name>_<crop>_<CC>.csv``, keyed by the subnational unit ``adm_id``:

* ``yield_<crop>_<CC>.csv`` (required): ``adm_id, harvest_year, yield`` (t/ha), and more
  columns (``harvest_area``, ``production``) that are not used;
* ``crop_calendar_<crop>_<CC>.csv`` (required): ``adm_id, sos, eos`` (day of year);
* any other file with a ``date`` column (``YYYYMMDD``, or ISO dates) is a time series: each
  numeric column is one indicator named by the column (``ndvi``, ``fpar``, ``tmax``,
  ``prec`` …; prefixed with the file's name, ``meteo.tmax``, if two files share a name);
* any other file whose columns besides the ids are all numeric gives static features
  (``soil``: ``awc, bulk_density, drainage_class``; ``location``: ``latitude, longitude``).

``crop_name`` and ``country_code`` columns, where present, are ids, not features; rows of
another crop are left out. Files that fit none of these are listed in ``YieldData.notes``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from agrimon.errors import YieldDataError
from agrimon.yieldcast.data import (
    Incomplete,
    YieldData,
    assemble,
    calendar_table,
    line,
    listing,
    read_csv_file,
    series_table,
    yields_table,
)

#: Columns that identify a row rather than measure something.
ID_COLUMNS: tuple[str, ...] = ("crop_name", "country_code", "adm_id")

_EIGHT_DIGITS = re.compile(r"^\d{8}$")


def read_cybench(
    data_dir: str | Path,
    crop: str,
    country: str,
    *,
    incomplete: Incomplete = "drop",
) -> YieldData:
    """Yields, calendars and predictors of one crop and country of a CY-Bench folder.

    Args:
        data_dir: Folder holding ``<crop>/<CC>/`` subfolders (``maize/ES/`` …).
        crop: Crop folder name (any case), e.g. ``"maize"``.
        country: Country folder name (any case), e.g. ``"ES"``.
        incomplete: A unit with yields but no calendar, or one year only: ``"drop"`` leaves
            it out (listed in ``dropped``; real CY-Bench data has such units, e.g. three
            Canary Islands units of maize ES have no calendar), ``"error"`` refuses.

    Returns:
        The data, ``source`` the ``<crop>/<CC>`` folder.

    Raises:
        YieldDataError: The folder, crop, country or a required file is missing, or a file's
            content cannot be used (the message names the file and the fix).
    """
    folder, crop, country = _folder(Path(data_dir), crop, country)
    suffix = f"_{crop}_{country}.csv"
    files = {p.name[: -len(suffix)]: p for p in sorted(folder.glob(f"*{suffix}")) if p.is_file()}
    yield_path = files.pop("yield", None)
    calendar_path = files.pop("crop_calendar", None)
    for path, name, needs in (
        (yield_path, "yield", "adm_id, harvest_year, yield"),
        (calendar_path, "crop_calendar", "adm_id, sos, eos"),
    ):
        if path is None:
            raise YieldDataError(
                f"{folder} has no {name}{suffix}: it is required; add it (columns {needs})"
            )
    assert yield_path is not None and calendar_path is not None  # for mypy: refused above
    yields = yields_table(
        _of_crop(read_csv_file(yield_path, text=["adm_id"]), crop),
        str(yield_path),
        unit="adm_id",
        year="harvest_year",
        value="yield",
    )
    calendar = calendar_table(
        _of_crop(read_csv_file(calendar_path, text=["adm_id"]), crop),
        str(calendar_path),
        unit="adm_id",
    )
    series, static, notes = _predictors(files, crop)
    return assemble(
        yields,
        calendar,
        series=series_table(series),
        static=static,
        crop=crop,
        country=country,
        source=str(folder),
        calendar_source=str(calendar_path),
        incomplete=incomplete,
        notes=notes,
    )


def _folder(root: Path, crop: str, country: str) -> tuple[Path, str, str]:
    """The ``<crop>/<CC>`` folder and its names as spelt on disk, or a YieldDataError."""
    if root.exists() and not root.is_dir():
        raise YieldDataError(
            f"CY-Bench data folder {root} is a file, not a folder: pass the folder that "
            "holds <crop>/<country>/ subfolders (such as maize/ES/)"
        )
    if not root.is_dir():
        raise YieldDataError(
            f"CY-Bench data folder {root} does not exist: pass the folder that holds "
            "<crop>/<country>/ subfolders (such as maize/ES/)"
        )
    crop_dir = _subfolder(root, crop)
    if crop_dir is None:
        crops = listing(sorted(p.name for p in root.iterdir() if p.is_dir())) or "none"
        raise YieldDataError(
            f"{root} has no data for crop {crop!r}: the crops there are {crops}; pass one of them"
        )
    country_dir = _subfolder(crop_dir, country)
    if country_dir is None:
        countries = listing(sorted(p.name for p in crop_dir.iterdir() if p.is_dir())) or "none"
        raise YieldDataError(
            f"{crop_dir} has no data for country {country!r}: the countries there for "
            f"{crop_dir.name} are {countries}; pass one of them"
        )
    return country_dir, crop_dir.name, country_dir.name


def _subfolder(parent: Path, name: str) -> Path | None:
    """Subfolder ``name`` of ``parent``, matched exactly or else ignoring case."""
    exact = parent / name
    if exact.is_dir():
        return exact
    found = [p for p in parent.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    return found[0] if len(found) == 1 else None


def _of_crop(frame: pd.DataFrame, crop: str) -> pd.DataFrame:
    """Rows of ``crop`` where the file names the crop of each row."""
    if "crop_name" not in frame.columns:
        return frame
    # The index is kept: it gives the file's line numbers in messages.
    keep = frame["crop_name"].astype(str).str.lower() == crop.lower()
    return frame[keep]


def _predictors(
    files: dict[str, Path], crop: str
) -> tuple[list[pd.DataFrame], pd.DataFrame | None, list[str]]:
    """Long time-series frames, the static features and notes on skipped files."""
    series: list[pd.DataFrame] = []
    static: pd.DataFrame | None = None
    notes: list[str] = []
    indicators: set[str] = set()
    for name, path in files.items():
        frame = _of_crop(read_csv_file(path, text=["adm_id", "date"]), crop)
        if "adm_id" not in frame.columns or frame.empty:
            notes.append(f"{path.name}: skipped, it has no adm_id column or no rows of {crop}")
            continue
        values = [c for c in frame.columns if c not in (*ID_COLUMNS, "date")]
        numeric = [c for c in values if is_numeric_dtype(frame[c])]
        if "date" in frame.columns:
            if not numeric:
                notes.append(f"{path.name}: skipped, it has dates but no numeric column")
                continue
            dates = _dates(frame["date"], path)
            for col in numeric:
                # Name an indicator by its column; the file's name only tells clashes apart.
                label = col if col not in indicators else f"{name}.{col}"
                indicators.add(label)
                series.append(
                    pd.DataFrame(
                        {
                            "unit": frame["adm_id"].astype(str).str.strip(),
                            "indicator": label,
                            "date": dates,
                            "value": frame[col].astype("float64"),
                        }
                    )
                )
        elif numeric and len(numeric) == len(values):
            table = _static(frame, numeric, path)
            if static is None:
                static = table
            else:
                table.columns = [c if c not in static.columns else f"{name}.{c}" for c in table]
                static = static.join(table, how="outer")
        else:
            notes.append(
                f"{path.name}: skipped, it has neither a date column nor only numeric columns"
            )
    return series, static, notes


def _static(frame: pd.DataFrame, columns: list[str], path: Path) -> pd.DataFrame:
    """Static features of one file indexed by unit, refusing a unit given twice."""
    table = frame.assign(unit=frame["adm_id"].astype(str).str.strip())
    twice = table["unit"].duplicated(keep=False)
    if twice.any():
        raise YieldDataError(
            f"{path}: unit(s) {listing(table.loc[twice, 'unit'].unique())} have more than one "
            "row of static features: keep one row per adm_id"
        )
    return table.set_index("unit")[columns].astype("float64")


def _dates(column: pd.Series, path: Path) -> pd.Series:
    """Dates of ``YYYYMMDD`` (or ISO) text, or a YieldDataError naming the first bad one."""
    text = column.astype(str).str.strip()
    compact = text.str.match(_EIGHT_DIGITS) & column.notna()
    dates = pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns]")
    if compact.any():
        dates[compact] = pd.to_datetime(text[compact], format="%Y%m%d", errors="coerce")
    other = ~compact & column.notna()
    if other.any():
        dates[other] = pd.to_datetime(text[other], format="ISO8601", errors="coerce")
    bad = dates.isna()
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise YieldDataError(
            f"{path}: date {column.iloc[pos]!r} (line {line(column, pos)}) is not a date: give "
            "dates as YYYYMMDD (e.g. 20010101) or YYYY-MM-DD; fix or remove that row"
        )
    return dates
