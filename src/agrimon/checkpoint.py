"""Checkpoint files with their model cards: write, verify the checksum, load weights only.

Every agrimon model folder holds ``model.pt`` (tensors and plain types only, so
``torch.load(weights_only=True)`` reads it without running code), ``card.json`` (the
model card, with the checkpoint's SHA-256) and a readable ``card.md``. Loading refuses, in
one line, a missing file, a card without checksum, a checkpoint whose checksum differs
from its card's, and a payload of another format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agrimon.errors import ModelError
from agrimon.products.manifest import sha256_file

CHECKPOINT = "model.pt"
CARD_JSON = "card.json"
CARD_MD = "card.md"


def write_checkpoint(
    folder: Path,
    payload: dict[str, Any],
    card: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
) -> Path:
    """Write ``model.pt`` (``payload``), ``card.json`` (``card`` + checksum) and ``card.md``.

    Args:
        folder: The model folder (made if missing).
        payload: Tensors and plain types.
        card: The model card; it gains ``checkpoint`` and ``sha256``.
        markdown: Renders the completed card as ``card.md``.

    Returns:
        The checkpoint's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT
    import torch

    torch.save(payload, path)
    card.update({"checkpoint": CHECKPOINT, "sha256": sha256_file(path)})
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (folder / CARD_MD).write_text(markdown(card))
    return path


def load_verified(
    path: Path, *, fmt: str, trainer: str
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The payload and card of a checkpoint (a ``model.pt`` or its folder), checked.

    Args:
        path: Checkpoint file or folder.
        fmt: The payload's expected ``format``.
        trainer: The command that writes such checkpoints, for messages.

    Returns:
        ``(payload, card, checkpoint path)``.

    Raises:
        ModelError: Missing or unreadable checkpoint or card, checksum mismatch, or a
            payload of another format.
    """
    path = path / CHECKPOINT if path.is_dir() else path
    card_path = path.parent / CARD_JSON
    if not path.is_file():
        raise ModelError(
            f"model checkpoint {path} does not exist: give the model.pt (or its folder) "
            f"that '{trainer}' wrote"
        )
    if not card_path.is_file():
        raise ModelError(
            f"model checkpoint {path} has no {CARD_JSON} beside it: keep the folder that "
            f"'{trainer}' wrote together"
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
    import torch  # only to read the weights: a card is read without it

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refuses anything but weights and plain types
        raise ModelError(
            f"model checkpoint {path} cannot be loaded safely ({_load_reason(err)}): use a "
            f"checkpoint that '{trainer}' wrote"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ModelError(f"{path} is not an agrimon checkpoint of format {fmt}")
    return payload, card, path


def _load_reason(err: Exception) -> str:
    """The one line of a failed ``torch.load`` that says why, without torch's advice.

    torch's weights-only refusal spans several lines and suggests loading again with
    ``weights_only=False``, which would run the file's code: only its reason is kept.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Check the documentation of torch.load")
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    return (reasons or lines or [type(err).__name__])[0].rstrip(".")
