"""CY-Bench metrics and split-conformal calibration, against hand computation."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_percentage_error, mean_squared_error, r2_score

from agrimon.errors import TrainingError
from agrimon.yieldcast import conformal, metrics

# Two test years x three units.
#   2020: observed 2, 4, 6   predicted 3, 4, 5   errors 1, 0, -1
#   2021: observed 1, 2, 3   predicted 1, 3, 3   errors 0, 1, 0
TABLE = pd.DataFrame(
    {
        "year": [2020, 2020, 2020, 2021, 2021, 2021],
        "observed": [2.0, 4.0, 6.0, 1.0, 2.0, 3.0],
        "predicted": [3.0, 4.0, 5.0, 1.0, 3.0, 3.0],
    }
)
# NRMSE 2020 = 100 * sqrt(2/3) / 4 = 20.41241452...
# NRMSE 2021 = 100 * sqrt(1/3) / 2 = 28.86751346...
NRMSE_2020 = 100 * math.sqrt(2 / 3) / 4
NRMSE_2021 = 100 * math.sqrt(1 / 3) / 2


def test_nrmse_per_year_and_mean_by_hand() -> None:
    per_year = metrics.nrmse_per_year(TABLE["observed"], TABLE["predicted"], TABLE["year"])
    assert per_year.to_dict() == pytest.approx({2020: 20.41241452319315, 2021: 28.867513459481287})
    # mean over the two years: (20.4124 + 28.8675) / 2 = 24.6399...
    value = metrics.nrmse(TABLE["observed"], TABLE["predicted"], TABLE["year"])
    assert value == pytest.approx((NRMSE_2020 + NRMSE_2021) / 2)
    assert value == pytest.approx(24.63996399133722)


def test_nrmse_median_over_years_like_the_leaderboard() -> None:
    # A third year: observed 10, 10, 10, predicted 10, 10, 13 -> 100 * sqrt(3) / 10 = 17.32.
    extra = pd.DataFrame(
        {"year": [2022] * 3, "observed": [10.0] * 3, "predicted": [10.0, 10.0, 13.0]}
    )
    table = pd.concat([TABLE, extra], ignore_index=True)
    args = (table["observed"], table["predicted"], table["year"])
    # median of 20.41, 28.87, 17.32 is 2020's value; the mean is 22.20.
    assert metrics.nrmse(*args, reduce="median") == pytest.approx(NRMSE_2020)
    assert metrics.nrmse(*args) == pytest.approx((NRMSE_2020 + NRMSE_2021 + 17.320508075688775) / 3)


def test_nrmse_is_not_the_pooled_one() -> None:
    # Pooled over all six unit-years: 100 * sqrt(3/6) / 3 = 23.57, not 24.64.
    pooled = 100 * math.sqrt(3 / 6) / 3
    per_year = metrics.nrmse(TABLE["observed"], TABLE["predicted"], TABLE["year"])
    assert per_year != pytest.approx(pooled)


def test_pooled_mape_r2_by_hand() -> None:
    # |e| / y: 1/2, 0, 1/6, 0, 1/2, 0 -> sum 7/6, mean 7/36 = 19.44 %.
    assert metrics.mape(TABLE["observed"], TABLE["predicted"]) == pytest.approx(100 * 7 / 36)
    # mean observed 3; SS_tot = 1 + 1 + 9 + 4 + 1 + 0 = 16; SS_res = 1 + 0 + 1 + 0 + 1 + 0 = 3.
    assert metrics.r2(TABLE["observed"], TABLE["predicted"]) == pytest.approx(1 - 3 / 16)


def test_per_year_matches_cybench_eval() -> None:
    # CY-Bench's eval.py calls these scikit-learn functions on each year's units.
    table = metrics.per_year(TABLE)
    for year, group in TABLE.groupby("year"):
        y, p = group["observed"], group["predicted"]
        row = table.loc[year]
        assert row["nrmse"] == pytest.approx(100 * np.sqrt(mean_squared_error(y, p)) / y.mean())
        assert row["mape"] == pytest.approx(100 * mean_absolute_percentage_error(y, p))
        assert row["r2"] == pytest.approx(r2_score(y, p))
        assert row["n"] == 3
    # By hand: 2020 MAPE (1/2 + 0 + 1/6) / 3 = 22.2 %, R² 1 - 2/8; 2021 MAPE 16.7 %, R² 1 - 1/2.
    assert table["mape"].tolist() == pytest.approx([100 * 2 / 9, 100 / 6])
    assert table["r2"].tolist() == pytest.approx([0.75, 0.5])


def test_score_with_intervals() -> None:
    # observed - predicted: -1, 0, 1, 0, -1, 0; interval [p - 1, p + 0.5] misses only the +1.
    table = TABLE.assign(lo=TABLE["predicted"] - 1, hi=TABLE["predicted"] + 0.5)
    result = metrics.score(table)
    assert result["coverage"] == pytest.approx(5 / 6)
    assert result["mean_width"] == pytest.approx(1.5)
    assert result["nrmse"] == pytest.approx((NRMSE_2020 + NRMSE_2021) / 2)
    assert set(metrics.score(TABLE)) == {"nrmse", "mape", "r2"}


def test_r2_of_constant_observations_is_nan() -> None:
    assert math.isnan(metrics.r2([3.0, 3.0], [2.0, 4.0]))


@pytest.mark.parametrize(
    ("observed", "predicted", "message"),
    [
        ([1.0, np.nan], [1.0, 1.0], "NaN or infinite"),
        ([1.0, 2.0], [1.0], "pass one forecast"),
        ([], [], "no values"),
    ],
)
def test_bad_inputs_raise(observed: list[float], predicted: list[float], message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        metrics.mape(observed, predicted)


def test_nrmse_refuses_a_year_with_no_positive_mean() -> None:
    with pytest.raises(TrainingError, match="positive mean"):
        metrics.nrmse([0.0, 0.0], [1.0, 1.0], [2020, 2020])


def test_table_without_columns_raises() -> None:
    with pytest.raises(TrainingError, match="lacks column"):
        metrics.score(TABLE.drop(columns="year"))


# --- conformal ------------------------------------------------------------------------------


def test_conformal_quantile_rank() -> None:
    # n = 9, alpha = 0.2: k = ceil(10 * 0.8) = 8 -> the 8th smallest of 1..9.
    assert conformal.conformal_quantile(np.arange(9.0, 0.0, -1.0), 0.2) == 8.0
    # n = 19, alpha = 0.05: k = ceil(20 * 0.95) = 19 (not 20 from float round-off).
    assert conformal.conformal_quantile(np.arange(1.0, 20.0), 0.05) == 19.0


def test_conformal_quantile_too_few_values() -> None:
    # n = 3, alpha = 0.2: k = ceil(4 * 0.8) = 4 > 3; n must be >= 0.8 / 0.2 = 4.
    with pytest.raises(TrainingError, match="at least 4"):
        conformal.conformal_quantile([1.0, 2.0, 3.0], 0.2)


def test_cqr_scores_and_correction_by_hand() -> None:
    lo = np.array([0.0, 0.0, 0.0, 0.0])
    hi = np.array([1.0, 1.0, 1.0, 1.0])
    y = np.array([0.5, 1.5, -1.0, 0.9])
    # max(lo - y, y - hi): -0.5, 0.5, 1.0, -0.1
    assert conformal.quantile_scores(lo, hi, y).tolist() == pytest.approx([-0.5, 0.5, 1.0, -0.1])
    # alpha = 0.2, n = 4: k = ceil(5 * 0.8) = 4 -> the largest score, 1.0.
    cal = conformal.calibrate_quantiles(lo, hi, y, alpha=0.2)
    assert (cal.q_hat, cal.n, cal.kind) == (1.0, 4, "quantile")
    new_lo, new_hi = conformal.apply_quantiles([2.0], [3.0], cal)
    assert (new_lo.tolist(), new_hi.tolist()) == ([1.0], [4.0])


def test_crossed_interval_collapses_to_midpoint() -> None:
    cal = conformal.Calibration(q_hat=-2.0, alpha=0.2, n=10, kind="quantile")
    new_lo, new_hi = conformal.apply_quantiles([0.0, 0.0], [2.0, 10.0], cal)
    assert new_lo.tolist() == [1.0, 2.0]
    assert new_hi.tolist() == [1.0, 8.0]


def test_kinds_do_not_mix() -> None:
    cal = conformal.calibrate_absolute([1.0] * 9, np.arange(9.0), alpha=0.2)
    with pytest.raises(TrainingError, match="apply_absolute"):
        conformal.apply_quantiles([0.0], [1.0], cal)


N_REPS, N_CAL, N_TEST, ALPHA = 200, 200, 500, 0.2
# Standard error of the mean coverage over the repetitions. Given the calibration set, the
# coverage of one repetition is Beta-distributed with variance about α(1−α)/(n+2) (Vovk 2012;
# Angelopoulos & Bates 2021, sec. 3.2), and its 500 test points add a binomial α(1−α)/m:
# 0.16/202 + 0.16/500 = 0.00111, SD 0.033 per repetition, SE 0.0024 over 200 repetitions.
# The band 0.78–0.82 is 8 SE wide on each side; the finite-sample guarantee
# 1−α <= E[coverage] <= 1−α + 1/(n+1) = 0.805 is checked to within 3 SE.
SE = math.sqrt(ALPHA * (1 - ALPHA) * (1 / (N_CAL + 2) + 1 / N_TEST) / N_REPS)


def _gaussian_draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A known mean 2 + 0.5 x and Gaussian noise of SD 1."""
    x = rng.uniform(0, 10, n)
    mean = 2 + 0.5 * x
    return mean, mean + rng.normal(0.0, 1.0, n)


