"""Split-conformal calibration of forecast intervals, and the pinball loss: pure numpy.

Conformalised quantile regression (CQR; Romano, Patterson & Candès 2019, "Conformalized
Quantile Regression", NeurIPS, Algorithm 1): a model gives lower and upper quantile
forecasts ``lo, hi``; on a calibration set held out from its training, the conformity score
of each observation is ``E_i = max(lo_i − y_i, y_i − hi_i)`` (positive outside the
interval, negative inside); ``q̂`` is the ``k = ⌈(n + 1)(1 − α)⌉``-th smallest score (the
``k/n`` empirical quantile); the calibrated interval is ``[lo − q̂, hi + q̂]``. If the
calibration and test unit-years are exchangeable it covers a new observation with
probability at least ``1 − α`` (and at most ``1 − α + 1/(n + 1)`` without ties). A too
narrow input gets ``q̂ > 0`` and widens, a too wide one ``q̂ < 0`` and narrows.

The symmetric variant for a point forecast ``ŷ`` uses ``|y − ŷ|`` as the score and
``[ŷ − q̂, ŷ + q̂]`` as the interval (split conformal, Lei et al. 2018).

For yields, exchangeability is across unit-years of comparable seasons: calibrate on
out-of-year forecasts (a leave-one-year-out backtest), not on training fits.

The pinball (quantile) loss comes in a numpy version (:func:`pinball_loss_numpy`) and a
torch version (:func:`pinball_loss`) for training quantile models; torch is imported inside
the latter only, so this module imports without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agrimon.errors import TrainingError
from agrimon.yieldcast.metrics import finite_values

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Calibration:
    """A conformal correction and what it was computed from.

    Attributes:
        q_hat: The correction added to the upper and subtracted from the lower bound.
        alpha: Miscoverage level; the intervals aim at ``1 − alpha`` coverage.
        n: Number of calibration values.
        kind: ``"quantile"`` (CQR on lo/hi forecasts) or ``"absolute"`` (point forecasts).
    """

    q_hat: float
    alpha: float
    n: int
    kind: Literal["quantile", "absolute"]


def _calibration_values(name: str, values: ArrayLike) -> NDArray[np.float64]:
    return finite_values(name, values, use="to calibrate")


def _same_length(**arrays: NDArray[np.float64]) -> None:
    """Refuse arrays of different lengths, naming them."""
    sizes = {name: arr.size for name, arr in arrays.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name} {size}" for name, size in sizes.items())
        raise TrainingError(f"inputs differ in length ({listed}); pass one value per unit-year")


def _check_alpha(alpha: float) -> None:
    """Refuse a miscoverage level outside (0, 1)."""
    if not 0 < alpha < 1:
        raise TrainingError(f"alpha {alpha} must lie strictly between 0 and 1 (0.2: 80 %)")


def conformal_quantile(scores: ArrayLike, alpha: float) -> float:
    """The ``⌈(n + 1)(1 − α)⌉``-th smallest of ``n`` conformity scores.

    Args:
        scores: Conformity scores of the calibration set.
        alpha: Miscoverage level.

    Returns:
        ``q̂``.

    Raises:
        TrainingError: If ``n`` is too small for the level (``k > n``, which would make the
            interval infinite).
    """
    _check_alpha(alpha)
    s = np.sort(_calibration_values("scores", scores))
    n = s.size
    # The small tolerance keeps e.g. (19 + 1) * 0.95 = 19.000000000000004 at 19.
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    if k > n:
        need = math.ceil((1 - alpha) / alpha - 1e-9)
        raise TrainingError(
            f"{n} calibration values cannot give a {100 * (1 - alpha):g} % interval; "
            f"it needs at least {need}: add calibration unit-years or lower the level"
        )
    return float(s[max(k, 1) - 1])


def quantile_scores(lo: ArrayLike, hi: ArrayLike, observed: ArrayLike) -> NDArray[np.float64]:
    """CQR conformity scores ``max(lo − y, y − hi)``."""
    low, high, y = (
        _calibration_values("lo", lo),
        _calibration_values("hi", hi),
        _calibration_values("observed", observed),
    )
    _same_length(lo=low, hi=high, observed=y)
    return np.maximum(low - y, y - high)


def calibrate_quantiles(
    lo: ArrayLike, hi: ArrayLike, observed: ArrayLike, *, alpha: float
) -> Calibration:
    """CQR correction from calibration quantile forecasts and observations.

    Args:
        lo: Lower quantile forecasts (e.g. the ``alpha/2`` quantile) on the calibration set.
        hi: Upper quantile forecasts (e.g. the ``1 − alpha/2`` quantile).
        observed: Observed yields of the calibration set.
        alpha: Miscoverage level (0.2 for 80 % intervals).

    Returns:
        The :class:`Calibration` to pass to :func:`apply_quantiles`.
    """
    scores = quantile_scores(lo, hi, observed)
    return Calibration(conformal_quantile(scores, alpha), alpha, scores.size, "quantile")


def apply_quantiles(
    lo: ArrayLike, hi: ArrayLike, calibration: Calibration
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Calibrated test intervals ``[lo − q̂, hi + q̂]``.

    A negative ``q̂`` larger than half an interval's width would cross its bounds (an empty
    CQR set); such an interval collapses to its midpoint instead.

    Args:
        lo: Lower quantile forecasts on the test set.
        hi: Upper quantile forecasts on the test set.
        calibration: From :func:`calibrate_quantiles`.

    Returns:
        The calibrated lower and upper bounds.
    """
    if calibration.kind != "quantile":
        raise TrainingError(
            "this calibration is for point forecasts; use apply_absolute, or calibrate_quantiles"
        )
    low, high = _calibration_values("lo", lo), _calibration_values("hi", hi)
    _same_length(lo=low, hi=high)
    new_lo, new_hi = low - calibration.q_hat, high + calibration.q_hat
    crossed = new_lo > new_hi
    middle = (low + high) / 2
    return np.where(crossed, middle, new_lo), np.where(crossed, middle, new_hi)


