"""Classification metrics from a confusion matrix: pure numpy, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def confusion(
    truth: NDArray[np.integer], predicted: NDArray[np.integer], classes: int
) -> NDArray[np.int64]:
    """Confusion matrix ``(truth, predicted)`` of class indices ``0..classes-1``."""
    idx = np.asarray(truth, dtype=np.int64) * classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(idx, minlength=classes * classes).reshape(classes, classes)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def scores(matrix: NDArray[np.int64], names: Sequence[str]) -> dict[str, Any]:
    """Overall accuracy and per-class precision, recall, F1 and IoU of a confusion matrix.

    Returns:
        ``{"overall_accuracy", "pixels", "classes": {name: {"precision", "recall", "f1",
        "iou", "support"}}}``; a class never predicted has precision 0.
    """
    m = np.asarray(matrix, dtype=np.float64)
    total = m.sum()
    out: dict[str, Any] = {
        "overall_accuracy": round(_ratio(np.trace(m), total), 4),
        "pixels": int(total),
        "classes": {},
    }
    for k, name in enumerate(names):
        tp = m[k, k]
        fp = m[:, k].sum() - tp
        fn = m[k, :].sum() - tp
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        out["classes"][name] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(_ratio(2 * tp, 2 * tp + fp + fn), 4),
            "iou": round(_ratio(tp, tp + fp + fn), 4),
            "support": int(m[k, :].sum()),
        }
    return out


def headline(score: dict[str, Any], target: str | None) -> float:
    """The figure models are chosen by: the target class's F1, else the mean F1."""
    classes = score["classes"]
    if target is not None:
        return float(classes[target]["f1"])
    return float(np.mean([c["f1"] for c in classes.values()]))


def best_threshold_f1(values: NDArray[np.floating], truth: NDArray[np.bool_]) -> float:
    """Best F1 of ``truth`` by one threshold on ``values`` in either direction.

    Every distinct value is tried as a cut (sorting once), so the figure is exact, not a
    grid search; NaN values count as negative predictions.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=bool).ravel()
    positives = int(t.sum())
    if positives == 0:
        return 0.0
    ok = np.isfinite(v)
    best = 0.0
    for sign in (1.0, -1.0):
        order = np.argsort(-sign * v[ok], kind="stable")
        sv, st = (sign * v[ok])[order], t[ok][order]
        tp = np.cumsum(st)
        k = np.arange(1, len(st) + 1)
        last = np.r_[sv[1:] != sv[:-1], True]  # cut only between distinct values
        f1 = 2 * tp[last] / (k[last] + positives)
        best = max(best, float(f1.max()) if f1.size else 0.0)
    return best
