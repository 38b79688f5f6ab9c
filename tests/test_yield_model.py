"""The Torch yield model, the blend, the stored forest and the checkpoint, on synthetic data.

The synthetic world is the backtest tests' (12 units, 14 years, a greenness series whose
mid-season peak carries the yield's departure from its trend).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.ensemble import RandomForestRegressor

from agrimon.errors import ModelError
from agrimon.yieldcast import baselines, blend, metrics
from agrimon.yieldcast import model as nets
from agrimon.yieldcast.backtest import BacktestOptions, Forecaster, backtest
from agrimon.yieldcast.cnn import cnn_forecaster
from agrimon.yieldcast.data import YieldData
from agrimon.yieldcast.forecast import (
    YieldModel,
    forecast,
    load_model,
    member_forecasts,
    save_model,
)
from agrimon.yieldcast.forest import ForestArrays
from agrimon.yieldcast.train import TrainYieldOptions, train_yield_model
from tests.test_yield_backtest import YEARS, _world

FAST = nets.FitOptions(steps=120, members=1)
Trained = tuple[YieldData, YieldModel]


def test_the_strided_convolution_is_conv1d() -> None:
    torch.manual_seed(0)
    ours = nets.StridedConv(4, 6, kernel=5, stride=2)
    ref = torch.nn.Conv1d(4, 6, kernel_size=5, stride=2, padding=2)
    # Conv1d's weight (out, in, k) is our linear's (out, in·k), channel-major.
    with torch.no_grad():
        ref.weight.copy_(ours.linear.weight.reshape(6, 4, 5))
        assert ref.bias is not None
        ref.bias.copy_(ours.linear.bias)
    x = torch.randn(7, 24, 4)
    expected = ref(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
    assert ours(x).shape == (7, 12, 6)


def test_quantiles_never_cross_and_bins_after_the_lead_are_ignored() -> None:
    torch.manual_seed(1)
    net = nets.SeasonCNN(2, 3, 3).eval()
    series, mask = torch.randn(5, 24, 2), torch.ones(5, 24, 2)
    static, lead = torch.randn(5, 3), torch.eye(3)[[0, 1, 2, 0, 1]]
    out = net(series, mask, static, lead)
    assert out.shape == (5, 3) and (out[:, 1:] >= out[:, :-1]).all()


def test_the_stored_forest_predicts_as_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = x[:, 0] * 2 + np.sin(x[:, 1]) + rng.normal(0, 0.1, 300)
    forest = RandomForestRegressor(n_estimators=20, min_samples_leaf=3, random_state=0).fit(x, y)
    arrays = ForestArrays.of(forest)
    test = rng.normal(size=(50, 6))
    np.testing.assert_allclose(arrays.predict(test), forest.predict(test), rtol=1e-12)
    again = ForestArrays.from_tensors(arrays.tensors("f."), "f.")
    np.testing.assert_array_equal(again.predict(test), arrays.predict(test))


def test_the_simplex_grid_and_the_blend_choice() -> None:
    grid = list(blend.simplex(3, 0.1))
    assert len(grid) == 66 and all(abs(sum(w) - 1) < 1e-12 for w in grid)
    # Two unbiased forecasts with independent errors of equal spread: half and half.
    rng = np.random.default_rng(3)
    truth = rng.uniform(5, 10, 4000)
    years = np.repeat(np.arange(40), 100)
    a = truth + rng.normal(0, 1, truth.size)
    b = truth + rng.normal(0, 1, truth.size)
    weights = blend.choose_weights({"a": a, "b": b}, truth, years)
    assert weights == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}
    # A useless forecast gets no weight.
    weights = blend.choose_weights({"a": a, "junk": rng.normal(0, 5, truth.size)}, truth, years)
    assert weights == {"a": 1.0, "junk": 0.0}
    assert blend.describe({"a": 0.6, "b": 0.4, "c": 0.0}) == "a 0.6 + b 0.4"


def test_the_cnn_learns_the_season_signal() -> None:
    data = _world(signal=0.9)
    fit_predict = cnn_forecaster(data, nets.FitOptions(steps=200, members=1))
    train = data.yields[data.yields["year"] < YEARS[-3]]
    test = data.yields[data.yields["year"] >= YEARS[-3]]
    cnn = fit_predict(train, test[["unit", "year"]], "eos")["predicted"]
    trend = baselines.trend(train, test)["predicted"]
    score_cnn = metrics.nrmse(test["yield"], cnn, test["year"])
    score_trend = metrics.nrmse(test["yield"], trend, test["year"])
    assert score_cnn < 0.7 * score_trend


def test_the_cnn_never_sees_data_after_its_lead() -> None:
    data = _world(signal=0.9)
    year = YEARS[-1]
    train = data.yields[data.yields["year"] != year]
    keys = data.yields[data.yields["year"] == year][["unit", "year"]]
    base = cnn_forecaster(data, FAST)(train, keys, "60d")["predicted"].to_numpy()
    # Change every observation of the held-out season after its 60-day lead (day 160).
    series = data.series.copy()
    late = (series["date"] > pd.Timestamp(year, 1, 1) + pd.Timedelta(days=159)) & (
        series["date"].dt.year == year
    )
    assert late.sum() > 0
    series.loc[late, "value"] = 5.0
    other = dataclasses.replace(data, series=series)
    again = cnn_forecaster(other, FAST)(train, keys, "60d")["predicted"].to_numpy()
    np.testing.assert_array_equal(base, again)
    eos = cnn_forecaster(other, FAST)(train, keys, "eos")["predicted"].to_numpy()
    assert not np.allclose(eos, cnn_forecaster(data, FAST)(train, keys, "eos")["predicted"])


@pytest.fixture(scope="module")
def trained() -> Trained:
    data = _world(signal=0.9)
    return data, train_yield_model(data, TrainYieldOptions(inner_folds=3, cnn=FAST))


def test_a_saved_model_forecasts_as_it_was_trained(trained: Trained, tmp_path: Path) -> None:
    data, model = trained
    save_model(model, tmp_path / "m", {"data": "synthetic"})
    loaded = load_model(tmp_path / "m")
    year = YEARS[-1]
    ours = forecast(loaded, data, year, "eos")
    np.testing.assert_allclose(ours["forecast"], forecast(model, data, year, "eos")["forecast"])
    # The forecast is the blend of the members with the weights chosen per lead.
    keys = ours[["unit", "year"]]
    members = member_forecasts(loaded, data, keys, "eos")
    expected = sum(w * members[n] for n, w in loaded.weights["eos"].items())
    np.testing.assert_allclose(ours["forecast"], expected)
    half = loaded.half_width["eos"]
    np.testing.assert_allclose(ours["p90"] - ours["forecast"], half)
    np.testing.assert_allclose(ours["forecast"] - ours["p10"], half)
    assert (ours["history"] == len(YEARS)).all()
    assert ours["model_version"].iloc[0] == loaded.card["sha256"][:12]
    # The season carries skill here: the satellite members take most of the weight.
    eos = loaded.weights["eos"]
    assert eos["random_forest"] + eos["cnn"] >= 0.5
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["features"] == {"indicators": ["ndvi"], "static": [], "season_bins": 24}
    assert "| eos |" in (tmp_path / "m" / "card.md").read_text()


def test_a_tampered_checkpoint_is_refused(trained: Trained, tmp_path: Path) -> None:
    _, model = trained
    folder = tmp_path / "m"
    save_model(model, folder, {})
    with open(folder / "model.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="does not match its card"):
        load_model(folder)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "missing")


def test_a_forecast_refuses_other_features(trained: Trained) -> None:
    data, model = trained
    series = data.series.assign(indicator=data.series["indicator"].cat.rename_categories(["evi"]))
    with pytest.raises(ModelError, match="reads indicators ndvi"):
        forecast(model, dataclasses.replace(data, series=series), YEARS[-1], "eos")


def test_the_cnn_intervals_are_conformalised_quantiles() -> None:
    data = _world(signal=0.9)
    options = BacktestOptions(leads=("eos",), inner_folds=2, test_years=tuple(YEARS[-2:]))
    result = backtest(data, {"cnn": Forecaster(cnn_forecaster(data, FAST))}, options)
    preds = result.predictions[result.predictions["model"] == "cnn"]
    assert {"q10", "q90"}.isdisjoint(preds.columns)  # calibrated into lo and hi
    assert (preds["lo"] < preds["hi"]).all()
    # Not a constant width: the bounds are the network's own quantiles, shifted.
    assert preds["hi"].sub(preds["lo"]).std() > 1e-3
    assert 0.5 <= result.scores["cnn"]["eos"]["coverage80"] <= 1.0
