"""Seamless, memory-bounded inference of the encroachment model: windows, halo, blending.

A model maps raw features ``(b, channels, y, x)`` to logits (:mod:`agrimon.invasive.model`).
A feature image of any size is cut into overlapping windows of at most ``window`` pixels
that are run through the model in batches. Of each window only its *core* is used: the window less
``halo`` pixels on every side, where the model lacks context (its convolutions pad with
zeros there). Neighbouring cores overlap by ``overlap`` pixels and are blended with smooth
weights (:func:`blend_weights`): a pixel's probabilities are ``Σ w·p / Σ w`` over the cores
that hold it.

What makes tiles seamless is the halo, not the blending: a core pixel sees the whole
neighbourhood the model reads, so its prediction does not depend on where the window lies,
provided windows start on *even* pixels of the global grid (the CRS origin): the U-Net's 2 × 2
pooling then pairs the same pixels in every window, every tile and every run. A tile is
predicted from the features of the tile grown by the halo (:func:`predict_tile`); its
pixels then equal those of one prediction over a larger area to float rounding (about 1e-6),
wherever the tile borders fall. Blending smooths what residue a model leaves (one whose
true receptive field exceeds its declared halo).

Pixels outside a feature image read as missing (NaN), which the model's scaler fills with
zeros; pixels whose features are all missing get NaN probabilities and nodata products.

:func:`predict_raster` maps a multi-band GeoTIFF of features, tile by tile, to three COGs:
class, probability of the target class and uncertainty. Memory depends on the tile size
(``tile_px``) and the window, not on the raster size.

Speed on a CPU: the model runs as :func:`inference_model`'s copy (batch norms folded, the
temporal convolutions as dense products), windows are sized to waste few pixels, and on
glibc the first prediction raises malloc's thresholds for the process so that each layer's
large activations reuse freed memory instead of page-faulting fresh maps (see
:func:`agrimon.malloc.keep_freed_memory`); the heap is trimmed after each tile.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.io
import torch
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rasterio.windows import Window
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from agrimon.invasive.model import FeatureScaler, TemporalEncoder
from agrimon.invasive.products import (
    CLASS_NODATA,
    INVASIVE_PROBABILITY,
    INVASIVE_UNCERTAINTY,
    PERCENT_NODATA,
    class_layer,
)
from agrimon.malloc import keep_freed_memory, release_freed_memory
from agrimon.products.cog import CogWriter, window_of
from agrimon.products.folder import GDAL_CACHE_MB

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]


#: Default largest window side, core overlap and windows per forward pass. On a CPU the
#: pixel rate of a forward pass is about the same from 4 windows of 128 px to one of 512 px,
#: so one large window is the batch: fewer windows overlap less. A 1024 px tile takes 3 × 3
#: windows of 368 px (16 % more pixels than the tile; 128 px windows would compute 77 %).
WINDOW, OVERLAP, BATCH_SIZE = 384, 16, 1


# --- windows and blending ------------------------------------------------------------


def _ramp(size: int, overlap: int) -> NDArray[np.float64]:
    """1-D weights: raised cosine over ``overlap`` pixels at each end, 1 between."""
    ramp = np.ones(size)
    n = min(overlap, size // 2)
    if n > 0:
        rising = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
        ramp[:n] = rising
        ramp[size - n :] = rising[::-1]
    return ramp


def blend_weights(size: int, overlap: int) -> F32:
    """Blending weights of one square window core.

    A raised cosine ``sin²(π/2 · (i + ½) / overlap)`` rises over the ``overlap`` pixels at
    each border to 1 inside. Two cores that overlap by exactly ``overlap`` pixels have
    weights summing to 1 there; the weights never reach 0, so a pixel held by one core only
    (at an image edge) keeps its prediction.

    Args:
        size: Side of the core in pixels.
        overlap: Width of the ramp in pixels, at most ``size // 2``.

    Returns:
        ``(size, size)`` float32 weights in ``(0, 1]``, symmetric under flips and transposition.

    Raises:
        ValueError: If ``size < 1``, ``overlap < 0`` or ``overlap > size // 2``.
    """
    if size < 1 or overlap < 0 or overlap > size // 2:
        raise ValueError(f"need size >= 1 and 0 <= overlap <= size // 2, got {size}, {overlap}")
    ramp = _ramp(size, overlap)
    return np.outer(ramp, ramp).astype(np.float32)


def _starts(start: int, stop: int, size: int, halo: int, overlap: int, origin: int) -> list[int]:
    """Window starts along one axis whose cores cover ``[start, stop)``.

    A window ``[s, s + size)`` has the core ``[s + halo, s + size - halo)``; cores step by
    ``size - 2·halo - overlap`` rounded down to even, the last one ends at ``stop`` (or one
    pixel past), and every ``s + origin`` is even.
    """
    core = size - 2 * halo
    stride = max(2, (core - overlap) // 2 * 2)
    first = start - halo
    first -= (first + origin) % 2
    last = stop + halo - size
    last += (last + origin) % 2
    starts = [first]
    while starts[-1] + size - halo < stop:
        starts.append(min(starts[-1] + stride, last))
    return starts


#: Cost of one window in pixels of its side, beyond the pixels themselves (per-call work).
_WINDOW_COST_PX = 32


def _layout(
    start: int, stop: int, window: int, halo: int, overlap: int, origin: int
) -> tuple[int, list[int]]:
    """Window side (even, at most ``window``) and starts along one axis.

    Of the sides that cover ``[start, stop)``, the one with the fewest pixels computed: a
    region just over one window gets two balanced windows, not one whole and a sliver.
    """
    best: tuple[int, int, list[int]] | None = None
    for size in range(window, 2 * halo + overlap + 1, -2):
        starts = _starts(start, stop, size, halo, overlap, origin)
        cost = len(starts) * (size + _WINDOW_COST_PX)
        if best is None or cost < best[0]:
            best = (cost, size, starts)
    assert best is not None  # _check_windows leaves at least one side
    return best[1], best[2]


#: Pixels per slice of the lowered temporal encoder.
_ENCODE_PIXELS = 16384


class _DenseTemporalEncoder(nn.Module):
    """A :class:`TemporalEncoder` whose temporal convolutions are matrix products.

    A convolution along a fixed number of steps is a linear map of the pixel's temporal
    features: ``conv(v) = v @ M + b`` with ``M`` and ``b`` read off the convolution of unit
    vectors and of zero. One dense product over all pixels of a window is several times
    faster on a CPU than a 1-D convolution over a "batch" of every pixel of the window.
    """

    def __init__(self, encoder: TemporalEncoder) -> None:
        super().__init__()
        c = encoder.config
        self.temporal = c.steps * c.per_step
        self.dense = encoder.dense
        layers: list[nn.Module] = []
        width, size = c.per_step, self.temporal
        with torch.no_grad():
            # Unit vectors in the order of the raw features (step after step), laid out as
            # the encoder lays them out for its first convolution.
            unit = torch.eye(size).reshape(size, c.steps, c.per_step).transpose(1, 2)
            for layer in encoder.conv:
                if isinstance(layer, nn.Conv1d):
                    zero = layer(torch.zeros_like(unit[:1]))
                    matrix = (layer(unit) - zero).flatten(1)
                    linear = nn.Linear(matrix.shape[0], matrix.shape[1])
                    linear.weight.copy_(matrix.T)
                    linear.bias.copy_(zero.flatten())
                    layers.append(linear)
                    width = layer.out_channels
                    unit = torch.eye(width * c.steps).reshape(-1, width, c.steps)
                elif isinstance(layer, nn.ReLU | nn.Identity):
                    layers.append(layer)
                else:
                    raise TypeError(f"cannot lower {type(layer).__name__}")
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``(n, channels)`` pixels to ``(n, hidden)`` embeddings, a slice of pixels at a time.

        The products' intermediates are three times the size of the features; slices of
        :data:`_ENCODE_PIXELS` keep them a few MiB (and in cache) whatever the window.
        """
        out: Tensor | None = None
        for start in range(0, x.shape[0], _ENCODE_PIXELS):
            part = x[start : start + _ENCODE_PIXELS]
            encoded = self.conv(part[:, : self.temporal])
            done = self.dense(torch.cat([encoded, part[:, self.temporal :]], dim=1))
            if out is None:
                if part.shape[0] == x.shape[0]:
                    return done  # type: ignore[no-any-return]
                out = done.new_empty((x.shape[0], done.shape[1]))
            out[start : start + part.shape[0]] = done
        assert out is not None, "no pixels"
        return out


