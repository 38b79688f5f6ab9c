"""``agrimon yield backtest`` on bad input: one line on stderr, exit code 2, no traceback.

Each test writes a small folder in the CY-Bench layout (the real files' columns:
``yield_maize_ES.csv`` with ``crop_name, country_code, adm_id, harvest_year, yield,
harvest_area, production``; ``crop_calendar_maize_ES.csv`` with ``crop_name, adm_id, sos,
eos``; ``ndvi_maize_ES.csv`` with ``crop_name, adm_id, date, ndvi``; ``soil_maize_ES.csv``)
and runs the real command through typer's runner. Every bad input is refused before any
model is fitted, so those tests take milliseconds; one small backtest runs to the end.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from agrimon.cli import app
from agrimon.yieldcast import baselines

runner = CliRunner()

Row = dict[str, str]
UNITS = ("ES001", "ES002", "ES003", "ES004")
YEARS = (2010, 2011, 2012, 2013)
YIELD_HEADER = (
    "crop_name",
    "country_code",
    "adm_id",
    "harvest_year",
    "yield",
    "harvest_area",
    "production",
)


def _write(path: Path, header: Sequence[str], rows: list[Row]) -> None:
    """A CSV of ``rows``, its columns those of the first row (``header`` when there is none)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(header))
        writer.writeheader()
        writer.writerows(rows)


def cybench(
    tmp_path: Path,
    *,
    units: Sequence[str] = UNITS,
    years: Sequence[int] = YEARS,
    skip: Sequence[str] = (),
    edit: dict[str, Callable[[list[Row]], list[Row]]] | None = None,
) -> Path:
    """A ``data/maize/ES`` folder of yields, calendars, 10-day NDVI and soil; returns ``data``."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "maize" / "ES"
    folder.mkdir(parents=True)
    tables: dict[str, tuple[Sequence[str], list[Row]]] = {}
    rows = []
    for k, unit in enumerate(units):
        for year in years:
            value = 6.0 + 0.5 * k + 0.1 * (year - years[0]) + rng.normal(0.0, 0.3)
            rows.append(
                {
                    "crop_name": "maize",
                    "country_code": "ES",
                    "adm_id": unit,
                    "harvest_year": str(year),
                    "yield": f"{value:.3f}",
                    "harvest_area": "1000.0",
                    "production": f"{1000 * value:.1f}",
                }
            )
    tables["yield"] = (YIELD_HEADER, rows)
    tables["crop_calendar"] = (
        ("crop_name", "adm_id", "sos", "eos"),
        [{"crop_name": "maize", "adm_id": u, "sos": "117.3", "eos": "283.5"} for u in units],
    )
    ndvi = [
        {
            "crop_name": "maize",
            "adm_id": unit,
            "date": f"{year}{month:02d}{day:02d}",
            "ndvi": f"{120 + 40 * np.sin(month / 2) + rng.normal(0, 5):.3f}",
        }
        for unit in units
        for year in years
        for month in range(3, 12)
        for day in (1, 11, 21)
    ]
    tables["ndvi"] = (("crop_name", "adm_id", "date", "ndvi"), ndvi)
    tables["soil"] = (
        ("crop_name", "adm_id", "awc", "bulk_density", "drainage_class"),
        [
            {"crop_name": "maize", "adm_id": u, "awc": "15.9", "bulk_density": "1.45"}
            | {"drainage_class": "4"}
            for u in units
        ],
    )
    for name, (header, table) in tables.items():
        if name in skip:
            continue
        if edit and name in edit:
            table = edit[name]([dict(r) for r in table])
        _write(folder / f"{name}_maize_ES.csv", header, table)
    return tmp_path / "data"


def backtest(data: Path, *args: str, crop: str = "maize", country: str = "ES") -> Result:
    command = ["yield", "backtest", "--data", str(data), "--crop", crop, "--country", country]
    return runner.invoke(app, [*command, "--inner-folds", "2", *args])


def refused(result: Result, fragment: str) -> str:
    """The error line of a refused run, checked: exit 2, one ``error:`` line, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    # The error is the last line, whole: nothing wrapped onto a second line.
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    assert fragment in errors[0], errors[0]
    return errors[0]


# --- the folder, the crop and the country --------------------------------------------------


def test_data_folder_missing(tmp_path: Path) -> None:
    line = refused(backtest(tmp_path / "nowhere"), "does not exist")
    assert str(tmp_path / "nowhere") in line


def test_data_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "yield_maize_ES.csv"
    path.write_text("adm_id,harvest_year,yield\n")
    refused(backtest(path), "is a file, not a folder")


def test_data_folder_without_crop_folders(tmp_path: Path) -> None:
    refused(backtest(tmp_path), "has no data for crop 'maize': the crops there are none")


def test_unknown_crop_lists_the_crops(tmp_path: Path) -> None:
    data = cybench(tmp_path)
    (data / "wheat" / "FR").mkdir(parents=True)
    refused(backtest(data, crop="rice"), "crop 'rice': the crops there are maize, wheat")


def test_unknown_country_lists_the_countries(tmp_path: Path) -> None:
    data = cybench(tmp_path)
    (data / "maize" / "PT").mkdir()
    refused(backtest(data, country="FR"), "country 'FR': the countries there for maize are ES, PT")


# --- the yield file -------------------------------------------------------------------------


def test_no_yield_file(tmp_path: Path) -> None:
    refused(backtest(cybench(tmp_path, skip=("yield",))), "no yield_maize_ES.csv: it is required")


def test_no_calendar_file(tmp_path: Path) -> None:
    data = cybench(tmp_path, skip=("crop_calendar",))
    refused(backtest(data), "no crop_calendar_maize_ES.csv: it is required")


