"""Inference of the encroachment model: blending, seamless tiles, products, COGs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from odc.geo.geobox import GeoBox
from torch import Tensor, nn

from agrimon.invasive.model import ModelConfig, ModelName, build_classifier
from agrimon.invasive.predict import (
    blend_weights,
    class_products,
    grid_origin,
    inference_model,
    predict_array,
    predict_raster,
    predict_tile,
)
from agrimon.invasive.products import TARGET_COLOUR
from agrimon.products.cog import Layer, write_cog

CRS = "EPSG:32733"
#: Top-left corner on the global 10 m grid (an even global pixel in both axes).
GRID = GeoBox((400, 600), Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 8_000_000.0), CRS)
CLASSES = ("grass", "encroached", "bare")


def classifier(name: ModelName, *, steps: int = 2, per_step: int = 2, static: int = 2) -> nn.Module:
    """A small model with fixed random weights and batch-norm statistics (seams show)."""
    config = ModelConfig(name, steps, per_step, static, classes=3, width=8, hidden=16)
    gen = torch.Generator().manual_seed(3)
    mean = torch.randn(config.channels, generator=gen)
    std = torch.rand(config.channels, generator=gen) + 0.5
    torch.manual_seed(3)
    model = build_classifier(config, mean, std)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.5, 0.5, generator=gen)
            module.running_var.uniform_(0.5, 2.0, generator=gen)
    return model.eval()


def field(box: GeoBox, channels: int = 6) -> np.ndarray:
    """Smooth random features as a function of global pixel coordinates: any window."""
    rows, cols = grid_origin(box)
    height, width = box.shape
    yy, xx = np.mgrid[rows : rows + height, cols : cols + width].astype(np.float64)
    rng = np.random.default_rng(11)
    out = np.empty((channels, height, width), dtype=np.float32)
    for c in range(channels):
        fy, fx, fd = rng.uniform(0.05, 0.4, size=3)
        py, px = rng.uniform(0, 2 * np.pi, size=2)
        out[c] = np.sin(fy * yy + py) + np.cos(fx * xx + px) + 0.5 * np.sin(fd * (xx + yy))
    return out


# --- blending ---------------------------------------------------------------------------


def test_blend_weights_are_symmetric_positive_and_one_inside() -> None:
    w = blend_weights(64, 16)
    assert w.shape == (64, 64) and w.dtype == np.float32
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, w[::-1, ::-1])
    assert w.max() == 1.0 and w.min() > 0.0
    np.testing.assert_array_equal(w[16:48, 16:48], 1.0)
    # Two cores overlapping by exactly the ramp width sum to 1 there.
    ramp = w[32]
    np.testing.assert_allclose(ramp[-16:] + ramp[:16], 1.0, atol=1e-6)
    np.testing.assert_array_equal(blend_weights(8, 0), 1.0)
    with pytest.raises(ValueError):
        blend_weights(8, 5)


class Constant(nn.Module):
    """Logits that do not depend on the features."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits).reshape(1, -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        return self.logits.expand(b, -1, h, w)


def test_blending_a_constant_prediction_returns_it_exactly() -> None:
    model = Constant([0.3, -1.2, 2.0])
    expected = torch.softmax(model.logits, dim=1).numpy()[0]
    features = field(GRID[:150, :170])
    got = predict_array(model, features, window=64, overlap=16, batch_size=3, halo=4)
    assert got.shape == (3, 150, 170)
    np.testing.assert_array_equal(got, np.broadcast_to(expected, got.shape))


# --- seams ------------------------------------------------------------------------------


