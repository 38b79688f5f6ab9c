"""Yield data layer: the CY-Bench reader, agrimon's own reader, and the quality check.

The real CY-Bench maize data of Spain is read once; the facts it is checked against are
counted from the CSV files with the csv module, independently of the reader. Every error
message is checked on a small folder made from the real files (three units).
"""

from __future__ import annotations

import csv
import functools
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agrimon.errors import AgrimonError, YieldDataError
from agrimon.indices.zonal import COLUMNS, write_zonal_table
from agrimon.yieldcast.cybench import read_cybench
from agrimon.yieldcast.data import (
    YieldData,
    assemble,
    calendar_table,
    read_agrimon,
    season_bounds,
    yields_table,
)
from agrimon.yieldcast.quality import drop_flagged, flag_implausible
from tests.conftest import REAL_DATA, real_path

Row = dict[str, str]


def _rows(path: Path) -> list[Row]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _es_file(name: str) -> Path:
    return real_path("cybench", "maize", "ES", f"{name}_maize_ES.csv")


@pytest.fixture(scope="module")
def es() -> YieldData:
    real_path("cybench", "maize", "ES")
    return read_cybench(REAL_DATA / "cybench", "maize", "ES")


# --- the real data -------------------------------------------------------------------------


def test_real_units_and_years(es: YieldData) -> None:
    rows = _rows(_es_file("yield"))
    calendared = {r["adm_id"] for r in _rows(_es_file("crop_calendar")) if r["sos"] and r["eos"]}
    years: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        years[r["adm_id"]].append(int(r["harvest_year"]))
    kept = sorted(u for u in years if u in calendared)

    assert es.units == tuple(kept)
    assert dict(es.dropped) == {u: "no crop calendar" for u in years if u not in calendared}
    got = es.yields.groupby("unit")["year"].apply(list).to_dict()
    assert got == {u: sorted(years[u]) for u in kept}
    kept_rows = [r for r in rows if r["adm_id"] in calendared]
    assert es.years == (
        min(int(r["harvest_year"]) for r in kept_rows),
        max(int(r["harvest_year"]) for r in kept_rows),
    )
    values = {(r["adm_id"], int(r["harvest_year"])): float(r["yield"]) for r in kept_rows}
    pairs = zip(es.yields["unit"], es.yields["year"], strict=True)
    assert dict(zip(pairs, es.yields["yield"], strict=True)) == values
    # The facts themselves, for the record: 53 units with yields, 3 of them (Canary
    # Islands) without a crop calendar; 1998–2020.
    assert (len(years), len(es.units), es.years) == (53, 50, (1998, 2020))
    assert list(es.yields.dtypes.astype(str)) == ["str", "int64", "float64"]


@pytest.mark.parametrize("indicator", ["ndvi", "fpar"])
def test_real_observations_per_unit(es: YieldData, indicator: str) -> None:
    rows = _rows(_es_file(indicator))
    units = set(es.units)
    counts = Counter(r["adm_id"] for r in rows if r["adm_id"] in units)
    series = es.series[es.series["indicator"] == indicator]
    got = series.groupby("unit").size()
    assert {str(u): int(n) for u, n in got.items() if n} == dict(counts)
    dates = sorted(r["date"] for r in rows)
    assert series["date"].min() == pd.Timestamp(dates[0])
    assert series["date"].max() == pd.Timestamp(dates[-1])
    first = next(r for r in rows if r["adm_id"] == "ES412")
    hit = series[(series["unit"] == "ES412") & (series["date"] == pd.Timestamp(first["date"]))]
    assert hit["value"].tolist() == [float(first[indicator])]


def test_real_series_contract(es: YieldData) -> None:
    assert es.indicators == ("fpar", "ndvi")
    assert list(es.series.columns) == ["unit", "indicator", "date", "value"]
    assert str(es.series["date"].dtype) == "datetime64[ns]"
    assert es.series["unit"].dtype == "category"
    assert es.series["value"].notna().all()
    assert pd.MultiIndex.from_frame(
        es.series[["indicator", "unit", "date"]]
    ).is_monotonic_increasing
    # The three units without NDVI and FPAR are the three without a crop calendar.
    assert es.series.groupby("unit").size().gt(0).sum() == len(es.units)