def _repeat_cqr(half_width: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage, width and q̂ of CQR over repetitions, with lo/hi = mean ± half_width."""
    rng = np.random.default_rng(seed)
    cover, width, q_hat = (np.empty(N_REPS) for _ in range(3))
    for i in range(N_REPS):
        mean_c, y_c = _gaussian_draw(rng, N_CAL)
        cal = conformal.calibrate_quantiles(
            mean_c - half_width, mean_c + half_width, y_c, alpha=ALPHA
        )
        mean_t, y_t = _gaussian_draw(rng, N_TEST)
        lo, hi = conformal.apply_quantiles(mean_t - half_width, mean_t + half_width, cal)
        cover[i] = metrics.coverage(y_t, lo, hi)
        width[i] = metrics.mean_width(lo, hi)
        q_hat[i] = cal.q_hat
    return cover, width, q_hat


def _check_coverage(cover: np.ndarray) -> None:
    mean = float(cover.mean())
    assert 0.78 <= mean <= 0.82
    assert mean >= 1 - ALPHA - 3 * SE
    assert mean <= 1 - ALPHA + 1 / (N_CAL + 1) + 3 * SE


@pytest.mark.parametrize("half_width", [0.5, 3.0])
def test_cqr_calibrates_narrow_and_wide_intervals(half_width: float) -> None:
    cover, width, q_hat = _repeat_cqr(half_width, seed=7)
    _check_coverage(cover)
    # The true 80 % half-width is z_0.9 = 1.2816: a narrow input widens, a wide one narrows.
    if half_width < 1.2816:
        assert np.all(q_hat > 0)
        assert np.all(width > 2 * half_width)
    else:
        assert np.all(q_hat < 0)
        assert np.all(width < 2 * half_width)
    assert float(np.mean(width)) == pytest.approx(2 * 1.2816, rel=0.05)


def test_absolute_residual_variant_covers() -> None:
    rng = np.random.default_rng(11)
    cover = np.empty(N_REPS)
    for i in range(N_REPS):
        mean_c, y_c = _gaussian_draw(rng, N_CAL)
        cal = conformal.calibrate_absolute(mean_c, y_c, alpha=ALPHA)
        mean_t, y_t = _gaussian_draw(rng, N_TEST)
        cover[i] = metrics.coverage(y_t, *conformal.apply_absolute(mean_t, cal))
    _check_coverage(cover)


def test_pinball_loss_by_hand() -> None:
    # Row 1: y = 2, forecasts 1 (τ 0.1) and 3 (τ 0.9): d = 1 -> max(0.1, -0.9) = 0.1;
    # d = -1 -> max(-0.9, 0.1) = 0.1. Row 2: exact forecasts, loss 0. Mean of four = 0.05.
    pred = np.array([[1.0, 3.0], [2.0, 2.0]])
    y = np.array([2.0, 2.0])
    assert conformal.pinball_loss_numpy(pred, y, [0.1, 0.9]) == pytest.approx(0.05)
    with pytest.raises(TrainingError, match="expected"):
        conformal.pinball_loss_numpy(pred, y, [0.5])


def test_pinball_loss_torch_matches_numpy_and_has_gradient() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    pred_np, y_np = rng.normal(size=(8, 3)), rng.normal(size=8)
    quantiles = [0.1, 0.5, 0.9]
    pred = torch.tensor(pred_np, requires_grad=True)
    loss = conformal.pinball_loss(pred, torch.tensor(y_np), quantiles)
    assert loss.item() == pytest.approx(conformal.pinball_loss_numpy(pred_np, y_np, quantiles))
    loss.backward()
    assert pred.grad is not None
    assert pred.grad.shape == (8, 3)


def test_conformal_imports_without_torch() -> None:
    code = "import sys, agrimon.yieldcast.conformal; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
