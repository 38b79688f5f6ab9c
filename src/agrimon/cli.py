"""The ``agrimon`` command line: plan and run the monitor flow on an AOI."""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer 0.25 and later carry their own click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on click
    from click import exceptions as click_errors  # type: ignore[no-redef]
from rich.console import Console
from rich.table import Table

from agrimon import __version__
from agrimon.aoi import DEFAULT_AOI, DEFAULT_MAX_AREA_KM2
from agrimon.cache import DEFAULT_CACHE_DIR, Cache
from agrimon.config import DEFAULT_END, DEFAULT_OUT, DEFAULT_START, RunSpec, make_spec
from agrimon.errors import AgrimonError, InterruptedRun
from agrimon.grid import DEFAULT_TILE_PX
from agrimon.sources import SOURCES, get_source
from agrimon.sources.base import DEFAULT_CHUNK_PX
from agrimon.sources.settings import Level, ShPreset, SourceSettings, StacPreset


class _OneLineErrors(TyperGroup):
    """The command group, with usage errors on one line and exit code 2, as every error.

    click prints a bad option value or an unknown option as a usage block of three or four
    lines; here it is one ``error:`` line naming the option and pointing at ``--help``.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        given = (args, prog_name, complete_var, False, windows_expand_args)
        if not standalone_mode:
            return super().main(*given, **extra)
        try:
            done = super().main(*given, **extra)
        except click_errors.NoArgsIsHelpError as err:  # help, as before
            err.show()
            sys.exit(err.exit_code)
        except click_errors.UsageError as err:
            where = f" (see {err.ctx.command_path} --help)" if err.ctx is not None else ""
            text = " ".join(err.format_message().split())
            err_console.print(f"[red]error:[/red] {text}{where}", highlight=False, soft_wrap=True)
            sys.exit(err.exit_code)
        except click_errors.ClickException as err:
            err.show()
            sys.exit(err.exit_code)
        except typer.Abort:
            err_console.print("Aborted!")
            sys.exit(1)
        # Without standalone mode click returns an Exit's code, else the command's result.
        sys.exit(done if isinstance(done, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="agrimon",
    help="Agri-monitoring from Sentinel-2: vegetation, bush encroachment and yields, for QGIS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err_console = Console(stderr=True)
T = TypeVar("T")

AoiArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="AOI",
        help="AOI file (GeoJSON, GeoPackage, Shapefile, zipped Shapefile, KML). "
        "Default: the shipped Grootfontein farmland.",
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
    _SHOWN.clear()  # each command shows its own warnings (tests run several in one process)
    warnings.showwarning = _show_warning


_SHOWN: set[str] = set()


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    """One line per warning on stderr, without a traceback-like source line, each once.

    The AOI is read by the checks before the flow and again in it: its warnings once.
    """
    text = str(message)
    if text in _SHOWN:
        return
    _SHOWN.add(text)
    err_console.print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``; a user-fixable error becomes one line on stderr and exit code 2.

    Ctrl-C becomes one line too, and exit code 130.
    """
    try:
        return action()
    except (AgrimonError, KeyboardInterrupt) as caught:
        err = (
            caught
            if isinstance(caught, AgrimonError)
            else InterruptedRun("interrupted by Ctrl-C: stopped; nothing was written")
        )
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=err.exit_code) from None


def _option(
    name: str, kind: Any, default: Any, help: str, metavar: str | None = None, *decls: str
) -> tuple[str, Any, Any]:
    """One entry of ``_RUN_OPTIONS``: a name, its annotated type and its default."""
    return (name, Annotated[kind, typer.Option(*decls, help=help, metavar=metavar)], default)


