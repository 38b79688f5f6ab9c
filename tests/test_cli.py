"""The command line: help, version, plan, run, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from typer.testing import CliRunner

from agrimon import __version__
from agrimon.cli import app

runner = CliRunner()
AGRIMON = Path(sys.executable).parent / "agrimon"


def _feature_collection(*geoms: dict[str, object]) -> str:
    features = [
        {"type": "Feature", "properties": {"name": f"f{i}"}, "geometry": g}
        for i, g in enumerate(geoms)
    ]
    return json.dumps({"type": "FeatureCollection", "features": features})


def _square(lon: float, lat: float, size: float) -> dict[str, object]:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


BAD_AOIS: dict[str, tuple[str | None, str]] = {
    "missing": (None, "does not exist"),
    "garbage": ("this is not json {", "GeoJSON"),
    "points": (_feature_collection({"type": "Point", "coordinates": [18.2, -19.6]}), "polygon"),
    "empty": (
        _feature_collection(_square(18.2, -19.6, 0.01), {"type": "Polygon", "coordinates": []}),
        "empty",
    ),
    # Longitudes up to ±360 are read as lon/lat written 0…360; beyond is no longitude.
    "outside": (_feature_collection(_square(400.0, -19.6, 0.01)), "lon/lat"),
    "swapped": (_feature_collection(_square(15.0, 100.0, 0.01)), "swapped"),
    "too-large": (_feature_collection(_square(15.0, -25.0, 5.0)), "--max-area"),
    # GDAL reads a literal NaN in GeoJSON; it once reached the user as a traceback.
    "nan": (
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
        '{"name": "f"}, "geometry": {"type": "Polygon", "coordinates": [[[18.2, -19.6], '
        "[NaN, -19.6], [18.21, -19.59], [18.2, -19.6]]]}}]}",
        "not a number",
    ),
}


@pytest.fixture(params=sorted(BAD_AOIS))
def bad_aoi(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    content, needle = BAD_AOIS[request.param]
    path = tmp_path / f"{request.param}.geojson"
    if content is not None:
        path.write_text(content)
    return path, needle


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"agrimon {__version__}"


@pytest.mark.parametrize("command", [[], ["run"], ["plan"]])
def test_help_on_every_command(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    if command:
        for option in ("--start", "--end", "--source", "--out", "--max-area"):
            assert option in result.stdout


@pytest.mark.parametrize(
    "command", [["run"], ["plan"], ["cache", "info"], ["cache", "clear"], ["sources"], []]
)
def test_help_reads_as_a_person_expects(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    text = result.stdout
    # No type-hint placeholders, no defaults in stray brackets, no box drawing.
    for noise in ("<%Y", "<bool>", "<str>", "<int>", "<float>", "[default: (", "╭"):
        assert noise not in text, noise
    if command in (["run"], ["plan"]):
        assert "--start DATE" in text and "[default: 2023-07-01]" in text
        assert "--phenology / --no-phenology" in text
        assert "--level [l2a|l1c]" in text


def test_plan_of_the_default_aoi() -> None:
    result = runner.invoke(app, ["plan"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "98.5 km²" in out
    assert "32734 (UTM 34S)" in out
    assert "4 of up to 1024 × 1024 px" in out
    assert "292 (tile × date)" in out  # 4 tiles × 73 dates from 1 July to 30 June
    assert "1,017,340 per band and date" in out
    assert "34S_0020_0764" in out


@pytest.mark.parametrize("command", ["plan", "run"])
def test_bad_aoi_is_one_line_and_exit_2(
    command: str, bad_aoi: tuple[Path, str], tmp_path: Path
) -> None:
    path, needle = bad_aoi
    out = tmp_path / "products"
    result = runner.invoke(app, [command, str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
    assert path.name in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_reversed_period_is_a_config_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "--start", "2024-05-01", "--end", "2024-01-01"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: invalid run parameters: end 2024-01-01 is before start 2024-05-01: "
        "swap --start and --end"
    )


def test_malformed_date_exits_2() -> None:
    result = runner.invoke(app, ["plan", "--start", "2024-13-01"])
    assert result.exit_code == 2
    assert "--start" in result.stderr


@pytest.mark.slow
def test_run_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run(
        [
            str(AGRIMON),
            "run",
            "--start",
            "2024-02-01",
            "--end",
            "2024-02-15",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = Path(proc.stdout.strip().splitlines()[-1])
    assert folder == tmp_path / "out" / "grootfontein" / "2024-02-01_2024-02-15"
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        "catalog.json",
        "clear_count.qml",
        "clear_count.tif",
        "grootfontein_2024-02-01_2024-02-15.gpkg",
        "grootfontein_2024-02-01_2024-02-15.qgz",
        "manifest.json",
        "ndvi_median.qml",
        "ndvi_median.tif",
        "report.html",
        "zonal_stats.csv",
        "zonal_stats.parquet",
    ]
    with rasterio.open(folder / "clear_count.tif") as src:
        counts = src.read(1, masked=True)
        assert counts.max() == 3  # three acquisitions in the period
    assert "Traceback" not in proc.stderr