def test_empty_yield_file(tmp_path: Path) -> None:
    data = cybench(tmp_path)
    (data / "maize" / "ES" / "yield_maize_ES.csv").write_text("")
    refused(backtest(data), "yield_maize_ES.csv is empty")


def test_yield_file_with_header_only(tmp_path: Path) -> None:
    data = cybench(tmp_path, edit={"yield": lambda rows: []})
    refused(backtest(data), "yield_maize_ES.csv has no yields")


def test_yield_file_without_required_columns(tmp_path: Path) -> None:
    def no_year(rows: list[Row]) -> list[Row]:
        return [{k: v for k, v in r.items() if k != "harvest_year"} for r in rows]

    line = refused(backtest(cybench(tmp_path, edit={"yield": no_year})), "lacks column(s)")
    assert "harvest_year: it has crop_name, country_code, adm_id, yield" in line


def test_missing_yields(tmp_path: Path) -> None:
    def blank(rows: list[Row]) -> list[Row]:
        rows[2]["yield"] = ""
        return rows

    refused(backtest(cybench(tmp_path, edit={"yield": blank})), "1 row(s) have no yield")


def test_infinite_yield(tmp_path: Path) -> None:
    def infinite(rows: list[Row]) -> list[Row]:
        rows[1]["yield"] = "inf"
        return rows

    refused(backtest(cybench(tmp_path, edit={"yield": infinite})), "(line 3) is not a yield")


# --- the crop calendar ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "1 row(s) have no sos (first at line 3)"),
        ("early", "sos 'early' (line 3) is not a day of year"),
        ("400", "sos 400 (line 3) is not a day of year"),
    ],
)
def test_calendar_row_with_bad_sos(tmp_path: Path, value: str, fragment: str) -> None:
    def bad(rows: list[Row]) -> list[Row]:
        rows[1]["sos"] = value
        return rows

    refused(backtest(cybench(tmp_path, edit={"crop_calendar": bad})), fragment)


def test_no_unit_left(tmp_path: Path) -> None:
    def rename(rows: list[Row]) -> list[Row]:
        return [{**r, "adm_id": "X" + r["adm_id"]} for r in rows]

    data = cybench(tmp_path, edit={"crop_calendar": rename})
    refused(backtest(data), "no unit has both a crop calendar and yields")


# --- what a backtest needs -------------------------------------------------------------------


def test_fewer_than_four_years(tmp_path: Path) -> None:
    line = refused(backtest(cybench(tmp_path, years=YEARS[:3])), "needs at least 4")
    assert "yields of 3 harvest year(s)" in line


def test_years_without_season_data_do_not_count(tmp_path: Path) -> None:
    def early_years_only(rows: list[Row]) -> list[Row]:
        return [r for r in rows if r["date"][:4] in ("2010", "2011")]

    data = cybench(tmp_path, edit={"ndvi": early_years_only})
    refused(backtest(data), "2 harvest year(s) with predictor data in their season (of 4")


def test_one_unit(tmp_path: Path) -> None:
    refused(backtest(cybench(tmp_path, units=UNITS[:1])), "no harvest year has yields of two")


def test_no_predictors(tmp_path: Path) -> None:
    data = cybench(tmp_path, skip=("ndvi", "soil"))
    refused(backtest(data), "has no predictors")


@pytest.mark.parametrize("folds", ["1", "-3"])
def test_inner_folds_that_cannot_fold(tmp_path: Path, folds: str) -> None:
    refused(backtest(cybench(tmp_path), "--inner-folds", folds), f"--inner-folds {folds}")


# --- incomplete units: left out with a note, or refused with --strict -----------------------


def _incomplete(tmp_path: Path) -> Path:
    """The folder plus ES005 without a calendar and ES006 with yields of one year."""

    def extra_units(rows: list[Row]) -> list[Row]:
        extra = [{**r, "adm_id": "ES005"} for r in rows if r["adm_id"] == "ES001"]
        return rows + extra + [{**rows[0], "adm_id": "ES006"}]

    def calendar_of_es006(rows: list[Row]) -> list[Row]:
        return [*rows, {**rows[0], "adm_id": "ES006"}]

    return cybench(tmp_path, edit={"yield": extra_units, "crop_calendar": calendar_of_es006})


def test_strict_refuses_a_unit_with_one_year(tmp_path: Path) -> None:
    refused(backtest(_incomplete(tmp_path), "--strict"), "unit(s) ES006 have yields of one year")


def test_strict_refuses_a_unit_without_calendar(tmp_path: Path) -> None:
    def without_es003(rows: list[Row]) -> list[Row]:
        return [r for r in rows if r["adm_id"] != "ES003"]

    data = cybench(tmp_path, edit={"crop_calendar": without_es003})
    line = refused(backtest(data, "--strict"), "crop_calendar_maize_ES.csv has no crop calendar")
    assert "ES003" in line and "--strict" in line


def test_not_strict_leaves_them_out_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A forest of 5 trees instead of 100: the same code path in a fraction of the time.
    monkeypatch.setattr(
        baselines, "residual_forest", functools.partial(baselines.residual_forest, n_estimators=5)
    )
    out = tmp_path / "scores.json"
    result = backtest(_incomplete(tmp_path), "--json", str(out))
    assert result.exit_code == 0, (result.output, result.exception)
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: 1 unit without a crop calendar left out: ES005; pass --strict to refuse it",
        "note: 1 unit with yields of fewer than 2 years left out: ES006; pass --strict to "
        "refuse it",
    ]
    assert "error" not in result.stderr and "Traceback" not in result.output
    assert result.stdout.splitlines()[0].startswith("model | NRMSE 60d")
    assert json.loads(out.read_text())["country"] == "ES"
    assert set(pd.read_csv(out.with_suffix(".csv"))["unit"]) == set(UNITS)
