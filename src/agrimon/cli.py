"""The ``agrimon`` command line: plan and run the monitor flow on an AOI."""

from __future__ import annotations

import inspect
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
from agrimon.cache import DEFAULT_CACHE_DIR, Cache
from agrimon.config import DEFAULT_END, DEFAULT_OUT, DEFAULT_START, RunSpec, make_spec
from agrimon.errors import AgrimonError
from agrimon.grid import DEFAULT_TILE_PX
from agrimon.sources import SOURCES, get_source
from agrimon.sources.base import DEFAULT_CHUNK_PX
from agrimon.sources.settings import Level, ShPreset, SourceSettings, StacPreset

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


# Every option of `run` and `plan`: (name, annotation, default). One list, one place.
_S = "Sources"
_RUN_OPTIONS: list[tuple[str, Any, Any]] = [
    ("aoi", AoiArg, None),
    (
        "start",
        Annotated[
            datetime,
            typer.Option(
                "--start",
                formats=["%Y-%m-%d"],
                help="First day (YYYY-MM-DD).",
                show_default=DEFAULT_START.isoformat(),
            ),
        ],
        _START,
    ),
    (
        "end",
        Annotated[
            datetime,
            typer.Option(
                "--end",
                formats=["%Y-%m-%d"],
                help="Last day (YYYY-MM-DD), inclusive.",
                show_default=DEFAULT_END.isoformat(),
            ),
        ],
        _END,
    ),
    ("source", Annotated[str, typer.Option(help=f"Scene source: {', '.join(SOURCES)}.")], "demo"),
    (
        "out",
        Annotated[Path, typer.Option(help="Root folder of products: <out>/<aoi>/<start>_<end>/.")],
        DEFAULT_OUT,
    ),
    (
        "max_area",
        Annotated[float, typer.Option(help="Largest AOI accepted, km².")],
        DEFAULT_MAX_AREA_KM2,
    ),
    ("tile_px", Annotated[int, typer.Option(help="Tile side in pixels (10 m).")], DEFAULT_TILE_PX),
    (
        "chunk_px",
        Annotated[int, typer.Option(help="Dask chunk side in pixels; bounds memory.")],
        DEFAULT_CHUNK_PX,
    ),
    (
        "indices",
        Annotated[
            str,
            typer.Option(
                help="Spectral indices to composite, comma-separated (e.g. ndvi,evi,ndmi)."
            ),
        ],
        "ndvi",
    ),
    (
        "phenology",
        Annotated[
            bool,
            typer.Option(
                "--phenology/--no-phenology",
                help="Season metrics of the first index (periods of 120 days or more).",
            ),
        ],
        True,
    ),
    (
        "dask_address",
        Annotated[
            str | None,
            typer.Option(
                help="Dask scheduler, e.g. tcp://host:8786 (else DASK_SCHEDULER_ADDRESS)."
            ),
        ],
        None,
    ),
    (
        "level",
        Annotated[
            Level, typer.Option(help="Processing level: l2a (with SCL) or l1c.", rich_help_panel=_S)
        ],
        "l2a",
    ),
    (
        "max_cloud",
        Annotated[float, typer.Option(help="Largest scene cloud cover, %.", rich_help_panel=_S)],
        80.0,
    ),
    (
        "stac_preset",
        Annotated[
            StacPreset, typer.Option(help="Public STAC API for --source stac.", rich_help_panel=_S)
        ],
        "earth-search",
    ),
    (
        "stac_url",
        Annotated[
            str | None,
            typer.Option(help="Any STAC API URL (overrides the preset's).", rich_help_panel=_S),
        ],
        None,
    ),
    (
        "local_path",
        Annotated[
            Path | None,
            typer.Option(
                help="Folder of GeoTIFFs or a static STAC catalog, for --source local.",
                rich_help_panel=_S,
            ),
        ],
        None,
    ),
    (
        "sh_preset",
        Annotated[
            ShPreset,
            typer.Option(
                help="Sentinel Hub deployment: cdse (free) or sentinel-hub.", rich_help_panel=_S
            ),
        ],
        "cdse",
    ),
    (
        "sh_base_url",
        Annotated[str | None, typer.Option(help="Sentinel Hub base URL.", rich_help_panel=_S)],
        None,
    ),
    (
        "sh_token_url",
        Annotated[str | None, typer.Option(help="OAuth2 token URL.", rich_help_panel=_S)],
        None,
    ),
    (
        "sh_client_id",
        Annotated[
            str | None,
            typer.Option(
                help="OAuth client id (else SH_CLIENT_ID, else profile).", rich_help_panel=_S
            ),
        ],
        None,
    ),
    (
        "sh_client_secret",
        Annotated[
            str | None,
            typer.Option(
                help="OAuth client secret (else SH_CLIENT_SECRET, else profile).",
                rich_help_panel=_S,
            ),
        ],
        None,
    ),
    (
        "offline",
        Annotated[
            bool,
            typer.Option(
                "--offline", help="Use only the cache; fail on a miss.", rich_help_panel=_S
            ),
        ],
        False,
    ),
    (
        "cache_dir",
        Annotated[Path, typer.Option(help="Response cache folder.", rich_help_panel=_S)],
        DEFAULT_CACHE_DIR,
    ),
    (
        "no_cache",
        Annotated[
            bool,
            typer.Option(
                "--no-cache", help="Neither read nor write the cache.", rich_help_panel=_S
            ),
        ],
        False,
    ),
    (
        "retries",
        Annotated[int, typer.Option(help="Attempts per remote call.", rich_help_panel=_S)],
        4,
    ),
]
_SETTINGS_FIELDS = (
    "level",
    "max_cloud",
    "stac_preset",
    "stac_url",
    "local_path",
    "sh_preset",
    "sh_base_url",
    "sh_token_url",
    "sh_client_id",
    "sh_client_secret",
    "offline",
    "cache_dir",
    "no_cache",
    "retries",
)


