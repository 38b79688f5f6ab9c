"""Area and accuracy estimates against the published examples and independent closed forms.

Published figures and where they were read:

* Olofsson et al. (2014), RSE 148, 42–57, section 5 (Tables 8–9 and the estimates on p. 54):
  the sample counts, mapped areas and estimates as replicated in the example of
  ``hagc/mapaccuracy`` (``man/olofsson.Rd``, "compare to paper, left-hand / right-hand of
  p. 54") and in the tests of ``boothmanrylan/accuracyAssessmentTools``
  (``tests/test_olofsson.py``, which also lists Table 9 to 4 decimals).
* Stehman (2014), IJRS 35(13), 4923–4939, numerical example (Table 2, 40 sample units in 4
  strata of 40 000, 30 000, 20 000, 10 000 pixels, classes A–D) and its estimates on
  pp. 4932–4936: ``boothmanrylan/accuracyAssessmentTools`` (``stehman2014_table2.csv``,
  ``tests/test_stehman.py``) and ``hagc/mapaccuracy`` (``man/stehman2014.Rd``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.typing import NDArray

from agrimon.area.estimator import AreaEstimate, estimate
from agrimon.errors import AgrimonError, AssessmentError

OLOFSSON_CLASSES = ("deforestation", "forest gain", "stable forest", "stable non-forest")
#: Olofsson et al. (2014) Table 8: sample counts, map classes as rows, reference as columns.
OLOFSSON_COUNTS = np.array(
    [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]], dtype=np.int64
)
#: Mapped areas in 30 m pixels (0.09 ha).
OLOFSSON_PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000], dtype=np.float64)
LANDSAT_HA = 0.09


def units(counts: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Map and reference class of each sample unit of an error matrix of counts."""
    cells = np.repeat(np.arange(counts.size), counts.ravel())
    return cells // counts.shape[1], cells % counts.shape[1]


def olofsson(*, fpc: bool = False) -> AreaEstimate:
    mapped, reference = units(OLOFSSON_COUNTS)
    return estimate(
        mapped,
        mapped,
        reference,
        stratum_pixels=OLOFSSON_PIXELS,
        classes=OLOFSSON_CLASSES,
        pixel_area_ha=LANDSAT_HA,
        map_pixels=OLOFSSON_PIXELS,
        fpc=fpc,
    )


def test_olofsson_2014_published_accuracies() -> None:
    # Olofsson et al. drop the finite-population correction (their eqs. 5-7 and 10).
    e = olofsson(fpc=False)
    # p. 54: user's accuracy ± 95 % CI.
    assert np.round(e.users_accuracy.value, 2).tolist() == [0.88, 0.73, 0.93, 0.96]
    assert np.round(e.users_accuracy.ci95, 2).tolist() == [0.07, 0.10, 0.04, 0.02]
    # p. 54: producer's accuracy ± 95 % CI.
    assert np.round(e.producers_accuracy.value, 2).tolist() == [0.75, 0.85, 0.93, 0.96]
    pa_ci = np.round(e.producers_accuracy.ci95, 2).tolist()
    assert [pa_ci[0], pa_ci[2]] == [0.21, 0.03]
    # The paper prints ±0.23 (forest gain) and ±0.01 (stable non-forest); its own eq. 7
    # gives 0.25 and 0.02 (see test_olofsson_closed_forms, an independent computation of
    # eq. 7), as accuracyAssessmentTools also found ("a rounding error in the paper").
    assert [pa_ci[1], pa_ci[3]] == [0.25, 0.02]
    # p. 54: overall accuracy 0.95 ± 0.02.
    assert round(e.overall_accuracy.value, 2) == 0.95
    assert round(e.overall_accuracy.ci95, 2) == 0.02


def test_olofsson_2014_published_areas() -> None:
    e = olofsson(fpc=False)
    # p. 54: area-adjusted estimates in ha ± 95 % CI.
    assert np.round(e.area_ha.value).tolist() == [21_158, 11_686, 285_770, 581_386]
    assert np.round(e.area_ha.ci95).tolist() == [6_158, 3_756, 15_510, 16_282]
    # The map's pixel counts: 18 000 ha of deforestation mapped, biased low by 3 158 ha.
    assert e.map_area_ha is not None
    assert e.map_area_ha.tolist() == pytest.approx([18_000, 13_500, 288_000, 580_500])
    assert e.zone_area_ha == pytest.approx(900_000)
    assert e.area_percent.value.sum() == pytest.approx(100.0)