class _FastScaler(nn.Module):
    """:class:`FeatureScaler` with one new tensor instead of four (the same values)."""

    mean: Tensor
    std: Tensor

    def __init__(self, scaler: FeatureScaler) -> None:
        super().__init__()
        buffers = dict(scaler.named_buffers())
        self.register_buffer("mean", buffers["mean"])
        self.register_buffer("std", buffers["std"])

    def forward(self, x: Tensor) -> Tensor:
        """Raw features to standardised ones, missing values 0."""
        z = torch.sub(x, self.mean)
        z.div_(self.std)
        z.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        return z.clamp_(-10.0, 10.0)


def _fold_batchnorms(model: nn.Module) -> None:
    """Fold each batch norm into the layer before it, in place; make the ReLU after in-place.

    Folds ``Conv1d/2d → BatchNorm`` and ``Linear → BatchNorm1d`` pairs that follow each other
    in an ``nn.Sequential`` (the same function, one pass less over the activations); a ReLU
    right after such a pair acts on a fresh tensor, so it may overwrite it.
    """
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            layer, norm = module[i], module[i + 1]
            if (
                not isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d)
                or not norm.track_running_stats
            ):
                continue
            if isinstance(layer, nn.Conv1d | nn.Conv2d):
                module[i] = fuse_conv_bn_eval(layer, norm)
            elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                module[i] = fuse_linear_bn_eval(layer, norm)
            else:
                continue
            module[i + 1] = nn.Identity()
            relu = module[i + 2] if i + 2 < len(module) else None
            if isinstance(relu, nn.ReLU):
                relu.inplace = True


