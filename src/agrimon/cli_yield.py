"""``agrimon yield backtest``: CY-Bench-style backtests of the yield forecasts.

Registered on the main app by :mod:`agrimon.cli`; every error is one line and exit 2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agrimon.cli import _guard, app, err_console
from agrimon.cli_invasive import train_app
from agrimon.errors import ConfigError, ProductError, TrainingError, YieldDataError

if TYPE_CHECKING:
    import pandas as pd

    from agrimon.yieldcast.data import YieldData

#: Fewest harvest years a backtest can run on: one held out, and the inner cross-validation
#: of the others needs two years to fit on besides the one it holds out.
MIN_BACKTEST_YEARS = 4

yield_app = typer.Typer(help="Crop-yield forecasts per field and region.", no_args_is_help=True)
app.add_typer(yield_app, name="yield")


@yield_app.command("backtest")
def backtest(
    data: Annotated[
        Path,
        typer.Option(help="Folder of <crop>/<CC>/ CY-Bench tables.", metavar="DIR"),
    ],
    crop: Annotated[str, typer.Option(help="Crop, e.g. maize.", metavar="NAME")],
    country: Annotated[str, typer.Option(help="Country code, e.g. ES.", metavar="CC")],
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json", help="Write the scores (and a CSV of every forecast).", metavar="FILE"
        ),
    ] = None,
    drop_flagged: Annotated[
        bool,
        typer.Option(help="Leave out the unit-years the quality check flags."),
    ] = False,
    inner_folds: Annotated[
        int,
        typer.Option(
            help="Folds of training years for intervals and the choice (0: leave one year out).",
            metavar="K",
        ),
    ] = 5,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.", metavar="N")] = 0,
    models: Annotated[
        str,
        typer.Option(
            help="Models to backtest and blend, comma-separated (naive, trend, "
            "random_forest, cnn); fewer is faster.",
            metavar="LIST",
        ),
    ] = "naive,trend,random_forest,cnn",
    strict: Annotated[
        bool,
        typer.Option(
            help="Refuse units without a crop calendar or with one year of yields, instead "
            "of leaving them out with a note."
        ),
    ] = False,
) -> None:
    """Leave-one-year-out backtest: NRMSE as CY-Bench computes it, per model and lead.

    Every model (naive, trend, random forest on trend residuals, the Torch 1D-CNN) and
    the published forecast, agrimon (their blend, weighted on the training years only),
    are scored on the same held-out years, with their 80 % intervals' coverage and
    width. Units the data cannot use (no crop calendar, one year of yields) are left out
    with one note line per reason on standard error; --strict refuses them instead.
    """
    from agrimon.invasive.model import torch_threads
    from agrimon.yieldcast.backtest import (
        BacktestOptions,
        all_models,
        chosen_counts,
        format_table,
        with_season,
    )
    from agrimon.yieldcast.backtest import backtest as run_backtest
    from agrimon.yieldcast.forecast import MEMBERS

    def run() -> None:
        if inner_folds < 0 or inner_folds == 1:
            raise ConfigError(
                f"--inner-folds {inner_folds}: give 0 (leave one year out) or 2 folds or more"
            )
        names = [m.strip() for m in models.split(",") if m.strip()]
        unknown = sorted(set(names) - set(MEMBERS))
        if unknown or not names:
            raise ConfigError(
                f"--models {models!r}: choose from {', '.join(MEMBERS)}, comma-separated"
            )
        used, flags = load_checked(data, crop, country, strict=strict, drop_flagged=drop_flagged)
        check_backtestable(used, with_season(used)["year"])
        every = all_models(used, seed=seed)
        chosen = {n: every[n] for n in MEMBERS if n in names}
        with torch_threads(1):
            result = run_backtest(used, chosen, BacktestOptions(inner_folds=inner_folds, seed=seed))
        typer.echo(format_table(result.scores))
        typer.echo(f"agrimon chose (test years per lead): {chosen_counts(result.predictions)}")
        if json_path is not None:
            payload = {
                "crop": used.crop,
                "country": used.country,
                "flagged": len(flags),
                "drop_flagged": drop_flagged,
                "models": result.scores,
            }
            try:
                json_path.write_text(json.dumps(payload, indent=2) + "\n")
                result.predictions.to_csv(json_path.with_suffix(".csv"), index=False)
            except OSError as err:
                raise ProductError(
                    f"--json {json_path} cannot be written ({err.strerror or err}): choose a "
                    "file in an existing, writable folder"
                ) from err

    _guard(run)


def load_checked(
    data: Path, crop: str, country: str, *, strict: bool, drop_flagged: bool
) -> tuple[YieldData, pd.DataFrame]:
    """Read CY-Bench data, print the notes and the quality check, drop flagged if asked.

    Returns:
        The data to use and the flagged unit-years.
    """
    from agrimon.yieldcast.cybench import read_cybench
    from agrimon.yieldcast.quality import drop_flagged as drop
    from agrimon.yieldcast.quality import flag_implausible

    loaded = read_cybench(data, crop, country, incomplete="error" if strict else "drop")
    for note in dropped_notes(loaded.dropped) + [f"note: {n}" for n in loaded.notes]:
        err_console.print(note, highlight=False, soft_wrap=True)
    flags = flag_implausible(loaded)
    shown = ", ".join(f"{r.unit} {r.year}" for r in flags.head(8).itertuples())
    more = f" and {len(flags) - 8} more" if len(flags) > 8 else ""
    verb = "left out" if drop_flagged else "kept (use --drop-flagged to leave them out)"
    err_console.print(
        f"quality check: {len(flags)} implausible unit-year(s) {verb}"
        + (f": {shown}{more}" if len(flags) else ""),
        highlight=False,
        soft_wrap=True,
    )
    return (drop(loaded, flags) if drop_flagged else loaded), flags


def dropped_notes(dropped: Mapping[str, str]) -> list[str]:
    """One note line per reason the reader left units out, naming the units.

    Args:
        dropped: Unit → why it was left out (``YieldData.dropped``).

    Returns:
        Lines such as ``note: 3 units without a crop calendar left out: ES704, ES706, ES708;
        pass --strict to refuse them``, in the order the reasons first appear.
    """
    from agrimon.yieldcast.data import MIN_YEARS, listing

    # How a note names the units left out for each reason the reader gives.
    left_out = {
        "no crop calendar": "without a crop calendar",
        f"yields of fewer than {MIN_YEARS} years": f"with yields of fewer than {MIN_YEARS} years",
    }
    by_reason: dict[str, list[str]] = {}
    for unit, reason in dropped.items():
        by_reason.setdefault(reason, []).append(unit)
    lines = []
    for reason, units in by_reason.items():
        n = len(units)
        what = left_out.get(reason, f"({reason})")
        lines.append(
            f"note: {n} unit{'s' if n != 1 else ''} {what} left out: {listing(sorted(units))}; "
            f"pass --strict to refuse {'them' if n != 1 else 'it'}"
        )
    return lines


def check_backtestable(data: YieldData, years: pd.Series) -> None:
    """Refuse data a backtest cannot run on, with a line saying what to add.

    Args:
        data: The data to backtest (after the quality step).
        years: The harvest year of every unit-year the backtest uses (those with predictor
            data in their season).

    Raises:
        YieldDataError: The data has no predictor (time series or static feature).
        TrainingError: Fewer than :data:`MIN_BACKTEST_YEARS` harvest years, or no year
            with yields of two units or more.
    """
    if not data.indicators and data.static.shape[1] == 0:
        raise YieldDataError(
            f"{data.source} has no predictors: besides the yields and the crop calendar the "
            f"backtest needs a time series (a CSV with a date column, such as "
            f"ndvi_{data.crop}_{data.country}.csv) or static features (such as "
            f"soil_{data.crop}_{data.country}.csv)"
        )
    counts = years.value_counts()
    n_years, all_years = len(counts), data.yields["year"].nunique()
    if n_years < MIN_BACKTEST_YEARS:
        of = (
            f" with predictor data in their season (of {all_years} with yields)"
            if n_years < all_years
            else ""
        )
        raise TrainingError(
            f"{data.source}: yields of {n_years} harvest year(s){of}; a backtest needs at "
            f"least {MIN_BACKTEST_YEARS} (each held-out year is forecast from the others, "
            "which are cross-validated in turn): add years"
        )
    if (counts < 2).all():
        raise TrainingError(
            f"{data.source}: no harvest year has yields of two units or more "
            f"({len(data.units)} unit(s): {', '.join(data.units[:5])}); a backtest scores "
            "each held-out year over its units: add units"
        )


@train_app.command("yield")
def train_yield(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Model folder to write (default models/yield-<crop>-<cc>; must not exist).",
            metavar="DIR",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder of <crop>/<CC>/ CY-Bench tables.", metavar="DIR"),
    ] = None,
    crop: Annotated[str | None, typer.Option(help="Crop, e.g. maize.", metavar="NAME")] = None,
    country: Annotated[
        str | None, typer.Option(help="Country code, e.g. ES.", metavar="CC")
    ] = None,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Train on the demo world's field history instead of --data."),
    ] = False,
    aoi: Annotated[
        Path | None,
        typer.Option(help="With --demo: the area whose fields to learn from.", metavar="AOI"),
    ] = None,
    seasons: Annotated[
        str,
        typer.Option(help="With --demo: harvest years, e.g. 2016-2023.", metavar="FIRST-LAST"),
    ] = "2016-2023",
    drop_flagged: Annotated[
        bool, typer.Option(help="Leave out the unit-years the quality check flags.")
    ] = False,
    strict: Annotated[
        bool, typer.Option(help="Refuse incomplete units instead of leaving them out.")
    ] = False,
    inner_folds: Annotated[
        int, typer.Option(help="Folds of training years for the blend and intervals.", metavar="K")
    ] = 5,
    score: Annotated[
        bool,
        typer.Option(
            "--backtest/--no-backtest",
            help="Also run the leave-one-year-out backtest and record it in the card.",
        ),
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.", metavar="N")] = 0,
) -> None:
    """Train the published yield forecaster and write its checkpoint and model card.

    The folder gets model.pt (loads with weights_only), card.json and card.md: the data,
    the features, the blend chosen per lead on the training years, the interval width and,
    with --backtest, the backtest table of every model and the baselines. The last line
    printed is the folder.
    """
    from agrimon.invasive.model import torch_threads
    from agrimon.yieldcast.backtest import BacktestOptions, all_models, with_season
    from agrimon.yieldcast.backtest import backtest as run_backtest
    from agrimon.yieldcast.train import TrainYieldOptions, train_yield_model

    def load() -> tuple[YieldData, Path, dict[str, object]]:
        if inner_folds < 0 or inner_folds == 1:
            raise ConfigError(
                f"--inner-folds {inner_folds}: give 0 (leave one year out) or 2 folds or more"
            )
        if demo == (data is not None):
            raise ConfigError("give either --data DIR (with --crop and --country) or --demo")
        if demo:
            used, described = _demo_data(aoi, seasons)
        else:
            if not crop or not country:
                raise ConfigError(
                    "--data needs --crop and --country, e.g. --crop maize --country ES"
                )
            assert data is not None
            used, _ = load_checked(data, crop, country, strict=strict, drop_flagged=drop_flagged)
            described = {"data": f"CY-Bench {used.crop} {used.country} from {data}"}
        folder = out or Path("models") / f"yield-{used.crop}-{used.country.lower() or 'xx'}"
        if folder.exists():
            raise ConfigError(
                f"--out {folder} exists: choose a new folder (a model is never overwritten)"
            )
        check_backtestable(used, with_season(used)["year"])
        return used, folder, described

    used, folder, described = _guard(load)

    def train() -> None:
        with torch_threads(1):
            model = train_yield_model(used, TrainYieldOptions(inner_folds=inner_folds, seed=seed))
            scores = {}
            if score:
                result = run_backtest(
                    used,
                    all_models(used, seed=seed),
                    BacktestOptions(inner_folds=inner_folds, seed=seed),
                )
                scores = result.scores
                typer.echo(format_table(scores))
        from agrimon.yieldcast.forecast import save_model

        save_model(model, folder, card_of(used, described, scores, seed, inner_folds))

    from agrimon.yieldcast.backtest import format_table

    _guard(train)
    typer.echo(str(folder))


def _demo_data(aoi: Path | None, seasons: str) -> tuple[YieldData, dict[str, object]]:
    """The demo world's field history over ``aoi`` (default: the default AOI)."""
    from agrimon.aoi import DEFAULT_AOI, read_aoi
    from agrimon.yieldcast.demo import demo_history

    first, _, last = seasons.partition("-")
    try:
        years = list(range(int(first), int(last or first) + 1))
    except ValueError:
        raise ConfigError(
            f"--seasons {seasons!r}: give harvest years as FIRST-LAST, e.g. 2016-2023"
        ) from None
    if len(years) < 4:
        raise ConfigError(f"--seasons {seasons}: give at least 4 harvest years to learn from")
    area = read_aoi(aoi or DEFAULT_AOI)
    history = demo_history(area.geometry, years)
    return history, {
        "data": (
            f"demo world field history: {len(history.units)} fields of AOI {area.name}, "
            f"harvest years {years[0]}–{years[-1]} (NDVI from the demo scenes at 30 m)"
        )
    }


def card_of(
    data: YieldData,
    described: Mapping[str, object],
    scores: Mapping[str, object],
    seed: int,
    inner_folds: int,
) -> dict[str, object]:
    """The model card's content besides what the checkpoint writer adds."""
    from datetime import UTC, datetime

    calendar = data.calendar
    units = {
        str(u): {"sos": float(s), "eos": float(e)}
        for u, s, e in zip(calendar["unit"], calendar["sos"], calendar["eos"], strict=True)
    }
    return {
        **described,
        "summary": (
            "Yield forecast per field or region: a blend of the unit's mean, its trend, a "
            "random forest and a 1D-CNN on the season's series, weighted per lead on "
            "out-of-fold forecasts of the training years, with split-conformal 80 % intervals."
        ),
        "units": len(data.units),
        "years": list(data.years),
        "unit_years": len(data.yields),
        "calendar": {
            "units": units,
            "regional": {
                "sos": float(calendar["sos"].median()),
                "eos": float(calendar["eos"].median()),
            },
        },
        "seed": seed,
        "inner_folds": inner_folds,
        "trained": datetime.now(UTC).isoformat(timespec="seconds"),
        "backtest": scores,
    }
