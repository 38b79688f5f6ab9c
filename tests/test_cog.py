"""COG writer: valid COGs, exact band statistics inside the file, mode overviews of classes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate

from agrimon.invasive.products import INVASIVE_CLASS
from agrimon.products.cog import BandStatistics, CogWriter, Layer, read_statistics

EPSG = 32734
TRANSFORM = Affine(10.0, 0.0, 200_000.0, 0.0, -10.0, 7_800_000.0)
GDALINFO = shutil.which("gdalinfo")
NDVI = Layer("ndvi_median", "Median NDVI", "float32", float("nan"), "1")


def _grid(height: int, width: int) -> GeoBox:
    return GeoBox((height, width), TRANSFORM, f"EPSG:{EPSG}")


def _write(
    path: Path,
    layer: Layer,
    grid: GeoBox,
    pieces: Sequence[tuple[slice, slice, NDArray[np.generic]]],
) -> CogWriter:
    """Write ``pieces`` (row slice, column slice, values) and close; return the writer."""
    with CogWriter(path, grid, layer, tags={"PERIOD": "2024-01-01/2024-03-31"}) as writer:
        for rows, cols, values in pieces:
            writer.write(grid[rows, cols], values)
    return writer


def _hand_stats(values: NDArray[np.generic], nodata: float) -> BandStatistics:
    """GDAL's statistics by plain numpy: valid pixels are neither NaN nor ``nodata``."""
    data = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(data)
    if not np.isnan(nodata):
        valid &= data != nodata
    picked = data[valid]
    return BandStatistics(
        pixels=data.size,
        valid=int(valid.sum()),
        minimum=float(picked.min()),
        maximum=float(picked.max()),
        mean=float(picked.mean()),
        stddev=float(picked.std()),
    )


def _assert_stats(got: BandStatistics, want: BandStatistics) -> None:
    assert (got.pixels, got.valid) == (want.pixels, want.valid)
    assert got.valid_percent == pytest.approx(want.valid_percent, rel=1e-12)
    for name in ("minimum", "maximum", "mean", "stddev"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-10), name


@pytest.fixture(scope="module")
def ndvi_cog(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, CogWriter, NDArray[np.float32]]:
    """A 700 x 600 float COG from three pieces (NaN holes, one corner never written)."""
    rng = np.random.default_rng(7)
    full = np.full((700, 600), np.nan, dtype=np.float32)
    pieces = []
    for rows, cols in ((slice(0, 400), slice(0, 600)), (slice(400, 700), slice(0, 300))):
        values = rng.uniform(-0.2, 0.9, size=(rows.stop - rows.start, cols.stop - cols.start))
        values = values.astype(np.float32)
        values[rng.random(values.shape) < 0.1] = np.nan
        pieces.append((rows, cols, values))
    # A large mean beside a small spread: a running sum of squares would lose digits here.
    pieces.append(
        (slice(400, 500), slice(300, 600), rng.normal(1000, 0.01, (100, 300)).astype(np.float32))
    )
    for rows, cols, values in pieces:
        full[rows, cols] = values
    path = tmp_path_factory.mktemp("cog") / "ndvi_median.tif"
    writer = _write(path, NDVI, _grid(700, 600), pieces)
    return path, writer, full


def test_cog_is_valid_and_keeps_units_and_description(
    ndvi_cog: tuple[Path, CogWriter, NDArray[np.float32]],
) -> None:
    path, _, _ = ndvi_cog
    valid, errors, _ = cog_validate(str(path))
    assert valid, errors
    with rasterio.open(path) as src:
        assert src.units == ("1",)
        assert src.descriptions == ("Median NDVI",)
        assert src.tags()["PERIOD"] == "2024-01-01/2024-03-31"
        assert src.overviews(1) == [2]
    assert not path.with_name(path.name + ".aux.xml").exists()  # all inside the TIFF


def test_statistics_are_exact_and_stored_in_the_cog(
    ndvi_cog: tuple[Path, CogWriter, NDArray[np.float32]],
) -> None:
    path, writer, full = ndvi_cog
    want = _hand_stats(full, np.nan)
    _assert_stats(writer.statistics, want)
    stored = read_statistics(path)
    assert stored is not None
    _assert_stats(stored, want)
    # And the COG's own pixels agree with the hand array (nothing lost in the copy).
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), full)


@pytest.mark.skipif(GDALINFO is None, reason="gdalinfo (Debian's gdal-bin) is not installed")
def test_gdalinfo_reports_the_statistics_and_unit(
    ndvi_cog: tuple[Path, CogWriter, NDArray[np.float32]],
) -> None:
    path, writer, _ = ndvi_cog
    out = subprocess.run(
        [str(GDALINFO), "-json", str(path)], capture_output=True, text=True, check=True
    )
    band = json.loads(out.stdout)["bands"][0]
    stats = writer.statistics
    # gdalinfo's summary rounds to three decimals; the metadata items hold every digit.
    assert band["minimum"] == pytest.approx(stats.minimum, abs=1e-3)
    assert band["maximum"] == pytest.approx(stats.maximum, abs=1e-3)
    assert band["mean"] == pytest.approx(stats.mean, abs=1e-3)
    assert band["stdDev"] == pytest.approx(stats.stddev, abs=1e-3)
    items = band["metadata"][""]
    assert {k: float(v) for k, v in items.items()} == {
        "STATISTICS_MINIMUM": stats.minimum,
        "STATISTICS_MAXIMUM": stats.maximum,
        "STATISTICS_MEAN": stats.mean,
        "STATISTICS_STDDEV": stats.stddev,
        "STATISTICS_VALID_PERCENT": stats.valid_percent,
    }
    assert band["unit"] == "1"
    assert not path.with_name(path.name + ".aux.xml").exists()  # gdalinfo wrote nothing