def calibrate_absolute(predicted: ArrayLike, observed: ArrayLike, *, alpha: float) -> Calibration:
    """Symmetric split-conformal correction from point forecasts (scores ``|y − ŷ|``).

    Args:
        predicted: Point forecasts on the calibration set.
        observed: Observed yields of the calibration set.
        alpha: Miscoverage level (0.2 for 80 % intervals).

    Returns:
        The :class:`Calibration` to pass to :func:`apply_absolute`.
    """
    p, y = _calibration_values("predicted", predicted), _calibration_values("observed", observed)
    _same_length(predicted=p, observed=y)
    return Calibration(conformal_quantile(np.abs(y - p), alpha), alpha, y.size, "absolute")


def apply_absolute(
    predicted: ArrayLike, calibration: Calibration
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Calibrated test intervals ``[ŷ − q̂, ŷ + q̂]`` around point forecasts."""
    if calibration.kind != "absolute":
        raise TrainingError(
            "this calibration is for quantile forecasts; use apply_quantiles, or calibrate_absolute"
        )
    p = _calibration_values("predicted", predicted)
    return p - calibration.q_hat, p + calibration.q_hat


def pinball_loss_numpy(
    predicted: ArrayLike, observed: ArrayLike, quantiles: Sequence[float]
) -> float:
    """Mean pinball loss of quantile forecasts.

    For quantile level ``τ`` and error ``d = y − ŷ_τ`` the loss is ``max(τ d, (τ − 1) d)``;
    the mean runs over the ``n`` values and ``q`` levels.

    Args:
        predicted: Forecasts, shape ``(n, q)``: column ``j`` is the ``quantiles[j]`` level.
        observed: Observations, shape ``(n,)``.
        quantiles: The ``q`` levels in (0, 1).

    Returns:
        The mean loss.
    """
    pred = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(observed, dtype=np.float64).reshape(-1)
    tau = np.asarray(quantiles, dtype=np.float64).reshape(-1)
    _check_quantile_shapes(pred.shape, y.shape[0], tau)
    diff = y[:, None] - pred
    return float(np.mean(np.maximum(tau * diff, (tau - 1) * diff)))


def _check_quantile_shapes(shape: tuple[int, ...], n: int, tau: NDArray[np.float64]) -> None:
    """Refuse mismatched shapes or levels outside (0, 1)."""
    if len(shape) != 2 or shape[0] != n or shape[1] != tau.size:
        raise TrainingError(
            f"quantile forecasts have shape {tuple(shape)}; expected ({n}, {tau.size}): "
            "one row per observation, one column per quantile level"
        )
    if np.any((tau <= 0) | (tau >= 1)):
        raise TrainingError(f"quantile levels {tau.tolist()} must lie strictly in (0, 1)")


def pinball_loss(pred: torch.Tensor, y: torch.Tensor, quantiles: Sequence[float]) -> torch.Tensor:
    """Mean pinball loss in torch, differentiable, for training quantile models.

    Args:
        pred: Forecasts, shape ``(n, q)``: column ``j`` is the ``quantiles[j]`` level.
        y: Observations, shape ``(n,)``.
        quantiles: The ``q`` levels in (0, 1).

    Returns:
        A scalar tensor: the mean over ``n`` and ``q`` of ``max(τ d, (τ − 1) d)``,
        ``d = y − pred``.
    """
    import torch  # kept here so the module imports without torch

    levels = np.asarray(quantiles, dtype=np.float64).reshape(-1)
    _check_quantile_shapes(tuple(pred.shape), int(y.shape[0]), levels)
    tau = torch.as_tensor(levels, dtype=pred.dtype, device=pred.device)
    diff = y.reshape(-1, 1) - pred
    return torch.maximum(tau * diff, (tau - 1) * diff).mean()
