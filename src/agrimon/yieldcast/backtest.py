"""Leave-one-year-out backtests as CY-Bench runs them, with the forecast agrimon publishes.

For every test year ``Y`` (outer loop) each model is fitted on the other years only and
forecasts ``Y`` at every lead. Inside the training years an inner cross-validation (folds of
whole years) gives each model out-of-fold forecasts of the training years; from them, and
from nothing of ``Y``,

* the conformal calibration of each model's 80 % interval (split conformal on absolute
  residuals; for the Torch model, which gives quantiles, conformalised quantile
  regression on its 10 % and 90 % quantiles; :mod:`agrimon.yieldcast.conformal`), and
* the forecast named ``agrimon``: per lead, the blend of the models whose weights give the
  lowest inner NRMSE (:mod:`agrimon.yieldcast.blend`). Where the satellite signal carries
  no skill the baselines take the weight, so ``agrimon`` falls back to them instead of
  adding noise.

Models are plain functions ``fit_predict(train_yields, test_keys, lead) -> predictions``
wrapped in a :class:`Forecaster` that says whether they read the season at all; the Torch
model joins them through the same signature. A model that does not read the season (naive,
trend) forecasts the same at every lead, so it is fitted once per test year, not per lead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from agrimon.errors import TrainingError
from agrimon.yieldcast import baselines, blend, conformal, metrics
from agrimon.yieldcast import model as nets
from agrimon.yieldcast.cnn import cnn_forecaster
from agrimon.yieldcast.data import YieldData
from agrimon.yieldcast.features import LEADS, Lead, season_table

#: ``fit_predict(train, test, lead)``: ``train`` has ``unit, year, yield``; ``test`` has
#: ``unit, year``; returns ``unit, year, predicted`` in ``test``'s order.
Model = Callable[[pd.DataFrame, pd.DataFrame, Lead], pd.DataFrame]


@dataclass(frozen=True)
class Forecaster:
    """A model of the backtest.

    Attributes:
        fit_predict: Fits on the training yields and forecasts the test unit-years.
        uses_season: Whether its forecasts depend on the lead (it reads the season).
    """

    fit_predict: Model
    uses_season: bool = True


#: Extra columns of a quantile model's forecasts: its 10 % and 90 % quantiles.
QUANTILE_COLUMNS = ("q10", "q90")

#: Miscoverage of the published interval (80 %: p10 to p90).
ALPHA = 0.2
#: The published forecast's name.
AGRIMON = "agrimon"


@dataclass(frozen=True)
class BacktestOptions:
    """How to backtest.

    Attributes:
        leads: Forecast dates (``60d``, ``90d`` after the start of season, ``eos``).
        inner_folds: Folds of whole training years for calibration and the choice of
            ``agrimon`` (0: leave-one-year-out inside too).
        test_years: Years to hold out (default: every year with at least 2 units).
        seed: Seed of every random choice.
        with_season_only: Leave out unit-years without one observation in their season
            (as CY-Bench aligns its inputs: ES maize yields start in 1998, its satellite
            series in 2001).
    """

    leads: tuple[Lead, ...] = LEADS
    inner_folds: int = 5
    test_years: tuple[int, ...] | None = None
    seed: int = 0
    with_season_only: bool = True


@dataclass(frozen=True)
class BacktestResult:
    """Every held-out forecast and the scores per model and lead.

    Attributes:
        predictions: ``model, lead, unit, year, observed, predicted, lo, hi`` (and for
            ``agrimon`` its blend weights in ``chosen``, e.g. ``"trend 0.6 + naive 0.4"``).
        scores: ``{model: {lead: {nrmse, mape, r2, coverage80, width80}}}``.
    """

    predictions: pd.DataFrame
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def baseline_models(data: YieldData, *, seed: int = 0) -> dict[str, Forecaster]:
    """Naive, trend and the residual forest on the season's features (per lead)."""
    tables: dict[str, pd.DataFrame] = {}

    def features(lead: Lead) -> pd.DataFrame:
        if lead not in tables:
            years = sorted(data.yields["year"].unique())
            tables[lead] = season_table(data, years, lead=lead).fillna(-1.0)
        return tables[lead]

    def naive(train: pd.DataFrame, test: pd.DataFrame, lead: Lead) -> pd.DataFrame:
        return baselines.naive(train, test)

    def trend(train: pd.DataFrame, test: pd.DataFrame, lead: Lead) -> pd.DataFrame:
        return baselines.trend(train, test)

    def forest(train: pd.DataFrame, test: pd.DataFrame, lead: Lead) -> pd.DataFrame:
        return baselines.residual_forest(train, test, features(lead), seed=seed)

    return {
        "naive": Forecaster(naive, uses_season=False),
        "trend": Forecaster(trend, uses_season=False),
        "random_forest": Forecaster(forest),
    }


