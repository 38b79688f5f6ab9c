"""A trained yield model: what it holds, how it is saved and loaded, how it forecasts.

:class:`YieldModel` is the published forecaster of one crop (and country) as
:func:`agrimon.yieldcast.train.train_yield_model` fits it on every year of the training
data: each unit's yield history (for its naive mean and its trend), the residual forest
per lead, the Torch network, and per lead the blend weights and the conformal half-width
of the 80 % interval, all chosen on inner out-of-fold forecasts of the training years as
in the backtest.

The checkpoint (``model.pt``) holds tensors and plain types only and loads with
``weights_only=True``; its card (``card.json``, ``card.md``) names the data, the feature
set (indicators, static features, season bins), the backtest scores with the baselines,
and the checkpoint's SHA-256 (:mod:`agrimon.checkpoint`).

:func:`forecast` forecasts unit-years from a :class:`YieldData` holding their season's
series (a monitor run's zonal table): it computes exactly the features the card names, or
refuses. A unit without a yield history in the model gets the mean of all training yields
as its trend (said in the ``history`` column).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from agrimon.checkpoint import load_verified, write_checkpoint
from agrimon.errors import ModelError
from agrimon.yieldcast import baselines
from agrimon.yieldcast import model as nets
from agrimon.yieldcast.blend import describe
from agrimon.yieldcast.cnn import SeasonInputs, forecast_cnn
from agrimon.yieldcast.data import YieldData
from agrimon.yieldcast.features import LEADS, Lead, season_table
from agrimon.yieldcast.forest import ForestArrays

FORMAT = "agrimon-yield/1"
#: The models a :class:`YieldModel` blends, in the order of the blend's grid.
MEMBERS: tuple[str, ...] = ("naive", "trend", "random_forest", "cnn")


@dataclass(eq=False)
class YieldModel:
    """A trained yield forecaster.

    Attributes:
        crop: Crop name.
        country: Country code ("" if none).
        indicators: Series indicators the model reads, in order.
        static: Static feature names, in order.
        steps: Season bins of the network.
        history: Training yields (``unit, year, yield``).
        forests: Residual forest per lead.
        cnn: The network members and their scaling.
        weights: Per lead, the blend weight of each of :data:`MEMBERS`.
        half_width: Per lead, the conformal half-width (t/ha) of the 80 % interval.
        card: The model card (filled when saved or loaded).
    """

    crop: str
    country: str
    indicators: tuple[str, ...]
    static: tuple[str, ...]
    steps: int
    history: pd.DataFrame
    forests: dict[str, ForestArrays]
    cnn: nets.Fitted
    weights: dict[str, dict[str, float]]
    half_width: dict[str, float]
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """A short id of the checkpoint (its SHA-256's first 12 hex digits)."""
        return str(self.card.get("sha256", "unsaved"))[:12]


def save_model(model: YieldModel, folder: Path, card: Mapping[str, Any]) -> Path:
    """Write the model's checkpoint and card into ``folder``; returns ``model.pt``."""
    tensors: dict[str, torch.Tensor] = dict(nets.state(model.cnn))
    for lead, forest in model.forests.items():
        tensors.update(forest.tensors(f"forest.{lead}."))
    history = model.history
    payload = {
        "format": FORMAT,
        "crop": model.crop,
        "country": model.country,
        "indicators": list(model.indicators),
        "static": list(model.static),
        "steps": model.steps,
        "history": {
            "unit": [str(u) for u in history["unit"]],
            "year": [int(y) for y in history["year"]],
            "yield": [float(v) for v in history["yield"]],
        },
        "cnn": {
            "scaling": model.cnn.scaling.to_dict(),
            "leads": model.cnn.leads,
            "options": vars(model.cnn.options),
        },
        "weights": model.weights,
        "half_width": model.half_width,
        "tensors": tensors,
    }
    full = {
        **card,
        "format": FORMAT,
        "crop": model.crop,
        "country": model.country,
        "features": {
            "indicators": list(model.indicators),
            "static": list(model.static),
            "season_bins": model.steps,
        },
        "blend": model.weights,
        "interval_half_width_t_ha": model.half_width,
    }
    path = write_checkpoint(folder, payload, full, card_markdown)
    model.card = full
    return path


def load_model(path: Path) -> YieldModel:
    """Load a yield checkpoint (``model.pt`` or its folder), checksum verified.

    Raises:
        ModelError: Missing, damaged or foreign checkpoint.
    """
    payload, card, where = load_verified(path, fmt=FORMAT, trainer="agrimon train yield")
    try:
        tensors = payload["tensors"]
        cnn = payload["cnn"]
        options = nets.FitOptions(**cnn["options"])
        fitted = nets.from_state(
            tensors,
            nets.Scaling.from_dict(cnn["scaling"]),
            indicators=len(payload["indicators"]),
            static=len(payload["static"]),
            leads=int(cnn["leads"]),
            steps=int(payload["steps"]),
            options=options,
        )
        forests: dict[str, ForestArrays] = {
            lead: ForestArrays.from_tensors(tensors, f"forest.{lead}.")
            for lead in LEADS
            if f"forest.{lead}.roots" in tensors
        }
        return YieldModel(
            crop=str(payload["crop"]),
            country=str(payload["country"]),
            indicators=tuple(payload["indicators"]),
            static=tuple(payload["static"]),
            steps=int(payload["steps"]),
            history=pd.DataFrame(payload["history"]).astype(
                {"unit": str, "year": "int64", "yield": "float64"}
            ),
            forests=forests,
            cnn=fitted,
            weights={k: dict(v) for k, v in payload["weights"].items()},
            half_width={k: float(v) for k, v in payload["half_width"].items()},
            card=card,
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelError(f"yield checkpoint {where} is incomplete ({err}): retrain it") from err


def check_features(model: YieldModel, data: YieldData) -> None:
    """Refuse data whose indicators or static features are not the model's.

    Raises:
        ModelError: Naming what differs and what the model needs.
    """
    if tuple(data.indicators) != model.indicators:
        raise ModelError(
            f"the yield model reads indicators {', '.join(model.indicators)} but the data "
            f"give {', '.join(data.indicators) or 'none'}: compute those indices "
            "(e.g. --indices ndvi) or train a model on these"
        )
    static = tuple(str(c) for c in data.static.columns)
    if static != model.static:
        raise ModelError(
            f"the yield model reads static features {', '.join(model.static) or 'none'} "
            f"but the data give {', '.join(static) or 'none'}: give the same, or retrain"
        )


def member_forecasts(
    model: YieldModel, data: YieldData, keys: pd.DataFrame, lead: Lead
) -> dict[str, np.ndarray]:
    """Each member's point forecast of ``keys`` (``unit, year``), and the network's p10/p90."""
    trends = baselines.fit_trends(model.history)
    out: dict[str, np.ndarray] = {
        "naive": baselines.naive(model.history, keys)["predicted"].to_numpy(),
        "trend": trends.at(keys["unit"], keys["year"]),
    }
    years = sorted(int(y) for y in keys["year"].unique())
    if lead in model.forests:
        table = season_table(data, years, lead=lead).fillna(-1.0)
        rows = baselines.feature_rows(table, keys, "forecast")
        out["random_forest"] = out["trend"] + model.forests[lead].predict(rows)
    inputs = SeasonInputs(data, tuple(years), steps=model.steps)
    quantiles = forecast_cnn(inputs, trends, model.cnn, keys, lead)
    out["cnn"] = quantiles[:, 1]
    return out


def forecast(model: YieldModel, data: YieldData, year: int, lead: Lead) -> pd.DataFrame:
    """Forecasts of every unit of ``data.calendar`` for harvest ``year`` at ``lead``.

    Args:
        model: The trained model.
        data: Series (and calendar) of the units; its yields are not used.
        year: Harvest year.
        lead: When the forecast is made; only data up to the lead date are read.

    Returns:
        ``unit, year, lead, forecast, p10, p90, model, model_version, history`` (t/ha;
        ``history``: the unit's training years in the model, 0 for a unit it never saw).
    """
    check_features(model, data)
    keys = pd.DataFrame({"unit": [str(u) for u in data.units], "year": year})
    members = member_forecasts(model, data, keys, lead)
    weights = model.weights[lead]
    point = sum(w * members[n] for n, w in weights.items() if w > 0)
    half = model.half_width[lead]
    seen = model.history.groupby("unit")["year"].nunique()
    return keys.assign(
        lead=lead,
        forecast=np.asarray(point, dtype=np.float64),
        p10=np.asarray(point, dtype=np.float64) - half,
        p90=np.asarray(point, dtype=np.float64) + half,
        model=describe(weights),
        model_version=model.version,
        history=keys["unit"].map(seen).fillna(0).astype(int).to_numpy(),
    )


def card_markdown(card: Mapping[str, Any]) -> str:
    """The human-readable model card."""
    lines = [
        f"# Yield model: {card.get('crop', '')} {card.get('country', '')}".rstrip(),
        "",
        str(card.get("summary", "")),
        "",
        f"- checkpoint: `{card.get('checkpoint')}`, SHA-256 `{card.get('sha256')}`",
        f"- trained on: {card.get('data', '')}",
        f"- features: {card.get('features')}",
        "",
        "## Blend per lead (chosen on inner out-of-fold forecasts of the training years)",
        "",
        "| lead | blend | 80 % interval ± t/ha |",
        "|---|---|---|",
    ]
    for lead, weights in card.get("blend", {}).items():
        half = card.get("interval_half_width_t_ha", {}).get(lead, float("nan"))
        lines.append(f"| {lead} | {describe(weights)} | {half:.2f} |")
    scores = card.get("backtest", {})
    if scores:
        lines += ["", "## Leave-one-year-out backtest (NRMSE %, 80 % coverage)", ""]
        lines += ["| model | " + " | ".join(LEADS) + " |", "|---|" + "---|" * len(LEADS)]
        for name, per in scores.items():
            cells = [
                f"{per[lead]['nrmse']:.2f} ({per[lead]['coverage80']:.2f})"
                for lead in LEADS
                if lead in per
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
