"""Training the encroachment model: metrics, folds, determinism, checkpoints, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from numpy.typing import NDArray

from agrimon.errors import ModelError, TrainingError
from agrimon.invasive.card import load_checkpoint
from agrimon.invasive.dataset import Chips, assign_folds, load_chips
from agrimon.invasive.features import SEASON_V1, season_window
from agrimon.invasive.mapping import raster_feature_set
from agrimon.invasive.metrics import best_threshold_f1, confusion, scores
from agrimon.invasive.model import (
    SUMMARY_STATS,
    Members,
    ModelConfig,
    build_classifier,
    series_summary,
)
from agrimon.invasive.pipeline import TrainJob, run_training
from agrimon.invasive.train import TrainOptions, make_problem
from agrimon.tilework import phenology_params

from .conftest import agrimon_cli

TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 7830000.0)


# --- pure pieces ----------------------------------------------------------------------


def test_scores_from_a_hand_made_confusion_matrix() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 1, 0, 1, 2, 2])
    m = confusion(truth, pred, 3)
    assert m.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    s = scores(m, ["a", "b", "c"])
    assert s["overall_accuracy"] == round(4 / 6, 4)
    assert s["classes"]["a"] == {
        "precision": 1.0,
        "recall": round(2 / 3, 4),
        "f1": 0.8,
        "iou": round(2 / 3, 4),
        "support": 3,
    }
    assert s["classes"]["b"]["f1"] == 0.5 and s["classes"]["b"]["iou"] == round(1 / 3, 4)


def test_best_threshold_f1_is_exact_in_both_directions() -> None:
    values = np.array([0.1, 0.2, 0.3, 0.4, 0.5, np.nan])
    truth = np.array([False, False, True, True, False, True])
    # Best: values in {0.3, 0.4, 0.5} (>= 0.3): tp 2, predicted 3, positives 3 → 2·2/6.
    assert best_threshold_f1(values, truth) == pytest.approx(4 / 6)
    assert best_threshold_f1(-values, truth) == pytest.approx(4 / 6)  # the other direction
    assert best_threshold_f1(values, np.zeros(6, bool)) == 0.0


def test_folds_spread_a_rare_class_over_several_folds() -> None:
    counts = np.zeros((40, 2), dtype=np.int64)
    counts[:, 0] = 100
    counts[[3, 17, 29], 1] = 20  # the rare class lives in three blocks only
    folds = assign_folds(counts, 3, seed=0)
    assert len({int(folds[b]) for b in (3, 17, 29)}) == 3
    assert sorted(np.bincount(folds).tolist()) == [13, 13, 14]
    assert (assign_folds(counts, 3, seed=0) == folds).all()


def test_the_season_feature_set_names_its_channels_step_major() -> None:
    channels = SEASON_V1.channels
    assert len(channels) == 6 * 12 + 9
    assert channels[:2] == ("m01-02:blue", "m01-02:green")
    assert channels[12] == "m03-04:blue" and channels[-1] == "ndvi_dry_wet_ratio"


def test_a_period_without_a_whole_season_is_refused() -> None:
    from datetime import date

    from agrimon.errors import ConfigError

    params = phenology_params(southern=True)
    assert season_window(date(2023, 7, 1), date(2024, 6, 30), params) == (
        date(2023, 7, 1),
        date(2024, 6, 30),
    )
    with pytest.raises(ConfigError, match="no whole growing season"):
        season_window(date(2023, 7, 2), date(2024, 6, 30), params)


@pytest.mark.parametrize("name", ["tempcnn", "tempcnn-unet"])
def test_models_map_features_to_logits_per_pixel(name: str) -> None:
    config = ModelConfig(name, steps=6, per_step=3, static=2, classes=4)  # type: ignore[arg-type]
    model = build_classifier(config, torch.zeros(20), torch.ones(20)).eval()
    x = torch.randn(2, 20, 16, 16)
    x[0, :, 3, 3] = float("nan")  # missing features are standardised to 0, not NaN
    out = model(x)
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()


def test_series_summary_by_hand() -> None:
    nan = float("nan")
    series = torch.tensor(
        [
            [0.2, nan, 0.8, 0.4, nan, 0.9],  # valid: 0.2 0.8 0.4 0.9
            [nan] * 6,  # never observed
            [nan, nan, 0.5, nan, nan, nan],  # observed once: no change
        ]
    )[:, :, None]
    out = dict(zip(SUMMARY_STATS, series_summary(series).T.tolist(), strict=True))
    # Linear quantiles of 0.2 0.4 0.8 0.9 (numpy's rule), population spread.
    expect = {
        "p10": 0.26,
        "p25": 0.35,
        "p50": 0.6,
        "p75": 0.825,
        "p90": 0.87,
        "mean": 0.575,
        "std": (0.3275 / 4) ** 0.5,
        # Changes between consecutive valid observations: +0.6, -0.4, +0.5.
        "mean_change": 0.5,
        "drop": 0.4,
        "rise": 0.6,
        # -0.4 is below -0.25 * (0.87 - 0.26); the rises are not falls.
        "falls": 1 / 3,
    }
    for name, value in expect.items():
        assert out[name][0] == pytest.approx(value, abs=1e-6), name
    assert all(np.isnan(v[1]) for v in out.values())
    once = {k: v[2] for k, v in out.items()}
    assert once["p10"] == once["p90"] == once["mean"] == pytest.approx(0.5)
    assert once["std"] == 0.0
    assert all(np.isnan(once[k]) for k in ("mean_change", "drop", "rise", "falls"))


def test_an_ensemble_averages_its_members_log_probabilities() -> None:
    config = ModelConfig("tempcnn", 10, 1, 0, 3, summary=True, members=2)
    model = build_classifier(config).eval()
    members = model[2]
    assert isinstance(members, Members) and len(members.networks) == 2
    x = torch.rand(1, 10, 4, 4)
    x[0, ::2, 1, 1] = float("nan")  # gaps in the series: the summary skips them
    with torch.no_grad():
        out = model(x)
        z = model[1](model[0](x))
        assert z.shape[1] == 10 + len(SUMMARY_STATS)
        each = [torch.log_softmax(net(z), dim=1) for net in members.networks]
    assert torch.allclose(out, (each[0] + each[1]) / 2, atol=1e-6)
    assert torch.isfinite(out).all()
    assert torch.allclose(torch.softmax(out, 1).sum(1), torch.ones(1, 4, 4))


# --- a small synthetic training problem on real files ---------------------------------


def _write(path: Path, data: NDArray[np.generic], nodata: float | None) -> Path:
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=str(data.dtype),
        crs="EPSG:32733",
        transform=TRANSFORM,
        nodata=nodata,
    ) as dst:
        dst.write(data)
        dst.descriptions = tuple(f"t{k:02d}" for k in range(count))
    return path


def _world(tmp_path: Path, size: int = 128) -> tuple[Path, Path]:
    """Two classes that differ in the shape of an 8-date series, plus noise (not one band)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:size, 0:size]
    cls = ((np.sin(xx / 9.0) + np.cos(yy / 13.0)) > 0.3).astype(np.int64)
    t = np.arange(8)[:, None, None]
    series = np.where(cls[None] == 1, 0.3 + 0.05 * t, 0.65 - 0.05 * t)
    series = series + rng.normal(0, 0.12, series.shape)
    features = _write(tmp_path / "features.tif", series.astype(np.float32), float("nan"))
    labels = _write(tmp_path / "labels.tif", (cls + 1)[None].astype(np.uint8), 0)
    return features, labels