def all_models(
    data: YieldData, *, seed: int = 0, cnn: nets.FitOptions | None = None
) -> dict[str, Forecaster]:
    """The baselines and the Torch model (``cnn``), in the order the blend weighs them."""
    options = cnn or nets.FitOptions(seed=seed)
    return {**baseline_models(data, seed=seed), "cnn": Forecaster(cnn_forecaster(data, options))}


def _year_folds(years: Sequence[int], folds: int) -> list[list[int]]:
    """Whole years dealt into folds (leave-one-year-out when ``folds`` is 0 or too many)."""
    ordered = sorted(years)
    if folds <= 0 or folds >= len(ordered):
        return [[y] for y in ordered]
    return [ordered[k::folds] for k in range(folds)]


def out_of_fold(model: Model, train: pd.DataFrame, lead: Lead, folds: int) -> pd.DataFrame:
    """Forecasts of every training unit-year by fits that did not see its year."""
    parts = []
    for held in _year_folds(train["year"].unique().tolist(), folds):
        inner_test = train[train["year"].isin(held)]
        inner_train = train[~train["year"].isin(held)]
        if inner_train["year"].nunique() < 2:
            continue
        predicted = model(inner_train, inner_test[["unit", "year"]], lead)
        parts.append(predicted.assign(observed=inner_test["yield"].to_numpy()))
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class _Fit:
    """One model's forecasts of a test year, with conformal 80 % bounds, and out of fold.

    Attributes:
        predicted: Test forecasts (``unit, year, predicted, lo, hi``).
        oof: Out-of-fold forecasts of the training years (``…, observed``).
        inner_nrmse: NRMSE of ``oof``.
    """

    predicted: pd.DataFrame
    oof: pd.DataFrame
    inner_nrmse: float


def _fit_and_calibrate(
    model: Model, train: pd.DataFrame, keys: pd.DataFrame, lead: Lead, folds: int
) -> _Fit:
    """A model's forecasts of ``keys`` with conformal 80 % bounds, and its inner skill."""
    oof = out_of_fold(model, train, lead, folds)
    predicted = model(train, keys, lead)
    if QUANTILE_COLUMNS[0] in predicted.columns:
        # A quantile model: conformalised quantile regression on its own 10 % and 90 %.
        q_lo, q_hi = QUANTILE_COLUMNS
        cal = conformal.calibrate_quantiles(oof[q_lo], oof[q_hi], oof["observed"], alpha=ALPHA)
        lo, hi = conformal.apply_quantiles(predicted[q_lo], predicted[q_hi], cal)
        predicted = predicted.drop(columns=list(QUANTILE_COLUMNS))
    else:
        lo, hi = _interval(oof, predicted["predicted"])
    inner = metrics.nrmse(oof["observed"], oof["predicted"], oof["year"])
    return _Fit(predicted.assign(lo=lo, hi=hi), oof, inner)


def _interval(oof: pd.DataFrame, predicted: pd.Series) -> tuple[Any, Any]:
    """Split-conformal 80 % bounds of ``predicted`` from out-of-fold forecasts."""
    cal = conformal.calibrate_absolute(oof["predicted"], oof["observed"], alpha=ALPHA)
    return conformal.apply_absolute(predicted, cal)


def _blended(fits: Mapping[str, _Fit]) -> tuple[pd.DataFrame, str]:
    """The ``agrimon`` forecast: the models blended with weights chosen out of fold."""
    first = next(iter(fits.values()))
    for fit in fits.values():
        if not fit.oof[["unit", "year"]].equals(first.oof[["unit", "year"]]):
            raise TrainingError("models were calibrated on different unit-years")
    oof = first.oof
    weights = blend.choose_weights(
        {n: f.oof["predicted"] for n, f in fits.items()}, oof["observed"], oof["year"]
    )
    blended_oof = oof.assign(
        predicted=blend.blend({n: f.oof["predicted"] for n, f in fits.items()}, weights)
    )
    predicted = blend.blend({n: f.predicted["predicted"] for n, f in fits.items()}, weights)
    lo, hi = _interval(blended_oof, pd.Series(predicted))
    out = first.predicted[["unit", "year"]].assign(predicted=predicted, lo=lo, hi=hi)
    return out, blend.describe(weights)