def _spec(values: dict[str, Any]) -> RunSpec:
    """The run spec from the shared options' values (one-line ConfigError when invalid)."""
    settings = {k: values[k] for k in _SETTINGS_FIELDS if values[k] is not None}
    return make_spec(
        aoi=values["aoi"] or DEFAULT_AOI,
        start=values["start"].date(),
        end=values["end"].date(),
        source=values["source"],
        out=values["out"],
        max_area_km2=values["max_area"],
        tile_px=values["tile_px"],
        chunk_px=values["chunk_px"],
        indices=values["indices"],
        phenology=values["phenology"],
        dask_address=values["dask_address"],
        source_settings=settings,
    )


def with_run_options(command: Callable[[RunSpec], None]) -> Callable[..., None]:
    """Give a command every option of ``_RUN_OPTIONS``; it receives the validated spec."""

    def wrapper(**values: Any) -> None:
        command(_guard(lambda: _spec(values)))

    params = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )
        for name, annotation, default in _RUN_OPTIONS
    ]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {name: annotation for name, annotation, _ in _RUN_OPTIONS}
    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    return wrapper


@app.command()
@with_run_options
def run(spec: RunSpec) -> None:
    """Run the monitor flow; the last line printed is the product folder."""
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
@with_run_options
def plan(spec: RunSpec) -> None:
    """Say what a run would fetch and cost, without fetching any pixel."""
    from agrimon.monitor import make_plan

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
    summary.add_row(
        "source",
        f"{spec.source} ({get_source(spec.source, spec.source_settings).describe()['endpoint']})",
    )
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


@app.command()
def sources(
    stac_url: Annotated[
        str | None, typer.Option(help="STAC API URL to show instead of the preset's.")
    ] = None,
) -> None:
    """List the sources, their endpoints and whether credentials are set (masked)."""
    settings = SourceSettings(stac_url=stac_url)
    table = Table("source", "endpoint", "credentials", "what it is")
    for name, text in SOURCES.items():
        try:
            info = get_source(name, settings).describe()
        except AgrimonError:  # e.g. local without --local-path: still list it
            info = {"endpoint": "set when run (see --help)", "credentials": "-"}
        table.add_row(name, info.get("endpoint", ""), info.get("credentials", ""), text)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


cache_app = typer.Typer(help="Inspect or clear the response cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CacheDirOpt = Annotated[Path, typer.Option(help="Response cache folder.")]


@cache_app.command("info")
def cache_info(cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR) -> None:
    """Show where the cache is, how many responses it holds and their size."""
    stats = Cache(cache_dir).stats()
    typer.echo(f"{stats.root}: {stats.entries} cached responses, {_human_bytes(stats.bytes)}")


@cache_app.command("clear")
def cache_clear(cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR) -> None:
    """Delete every cached response."""
    stats = Cache(cache_dir).clear()
    typer.echo(
        f"{stats.root}: removed {stats.entries} cached responses, {_human_bytes(stats.bytes)}"
    )


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


if __name__ == "__main__":
    sys.exit(app())