def test_adjacent_tiles_equal_one_prediction_over_both() -> None:
    """The halo makes tiles seamless: differences are float rounding (measured 6e-8).

    Windows of 64 px, overlap 16, tiles 80 px wide: several windows per tile, blending on.
    Without the halo the tile border is off by about 0.04 (measured), 400× the tolerance.
    """
    model = classifier("tempcnn-unet")
    halo = ModelConfig("tempcnn-unet", 2, 2, 2, 3).halo
    union, left, right = GRID[:100, :160], GRID[:100, :80], GRID[:100, 80:160]

    def tiled(halo: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
        kw = {"halo": halo, "window": 64, "overlap": overlap}
        whole = predict_tile(model, field, union, **kw)
        pieces = [predict_tile(model, field, tile, **kw) for tile in (left, right)]
        return whole, np.concatenate(pieces, axis=2)

    whole, pieces = tiled(halo, 16)
    assert whole.shape == (3, 100, 160)
    np.testing.assert_allclose(whole.sum(axis=0), 1.0, atol=1e-6)
    assert np.abs(pieces - whole).max() < 1e-5

    # The same model without its halo: the tiles' borders see no neighbours.
    whole, pieces = tiled(0, 0)
    assert np.abs(pieces - whole)[:, :, 78:82].max() > 1e-2


def test_a_pixel_does_not_depend_on_window_size_or_tile_position() -> None:
    """Odd tile offsets (pooling pairs anchored on the global grid) and other windows."""
    model = classifier("tempcnn-unet")
    union = GRID[:120, :120]
    whole = predict_tile(model, field, union, halo=8, window=128, overlap=16)
    shifted = GRID[3:70, 5:97]
    got = predict_tile(model, field, shifted, halo=8, window=40, overlap=4, batch_size=5)
    np.testing.assert_allclose(got, whole[:, 3:70, 5:97], rtol=0, atol=1e-5)
    # One forward pass over the tile and its halo: the same to float rounding.
    with torch.no_grad():
        full = torch.softmax(model(torch.from_numpy(field(union.pad(8)))[None]), dim=1)
    np.testing.assert_allclose(whole, full[0, :, 8:-8, 8:-8].numpy(), rtol=0, atol=1e-5)


def test_inference_model_computes_the_same_function_and_leaves_the_model() -> None:
    model = classifier("tempcnn-unet", steps=6, per_step=3, static=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_model(model)
    assert model.training and not fast.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    x = torch.from_numpy(field(GRID[:64, :64], channels=20))[None]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=0, atol=1e-5)
    assert inference_model(fast) is fast


def test_per_pixel_model_equals_a_direct_forward_pass() -> None:
    model = classifier("tempcnn")
    features = field(GRID[:130, :210])
    features[2, 10:20, 30:40] = np.nan  # one band missing: still predicted
    features[:, 50:55, 60:70] = np.nan  # all missing: no prediction
    got = predict_array(model, features, window=48, overlap=8, batch_size=4)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(features)[None]), dim=1)[0].numpy()
    empty = np.zeros(features.shape[1:], dtype=bool)
    empty[50:55, 60:70] = True
    assert np.isnan(got[:, empty]).all() and np.isfinite(got[:, ~empty]).all()
    np.testing.assert_allclose(got[:, ~empty], expected[:, ~empty], rtol=0, atol=1e-5)


def test_windows_must_leave_a_stride() -> None:
    model = classifier("tempcnn")
    features = field(GRID[:20, :20])
    with pytest.raises(ValueError, match="even"):
        predict_array(model, features, window=33)
    with pytest.raises(ValueError, match="at least 42"):
        predict_array(model, features, window=32, halo=8, overlap=24)


# --- products ---------------------------------------------------------------------------


