"""Checkpoints and their model cards: save, checksum, load with ``weights_only=True``.

A checkpoint folder holds ``model.pt`` (the weights, the model config, the feature set and
the classes: plain types and tensors only), ``card.json`` (what data, what split, what
metrics with baselines, how long training took, the checkpoint's SHA-256) and a
human-readable ``card.md``. Loading refuses, in one line, a checkpoint whose checksum
differs from its card's, or whose feature set is not the one the caller computes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from agrimon.checkpoint import CARD_JSON, CARD_MD, CHECKPOINT, load_verified, write_checkpoint
from agrimon.errors import ModelError
from agrimon.invasive.features import FeatureSet
from agrimon.invasive.model import ModelConfig, build_classifier

__all__ = [
    "CARD_JSON",
    "CARD_MD",
    "CHECKPOINT",
    "FORMAT",
    "METRICS",
    "LoadedModel",
    "card_markdown",
    "load_checkpoint",
    "model_config",
    "save_checkpoint",
]

FORMAT = "agrimon-invasive/1"
METRICS = "metrics.json"


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint ready for inference.

    Attributes:
        model: Scaler and network in eval mode.
        config: Architecture.
        feature_set: The features the model was trained on.
        classes: Class names; output channel ``i`` is class ``i``.
        target: The class mapped as "encroached" (probability product).
        card: The model card.
        path: The checkpoint file.
    """

    model: nn.Module
    config: ModelConfig
    feature_set: FeatureSet
    classes: tuple[str, ...]
    target: str
    card: dict[str, Any]
    path: Path


def save_checkpoint(
    folder: Path,
    model: nn.Module,
    *,
    config: ModelConfig,
    feature_set: FeatureSet,
    classes: tuple[str, ...],
    target: str,
    card: dict[str, Any],
) -> Path:
    """Write ``model.pt``, ``card.json`` and ``card.md`` into ``folder``; returns the checkpoint."""
    payload = {
        "format": FORMAT,
        "config": config.to_dict(),
        "feature_set": feature_set.to_dict(),
        "classes": list(classes),
        "target": target,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    full = {
        **card,
        "format": FORMAT,
        "model": config.to_dict(),
        "feature_set": feature_set.to_dict(),
        "classes": list(classes),
        "target": target,
    }
    return write_checkpoint(folder, payload, full, card_markdown)


def load_checkpoint(path: Path, *, feature_set: FeatureSet | None = None) -> LoadedModel:
    """Load a checkpoint (a ``model.pt`` or its folder) for inference.

    Args:
        path: Checkpoint file, or the folder holding it and its card.
        feature_set: The features the caller will compute; refused when the checkpoint's
            differ (``None`` accepts the checkpoint's own set).

    Raises:
        ModelError: Missing or unreadable checkpoint or card, checksum mismatch, another
            feature set, or a model that does not match its config.
    """
    payload, card, path = load_verified(path, fmt=FORMAT, trainer="agrimon train invasive")
    own = FeatureSet.from_dict(payload["feature_set"])
    if feature_set is not None and own.channels != feature_set.channels:
        raise ModelError(
            f"model {path} was trained on feature set {own.key} ({len(own.channels)} "
            f"channels) but the input gives {feature_set.key} ({len(feature_set.channels)} "
            "channels): use a model trained on these features, or retrain"
        )
    config = ModelConfig(**payload["config"])
    state = payload["state_dict"]
    try:
        model = build_classifier(config)
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as err:
        raise ModelError(f"model checkpoint {path} does not fit its config: retrain") from err
    model.eval()
    return LoadedModel(
        model=model,
        config=config,
        feature_set=own,
        classes=tuple(payload["classes"]),
        target=str(payload["target"]),
        card=card,
        path=path,
    )


def model_config(path: Path) -> ModelConfig:
    """The architecture a checkpoint's card names, without loading the weights.

    Raises:
        ModelError: No readable card beside the checkpoint.
    """
    path = path / CHECKPOINT if path.is_dir() else path
    card_path = path.parent / CARD_JSON
    try:
        return ModelConfig(**json.loads(card_path.read_text())["model"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"model card {card_path} cannot be read ({err}): retrain") from err


def _row(name: str, score: dict[str, Any], classes: list[str]) -> str:
    cells = [f"{score['classes'][c]['f1']:.3f}" for c in classes]
    return f"| {name} | {score['overall_accuracy']:.3f} | " + " | ".join(cells) + " |"


def _model_extras(model: dict[str, Any]) -> list[str]:
    """Card lines for the ensemble and the series summary, when the model has them."""
    lines = []
    if model.get("members", 1) > 1:
        lines.append(
            f"- ensemble of {model['members']} networks from their own seeds; "
            "their log-probabilities are averaged"
        )
    if model.get("summary"):
        lines.append(
            "- the model appends its own summary of each series (NaN-aware quantiles, mean, "
            "spread, changes between consecutive valid observations)"
        )
    return lines


def card_markdown(card: dict[str, Any]) -> str:
    """A human-readable model card."""
    classes = list(card["classes"])
    metrics = card.get("metrics", {})
    lines = [
        f"# Model card: {card.get('title', 'invasive-vegetation model')}",
        "",
        card.get("summary", ""),
        "",
        f"- architecture: `{card['model']['name']}` ({card.get('parameters', '?')} parameters),"
        f" chosen by spatial cross-validation from {', '.join(card.get('candidates', []))}",
        *_model_extras(card["model"]),
        f"- features: `{card['feature_set']['name']}/v{card['feature_set']['version']}`, "
        f"{len(card['feature_set']['channels'])} channels",
        f"- classes: {', '.join(classes)}; target (probability product): `{card['target']}`",
        f"- training data: {card.get('data', {}).get('description', '')}",
        f"- split: {card.get('split', {}).get('description', '')}",
        f"- training time: {card.get('training_seconds', '?')} s on {card.get('machine', '?')}",
        f"- checkpoint SHA-256: `{card['sha256']}`",
        "",
        "## Held-out accuracy (pooled over the test blocks of every fold)",
        "",
        "| model | overall accuracy | " + " | ".join(f"F1 {c}" for c in classes) + " |",
        "| --- | --- | " + " | ".join("---" for _ in classes) + " |",
    ]
    if metrics:
        lines.append(_row(card["model"]["name"], metrics, classes))
        for name, score in metrics.get("baselines", {}).items():
            lines.append(_row(name, score, classes))
    for name, score in card.get("candidate_scores", {}).items():
        lines.append(f"\nCandidate `{name}`: held-out headline F1 {score:.3f}.")
    return "\n".join(lines) + "\n"
