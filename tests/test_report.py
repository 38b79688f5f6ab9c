"""The run report: one self-contained HTML file built from a folder of small tables."""

from __future__ import annotations

import base64
import csv
import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from agrimon.area.fieldcheck import CSV_FIELDS
from agrimon.products.forecasts import FORECAST_COLUMNS
from agrimon.products.report import (
    SECTIONS,
    ChangeReport,
    ReportInputs,
    clear_observations,
    markdown_html,
    write_report,
)

PERIOD = (date(2023, 7, 1), date(2024, 6, 30))
ODD = 'Zone <A> & "B"'
ODD_HTML = "Zone &lt;A&gt; &amp; &quot;B&quot;"
THIN = "\u202f"


def png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (4, 3), colour).save(path, format="PNG")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def assessment_row(zone: str, cls: str, **values: object) -> list[object]:
    row = dict.fromkeys(CSV_FIELDS, "")
    row.update(zone=zone, **{"class": cls}, **{k: str(v) for k, v in values.items()})
    return [row[k] for k in CSV_FIELDS]


def zonal_table() -> pd.DataFrame:
    """Two zones, two indices (each date once per index), dates in July and August 2023."""
    rows = []
    dates = {
        # zone 1: July 2 of 3 clear (0.5 counts as clear), August 0 of 1.
        (1, ODD): [
            ("2023-07-04", 1.0),
            ("2023-07-09", 0.3),
            ("2023-07-14", 0.5),
            ("2023-08-03", 0.0),
        ],
        # zone 2: July 1 of 1, August 2 of 2.
        (2, "Plain"): [("2023-07-04", 0.9), ("2023-08-03", 0.6), ("2023-08-28", 0.7)],
    }
    for (zone_id, name), items in dates.items():
        for when, clear in items:
            for index in ("ndvi", "ndmi"):
                rows.append(
                    {
                        "zone_id": zone_id,
                        "name": name,
                        "time": pd.Timestamp(when),
                        "index": index,
                        "mean": 0.4,
                        "median": 0.4,
                        "std": 0.1,
                        "count": 10,
                        "clear_fraction": clear,
                        "pixels": 10,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, ReportInputs]:
    folder = tmp_path / "2023-07-01_2024-06-30"
    folder.mkdir()
    write_csv(
        folder / "invasive_map_areas.csv",
        ["zone", "class", "map_area_ha_biased", "map_area_percent"],
        [[ODD, "open", "700.0000", "70.0000"], [ODD, "encroached", "300.0000", "30.0000"]],
    )
    write_csv(
        folder / "assessment.csv",
        list(CSV_FIELDS),
        [
            assessment_row(
                "total",
                "encroached",
                area_ha=1234.56,
                area_ha_ci95=110.22,
                map_area_ha_biased=1500.0,
                area_percent=12.34,
                area_percent_ci95=1.1,
                users_accuracy=0.812,
                users_accuracy_ci95=0.05,
                samples_in_zone=300,
            ),
            assessment_row(
                ODD,
                "encroached",
                area_ha=350.5,
                area_ha_ci95=40.0,
                area_percent=35.05,
                area_percent_ci95=4.0,
                samples_in_zone=120,
            ),
        ],
    )
    units = [f"F{k:03d}" for k in range(60)]
    write_csv(
        folder / "yield_forecast.csv",
        [*FORECAST_COLUMNS, "history", "area_ha", "production_t"],
        [
            [
                u,
                2024,
                "eos",
                2.0 + k / 100,
                1.0 + k / 100,
                3.0 + k / 100,
                "rf 1.0",
                "abc123",
                "2024-05-30",
                8,
                10.0,
                (2.0 + k / 100) * 10.0,
            ]
            for k, u in enumerate(units)
        ],
    )
    zonal_table().to_parquet(folder / "zonal_stats.parquet")
    (folder / "invasive_accuracy.json").write_text(
        json.dumps(
            {
                "truth": "demo truth <cover >= 30 %>",
                "overall_accuracy": 0.9722,
                "pixels": 1000,
                "classes": {
                    "encroached": {
                        "precision": 0.857,
                        "recall": 0.9984,
                        "f1": 0.9223,
                        "iou": 0.8558,
                        "support": 162,
                    }
                },
            }
        )
    )
    pics = tmp_path / "pictures"
    pics.mkdir()
    inputs = ReportInputs(
        title="farm · 2023-07-01 to 2024-06-30",
        aoi_name="farm",
        period=PERIOD,
        project_file="farm_2023-07-01_2024-06-30.qgz",
        quicklooks=[("NDVI median", png(pics / "ndvi.png", (0, 68, 27)))],
        zone_charts=[(ODD, png(pics / "chart.png", (26, 150, 65)))],
        model_cards=[
            (
                "Invasive model",
                "# Card\n\n- features: `s2`\n\n| a | b |\n|---|---|\n| 1 | <script>x</script> |\n",
            )
        ],
        seasons={ODD: {"start": date(2023, 11, 24), "peak": None, "end": date(2024, 4, 13)}},
        layer_groups=[("Maps", ["ndvi_median", "invasive_class"])],
    )
    return folder, inputs


def test_report_has_every_section_and_inlines_images(run: tuple[Path, ReportInputs]) -> None:
    folder, inputs = run
    change = ChangeReport(
        earlier="2022-07-01_2023-06-30",
        earlier_period=(date(2022, 7, 1), date(2023, 6, 30)),
        gained_ha=12.5,
        lost_ha=2.5,
        net_ha=10.0,
        zones={ODD: {"gained_ha": 12.5, "lost_ha": 2.5, "net_ha": 10.0, "ndvi_anomaly": -0.0412}},
        quicklooks=[("Change", png(folder.parent / "pictures" / "change.png", (215, 48, 31)))],
    )
    path = write_report(folder, replace(inputs, change=change))
    assert path == folder / "report.html"
    text = path.read_text(encoding="utf-8")
    for sid, heading in SECTIONS:
        assert f'<section id="{sid}"><h2>{heading}</h2>' in text
    # Three pictures, each inlined and decoding to the PNG it came from.
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3
    expected = {p.read_bytes() for p in (folder.parent / "pictures").glob("*.png")}
    assert {base64.b64decode(i) for i in images} == expected
    # Self-contained: nothing to fetch, no script, no path on this machine.
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert "<script" not in text and "<link" not in text and "http" not in text
    assert str(folder.parent) not in text
    # Change: the totals and the zone's anomaly.
    assert "gained 12.5 ha, lost 2.5 ha, net +10.0 ha" in text
    assert "<td>−0.041</td>" in text
    assert "farm_2023-07-01_2024-06-30.qgz" in text
    assert "<strong>Maps</strong>: ndvi_median, invasive_class" in text


def test_report_without_change_has_no_change_section(run: tuple[Path, ReportInputs]) -> None:
    folder, inputs = run
    text = write_report(folder, inputs).read_text(encoding="utf-8")
    assert 'id="change"' not in text and 'href="#change"' not in text
    assert 'id="open-in-qgis"' in text


def test_encroached_area_table_equals_the_assessment(run: tuple[Path, ReportInputs]) -> None:
    folder, inputs = run
    text = write_report(folder, inputs).read_text(encoding="utf-8")
    # Bounds: 1234.56 ∓ 110.22; the map area beside it; accuracy in percent.
    assert f"<td>1{THIN}234.6 ± 110.2</td>" in text
    assert f"<td>1{THIN}124.3 – 1{THIN}344.8</td>" in text
    assert f"<td>1{THIN}500.0</td>" in text
    assert "<td>81.2 ± 5.0</td>" in text
    # The zone's row takes its map area from invasive_map_areas.csv.
    section = text.split('id="encroached-area"')[1].split("</section>")[0]
    row = re.search(rf'<tr><td class="t">{re.escape(ODD_HTML)}</td>.*?</tr>', section)
    assert row is not None
    assert "<td>300.0</td><td>350.5 ± 40.0</td><td>310.5 – 390.5</td>" in row.group(0)
    assert '<tr class="total"><td class="t">total</td>' in text
    assert "agrimon sample" not in text


def test_without_assessment_the_map_areas_say_how_to_get_intervals(
    run: tuple[Path, ReportInputs],
) -> None:
    folder, inputs = run
    (folder / "assessment.csv").unlink()
    text = write_report(folder, inputs).read_text(encoding="utf-8")
    assert f'<td class="t">{ODD_HTML}</td><td class="t">encroached</td><td>300.0</td>' in text
    assert "agrimon sample outputs/farm/2023-07-01_2024-06-30/invasive_class.tif" in text
    assert "--reference field_check.gpkg" in text
    assert "--start 2023-07-01 --end 2024-06-30" in text


def test_html_special_characters_from_files_are_escaped(run: tuple[Path, ReportInputs]) -> None:
    folder, inputs = run
    text = write_report(folder, inputs).read_text(encoding="utf-8")
    assert ODD not in text and "<A>" not in text
    assert text.count(ODD_HTML) >= 5  # area tables, seasons, chart, data quality
    assert "demo truth &lt;cover &gt;= 30 %&gt;" in text
    assert "&lt;script&gt;x&lt;/script&gt;" in text


def test_yield_table_is_capped_and_equals_the_csv(run: tuple[Path, ReportInputs]) -> None:
    folder, inputs = run
    text = write_report(folder, inputs).read_text(encoding="utf-8")
    section = text.split('id="yield-forecasts"')[1].split("</section>")[0]
    assert section.count('<tr><td class="t">F') == 50
    assert "10 more in <code>yield_forecast.csv</code>" in section
    # Largest production first: F059 (forecast 2.59, p10 1.59, p90 3.59, 25.9 t).
    first = re.search(r'<tr><td class="t">(F\d+)</td>(.*?)</tr>', section)
    assert first is not None and first.group(1) == "F059"
    assert first.group(2) == (
        '<td>2024</td><td class="t">eos</td><td>2.59</td><td>1.59</td><td>3.59</td>'
        "<td>10.0</td><td>25.9</td>"
    )
    assert "F000" not in section  # among the ten smallest
    total = sum((2.0 + k / 100) * 10.0 for k in range(60))
    assert f"Total: {total:,.0f} t".replace(",", THIN) in section
    assert "issued 2024-05-30" in section and "80 % interval" in section


def test_clear_observations_per_zone_and_month_equal_a_hand_count() -> None:
    counts = clear_observations(zonal_table(), threshold=0.5)
    got = {
        (r["zone"], r["month"]): (r["dates"], r["clear_dates"], round(r["mean_clear_fraction"], 4))
        for r in counts.to_dict(orient="records")
    }
    assert got == {
        (ODD, "2023-07"): (3, 2, 0.6),
        (ODD, "2023-08"): (1, 0, 0.0),
        ("Plain", "2023-07"): (1, 1, 0.9),
        ("Plain", "2023-08"): (2, 2, 0.65),
    }
    assert list(counts["zone"]) == [ODD, ODD, "Plain", "Plain"]


def test_data_quality_table_shows_the_counts(run: tuple[Path, ReportInputs]) -> None:
    folder, inputs = run
    text = write_report(folder, inputs).read_text(encoding="utf-8")
    section = text.split('id="data-quality"')[1].split("</section>")[0]
    rows = re.findall(r"<tr><td class=\"t\">(.*?)</td>(.*?)</tr>", section)
    cells = {zone: re.findall(r"<td[^>]*>(.*?)</td>", rest) for zone, rest in rows}
    # Twelve months of the period: July 2023 to June 2024; months without a date show "–".
    odd = cells[ODD_HTML]
    assert odd[:3] == ["2", "0", "–"] and odd[3:12] == ["–"] * 9
    assert odd[12:] == ["2 / 4", "45 %"]
    assert cells["Plain"][:2] == ["1", "2"] and cells["Plain"][12:] == ["3 / 3", "73 %"]
    assert 'title="2 of 3 dates clear; mean clear fraction 60 %"' in section
    assert "<th>Jul 2023</th>" in section and "<th>Jun 2024</th>" in section


def test_accuracy_and_model_cards(run: tuple[Path, ReportInputs]) -> None:
    folder, inputs = run
    text = write_report(folder, inputs).read_text(encoding="utf-8")
    assert "Map accuracy against the demo truth" in text
    assert "Overall accuracy 97.2 % over 1" in text
    assert "<td>0.857</td><td>0.998</td><td>0.922</td><td>0.856</td><td>162</td>" in text
    assert "<li>features: <code>s2</code></li>" in text


def test_missing_files_give_short_sentences(tmp_path: Path) -> None:
    folder = tmp_path / "2024-01-01_2024-03-31"
    folder.mkdir()
    inputs = ReportInputs(
        title="t",
        aoi_name="a",
        period=(date(2024, 1, 1), date(2024, 3, 31)),
        project_file="a.qgz",
        quicklooks=[("gone", tmp_path / "missing.png")],
    )
    text = write_report(folder, inputs).read_text(encoding="utf-8")
    assert "Picture missing.png is missing." in text
    assert "This run has no encroachment map." in text
    assert "This run has no yield forecast." in text
    assert "This run has no zonal statistics." in text
    assert "data:image" not in text


def test_markdown_subset() -> None:
    html = markdown_html("# Title\n\nSome **bold** & `code`.\nmore\n\n- a\n- b <i>\n")
    assert html == (
        "<h4>Title</h4>\n<p>Some <strong>bold</strong> &amp; <code>code</code>. more</p>\n"
        "<ul><li>a</li><li>b &lt;i&gt;</li></ul>"
    )


def test_report_html_stays_small_apart_from_images(run: tuple[Path, ReportInputs]) -> None:
    folder, inputs = run
    text = write_report(folder, inputs).read_text(encoding="utf-8")
    without = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", text)
    assert len(without) < 40_000
