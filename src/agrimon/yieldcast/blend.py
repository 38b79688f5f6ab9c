"""The published forecast: a convex blend of the models, weighted by inner out-of-fold skill.

A trend fitted to 5–10 years of a unit's yields follows part of their noise; the unit's mean
ignores a real trend; a satellite model adds the season's signal and its own noise. Their
errors are far from perfectly correlated, so a weighted mean of their forecasts is often
better than the best of them: on the ES maize data, half trend and half naive average
scores NRMSE 13.3 where the trend alone scores 14.7 and the mean 16.1.

The weights are chosen on the training years only, from each model's out-of-fold forecasts
of them (whole years held out, see :mod:`agrimon.yieldcast.backtest`): every point of the
simplex grid of step :data:`STEP` (weights ``0, 0.1, …, 1`` summing to 1) is scored by the
CY-Bench NRMSE of its blended out-of-fold forecasts, and the lowest wins. The corners of the
grid are the single models, so where the satellite signal carries no skill the blend
falls back to a baseline (or to a single one of them) by the same rule. Ties go to the grid
point found first: the earlier models (the baselines, listed first) get the weight.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import product

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agrimon.yieldcast import metrics

#: Grid step of the blend weights.
STEP = 0.1


def simplex(n: int, step: float = STEP) -> Iterator[tuple[float, ...]]:
    """Every weight vector of ``n`` non-negative multiples of ``step`` summing to 1."""
    parts = round(1.0 / step)
    for head in product(range(parts + 1), repeat=n - 1):
        rest = parts - sum(head)
        if rest >= 0:
            yield tuple(k / parts for k in (*head, rest))


def choose_weights(
    forecasts: Mapping[str, ArrayLike],
    observed: ArrayLike,
    years: ArrayLike,
    *,
    step: float = STEP,
) -> dict[str, float]:
    """Blend weights with the lowest NRMSE of the blended out-of-fold forecasts.

    Args:
        forecasts: Per model, its out-of-fold forecasts of the same unit-years.
        observed: Their observed yields.
        years: Their harvest years (NRMSE is per year, then averaged).
        step: Grid step of the weights.

    Returns:
        ``{model: weight}`` in the order of ``forecasts``, weights summing to 1.
    """
    names = list(forecasts)
    if not names:
        raise ValueError("no model to blend: give at least one model's forecasts")
    matrix = np.column_stack([np.asarray(forecasts[n], dtype=np.float64) for n in names])
    obs = np.asarray(observed, dtype=np.float64)
    yrs = np.asarray(years)
    best: tuple[float, tuple[float, ...]] | None = None
    for weights in simplex(len(names), step):
        score = metrics.nrmse(obs, matrix @ np.asarray(weights), yrs)
        if best is None or score < best[0] - 1e-12:
            best = (score, weights)
    assert best is not None
    return {n: w for n, w in zip(names, best[1], strict=True)}


def blend(forecasts: Mapping[str, ArrayLike], weights: Mapping[str, float]) -> NDArray[np.float64]:
    """The weighted sum of the models' forecasts (models of weight 0 may be missing)."""
    used = [(n, w) for n, w in weights.items() if w > 0]
    total = np.zeros_like(np.asarray(forecasts[used[0][0]], dtype=np.float64))
    for name, weight in used:
        total = total + weight * np.asarray(forecasts[name], dtype=np.float64)
    return total


def describe(weights: Mapping[str, float]) -> str:
    """``"trend 0.5 + naive 0.5"``: the models with weight, largest first."""
    used = sorted(((w, n) for n, w in weights.items() if w > 0), key=lambda t: (-t[0], t[1]))
    return " + ".join(f"{n} {w:.1f}" for w, n in used)
