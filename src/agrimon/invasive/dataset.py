"""Training data through torchgeo: feature and label rasters, chips, spatial blocks and folds.

The feature raster and its label mask (same grid) are two torchgeo ``RasterDataset``s
joined by an ``IntersectionDataset``; a ``GridGeoSampler`` cuts them into chips, and only
chips holding labels are kept in memory (labels, not the AOI, bound what training holds).

Spatial cross-validation cuts the grid into square blocks; every block belongs to one fold,
so a test pixel's neighbours are never training pixels of the same fold except across a
block edge. Folds are balanced per class (rarest class first), so that a class that occurs
in few places still lands in several folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader
from torchgeo.datasets import IntersectionDataset, RasterDataset, stack_samples
from torchgeo.samplers import GridGeoSampler

from agrimon.invasive.labels import IGNORE


class FeatureRaster(RasterDataset):
    """A multi-band float feature GeoTIFF (NaN where unknown) as torchgeo images."""

    is_image = True


class LabelRaster(RasterDataset):
    """A uint8 label mask GeoTIFF (0 = unlabelled, class ``i`` = ``i + 1``) as torchgeo masks."""

    is_image = False


@dataclass(frozen=True)
class Chips:
    """The labelled chips of a feature raster, in memory.

    Attributes:
        images: Features ``(n, channels, size, size)`` float32, NaN where unknown.
        labels: Class index per pixel ``(n, size, size)`` int64, ``-1`` where unlabelled.
        rows: Grid row of each chip's first pixel ``(n,)``.
        cols: Grid column of each chip's first pixel ``(n,)``.
    """

    images: NDArray[np.float32]
    labels: NDArray[np.int64]
    rows: NDArray[np.int64]
    cols: NDArray[np.int64]

    @property
    def size(self) -> int:
        """Chip side in pixels."""
        return int(self.images.shape[-1])

    def pixel_rows_cols(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Grid row and column of every chip pixel, each ``(n, size, size)``."""
        k = np.arange(self.size, dtype=np.int64)
        rows = self.rows[:, None, None] + k[None, :, None]
        cols = self.cols[:, None, None] + k[None, None, :]
        return np.broadcast_to(rows, self.labels.shape), np.broadcast_to(cols, self.labels.shape)


def load_chips(features: Path, labels: Path, *, chip_px: int = 64) -> Chips:
    """Read the labelled chips of a feature raster and its label mask (same grid).

    Args:
        features: Feature GeoTIFF.
        labels: Label mask GeoTIFF on the same grid (see :mod:`agrimon.invasive.labels`).
        chip_px: Chip side in pixels.
    """
    images_ds = FeatureRaster(paths=[str(features)])
    dataset = IntersectionDataset(images_ds, LabelRaster(paths=[str(labels)]))
    sampler = GridGeoSampler(dataset, size=chip_px, stride=chip_px)
    loader: DataLoader[dict[str, Any]] = DataLoader(
        dataset,
        sampler=sampler,
        batch_size=16,
        collate_fn=stack_samples,
        num_workers=0,
    )
    x_res, y_res = images_ds.res
    left, top = images_ds.bounds[0].start, images_ds.bounds[1].stop
    images, masks, rows, cols = [], [], [], []
    for batch in loader:
        mask = batch["mask"].numpy().astype(np.int64) - 1
        keep = (mask >= 0).any(axis=(1, 2))
        if not keep.any():
            continue
        images.append(batch["image"].numpy()[keep].astype(np.float32))
        masks.append(mask[keep])
        for query in (q for q, k in zip(batch["bounds"], keep, strict=True) if k):
            xs, ys = query[0], query[1]
            cols.append(round((xs.start - left) / x_res))
            rows.append(round((top - ys.stop) / y_res))
    if not images:
        return Chips(
            np.zeros((0, 0, chip_px, chip_px), np.float32),
            np.zeros((0, chip_px, chip_px), np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
        )
    return Chips(
        np.concatenate(images),
        np.concatenate(masks),
        np.asarray(rows, dtype=np.int64),
        np.asarray(cols, dtype=np.int64),
    )


def block_of(
    rows: NDArray[np.int64], cols: NDArray[np.int64], block_px: int, n_cols: int
) -> NDArray[np.int64]:
    """Block number of grid pixels: blocks of ``block_px`` squared, row-major."""
    per_row = -(-n_cols // block_px)
    # Chips reaching past the raster's edge have no labels there; clip them onto the edge.
    rows, cols = np.clip(rows, 0, None), np.clip(cols, 0, n_cols - 1)
    return (rows // block_px) * per_row + cols // block_px


def assign_folds(counts: NDArray[np.int64], folds: int, *, seed: int) -> NDArray[np.int64]:
    """Fold of each block, balancing every class's pixels across folds.

    Blocks are taken in order of their rarest-class share (blocks holding a rare class
    first, ties broken by a seeded shuffle) and each goes to the fold that holds least of
    that block's rarest class so far, then fewest pixels.

    Args:
        counts: Labelled pixels per block and class ``(blocks, classes)``.
        folds: Number of folds.
        seed: Seed of the tie-breaking shuffle.

    Returns:
        Fold number per block ``(blocks,)``; blocks without labels get ``-1``.
    """
    rng = np.random.default_rng(seed)
    totals = counts.sum(axis=0).astype(np.float64)
    rarity = counts / np.maximum(totals, 1.0)  # share of each class's pixels in the block
    order = rng.permutation(len(counts))
    rare_class = np.argmin(np.where(counts > 0, totals, np.inf), axis=1)
    key = -rarity[np.arange(len(counts)), rare_class]
    order = order[np.argsort(key[order], kind="stable")]
    fold_counts = np.zeros((folds, counts.shape[1]), dtype=np.float64)
    out = np.full(len(counts), -1, dtype=np.int64)
    for b in order:
        if counts[b].sum() == 0:
            continue
        c = rare_class[b]
        score = fold_counts[:, c] * 1e6 + fold_counts.sum(axis=1)
        f = int(np.argmin(score))
        out[b] = f
        fold_counts[f] += counts[b]
    return out


def labels_to_index(mask: NDArray[np.integer]) -> torch.Tensor:
    """Label raster values (``IGNORE`` = 0, class ``i`` = ``i + 1``) to training targets."""
    return torch.as_tensor(np.asarray(mask, dtype=np.int64) - (IGNORE + 1))
