"""Scheduled monitor runs as Prefect deployments, served by ``agrimon serve``.

Thin by design: :mod:`agrimon.schedules` reads the schedules file and resolves periods;
here each entry becomes a deployment of the ``scheduled-monitor`` flow, which turns the
run's scheduled time into a period, checks the inputs and runs ``monitor`` as a subflow.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from prefect import flow, runtime, serve, task
from prefect.cache_policies import NO_CACHE
from prefect.schedules import Cron, Interval
from prefect.types.entrypoint import EntrypointType

from agrimon import monitor as stages
from agrimon.config import RunSpec
from agrimon.schedules import Schedule, read_schedules, run_day, spec_for
from flows.monitor import monitor

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


@task(name="check inputs", cache_policy=NO_CACHE)
def check(spec: RunSpec) -> None:
    """The run's pre-flight checks (AOI, folders, source, scenes), before any pixel."""
    stages.preflight(spec, stages.check_inputs(spec))


@flow(name="scheduled-monitor", log_prints=True)
def scheduled_monitor(entry: dict[str, Any]) -> str:
    """Run the monitor flow for one schedules-file entry, over its period of the run day.

    Args:
        entry: The entry (``Schedule.to_dict()``: JSON, so Prefect shows it with the run).

    Returns:
        The product folder.
    """
    schedule = Schedule.from_dict(entry)
    # The scheduled time, not the start: a run that waited for a busy machine still covers
    # the period of its own day (falls back to now when run ad hoc, outside a deployment).
    scheduled: datetime = runtime.flow_run.scheduled_start_time
    day = run_day(schedule, scheduled)
    spec = spec_for(schedule, day)
    print(f"{schedule.name}: run day {day}, period {spec.start} to {spec.end} ({schedule.period})")
    check(spec)
    folder: Path = monitor(spec)
    return str(folder)


def deployment_of(schedule: Schedule, *, aoi_name: str | None = None) -> RunnerDeployment:
    """One schedules-file entry as a deployment of ``scheduled-monitor``.

    Args:
        schedule: The entry.
        aoi_name: The AOI's name (its product folder) for the tags; default the file stem.
    """
    if schedule.cron is not None:
        when = Cron(schedule.cron, timezone=schedule.timezone)
    else:
        assert schedule.interval_s is not None
        when = Interval(
            timedelta(seconds=schedule.interval_s),
            anchor_date=schedule.anchor,
            timezone=schedule.timezone,
        )
    # Called from sync code, to_deployment returns the deployment (not a coroutine).
    deployment = scheduled_monitor.to_deployment(
        name=schedule.name,
        # A schedule object rather than cron=/interval=: it carries the time zone and anchor.
        schedules=[when],
        parameters={"entry": schedule.to_dict()},
        tags=["agrimon", aoi_name or schedule.aoi.stem],
        description=f"monitor {schedule.aoi.name} over {schedule.period}, "
        f"{schedule.describe_when()}",
        # Loaded by module, not by file path: `flows` is installed, wherever serve started.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return cast("RunnerDeployment", deployment)


def deployments(schedules: list[Schedule]) -> list[RunnerDeployment]:
    """The deployments of every entry, tagged ``agrimon`` and with their AOI's name."""
    from agrimon.aoi import read_aoi

    return [deployment_of(s, aoi_name=read_aoi(s.aoi).name) for s in schedules]


def serve_schedules(path: Path) -> None:
    """Serve the deployments of the schedules file ``path`` until interrupted.

    Blocks; Prefect's runner starts each scheduled run in a subprocess of this one.
    """
    serve(*deployments(read_schedules(path)))