def backtest(
    data: YieldData,
    models: Mapping[str, Forecaster],
    options: BacktestOptions = BacktestOptions(),
) -> BacktestResult:
    """Leave-one-year-out backtest of ``models`` and of the ``agrimon`` choice among them.

    Raises:
        TrainingError: Fewer than three years of yields (nothing to learn a choice from).
    """
    yields = with_season(data) if options.with_season_only else data.yields
    years = sorted(yields["year"].unique().tolist())
    if len(years) < 3:
        raise TrainingError(
            f"{data.source}: yields of {len(years)} year(s) only; a backtest needs at least 3"
        )
    test_years = options.test_years or tuple(y for y in years if (yields["year"] == y).sum() >= 2)
    rows = []
    for year in test_years:
        train = yields[yields["year"] != year]
        test = yields[yields["year"] == year]
        keys = test[["unit", "year"]]
        # Forecasts and calibration of a model that ignores the lead, made once per year.
        fitted: dict[tuple[str, Lead | None], _Fit] = {}
        observed = test["yield"].to_numpy()
        for lead in options.leads:
            fits: dict[str, _Fit] = {}
            for name, forecaster in models.items():
                key = (name, lead if forecaster.uses_season else None)
                if key not in fitted:
                    fitted[key] = _fit_and_calibrate(
                        forecaster.fit_predict, train, keys, lead, options.inner_folds
                    )
                fits[name] = fitted[key]
                rows.append(
                    fits[name].predicted.assign(
                        model=name,
                        lead=lead,
                        observed=observed,
                        inner_nrmse=fits[name].inner_nrmse,
                    )
                )
            agrimon, chosen = _blended(fits)
            rows.append(agrimon.assign(model=AGRIMON, lead=lead, observed=observed, chosen=chosen))
    predictions = pd.concat(rows, ignore_index=True)
    return BacktestResult(predictions, score_table(predictions))


def with_season(data: YieldData) -> pd.DataFrame:
    """The yields of the unit-years that have at least one observation in their season."""
    if not data.indicators:
        return data.yields
    years = sorted(data.yields["year"].unique())
    table = season_table(data, years, lead="eos")
    seasonal = [c for c in table.columns if c not in data.static.columns]
    has = table[seasonal].notna().any(axis=1)
    keys = pd.MultiIndex.from_frame(data.yields[["unit", "year"]])
    keep = has.reindex(keys, fill_value=False).to_numpy()
    return data.yields[keep].reset_index(drop=True)


def score_table(predictions: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """CY-Bench scores of every model and lead, with the 80 % intervals' coverage and width."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (name, lead), part in predictions.groupby(["model", "lead"], sort=False):
        s = metrics.score(part[["year", "observed", "predicted", "lo", "hi"]])
        out.setdefault(str(name), {})[str(lead)] = {
            "nrmse": s["nrmse"],
            "mape": s["mape"],
            "r2": s["r2"],
            "coverage80": s["coverage"],
            "width80": s["mean_width"],
        }
    return out


def format_table(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """The terminal table: one row per model, NRMSE and coverage per lead."""
    leads = list(next(iter(scores.values())))
    head = ["model", *(f"NRMSE {lead}" for lead in leads), *(f"cov80 {lead}" for lead in leads)]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for name, per_lead in scores.items():
        cells = [name]
        cells += [_num(per_lead[lead]["nrmse"], 2) for lead in leads]
        cells += [_num(per_lead[lead]["coverage80"], 2) for lead in leads]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def _num(value: float, digits: int) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def chosen_counts(predictions: pd.DataFrame) -> dict[str, dict[str, int]]:
    """How often ``agrimon`` chose each blend, per lead (counted once per test year)."""
    part = predictions[predictions["model"] == AGRIMON]
    firsts = part.drop_duplicates(["lead", "year"])
    return {
        str(lead): {str(k): int(v) for k, v in g["chosen"].value_counts().items()}
        for lead, g in firsts.groupby("lead", sort=False)
    }


def nrmse_grid(result: BacktestResult) -> pd.DataFrame:
    """NRMSE per model (rows) and lead (columns) as a DataFrame."""
    return pd.DataFrame(
        {m: {lead: v["nrmse"] for lead, v in per.items()} for m, per in result.scores.items()}
    ).T
