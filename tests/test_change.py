"""Change between two runs of one AOI: values equal the difference of the two runs' maps."""

from __future__ import annotations

import csv
import os
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import geometry_mask

from agrimon.errors import ConfigError
from agrimon.products.change import anomaly, change_classes
from agrimon.products.runs import (
    LATEST,
    Run,
    check_compare,
    complete_runs,
    find_earlier,
    read_latest,
    update_latest,
)

from .conftest import SEASON_AREA, SEASON_NORTH, run_gpkg

pytestmark = pytest.mark.slow


def test_change_classes_by_hand() -> None:
    before = np.array([[1, 1, 2, 2, 0, 1]], dtype=np.uint8)
    now = np.array([[1, 2, 1, 2, 2, 0]], dtype=np.uint8)
    out = change_classes(before, now, target_before=2, target_now=2)
    # stable open, gained, lost, stable encroached, nodata before, nodata now
    assert out.tolist() == [[1, 2, 3, 4, 0, 0]]
    # Class numbers may differ between two models' maps: each run's own target counts.
    swapped = change_classes(before, 3 - now * (now > 0), target_before=2, target_now=1)
    assert swapped[0, :4].tolist() == [1, 2, 3, 4]


def test_anomaly_is_the_difference_and_keeps_nodata() -> None:
    before = np.array([0.2, np.nan, 0.5], dtype=np.float32)
    now = np.array([0.3, 0.4, np.nan], dtype=np.float32)
    out = anomaly(before, now)
    assert out.dtype == np.float32
    assert out[0] == pytest.approx(0.1, abs=1e-7) and np.isnan(out[1:]).all()


def _read(path: Path) -> tuple[np.ndarray, rasterio.Affine, object]:
    with rasterio.open(path) as src:
        return src.read(1), src.transform, src.crs


def test_change_products_equal_the_difference_of_the_two_runs(
    season_runs: tuple[Path, Path],
) -> None:
    earlier, later = season_runs
    ndvi_now, transform, crs = _read(later / "ndvi_median.tif")
    ndvi_before, transform_before, _ = _read(earlier / "ndvi_median.tif")
    assert transform == transform_before  # the same AOI: the same grid
    got, _, _ = _read(later / "ndvi_anomaly.tif")
    expected = ndvi_now - ndvi_before
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(got[~np.isnan(got)], expected[~np.isnan(expected)])
    assert np.nanstd(got) > 0.001  # the two seasons differ

    now, _, _ = _read(later / "invasive_class.tif")
    before, _, _ = _read(earlier / "invasive_class.tif")
    change, _, _ = _read(later / "invasive_change.tif")
    enc_now, enc_before = now == 2, before == 2  # classes: 1 open, 2 encroached
    valid = (now > 0) & (before > 0)
    np.testing.assert_array_equal(change == 0, ~valid)
    np.testing.assert_array_equal(change == 2, valid & enc_now & ~enc_before)
    np.testing.assert_array_equal(change == 3, valid & ~enc_now & enc_before)
    np.testing.assert_array_equal(change == 4, valid & enc_now & enc_before)
    assert (change == 2).sum() > 0  # the demo's bush spreads from one season to the next

    # Areas per zone: pixel counts of gains and losses inside each zone, which overlap.
    with open(later / "invasive_change_areas.csv", newline="") as f:
        rows = {r["zone"]: r for r in csv.DictReader(f)}
    lonlat = gpd.GeoSeries([SEASON_AREA, SEASON_NORTH], crs=4326).to_crs(crs)
    for name, shape in zip(("farm block", "north & camp"), lonlat, strict=True):
        inside = ~geometry_mask([shape], out_shape=change.shape, transform=transform)
        gained = (inside & (change == 2)).sum() * 0.01
        lost = (inside & (change == 3)).sum() * 0.01
        assert float(rows[name]["gained_ha"]) == pytest.approx(gained, abs=1e-3)
        assert float(rows[name]["lost_ha"]) == pytest.approx(lost, abs=1e-3)
        assert float(rows[name]["net_ha"]) == pytest.approx(gained - lost, abs=1e-3)
    assert float(rows["farm block"]["gained_ha"]) > float(rows["north & camp"]["gained_ha"])

    # Polygons of gains and losses: each lies on its class and carries its area.
    polygons = gpd.read_file(run_gpkg(later), layer="invasive_change_polygons")
    assert len(polygons) > 0 and set(polygons["change"]) <= {"gained", "lost"}
    assert (polygons["area_ha"] >= 0.5).all()  # the minimum mapping unit
    # Simplified outlines: the area is the patch's pixel count, the outline close to it.
    np.testing.assert_allclose(polygons["area_ha"], polygons.geometry.area / 1e4, rtol=0.1)
    lonlat_polygons = gpd.read_file(later / "invasive_change_polygons.geojson")
    assert lonlat_polygons.crs.to_epsg() == 4326 and len(lonlat_polygons) == len(polygons)