def test_overlapping_pieces_give_the_statistics_of_the_final_pixels(tmp_path: Path) -> None:
    grid = _grid(300, 300)
    first = np.full((200, 200), 5.0, dtype=np.float32)
    second = np.arange(200 * 200, dtype=np.float32).reshape(200, 200)
    writer = _write(
        tmp_path / "x.tif",
        NDVI,
        grid,
        [(slice(0, 200), slice(0, 200), first), (slice(100, 300), slice(100, 300), second)],
    )
    full = np.full((300, 300), np.nan, dtype=np.float32)
    full[:200, :200] = first
    full[100:, 100:] = second  # the second piece overwrote a quarter of the first
    _assert_stats(writer.statistics, _hand_stats(full, np.nan))
    stored = read_statistics(tmp_path / "x.tif")
    assert stored is not None
    _assert_stats(stored, writer.statistics)


def test_integer_nodata_is_left_out_and_an_empty_raster_has_no_values(tmp_path: Path) -> None:
    layer = Layer("doy", "Day of year", "uint16", 65535, "day")
    values = np.array([[1, 2, 65535], [4, 65535, 6]], dtype=np.uint16)
    writer = _write(tmp_path / "doy.tif", layer, _grid(2, 3), [(slice(0, 2), slice(0, 3), values)])
    _assert_stats(writer.statistics, _hand_stats(values, 65535))
    assert writer.statistics.valid_percent == pytest.approx(400 / 6)

    empty = _write(tmp_path / "empty.tif", NDVI, _grid(4, 4), [])
    assert empty.statistics == BandStatistics(pixels=16, valid=0)
    stored = read_statistics(tmp_path / "empty.tif")
    assert stored == BandStatistics(pixels=16, valid=0)
    assert empty.statistics.gdal_metadata() == {"STATISTICS_VALID_PERCENT": "0.0"}


def test_statistics_are_known_only_once_the_cog_is_finished(tmp_path: Path) -> None:
    writer = CogWriter(tmp_path / "a.tif", _grid(4, 4), NDVI)
    with pytest.raises(RuntimeError, match="not finished"):
        writer.statistics  # noqa: B018
    writer.abort()
    assert not list(tmp_path.iterdir())


def test_a_layer_names_a_resampling_gdal_knows() -> None:
    with pytest.raises(ValueError, match="resampling 'majority'"):
        Layer("c", "c", "uint8", 0, "1", "majority")
    assert INVASIVE_CLASS.resampling == "mode"


def test_class_overviews_are_the_mode_of_each_block(tmp_path: Path) -> None:
    # Each 2 x 2 block holds three pixels of its majority class and one of another, the odd
    # one at a random corner (often the top-left one, which nearest-neighbour would pick).
    rng = np.random.default_rng(3)
    size = 1024
    half = size // 2
    major = rng.integers(1, 4, size=(half, half)).astype(np.uint8)
    minor = (major % 3 + 1).astype(np.uint8)
    values = np.repeat(np.repeat(major, 2, axis=0), 2, axis=1)
    corner = rng.integers(0, 4, size=(half, half))
    corner[::3, ::3] = 0
    rows = 2 * np.arange(half)[:, None] + corner // 2
    cols = 2 * np.arange(half)[None, :] + corner % 2
    values[rows, cols] = minor
    values[:2, :2] = 0  # one block of nodata stays nodata
    palette = ((0, 0, 0, 0), (26, 152, 80, 255), (166, 97, 26, 255), (50, 50, 200, 255))
    layer = Layer(
        "invasive_class",
        "Land cover class",
        "uint8",
        0,
        "1",
        "mode",
        palette,
        ("", "open", "encroached", "water"),
    )
    path = tmp_path / "invasive_class.tif"
    grid = _grid(size, size)
    pieces = [
        (slice(r, r + half), slice(c, c + half), values[r : r + half, c : c + half])
        for r in (0, half)
        for c in (0, half)
    ]
    writer = _write(path, layer, grid, pieces)
    valid, errors, _ = cog_validate(str(path))
    assert valid, errors
    with rasterio.open(path, OVERVIEW_LEVEL=0) as src:
        overview = src.read(1)
    want = major.copy()
    want[0, 0] = 0
    np.testing.assert_array_equal(overview, want)
    top_left = values[::2, ::2]
    assert (overview != top_left).mean() > 0.2  # nearest would differ here
    # The colour table, the category names and the statistics survive the COG copy.
    with rasterio.open(path) as src:
        assert [src.colormap(1)[i] for i in range(4)] == list(palette)
        assert json.loads(src.tags(1)["CATEGORY_NAMES"]) == list(layer.categories)
    sidecar = path.with_name(path.name + ".aux.xml").read_text()
    assert "<Category>encroached</Category>" in sidecar
    _assert_stats(writer.statistics, _hand_stats(values, 0))
    stored = read_statistics(path)
    assert stored is not None
    _assert_stats(stored, writer.statistics)
