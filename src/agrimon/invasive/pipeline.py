"""Training the encroachment model end to end: features → labels → training → checkpoint.

Plain functions over files; the CLI and the Prefect flow (``flows/train.py``) call these.
Features come either from a source through the index stage (an AOI and a season) or from
an analyst's own GeoTIFF (``--features``). Mapping with a checkpoint is
:mod:`agrimon.invasive.mapping`, which imports none of the training stack.
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
from dask.base import compute
from odc.geo.geobox import GeoBox

from agrimon.config import RunSpec
from agrimon.errors import ConfigError, LabelError
from agrimon.invasive import features as feats
from agrimon.invasive.card import METRICS, save_checkpoint
from agrimon.invasive.dataset import load_chips
from agrimon.invasive.features import check_season
from agrimon.invasive.labels import (
    IGNORE,
    Labels,
    LabelWarning,
    labels_from_frame,
    rasterise_labels,
    read_labels,
)
from agrimon.invasive.mapping import raster_feature_set, raster_grid, tile_features
from agrimon.invasive.train import Progress, TrainOptions, make_problem, train
from agrimon.products.cog import window_of, write_geotiff
from agrimon.products.folder import staged_folder, writing

#: ``--labels demo``: the demo source's truth, with these classes.
DEMO_LABELS = "demo"
DEMO_CLASSES: tuple[str, ...] = ("open", "encroached")
FEATURES_FILE = "features.tif"
LABELS_FILE = "labels.tif"


@dataclass(frozen=True)
class TrainJob:
    """Everything ``agrimon train invasive`` depends on.

    Attributes:
        out: Folder the checkpoint, its card and ``metrics.json`` go into.
        labels: Labels file, or ``"demo"`` for the demo truth.
        class_column: Column of the labels file holding the class.
        classes: Classes to train, in order (``None``: every value in the file).
        target: The class the probability product maps (default: ``encroached`` if there
            is one, else the last class).
        run: Source, AOI and season to compute the features from (``None`` with
            ``features``).
        features: A ready feature raster (``None`` to compute them).
        options: Training options.
    """

    out: Path
    labels: str
    class_column: str = "class"
    classes: tuple[str, ...] | None = None
    target: str | None = None
    run: RunSpec | None = None
    features: Path | None = None
    options: TrainOptions = field(default_factory=TrainOptions)


# --- computing features ---------------------------------------------------------------


def write_feature_raster(
    path: Path, spec: RunSpec, *, progress: Progress | None = None
) -> tuple[Path, GeoBox]:
    """Compute the features of the run's AOI into one multi-band GeoTIFF, tile by tile.

    Returns:
        The file and its grid.

    Raises:
        ConfigError: The AOI spans two UTM zones (train on one zone at a time).
    """
    from agrimon.monitor import make_plan, require_scenes, zone_grids
    from agrimon.tilework import inside_mask

    check_season(spec)
    plan = make_plan(spec)
    require_scenes(plan)
    grids = zone_grids([t.tile for t in plan.tiles])
    if len(grids) != 1:
        raise ConfigError(
            f"AOI {spec.aoi} spans {len(grids)} UTM zones: train on an AOI inside one zone"
        )
    ((epsg, grid),) = grids.items()
    fs = feats.SEASON_V1
    height, width = grid.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": len(fs.channels),
        "dtype": "float32",
        "crs": f"EPSG:{epsg}",
        "transform": grid.affine,
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 3,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    with writing(path), rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = fs.channels
        dst.update_tags(FEATURE_SET=fs.key, PERIOD=f"{spec.start}/{spec.end}", SOURCE=spec.source)
        for n, tp in enumerate(plan.tiles):
            if progress:
                progress(f"features of tile {tp.tile.id}", n / len(plan.tiles))
            (values,) = compute(tile_features(spec, tp, fs))  # type: ignore[no-untyped-call]
            inside = inside_mask(tp.tile)
            block = np.where(inside[None], np.asarray(values, dtype=np.float32), np.nan)
            dst.write(block, window=window_of(grid, tp.tile.geobox))
    return path, grid


# --- labels ---------------------------------------------------------------------------


def demo_label_mask(grid: GeoBox, features: Path) -> np.ndarray:
    """The demo truth on the feature grid: 2 encroached, 1 open, 0 outside the features."""
    from agrimon.sources.demo import encroached_truth

    truth = np.asarray(encroached_truth(grid).values)
    with rasterio.open(features) as src:
        known = ~np.isnan(src.read(1, masked=False))
    return np.where(known, truth + 1, IGNORE).astype(np.uint8)


def write_label_raster(path: Path, grid: GeoBox, mask: np.ndarray) -> Path:
    """A uint8 label GeoTIFF on the feature grid (0 = unlabelled)."""
    return write_geotiff(path, grid, mask, dtype="uint8", nodata=0)


# --- training -------------------------------------------------------------------------


def training_labels(job: TrainJob) -> Labels:
    """The job's labels; with ``--classes``, features of other classes are left out.

    Leaving a class out (one too rare to score, say) is the analyst's choice; it is said
    in a warning, never done silently.
    """
    path = Path(job.labels)
    if job.classes is None:
        return read_labels(path, job.class_column)
    every = read_labels(path, job.class_column)
    frame = every.frame
    keep = frame[job.class_column].astype(str).isin(job.classes).to_numpy()
    dropped = sorted(set(frame[job.class_column].astype(str)[~keep]))
    if dropped:
        warnings.warn(
            f"labels file '{path}': left out {int((~keep).sum())} features of classes not in "
            f"--classes ({', '.join(dropped)})",
            LabelWarning,
            stacklevel=2,
        )
    return labels_from_frame(frame[keep], job.class_column, job.classes, path=path)


def _target(classes: Sequence[str], target: str | None) -> str:
    if target is not None:
        if target not in classes:
            raise ConfigError(
                f"--target {target!r} is not one of the classes ({', '.join(classes)})"
            )
        return target
    return "encroached" if "encroached" in classes else classes[-1]


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    # Training runs on one torch thread (see model.torch_threads); the forest uses two.
    return f"{cpu}, {os.cpu_count()} cores, 1 torch thread, torch {torch.__version__}"


def check_train_job(job: TrainJob) -> None:
    """Every problem findable before any pixel is computed, as one-line errors."""
    if (job.run is None) == (job.features is None):
        raise ConfigError("give either --aoi with --start/--end (and --source) or --features FILE")
    if job.features is not None:
        raster_grid(job.features)
        if job.labels == DEMO_LABELS:
            raise ConfigError(
                "--labels demo needs features computed from the demo source: drop --features"
            )
    if job.run is not None:
        check_season(job.run)
        if job.labels == DEMO_LABELS and job.run.source != "demo":
            raise ConfigError("--labels demo is the demo source's truth: use --source demo")
    if job.labels != DEMO_LABELS:
        training_labels(job)
    if job.out.exists() and any(job.out.iterdir()):
        raise ConfigError(
            f"--out {job.out} exists and is not empty: choose a new folder (training never "
            "overwrites a model)"
        )


def run_training(job: TrainJob, *, progress: Progress | None = None) -> Path:
    """Train, cross-validate and write the checkpoint folder (atomically).

    Returns:
        The folder ``job.out`` with ``model.pt``, ``card.json``, ``card.md``,
        ``metrics.json``, and the feature and label rasters used.
    """
    check_train_job(job)
    with staged_folder(job.out) as folder:
        if job.features is not None:
            features = job.features
            grid, _, _ = raster_grid(features)
            feature_set = raster_feature_set(features)
            data = f"feature raster {features.name}"
        else:
            assert job.run is not None
            features, grid = write_feature_raster(
                folder / FEATURES_FILE, job.run, progress=progress
            )
            feature_set = feats.SEASON_V1
            data = (
                f"{job.run.source} scenes of AOI {job.run.aoi.name}, {job.run.start} to "
                f"{job.run.end}"
            )
        if job.labels == DEMO_LABELS:
            classes = DEMO_CLASSES
            mask = demo_label_mask(grid, features)
            label_text = "the demo source's truth (encroached = woody encroacher cover ≥ 30 %)"
        else:
            labels = training_labels(job)
            classes = labels.classes
            mask = rasterise_labels(labels, grid)
            label_text = f"{Path(job.labels).name}, column '{job.class_column}'"
        target = _target(classes, job.target)
        labels_path = write_label_raster(folder / LABELS_FILE, grid, mask)
        chips = load_chips(features, labels_path)
        if len(chips.labels) == 0:
            raise LabelError(f"labels {job.labels}: no labelled pixel has features: check the area")
        problem = make_problem(chips, classes, job.options, grid.shape[1])
        result = train(
            problem,
            steps=len(feature_set.steps),
            per_step=len(feature_set.per_step),
            static=len(feature_set.static),
            target=target,
            options=job.options,
            progress=progress,
        )
        params = sum(p.numel() for p in result.fitted.model.parameters())
        card = {
            "title": f"invasive-vegetation model ({target})",
            "summary": card_summary(job, result.beats_baselines, target),
            "data": {
                "description": f"{data}; labels: {label_text}",
                "labelled_pixels": {c: int((mask == i + 1).sum()) for i, c in enumerate(classes)},
            },
            "split": {
                "description": (
                    f"{job.options.folds}-fold spatial cross-validation over "
                    f"{problem.block_px}-px blocks ({problem.block_px * grid.resolution.x:g} m),"
                    f" folds balanced per class; early stopping on "
                    f"{job.options.validation_share:.0%} of each fold's training blocks; final"
                    f" fit on every block for {result.fitted.best_epoch} epochs"
                ),
                "block_px": problem.block_px,
                "folds": job.options.folds,
                "seed": job.options.seed,
            },
            "candidates": list(job.options.candidates),
            "candidate_scores": result.candidate_scores,
            "beats_baselines": result.beats_baselines,
            "metrics": result.metrics,
            "parameters": params,
            "training_seconds": round(result.seconds, 1),
            "machine": _machine(),
            "options": {k: v for k, v in job.options.__dict__.items() if k != "candidates"},
        }
        save_checkpoint(
            folder,
            result.fitted.model,
            config=result.fitted.config,
            feature_set=feature_set,
            classes=classes,
            target=target,
            card=card,
        )
        (folder / METRICS).write_text(json.dumps(result.metrics, indent=2) + "\n")
    return job.out


def card_summary(job: TrainJob, beats: bool, target: str) -> str:
    """The card's first paragraph: what the model is for and how far to trust it."""
    text = (
        f"Maps '{target}' per 10 m pixel. Accuracy is held out spatially: every figure "
        "comes from blocks the model never saw while training."
    )
    if job.labels == DEMO_LABELS:
        text += (
            " Trained on the SYNTHETIC demo world only: it demonstrates the pipeline and"
            " is no map of real vegetation. Retrain on real labels before use."
        )
    if not beats:
        text += " WARNING: it does not beat both baselines on the held-out blocks."
    return text
