"""``agrimon train invasive`` and ``agrimon predict invasive``: the encroachment model's CLI.

Registered on the main app by :mod:`agrimon.cli`; every error is one line and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from agrimon.cli import _guard, app, err_console, with_run_options
from agrimon.config import RunSpec

#: Run options that mean nothing to training and prediction of the encroachment model.
_NOT_TRAINING = (
    "out",
    "invasive_model",
    "mmu_ha",
    "reference",
    "yield_model",
    "fields",
    "compare",
    "change",
)

train_app = typer.Typer(help="Train models.", no_args_is_help=True)
predict_app = typer.Typer(help="Map with trained models.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(predict_app, name="predict")


def _opt(name: str, kind: Any, default: Any, help: str, metavar: str | None = None) -> Any:
    return (name, Annotated[kind, typer.Option(help=help, metavar=metavar)], default)


_AOI_OPT = (
    "aoi_option",
    Annotated[Path | None, typer.Option("--aoi", help="AOI file (same as the AOI argument).")],
    None,
)
_FEATURES = _opt(
    "features",
    Path | None,
    None,
    "A ready feature GeoTIFF (any bands, CRS, resolution) instead of computing features.",
    "FILE",
)
_MODEL_OUT = (
    "out",
    Annotated[Path, typer.Option("--out", help="Folder to write into (new or empty).")],
    ...,
)
_TRAIN_OPTIONS = [
    _AOI_OPT,
    _FEATURES,
    (
        "labels",
        Annotated[
            str,
            typer.Option(help="Labels file (GeoPackage, GeoJSON, Shapefile) or 'demo'."),
        ],
        ...,
    ),
    _opt("class_column", str, "class", "Column of the labels holding the class.", "NAME"),
    _opt("classes", str | None, None, "Classes to train, in order, comma-separated.", "LIST"),
    _opt(
        "target", str | None, None, "Class the probability map shows (default encroached).", "NAME"
    ),
    _MODEL_OUT,
    _opt("folds", int, 5, "Folds of the spatial cross-validation.", "K"),
    _opt("block_px", int | None, None, "Side of the spatial blocks, pixels (default: auto).", "N"),
    _opt("seed", int, 0, "Seed of every random choice.", "N"),
    _opt("max_epochs", int, 30, "Most epochs per fit.", "N"),
    _opt("models", str, "tempcnn,tempcnn-unet", "Candidate architectures.", "LIST"),
    _opt(
        "members",
        int | None,
        None,
        "Networks per model, averaged (default: 3 under 200 000 labelled pixels, else 1).",
        "N",
    ),
]


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=not sys.stderr.isatty(),
        disable=not sys.stderr.isatty(),
    )


def _run_spec(spec: RunSpec, aoi_option: Path | None, features: Path | None) -> RunSpec | None:
    if features is not None:
        return None
    return spec.model_copy(update={"aoi": aoi_option}) if aoi_option is not None else spec


@train_app.command("invasive")
@with_run_options(*_TRAIN_OPTIONS, skip=_NOT_TRAINING)
def train_invasive(
    spec: RunSpec,
    *,
    aoi_option: Path | None,
    features: Path | None,
    labels: str,
    class_column: str,
    classes: str | None,
    target: str | None,
    out: Path,
    folds: int,
    block_px: int | None,
    seed: int,
    max_epochs: int,
    models: str,
    members: int | None,
) -> None:
    """Train the encroachment model with spatial cross-validation and write its checkpoint.

    The folder gets model.pt, card.json/card.md (features, classes, split, metrics with
    baselines, checksum) and metrics.json. The last line printed is the folder.
    """
    from agrimon.errors import ConfigError
    from agrimon.invasive.model import MODEL_NAMES
    from agrimon.invasive.pipeline import TrainJob, run_training
    from agrimon.invasive.train import TrainOptions

    def job() -> TrainJob:
        names = tuple(m.strip() for m in models.split(",") if m.strip())
        unknown = [m for m in names if m not in MODEL_NAMES]
        if unknown or not names:
            raise ConfigError(
                f"--models {models!r}: choose from {', '.join(MODEL_NAMES)}, comma-separated"
            )
        if folds < 2:
            raise ConfigError(f"--folds {folds}: spatial cross-validation needs at least 2")
        if members is not None and not 1 <= members <= 16:
            raise ConfigError(f"--members {members}: give 1 to 16 networks")
        return TrainJob(
            out=out,
            labels=labels,
            class_column=class_column,
            classes=tuple(c.strip() for c in classes.split(",")) if classes else None,
            target=target,
            run=_run_spec(spec, aoi_option, features),
            features=features,
            options=TrainOptions(
                candidates=names,  # type: ignore[arg-type]
                folds=folds,
                block_px=block_px,
                seed=seed,
                max_epochs=max_epochs,
                members=members,
            ),
        )

    the_job = _guard(job)
    with _bar() as bar:
        task = bar.add_task("training", total=1.0)

        def tick(label: str, fraction: float) -> None:
            bar.update(task, description=label, completed=min(1.0, fraction))

        folder = _guard(lambda: run_training(the_job, progress=tick))
    typer.echo(str(folder))


_PREDICT_OPTIONS = [
    _AOI_OPT,
    _FEATURES,
    (
        "model",
        Annotated[Path, typer.Option(help="Checkpoint (model.pt) or its folder.")],
        ...,
    ),
    _MODEL_OUT,
]


@predict_app.command("invasive")
@with_run_options(*_PREDICT_OPTIONS, skip=_NOT_TRAINING)
def predict_invasive(
    spec: RunSpec, *, aoi_option: Path | None, features: Path | None, model: Path, out: Path
) -> None:
    """Map encroachment with a checkpoint: class, probability and uncertainty COGs.

    The last line printed is the folder.
    """
    from agrimon.invasive.mapping import predict_aoi, predict_features_file

    run = _run_spec(spec, aoi_option, features)
    if features is not None:
        written = _guard(lambda: predict_features_file(model, features, out))
    else:
        assert run is not None
        written = _guard(lambda: predict_aoi(model, run, out))
    for path in written.values():
        err_console.print(f"wrote {path}")
    typer.echo(str(out))