def _lower_encoders(model: nn.Module) -> None:
    """Lower temporal encoders to dense products and scalers to one-tensor ones, in place.

    Every :class:`TemporalEncoder` becomes a :class:`_DenseTemporalEncoder` and every
    :class:`FeatureScaler` a :class:`_FastScaler`.

    An encoder that cannot be lowered, or whose lowered form does not reproduce it on a
    random probe (to 1e-4), is kept as it is.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FeatureScaler):
                setattr(parent, name, _FastScaler(child))
            if not isinstance(child, TemporalEncoder):
                continue
            try:
                dense = _DenseTemporalEncoder(child)
            except TypeError:
                continue
            probe = torch.randn(
                64, child.config.scaled_channels, generator=torch.Generator().manual_seed(0)
            )
            with torch.no_grad():
                if torch.allclose(dense(probe), child(probe), atol=1e-4, rtol=1e-4):
                    setattr(parent, name, dense)


_inference_copies: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def inference_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for fast CPU inference, computing the same function (to ~1e-6).

    The copy is in evaluation mode, its batch norms are folded into the layers before them,
    the ReLUs after those act in place, the temporal encoders' convolutions are dense matrix
    products over slices of pixels and the scaler makes one new tensor, not four. ``model``
    itself is left as it was. A model that is already such a copy is returned as it is.
    """
    if model in _inference_copies:
        return model
    fast = copy.deepcopy(model).eval()
    _fold_batchnorms(fast)
    _lower_encoders(fast)
    _inference_copies.add(fast)
    return fast


def _all_missing(features: F32) -> NDArray[np.bool_]:
    """Pixels whose features are all NaN (band by band: no full-size boolean cube)."""
    missing: NDArray[np.bool_] = np.isnan(features[0])
    for band in features[1:]:
        missing &= np.isnan(band)
    return missing


def _check_windows(window: int, overlap: int, batch_size: int, halo: int) -> None:
    if window < 2 or window % 2:
        raise ValueError(f"window must be even and at least 2 pixels, got {window}")
    if halo < 0 or overlap < 0 or batch_size < 1:
        raise ValueError("halo and overlap must be >= 0 and batch_size >= 1")
    if window - 2 * halo - overlap < 2:
        raise ValueError(
            f"a window of {window} px leaves no stride with halo {halo} and overlap {overlap}: "
            f"use a window of at least {2 * halo + overlap + 2} px"
        )