def test_class_products_of_hand_made_probabilities() -> None:
    probs = np.array(
        [
            [[0.2, 1 / 3, 0.0], [0.114, np.nan, 0.5]],
            [[0.5, 1 / 3, 0.0], [0.886, np.nan, 0.5]],
            [[0.3, 1 / 3, 1.0], [0.0, np.nan, 0.0]],
        ],
        dtype=np.float32,
    )
    label, probability, uncertainty = class_products(probs, target=1)
    assert label.dtype == probability.dtype == uncertainty.dtype == np.uint8
    # argmax + 1 (the first of equals), 0 where there is no prediction
    np.testing.assert_array_equal(label, [[2, 1, 3], [2, 0, 1]])
    # percent of class 1, rounded; 255 nodata
    np.testing.assert_array_equal(probability, [[50, 33, 0], [89, 255, 50]])
    # entropy / log(3) in percent: 0.2,0.5,0.3 -> 93.7; uniform 100; one-hot 0;
    # 0.114,0.886 -> 32.3; 0.5,0.5 -> log 2 / log 3 = 63.1
    h = -(0.2 * math.log(0.2) + 0.5 * math.log(0.5) + 0.3 * math.log(0.3)) / math.log(3)
    assert round(h * 100) == 94
    np.testing.assert_array_equal(uncertainty, [[94, 100, 0], [32, 255, 63]])
    # two classes equally likely: the maximum
    _, _, two = class_products(np.full((2, 1, 1), 0.5, dtype=np.float32), target=0)
    assert two[0, 0] == 100
    with pytest.raises(ValueError):
        class_products(probs, target=3)


def test_a_layer_palette_and_names_survive_the_cog_copy(tmp_path: Path) -> None:
    grid = GRID[:100, :120]
    values = np.tile(np.arange(3, dtype=np.uint8), (100, 40))
    palette = ((0, 0, 0, 0), (10, 200, 30, 255), (200, 20, 10, 255))
    classed = Layer("classes", "Classes", "uint8", 0, "1", "nearest", palette, ("", "a", "b"))
    path = write_cog(tmp_path / "classes.tif", grid, [(grid, values)], classed)
    with rasterio.open(path) as src:
        assert src.colormap(1)[1] == palette[1] and src.colormap(1)[2] == palette[2]
        assert json.loads(src.tags(1)["CATEGORY_NAMES"]) == ["", "a", "b"]
        np.testing.assert_array_equal(src.read(1), values)
    sidecar = tmp_path / "classes.tif.aux.xml"
    assert "<Category>b</Category>" in sidecar.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "classes.tif.aux.xml"]
    # A layer without a palette is written as before: no colour table, no sidecar.
    plain = Layer("plain", "Plain", "uint8", 255, "1")
    path = write_cog(tmp_path / "plain.tif", grid, [(grid, values)], plain)
    with rasterio.open(path) as src, pytest.raises(ValueError):
        src.colormap(1)
    assert not (tmp_path / "plain.tif.aux.xml").exists()
    with pytest.raises(ValueError, match="palette"):
        Layer("x", "x", "float32", math.nan, "1", palette=palette)


# --- rasters ----------------------------------------------------------------------------


def write_features(path: Path, grid: GeoBox) -> np.ndarray:
    """A 6-band float32 GeoTIFF with nodata -9999 and NaN; returns what it means (NaN)."""
    values = field(grid)
    values[:, 40:60, 100:180] = -9999.0  # nodata in every band
    values[1, 200:220, 10:30] = np.nan  # one band missing
    height, width = grid.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=values.shape[0],
        dtype="float32",
        crs=CRS,
        transform=grid.affine,
        nodata=-9999.0,
        tiled=True,
        blockxsize=128,
        blockysize=128,
    ) as dst:
        dst.write(values)
    return np.where(values == -9999.0, np.nan, values)