FAST = TrainOptions(folds=3, max_epochs=6, patience=3, pixels_per_epoch=4000, rf_trees=10)


def _gpkg_labels(tmp_path: Path, size: int = 128) -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    left, top = TRANSFORM.c, TRANSFORM.f
    polys, classes = [], []
    for i in range(4):
        for j in range(4):
            x0, y0 = left + i * size * 2.5, top - (j + 1) * size * 2.5
            polys.append(box(x0 + 20, y0 + 20, x0 + size * 2.5 - 20, y0 + size * 2.5 - 20))
            classes.append("encroached" if (i + j) % 2 else "open")
    path = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame({"class": classes}, geometry=polys, crs=32733).to_file(path)
    return path


def test_training_scores_held_out_blocks_and_beats_nothing_it_saw(tmp_path: Path) -> None:
    features, labels = _world(tmp_path)
    chips = load_chips(features, labels, chip_px=32)
    assert chips.images.shape == (16, 8, 32, 32)
    # Chips know where they are: the top-left chip starts at row 0, column 0.
    assert {(int(r), int(c)) for r, c in zip(chips.rows, chips.cols, strict=True)} == {
        (r, c) for r in (0, 32, 64, 96) for c in (0, 32, 64, 96)
    }
    with rasterio.open(features) as src:
        assert np.allclose(chips.images[chips.rows == 0][0][:, 0, 0], src.read()[:, 0, 0])
    problem = make_problem(chips, ("a", "b"), FAST, 128)
    folds = problem.folds
    assert set(np.unique(folds[chips.labels >= 0])) == {0, 1, 2}
    # Each block belongs to one fold.
    for b in np.unique(problem.blocks):
        assert len(np.unique(folds[problem.blocks == b])) == 1


