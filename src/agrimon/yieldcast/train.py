"""Train the published yield model on every year of a crop's data.

The same steps as one year of the backtest, with no year held out: each model's
out-of-fold forecasts of the training years (folds of whole years) choose the blend
weights per lead and give the blend's conformal 80 % half-width; then every member is fitted
on all years: the unit histories (naive mean, trend), the residual forest per lead and the
Torch network (one for all leads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agrimon.errors import TrainingError
from agrimon.invasive.model import torch_threads
from agrimon.yieldcast import baselines, blend, conformal
from agrimon.yieldcast import model as nets
from agrimon.yieldcast.backtest import ALPHA, all_models, out_of_fold, with_season
from agrimon.yieldcast.cnn import SeasonInputs, fit_cnn
from agrimon.yieldcast.data import YieldData
from agrimon.yieldcast.features import LEADS, STEPS, season_table
from agrimon.yieldcast.forecast import MEMBERS, YieldModel
from agrimon.yieldcast.forest import ForestArrays


@dataclass(frozen=True)
class TrainYieldOptions:
    """How to train.

    Attributes:
        inner_folds: Folds of whole years for the blend and the calibration.
        seed: Seed of the forest and the network.
        cnn: Network training options (default: :class:`~agrimon.yieldcast.model.FitOptions`
            with ``seed``).
    """

    inner_folds: int = 5
    seed: int = 0
    cnn: nets.FitOptions | None = None


def train_yield_model(
    data: YieldData, options: TrainYieldOptions = TrainYieldOptions()
) -> YieldModel:
    """Fit the blend, its calibration and every member on all years of ``data``.

    Raises:
        TrainingError: Fewer than three years with season data.
    """
    yields = with_season(data)
    years = sorted(int(y) for y in yields["year"].unique())
    if len(years) < 3:
        raise TrainingError(
            f"{data.source}: {len(years)} year(s) with yields and season data; "
            "training needs at least 3 (more for a useful blend)"
        )
    cnn_options = options.cnn or nets.FitOptions(seed=options.seed)
    models = all_models(data, seed=options.seed, cnn=cnn_options)
    assert tuple(models) == MEMBERS
    weights: dict[str, dict[str, float]] = {}
    half_width: dict[str, float] = {}
    with torch_threads(1):
        lead_free: dict[str, np.ndarray] = {}
        for lead in LEADS:
            oof = {}
            for name, forecaster in models.items():
                if not forecaster.uses_season and name in lead_free:
                    oof[name] = lead_free[name]
                    continue
                part = out_of_fold(forecaster.fit_predict, yields, lead, options.inner_folds)
                oof[name] = part["predicted"].to_numpy()
                observed, oof_years = part["observed"].to_numpy(), part["year"].to_numpy()
                if not forecaster.uses_season:
                    lead_free[name] = oof[name]
            weights[lead] = blend.choose_weights(oof, observed, oof_years)
            blended = blend.blend(oof, weights[lead])
            half_width[lead] = conformal.calibrate_absolute(blended, observed, alpha=ALPHA).q_hat
        forests: dict[str, ForestArrays] = {}
        for lead in LEADS:
            table = season_table(data, years, lead=lead).fillna(-1.0)
            _, forest = baselines.fit_residual_forest(yields, table, seed=options.seed)
            forests[lead] = ForestArrays.of(forest)
        _, fitted = fit_cnn(SeasonInputs(data, tuple(years)), yields, cnn_options)
    return YieldModel(
        crop=data.crop,
        country=data.country,
        indicators=tuple(data.indicators),
        static=tuple(str(c) for c in data.static.columns),
        steps=STEPS,
        history=yields.reset_index(drop=True),
        forests=forests,
        cnn=fitted,
        weights=weights,
        half_width=half_width,
    )
