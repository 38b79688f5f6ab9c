"""Sample design: Cochran sample size, allocations, and drawing points with equal probability.

The last test closes the loop on the demo world, whose truth is known at every pixel: a
deliberately biased map, 200 independent stratified samples drawn with `draw_points`, and
the Stehman/Olofsson estimate's 95 % interval must cover the true area about 95 % of the
time while the biased map's pixel count misses it.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import rasterio.windows
from affine import Affine
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from scipy import stats

from agrimon.area.estimator import estimate
from agrimon.area.sampling import (
    Window,
    WindowLike,
    allocate,
    block_windows,
    count_strata,
    default_minimum,
    draw_points,
    sample_size,
)
from agrimon.errors import ConfigError
from agrimon.sources.demo import encroached_truth, woody_cover_truth

#: Olofsson et al. (2014) §5.1: map weights and expected user's accuracies of the example.
W = [0.02, 0.015, 0.32, 0.645]
U = [0.7, 0.6, 0.9, 0.95]


def test_sample_size_of_olofsson_example_by_hand() -> None:
    # S_i = sqrt(U_i (1 - U_i)): 0.458258, 0.489898, 0.3, 0.217945.
    # Σ W_i S_i = 0.009165 + 0.007348 + 0.096 + 0.140575 = 0.253088.
    # n = (0.253088 / 0.01)² = 640.5 -> 641 (the paper's n ≈ 641; pyeo's validation example
    # uses 641 for the same inputs).
    by_hand = (0.253088 / 0.01) ** 2
    assert 640 < by_hand < 641
    assert sample_size(W, U, 0.01) == 641
    # Pixel counts are normalised to weights.
    assert sample_size([200_000, 150_000, 3_200_000, 6_450_000], U, 0.01) == 641
    # Halving the target SE quadruples n (within rounding up).
    assert sample_size(W, U, 0.005) == math.ceil(4 * (0.2530879 / 0.01) ** 2)


def test_sample_size_does_not_round_float_noise_up() -> None:
    # One class with U = 0.7: n = 0.21 / 0.01² = 2100, which floats compute as
    # 2100.0000000000005; it must not become 2101.
    assert sample_size([1.0], [0.7], 0.01) == 2100


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([0.5, 0.5], [0.9], 0.01), "one value per stratum"),
        (([0.5, 0.5], [0.9, 1.2], 0.01), "must lie in 0..1"),
        (([0.5, 0.5], [0.9, 0.9], 0.0), "strictly between 0 and 1"),
        (([0.0, 0.0], [0.9, 0.9], 0.01), "positive sum"),
    ],
)
def test_sample_size_refuses_bad_inputs(
    args: tuple[list[float], list[float], float], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        sample_size(*args)


PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])


@pytest.mark.parametrize("method", ["proportional", "equal", "neyman"])
@pytest.mark.parametrize("n", [8, 97, 641, 5_000])
def test_allocations_sum_to_n_and_respect_the_floor(method: str, n: int) -> None:
    counts = allocate(n, PIXELS, method=method, expected_user_accuracy=U)  # type: ignore[arg-type]
    assert counts.dtype == np.int64
    assert counts.sum() == n
    assert np.all(counts >= default_minimum(n, 4))
    again = allocate(n, PIXELS, method=method, expected_user_accuracy=U)  # type: ignore[arg-type]
    np.testing.assert_array_equal(counts, again)


def test_default_floor() -> None:
    assert default_minimum(641, 4) == 50  # Olofsson's 50 for the rare classes
    assert default_minimum(100, 4) == 12  # at most half the sample on floors
    assert default_minimum(5, 4) == 2  # a variance needs 2


def test_proportional_allocation_by_hand() -> None:
    # 641 proportional: 12.82, 9.615, 205.12, 413.445 -> the two rare strata are lifted to
    # the floor of 50; the 541 left go 0.32 : 0.645 -> 178.77, 362.23 -> 179 and 362.
    np.testing.assert_array_equal(allocate(641, PIXELS), [50, 50, 179, 362])
    # Without a binding floor it is the largest-remainder rounding of n · W_h.
    np.testing.assert_array_equal(
        allocate(1_000, [1_000, 3_000, 6_000], minimum=2), [100, 300, 600]
    )
    # 10 over 1:1:1 -> 3.33 each; the one left over goes to the lowest index.
    np.testing.assert_array_equal(allocate(10, [7, 7, 7], minimum=2), [4, 3, 3])


def test_equal_and_neyman_allocation_by_hand() -> None:
    np.testing.assert_array_equal(allocate(641, PIXELS, method="equal"), [161, 160, 160, 160])
    # Neyman: N_h S_h = 91 652, 73 485, 960 000, 1 405 745 (sum 2 530 882); the two rare
    # strata get the floor of 50, the 541 left split 960 000 : 1 405 745 -> 219.5, 321.5;
    # the tie of remainders goes to the lower index.
    np.testing.assert_array_equal(
        allocate(641, PIXELS, method="neyman", expected_user_accuracy=U), [50, 50, 220, 321]
    )
    # A stratum with U = 1 has S = 0 and only gets its floor.
    np.testing.assert_array_equal(
        allocate(100, [1_000, 1_000], method="neyman", expected_user_accuracy=[1.0, 0.5]),
        [25, 75],
    )


def test_small_strata_are_sampled_whole_and_empty_ones_skipped() -> None:
    counts = allocate(60, [5, 3, 1_000, 0], minimum=10)
    np.testing.assert_array_equal(counts, [5, 3, 52, 0])
    assert counts.sum() == 60


@pytest.mark.parametrize(
    ("n", "pixels", "kwargs", "match"),
    [
        (3, [100, 100], {}, "between the strata's floors"),
        (500, [100, 100], {}, "the map's pixels"),
        (10, [100, 1], {}, "single pixel"),
        (10, [100, 100], {"minimum": 1}, "at least 2"),
        (10, [100, 100], {"method": "neyman"}, "needs expected_user_accuracy"),
        (10, [100, 100], {"method": "random"}, "not one of"),
        (0, [100, 100], {}, "positive integer"),
    ],
)
def test_allocation_refuses_what_cannot_be_placed(
    n: int, pixels: list[int], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        allocate(n, pixels, **kwargs)  # type: ignore[arg-type]


Read = Callable[[WindowLike], NDArray[np.uint8]]


def in_memory(array: NDArray[np.uint8]) -> tuple[list[Window], list[WindowLike]]:
    """Irregular windows (edge blocks are smaller) and an empty log of the windows read."""
    return block_windows(array.shape, 7), []


def reader(array: NDArray[np.uint8], log: list[WindowLike] | None = None) -> Read:
    """Reads windows of an in-memory map, logging each window read."""

    def read(window: WindowLike) -> NDArray[np.uint8]:
        if log is not None:
            log.append(window)
        r, c = int(window.row_off), int(window.col_off)
        return array[r : r + int(window.height), c : c + int(window.width)]

    return read


def small_map() -> NDArray[np.uint8]:
    rng = np.random.default_rng(3)
    array = rng.choice(np.arange(4, dtype=np.uint8), size=(19, 23), p=[0.1, 0.5, 0.3, 0.1])
    array[:5, :6] = 3  # a clump, so windows hold very different counts
    return array


def test_every_pixel_of_a_stratum_has_the_same_inclusion_probability() -> None:
    array = small_map()
    windows, _ = in_memory(array)
    read = reader(array)
    counts = count_strata(windows, read, 3)
    wanted = np.array([6, 4, 9])
    rng = np.random.default_rng(2024)
    draws = 4_000
    hits = np.zeros(array.shape, dtype=np.int64)
    for _ in range(draws):
        points = draw_points(windows, read, wanted, rng, counts=counts)
        hits[points.rows, points.cols] += 1
    assert hits[array == 0].sum() == 0  # nodata is never drawn
    for h, n_h in enumerate(wanted):
        observed = hits[array == h + 1]
        assert observed.sum() == draws * n_h
        p = n_h / observed.size
        # Per pixel the count is Binomial(draws, p): a chi-square on N_h - 1 degrees of
        # freedom (the total is fixed), scaled by 1 - p; refuse beyond its 99.9 % quantile.
        statistic = np.sum((observed - draws * p) ** 2) / (draws * p * (1 - p))
        assert statistic < stats.chi2.ppf(0.999, observed.size - 1)
        # ... and not suspiciously uniform either (a deterministic sampler would be).
        assert statistic > stats.chi2.ppf(0.001, observed.size - 1)


def test_draw_is_a_reproducible_sample_without_replacement_inside_its_strata() -> None:
    array = small_map()
    windows, log = in_memory(array)
    read = reader(array, log)
    wanted = np.array([30, 20, 25])
    points = draw_points(windows, read, wanted, np.random.default_rng(9))
    again = draw_points(windows, reader(array), wanted, np.random.default_rng(9))
    np.testing.assert_array_equal(points.rows, again.rows)
    np.testing.assert_array_equal(points.cols, again.cols)
    assert len(points) == wanted.sum()
    np.testing.assert_array_equal(np.bincount(points.stratum), wanted)
    np.testing.assert_array_equal(array[points.rows, points.cols], points.stratum + 1)
    flat = points.rows * array.shape[1] + points.cols
    assert np.unique(flat).size == flat.size
    # Two passes at most (count, draw), one window at a time, every read a listed window.
    assert len(log) <= 2 * len(windows)
    assert all(w in windows for w in log)
    # Sorted by stratum, then row, then column.
    order = np.lexsort((points.cols, points.rows, points.stratum))
    np.testing.assert_array_equal(order, np.arange(len(points)))


def test_draw_takes_rasterio_windows_and_a_whole_small_stratum() -> None:
    array = small_map()
    windows = [
        rasterio.windows.Window(c, r, min(10, 23 - c), min(10, 19 - r))
        for r in range(0, 19, 10)
        for c in range(0, 23, 10)
    ]
    size = int(np.count_nonzero(array == 3))
    points = draw_points(windows, reader(array), [0, 0, size], np.random.default_rng(1))
    assert len(points) == size
    assert np.all(array[points.rows, points.cols] == 3)


def test_draw_refuses_inconsistent_inputs() -> None:
    array = small_map()
    windows, _ = in_memory(array)
    read = reader(array)
    rng = np.random.default_rng(0)
    size = int(np.count_nonzero(array == 1))
    with pytest.raises(ConfigError, match=f"stratum 0 has {size} pixels"):
        draw_points(windows, read, [size + 1, 0, 0], rng)
    with pytest.raises(ConfigError, match="holds class value 3 but only 2 strata"):
        draw_points(windows, read, [1, 1], rng)
    stale = count_strata(windows, read, 3)
    stale[0] += 1
    stale[-1] -= 1
    with pytest.raises(ConfigError, match="was counted"):
        draw_points(windows, read, [40, 40, 40], rng, counts=stale)
    with pytest.raises(ConfigError, match="one row per window"):
        draw_points(windows, read, [1, 1, 1], rng, counts=stale[:2])


def test_statistics_modules_import_no_io_library() -> None:
    code = (
        "import sys, agrimon.area.estimator, agrimon.area.sampling; "
        "print(sorted(m for m in ('rasterio', 'geopandas', 'xarray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def demo_grid() -> GeoBox:
    """About 300 000 10 m pixels near the demo AOI (Grootfontein), on the global grid."""
    x, y = Transformer.from_crs(4326, 32734, always_xy=True).transform(18.19, -19.60)
    left, top = round(x / 10) * 10 - 3_000, round(y / 10) * 10 + 2_500
    return GeoBox((500, 600), Affine(10.0, 0.0, left, 0.0, -10.0, top), "EPSG:32734")


def test_confidence_intervals_cover_the_true_area_of_the_demo_world() -> None:
    grid = demo_grid()
    truth = encroached_truth(grid).values.astype(bool)
    cover = woody_cover_truth(grid).values
    # A biased map: commission of every pixel of cover >= 0.2 (sparse shrubs called
    # encroached) and omission of thin encroachment in every fourth 600 m strip.
    strips = (np.arange(truth.shape[1]) // 60) % 4 == 0
    omitted = truth & strips[None, :] & (cover < 0.45)
    mapped = (truth | (cover >= 0.2)) & ~omitted
    classes = np.where(mapped, 2, 1).astype(np.uint8)  # 1 open, 2 encroached; 0 nodata
    zone = np.zeros(truth.shape, dtype=bool)
    zone[:, :240] = True  # a district: the western 40 %

    windows = block_windows(classes.shape, 128)
    read = reader(classes)
    counts = count_strata(windows, read, 2)
    strata_pixels = counts.sum(axis=0)
    n_h = allocate(300, strata_pixels)
    zone_map = np.bincount(classes[zone], minlength=3)[1:]
    true_ha = truth.sum() * 0.01
    true_zone_ha = truth[zone].sum() * 0.01
    map_ha = mapped.sum() * 0.01

    rng = np.random.default_rng(42)
    covered = covered_zone = 0
    half_widths = []
    for _ in range(200):
        points = draw_points(windows, read, n_h, rng, counts=counts)
        reference = truth[points.rows, points.cols].astype(np.int64)
        whole = estimate(
            points.stratum,
            points.stratum,
            reference,
            pixel_area_ha=0.01,
            map_pixels=strata_pixels,
            stratum_pixels=strata_pixels,
            classes=("open", "encroached"),
        ).area_ha[1]
        district = estimate(
            points.stratum,
            points.stratum,
            reference,
            pixel_area_ha=0.01,
            map_pixels=zone_map,
            in_zone=zone[points.rows, points.cols],
            stratum_pixels=strata_pixels,
            classes=("open", "encroached"),
        ).area_ha[1]
        covered += abs(whole.value - true_ha) <= whole.ci95
        covered_zone += abs(district.value - true_zone_ha) <= district.ci95
        half_widths.append(whole.ci95)

    assert 0.90 <= covered / 200 <= 0.99
    assert 0.90 <= covered_zone / 200 <= 0.99
    # The map's pixel count misses the truth by far more than a typical interval.
    assert abs(map_ha - true_ha) > 1.5 * np.median(half_widths)