def test_olofsson_2014_table_9_error_matrix() -> None:
    table_9 = [
        [0.0176, 0.0000, 0.0013, 0.0011],
        [0.0000, 0.0110, 0.0016, 0.0024],
        [0.0019, 0.0000, 0.2967, 0.0213],
        [0.0040, 0.0020, 0.0179, 0.6212],
    ]
    e = olofsson()
    assert np.round(e.error_matrix, 4).tolist() == table_9
    # Strata = map classes: the rows sum to the mapped proportions W_i exactly.
    np.testing.assert_allclose(e.error_matrix.sum(axis=1), OLOFSSON_PIXELS / 10_000_000)


def test_finite_population_correction_is_negligible_for_pixels() -> None:
    with_fpc, without = olofsson(fpc=True), olofsson(fpc=False)
    np.testing.assert_array_equal(with_fpc.area_ha.value, without.area_ha.value)
    ratio = with_fpc.area_ha.se / without.area_ha.se
    # n_h / N_h is at most 75 / 150 000 here: the SEs shrink by less than 0.05 %.
    assert np.all((ratio < 1) & (ratio > 1 - 5e-4))


def olofsson_closed_forms(
    counts: NDArray[np.int64], pixels: NDArray[np.float64]
) -> dict[str, NDArray[np.float64]]:
    """Olofsson et al. (2014) eqs. 2, 4-11, written out independently of the estimator."""
    w = pixels / pixels.sum()
    n_i = counts.sum(axis=1).astype(np.float64)
    k = counts.shape[0]
    p = w[:, None] * counts / n_i[:, None]  # eq. 4
    p_k = p.sum(axis=0)  # eq. 9
    users = np.diag(p) / p.sum(axis=1)  # eq. 2
    producers = np.diag(p) / p_k  # eq. 3
    overall = np.trace(p)  # eq. 1
    v_users = users * (1 - users) / (n_i - 1)  # eq. 6
    v_overall = np.sum(w**2 * users * (1 - users) / (n_i - 1))  # eq. 5
    n_hat = pixels.sum() * p_k  # N̂_.j, the estimated pixels of reference class j
    v_producers = np.empty(k)
    for j in range(k):  # eq. 7
        own = pixels[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (n_i[j] - 1)
        others = sum(
            pixels[i] ** 2 * counts[i, j] / n_i[i] * (1 - counts[i, j] / n_i[i]) / (n_i[i] - 1)
            for i in range(k)
            if i != j
        )
        v_producers[j] = (own + producers[j] ** 2 * others) / n_hat[j] ** 2
    se_area = np.sqrt([np.sum((w * p[:, j] - p[:, j] ** 2) / (n_i - 1)) for j in range(k)])
    return {
        "p": p,
        "area_proportion": p_k,
        "se_area_proportion": se_area,  # eq. 10
        "users": users,
        "se_users": np.sqrt(v_users),
        "producers": producers,
        "se_producers": np.sqrt(v_producers),
        "overall": np.array(overall),
        "se_overall": np.array(math.sqrt(v_overall)),
    }


@pytest.mark.parametrize("example", ["olofsson-2014", "random"])
def test_equals_olofsson_closed_forms_when_strata_are_map_classes(example: str) -> None:
    if example == "random":
        rng = np.random.default_rng(5)
        counts = rng.integers(0, 40, (5, 5)) + np.diag(rng.integers(20, 90, 5))
        pixels = rng.integers(1_000, 2_000_000, 5).astype(np.float64)
    else:
        counts, pixels = OLOFSSON_COUNTS, OLOFSSON_PIXELS
    mapped, reference = units(counts)
    e = estimate(
        mapped,
        mapped,
        reference,
        stratum_pixels=pixels,
        classes=[f"c{k}" for k in range(len(pixels))],
        pixel_area_ha=0.01,
        map_pixels=pixels,
        fpc=False,
    )
    want = olofsson_closed_forms(counts, pixels)
    np.testing.assert_allclose(e.error_matrix, want["p"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        e.area_proportion.value, want["area_proportion"], rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(
        e.area_proportion.se, want["se_area_proportion"], rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(e.users_accuracy.value, want["users"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(e.users_accuracy.se, want["se_users"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        e.producers_accuracy.value, want["producers"], rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(
        e.producers_accuracy.se, want["se_producers"], rtol=1e-12, atol=1e-15
    )
    assert e.overall_accuracy.value == pytest.approx(float(want["overall"]), rel=1e-12)
    assert e.overall_accuracy.se == pytest.approx(float(want["se_overall"]), rel=1e-12)


# Stehman (2014) Table 2: stratum, map class and reference class of the 40 sample units.
STEHMAN_STRATUM = np.repeat(np.arange(4), 10)
STEHMAN_MAP = "AAAAAAABBBABBBBBBBBBBBCCCCCCBBDDDDDDDDDD"
STEHMAN_REF = "AAAAACBABCABBBBBAABBCCCCCDDBBADDDDDDDCCB"
STEHMAN_PIXELS = np.array([40_000, 30_000, 20_000, 10_000], dtype=np.float64)


def stehman_units() -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    return (
        np.array(["ABCD".index(c) for c in STEHMAN_MAP]),
        np.array(["ABCD".index(c) for c in STEHMAN_REF]),
    )


def stehman(*, fpc: bool = True) -> AreaEstimate:
    mapped, reference = stehman_units()
    return estimate(
        STEHMAN_STRATUM,
        mapped,
        reference,
        stratum_pixels=STEHMAN_PIXELS,
        classes="ABCD",
        pixel_area_ha=1.0,
        stratum_names=["stratum 1", "stratum 2", "stratum 3", "stratum 4"],
        fpc=fpc,
    )


@pytest.mark.parametrize("fpc", [True, False])
def test_stehman_2014_numerical_example(fpc: bool) -> None:
    e = stehman(fpc=fpc)
    # p. 4932: area proportions of A and C, overall accuracy.
    assert round(e.area_proportion[0].value, 2) == 0.35
    assert round(e.area_proportion[2].value, 2) == 0.20
    assert round(e.overall_accuracy.value, 2) == 0.63
    # p. 4934: user's and producer's accuracy of class B.
    assert round(e.users_accuracy[1].value, 3) == 0.574
    assert round(e.producers_accuracy[1].value, 3) == 0.794
    # p. 4935: cell (2, 3) of the error matrix (map B, reference C).
    assert round(float(e.error_matrix[1, 2]), 2) == 0.08
    # pp. 4935-4936: standard errors.
    assert round(e.area_proportion[0].se, 3) == 0.082
    assert round(e.area_proportion[2].se, 3) == 0.064
    assert round(e.overall_accuracy.se, 3) == 0.085
    assert round(e.users_accuracy[1].se, 3) == 0.125
    # The paper prints 0.114 for SE(producer's accuracy of B); eqs. 28-29 give 0.117.
    # See test_stehman_2014_producers_se_misprint for where 0.114 comes from.
    assert round(e.producers_accuracy[1].se, 3) == 0.117


def test_stehman_2014_producers_se_misprint() -> None:
    """The paper's 0.114 is eq. 28 with s²_x of stratum 4 taken as 0 instead of 0.1.

    In stratum 4 one unit of ten has reference class B (x_u = 1) and none is mapped B
    (y_u = 0), so s²_x4 = 0.1 (as Stehman's Table 3 lists); setting it to 0 gives 0.114.
    """
    p_b = 27_000 / 34_000  # Ŷ / X̂, p. 4934
    x_hat = 34_000.0  # X̂: estimated pixels of reference class B
    # Per stratum, from Table 2 (10 units each): y = [map B and ref B], x = [ref B].
    # Stratum 1: one unit y = x = 1, one more x = 1; stratum 2: seven units y = x = 1;
    # stratum 3: as stratum 1; stratum 4: one unit x = 1, y = 0 everywhere.
    s2_y = [0.9 / 9, 2.1 / 9, 0.9 / 9, 0.0]
    s2_x = [1.6 / 9, 2.1 / 9, 1.6 / 9]
    s_xy = [0.8 / 9, 2.1 / 9, 0.8 / 9, 0.0]

    def se(s2_x4: float) -> float:
        sx = [*s2_x, s2_x4]
        var = sum(
            n_h**2 * (s2_y[h] + p_b**2 * sx[h] - 2 * p_b * s_xy[h]) / 10
            for h, n_h in enumerate(STEHMAN_PIXELS)
        )
        return math.sqrt(var) / x_hat

    assert round(se(0.1), 3) == 0.117 == round(stehman(fpc=False).producers_accuracy[1].se, 3)
    assert round(se(0.0), 3) == 0.114


def brute_force_stehman(
    strata: NDArray[np.int64],
    mapped: NDArray[np.int64],
    reference: NDArray[np.int64],
    pixels: NDArray[np.float64],
    zone: NDArray[np.bool_],
    zone_pixels: float,
) -> dict[str, NDArray[np.float64]]:
    """Stehman's eqs. 3, 25-29 unit by unit, with plain loops and the fpc."""
    k = 4
    out: dict[str, list[float]] = {"ua": [], "se_ua": [], "pa": [], "se_pa": [], "area": []}
    out["se_area"] = []

    def stratum_values(values: NDArray[np.float64], h: int) -> NDArray[np.float64]:
        return np.asarray(values[strata == h], dtype=np.float64)

    def total(y: NDArray[np.float64]) -> float:
        return float(sum(pixels[h] * np.mean(stratum_values(y, h)) for h in range(len(pixels))))

    def variance(y: NDArray[np.float64], x: NDArray[np.float64], r: float) -> float:
        v = 0.0
        for h in range(len(pixels)):
            yh, xh = stratum_values(y, h), stratum_values(x, h)
            n = len(yh)
            s_y = sum((a - yh.mean()) ** 2 for a in yh) / (n - 1)
            s_x = sum((b - xh.mean()) ** 2 for b in xh) / (n - 1)
            s_xy = sum((a - yh.mean()) * (b - xh.mean()) for a, b in zip(yh, xh, strict=True))
            s_xy /= n - 1
            v += pixels[h] ** 2 * (1 - n / pixels[h]) * (s_y + r**2 * s_x - 2 * r * s_xy) / n
        return v

    z = zone.astype(np.float64)
    for c in range(k):
        y = z * (mapped == c) * (reference == c)
        for key, x in (("ua", z * (mapped == c)), ("pa", z * (reference == c))):
            r = total(y) / total(x)
            out[key].append(r)
            out["se_" + key].append(math.sqrt(variance(y, x, r)) / total(x))
        ref = z * (reference == c)
        out["area"].append(total(ref) / zone_pixels)
        out["se_area"].append(math.sqrt(variance(ref, np.zeros_like(ref), 0.0)) / zone_pixels)
    return {key: np.array(v) for key, v in out.items()}


def test_general_estimator_equals_brute_force_with_zone() -> None:
    rng = np.random.default_rng(11)
    n = 120
    strata = np.repeat(np.arange(3), [50, 40, 30])
    mapped = rng.integers(0, 4, n)
    reference = np.where(rng.random(n) < 0.7, mapped, rng.integers(0, 4, n))
    zone = rng.random(n) < 0.6
    pixels = np.array([5_000.0, 2_000.0, 700.0])
    zone_map = np.array([900.0, 1_100.0, 1_500.0, 700.0])
    e = estimate(
        strata,
        mapped,
        reference,
        stratum_pixels=pixels,
        classes="abcd",
        pixel_area_ha=0.01,
        map_pixels=zone_map,
        in_zone=zone,
    )
    want = brute_force_stehman(strata, mapped, reference, pixels, zone, zone_map.sum())
    np.testing.assert_allclose(e.users_accuracy.value, want["ua"], rtol=1e-12)
    np.testing.assert_allclose(e.users_accuracy.se, want["se_ua"], rtol=1e-12)
    np.testing.assert_allclose(e.producers_accuracy.value, want["pa"], rtol=1e-12)
    np.testing.assert_allclose(e.producers_accuracy.se, want["se_pa"], rtol=1e-12)
    np.testing.assert_allclose(e.area_proportion.value, want["area"], rtol=1e-12)
    np.testing.assert_allclose(e.area_proportion.se, want["se_area"], rtol=1e-12)
    assert e.samples == n and e.samples_in_zone == int(zone.sum())
    assert e.zone_area_ha == pytest.approx(42.0)


def test_zones_that_partition_the_map_add_up_to_the_map() -> None:
    mapped, reference = units(OLOFSSON_COUNTS)
    zone = np.random.default_rng(2).integers(0, 3, mapped.size)
    # Pixel counts of each zone's mapped classes (they partition OLOFSSON_PIXELS).
    zone_map = np.array(
        [[60_000, 50_000, 1_000_000, 2_000_000], [90_000, 40_000, 1_200_000, 3_000_000]]
    )
    zone_map = np.vstack([zone_map, OLOFSSON_PIXELS - zone_map.sum(axis=0)])
    whole = olofsson(fpc=True)
    parts = [
        estimate(
            mapped,
            mapped,
            reference,
            stratum_pixels=OLOFSSON_PIXELS,
            classes=OLOFSSON_CLASSES,
            pixel_area_ha=LANDSAT_HA,
            map_pixels=zone_map[z],
            in_zone=zone == z,
        )
        for z in range(3)
    ]
    np.testing.assert_allclose(sum(p.area_ha.value for p in parts), whole.area_ha.value)
    assert sum(p.zone_area_ha for p in parts) == pytest.approx(whole.zone_area_ha)
    for p, counts in zip(parts, zone_map, strict=True):
        assert p.map_area_ha is not None
        np.testing.assert_allclose(p.map_area_ha, counts * LANDSAT_HA)
    # The whole map as a "zone" with every unit in it is the whole-map estimate.
    everything = estimate(
        mapped,
        mapped,
        reference,
        stratum_pixels=OLOFSSON_PIXELS,
        classes=OLOFSSON_CLASSES,
        pixel_area_ha=LANDSAT_HA,
        map_pixels=OLOFSSON_PIXELS,
        in_zone=np.ones(mapped.size, dtype=bool),
    )
    np.testing.assert_allclose(everything.area_ha.se, whole.area_ha.se)
    np.testing.assert_allclose(everything.producers_accuracy.se, whole.producers_accuracy.se)


def test_to_dict_is_plain_json() -> None:
    mapped, reference = units(OLOFSSON_COUNTS)
    reference = np.where(reference == 1, 3, reference)  # forest gain never seen
    e = estimate(
        mapped,
        mapped,
        reference,
        stratum_pixels=OLOFSSON_PIXELS,
        classes=OLOFSSON_CLASSES,
        pixel_area_ha=LANDSAT_HA,
        map_pixels=OLOFSSON_PIXELS,
    )
    d = json.loads(json.dumps(e.to_dict(), allow_nan=False))
    gain = d["per_class"]["forest gain"]
    assert gain["producers_accuracy"] == {"value": None, "se": None, "ci95": None}
    assert gain["users_accuracy"]["value"] == 0.0
    assert gain["area_ha"]["value"] == 0.0
    assert gain["map_area_ha_biased"] == pytest.approx(13_500)
    assert d["overall_accuracy"]["ci95"] == pytest.approx(1.96 * d["overall_accuracy"]["se"])
    assert len(d["error_matrix"]["values"]) == 4
    assert d["classes"] == list(OLOFSSON_CLASSES)


def test_results_are_read_only() -> None:
    e = olofsson()
    with pytest.raises(ValueError, match="read-only"):
        e.area_proportion.value[0] = 1.0


def test_stratum_with_one_point_is_refused() -> None:
    mapped, reference = stehman_units()
    keep = np.ones(mapped.size, dtype=bool)
    keep[31:] = False  # stratum 4 keeps one unit
    with pytest.raises(AssessmentError) as info:
        estimate(
            STEHMAN_STRATUM[keep],
            mapped[keep],
            reference[keep],
            stratum_pixels=STEHMAN_PIXELS,
            classes="ABCD",
            pixel_area_ha=1.0,
            stratum_names=["s1", "s2", "s3", "s4"],
        )
    message = str(info.value)
    assert "s4 has 1 sample unit" in message
    assert "fewer than 2 points" in message and "add reference points there" in message
    assert "\n" not in message
    assert isinstance(info.value, AgrimonError)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"reference": np.full(40, 4)}, "reference class index 4 of sample unit 0"),
        ({"map_class": np.full(40, -1)}, "map class index -1"),
        ({"stratum_pixels": [40_000, 30_000, 20_000]}, "stratum index 3"),
        ({"stratum_pixels": [40_000, 30_000, 20_000, 5]}, "only 5 pixels"),
        ({"in_zone": np.ones(40, dtype=bool)}, "in_zone needs map_pixels"),
        ({"map_pixels": [1, 2, 3, 4]}, "without a zone both must count the same map"),
        ({"map_class": np.zeros(40)}, "integer class indices"),
        ({"classes": "ABCA"}, "unique names"),
    ],
)
def test_bad_inputs_raise_one_line_errors(change: dict[str, object], match: str) -> None:
    mapped, reference = stehman_units()
    kwargs: dict[str, object] = {
        "stratum": STEHMAN_STRATUM,
        "map_class": mapped,
        "reference": reference,
        "stratum_pixels": STEHMAN_PIXELS,
        "classes": "ABCD",
        "pixel_area_ha": 1.0,
        **change,
    }
    with pytest.raises(AssessmentError, match=match) as info:
        estimate(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
