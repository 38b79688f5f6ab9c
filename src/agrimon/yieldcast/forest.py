"""A fitted random forest as plain tensors, so a checkpoint loads with ``weights_only=True``.

scikit-learn models are saved with pickle, which runs code on load. A regression forest is
only arrays (per tree: children, split feature, threshold, leaf value), so agrimon stores
those arrays in the checkpoint's tensor dict and predicts from them with numpy: the same
numbers as ``RandomForestRegressor.predict`` (the mean of the trees' leaf values; a sample
goes left when its feature is ``<=`` the threshold, as scikit-learn does in float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestRegressor

_FIELDS = ("left", "right", "feature", "threshold", "value")


@dataclass(frozen=True, eq=False)
class ForestArrays:
    """The trees of a regression forest, concatenated (node ids offset per tree).

    Attributes:
        left: int64 child of each node when its test holds (-1 at a leaf).
        right: int64 child otherwise (-1 at a leaf).
        feature: int64 split feature (-2 at a leaf).
        threshold: float64 split threshold.
        value: float64 node value (the leaf's mean target).
        roots: int64 first node of each tree.
    """

    left: NDArray[np.int64]
    right: NDArray[np.int64]
    feature: NDArray[np.int64]
    threshold: NDArray[np.float64]
    value: NDArray[np.float64]
    roots: NDArray[np.int64]

    @classmethod
    def of(cls, forest: RandomForestRegressor) -> ForestArrays:
        """The arrays of a fitted single-output forest."""
        parts: dict[str, list[NDArray[np.float64] | NDArray[np.int64]]] = {f: [] for f in _FIELDS}
        roots, offset = [], 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            leaf = tree.children_left < 0
            roots.append(offset)
            parts["left"].append(np.where(leaf, -1, tree.children_left + offset))
            parts["right"].append(np.where(leaf, -1, tree.children_right + offset))
            parts["feature"].append(tree.feature.astype(np.int64))
            parts["threshold"].append(tree.threshold.astype(np.float64))
            parts["value"].append(tree.value[:, 0, 0].astype(np.float64))
            offset += tree.node_count
        joined = {f: np.concatenate(parts[f]) for f in _FIELDS}
        return cls(
            left=joined["left"].astype(np.int64),
            right=joined["right"].astype(np.int64),
            feature=joined["feature"].astype(np.int64),
            threshold=joined["threshold"].astype(np.float64),
            value=joined["value"].astype(np.float64),
            roots=np.asarray(roots, dtype=np.int64),
        )

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Mean leaf value over the trees for each row of ``x``."""
        # scikit-learn compares float32 features with its float64 thresholds.
        features = np.asarray(x, dtype=np.float32).astype(np.float64)
        rows = np.arange(features.shape[0])
        total = np.zeros(features.shape[0])
        for root in self.roots:
            node = np.full(features.shape[0], root, dtype=np.int64)
            while True:
                inner = self.left[node] >= 0
                if not inner.any():
                    break
                at = node[inner]
                goes_left = features[rows[inner], self.feature[at]] <= self.threshold[at]
                node[inner] = np.where(goes_left, self.left[at], self.right[at])
            total += self.value[node]
        return total / self.roots.size

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The arrays as ``{prefix + name: tensor}``."""
        names = (*_FIELDS, "roots")
        return {
            f"{prefix}{f}": torch.from_numpy(np.ascontiguousarray(getattr(self, f))) for f in names
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> ForestArrays:
        """The inverse of :meth:`tensors`."""

        def get(name: str) -> NDArray[np.float64]:
            return np.asarray(tensors[f"{prefix}{name}"].numpy())

        return cls(
            left=get("left").astype(np.int64),
            right=get("right").astype(np.int64),
            feature=get("feature").astype(np.int64),
            threshold=get("threshold").astype(np.float64),
            value=get("value").astype(np.float64),
            roots=get("roots").astype(np.int64),
        )
