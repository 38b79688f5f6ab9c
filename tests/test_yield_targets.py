"""The issue's targets on real CY-Bench data: grain maize in Spain, without the flagged year.

A reduced backtest (3 inner folds instead of 5, one network of 150 steps instead of two of
250), leave-one-year-out over every year with satellite data as CY-Bench runs it. It
asserts what the README reports for the full run: ``agrimon`` at NRMSE ≤ 13.5 at the end
of season and ≤ 14.0 at 60 days, at least 1.0 below both naive and trend, never more than
0.5 above the best baseline, with 80 % intervals covering 70–90 % of held-out unit-years.
"""

from __future__ import annotations

import pytest

from agrimon.invasive.model import torch_threads
from agrimon.yieldcast import model as nets
from agrimon.yieldcast.backtest import AGRIMON, BacktestOptions, all_models, backtest, format_table
from agrimon.yieldcast.cybench import read_cybench
from agrimon.yieldcast.quality import drop_flagged, flag_implausible
from tests.conftest import real_path

pytestmark = pytest.mark.slow


Scores = dict[str, dict[str, dict[str, float]]]


@pytest.fixture(scope="module")
def scores() -> Scores:
    root = real_path("cybench")
    data = read_cybench(root, "maize", "ES")
    data = drop_flagged(data, flag_implausible(data))
    models = all_models(data, cnn=nets.FitOptions(steps=150, members=1))
    with torch_threads(1):
        result = backtest(data, models, BacktestOptions(inner_folds=3))
    print(format_table(result.scores))
    return result.scores


def test_agrimon_meets_the_targets_on_spanish_maize(scores: Scores) -> None:
    ours = scores[AGRIMON]
    assert ours["eos"]["nrmse"] <= 13.5
    assert ours["60d"]["nrmse"] <= 14.0
    for lead in ("60d", "90d", "eos"):
        assert ours[lead]["nrmse"] <= scores["naive"][lead]["nrmse"] - 1.0
        assert ours[lead]["nrmse"] <= scores["trend"][lead]["nrmse"] - 1.0
        best = min(scores[m][lead]["nrmse"] for m in ("naive", "trend", "random_forest"))
        assert ours[lead]["nrmse"] <= best + 0.5
        assert 0.70 <= ours[lead]["coverage80"] <= 0.90


def test_the_baselines_match_the_issues_measurements(scores: Scores) -> None:
    # Naive ≈ 16.1 and trend ≈ 14.7 without the flagged year, as measured in the issue.
    assert scores["naive"]["eos"]["nrmse"] == pytest.approx(16.1, abs=0.1)
    assert scores["trend"]["eos"]["nrmse"] == pytest.approx(14.7, abs=0.1)
    # The model and the forest alone are no better than the trend: the blend is what helps.
    for name in ("random_forest", "cnn"):
        assert 13.5 <= scores[name]["eos"]["nrmse"] <= 15.5
