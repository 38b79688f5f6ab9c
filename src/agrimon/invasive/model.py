"""Dense-prediction models for the encroachment map: plain ``torch.nn.Module``s, nothing else.

Every model maps a feature image ``(batch, channels, y, x)`` to class logits
``(batch, classes, y, x)``. The channels are ``steps × per_step`` temporal features (the
composites of each period, one period after another) followed by ``static`` features (the
season metrics). A per-pixel temporal encoder in the spirit of TempCNN (Pelletier et al.
2019, *Remote Sensing* 11(5), 523) convolves each pixel's features along the periods; the
``tempcnn-unet`` variant adds a light two-level U-Net over the per-pixel embeddings so
that a pixel sees its neighbourhood (:data:`SPATIAL_HALO` pixels on each side).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

ModelName = Literal["tempcnn", "tempcnn-unet"]
MODEL_NAMES: tuple[ModelName, ...] = ("tempcnn", "tempcnn-unet")

#: Pixels of context on each side that ``tempcnn-unet`` reads (its receptive field, rounded
#: up to the pooling factor); per-pixel models need none.
SPATIAL_HALO = 8


@dataclass(frozen=True)
class ModelConfig:
    """What it takes to rebuild a model (stored in every checkpoint).

    Attributes:
        name: Architecture.
        steps: Temporal steps (periods or dates).
        per_step: Features per step.
        static: Features without a time axis, after the temporal ones.
        classes: Output classes.
        width: Channels of the temporal convolutions.
        hidden: Size of the per-pixel embedding.
        dropout: Dropout before the classifier (training only).
    """

    name: ModelName
    steps: int
    per_step: int
    static: int
    classes: int
    width: int = 16
    hidden: int = 64
    dropout: float = 0.2

    @property
    def channels(self) -> int:
        """Input channels the model expects."""
        return self.steps * self.per_step + self.static

    @property
    def halo(self) -> int:
        """Context pixels needed on each side of a window."""
        return SPATIAL_HALO if self.name == "tempcnn-unet" else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (a ``weights_only`` checkpoint holds nothing else)."""
        return asdict(self)


#: Longest series the second convolution runs over; longer ones are average-pooled first.
MAX_POOLED_STEPS = 16


class TemporalEncoder(nn.Module):
    """Per-pixel embedding: two convolutions along the steps, then a dense layer.

    The convolutions are ``Conv2d`` with ``(1, k)`` kernels over ``(n, features, 1, steps)``
    (measured about twice as fast on CPU as ``Conv1d``); series longer than
    :data:`MAX_POOLED_STEPS` are average-pooled between the two, which keeps the cost of a
    68-date series near that of a 16-date one.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        kernel = 3 if config.steps >= 3 else 1
        pool = math.ceil(config.steps / MAX_POOLED_STEPS)
        pooled = math.ceil(config.steps / pool)
        self.conv = nn.Sequential(
            nn.Conv2d(config.per_step, config.width, (1, kernel), padding=(0, kernel // 2)),
            nn.BatchNorm2d(config.width),
            nn.ReLU(),
            nn.AvgPool2d((1, pool), ceil_mode=True) if pool > 1 else nn.Identity(),
            nn.Conv2d(config.width, config.width, (1, kernel), padding=(0, kernel // 2)),
            nn.BatchNorm2d(config.width),
            nn.ReLU(),
        )
        self.dense = nn.Sequential(
            nn.Linear(config.width * pooled + config.static, config.hidden),
            nn.BatchNorm1d(config.hidden),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(n, channels)`` pixels to ``(n, hidden)`` embeddings."""
        c = self.config
        temporal = x[:, : c.steps * c.per_step].reshape(-1, c.steps, c.per_step)
        encoded = self.conv(temporal.transpose(1, 2)[:, :, None, :]).flatten(1)
        static = x[:, c.steps * c.per_step :]
        return self.dense(torch.cat([encoded, static], dim=1))  # type: ignore[no-any-return]


def _pixels(x: Tensor) -> Tensor:
    """``(b, c, y, x)`` to ``(b·y·x, c)``."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _image(p: Tensor, like: Tensor) -> Tensor:
    """``(b·y·x, c)`` back to ``(b, c, y, x)`` with the batch and size of ``like``."""
    b, _, h, w = like.shape
    return p.reshape(b, h, w, -1).permute(0, 3, 1, 2)


class TempCNN(nn.Module):
    """Per-pixel classifier: temporal encoder and a linear layer, applied to every pixel."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = TemporalEncoder(config)
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.hidden, config.classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(b, classes, y, x)`` of features ``(b, channels, y, x)``."""
        return _image(self.head(self.encoder(_pixels(x))), x)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class TempCNNUNet(nn.Module):
    """Temporal encoder per pixel, then a light two-level U-Net over the embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = TemporalEncoder(config)
        h = config.hidden
        self.down = _block(h, h)
        self.bottom = _block(h, h)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = _block(2 * h, h)
        self.head = nn.Sequential(nn.Dropout2d(config.dropout), nn.Conv2d(h, config.classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(b, classes, y, x)``; ``y`` and ``x`` must be even."""
        e = _image(self.encoder(_pixels(x)), x)
        skip = self.down(e)
        low = self.bottom(nn.functional.max_pool2d(skip, 2))
        return self.head(self.fuse(torch.cat([skip, self.up(low)], dim=1)))  # type: ignore[no-any-return]


def build_model(config: ModelConfig) -> nn.Module:
    """The architecture a config names, with fresh weights."""
    if config.name == "tempcnn":
        return TempCNN(config)
    if config.name == "tempcnn-unet":
        return TempCNNUNet(config)
    raise ValueError(f"unknown model {config.name!r}: choose from {', '.join(MODEL_NAMES)}")


class FeatureScaler(nn.Module):
    """Standardises raw features with the training set's statistics; missing values become 0.

    The statistics are buffers, so a checkpoint carries them and inference needs nothing
    but the raw features the model card names.
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).float().clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        """``(b, c, y, x)`` raw features (NaN where missing) to standardised ones."""
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        z = (x - mean) / std
        return torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).clamp(-10.0, 10.0)


def build_classifier(config: ModelConfig, mean: Tensor, std: Tensor) -> nn.Sequential:
    """Scaler and model in one module: raw features in, logits out."""
    return nn.Sequential(FeatureScaler(mean, std), build_model(config))


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous count.

    Training and tile inference default to one thread: their batches are small, and on a
    laptop whose cores are busy OpenMP's waiting threads made a training step 20× slower
    with two threads than with one (measured: 1.6 s against 0.08 s per 2048-pixel step
    with both cores loaded).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
