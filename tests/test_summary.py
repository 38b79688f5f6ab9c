"""The Markdown summary of a run folder: values from the folder's own files, parts optional."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from odc.geo.geobox import GeoBox

from agrimon.area.fieldcheck import SAMPLE_LAYER, SampleDesign, assess, write_sample
from agrimon.area.fieldcheck import write_assessment as write_assessment_files
from agrimon.products.summary import report_link, run_summary
from agrimon.sources.demo import encroached_truth

from .conftest import run_gpkg

PERIOD = "2023-07-01_2024-06-30"


def sections(text: str) -> dict[str, str]:
    """The summary's ``##`` sections by title; the part before the first under ``""``."""
    head, *rest = text.split("\n## ")
    return {"": head, **{part.split("\n", 1)[0]: part for part in rest}}


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row, unescaped (an escaped pipe stays in its cell)."""
    out, current, chars = [], "", iter(line.strip())
    for char in chars:
        if char == "\\":
            current += next(chars, "")
        elif char == "|":
            out.append(current.strip())
            current = ""
        else:
            current += char
    return out[1:]  # before the first pipe: nothing; after the last: the closing ""


def table(section: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the (first) table in ``section``."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert len(lines) >= 2 and set(lines[1]) <= {"|", "-"}
    return cells(lines[0]), [cells(line) for line in lines[2:]]


def csv_table(path: Path, text: tuple[str, ...] = ("zone",)) -> pd.DataFrame:
    return pd.read_csv(path, dtype=dict.fromkeys(text, str), keep_default_na=False)


def subset(run: Path, tmp_path: Path, names: list[str]) -> Path:
    """A folder named like ``run`` (``<aoi>/<period>``) holding only copies of ``names``."""
    folder = tmp_path / run.parent.name / run.name
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(run / name, folder / name)
    return folder


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# On the two demo season runs.


@pytest.mark.slow
def test_heading_and_products_come_from_the_manifest_and_the_files(
    season_runs: tuple[Path, Path],
) -> None:
    later = season_runs[1]
    manifest = json.loads((later / "manifest.json").read_text())
    parts = sections(run_summary(later))
    assert parts[""].splitlines()[0] == f"# {manifest['aoi']['name']}: 2023-07-01 to 2024-06-30"
    tiles, scenes = len(manifest["tiles"]), len(manifest["scenes"])
    assert f"{tiles} tiles, {scenes} scenes, source **demo**." in parts[""]
    products = parts["Products"]
    assert f"- {len(list(later.glob('*.tif')))} rasters (COG)" in products
    gpkg = run_gpkg(later)
    layers = [str(n) for n, geometry in pyogrio.list_layers(gpkg) if geometry is not None]
    assert "invasive_change_polygons" in layers and "layer_styles" not in layers
    line = next(x for x in products.splitlines() if "vector layer" in x)
    assert line.startswith(f"- {len(layers)} vector layers in `{gpkg.name}`: ")
    assert line.split(": ", 1)[1].replace("\\_", "_").split(", ") == layers
    stems = {p.stem for p in later.iterdir() if p.suffix in {".csv", ".parquet"}}
    assert f"- {len(stems)} tables (CSV or Parquet)" in products
    assert f"- QGIS project: `{gpkg.with_suffix('.qgz').name}`" in products
    assert "- Report: `report.html`" in products
    seconds = manifest["run"]["seconds"]
    assert parts[""].rstrip().endswith(f"source **demo**. The run took {seconds:.1f} s.")


@pytest.mark.slow
def test_encroached_area_and_f1_equal_the_run_tables(season_runs: tuple[Path, Path]) -> None:
    for run in season_runs:
        areas = csv_table(run / "invasive_map_areas.csv")
        mine = areas[areas["class"] == "encroached"]
        header, rows = table(sections(run_summary(run))["Bush encroachment"])
        assert header == ["Zone", "Encroached, map area (ha)", "% of zone"]
        expected = [
            [z, f"{ha:.1f}", f"{pct:.1f}"]
            for z, ha, pct in zip(
                mine["zone"], mine["map_area_ha_biased"], mine["map_area_percent"], strict=True
            )
        ]
        assert rows == expected and [r[0] for r in rows] == ["farm block", "north & camp"]
        f1 = json.loads((run / "invasive_accuracy.json").read_text())["classes"]["encroached"]
        assert (
            f"F1 of the encroached class (`invasive_accuracy.json`): {f1['f1']:.3f}."
            in (sections(run_summary(run))["Bush encroachment"])
        )


@pytest.mark.slow
def test_change_rows_equal_the_change_table(season_runs: tuple[Path, Path]) -> None:
    earlier, later = season_runs
    assert "Change since the earlier run" not in sections(run_summary(earlier))
    change = csv_table(later / "invasive_change_areas.csv")
    header, rows = table(sections(run_summary(later))["Change since the earlier run"])
    assert header == ["Zone", "Gained (ha)", "Lost (ha)", "Net (ha)"]
    assert rows == [
        [r.zone, f"{r.gained_ha:.1f}", f"{r.lost_ha:.1f}", f"{r.net_ha:+.1f}"]
        for r in change.itertuples()
    ]


@pytest.mark.slow
def test_yield_rows_equal_the_forecast_table(season_runs: tuple[Path, Path]) -> None:
    later = season_runs[1]
    forecasts = csv_table(later / "yield_forecast.csv", ("unit", "lead"))
    assert len(forecasts) > 10  # the demo block has more fields than the summary lists
    part = sections(run_summary(later))["Yield forecasts"]
    header, rows = table(part)
    assert header == ["Unit", "Year", "Lead", "Forecast (t/ha)", "10–90 % (t/ha)"]
    # Largest expected production first, as in the report.
    first = forecasts.sort_values("production_t", ascending=False, kind="stable").head(10)
    assert rows == [
        [r.unit, str(r.year), r.lead, f"{r.forecast:.2f}", f"{r.p10:.2f} – {r.p90:.2f}"]
        for r in first.itertuples()
    ]
    assert part.rstrip().endswith(f"and {len(forecasts) - 10} more in `yield_forecast.csv`.")


@pytest.mark.slow
def test_clear_observations_count_dates_with_any_clear_pixel(
    season_runs: tuple[Path, Path],
) -> None:
    later = season_runs[1]
    zonal = csv_table(later / "zonal_stats.csv", ("name",))
    per_date = zonal.groupby(["name", "time"], sort=False)["clear_fraction"].max().reset_index()
    expected = [
        [zone, str(int((dates["clear_fraction"] > 0).sum())), str(len(dates))]
        for zone, dates in per_date.groupby("name", sort=False)
    ]
    header, rows = table(sections(run_summary(later))["Data quality"])
    assert header == ["Zone", "Dates with any clear pixel", "Dates"]
    assert rows == expected and len(rows) == 2


@pytest.mark.slow
def test_a_folder_with_some_files_gives_only_their_sections(
    season_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    later = season_runs[1]
    folder = subset(later, tmp_path, ["invasive_change_areas.csv", "yield_forecast.csv"])
    text = run_summary(folder)
    parts = sections(text)
    assert list(parts) == ["", "Products", "Change since the earlier run", "Yield forecasts"]
    assert parts[""].strip() == f"# {later.parent.name}: 2023-07-01 to 2024-06-30"
    assert parts["Products"].splitlines()[2:] == ["- 2 tables (CSV or Parquet)"]
    assert "The run took" not in text and report_link(folder) is None
    # The same sections' content as in the whole folder.
    whole = sections(run_summary(later))
    for title in ("Change since the earlier run", "Yield forecasts"):
        assert parts[title] == whole[title]
    # Only the manifest: the heading with its counts, and the duration.
    only = sections(run_summary(subset(later, tmp_path / "m", ["manifest.json"])))
    assert list(only) == [""]  # the manifest itself is neither raster nor table
    tiles = len(json.loads((later / "manifest.json").read_text())["tiles"])
    assert only[""].splitlines()[2].startswith(f"{tiles} tiles, ")
    assert "The run took" in only[""]


@pytest.mark.slow
def test_an_assessment_replaces_the_map_areas_with_adjusted_areas(
    season_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    later = season_runs[1]
    manifest = json.loads((later / "manifest.json").read_text())
    filled = _filled_sample(later / "invasive_class.tif", tmp_path)
    zones = gpd.read_file(manifest["aoi"]["path"])
    folder = subset(later, tmp_path / "run", ["invasive_map_areas.csv"])
    write_assessment_files(assess(later / "invasive_class.tif", filled, zones=zones), folder)
    estimates = csv_table(folder / "assessment.csv")
    mine = estimates[estimates["class"] == "encroached"]
    expected = [
        [
            r["zone"],
            f"{r['area_ha']:.1f} ± {r['area_ha_ci95']:.1f}",
            f"{r['area_percent']:.1f} ± {r['area_percent_ci95']:.1f}",
        ]
        for r in mine.to_dict(orient="records")
    ]
    assert [r[0] for r in expected] == ["total", "farm block", "north & camp"]
    header, rows = table(sections(run_summary(folder))["Bush encroachment"])
    assert header[1:] == [
        "Encroached, area-adjusted (ha) ± 95 % CI",
        "% of zone ± 95 % CI",
    ]
    assert rows == expected
    # Only the JSON: the same figures (the CSV rounds to 6 significant digits).
    (folder / "assessment.csv").unlink()
    assert table(sections(run_summary(folder))["Bush encroachment"]) == (header, expected)


def _filled_sample(map_path: Path, tmp: Path) -> Path:
    """A sample of the map, its reference filled in from the demo truth."""
    sample = write_sample(map_path, tmp / "sample.gpkg", SampleDesign(n=120, seed=3))
    points = gpd.read_file(sample, layer=SAMPLE_LAYER)
    with rasterio.open(map_path) as src:
        grid = GeoBox(src.shape, src.transform, src.crs)
        classes = json.loads(src.tags(1)["CATEGORY_NAMES"])[1:]
        cols, rows = ~src.transform * (points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    truth = np.asarray(encroached_truth(grid).values)
    hits = truth[np.floor(rows).astype(int), np.floor(cols).astype(int)]
    other = next(c for c in classes if c != "encroached")
    points["reference"] = ["encroached" if hit else other for hit in hits]
    filled = tmp / "filled.gpkg"
    shutil.copy(sample, filled)
    points.to_file(filled, layer=SAMPLE_LAYER, driver="GPKG")
    return filled


# On small folders written here.


def test_an_empty_folder_gives_the_heading_of_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "my-aoi" / PERIOD
    folder.mkdir(parents=True)
    assert run_summary(folder) == "# my-aoi: 2023-07-01 to 2024-06-30\n"
    assert run_summary(tmp_path / "gone" / PERIOD) == "# gone: 2023-07-01 to 2024-06-30\n"


def test_a_zone_name_with_a_pipe_stays_one_cell(tmp_path: Path) -> None:
    folder = tmp_path / "aoi" / PERIOD
    odd = "camp | west\nline two \\"
    write_csv(
        folder / "invasive_map_areas.csv",
        [
            {"zone": odd, "class": "open", "map_area_ha_biased": 1.0, "map_area_percent": 20.0},
            {
                "zone": odd,
                "class": "encroached",
                "map_area_ha_biased": 4.04,
                "map_area_percent": 80,
            },
            {
                "zone": "NA",
                "class": "encroached",
                "map_area_ha_biased": 0.05,
                "map_area_percent": 5,
            },
        ],
    )
    write_csv(folder / "invasive_change_areas.csv", [{"zone": odd, "net_ha": -2.25}])
    parts = sections(run_summary(folder))
    rows = table(parts["Bush encroachment"])[1]
    assert rows == [["camp | west line two \\", "4.0", "80.0"], ["NA", "0.1", "5.0"]]
    line = next(x for x in parts["Bush encroachment"].splitlines() if x.startswith("| camp"))
    assert line.startswith("| camp \\| west line two \\\\ | ")
    # A missing column shows a dash, a negative net its sign.
    assert table(parts["Change since the earlier run"])[1] == [
        ["camp | west line two \\", "–", "–", "-2.2"]
    ]


def test_ten_forecasts_have_no_more_line(tmp_path: Path) -> None:
    folder = tmp_path / "aoi" / PERIOD
    rows: list[dict[str, object]] = [
        {"unit": f"F{k}", "year": 2024, "lead": "eos", "forecast": k + 0.005, "p10": k - 1.0}
        | {"p90": k + 1.234}
        for k in range(10)
    ]
    write_csv(folder / "yield_forecast.csv", rows)
    part = sections(run_summary(folder))["Yield forecasts"]
    assert "more" not in part
    assert table(part)[1][3] == ["F3", "2024", "eos", f"{3.005:.2f}", f"{2.0:.2f} – {4.234:.2f}"]
    assert [r[0] for r in table(part)[1]] == [f"F{k}" for k in range(10)]  # no production_t
    write_csv(folder / "yield_forecast.csv", [*rows, {**rows[0], "unit": "F10"}])
    assert (
        sections(run_summary(folder))["Yield forecasts"]
        .rstrip()
        .endswith("and 1 more in `yield_forecast.csv`.")
    )


def test_report_link_round_trips_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "runs 50% #1" / "aoi" / PERIOD
    folder.mkdir(parents=True)
    assert report_link(folder) is None
    report = folder / "report.html"
    report.write_text("<html></html>")
    link = report_link(folder)
    assert link is not None and link.startswith("file:///") and " " not in link
    assert "%25" in link and "%23" in link  # "%" and "#" percent-encoded
    assert Path(unquote(urlparse(link).path)) == report.resolve()
    assert Path(unquote(urlparse(link).path)).read_text() == "<html></html>"
    monkeypatch.chdir(tmp_path)  # a relative folder gives the same absolute link
    assert report_link(folder.relative_to(tmp_path)) == link