def _predict(
    model: nn.Module,
    features: F32,
    region: tuple[int, int, int, int],
    *,
    window: int,
    overlap: int,
    batch_size: int,
    halo: int,
    origin: tuple[int, int],
) -> F32:
    """Blended probabilities of ``features[:, y0:y1, x0:x1]`` for ``region = (y0, y1, x0, x1)``.

    Windows may reach beyond ``features``; what lies outside reads as NaN.
    """
    _check_windows(window, overlap, batch_size, halo)
    channels, height, width = features.shape
    y0, y1, x0, x1 = region
    wy, ys = _layout(y0, y1, window, halo, overlap, origin[0])
    wx, xs = _layout(x0, x1, window, halo, overlap, origin[1])
    # Float64 weights and sums: blending equal predictions gives them back exactly.
    weights = np.outer(_ramp(wy - 2 * halo, overlap), _ramp(wx - 2 * halo, overlap))
    weights_t = torch.from_numpy(weights)
    total: NDArray[np.float64] | None = None
    wsum = np.zeros((y1 - y0, x1 - x0))
    net = inference_model(model)
    keep_freed_memory()
    corners = [(sy, sx) for sy in ys for sx in xs]
    with torch.inference_mode():
        for first in range(0, len(corners), batch_size):
            batch = corners[first : first + batch_size]
            # Channels last (what the convolutions and the per-pixel layers like best).
            chunk = np.full((len(batch), wy, wx, channels), np.nan, dtype=np.float32)
            for b, (sy, sx) in enumerate(batch):
                fy0, fy1 = max(sy, 0), min(sy + wy, height)
                fx0, fx1 = max(sx, 0), min(sx + wx, width)
                if fy0 < fy1 and fx0 < fx1:
                    inside = features[:, fy0:fy1, fx0:fx1].transpose(1, 2, 0)
                    chunk[b, fy0 - sy : fy1 - sy, fx0 - sx : fx1 - sx] = inside
            x = torch.from_numpy(chunk).permute(0, 3, 1, 2)
            probs = torch.softmax(net(x), dim=1)[:, :, halo : wy - halo, halo : wx - halo]
            weighted = (probs.double() * weights_t).numpy()
            if total is None:
                total = np.zeros((probs.shape[1], y1 - y0, x1 - x0))
            for b, (sy, sx) in enumerate(batch):
                # The core in region coordinates, clipped to the region.
                cy0, cx0 = sy + halo - y0, sx + halo - x0
                ry0, ry1 = max(cy0, 0), min(cy0 + wy - 2 * halo, y1 - y0)
                rx0, rx1 = max(cx0, 0), min(cx0 + wx - 2 * halo, x1 - x0)
                part = (slice(ry0 - cy0, ry1 - cy0), slice(rx0 - cx0, rx1 - cx0))
                total[:, ry0:ry1, rx0:rx1] += weighted[b][:, part[0], part[1]]
                wsum[ry0:ry1, rx0:rx1] += weights[part]
    assert total is not None  # at least one window
    out = (total / wsum).astype(np.float32)
    out[:, _all_missing(features[:, y0:y1, x0:x1])] = np.nan
    del total, wsum, weighted, probs, chunk, x
    release_freed_memory()
    return out


def predict_array(
    model: nn.Module,
    features: F32,
    *,
    window: int = WINDOW,
    overlap: int = OVERLAP,
    batch_size: int = BATCH_SIZE,
    halo: int = 0,
    origin: tuple[int, int] = (0, 0),
) -> F32:
    """Class probabilities of a feature image, from blended sliding windows.

    The model runs under :func:`torch.inference_mode` as :func:`inference_model`'s copy
    (evaluation mode, batch norms folded; ``model`` itself is left as it was).
    Windows overlap by ``overlap + 2·halo`` pixels; their cores (the window less ``halo`` on
    each side) overlap by ``overlap`` and are blended with :func:`blend_weights`; the last
    window is flush with the image edge. Beyond the image, features read as NaN; an image
    smaller than a window gets one smaller (even-sized) window.

    Args:
        model: Raw features ``(b, channels, y, x)`` to logits ``(b, classes, y, x)``.
        features: ``(channels, height, width)`` float32, NaN where missing.
        window: Largest window side in pixels (even). Along each axis the side that covers
            the image with the fewest pixels computed is used, at most this.
        overlap: Overlap of neighbouring window cores, the blending band, in pixels.
        batch_size: Windows per forward pass.
        halo: Context pixels the model needs on each side (``ModelConfig.halo``).
        origin: Global pixel index ``(row, col)`` of ``features[:, 0, 0]``: windows start on
            even global pixels, so a pooling model pairs the same pixels in every call.

    Returns:
        ``(classes, height, width)`` float32 softmax probabilities; NaN where every feature
        of a pixel is NaN.

    Raises:
        ValueError: On a window that is odd or leaves no stride after halo and overlap.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (channels, y, x), got shape {features.shape}")
    features = np.asarray(features, dtype=np.float32)
    _, height, width = features.shape
    return _predict(
        model,
        features,
        (0, height, 0, width),
        window=window,
        overlap=overlap,
        batch_size=batch_size,
        halo=halo,
        origin=origin,
    )


def grid_origin(grid: GeoBox) -> tuple[int, int]:
    """Global pixel index ``(row, col)`` of ``grid``'s top-left pixel (from the CRS origin)."""
    a = grid.affine
    return round(a.f / a.e), round(a.c / a.a)


