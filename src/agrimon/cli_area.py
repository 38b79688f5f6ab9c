"""``agrimon sample`` and ``agrimon assess``: the field check from map to reported area.

Registered on the main app by :mod:`agrimon.cli`; every error is one line and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agrimon.area.sampling import Method
from agrimon.cli import _guard, app

MapArg = Annotated[
    Path,
    typer.Argument(metavar="MAP", help="Class raster, e.g. a run's invasive_class.tif."),
]


def _floats(text: str | None, what: str) -> tuple[float, ...]:
    from agrimon.errors import ConfigError

    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} {text!r}: give numbers separated by commas") from None


@app.command("sample")
def sample(
    map_path: MapArg,
    out: Annotated[
        Path, typer.Option("--out", help="GeoPackage to write (never replaced).", metavar="FILE")
    ],
    n: Annotated[
        int | None,
        typer.Option("--n", help="Sample size (default: Cochran's formula).", metavar="N"),
    ] = None,
    allocation: Annotated[
        Method,
        typer.Option(
            help="How the points are spread over the map classes.",
            metavar="[proportional|equal|neyman]",
        ),
    ] = "proportional",
    expected_accuracy: Annotated[
        str | None,
        typer.Option(
            help="Expected user's accuracy, one value or one per class (e.g. 0.7,0.9).",
            metavar="LIST",
        ),
    ] = None,
    target_se: Annotated[
        float,
        typer.Option(
            help="Standard error of the overall accuracy to aim at (without --n).", metavar="SE"
        ),
    ] = 0.01,
    minimum: Annotated[
        int | None,
        typer.Option(help="Fewest points per class (default: 2 to 50, by n).", metavar="N"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draw.", metavar="N")] = 0,
) -> None:
    """Draw a stratified random sample of a class map for the field check.

    The GeoPackage opens styled in QGIS or QField: a point per sample unit, hollow until its
    'reference' field (a drop-down of the map's classes) is filled in. The last line
    printed is the file.
    """
    from agrimon.area.fieldcheck import SampleDesign, write_sample

    def run() -> Path:
        design = SampleDesign(
            n=n,
            allocation=allocation,
            expected_accuracy=_floats(expected_accuracy, "--expected-accuracy"),
            target_se=target_se,
            minimum=minimum,
            seed=seed,
        )
        return write_sample(map_path, out, design)

    typer.echo(str(_guard(run)))


@app.command("assess")
def assess(
    map_path: MapArg,
    reference: Annotated[
        Path,
        typer.Option(help="The filled-in sample from 'agrimon sample'.", metavar="FILE"),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write (new or empty).", metavar="DIR")
    ],
    zones: Annotated[
        Path | None,
        typer.Option(help="AOI file whose zones get their own estimates.", metavar="AOI"),
    ] = None,
    reference_field: Annotated[
        str, typer.Option(help="Field holding the reference class.", metavar="NAME")
    ] = "reference",
) -> None:
    """Estimate class areas and map accuracy, with 95 % confidence intervals.

    Writes assessment.json and assessment.csv: the error matrix in area proportions,
    overall, user's and producer's accuracy, and the area-adjusted area of every class in
    ha and % of each zone, beside the map's pixel-count (biased) area. The last line
    printed is the folder.
    """
    from agrimon.aoi import read_aoi
    from agrimon.area.fieldcheck import assess_to_folder

    def run() -> Path:
        frame = read_aoi(zones).zones if zones is not None else None
        return assess_to_folder(map_path, reference, out, zones=frame, field=reference_field)

    typer.echo(str(_guard(run)))
