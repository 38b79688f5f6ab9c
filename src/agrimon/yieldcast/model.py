"""The Torch yield model: a small 1D-CNN over the season grid with quantile outputs.

:class:`SeasonCNN` is a plain ``nn.Module``. It reads a unit-year's season as binned by
:func:`agrimon.yieldcast.features.season_series` (24 bins from 30 days before the start of
season to harvest, each indicator standardised, NaN bins as 0 with a mask channel saying
which bins hold data), the unit's static features (soil, location), and which lead the
series was cut at, and gives three quantiles (10/50/90 %) of the yield's departure from
the unit's trend, in units of the training residuals' spread.

One network serves all leads: it is trained on the same unit-years cut at every lead
(60 d, 90 d, end of season), with the lead as an input, so the early-season forecast
borrows from what the full seasons teach. Convolutions see only bins on or before the
lead: later bins are empty by the lead rule of the features, and the mask says so.

Training (:func:`fit`) is full-batch Adam on the pinball loss, a few hundred steps, several
networks from different seeds averaged (the quantiles of the members' mean): small data
(hundreds of unit-years) make one network's luck a large part of its error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from agrimon.yieldcast.conformal import pinball_loss

#: Quantiles the network predicts (the published forecast is the median, the interval
#: the 10 % and 90 % quantiles, calibrated by conformal prediction).
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)


class StridedConv(nn.Module):
    """A 1D convolution over the bins of channels-last input, as window unfolding + matmul.

    The same operator as ``nn.Conv1d`` (zero padding, stride), computed on ``(n, steps,
    channels)`` as one matrix product per layer: on a CPU with these small shapes (a few
    channels, 24 bins, thousands of unit-years) it is about twenty times faster than
    ``nn.Conv1d``, which dominated a training step.

    Args:
        channels: Input channels.
        width: Output channels.
        kernel: Kernel size (odd).
        stride: Stride.
    """

    def __init__(self, channels: int, width: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.linear = nn.Linear(channels * kernel, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, steps, channels)`` → ``(n, ceil(steps / stride), width)``."""
        pad = self.kernel // 2
        padded = nn.functional.pad(x, (0, 0, pad, pad))
        windows = padded.unfold(1, self.kernel, self.stride)  # (n, out, channels, kernel)
        out: torch.Tensor = self.linear(windows.flatten(2))
        return out


