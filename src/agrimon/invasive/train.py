"""Training with spatial cross-validation, baselines on the same folds, then the final fit.

The labelled area is cut into square blocks; blocks are dealt into ``k`` folds balanced per
class (:func:`agrimon.invasive.dataset.assign_folds`). Every fold serves once as the test
set; early-stopping validation blocks come from its training side. Each candidate
architecture and two baselines — the best threshold-rule on one feature, chosen on the
training blocks, and a class-balanced random forest on all features — are scored on the
same held-out pixels; figures are pooled over the folds. The candidate with the best
held-out figure is then trained on every block for the median of its folds' best epoch
counts, which is the checkpoint shipped.

Never are pixels scored that the model (or a baseline, or the feature scaler) saw while
training: normalisation statistics come from the training blocks of each fold.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier
from torch import nn

from agrimon.errors import TrainingError
from agrimon.invasive.dataset import Chips, assign_folds, block_of
from agrimon.invasive.metrics import confusion, headline, scores
from agrimon.invasive.model import (
    MODEL_NAMES,
    ModelConfig,
    ModelName,
    build_classifier,
    member_networks,
    summarised,
    torch_threads,
)

#: Fewest steps of a raw series for which the model summarises it (quantiles need a few).
SUMMARY_MIN_STEPS = 8

#: Below this many labelled pixels a model is an ensemble of :data:`SMALL_MEMBERS` networks
#: by default: on 10 000 real Slovenian pixels three members raised the held-out shrubland
#: F1 from 0.26 to 0.32 (mean of three seeds) and narrowed its spread across seeds.
SMALL_LABELS = 200_000
SMALL_MEMBERS = 3

#: ``progress(label, fraction_done)``.
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class TrainOptions:
    """How to train and cross-validate.

    Attributes:
        candidates: Architectures compared by spatial cross-validation.
        folds: Number of folds (k) over the spatial blocks.
        block_px: Block side in pixels; ``None`` picks one that gives about ``8 * folds``
            labelled blocks (at least 16 px, at most 100 px = 1 km).
        seed: Seed of every random choice (the same seed gives the same checkpoint).
        max_epochs: Most epochs per fit.
        patience: Epochs without a better validation figure before a fit stops.
        pixels_per_epoch: Training pixels seen per epoch.
        batch_pixels: Pixels per batch (per-pixel models).
        patch_px: Side of the training crops of spatial models.
        width: Channels of the temporal convolutions.
        hidden: Size of the per-pixel embedding.
        min_test_pixels: Fewest held-out pixels a class needs for its figure to mean
            anything.
        rf_trees: Trees of the random-forest baseline.
        max_baseline_pixels: Training pixels the baselines are fitted on (a stratified
            subsample), per fold.
        validation_share: Share of each fold's training blocks kept for early stopping.
        members: Networks per model, each from its own seed, averaged; ``None`` picks
            :data:`SMALL_MEMBERS` when fewer than :data:`SMALL_LABELS` pixels are labelled
            (where one network's luck of the draw decides too much) and 1 otherwise.
    """

    candidates: tuple[ModelName, ...] = MODEL_NAMES
    folds: int = 5
    block_px: int | None = None
    seed: int = 0
    max_epochs: int = 30
    patience: int = 5
    pixels_per_epoch: int = 60_000
    batch_pixels: int = 2048
    patch_px: int = 32
    width: int = 16
    hidden: int = 64
    min_test_pixels: int = 30
    rf_trees: int = 100
    max_baseline_pixels: int = 40_000
    validation_share: float = 0.15
    members: int | None = None


@dataclass
class Fitted:
    """A trained network and how it got there."""

    model: nn.Module
    config: ModelConfig
    best_epoch: int
    history: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """Labelled pixels, their blocks and folds.

    Attributes:
        chips: The labelled chips.
        blocks: Block per chip pixel ``(n, s, s)``.
        fold_of_block: Fold per block (``-1`` unlabelled).
        classes: Class names.
        block_px: Block side.
    """

    chips: Chips
    blocks: NDArray[np.int64]
    fold_of_block: NDArray[np.int64]
    classes: tuple[str, ...]
    block_px: int

    @property
    def folds(self) -> NDArray[np.int64]:
        """Fold of every chip pixel (``-1`` unlabelled)."""
        f = self.fold_of_block[self.blocks]
        return np.where(self.chips.labels >= 0, f, -1)


def auto_block_px(chips: Chips, folds: int, grid_cols: int) -> int:
    """A block size giving about ``8 * folds`` labelled blocks (16..100 px)."""
    rows, cols = chips.pixel_rows_cols()
    labelled = chips.labels >= 0
    for size in (100, 80, 64, 50, 40, 32, 25, 20, 16):
        n = len(np.unique(block_of(rows[labelled], cols[labelled], size, grid_cols)))
        if n >= 8 * folds:
            return size
    return 16


def make_problem(
    chips: Chips, classes: tuple[str, ...], options: TrainOptions, grid_cols: int
) -> Problem:
    """Blocks and folds of the labelled chips, with the checks that keep figures honest.

    Raises:
        TrainingError: Too few classes, blocks or held-out pixels for an honest figure.
    """
    labelled = chips.labels >= 0
    present = np.bincount(chips.labels[labelled], minlength=len(classes))
    if (present > 0).sum() < 2:
        have = [c for c, n in zip(classes, present, strict=True) if n]
        raise TrainingError(
            f"the labels hold only class(es) {', '.join(have) or 'none'} on the feature grid: "
            "training needs at least two classes"
        )
    block_px = options.block_px or auto_block_px(chips, options.folds, grid_cols)
    rows, cols = chips.pixel_rows_cols()
    blocks = block_of(rows, cols, block_px, grid_cols)
    n_blocks = int(blocks.max()) + 1
    counts = np.zeros((n_blocks, len(classes)), dtype=np.int64)
    np.add.at(counts, (blocks[labelled], chips.labels[labelled]), 1)
    if ((counts.sum(axis=1)) > 0).sum() < options.folds:
        raise TrainingError(
            f"the labels cover only {int((counts.sum(axis=1) > 0).sum())} spatial blocks of "
            f"{block_px} px: {options.folds}-fold spatial cross-validation needs at least "
            f"{options.folds}; label a wider area or pass a smaller --block-px"
        )
    fold_of_block = assign_folds(counts, options.folds, seed=options.seed)
    problem = Problem(chips, blocks, fold_of_block, classes, block_px)
    _check_scorable(problem, counts, options)
    return problem


def _check_scorable(problem: Problem, counts: NDArray[np.int64], options: TrainOptions) -> None:
    folds = problem.fold_of_block
    for k, name in enumerate(problem.classes):
        total = int(counts[:, k].sum())
        if total == 0:
            raise TrainingError(
                f"class '{name}' has no labelled pixel on the feature grid: it would never be "
                "scored; label it, or leave it out of --classes"
            )
        in_folds = len({int(f) for f in folds[counts[:, k] > 0] if f >= 0})
        if total < options.min_test_pixels or in_folds < 2:
            raise TrainingError(
                f"class '{name}' has {total} labelled pixels in {in_folds} fold(s) of "
                f"{problem.block_px}-px blocks: too few for a held-out figure that means "
                f"anything (needs {options.min_test_pixels} pixels in 2 folds); label it in "
                "more places or pass a smaller --block-px"
            )


# --- networks -------------------------------------------------------------------------


def _standardisation(x: NDArray[np.float32]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of training pixels ``(n, c)``, NaN ignored."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a channel may be all NaN
        mean = np.nan_to_num(np.nanmean(x, axis=0))
        std = np.nan_to_num(np.nanstd(x, axis=0), nan=1.0)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)


def _class_weights(y: NDArray[np.int64], classes: int) -> torch.Tensor:
    """Inverse-frequency class weights, normalised to mean 1 over present classes."""
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1.0) / classes, 0.0)
    w = w / w[counts > 0].mean()
    return torch.as_tensor(w, dtype=torch.float32)


def _pixels_of(
    chips: Chips, where: NDArray[np.bool_]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    x = np.moveaxis(chips.images, 1, -1)[where]
    return np.ascontiguousarray(x, dtype=np.float32), chips.labels[where]


def _predict_chips(model: nn.Module, images: NDArray[np.float32]) -> NDArray[np.int64]:
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            logits = model(torch.from_numpy(images[i : i + 32]))
            out.append(logits.argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[2:]), dtype=np.int64)


def _predict_pixels(model: nn.Module, x: NDArray[np.float32]) -> NDArray[np.int64]:
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), 65536):
            batch = torch.from_numpy(x[i : i + 65536])[:, :, None, None]
            out.append(model(batch)[:, :, 0, 0].argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def fit(
    config: ModelConfig,
    chips: Chips,
    train: NDArray[np.bool_],
    valid: NDArray[np.bool_] | None,
    options: TrainOptions,
    *,
    seed: int,
    epochs: int | None = None,
    target: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> Fitted:
    """Train one network (or each member of an ensemble) on the ``train`` pixels.

    Args:
        config: Architecture.
        chips: Labelled chips.
        train: Chip pixels to learn from ``(n, s, s)``.
        valid: Chip pixels for early stopping, or ``None`` to train for ``epochs``.
        options: Training options.
        seed: Seed of the initial weights and of every sample drawn (member ``e`` of an
            ensemble draws from ``seed + 1000·e``).
        epochs: Epochs to train when there is no validation set.
        target: Class index whose F1 early stopping follows (else the mean F1).
        progress: Called with the fraction of epochs done.
    """
    torch.manual_seed(seed)
    x_train, y_train = _pixels_of(chips, train)
    mean, std = _standardisation(summarised(config, x_train))
    model = build_classifier(config, mean, std)
    loss_fn = nn.CrossEntropyLoss(weight=_class_weights(y_train, config.classes), ignore_index=-1)
    data = _Data(chips, x_train, y_train, np.where(train, chips.labels, -1), valid)
    n_epochs = epochs if valid is None and epochs is not None else options.max_epochs
    nets = member_networks(model)
    best_epochs, history = [], []
    for e, net in enumerate(nets):
        if e:
            torch.manual_seed(seed + 1000 * e)

        def tick(f: float, e: int = e) -> None:
            if progress:
                progress((e + f) / len(nets))

        best_epoch, member_history = _fit_network(
            net,
            config,
            data,
            loss_fn,
            options,
            np.random.default_rng(seed + 1000 * e),
            n_epochs=n_epochs,
            target=target,
            progress=tick,
        )
        best_epochs.append(best_epoch)
        history.append(member_history)
    model.eval()
    # One epoch count for the final fit: the members' median (history: the first member's).
    return Fitted(model, config, int(np.median(best_epochs)), history[0])


@dataclass(frozen=True)
class _Data:
    """What the members of one fit learn from and stop on."""

    chips: Chips
    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    labels_train: NDArray[np.int64]
    valid: NDArray[np.bool_] | None


def _fit_network(
    model: nn.Module,
    config: ModelConfig,
    data: _Data,
    loss_fn: nn.Module,
    options: TrainOptions,
    rng: np.random.Generator,
    *,
    n_epochs: int,
    target: int | None,
    progress: Callable[[float], None],
) -> tuple[int, list[float]]:
    """Train one network in place; keep its best validation state.

    Returns:
        ``(best_epoch, validation history)``; without validation, ``n_epochs`` and ``[]``.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    spatial = config.halo > 0
    chips, valid = data.chips, data.valid
    if valid is not None:
        x_valid, y_valid = _pixels_of(chips, valid)
        valid_chips = np.flatnonzero(valid.any(axis=(1, 2)))
    best, best_epoch, best_state, history = -1.0, 0, None, []
    for epoch in range(n_epochs):
        model.train()
        if spatial:
            _spatial_epoch(model, chips, data.labels_train, loss_fn, opt, options, rng)
        else:
            _pixel_epoch(model, data.x_train, data.y_train, loss_fn, opt, options, rng)
        if valid is not None:
            if spatial:
                pred = _predict_chips(model, chips.images[valid_chips])[valid[valid_chips]]
            else:
                pred = _predict_pixels(model, x_valid)
            score = scores(
                confusion(y_valid, pred, config.classes), [str(k) for k in range(config.classes)]
            )
            value = headline(score, None if target is None else str(target))
            history.append(value)
            if value > best + 1e-4:
                best, best_epoch = value, epoch + 1
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            elif epoch + 1 - best_epoch >= options.patience:
                progress(1.0)
                break
        progress((epoch + 1) / n_epochs)
    if best_state is None:
        return n_epochs, history
    model.load_state_dict(best_state)
    return best_epoch, history


def _pixel_epoch(
    model: nn.Module,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    loss_fn: nn.Module,
    opt: torch.optim.Optimizer,
    options: TrainOptions,
    rng: np.random.Generator,
) -> None:
    n = min(len(y), options.pixels_per_epoch)
    order = rng.permutation(len(y))[:n]
    for i in range(0, n, options.batch_pixels):
        idx = order[i : i + options.batch_pixels]
        if len(idx) < 2:  # batch norm needs two samples
            continue
        xb = torch.from_numpy(x[idx])[:, :, None, None]
        loss = loss_fn(model(xb)[:, :, 0, 0], torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()


def _spatial_epoch(
    model: nn.Module,
    chips: Chips,
    labels: NDArray[np.int64],
    loss_fn: nn.Module,
    opt: torch.optim.Optimizer,
    options: TrainOptions,
    rng: np.random.Generator,
) -> None:
    p, s = options.patch_px, chips.size
    useful = np.flatnonzero((labels >= 0).any(axis=(1, 2)))
    crops = max(1, options.pixels_per_epoch // (p * p))
    batch = 16
    for _ in range(0, crops, batch):
        pick = rng.choice(useful, size=batch)
        r0 = rng.integers(0, s - p + 1, size=batch)
        c0 = rng.integers(0, s - p + 1, size=batch)
        xb = np.stack(
            [chips.images[k, :, r : r + p, c : c + p] for k, r, c in zip(pick, r0, c0, strict=True)]
        )
        yb = np.stack(
            [labels[k, r : r + p, c : c + p] for k, r, c in zip(pick, r0, c0, strict=True)]
        )
        if (yb < 0).all():
            continue
        loss = loss_fn(model(torch.from_numpy(xb)), torch.from_numpy(yb))
        opt.zero_grad()
        loss.backward()
        opt.step()


# --- baselines ------------------------------------------------------------------------


def _subsample(y: NDArray[np.int64], n: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """Indices of a class-stratified subsample of at most ``n`` (every class kept)."""
    if len(y) <= n:
        return np.arange(len(y))
    out = []
    classes = np.unique(y)
    for c in classes:
        idx = np.flatnonzero(y == c)
        take = max(min(len(idx), 50), round(n * len(idx) / len(y)))
        out.append(rng.choice(idx, size=min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(out))


def _medians(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per-feature medians of the training pixels (0 for an all-missing feature)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nan_to_num(np.nanmedian(x, axis=0)).astype(np.float32)


def _filled(x: NDArray[np.float32], medians: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.where(np.isnan(x), medians[None, :], x)


def threshold_baseline(
    x_train: NDArray[np.float32], y_train: NDArray[np.int64], classes: int, seed: int
) -> tuple[Callable[[NDArray[np.float32]], NDArray[np.int64]], int]:
    """Best threshold rule on one feature, chosen on the training pixels.

    For two classes this is the best single threshold; for ``k`` classes, ``k - 1``
    thresholds on the one feature (a ``k``-leaf class-balanced tree on it). The feature is
    the one whose rule scores the best mean F1 on the training pixels.

    Returns:
        ``(predict, feature_index)``.
    """
    medians = _medians(x_train)
    x = _filled(x_train, medians)
    best, best_k, best_tree = -1.0, 0, None
    names = [str(k) for k in range(classes)]
    for k in range(x.shape[1]):
        tree = DecisionTreeClassifier(
            max_leaf_nodes=max(2, classes), class_weight="balanced", random_state=seed
        ).fit(x[:, k : k + 1], y_train)
        pred = tree.predict(x[:, k : k + 1])
        value = headline(scores(confusion(y_train, pred, classes), names), None)
        if value > best:
            best, best_k, best_tree = value, k, tree
    assert best_tree is not None
    tree_, col = best_tree, best_k

    def predict(xt: NDArray[np.float32]) -> NDArray[np.int64]:
        return np.asarray(tree_.predict(_filled(xt, medians)[:, col : col + 1]), dtype=np.int64)

    return predict, col


def forest_baseline(
    x_train: NDArray[np.float32], y_train: NDArray[np.int64], options: TrainOptions, seed: int
) -> Callable[[NDArray[np.float32]], NDArray[np.int64]]:
    """A class-balanced random forest on every feature."""
    medians = _medians(x_train)
    forest = RandomForestClassifier(
        n_estimators=options.rf_trees,
        class_weight="balanced_subsample",
        min_samples_leaf=2,
        n_jobs=2,
        random_state=seed,
    ).fit(_filled(x_train, medians), y_train)

    def predict(xt: NDArray[np.float32]) -> NDArray[np.int64]:
        return np.asarray(forest.predict(_filled(xt, medians)), dtype=np.int64)

    return predict


# --- cross-validation -----------------------------------------------------------------


@dataclass
class CrossValidation:
    """Pooled held-out results.

    Attributes:
        matrices: Confusion matrix per candidate and baseline name.
        best_epochs: Best epoch of each fold per candidate.
        threshold_features: The feature index the threshold baseline chose in each fold.
    """

    matrices: dict[str, NDArray[np.int64]]
    best_epochs: dict[str, list[int]]
    threshold_features: list[int]


def _validation_blocks(
    problem: Problem, fold: int, share: float, rng: np.random.Generator
) -> NDArray[np.bool_]:
    """Blocks of the training side of ``fold`` kept for early stopping (per-class spread)."""
    train_blocks = np.flatnonzero((problem.fold_of_block >= 0) & (problem.fold_of_block != fold))
    n_valid = max(1, math.ceil(share * len(train_blocks)))
    chips, blocks = problem.chips, problem.blocks
    labelled = chips.labels >= 0
    counts = np.zeros((len(problem.fold_of_block), len(problem.classes)), dtype=np.int64)
    np.add.at(counts, (blocks[labelled], chips.labels[labelled]), 1)
    valid = np.zeros(len(problem.fold_of_block), dtype=bool)
    # One block per class first (so early stopping sees every class), then at random.
    for k in range(len(problem.classes)):
        having = [b for b in train_blocks if counts[b, k] > 0 and not valid[b]]
        if len(having) > 1 and valid.sum() < n_valid:
            valid[rng.choice(having)] = True
    rest = [b for b in train_blocks if not valid[b]]
    extra = max(0, n_valid - int(valid.sum()))
    if extra and len(rest) > extra:
        valid[rng.choice(rest, size=extra, replace=False)] = True
    return valid


def cross_validate(
    problem: Problem,
    configs: Sequence[ModelConfig],
    options: TrainOptions,
    *,
    target: int | None,
    progress: Progress | None = None,
) -> CrossValidation:
    """Score every candidate and both baselines on the same held-out blocks of each fold."""
    chips, k_classes = problem.chips, len(problem.classes)
    pixel_folds = problem.folds
    matrices: dict[str, NDArray[np.int64]] = {
        str(c.name): np.zeros((k_classes, k_classes), np.int64) for c in configs
    }
    matrices.update(
        {n: np.zeros((k_classes, k_classes), np.int64) for n in ("threshold", "random_forest")}
    )
    best_epochs: dict[str, list[int]] = {str(c.name): [] for c in configs}
    chosen_features = []
    rng = np.random.default_rng(options.seed)
    fits = options.folds * len(configs)
    done = 0
    for fold in range(options.folds):
        test = pixel_folds == fold
        valid_blocks = _validation_blocks(problem, fold, options.validation_share, rng)
        is_valid = valid_blocks[problem.blocks] & (pixel_folds >= 0) & (pixel_folds != fold)
        train = (pixel_folds >= 0) & (pixel_folds != fold) & ~is_valid
        x_test, y_test = _pixels_of(chips, test)
        x_train, y_train = _pixels_of(chips, train | is_valid)
        sub = _subsample(y_train, options.max_baseline_pixels, rng)
        # The baselines get what the networks see: their derived channels too.
        b_train, b_test = summarised(configs[0], x_train[sub]), summarised(configs[0], x_test)
        predict, col = threshold_baseline(b_train, y_train[sub], k_classes, options.seed)
        chosen_features.append(col)
        matrices["threshold"] += confusion(y_test, predict(b_test), k_classes)
        forest = forest_baseline(b_train, y_train[sub], options, options.seed + fold)
        matrices["random_forest"] += confusion(y_test, forest(b_test), k_classes)
        for config in configs:
            label = f"fold {fold + 1}/{options.folds}: {config.name}"

            def tick(f: float, label: str = label, base: int = done) -> None:
                if progress:
                    progress(label, (base + f) / fits)

            fitted = fit(
                config,
                chips,
                train,
                is_valid,
                options,
                seed=options.seed + 100 * fold,
                target=target,
                progress=tick,
            )
            best_epochs[config.name].append(fitted.best_epoch)
            if config.halo > 0:
                with_test = np.flatnonzero(test.any(axis=(1, 2)))
                pred = _predict_chips(fitted.model, chips.images[with_test])[test[with_test]]
                truth = chips.labels[with_test][test[with_test]]
            else:
                pred, truth = _predict_pixels(fitted.model, x_test), y_test
            matrices[config.name] += confusion(truth, pred, k_classes)
            done += 1
    return CrossValidation(matrices, best_epochs, chosen_features)


@dataclass(frozen=True)
class TrainResult:
    """The shipped model and the figures that justify it."""

    fitted: Fitted
    metrics: dict[str, Any]
    candidate_scores: dict[str, float]
    cv: CrossValidation
    seconds: float
    beats_baselines: bool


def train(
    problem: Problem,
    *,
    steps: int,
    per_step: int,
    static: int,
    target: str | None,
    options: TrainOptions,
    progress: Progress | None = None,
) -> TrainResult:
    """Cross-validate the candidates, pick the best, and train it on every block.

    Returns:
        The final model and ``metrics.json``'s content: the chosen model's pooled held-out
        scores with the two baselines' beside them.
    """
    with torch_threads(1):
        return _train(problem, steps, per_step, static, target, options, progress)


def _train(
    problem: Problem,
    steps: int,
    per_step: int,
    static: int,
    target: str | None,
    options: TrainOptions,
    progress: Progress | None,
) -> TrainResult:
    started = time.perf_counter()
    k = len(problem.classes)
    # A raw series (no season metrics) gets the model's own summary of it.
    summary = static == 0 and steps >= SUMMARY_MIN_STEPS
    members = options.members or (
        SMALL_MEMBERS if int((problem.folds >= 0).sum()) < SMALL_LABELS else 1
    )
    configs = [
        ModelConfig(
            name,
            steps,
            per_step,
            static,
            k,
            width=options.width,
            hidden=options.hidden,
            summary=summary,
            members=members,
        )
        for name in options.candidates
    ]
    target_idx = None if target is None else problem.classes.index(target)
    cv = cross_validate(problem, configs, options, target=target_idx, progress=progress)
    names = list(problem.classes)
    candidate_scores: dict[str, float] = {
        str(c.name): headline(scores(cv.matrices[c.name], names), target) for c in configs
    }
    chosen = max(configs, key=lambda c: candidate_scores[c.name])
    epochs = max(1, int(np.median(cv.best_epochs[chosen.name])))
    everything = problem.folds >= 0

    def tick(f: float) -> None:
        if progress:
            progress(f"final fit: {chosen.name}, {epochs} epochs on every block", f)

    fitted = fit(
        chosen,
        problem.chips,
        everything,
        None,
        options,
        seed=options.seed,
        epochs=epochs,
        progress=tick,
    )
    metrics = scores(cv.matrices[chosen.name], names)
    metrics["model"] = chosen.name
    metrics["baselines"] = {
        name: scores(cv.matrices[name], names) for name in ("threshold", "random_forest")
    }
    ours = candidate_scores[chosen.name]
    beats = all(ours > headline(metrics["baselines"][b], target) for b in metrics["baselines"])
    return TrainResult(fitted, metrics, candidate_scores, cv, time.perf_counter() - started, beats)
