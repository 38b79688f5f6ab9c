"""The ``agrimon`` command line: plan and run the monitor flow on an AOI."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from agrimon import __version__
from agrimon.aoi import DEFAULT_AOI, DEFAULT_MAX_AREA_KM2, read_aoi
from agrimon.config import DEFAULT_END, DEFAULT_OUT, DEFAULT_START, RunSpec, make_spec
from agrimon.errors import AgrimonError
from agrimon.grid import DEFAULT_TILE_PX
from agrimon.sources import SOURCES
from agrimon.sources.base import DEFAULT_CHUNK_PX

app = typer.Typer(
    name="agrimon",
    help="Agri-monitoring from Sentinel-2: vegetation, bush encroachment and yields, for QGIS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
T = TypeVar("T")
_START = datetime.combine(DEFAULT_START, datetime.min.time())
_END = datetime.combine(DEFAULT_END, datetime.min.time())

AoiArg = Annotated[
    Path | None,
    typer.Argument(
        help="AOI file (GeoJSON, GeoPackage, Shapefile, zipped Shapefile, KML). "
        "Default: the shipped Grootfontein farmland."
    ),
]
StartOpt = Annotated[
    datetime,
    typer.Option(
        "--start",
        formats=["%Y-%m-%d"],
        help="First day (YYYY-MM-DD).",
        show_default=DEFAULT_START.isoformat(),
    ),
]
EndOpt = Annotated[
    datetime,
    typer.Option(
        "--end",
        formats=["%Y-%m-%d"],
        help="Last day (YYYY-MM-DD), inclusive.",
        show_default=DEFAULT_END.isoformat(),
    ),
]
SourceOpt = Annotated[str, typer.Option("--source", help=f"Scene source: {', '.join(SOURCES)}.")]
OutOpt = Annotated[
    Path, typer.Option("--out", help="Root folder of products: <out>/<aoi>/<start>_<end>/.")
]
MaxAreaOpt = Annotated[float, typer.Option("--max-area", help="Largest AOI accepted, km².")]
TileOpt = Annotated[int, typer.Option("--tile-px", help="Tile side in pixels (10 m).")]
ChunkOpt = Annotated[
    int, typer.Option("--chunk-px", help="Dask chunk side in pixels; bounds memory.")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"agrimon {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Plan and run agrimon flows."""
    warnings.showwarning = _show_warning


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    """One line per warning on stderr, without a traceback-like source line."""
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``; a user-fixable error becomes one line on stderr and exit code 2."""
    try:
        return action()
    except AgrimonError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=err.exit_code) from None


class _NoTracebackForUserErrors(logging.Filter):
    """Drop the traceback from log records of errors the user can fix (one line is enough)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AgrimonError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_user_errors() -> None:
    """Filter the console handlers Prefect puts on the root logger when it is imported.

    The Prefect server and UI still receive the full tracebacks.
    """
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NoTracebackForUserErrors())


def _spec(
    aoi: Path | None,
    start: datetime | None,
    end: datetime | None,
    source: str,
    out: Path,
    max_area: float,
    tile_px: int,
    chunk_px: int,
) -> RunSpec:
    return make_spec(
        aoi=aoi or DEFAULT_AOI,
        start=start.date() if start else DEFAULT_START,
        end=end.date() if end else DEFAULT_END,
        source=source,
        out=out,
        max_area_km2=max_area,
        tile_px=tile_px,
        chunk_px=chunk_px,
    )


@app.command()
def run(
    aoi: AoiArg = None,
    start: StartOpt = _START,
    end: EndOpt = _END,
    source: SourceOpt = "demo",
    out: OutOpt = DEFAULT_OUT,
    max_area: MaxAreaOpt = DEFAULT_MAX_AREA_KM2,
    tile_px: TileOpt = DEFAULT_TILE_PX,
    chunk_px: ChunkOpt = DEFAULT_CHUNK_PX,
) -> None:
    """Run the monitor flow; the last line printed is the product folder."""
    spec = _guard(lambda: _spec(aoi, start, end, source, out, max_area, tile_px, chunk_px))
    # Check the AOI before starting Prefect: a bad file is answered in a second, not ten.
    _guard(lambda: read_aoi(spec.aoi, max_area_km2=spec.max_area_km2))
    # No usage telemetry from the temporary Prefect server: agencies may be on metered links.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Imported here: Prefect is slow to import and not needed by `plan` or `--help`.
    from flows.monitor import monitor

    from agrimon.progress import DaskProgress

    _quiet_user_errors()

    def go() -> Path:
        with DaskProgress(err_console, "monitor"):
            folder: Path = monitor(spec)
        return folder

    folder = _guard(go)
    typer.echo(str(folder))


@app.command()
def plan(
    aoi: AoiArg = None,
    start: StartOpt = _START,
    end: EndOpt = _END,
    source: SourceOpt = "demo",
    out: OutOpt = DEFAULT_OUT,
    max_area: MaxAreaOpt = DEFAULT_MAX_AREA_KM2,
    tile_px: TileOpt = DEFAULT_TILE_PX,
    chunk_px: ChunkOpt = DEFAULT_CHUNK_PX,
) -> None:
    """Say what a run would fetch and cost, without fetching any pixel."""
    from agrimon.monitor import make_plan

    spec = _guard(lambda: _spec(aoi, start, end, source, out, max_area, tile_px, chunk_px))
    run_plan = _guard(lambda: make_plan(spec))
    console = Console(width=None if sys.stdout.isatty() else 120)
    zones = ", ".join(
        f"{e} (UTM {e % 100}{'N' if e // 100 == 326 else 'S'})" for e in run_plan.zones
    )
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_row(
        "AOI", f"{run_plan.aoi.path} ({run_plan.aoi.name}, {len(run_plan.aoi.zones)} zones)"
    )
    summary.add_row("area", f"{run_plan.aoi.area_km2:,.1f} km²")
    summary.add_row("period", f"{spec.start} to {spec.end}")
    summary.add_row("source", spec.source)
    summary.add_row("UTM zones", zones)
    summary.add_row("tiles", f"{len(run_plan.tiles)} of up to {spec.tile_px} × {spec.tile_px} px")
    summary.add_row("scenes", f"{sum(len(t.scenes) for t in run_plan.tiles)} (tile × date)")
    summary.add_row(
        "pixels", f"{run_plan.pixels:,} per band and date; {run_plan.observations:,} pixel-dates"
    )
    summary.add_row(
        "to fetch", f"{_human_bytes(run_plan.fetch_bytes)} uncompressed (red, nir, scl)"
    )
    summary.add_row(
        "peak memory", f"about {_human_bytes(run_plan.peak_memory_bytes())} with 2 threads"
    )
    summary.add_row("products", str(spec.out / run_plan.aoi.name / spec.period))
    console.print(summary)
    tiles = Table("tile", "EPSG", "pixels", "scenes", "first", "last", "mean cloud %")
    for t in run_plan.tiles:
        clouds = [s.cloud_cover for s in t.scenes if s.cloud_cover is not None]
        tiles.add_row(
            t.tile.id,
            str(t.tile.epsg),
            f"{t.pixels:,}",
            str(len(t.scenes)),
            f"{t.scenes[0].time:%Y-%m-%d}" if t.scenes else "-",
            f"{t.scenes[-1].time:%Y-%m-%d}" if t.scenes else "-",
            f"{sum(clouds) / len(clouds):.0f}" if clouds else "-",
        )
    console.print(tiles)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


if __name__ == "__main__":
    sys.exit(app())
