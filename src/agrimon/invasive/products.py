"""The encroachment map's products without torch: its layers, and its accuracy on the demo.

What the assembly of a run needs to know of the map (layer names, class names, colours,
nodata) comes from the model's card, so a process that only assembles the products of
tiles mapped elsewhere never loads torch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agrimon.checkpoint import CARD_JSON, CHECKPOINT
from agrimon.products.cog import Layer

#: Class raster: 1-based class index (the order of the model's classes), 0 outside the data.
CLASS_NODATA = 0
#: Percentage rasters: 0–100, this value outside the data.
PERCENT_NODATA = 255

INVASIVE_CLASS = Layer(
    name="invasive_class",
    title="Land cover class of the bush-encroachment model",
    dtype="uint8",
    nodata=CLASS_NODATA,
    units="1",
    resampling="mode",
)
INVASIVE_PROBABILITY = Layer(
    name="invasive_probability",
    title="Probability of the target class (encroachment), percent",
    dtype="uint8",
    nodata=PERCENT_NODATA,
    units="%",
    resampling="average",
)
INVASIVE_UNCERTAINTY = Layer(
    name="invasive_uncertainty",
    title="Uncertainty of the class: entropy of the class probabilities, percent of the maximum",
    dtype="uint8",
    nodata=PERCENT_NODATA,
    units="%",
    resampling="average",
)

#: Colour of the target class in the class raster, and of the others in turn (RGBA).
TARGET_COLOUR = (166, 97, 26, 255)
OTHER_COLOURS = (
    (26, 152, 80, 255),
    (253, 224, 139, 255),
    (69, 117, 180, 255),
    (153, 153, 153, 255),
    (118, 42, 131, 255),
    (244, 109, 67, 255),
)
_TRANSPARENT = (0, 0, 0, 0)


def class_layer(classes: Sequence[str], target: str) -> Layer:
    """:data:`INVASIVE_CLASS` with the colour table and names of ``classes``."""
    others = iter(OTHER_COLOURS * (len(classes) // len(OTHER_COLOURS) + 1))
    palette = [_TRANSPARENT] + [TARGET_COLOUR if c == target else next(others) for c in classes]
    return dataclasses.replace(INVASIVE_CLASS, palette=tuple(palette), categories=("", *classes))


def map_layers(classes: Sequence[str], target: str) -> dict[str, Layer]:
    """The three map products of a model with these classes, by file stem."""
    layer = class_layer(classes, target)
    return {
        layer.name: layer,
        INVASIVE_PROBABILITY.name: INVASIVE_PROBABILITY,
        INVASIVE_UNCERTAINTY.name: INVASIVE_UNCERTAINTY,
    }


@dataclasses.dataclass(frozen=True)
class MapModel:
    """What the products say of the model that mapped: read from its card, without torch.

    Attributes:
        path: The checkpoint file.
        classes: Class names; class raster value ``i + 1`` is class ``i``.
        target: The class mapped as "encroached".
        card: The model card.
    """

    path: Path
    classes: tuple[str, ...]
    target: str
    card: dict[str, Any]

    @classmethod
    def read(cls, model: Path) -> MapModel:
        """The model of a checkpoint file or its folder (checked before the run)."""
        path = model / CHECKPOINT if model.is_dir() else model
        card = json.loads((path.parent / CARD_JSON).read_text())
        return cls(path, tuple(str(c) for c in card["classes"]), str(card["target"]), card)

    @property
    def layers(self) -> dict[str, Layer]:
        """The map's three layers."""
        return map_layers(self.classes, self.target)

    def accuracy(self, confusion: NDArray[np.int64]) -> dict[str, Any]:
        """The map scored against the demo truth: ``(other, target)`` confusion of AOI pixels."""
        from agrimon.invasive.metrics import scores

        return {
            "truth": "the demo source's encroached_truth (encroacher cover >= 30 %), AOI pixels",
            "model": str(self.path),
            "model_sha256": self.card.get("sha256"),
            "trained_on": self.card.get("data", {}).get("description"),
            **scores(confusion, ["other", self.target]),
        }