def test_real_calendar_and_static(es: YieldData) -> None:
    rows = {r["adm_id"]: r for r in _rows(_es_file("crop_calendar"))}
    for unit, sos, eos in es.calendar.itertuples(index=False):
        assert (sos, eos) == (float(rows[unit]["sos"]), float(rows[unit]["eos"]))
    assert (es.calendar["eos"] > es.calendar["sos"]).all()  # maize in Spain: April to November
    bounds = season_bounds(es.calendar, [2010])
    es412 = bounds[bounds["unit"] == "ES412"].iloc[0]  # sos 117.3, eos 313.5
    assert (es412["start"], es412["end"]) == (
        pd.Timestamp("2010-04-27"),
        pd.Timestamp("2010-11-10"),
    )

    soil = {r["adm_id"]: r for r in _rows(_es_file("soil"))}
    assert list(es.static.columns) == [
        "latitude",
        "longitude",
        "awc",
        "bulk_density",
        "drainage_class",
    ]
    assert tuple(es.static.index) == es.units
    assert es.static.at["ES412", "awc"] == float(soil["ES412"]["awc"])
    assert es.static.loc[list(soil.keys() & set(es.units))].notna().all().all()


def test_real_2002_is_flagged_and_little_else(es: YieldData) -> None:
    flags = flag_implausible(es)
    print("\nflagged unit-years of maize ES:\n" + flags.drop(columns="reason").to_string())
    rows_2002 = int((es.yields["year"] == 2002).sum())
    flagged_2002 = int((flags["year"] == 2002).sum())
    others = flags[flags["year"] != 2002]
    print(
        f"2002: {flagged_2002} of {rows_2002} rows; other years: {len(others)} of {len(es.yields)}"
    )
    assert flagged_2002 >= 0.9 * rows_2002
    assert len(others) <= 0.01 * len(es.yields)

    # Every 2002 yield at under a fifth of the unit's median of its other years is flagged on
    # its own history too, not only because its year is: counted from the CSV.
    history: dict[str, dict[int, float]] = defaultdict(dict)
    for r in _rows(_es_file("yield")):
        history[r["adm_id"]][int(r["harvest_year"])] = float(r["yield"])
    tenfold = {
        u
        for u, years in history.items()
        if u in es.units
        and 2002 in years
        and years[2002] < statistics.median(v for y, v in years.items() if y != 2002) / 5
    }
    assert len(tenfold) >= 15
    on_history = set(
        flags.loc[(flags["year"] == 2002) & flags["rule"].str.contains("history"), "unit"]
    )
    assert tenfold <= on_history

    kept = drop_flagged(es, flags)
    assert len(kept.yields) == len(es.yields) - len(flags)
    assert 2002 not in set(kept.yields["year"])
    assert kept.units == es.units
    assert kept.notes[-1] == f"dropped {len(flags)} implausible unit-year(s)"


# --- small folders made from the real files --------------------------------------------------

UNITS = ("ES412", "ES413", "ES414")


def small_folder(
    tmp_path: Path,
    *,
    skip: tuple[str, ...] = (),
    edit: dict[str, Callable[[list[Row]], list[Row]]] | None = None,
) -> Path:
    """A CY-Bench folder ``data/maize/ES`` with the real files of three units."""
    source = real_path("cybench", "maize", "ES")
    folder = tmp_path / "data" / "maize" / "ES"
    folder.mkdir(parents=True)
    for path in sorted(source.glob("*_maize_ES.csv")):
        name = path.name.removesuffix("_maize_ES.csv")
        if name in skip:
            continue
        rows = [dict(r) for r in _unit_rows(path)]
        if edit and name in edit:
            rows = edit[name](rows)
        _write(folder / path.name, rows)
    return tmp_path / "data"


@functools.cache
def _unit_rows(path: Path) -> tuple[Row, ...]:
    """The rows of :data:`UNITS` in a real file (read once: the series files are large)."""
    return tuple(r for r in _rows(path) if r["adm_id"] in UNITS)