def predict_tile(
    model: nn.Module,
    read: Callable[[GeoBox], F32],
    tile: GeoBox,
    *,
    halo: int,
    window: int = WINDOW,
    overlap: int = OVERLAP,
    batch_size: int = BATCH_SIZE,
) -> F32:
    """Class probabilities of one tile, independent of where the tile's borders fall.

    Reads the features of the tile grown by ``halo`` pixels on every side, so the windows
    at the tile's border see the neighbourhood the model needs, and predicts the tile's
    pixels only, with windows on even pixels of the global grid (:func:`grid_origin`). Two
    adjacent tiles then agree with one prediction over both to float rounding.

    Args:
        model: Raw features to logits (see :func:`predict_array`).
        read: Features ``(channels, y, x)`` of any grid on the tile's pixel grid, NaN where
            missing or outside the data.
        tile: Pixel grid to predict.
        halo: Context pixels the model needs on each side (``ModelConfig.halo``).
        window: Largest window side in pixels (even).
        overlap: Overlap of neighbouring window cores, in pixels.
        batch_size: Windows per forward pass.

    Returns:
        ``(classes, y, x)`` float32 probabilities on ``tile``'s grid.
    """
    block = tile.pad(halo) if halo else tile
    features = np.asarray(read(block), dtype=np.float32)
    if features.ndim != 3 or features.shape[1:] != block.shape:
        raise ValueError(
            f"read() returned shape {features.shape}, expected (channels, {block.shape[0]}, "
            f"{block.shape[1]})"
        )
    height, width = tile.shape
    return _predict(
        model,
        features,
        (halo, halo + height, halo, halo + width),
        window=window,
        overlap=overlap,
        batch_size=batch_size,
        halo=halo,
        origin=grid_origin(block),
    )


# --- products ------------------------------------------------------------------------


def class_products(probs: F32, target: int) -> tuple[U8, U8, U8]:
    """Class, target probability and uncertainty rasters of class probabilities.

    Args:
        probs: ``(classes, y, x)`` probabilities, NaN where there is no prediction.
        target: Index (0-based) of the class whose probability is mapped.

    Returns:
        ``(class, probability, uncertainty)``, each ``(y, x)`` uint8: the most probable
        class as its 1-based index (0 where no prediction); the target class's probability
        in percent, rounded (255 where none); the entropy of the probabilities in percent
        of its maximum ``log(classes)``, rounded (0 for certainty, 100 for all classes
        equally likely; 255 where none).

    Raises:
        ValueError: If ``target`` is not a class index or there are over 254 classes.
    """
    classes = probs.shape[0]
    if not 0 <= target < classes:
        raise ValueError(f"target {target} is not one of {classes} classes")
    if classes > 254:
        raise ValueError(f"{classes} classes do not fit a uint8 class raster")
    valid = np.isfinite(probs).all(axis=0)
    p = np.where(valid, probs, 0.0).astype(np.float64)
    label = np.where(valid, p.argmax(axis=0) + 1, CLASS_NODATA).astype(np.uint8)
    percent = np.clip(np.rint(p[target] * 100.0), 0, 100)
    probability = np.where(valid, percent, PERCENT_NODATA).astype(np.uint8)
    if classes > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        entropy = -terms.sum(axis=0) / math.log(classes)
    else:
        entropy = np.zeros(valid.shape)
    uncertain = np.clip(np.rint(entropy * 100.0), 0, 100)
    uncertainty = np.where(valid, uncertain, PERCENT_NODATA).astype(np.uint8)
    return label, probability, uncertainty