# Every option of `run` and `plan`: (name, annotation, default). One list, one place.
_RUN_OPTIONS: list[tuple[str, Any, Any]] = [
    ("aoi", AoiArg, None),
    (
        "start",
        Annotated[
            datetime,
            typer.Option("--start", formats=["%Y-%m-%d"], metavar="DATE", help="First day."),
        ],
        DEFAULT_START.isoformat(),
    ),
    (
        "end",
        Annotated[
            datetime,
            typer.Option(
                "--end", formats=["%Y-%m-%d"], metavar="DATE", help="Last day, inclusive."
            ),
        ],
        DEFAULT_END.isoformat(),
    ),
    _option("source", str, "demo", f"Scene source: {', '.join(SOURCES)}.", "NAME"),
    _option("out", Path, DEFAULT_OUT, "Root folder of products: OUT/AOI-NAME/START_END/.", "DIR"),
    _option("max_area", float, DEFAULT_MAX_AREA_KM2, "Largest AOI accepted, km².", "KM2"),
    _option("tile_px", int, DEFAULT_TILE_PX, "Tile side in 10 m pixels.", "PIXELS"),
    _option("chunk_px", int, DEFAULT_CHUNK_PX, "Dask chunk side; bounds memory.", "PIXELS"),
    _option("indices", str, "ndvi", "Spectral indices to composite, e.g. ndvi,evi,ndmi.", "LIST"),
    _option(
        "phenology",
        bool,
        True,
        "Season metrics of the first index (periods of 120 days or more).",
        None,
        "--phenology/--no-phenology",
    ),
    _option(
        "dask_address",
        str | None,
        None,
        "Dask scheduler, e.g. tcp://host:8786 (else DASK_SCHEDULER_ADDRESS).",
        "URL",
    ),
    _option(
        "workers",
        int,
        1,
        "Local worker processes computing tiles side by side (a local Dask cluster).",
        "N",
    ),
    _option(
        "invasive_model",
        str,
        "auto",
        "Encroachment model to map with: a checkpoint, none, or auto (the shipped demo model "
        "for demo runs).",
        "PATH",
    ),
    _option("mmu_ha", float, 0.5, "Minimum mapping unit of the encroachment polygons.", "HA"),
    _option(
        "reference",
        Path | None,
        None,
        "Filled-in field-check sample (agrimon sample): adds area estimates with 95 % CIs.",
        "FILE",
    ),
    _option(
        "yield_model",
        str,
        "auto",
        "Yield model to forecast with: a checkpoint, none, or auto (the shipped demo model "
        "for demo runs).",
        "PATH",
    ),
    _option(
        "fields",
        Path | None,
        None,
        "Fields or regions to forecast yields for (vector file, a name each); default the "
        "AOI's zones (the demo world's fields for demo runs).",
        "FILE",
    ),
    _option(
        "compare",
        Path | None,
        None,
        "Earlier run folder to map change against (default: the newest earlier run of the AOI).",
        "DIR",
    ),
    _option(
        "change",
        bool,
        True,
        "Change products against an earlier run of the AOI.",
        None,
        "--change/--no-change",
    ),
    _option(
        "force",
        bool,
        False,
        "Run again although the AOI's products for the period exist (else nothing to do).",
        None,
        "--force",
    ),
    _option("level", Level, "l2a", "Processing level: l2a (with SCL) or l1c.", "[l2a|l1c]"),
    _option("max_cloud", float, 80.0, "Largest scene cloud cover.", "PERCENT"),
    _option(
        "stac_preset",
        StacPreset,
        "earth-search",
        "Public STAC API for --source stac.",
        "[earth-search|planetary-computer|cdse]",
    ),
    _option("stac_url", str | None, None, "Any STAC API URL (overrides the preset's).", "URL"),
    _option(
        "local_path",
        Path | None,
        None,
        "Folder of GeoTIFFs or a static STAC catalog, for --source local.",
        "DIR",
    ),
    _option(
        "sh_preset",
        ShPreset,
        "cdse",
        "Sentinel Hub deployment: cdse (free) or sentinel-hub.",
        "[cdse|sentinel-hub]",
    ),
    _option("sh_base_url", str | None, None, "Sentinel Hub base URL.", "URL"),
    _option("sh_token_url", str | None, None, "OAuth2 token URL.", "URL"),
    _option(
        "sh_client_id", str | None, None, "OAuth client id (else SH_CLIENT_ID, else profile).", "ID"
    ),
    _option(
        "sh_client_secret",
        str | None,
        None,
        "OAuth client secret (else SH_CLIENT_SECRET, else profile).",
        "SECRET",
    ),
    _option("offline", bool, False, "Use only the cache; fail on a miss.", None, "--offline"),
    _option("cache_dir", Path, DEFAULT_CACHE_DIR, "Response cache folder.", "DIR"),
    _option("no_cache", bool, False, "Neither read nor write the cache.", None, "--no-cache"),
    _option("retries", int, 4, "Attempts per remote call.", "N"),
    _option(
        "timeout_s",
        float,
        60.0,
        "Seconds to wait for a remote reply before trying again.",
        "SECONDS",
        "--timeout",
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
    "timeout_s",
)


def _spec(values: dict[str, Any]) -> RunSpec:
    """The run spec from the shared options' values (one-line ConfigError when invalid)."""
    settings = {k: values[k] for k in _SETTINGS_FIELDS if values[k] is not None}
    return make_spec(
        aoi=values["aoi"] or DEFAULT_AOI,
        start=values["start"].date(),
        end=values["end"].date(),
        source=values["source"],
        out=values.get("out", DEFAULT_OUT),
        max_area_km2=values["max_area"],
        tile_px=values["tile_px"],
        chunk_px=values["chunk_px"],
        indices=values["indices"],
        phenology=values["phenology"],
        invasive_model=values.get("invasive_model", "auto"),
        mmu_ha=values.get("mmu_ha", 0.5),
        reference=values.get("reference"),
        yield_model=values.get("yield_model", "auto"),
        fields=values.get("fields"),
        compare=values.get("compare"),
        change=values.get("change", True),
        force=values.get("force", False),
        dask_address=values["dask_address"],
        workers=values.get("workers", 1),
        source_settings=settings,
    )


def with_run_options(
    *extra: tuple[str, Any, Any], skip: tuple[str, ...] = ()
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command every option of ``_RUN_OPTIONS`` (but ``skip``) and ``extra``.

    The command receives the validated spec, and the ``extra`` options as keywords.
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        names = [name for name, _, _ in extra]

        def wrapper(**values: Any) -> None:
            rest = {name: values.pop(name) for name in names}
            command(_guard(lambda: _spec(values)), **rest)

        options = [*(o for o in _RUN_OPTIONS if o[0] not in skip), *extra]
        params = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
            for name, annotation, default in options
        ]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {name: annotation for name, annotation, _ in options}
        wrapper.__name__ = command.__name__
        wrapper.__doc__ = command.__doc__
        return wrapper

    return decorate


_VERBOSE: tuple[str, Any, Any] = (
    "verbose",
    Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Also show Prefect's log lines (flow and task runs)."),
    ],
    False,
)


