"""Yield-forecast products: CSV, RFC 7946 GeoJSON and GeoPackage read back and checked.

Areas and productions are worked out by hand for rectangles drawn in UTM (a 1 km × 2 km
rectangle is 200 ha), independently of the writer.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from shapely.geometry import Point, box

from agrimon.products.forecasts import LAYER, write_forecasts

UTM = 32633  # UTM 33N (central Europe / Balkans)
X0, Y0 = 500_123.456789, 5_100_987.654321  # Odd decimals: the GeoJSON must round them.


def _units() -> gpd.GeoDataFrame:
    """Three units in UTM: A 1 km × 2 km (200 ha), B 500 m × 500 m (25 ha), C (no forecast)."""
    return gpd.GeoDataFrame(
        {
            "field": ["A", "B", "C"],
            "owner": ["x", "y", "z"],
        },
        geometry=[
            box(X0, Y0, X0 + 1000.0, Y0 + 2000.0),
            box(X0 + 3000.0, Y0, X0 + 3500.0, Y0 + 500.0),
            box(X0 + 5000.0, Y0, X0 + 6000.0, Y0 + 1000.0),
        ],
        crs=UTM,
    )


_EARLIER = (dt.date(2024, 6, 1), dt.date(2024, 7, 1))  # The 60d and 90d forecasts of A.


def _forecasts(**changes: Any) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "unit": ["B", "A", "A", "A"],
            "year": [2024, 2024, 2024, 2024],
            "lead": ["eos", "eos", "60d", "90d"],
            "forecast": [6.0, 8.25, 7.5, 7.75],
            "p10": [5.0, 7.0, 6.0, 6.5],
            "p90": [7.0, 9.5, 9.0, 9.0],
            "model": ["trend", "cnn", "cnn", "cnn"],
            "model_version": ["1.0.0", "2.1", "2.1", "2.1"],
            "issued": [dt.date(2024, 9, 30), dt.date(2024, 9, 30), *_EARLIER],
        }
    )
    return rows.assign(**changes)


# Rows in product order (unit, year, lead 60d < 90d < eos), with hand-computed areas.
EXPECTED = pd.DataFrame(
    {
        "unit": ["A", "A", "A", "B"],
        "year": [2024, 2024, 2024, 2024],
        "lead": ["60d", "90d", "eos", "eos"],
        "forecast": [7.5, 7.75, 8.25, 6.0],
        "p10": [6.0, 6.5, 7.0, 5.0],
        "p90": [9.0, 9.0, 9.5, 7.0],
        "model": ["cnn", "cnn", "cnn", "trend"],
        "model_version": ["2.1", "2.1", "2.1", "1.0.0"],
        "issued": ["2024-06-01", "2024-07-01", "2024-09-30", "2024-09-30"],
        "area_ha": [200.0, 200.0, 200.0, 25.0],
        "production_t": [1500.0, 1550.0, 1650.0, 150.0],
    }
)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Path]]:
    folder = tmp_path / "run"
    return folder, write_forecasts(folder, _forecasts(), _units(), unit_column="field")


def _check_attributes(frame: pd.DataFrame) -> None:
    got = pd.DataFrame(frame[list(EXPECTED.columns)]).reset_index(drop=True)
    for col in ("unit", "lead", "model", "model_version", "issued"):
        assert got[col].astype(str).tolist() == EXPECTED[col].tolist(), col
    assert got["year"].astype(int).tolist() == EXPECTED["year"].tolist()
    for col in ("forecast", "p10", "p90", "area_ha", "production_t"):
        np.testing.assert_allclose(got[col].to_numpy(float), EXPECTED[col].to_numpy(), rtol=1e-12)


def test_files_and_nothing_else(written: tuple[Path, list[Path]]) -> None:
    folder, paths = written
    assert paths == [folder / f"yield_forecast.{ext}" for ext in ("csv", "geojson", "gpkg")]
    # Written under temporary names and renamed: nothing else is left in the folder.
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)


def test_csv(written: tuple[Path, list[Path]]) -> None:
    folder, _ = written
    table = pd.read_csv(folder / "yield_forecast.csv", dtype={"model_version": str})
    assert list(table.columns) == list(EXPECTED.columns)
    # Only the units with a forecast: C is left out; one row per unit and lead.
    assert len(table) == 4 and "C" not in set(table["unit"])
    _check_attributes(table)


def test_geojson_is_rfc7946(written: tuple[Path, list[Path]]) -> None:
    folder, _ = written
    path = folder / "yield_forecast.geojson"
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert len(doc["features"]) == 4
    coords = [c for f in doc["features"] for ring in f["geometry"]["coordinates"] for c in ring]
    for lon, lat in coords:
        assert 14.9 < lon < 15.2 and 46.0 < lat < 46.1  # lon/lat, in that order
    # At most 7 decimals (about 1 cm), and some coordinate uses all 7.
    decimals = [len(m) for m in re.findall(r"-?\d+\.(\d+)", json.dumps(coords))]
    assert max(decimals) == 7
    for feature in doc["features"]:  # Exterior rings counter-clockwise.
        assert shapely.geometry.shape(feature["geometry"]).exterior.is_ccw

    frame = gpd.read_file(path)
    assert frame.crs.to_epsg() == 4326
    _check_attributes(frame)
    expected = _units().set_index("field").geometry.to_crs(4326)
    for unit, geometry in zip(frame["unit"], frame.geometry, strict=True):
        assert shapely.equals_exact(geometry.normalize(), expected[unit].normalize(), 2e-7)


def test_geopackage(written: tuple[Path, list[Path]]) -> None:
    folder, _ = written
    path = folder / "yield_forecast.gpkg"
    assert [name for name, _ in pyogrio.list_layers(path)] == [LAYER]
    info = pyogrio.read_info(path, layer=LAYER)
    assert info["features"] == 4 and info["crs"] == f"EPSG:{UTM}"
    frame = gpd.read_file(path, layer=LAYER)
    _check_attributes(frame)
    # Stored in the units' own metric CRS: the rectangles come back exactly.
    expected = _units().set_index("field").geometry
    for unit, geometry in zip(frame["unit"], frame.geometry, strict=True):
        assert geometry.normalize().equals_exact(expected[unit].normalize(), 0.0)
        assert geometry.area / 1e4 == pytest.approx(200.0 if unit == "A" else 25.0)


def test_lonlat_units_get_their_area_in_utm(tmp_path: Path) -> None:
    units = _units().to_crs(4326)
    paths = write_forecasts(tmp_path, _forecasts(), units, unit_column="field")
    table = pd.read_csv(paths[0])
    # The rectangles' corners reprojected there and back: straight edges in lon/lat bend by
    # well under a metre over a kilometre, so the areas agree to 1e-5.
    np.testing.assert_allclose(table["area_ha"], EXPECTED["area_ha"], rtol=1e-5)
    np.testing.assert_allclose(table["production_t"], EXPECTED["production_t"], rtol=1e-5)
    # The GeoPackage is in the UTM zone of the units' centre, as the run's grid picks it.
    assert pyogrio.read_info(paths[2], layer=LAYER)["crs"] == f"EPSG:{UTM}"


def test_rerun_replaces_the_files(written: tuple[Path, list[Path]]) -> None:
    folder, _ = written
    fewer = _forecasts().iloc[:1]
    write_forecasts(folder, fewer, _units(), unit_column="field")
    assert len(pd.read_csv(folder / "yield_forecast.csv")) == 1
    assert len(gpd.read_file(folder / "yield_forecast.geojson")) == 1
    assert pyogrio.read_info(folder / "yield_forecast.gpkg", layer=LAYER)["features"] == 1
    assert len(list(folder.iterdir())) == 3


def test_custom_stem_and_default_unit_column(tmp_path: Path) -> None:
    units = _units().rename(columns={"field": "unit"})
    paths = write_forecasts(tmp_path, _forecasts(), units, stem="maize_2024")
    assert [p.name for p in paths] == ["maize_2024.csv", "maize_2024.geojson", "maize_2024.gpkg"]
    assert [name for name, _ in pyogrio.list_layers(paths[2])] == [LAYER]


def test_point_units_have_no_area(tmp_path: Path) -> None:
    units = gpd.GeoDataFrame(
        {"field": ["A", "B"]}, geometry=[Point(X0, Y0), Point(X0 + 10, Y0)], crs=UTM
    )
    paths = write_forecasts(tmp_path, _forecasts(), units, unit_column="field")
    table = pd.read_csv(paths[0])
    assert "area_ha" not in table.columns and "production_t" not in table.columns
    assert len(gpd.read_file(paths[1])) == 4


@pytest.mark.parametrize("how", ["absent", "empty", "none"])
def test_forecast_unit_without_geometry(tmp_path: Path, how: str) -> None:
    units = _units()
    if how == "absent":
        units = units[units["field"] != "B"]
    else:
        units.loc[units["field"] == "B", "geometry"] = shapely.Polygon() if how == "empty" else None
    with pytest.raises(ValueError, match=r"forecast unit\(s\) B have no geometry"):
        write_forecasts(tmp_path / "run", _forecasts(), units, unit_column="field")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("forecasts", "match"),
    [
        (_forecasts(lead=["eos", "eos", "30d", "90d"]), "unknown lead"),
        (_forecasts(lead="eos"), "more than one forecast for A 2024 eos"),
        (_forecasts(forecast=[6.0, np.nan, 7.5, 7.75]), "forecast missing or not finite"),
        (_forecasts(p10=[8.0, 7.0, 6.0, 6.5]), "p10 is above p90 for B eos"),
        (_forecasts(issued=None), "issued is missing"),
        (_forecasts().drop(columns="model_version"), "lack column"),
        (_forecasts().iloc[:0], "no forecasts"),
    ],
)
def test_bad_forecasts(tmp_path: Path, forecasts: pd.DataFrame, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_forecasts(tmp_path / "run", forecasts, _units(), unit_column="field")
    assert not (tmp_path / "run").exists()


def test_bad_units(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unit id column 'unit'"):
        write_forecasts(tmp_path, _forecasts(), _units())
    twice = pd.concat([_units(), _units().iloc[:1]])
    with pytest.raises(ValueError, match="A appear more than once"):
        write_forecasts(tmp_path, _forecasts(), twice, unit_column="field")
    no_crs = gpd.GeoDataFrame({"field": _units()["field"]}, geometry=list(_units().geometry))
    assert no_crs.crs is None
    with pytest.raises(ValueError, match="no CRS"):
        write_forecasts(tmp_path, _forecasts(), no_crs, unit_column="field")
