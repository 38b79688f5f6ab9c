"""The demo world is as hard as real savanna for bush-encroachment mapping, yet learnable.

On the default demo run (Grootfontein AOI, season 2023-07-01..2024-06-30) no single
threshold on any one product layer maps encroachment (encroaching shrub cover >= 30 %) well,
while a per-pixel classifier on a season of band composites and the phenology does clearly
better: a random forest (the proxy of the shipped model) trained on the western half of the
AOI and scored on the eastern half.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rasterio.features import geometry_mask
from sklearn.ensemble import RandomForestClassifier

from agrimon.aoi import read_aoi
from agrimon.config import make_spec
from agrimon.indices.composites import Period, composite
from agrimon.indices.masks import clear_mask
from agrimon.indices.spectral import compute_indices
from agrimon.invasive.metrics import best_threshold_f1
from agrimon.monitor import run_monitor
from agrimon.sources import synth
from agrimon.sources.base import BANDS
from agrimon.sources.demo import cover_truth, encroached_truth, render_stack
from agrimon.tilework import product_layers

pytestmark = pytest.mark.slow

#: Largest F1 any single threshold on one product layer may reach (the issue's criterion).
MAX_THRESHOLD_F1 = 0.80
#: How much better the shipped model must map it than the best threshold (the issue's).
MODEL_MARGIN = 0.10
#: How much better the random-forest proxy must be than the best threshold.
PROXY_MARGIN = 0.12
#: Six two-month periods of the default season.
PERIODS = tuple(
    Period(name, start, end)
    for name, start, end in (
        ("jul-aug", date(2023, 7, 1), date(2023, 8, 31)),
        ("sep-oct", date(2023, 9, 1), date(2023, 10, 31)),
        ("nov-dec", date(2023, 11, 1), date(2023, 12, 31)),
        ("jan-feb", date(2024, 1, 1), date(2024, 2, 29)),
        ("mar-apr", date(2024, 3, 1), date(2024, 4, 30)),
        ("may-jun", date(2024, 5, 1), date(2024, 6, 30)),
    )
)
#: The classifier's features are sampled on every STRIDE-th pixel (both axes).
STRIDE = 3


@dataclass(frozen=True)
class Run:
    """The default demo run's layers on its grid, and the truth there."""

    folder: Path
    geobox: GeoBox
    layers: dict[str, NDArray[np.float64]]
    inside: NDArray[np.bool_]
    truth: NDArray[np.bool_]
    crop: NDArray[np.bool_]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Run the default demo monitor once and read every product COG."""
    spec = make_spec(out=tmp_path_factory.mktemp("realism"))
    folder = run_monitor(spec)
    layers: dict[str, NDArray[np.float64]] = {}
    geobox: GeoBox | None = None
    for name, layer in product_layers(spec).items():
        with rasterio.open(folder / f"{name}.tif") as src:
            values = src.read(1).astype(np.float64)
            if geobox is None:
                geobox = GeoBox(src.shape, src.transform, str(src.crs))
            assert (src.height, src.width) == geobox.shape
        if not np.isnan(layer.nodata):
            values[values == layer.nodata] = np.nan
        layers[name] = values
    assert geobox is not None
    aoi = gpd.GeoSeries([read_aoi(spec.aoi).geometry], crs=4326).to_crs(str(geobox.crs))
    inside = ~geometry_mask(list(aoi), out_shape=geobox.shape, transform=geobox.affine)
    truth = encroached_truth(geobox).values.astype(bool)
    crop = cover_truth(geobox).values == synth.CROP
    return Run(folder, geobox, layers, inside, truth, crop)


def _f1(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> float:
    return 2 * int((pred & truth).sum()) / (int(pred.sum()) + int(truth.sum()))


@pytest.fixture(scope="module")
def threshold_f1(run: Run) -> dict[str, float]:
    """Best single-threshold F1 of every product layer, AOI pixels only."""
    scores = {
        name: best_threshold_f1(values[run.inside], run.truth[run.inside])
        for name, values in run.layers.items()
    }
    for name, f1 in sorted(scores.items(), key=lambda kv: -kv[1]):
        print(f"threshold F1 {name}: {f1:.3f}")
    return scores


def test_the_encroached_share_is_realistic(run: Run) -> None:
    share = float(run.truth[run.inside & ~run.crop].mean())
    print(f"encroached share of the non-crop AOI: {share:.3f}")
    assert 0.15 <= share <= 0.35


def test_no_single_threshold_on_a_product_layer_maps_encroachment(
    threshold_f1: dict[str, float],
) -> None:
    assert len(threshold_f1) >= 10  # the NDVI median, clear count and phenology metrics
    assert max(threshold_f1.values()) <= MAX_THRESHOLD_F1, threshold_f1


def _features(run: Run) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """Per-pixel features on every STRIDE-th pixel, with the truth and the AOI mask there.

    Features: medians of the 10 bands and NDVI of clear observations in each period, and
    the product layers (NDVI median and phenology).
    """
    gb = run.geobox
    # A grid whose pixel centres are those of every STRIDE-th pixel of the product grid.
    coarse = GeoBox(
        (gb.shape[0] // STRIDE, gb.shape[1] // STRIDE), gb.affine * Affine.scale(STRIDE), gb.crs
    )
    pick = (slice(STRIDE // 2, None, STRIDE), slice(STRIDE // 2, None, STRIDE))
    ny, nx = coarse.shape
    days = synth.acquisition_dates(date(2023, 7, 1), date(2024, 6, 30))
    times = [synth.acquisition_time(d, 21.0) for d in days]
    stack = render_stack(coarse, times, chunk_px=256).compute()  # rendered once: ~0.4 GB
    clear = clear_mask(stack, invalid=make_spec().invalid_scl)
    series = {band: stack[band].where(clear) for band in BANDS}
    series["ndvi"] = compute_indices(stack, ["ndvi"])["ndvi"].where(clear)
    columns = []
    for data in series.values():
        per_period = composite(data, PERIODS).values
        columns += [per_period[k] for k in range(len(PERIODS))]
    for name, values in run.layers.items():
        if name != "clear_count":
            columns.append(values[pick][:ny, :nx])
    features = np.stack([c.ravel() for c in columns], axis=1)
    features = np.where(np.isfinite(features), features, -1.0)
    truth = run.truth[pick][:ny, :nx].ravel()
    inside = run.inside[pick][:ny, :nx].ravel()
    return features, truth, inside


def test_a_per_pixel_classifier_does_clearly_better(
    run: Run, threshold_f1: dict[str, float]
) -> None:
    features, truth, inside = _features(run)
    nx = run.geobox.shape[1] // STRIDE
    column = np.tile(np.arange(nx), len(truth) // nx)
    west, east = inside & (column < nx // 2), inside & (column >= nx // 2)
    forest = RandomForestClassifier(
        n_estimators=100, min_samples_leaf=2, class_weight="balanced", n_jobs=2, random_state=0
    )
    forest.fit(features[west], truth[west])
    f1 = _f1(forest.predict(features[east]).astype(bool), truth[east])
    best = max(threshold_f1.values())
    print(f"random forest F1 (east half): {f1:.3f}; best single threshold: {best:.3f}")
    assert f1 >= best + PROXY_MARGIN


def test_the_layers_are_on_the_truth_grid(run: Run) -> None:
    # Crops are bare in the dry season: the layers line up with the truth grid.
    dry_min = run.layers["ndvi_dry_min"]
    sel = run.inside & np.isfinite(dry_min)
    assert np.median(dry_min[sel & run.crop]) < np.median(dry_min[sel & ~run.crop])


def test_the_shipped_model_maps_it_clearly_better_than_any_threshold(
    run: Run, threshold_f1: dict[str, float]
) -> None:
    # The default run maps with models/invasive-demo, trained on aoi/demo_training.geojson:
    # these pixels are spatially held out from its training.
    accuracy = json.loads((run.folder / "invasive_accuracy.json").read_text())
    f1 = accuracy["classes"]["encroached"]["f1"]
    best = max(threshold_f1.values())
    print(f"shipped model F1 on the demo AOI: {f1:.3f}; best single threshold: {best:.3f}")
    assert "demo_training" in accuracy["trained_on"]
    # The map's pixels agree with the accuracy file: recompute F1 from the class COG.
    with rasterio.open(run.folder / "invasive_class.tif") as src:
        label = src.read(1)
    mapped = label > 0
    assert accuracy["pixels"] == int(mapped.sum())
    # Mapped pixels are the AOI's: the tiles' footprints and the whole outline disagree only
    # on pixel centres within rounding of the outline (measured: 86 of 986,032).
    assert int((mapped ^ run.inside).sum()) <= 2e-4 * int(run.inside.sum())
    pred = label == 2  # classes (open, encroached): encroached is value 2
    assert round(_f1(pred[mapped], run.truth[mapped]), 4) == f1
    assert f1 >= best + MODEL_MARGIN
    # The manifest names the checkpoint the map was made with.
    models = json.loads((run.folder / "manifest.json").read_text())["models"]
    (model,) = [m for m in models if m["task"] == "invasive"]
    assert model["sha256"] == accuracy["model_sha256"]
    assert model["feature_set"] == "s2-season/v1"