@app.command()
@with_run_options(_VERBOSE)
def run(spec: RunSpec, *, verbose: bool = False) -> None:
    """Run the monitor flow on an AOI and write its products.

    The last line printed is the product folder.
    """
    # No usage telemetry from a Prefect server: agencies may be on metered links.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Imported here: Prefect and its runner are slow to import, not needed by `plan`.
    from flows.runner import run_from_cli

    folder = _guard(lambda: run_from_cli(spec, console=err_console, verbose=verbose))
    typer.echo(str(folder))


@app.command()
@with_run_options(skip=("force",))
def plan(spec: RunSpec) -> None:
    """Say what a run would fetch and cost, without fetching any pixel."""
    from agrimon.monitor import make_plan, require_scenes

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
        "to fetch", f"{_human_bytes(run_plan.fetch_bytes)} uncompressed ({_bands_text(spec)})"
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
    # A plan that cannot run says so, like the run would, before any pixel is fetched.
    _guard(lambda: require_scenes(run_plan))


@app.command()
def sources(
    stac_url: Annotated[
        str | None,
        typer.Option(help="STAC API URL to show instead of the preset's.", metavar="URL"),
    ] = None,
) -> None:
    """List the sources, their endpoints and credentials.

    Secrets are masked.
    """
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
CacheDirOpt = Annotated[Path, typer.Option(help="Response cache folder.", metavar="DIR")]


@cache_app.command("info")
def cache_info(cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR) -> None:
    """Show how many responses the cache holds, and their size."""
    stats = _guard(Cache(cache_dir).stats)
    typer.echo(f"{stats.root}: {stats.entries} cached responses, {_human_bytes(stats.bytes)}")


@cache_app.command("clear")
def cache_clear(cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR) -> None:
    """Delete the cached responses, and nothing else.

    A folder that is not an agrimon cache is refused.
    """
    stats = _guard(Cache(cache_dir).clear)
    typer.echo(
        f"{stats.root}: removed {stats.entries} cached responses, {_human_bytes(stats.bytes)}"
    )


labels_app = typer.Typer(
    help="Training labels for the bush-encroachment model.", no_args_is_help=True
)
app.add_typer(labels_app, name="labels")


@labels_app.command("template")
def labels_template(
    aoi: AoiArg = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="GeoPackage to write (.gpkg); an existing file is refused.",
            metavar="FILE",
        ),
    ] = Path("labels.gpkg"),
    classes: Annotated[
        str,
        typer.Option(
            help="Classes of the drop-down, comma-separated (open: grassland, not encroached).",
            metavar="LIST",
        ),
    ] = "encroached,open",
) -> None:
    """Write an empty GeoPackage to draw training labels in, with the AOI outline.

    Open it in QGIS: each polygon drawn on its layer 'labels' gets its class from a
    drop-down, and is coloured by class.
    """
    from agrimon.invasive.labels import TEMPLATE_LAYER, write_template

    names = tuple(c.strip() for c in classes.split(","))
    path = _guard(lambda: write_template(aoi or DEFAULT_AOI, out, names))
    typer.echo(
        f"wrote {path}: open it in QGIS, draw polygons on its layer '{TEMPLATE_LAYER}' "
        f"inside the AOI outline and pick a class ({', '.join(names)}) for each"
    )


def _bands_text(spec: RunSpec) -> str:
    """The bands a run loads, shortly: ``red, nir, scl``, or all of them for a model."""
    from agrimon.plan import monitor_bands

    bands = monitor_bands(spec)
    if len(bands) > 4:
        return f"all {len(bands) - 1} bands and scl: the encroachment model needs them"
    return ", ".join(bands)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# The model commands register themselves on `app` (imported last: they use its helpers).
import agrimon.cli_area  # noqa: E402
import agrimon.cli_deploy  # noqa: E402
import agrimon.cli_invasive  # noqa: E402
import agrimon.cli_yield  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(app())