def _write(path: Path, rows: list[Row]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _error(data: Path, crop: str = "maize", country: str = "ES", **kwargs: str) -> str:
    with pytest.raises(YieldDataError) as info:
        read_cybench(data, crop, country, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, AgrimonError)
    return message


def test_small_folder_reads(tmp_path: Path) -> None:
    data = read_cybench(small_folder(tmp_path), "MAIZE", "es")
    assert (data.units, data.crop, data.country) == (UNITS, "maize", "ES")
    assert data.dropped == {} and data.notes == ()
    assert data.source == str(tmp_path / "data" / "maize" / "ES")


def test_missing_data_dir(tmp_path: Path) -> None:
    message = _error(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message and "does not exist" in message


def test_unknown_crop_lists_crops(tmp_path: Path) -> None:
    data = small_folder(tmp_path)
    (data / "wheat" / "FR").mkdir(parents=True)
    message = _error(data, crop="rice")
    assert "'rice'" in message and "maize, wheat" in message


def test_unknown_country_lists_countries(tmp_path: Path) -> None:
    data = small_folder(tmp_path)
    (data / "maize" / "PT").mkdir()
    message = _error(data, country="FR")
    assert "'FR'" in message and "ES, PT" in message


@pytest.mark.parametrize("name", ["yield", "crop_calendar"])
def test_required_file_missing(tmp_path: Path, name: str) -> None:
    message = _error(small_folder(tmp_path, skip=(name,)))
    assert f"{name}_maize_ES.csv" in message and "required" in message


def test_yield_column_missing(tmp_path: Path) -> None:
    def no_yield(rows: list[Row]) -> list[Row]:
        return [{k: v for k, v in r.items() if k != "yield"} for r in rows]

    message = _error(small_folder(tmp_path, edit={"yield": no_yield}))
    assert "yield_maize_ES.csv lacks column(s) yield" in message and "harvest_area" in message


def test_yield_values_missing(tmp_path: Path) -> None:
    def blank(rows: list[Row]) -> list[Row]:
        rows[4]["yield"] = ""
        rows[7]["yield"] = ""
        return rows

    message = _error(small_folder(tmp_path, edit={"yield": blank}))
    assert "2 row(s) have no yield (first at line 6)" in message


def test_yield_not_a_number(tmp_path: Path) -> None:
    def text(rows: list[Row]) -> list[Row]:
        rows[2]["yield"] = "n.a."
        return rows

    message = _error(small_folder(tmp_path, edit={"yield": text}))
    assert "yield 'n.a.' (line 4) is not a yield" in message


def test_two_yields_for_one_year(tmp_path: Path) -> None:
    message = _error(small_folder(tmp_path, edit={"yield": lambda rows: [*rows, rows[0]]}))
    assert "two yields for one unit and year (ES412 1998)" in message


def _one_year_es414(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r["adm_id"] != "ES414" or r["harvest_year"] == "2010"]


def test_unit_with_one_year(tmp_path: Path) -> None:
    folder = small_folder(tmp_path, edit={"yield": _one_year_es414})
    message = _error(folder, incomplete="error")
    assert "ES414" in message and "one year only" in message and "at least 2" in message
    data = read_cybench(folder, "maize", "ES")
    assert data.units == ("ES412", "ES413")
    assert data.dropped == {"ES414": "yields of fewer than 2 years"}
    assert "ES414" not in set(data.series["unit"]) and "ES414" not in data.static.index


def test_unit_without_calendar(tmp_path: Path) -> None:
    def drop_es413(rows: list[Row]) -> list[Row]:
        return [r for r in rows if r["adm_id"] != "ES413"]

    folder = small_folder(tmp_path, edit={"crop_calendar": drop_es413})
    message = _error(folder, incomplete="error")
    assert "crop_calendar_maize_ES.csv has no crop calendar" in message and "ES413" in message
    data = read_cybench(folder, "maize", "ES")
    assert data.dropped == {"ES413": "no crop calendar"}
    assert data.units == ("ES412", "ES414")


def test_no_unit_left(tmp_path: Path) -> None:
    def rename(rows: list[Row]) -> list[Row]:
        return [{**r, "adm_id": "X" + r["adm_id"]} for r in rows]

    message = _error(small_folder(tmp_path, edit={"crop_calendar": rename}))
    assert "no unit has both a crop calendar and yields" in message


def test_calendar_day_out_of_range(tmp_path: Path) -> None:
    def late(rows: list[Row]) -> list[Row]:
        rows[1]["eos"] = "400"
        return rows

    message = _error(small_folder(tmp_path, edit={"crop_calendar": late}))
    assert "eos 400 (line 3) is not a day of year" in message


def test_unparsable_date(tmp_path: Path) -> None:
    def bad_date(rows: list[Row]) -> list[Row]:
        rows[10]["date"] = "20011345"
        return rows

    message = _error(small_folder(tmp_path, edit={"fpar": bad_date}))
    assert "fpar_maize_ES.csv: date '20011345' (line 12) is not a date" in message
    assert "YYYYMMDD" in message


def test_only_required_files(tmp_path: Path) -> None:
    folder = small_folder(tmp_path, skip=("ndvi", "fpar", "soil", "location"))
    data = read_cybench(folder, "maize", "ES")
    assert data.series.empty and data.indicators == ()
    assert list(data.series.columns) == ["unit", "indicator", "date", "value"]
    assert str(data.series["date"].dtype) == "datetime64[ns]"
    assert data.static.shape == (3, 0) and tuple(data.static.index) == UNITS


def test_other_predictor_files_are_read_generically(tmp_path: Path) -> None:
    folder = small_folder(tmp_path, skip=("fpar", "soil"))
    country = folder / "maize" / "ES"
    weather = [
        {"crop_name": "maize", "adm_id": u, "date": d, "tmax": t, "prec": p}
        for u in UNITS
        for d, t, p in (("2010-05-01", "21.5", "0.0"), ("2010-05-02", "23.0", ""))
    ]
    _write(country / "meteo_maize_ES.csv", weather)
    _write(
        country / "elevation_maize_ES.csv",
        [{"adm_id": u, "elevation": str(800 + i)} for i, u in enumerate(UNITS)],
    )
    _write(country / "remarks_maize_ES.csv", [{"adm_id": "ES412", "remark": "dry spring"}])
    _write(country / "ndvi_maize_FR.csv", [{"adm_id": "ES412", "date": "x", "ndvi": "1"}])

    data = read_cybench(folder, "maize", "ES")
    assert data.indicators == ("ndvi", "prec", "tmax")
    tmax = data.series[data.series["indicator"] == "tmax"]
    assert tmax["value"].tolist() == [21.5, 23.0] * 3
    assert tmax["date"].iloc[0] == pd.Timestamp("2010-05-01")
    assert len(data.series[data.series["indicator"] == "prec"]) == 3  # the empty values left out
    assert data.static["elevation"].tolist() == [800.0, 801.0, 802.0]
    assert list(data.static.columns) == ["elevation", "latitude", "longitude"]
    assert data.notes == (
        "remarks_maize_ES.csv: skipped, it has neither a date column nor only numeric columns",
    )


def test_season_crossing_the_new_year() -> None:
    calendar = calendar_table(
        pd.DataFrame({"unit": ["wheat", "maize"], "sos": [300.4, 100.0], "eos": [190.0, 280.0]}),
        "test",
    )
    bounds = season_bounds(calendar, [2021, 2020]).set_index(["unit", "year"])
    # Winter wheat of harvest year 2020: sown on day 300 of 2019, harvested on day 190 of
    # 2020 (a leap year: 8 July).
    assert bounds.loc[("wheat", 2020), "start"] == pd.Timestamp("2019-10-27")
    assert bounds.loc[("wheat", 2020), "end"] == pd.Timestamp("2020-07-08")
    assert bounds.loc[("wheat", 2021), "start"] == pd.Timestamp("2020-10-26")
    assert bounds.loc[("maize", 2020), "start"] == pd.Timestamp("2020-04-09")
    assert bounds.loc[("maize", 2020), "end"] == pd.Timestamp("2020-10-06")
    assert list(bounds.index) == [
        ("maize", 2020),
        ("maize", 2021),
        ("wheat", 2020),
        ("wheat", 2021),
    ]


# --- agrimon's own products ------------------------------------------------------------------


def test_read_agrimon(tmp_path: Path) -> None:
    times = pd.to_datetime(["2024-05-01", "2024-06-01", "2024-07-01"])
    table = pd.DataFrame(
        [
            {
                "zone_id": z,
                "name": name,
                "time": t,
                "index": "ndvi",
                "mean": 0.1 * (k + 1) + z,
                "median": 0.0,
                "std": 0.0,
                "count": 10,
                "clear_fraction": 0.2 if k == 1 else 1.0,
                "pixels": 10,
            }
            for z, name in ((1, "north field"), (2, "south field"))
            for k, t in enumerate(times)
        ],
        columns=list(COLUMNS),
    ).astype({"time": "datetime64[ns]"})
    (zonal,) = write_zonal_table(table, tmp_path / "zonal", formats=("csv",))
    yields = tmp_path / "yields.csv"
    yields.write_text(
        "unit,year,yield\nnorth field,2022,7.5\nnorth field,2023,8\nsouth field,2022,6\n"
        "south field,2023,6.5\n"
    )
    calendar = tmp_path / "calendar.csv"
    calendar.write_text("unit,sos,eos\nnorth field,110,290\nsouth field,115,295\n")

    data = read_agrimon(zonal, yields, calendar, crop="Maize")
    assert data.units == ("north field", "south field") and data.crop == "maize"
    assert data.indicators == ("ndvi",)
    north = data.series[data.series["unit"] == "north field"]
    # The cloudy day (20 % clear) is left out.
    assert north["date"].tolist() == [times[0], times[2]]
    np.testing.assert_allclose(north["value"], [1.1, 1.3])
    assert data.yields["yield"].tolist() == [7.5, 8.0, 6.0, 6.5]
    assert data.static.shape == (2, 0)

    with pytest.raises(YieldDataError, match="does not exist"):
        read_agrimon(tmp_path / "none.csv", yields, calendar)
    yields.write_text("zone,year,yield\nnorth field,2022,7.5\n")
    with pytest.raises(YieldDataError, match="lacks column"):
        read_agrimon(zonal, yields, calendar)


# --- the quality check on hand-made data -----------------------------------------------------


def _data(rows: list[tuple[str, int, float]], crop: str = "maize") -> YieldData:
    yields = yields_table(pd.DataFrame(rows, columns=["unit", "year", "yield"]), "test")
    units = sorted({r[0] for r in rows})
    calendar = calendar_table(pd.DataFrame({"unit": units, "sos": 100.0, "eos": 280.0}), "test")
    return assemble(yields, calendar, crop=crop, source="test")


def test_physical_limits_and_trend() -> None:
    steady = [("A", 2000 + k, 8.0 * 1.02**k) for k in range(10)]
    steady[3] = ("A", 2003, 30.0)  # above any maize yield
    steady[6] = ("A", 2006, 2.0)  # a quarter of the trend
    rows = [*steady, ("B", 2000, 5.0), ("B", 2001, 0.0)]
    flags = flag_implausible(_data(rows))
    assert flags[["unit", "year", "rule"]].values.tolist() == [
        ["A", 2003, "physical"],
        ["A", 2006, "history"],
        ["B", 2001, "physical"],
    ]
    assert "outside (0, 25] t/ha" in flags["reason"].iloc[0]
    assert math.isclose(flags["expected"].iloc[1], 8.0 * 1.02**6, rel_tol=1e-9)
    assert np.isnan(flags["expected"].iloc[2])  # two years: no trend
    # Potatoes may yield 30 t/ha, but not 3.5 times their trend.
    potato = flag_implausible(_data(steady, crop="potato"))
    assert potato[["year", "rule"]].values.tolist() == [[2003, "history"], [2006, "history"]]

    kept = drop_flagged(_data(rows), flags)
    assert kept.units == ("A",)
    assert kept.dropped == {"B": "fewer than 2 years left after dropping implausible years"}
    assert len(kept.yields) == 8


def test_year_wide_anomaly() -> None:
    rng = np.random.default_rng(7)
    rows = [
        (
            f"U{u}",
            year,
            float(6.0 * (0.1 if year == 2005 and u < 4 else 1.0) * rng.uniform(0.9, 1.1)),
        )
        for u in range(6)
        for year in range(2000, 2012)
    ]
    flags = flag_implausible(_data(rows))
    assert set(flags["year"]) == {2005}
    assert sorted(flags["unit"]) == [f"U{u}" for u in range(6)]
    assert set(flags.loc[flags["unit"] == "U5", "rule"]) == {"year"}
    assert set(flags.loc[flags["unit"] == "U0", "rule"]) == {"history+year"}