def _reader(src: rasterio.io.DatasetReader, grid: GeoBox) -> Callable[[GeoBox], F32]:
    """Features of any grid on ``src``'s pixel grid: float32, nodata and outside as NaN."""
    nodata = src.nodatavals

    def read(part: GeoBox) -> F32:
        want = window_of(grid, part)
        out = np.full((src.count, part.shape[0], part.shape[1]), np.nan, dtype=np.float32)
        r0, r1 = max(want.row_off, 0), min(want.row_off + want.height, src.height)
        c0, c1 = max(want.col_off, 0), min(want.col_off + want.width, src.width)
        if r0 >= r1 or c0 >= c1:
            return out
        window = Window(c0, r0, c1 - c0, r1 - r0)
        inner = out[:, r0 - want.row_off : r1 - want.row_off, c0 - want.col_off : c1 - want.col_off]
        for band, value in enumerate(nodata):  # band by band: one band's copy at a time
            values = src.read(band + 1, window=window)
            inner[band] = values
            if value is not None and not math.isnan(value):
                inner[band][values == value] = np.nan
        return out

    return read


def predict_raster(
    model: nn.Module,
    features_path: Path,
    out_dir: Path,
    *,
    classes: Sequence[str],
    target: str,
    halo: int,
    tile_px: int = 1024,
    window: int = WINDOW,
    overlap: int = OVERLAP,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Path]:
    """Class, probability and uncertainty COGs of a feature raster, tile by tile.

    The raster (any CRS; its nodata becomes NaN) is read one tile and its halo at a time
    (NaN beyond its edges), each tile predicted with :func:`predict_tile` and written into
    the three COGs, so memory depends on ``tile_px``, not on the raster. The outputs have
    the raster's grid: ``invasive_class.tif`` (1-based class index, 0 nodata, with a colour
    table and the class names), ``invasive_probability.tif`` (percent of ``target``, 255
    nodata) and ``invasive_uncertainty.tif`` (normalised entropy in percent, 255 nodata).

    Args:
        model: Raw features to logits (see :func:`predict_array`).
        features_path: Multi-band GeoTIFF, one band per model input channel.
        out_dir: Folder for the COGs (created if missing).
        classes: Names of the model's classes, in the order of its outputs.
        target: The class whose probability is mapped (one of ``classes``).
        halo: Context pixels the model needs on each side (``ModelConfig.halo``).
        tile_px: Side of the tiles read and predicted at once.
        window: Largest window side in pixels (even).
        overlap: Overlap of neighbouring window cores, in pixels.
        batch_size: Windows per forward pass.

    Returns:
        Product name (layer name) to COG path.

    Raises:
        ValueError: If ``target`` is not one of ``classes`` or the model's class count
            differs from ``len(classes)``.
    """
    if target not in classes:
        raise ValueError(f"target {target!r} is not one of the classes {list(classes)}")
    if tile_px < 1:
        raise ValueError(f"tile_px must be positive, got {tile_px}")
    index = list(classes).index(target)
    layers = (class_layer(classes, target), INVASIVE_PROBABILITY, INVASIVE_UNCERTAINTY)
    tags = {"CLASSES": ",".join(classes), "TARGET": target}
    out_dir.mkdir(parents=True, exist_ok=True)
    net = inference_model(model)  # once, not once a tile
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(features_path) as src:
        grid = GeoBox((src.height, src.width), src.transform, src.crs)
        read = _reader(src, grid)
        writers: list[CogWriter] = []
        try:
            for layer in layers:
                writers.append(CogWriter(out_dir / f"{layer.name}.tif", grid, layer, tags=tags))
            for row in range(0, src.height, tile_px):
                for col in range(0, src.width, tile_px):
                    # GeoBox slices do not stop at the grid's edge.
                    rows = slice(row, min(row + tile_px, src.height))
                    tile = grid[rows, col : min(col + tile_px, src.width)]
                    probs = predict_tile(
                        net,
                        read,
                        tile,
                        halo=halo,
                        window=window,
                        overlap=overlap,
                        batch_size=batch_size,
                    )
                    if probs.shape[0] != len(classes):
                        raise ValueError(
                            f"the model has {probs.shape[0]} classes, not {len(classes)} "
                            f"({', '.join(classes)})"
                        )
                    for writer, values in zip(writers, class_products(probs, index), strict=True):
                        writer.write(tile, values)
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        return {layer.name: writer.close() for layer, writer in zip(layers, writers, strict=True)}
