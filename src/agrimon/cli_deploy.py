"""``agrimon deployments`` and ``agrimon serve``: scheduled monitor runs.

Registered on the main app by :mod:`agrimon.cli`; every error is one line and exit 2.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agrimon.cli import _guard, app, err_console
from agrimon.errors import AgrimonError, ConfigError, InterruptedRun
from agrimon.schedules import (
    DEFAULT_SCHEDULES,
    Schedule,
    is_southern,
    next_runs,
    read_schedules,
    resolve_period,
    run_day,
    spec_for,
)

SchedulesOpt = Annotated[
    Path,
    typer.Option(
        "--schedules",
        help="Schedules file (YAML). Default: flows/schedules.yaml of the checkout.",
        metavar="FILE",
    ),
]

#: What `serve` says when there is no server to register the deployments with.
NO_API = (
    "PREFECT_API_URL is not set: agrimon serve needs a Prefect server that keeps the "
    "schedules; start one (prefect server start) and set "
    "PREFECT_API_URL=http://127.0.0.1:4200/api"
)


@app.command()
def deployments(schedules: SchedulesOpt = DEFAULT_SCHEDULES) -> None:
    """List the scheduled runs of a schedules file, their next run and its period."""
    entries = _guard(lambda: read_schedules(schedules))
    now = datetime.now(UTC)
    table = Table("name", "AOI", "flow", "schedule", "period rule", "next run", "next period")
    for entry in entries:
        when, period = _guard(partial(_next, entry, now))
        table.add_row(
            entry.name,
            _shown(entry.aoi),
            entry.flow,
            entry.describe_when(),
            str(entry.period),
            when,
            period,
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _next(entry: Schedule, now: datetime) -> tuple[str, str]:
    """The next run time (in the schedule's zone) and the period that run will cover."""
    moment = next_runs(entry, now)[0]
    southern = is_southern(entry.aoi) if entry.period.seasonal else True
    start, end = resolve_period(entry.period, run_day(entry, moment), southern=southern)
    served = " (if served now)" if entry.interval_s is not None and entry.anchor is None else ""
    return f"{moment:%Y-%m-%d %H:%M %Z}{served}", f"{start} to {end}"


def _shown(path: Path) -> str:
    """A path relative to the working folder when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@app.command()
def serve(schedules: SchedulesOpt = DEFAULT_SCHEDULES) -> None:
    """Serve the schedules file's runs on the Prefect server in PREFECT_API_URL.

    Registers one deployment per entry and runs each when it is due, until Ctrl-C. Needs a
    Prefect server of your own (prefect server start): it keeps the schedules and the runs.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The library's records (tile progress) go to the Prefect UI as well.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "agrimon")

    def prepare() -> Path:
        entries = read_schedules(schedules)
        url = os.environ.get("PREFECT_API_URL")
        if not url:
            raise ConfigError(NO_API)
        _check_entries(entries)
        from flows.api import check_api

        check_api(url)
        return schedules

    path = _guard(prepare)
    from flows.deployments import serve_schedules

    with _interrupt_exits():
        _guard(lambda: serve_schedules(path))


def _check_entries(entries: list[Schedule]) -> None:
    """Each entry's pre-flight checks that need no network, on today's period."""
    from agrimon.monitor import check_inputs  # xarray, dask: only to serve

    for entry in entries:
        spec = spec_for(entry, run_day(entry, datetime.now(UTC)))
        try:
            check_inputs(spec)
        except AgrimonError as err:  # the checks name the input; add the entry
            raise ConfigError(
                f"schedules file '{entry.file}', entry '{entry.name}': {err}"
            ) from None


@contextmanager
def _interrupt_exits() -> Iterator[None]:
    """Ctrl-C: Prefect's runner stops its runs (it catches the interrupt), then exit 130.

    SIGTERM is Prefect's own: its runner shuts down gracefully and serve returns.
    """
    caught: list[int] = []
    previous = signal.getsignal(signal.SIGINT)

    def stop(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    except KeyboardInterrupt:  # outside the runner's loop (while it registers)
        caught.append(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        stopped = InterruptedRun("interrupted by Ctrl-C: stopped serving the schedules")
        err_console.print(f"[red]error:[/red] {stopped}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=stopped.exit_code)