class SeasonCNN(nn.Module):
    """1D-CNN over the season bins, plus static features and the lead, to quantiles.

    Args:
        indicators: Indicators per bin (each gives a value and a mask channel).
        static: Static features per unit.
        leads: Number of leads (one-hot input).
        width: Channels of the convolutions.
        quantiles: Number of quantile outputs.
        dropout: Dropout before the head.
    """

    def __init__(
        self,
        indicators: int,
        static: int,
        leads: int,
        *,
        steps: int = 24,
        width: int = 16,
        quantiles: int = len(QUANTILES),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        # Two strided convolutions: 24 bins → 12 → 6, each output a stage of the season
        # (the grid is stretched to the crop calendar, so a position is a growth stage).
        self.conv = nn.Sequential(
            StridedConv(2 * indicators, width, kernel=5, stride=2),
            nn.ReLU(),
            StridedConv(width, width, kernel=3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        flat = width * (((steps + 1) // 2 + 1) // 2)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(flat + static + leads, 2 * width),
            nn.ReLU(),
            nn.Linear(2 * width, quantiles),
        )

    def forward(
        self, series: torch.Tensor, mask: torch.Tensor, static: torch.Tensor, lead: torch.Tensor
    ) -> torch.Tensor:
        """Quantiles ``(n, quantiles)``, sorted so they never cross.

        Args:
            series: ``(n, steps, indicators)`` standardised values, 0 where empty.
            mask: ``(n, steps, indicators)`` 1 where the bin holds data.
            static: ``(n, static)`` standardised static features.
            lead: ``(n, leads)`` one-hot lead.
        """
        h = self.conv(torch.cat([series, mask], dim=2))
        out = self.head(torch.cat([h, static, lead], dim=1))
        return torch.sort(out, dim=1).values


@dataclass(frozen=True)
class FitOptions:
    """How to train :class:`SeasonCNN`.

    Attributes:
        steps: Full-batch optimiser steps.
        learning_rate: Adam's learning rate.
        weight_decay: Adam's weight decay (L2).
        members: Networks from seeds ``seed + 1000·m`` whose quantiles are averaged.
        width: Channels of the convolutions.
        seed: Seed of the first member.
    """

    steps: int = 250
    learning_rate: float = 3e-3
    weight_decay: float = 1e-3
    members: int = 2
    width: int = 16
    seed: int = 0


@dataclass(frozen=True)
class Inputs:
    """Model inputs of unit-years, as numpy arrays (one row per unit-year and lead).

    Attributes:
        series: float32 ``(n, steps, indicators)`` raw bin means, NaN where empty.
        static: float32 ``(n, static)`` raw static features (NaN where unknown).
        lead: int64 ``(n,)`` position of the lead.
    """

    series: NDArray[np.float32]
    static: NDArray[np.float32]
    lead: NDArray[np.int64]


@dataclass(frozen=True)
class Scaling:
    """Standardisation learnt from the training inputs and targets."""

    series_mean: NDArray[np.float32]
    series_std: NDArray[np.float32]
    static_mean: NDArray[np.float32]
    static_std: NDArray[np.float32]
    target_std: float

    def to_dict(self) -> dict[str, object]:
        """Plain lists, for a checkpoint's JSON."""
        return {
            "series_mean": self.series_mean.tolist(),
            "series_std": self.series_std.tolist(),
            "static_mean": self.static_mean.tolist(),
            "static_std": self.static_std.tolist(),
            "target_std": self.target_std,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> Scaling:
        """The inverse of :meth:`to_dict`."""

        def arr(name: str) -> NDArray[np.float32]:
            return np.asarray(raw[name], dtype=np.float32)

        return cls(
            arr("series_mean"),
            arr("series_std"),
            arr("static_mean"),
            arr("static_std"),
            float(raw["target_std"]),  # type: ignore[arg-type]
        )


@dataclass
class Fitted:
    """Trained members and the scaling of their inputs.

    Attributes:
        members: The networks, in eval mode.
        scaling: Input and target standardisation.
        leads: Number of leads the networks take.
    """

    members: list[SeasonCNN]
    scaling: Scaling
    leads: int
    options: FitOptions = field(default_factory=FitOptions)


def _nan_stats(
    values: NDArray[np.float32], axes: tuple[int, ...]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Mean and spread over ``axes`` ignoring NaN (0 and 1 where nothing is known)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # An all-NaN slice is expected.
        mean = np.nanmean(values, axis=axes)
        std = np.nanstd(values, axis=axes)
    mean = np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)
    std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0).astype(np.float32)
    return mean, std


def scaling_of(inputs: Inputs, targets: NDArray[np.float64]) -> Scaling:
    """Standardisation statistics of training inputs and targets."""
    s_mean, s_std = _nan_stats(inputs.series, (0, 1))
    if inputs.static.shape[1]:
        st_mean, st_std = _nan_stats(inputs.static, (0,))
    else:
        st_mean = st_std = np.zeros(0, dtype=np.float32)
    spread = float(np.std(targets))
    return Scaling(s_mean, s_std, st_mean, st_std, spread if spread > 1e-9 else 1.0)


def _tensors(
    inputs: Inputs, scaling: Scaling, leads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    present = np.isfinite(inputs.series)
    series = np.where(present, (inputs.series - scaling.series_mean) / scaling.series_std, 0.0)
    static = np.nan_to_num((inputs.static - scaling.static_mean) / scaling.static_std, nan=0.0)
    lead = np.eye(leads, dtype=np.float32)[inputs.lead]
    return (
        torch.from_numpy(series.astype(np.float32)),
        torch.from_numpy(present.astype(np.float32)),
        torch.from_numpy(static.astype(np.float32)),
        torch.from_numpy(lead),
    )


def fit(
    inputs: Inputs,
    targets: NDArray[np.float64],
    *,
    leads: int,
    options: FitOptions = FitOptions(),
    copies: int = 1,
) -> Fitted:
    """Train the members on training unit-years (targets: trend residuals, t/ha).

    Args:
        inputs: Training inputs: ``copies`` blocks of the same unit-years (e.g. cut at each
            lead), block after block.
        targets: Residual of each row.
        leads: Number of leads (the one-hot width).
        options: Training options.
        copies: Blocks in ``inputs``. Each step trains on one block's row per unit-year,
            drawn at random: every lead is learnt at a third of the cost of all three.

    Returns:
        The trained members.
    """
    n = len(targets) // copies
    scaling = scaling_of(inputs, targets)
    x = _tensors(inputs, scaling, leads)
    y = torch.from_numpy((targets / scaling.target_std).astype(np.float32))
    members = []
    for m in range(options.members):
        seed = options.seed + 1000 * m
        torch.manual_seed(seed)
        draws = np.random.default_rng(seed)
        net = SeasonCNN(
            inputs.series.shape[2],
            inputs.static.shape[1],
            leads,
            steps=inputs.series.shape[1],
            width=options.width,
        )
        optimiser = torch.optim.Adam(
            net.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
        )
        net.train()
        for _ in range(options.steps):
            rows = torch.from_numpy(draws.integers(copies, size=n) * n + np.arange(n))
            optimiser.zero_grad()
            out = net(*(t[rows] for t in x))
            loss: Any = pinball_loss(out, y[rows], QUANTILES)
            loss.backward()
            optimiser.step()
        net.eval()
        members.append(net)
    return Fitted(members, scaling, leads, options)


def predict(fitted: Fitted, inputs: Inputs) -> NDArray[np.float64]:
    """Quantiles ``(n, len(QUANTILES))`` of the residual (t/ha), the members' mean."""
    x = _tensors(inputs, fitted.scaling, fitted.leads)
    with torch.no_grad():
        out = torch.stack([net(*x) for net in fitted.members]).mean(dim=0)
    return out.numpy().astype(np.float64) * fitted.scaling.target_std


def state(fitted: Fitted) -> dict[str, torch.Tensor]:
    """One flat state dict of every member (``m<k>.<name>``), for ``torch.save``."""
    return {
        f"m{k}.{name}": tensor
        for k, net in enumerate(fitted.members)
        for name, tensor in net.state_dict().items()
    }


def from_state(
    tensors: dict[str, torch.Tensor],
    scaling: Scaling,
    *,
    indicators: int,
    static: int,
    leads: int,
    steps: int,
    options: FitOptions,
) -> Fitted:
    """Rebuild :class:`Fitted` from :func:`state`'s dict (loaded with ``weights_only``)."""
    members = []
    for k in range(options.members):
        net = SeasonCNN(indicators, static, leads, steps=steps, width=options.width)
        prefix = f"m{k}."
        own = {n[len(prefix) :]: t for n, t in tensors.items() if n.startswith(prefix)}
        net.load_state_dict(own)
        net.eval()
        members.append(net)
    return Fitted(members, scaling, leads, options)


def quantile_names(quantiles: Sequence[float] = QUANTILES) -> tuple[str, ...]:
    """Column names ``q10, q50, q90`` of the quantiles."""
    return tuple(f"q{round(100 * q)}" for q in quantiles)