def test_predict_raster_writes_georeferenced_products_equal_to_one_array(
    tmp_path: Path,
) -> None:
    grid = GRID[:300, :500]
    source = tmp_path / "features.tif"
    features = write_features(source, grid)
    model = classifier("tempcnn-unet")

    def run(out: str, tile_px: int) -> dict[str, Path]:
        return predict_raster(
            model,
            source,
            tmp_path / out,
            classes=CLASSES,
            target="encroached",
            halo=8,
            tile_px=tile_px,
            window=128,
            overlap=16,
        )

    tiled, whole = run("tiled", 128), run("whole", 1024)
    assert set(tiled) == {"invasive_class", "invasive_probability", "invasive_uncertainty"}

    probs = predict_array(model, features, halo=8, window=128, overlap=16, origin=grid_origin(grid))
    expected = class_products(probs, target=1)
    with rasterio.open(source) as src:
        transform, crs, shape = src.transform, src.crs, src.shape
    for name, want in zip(tiled, expected, strict=True):
        for products in (tiled, whole):
            with rasterio.open(products[name]) as out:
                assert out.transform == transform and out.crs == crs and out.shape == shape
                assert out.count == 1 and out.dtypes[0] == "uint8"
                got = out.read(1)
            if name == "invasive_class":
                np.testing.assert_array_equal(got, want)
            else:  # percentages: a probability on a rounding edge may go either way
                assert np.abs(got.astype(int) - want).max() <= 1
                assert (got == 255).sum() == (want == 255).sum() == 20 * 80
    with rasterio.open(tiled["invasive_class"]) as out:
        label = out.read(1)
        assert out.nodata == 0
        assert out.colormap(1)[2] == TARGET_COLOUR  # the target class, value 2
        assert out.colormap(1)[0] == (0, 0, 0, 0)
        assert json.loads(out.tags(1)["CATEGORY_NAMES"]) == ["", *CLASSES]
        assert out.tags()["TARGET"] == "encroached"
    assert (label[40:60, 100:180] == 0).all() and (label[200:220, 10:30] > 0).all()
    assert set(np.unique(label)) <= {0, 1, 2, 3} and (label == 0).sum() == 20 * 80
    with rasterio.open(tiled["invasive_probability"]) as out:
        assert out.nodata == 255 and out.tags()["PRODUCT"] == "invasive_probability"


def test_predict_raster_refuses_a_target_outside_the_classes(tmp_path: Path) -> None:
    source = tmp_path / "features.tif"
    write_features(source, GRID[:40, :40])
    with pytest.raises(ValueError, match="target"):
        predict_raster(
            classifier("tempcnn"), source, tmp_path, classes=CLASSES, target="trees", halo=0
        )
    with pytest.raises(ValueError, match="3 classes, not 2"):
        predict_raster(
            classifier("tempcnn"),
            source,
            tmp_path / "out",
            classes=CLASSES[:2],
            target="grass",
            halo=0,
        )
    assert not list((tmp_path / "out").glob("*.tif"))


def test_the_maps_layers_and_demo_accuracy_come_from_the_card_without_torch() -> None:
    import subprocess
    import sys

    from agrimon.config import SHIPPED_INVASIVE_MODEL
    from agrimon.invasive.features import SEASON_V1
    from agrimon.invasive.mapping import load_for, map_layers
    from agrimon.invasive.products import MapModel

    # What the assembly imports and reads, in a fresh interpreter: no torch, no training stack.
    code = (
        "import sys, agrimon.monitor, agrimon.area.products, agrimon.yieldcast.products; "
        "from agrimon.config import SHIPPED_INVASIVE_MODEL as m; "
        "from agrimon.invasive.products import MapModel; MapModel.read(m).layers; "
        "print([k for k in ('torch', 'torchgeo', 'sklearn') if k in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    loaded = load_for(SHIPPED_INVASIVE_MODEL, SEASON_V1)
    model = MapModel.read(SHIPPED_INVASIVE_MODEL)
    assert (model.path, model.classes, model.target) == (
        loaded.path,
        loaded.classes,
        loaded.target,
    )
    assert model.layers == map_layers(loaded)
    # (other, target) confusion: 35 target pixels found of 45, 5 false alarms.
    accuracy = model.accuracy(np.array([[50, 5], [10, 35]], dtype=np.int64))
    assert accuracy["model"] == str(loaded.path)
    assert accuracy["model_sha256"] == loaded.card["sha256"]
    assert accuracy["overall_accuracy"] == 0.85 and accuracy["pixels"] == 100
    target = accuracy["classes"][loaded.target]
    assert (target["precision"], target["recall"], target["support"]) == (0.875, 0.7778, 45)
