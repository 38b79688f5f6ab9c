"""Dense-prediction models for the encroachment map: plain ``torch.nn.Module``s, nothing else.

Every model maps a feature image ``(batch, channels, y, x)`` to class logits
``(batch, classes, y, x)``. The channels are ``steps × per_step`` temporal features (the
composites of each period, one period after another) followed by ``static`` features (the
season metrics). A per-pixel temporal encoder in the spirit of TempCNN (Pelletier et al.
2019, *Remote Sensing* 11(5), 523) convolves each pixel's features along the periods; the
``tempcnn-unet`` variant adds a light two-level U-Net over the per-pixel embeddings so
that a pixel sees its neighbourhood (:data:`SPATIAL_HALO` pixels on each side).

A raw dated series (a user's raster, one band per date, gaps where clouds were) carries no
season metrics; for it the model derives them itself (``summary=True``): NaN-aware
quantiles, mean, spread and the size of the changes between consecutive valid
observations (:func:`series_summary`). Gaps then weigh nothing, where the encoder sees
them as the mean; on real Slovenian shrubland this raised the held-out F1 from 0.26 to
0.31 (mean of three seeds).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
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
        summary: Whether the model appends :func:`series_summary` statistics of its
            temporal features to its input (for raw series without season metrics).
        members: Networks of the ensemble (each trained from its own seed); their
            log-probabilities are averaged.
    """

    name: ModelName
    steps: int
    per_step: int
    static: int
    classes: int
    width: int = 16
    hidden: int = 64
    dropout: float = 0.2
    summary: bool = False
    members: int = 1

    @property
    def channels(self) -> int:
        """Input channels the model expects."""
        return self.steps * self.per_step + self.static

    @property
    def derived(self) -> int:
        """Channels the model derives from its input (its series summary)."""
        return len(SUMMARY_STATS) * self.per_step if self.summary else 0

    @property
    def scaled_channels(self) -> int:
        """Channels after the summary: the ones the scaler standardises."""
        return self.channels + self.derived

    @property
    def halo(self) -> int:
        """Context pixels needed on each side of a window."""
        return SPATIAL_HALO if self.name == "tempcnn-unet" else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (a ``weights_only`` checkpoint holds nothing else)."""
        return asdict(self)


#: Statistics of each temporal feature's series, in the order :func:`series_summary` gives.
SUMMARY_STATS = (
    *("p10", "p25", "p50", "p75", "p90"),
    *("mean", "std", "mean_change", "drop", "rise", "falls"),
)
#: A fall counts in ``falls`` when it exceeds this share of the series' p10–p90 range.
_FALL_SHARE = 0.25
_QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)


def series_summary(temporal: Tensor) -> Tensor:
    """NaN-aware statistics of each feature's series.

    Args:
        temporal: ``(n, steps, per_step)``, NaN where an observation is missing.

    Returns:
        ``(n, len(SUMMARY_STATS) * per_step)``: for every statistic, one value per feature.
        Quantiles are linear (as numpy's); ``std`` is the population spread;
        ``mean_change`` is the mean absolute difference between consecutive valid
        observations, ``drop`` and ``rise`` the largest fall and rise between them, and
        ``falls`` the share of those changes that fall by more than a quarter of the
        p10–p90 range. A statistic without the observations it needs is NaN.
    """
    n, steps, _ = temporal.shape
    q = torch.tensor(_QUANTILES, dtype=temporal.dtype)
    quantiles = torch.nanquantile(temporal, q, dim=1)  # (5, n, per_step)
    mean = torch.nanmean(temporal, dim=1)
    std = torch.nanmean((temporal - mean[:, None, :]) ** 2, dim=1).sqrt()
    # Valid observations first, in time order: the differences of neighbours are then
    # those of consecutive valid observations, and NaN past the last one.
    valid = ~torch.isnan(temporal)
    order = torch.arange(steps)[None, :, None] + steps * (~valid).long()
    packed = torch.gather(temporal, 1, order.argsort(dim=1))
    change = packed[:, 1:] - packed[:, :-1]
    has = ~torch.isnan(change)
    any_change = has.any(dim=1)
    nan = torch.tensor(float("nan"), dtype=temporal.dtype)
    fall = torch.where(has, -change, -torch.inf).amax(dim=1)
    rise = torch.where(has, change, -torch.inf).amax(dim=1)
    # Share of the changes that are sharp falls (a mowing, a harvest, a fire), relative to
    # the series' own range, so that the statistic means the same for any band's units.
    cut = _FALL_SHARE * (quantiles[4] - quantiles[0])[:, None, :]
    sharp = has & (change < -cut)
    falls = torch.where(any_change, sharp.sum(dim=1) / has.sum(dim=1).clamp_min(1), nan)
    stats = [
        *quantiles,
        mean,
        std,
        torch.nanmean(change.abs(), dim=1),
        torch.where(any_change, fall, nan),
        torch.where(any_change, rise, nan),
        falls,
    ]
    return torch.stack(stats, dim=1).reshape(n, -1)


class SeriesSummary(nn.Module):
    """Appends :func:`series_summary` statistics to raw features ``(b, c, y, x)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.temporal = config.steps * config.per_step
        self.steps, self.per_step = config.steps, config.per_step

    def forward(self, x: Tensor) -> Tensor:
        """``(b, c, y, x)`` to ``(b, c + derived, y, x)``."""
        pixels = _pixels(x)
        series = pixels[:, : self.temporal].reshape(-1, self.steps, self.per_step)
        derived = _image(series_summary(series), x)
        return torch.cat([x, derived], dim=1)


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
            nn.Linear(config.width * pooled + config.static + config.derived, config.hidden),
            nn.BatchNorm1d(config.hidden),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(n, scaled_channels)`` pixels to ``(n, hidden)`` embeddings."""
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


class Members(nn.Module):
    """An ensemble: the mean of its networks' log-probabilities (a geometric mean)."""

    def __init__(self, networks: list[nn.Module]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def forward(self, x: Tensor) -> Tensor:
        """Mean log-probabilities ``(b, classes, y, x)``: logits to softmax and argmax."""
        total = torch.log_softmax(self.networks[0](x), dim=1)
        for net in self.networks[1:]:
            total = total + torch.log_softmax(net(x), dim=1)
        return total / len(self.networks)


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


def build_classifier(
    config: ModelConfig, mean: Tensor | None = None, std: Tensor | None = None
) -> nn.Sequential:
    """Scaler and model in one module: raw features in, logits out.

    Args:
        config: Architecture.
        mean: Per-channel mean of the scaled channels (``config.scaled_channels``); zeros
            when ``None`` (a checkpoint's state then fills it).
        std: Their standard deviation; ones when ``None``.
    """
    size = config.scaled_channels
    mean = torch.zeros(size) if mean is None else mean
    std = torch.ones(size) if std is None else std
    model = (
        build_model(config)
        if config.members == 1
        else Members([build_model(config) for _ in range(config.members)])
    )
    layers: list[nn.Module] = [FeatureScaler(mean, std), model]
    if config.summary:
        layers.insert(0, SeriesSummary(config))
    return nn.Sequential(*layers)


def member_networks(classifier: nn.Sequential) -> list[nn.Sequential]:
    """Each member of a classifier as a classifier of its own (sharing the scaler)."""
    *prefix, model = list(classifier)
    if isinstance(model, Members):
        return [nn.Sequential(*prefix, net) for net in model.networks]
    return [classifier]


def summarised(config: ModelConfig, x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Raw pixels ``(n, channels)`` with the channels the model derives appended."""
    if not config.summary:
        return x
    t = torch.from_numpy(x)
    series = t[:, : config.steps * config.per_step].reshape(-1, config.steps, config.per_step)
    return torch.cat([t, series_summary(series)], dim=1).numpy()


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
