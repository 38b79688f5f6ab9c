"""``agrimon yield backtest``: CY-Bench-style backtests of the yield forecasts.

Registered on the main app by :mod:`agrimon.cli`; every error is one line and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agrimon.cli import _guard, app, err_console

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
) -> None:
    """Leave-one-year-out backtest: NRMSE as CY-Bench computes it, per model and lead.

    Every model (naive, trend, random forest on trend residuals) and the published
    forecast, agrimon (chosen among them on the training years only), are scored on the
    same held-out years, with their 80 % intervals' coverage and width.
    """
    from agrimon.yieldcast.backtest import (
        BacktestOptions,
        baseline_models,
        chosen_counts,
        format_table,
    )
    from agrimon.yieldcast.backtest import backtest as run_backtest
    from agrimon.yieldcast.cybench import read_cybench
    from agrimon.yieldcast.quality import drop_flagged as drop
    from agrimon.yieldcast.quality import flag_implausible

    def run() -> None:
        loaded = read_cybench(data, crop, country)
        flags = flag_implausible(loaded)
        shown = ", ".join(f"{r.unit} {r.year}" for r in flags.head(8).itertuples())
        more = f" and {len(flags) - 8} more" if len(flags) > 8 else ""
        verb = "left out" if drop_flagged else "kept (use --drop-flagged to leave them out)"
        err_console.print(
            f"quality check: {len(flags)} implausible unit-year(s) {verb}"
            + (f": {shown}{more}" if len(flags) else ""),
            highlight=False,
        )
        used = drop(loaded, flags) if drop_flagged else loaded
        result = run_backtest(
            used,
            baseline_models(used, seed=seed),
            BacktestOptions(inner_folds=inner_folds, seed=seed),
        )
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
            json_path.write_text(json.dumps(payload, indent=2) + "\n")
            result.predictions.to_csv(json_path.with_suffix(".csv"), index=False)

    _guard(run)
