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

import torch
from torch import nn

from agrimon.errors import ModelError
from agrimon.invasive.features import FeatureSet
from agrimon.invasive.model import ModelConfig, build_classifier
from agrimon.products.manifest import sha256_file

FORMAT = "agrimon-invasive/1"
CHECKPOINT = "model.pt"
CARD_JSON = "card.json"
CARD_MD = "card.md"
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
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT
    payload = {
        "format": FORMAT,
        "config": config.to_dict(),
        "feature_set": feature_set.to_dict(),
        "classes": list(classes),
        "target": target,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)
    full = {
        **card,
        "format": FORMAT,
        "checkpoint": CHECKPOINT,
        "sha256": sha256_file(path),
        "model": config.to_dict(),
        "feature_set": feature_set.to_dict(),
        "classes": list(classes),
        "target": target,
    }
    (folder / CARD_JSON).write_text(json.dumps(full, indent=2) + "\n")
    (folder / CARD_MD).write_text(card_markdown(full))
    return path


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
    path = path / CHECKPOINT if path.is_dir() else path
    card_path = path.parent / CARD_JSON
    if not path.is_file():
        raise ModelError(
            f"model checkpoint {path} does not exist: give the model.pt (or its folder) "
            "that 'agrimon train invasive' wrote"
        )
    if not card_path.is_file():
        raise ModelError(
            f"model checkpoint {path} has no {CARD_JSON} beside it: keep the folder that "
            "'agrimon train invasive' wrote together"
        )
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"model card {card_path} cannot be read ({err}): retrain") from err
    if not isinstance(card, dict) or "sha256" not in card:
        raise ModelError(f"model card {card_path} has no checksum: retrain the model")
    actual = sha256_file(path)
    if actual != card["sha256"]:
        raise ModelError(
            f"model checkpoint {path} does not match its card (SHA-256 {actual[:12]}… ≠ "
            f"{str(card['sha256'])[:12]}…): the file was changed or damaged; retrain or restore it"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refuses anything but weights and plain types
        raise ModelError(f"model checkpoint {path} cannot be loaded safely ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path} is not an agrimon invasive-vegetation checkpoint ({FORMAT})")
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