def test_the_same_seed_gives_the_same_checkpoint(tmp_path: Path) -> None:
    features, _ = _world(tmp_path)
    labels = _gpkg_labels(tmp_path)
    runs = []
    for name in ("one", "two"):
        job = TrainJob(
            out=tmp_path / name,
            labels=str(labels),
            features=features,
            options=TrainOptions(**{**FAST.__dict__, "candidates": ("tempcnn",)}),
        )
        runs.append(run_training(job))
    a = torch.load(runs[0] / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(runs[1] / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert metrics[0] == metrics[1]
    m = metrics[0]
    assert set(m["classes"]) == {"encroached", "open"}
    assert set(m["baselines"]) == {"threshold", "random_forest"}
    assert 0.0 <= m["classes"]["encroached"]["f1"] <= 1.0
    card = json.loads((runs[0] / "card.json").read_text())
    assert card["feature_set"]["channels"] == [f"t{k:02d}:value" for k in range(8)]
    assert card["classes"] == ["encroached", "open"] and card["target"] == "encroached"
    assert card["split"]["folds"] == 3
    # A raw 8-date series on few labels: the model summarises it and is an ensemble.
    assert card["model"]["summary"] is True and card["model"]["members"] == 3
    loaded = load_checkpoint(runs[0], feature_set=raster_feature_set(features))
    assert loaded.classes == ("encroached", "open")


def _trained(tmp_path: Path) -> Path:
    features, _ = _world(tmp_path)
    job = TrainJob(
        out=tmp_path / "model",
        labels=str(_gpkg_labels(tmp_path)),
        features=features,
        options=TrainOptions(**{**FAST.__dict__, "candidates": ("tempcnn",)}),
    )
    return run_training(job)


def _predict_cli(features: Path, model: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return agrimon_cli(
        "predict",
        "invasive",
        "--features",
        str(features),
        "--model",
        str(model),
        "--out",
        str(out),
    )


def test_bad_checkpoints_are_refused_in_one_line(tmp_path: Path) -> None:
    folder = _trained(tmp_path)
    features = tmp_path / "features.tif"
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="trained on feature set raster/v1 \\(8 channels\\)"):
        load_checkpoint(folder, feature_set=SEASON_V1)
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in folder.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    data = bytearray((tampered / "model.pt").read_bytes())
    data[-100] ^= 0xFF
    (tampered / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its card"):
        load_checkpoint(tampered)
    # Through the CLI: one line, exit 2, nothing written.
    for model, expect in (
        (tampered, "does not match its card"),
        (tmp_path / "nope", "does not exist"),
    ):
        out = tmp_path / "map"
        proc = _predict_cli(features, model, out)
        assert proc.returncode == 2, proc.stderr
        assert expect in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not out.exists()
    # Another feature raster (different band count) is refused.
    other = _write(tmp_path / "other.tif", np.zeros((5, 16, 16), np.float32), float("nan"))
    proc = _predict_cli(other, folder, tmp_path / "map2")
    assert proc.returncode == 2 and "trained on feature set" in proc.stderr


def test_predicting_a_feature_raster_writes_three_cogs_on_its_grid(tmp_path: Path) -> None:
    folder = _trained(tmp_path)
    out = tmp_path / "map"
    proc = _predict_cli(tmp_path / "features.tif", folder, out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    with (
        rasterio.open(out / "invasive_class.tif") as c,
        rasterio.open(out / "invasive_probability.tif") as p,
    ):
        assert c.transform == TRANSFORM and c.shape == (128, 128)
        classes, prob = c.read(1), p.read(1)
    # Class 1 (encroached, the target) where its probability is above one half.
    assert set(np.unique(classes)) <= {1, 2}
    assert ((classes == 1) == (prob > 50))[np.abs(prob.astype(int) - 50) > 1].all()


def _train_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return agrimon_cli(
        "train",
        "invasive",
        *args,
        "--out",
        str(tmp_path / "out"),
        "--folds",
        "3",
        "--max-epochs",
        "2",
        timeout=300,
    )


def test_bad_training_input_gets_one_line_and_exit_2(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    features, _ = _world(tmp_path)
    left, top = TRANSFORM.c, TRANSFORM.f
    cases = {
        "no class column": (
            gpd.GeoDataFrame(
                {"kind": ["a", "b"]}, geometry=[box(left, top - 50, left + 50, top)] * 2, crs=32733
            ),
            "class",
        ),
        "one class": (
            gpd.GeoDataFrame(
                {"class": ["a", "a"]}, geometry=[box(left, top - 50, left + 50, top)] * 2, crs=32733
            ),
            "two classes",
        ),
        "outside": (
            gpd.GeoDataFrame(
                {"class": ["a", "b"]},
                geometry=[box(0, 0, 50, 50), box(100, 100, 150, 150)],
                crs=32733,
            ),
            "none of its 2 features falls inside",
        ),
        "wrong crs": (  # UTM metres declared as lon/lat: far outside the raster
            gpd.GeoDataFrame(
                {"class": ["a", "b"]},
                geometry=[
                    box(left, top - 50, left + 50, top),
                    box(left + 60, top - 50, left + 110, top),
                ],
                crs=4326,
            ),
            "",
        ),
    }
    for name, (frame, expect) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.gpkg"
        frame.to_file(path)
        proc = _train_cli(tmp_path, "--features", str(features), "--labels", str(path))
        assert proc.returncode == 2, (name, proc.stderr)
        assert expect in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (
            name,
            proc.stderr,
        )
        assert not (tmp_path / "out").exists(), name
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    proc = _train_cli(tmp_path, "--features", str(features), "--labels", str(empty))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    # A class drawn in one small patch only cannot be scored honestly.
    rare = gpd.GeoDataFrame(
        {"class": ["open", "encroached"]},
        geometry=[
            box(left + 200, top - 1280, left + 1280, top),
            box(left + 10, top - 40, left + 40, top - 10),
        ],
        crs=32733,
    )
    rare.to_file(tmp_path / "rare.gpkg")
    proc = _train_cli(
        tmp_path, "--features", str(features), "--labels", str(tmp_path / "rare.gpkg")
    )
    assert proc.returncode == 2, proc.stderr
    assert "too few for a held-out figure" in proc.stderr
    assert not (tmp_path / "out").exists()
    good = str(_gpkg_labels(tmp_path))
    proc = _train_cli(tmp_path, "--features", str(features), "--labels", good, "--members", "0")
    assert proc.returncode == 2 and "--members 0: give 1 to 16" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_class_in_one_block_only_raises_training_error() -> None:
    labels = np.full((4, 32, 32), -1, dtype=np.int64)
    labels[:, :, :] = 0
    labels[0, :4, :4] = 1  # 16 pixels of class 1 in one block
    chips = Chips(
        np.zeros((4, 3, 32, 32), np.float32),
        labels,
        np.array([0, 0, 32, 32]),
        np.array([0, 32, 0, 32]),
    )
    with pytest.raises(TrainingError, match="class 'b' has 16 labelled pixels in 1 fold"):
        make_problem(chips, ("a", "b"), TrainOptions(folds=3, block_px=16), 64)


def test_the_training_flow_is_a_real_prefect_flow_run(tmp_path: Path) -> None:
    from flows.train import train_invasive
    from prefect.testing.utilities import prefect_test_harness

    features, _ = _world(tmp_path)
    job = TrainJob(
        out=tmp_path / "model",
        labels=str(_gpkg_labels(tmp_path)),
        features=features,
        options=TrainOptions(**{**FAST.__dict__, "candidates": ("tempcnn",)}),
    )
    with prefect_test_harness(server_startup_timeout=120):
        state = train_invasive(job, return_state=True)
    assert state.is_completed()
    folder = state.result()
    assert folder == tmp_path / "model"
    loaded = load_checkpoint(folder)
    assert loaded.config.name == "tempcnn" and loaded.target == "encroached"