def test_the_earlier_run_has_no_change_products(season_runs: tuple[Path, Path]) -> None:
    earlier, _ = season_runs
    assert not list(earlier.glob("*change*")) and not list(earlier.glob("*_anomaly*"))
    assert 'id="change"' not in (earlier / "report.html").read_text(encoding="utf-8")


def test_the_report_shows_the_change_over_the_aoi(season_runs: tuple[Path, Path]) -> None:
    earlier, later = season_runs
    change, _, _ = _read(later / "invasive_change.tif")
    gained, lost = (change == 2).sum() * 0.01, (change == 3).sum() * 0.01
    text = (later / "report.html").read_text(encoding="utf-8")
    section = text.split('<section id="change">', 1)[1].split("</section>", 1)[0]
    assert f"<code>{earlier.name}</code>" in section
    totals = f"gained {gained:.1f} ha, lost {lost:.1f} ha, net {gained - lost:+.1f} ha"
    assert totals.replace("-", "−") in section  # the report's minus sign
    # A row per zone and the change map, inlined.
    assert section.count('<td class="t">') == 2
    assert section.count('src="data:image/png;base64,') >= 1


def test_latest_points_to_the_newest_complete_run(season_runs: tuple[Path, Path]) -> None:
    earlier, later = season_runs
    aoi = later.parent
    assert (aoi / LATEST).is_symlink() and os.readlink(aoi / LATEST) == later.name
    assert read_latest(aoi) == later
    assert [r.folder for r in complete_runs(aoi)] == [earlier, later]
    found = find_earlier(aoi, start=date(2023, 7, 1), end=date(2024, 6, 30))
    assert found is not None and found.folder == earlier
    assert find_earlier(aoi, start=date(2022, 7, 1), end=date(2023, 6, 30)) is None


def test_latest_falls_back_to_a_text_file_and_leaves_foreign_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for period in ("2024-01-01_2024-03-31", "2023-01-01_2023-12-31"):
        (tmp_path / period).mkdir()
        (tmp_path / period / "manifest.json").write_text("{}")
    (tmp_path / ".2025-01-01_2025-03-31.partial-1-abcdef12").mkdir()  # not complete
    (tmp_path / "2025-01-01_2025-03-31").mkdir()  # no manifest: not complete

    def no_symlinks(*args: object, **kwargs: object) -> None:
        raise OSError("symbolic links are not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    assert update_latest(tmp_path) == tmp_path / "2024-01-01_2024-03-31"
    assert (tmp_path / LATEST).read_text() == "2024-01-01_2024-03-31\n"
    assert read_latest(tmp_path) == tmp_path / "2024-01-01_2024-03-31"
    # A file of the user's own named "latest" is never replaced.
    (tmp_path / LATEST).write_text("my notes about the latest runs\n")
    assert update_latest(tmp_path) is None
    assert (tmp_path / LATEST).read_text() == "my notes about the latest runs\n"


def test_compare_must_be_a_complete_run(tmp_path: Path, season_runs: tuple[Path, Path]) -> None:
    earlier, _ = season_runs
    assert check_compare(earlier) == Run(earlier, date(2022, 7, 1), date(2023, 6, 30))
    half = tmp_path / "2024-01-01_2024-03-31"
    half.mkdir()
    with pytest.raises(ConfigError, match="not a complete agrimon run"):
        check_compare(half)
    with pytest.raises(ConfigError, match="is not a folder"):
        check_compare(tmp_path / "missing")
