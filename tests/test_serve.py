"""Scheduled runs end to end: a real Prefect server, ``agrimon serve``, a scheduled run.

The deployments test builds Prefect deployment objects (no server); the slow test starts
``prefect server start`` and ``agrimon serve`` as the user would, waits for a scheduled run
to complete and checks its products' period against the rule of its scheduled day.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from agrimon.schedules import read_schedules, resolve_period, run_day

from .test_cli_run import _alive

BIN = Path(sys.executable).parent
#: A scheduled run of the tiny AOI must complete within this (a first run migrates nothing:
#: the server did; the run itself takes about half a minute on 2 loaded cores).
RUN_TIMEOUT_S = 360.0


def _tiny_aoi(path: Path) -> Path:
    """A ~1 km² square near 19.6°S 18.1°E (the demo world)."""
    lon, lat, side = 18.16, -19.59, 0.0095
    ring = [[lon, lat], [lon + side, lat], [lon + side, lat + side], [lon, lat + side], [lon, lat]]
    feature = {
        "type": "Feature",
        "properties": {"name": "tiny"},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def _schedules(tmp_path: Path, **when: Any) -> Path:
    _tiny_aoi(tmp_path / "tiny.geojson")
    entry = {
        "name": "tiny-often",
        "flow": "monitor",
        "parameters": {
            "aoi": "tiny.geojson",
            "source": "demo",
            "invasive_model": "none",
            "yield_model": "none",
            "phenology": False,
            "change": False,
            "tile_px": 256,
            "out": "out",
        },
        "period": "last 10 days",
        **when,
    }
    path = tmp_path / "schedules.yaml"
    path.write_text(json.dumps({"schedules": [entry]}))
    return path


def test_deployments_of_a_schedules_file(tmp_path: Path) -> None:
    from flows.deployments import deployments
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    path = _schedules(tmp_path, interval="20s")
    weekly = json.loads(path.read_text())
    weekly["schedules"].append(
        {
            **weekly["schedules"][0],
            "name": "tiny-weekly",
            "interval": None,
            "cron": "0 3 * * 1",
            "timezone": "Africa/Windhoek",
        }
    )
    del weekly["schedules"][1]["interval"]
    path.write_text(json.dumps(weekly))
    often, week = deployments(read_schedules(path))
    assert (often.name, week.name) == ("tiny-often", "tiny-weekly")
    assert often.tags == ["agrimon", "tiny"]
    assert often.entrypoint == "flows.deployments.scheduled_monitor"
    assert often.schedules and week.schedules
    interval = often.schedules[0].schedule
    assert isinstance(interval, IntervalSchedule) and interval.interval.total_seconds() == 20
    cron = week.schedules[0].schedule
    assert isinstance(cron, CronSchedule)
    assert (cron.cron, cron.timezone) == ("0 3 * * 1", "Africa/Windhoek")
    # Parameters are JSON and name the entry whole, with absolute paths.
    entry = json.loads(json.dumps(often.parameters))["entry"]
    assert entry["name"] == "tiny-often" and entry["period"] == "last 10 days"
    assert entry["parameters"]["aoi"] == str(tmp_path / "tiny.geojson")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Pids of the live descendants of ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [c for c, p in parents.items() if p in frontier]
        found += children
        frontier = children
    return found


def _tail(log: IO[bytes], path: Path) -> str:
    log.flush()
    return "\n".join(path.read_text(errors="replace").splitlines()[-40:])


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    """A real ``prefect server start`` on a free port; its API URL, env and process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_UI_ENABLED="0",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # Schedule runs within seconds of a deployment's registration, not a minute.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            began, deadline = time.monotonic(), time.monotonic() + 180
            while True:
                assert server.poll() is None, _tail(log, log_path)
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "server not healthy in 180 s"
                time.sleep(0.3)
            # Measured here on 2 loaded cores: 14–30 s to answer.
            print(f"prefect server start answered after {time.monotonic() - began:.1f} s")
            yield url, env, server
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()


@pytest.mark.slow
def test_serve_runs_a_schedule_on_a_real_server(
    tmp_path: Path, prefect_server: tuple[str, dict[str, str], subprocess.Popen[bytes]]
) -> None:
    url, env, server = prefect_server
    path = _schedules(tmp_path, interval=20)
    (schedule,) = read_schedules(path)
    work = tmp_path / "elsewhere"  # serve from a folder of its own: paths are the file's
    work.mkdir()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [str(BIN / "agrimon"), "serve", "--schedules", str(path)],
            env={**env, "PREFECT_API_URL": url},
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        theirs: set[int] = set()
        try:
            run = _wait_completed(url, schedule.name, serve, theirs, log, log_path)
        finally:
            theirs.update(_descendants(serve.pid))
            serve.send_signal(signal.SIGINT)
            try:
                code = serve.wait(timeout=60)
            except subprocess.TimeoutExpired:
                serve.kill()
                code = serve.wait()
        output = _tail(log, log_path)
    assert code == 130, output
    assert "interrupted by Ctrl-C: stopped serving the schedules" in output

    scheduled = datetime.fromisoformat(run["expected_start_time"])
    start, end = resolve_period(schedule.period, run_day(schedule, scheduled), southern=True)
    folder = tmp_path / "out" / "tiny" / f"{start}_{end}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["parameters"]["start"], manifest["parameters"]["end"]) == (
        str(start),
        str(end),
    )
    assert (folder / "ndvi_median.tif").is_file()
    # The run published its summary and a link to its report as Prefect artifacts.
    with httpx.Client(base_url=url, timeout=10) as client:
        body = {"artifacts": {"key": {"any_": ["agrimon-tiny", "agrimon-tiny-report"]}}}
        artifacts = {a["key"]: a for a in client.post("/artifacts/filter", json=body).json()}
    summary = artifacts["agrimon-tiny"]
    assert summary["type"] == "markdown"
    assert summary["data"].startswith(f"# tiny: {start} to {end}\n")
    assert "## Data quality" in summary["data"]
    link = artifacts["agrimon-tiny-report"]
    assert (folder / "report.html").resolve().as_uri() in link["data"]

    theirs.update(_descendants(server.pid), {server.pid})
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    deadline = time.monotonic() + 15
    while [p for p in theirs if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in theirs | {serve.pid} if _alive(p)]


def _wait_completed(
    url: str,
    deployment: str,
    serve: subprocess.Popen[bytes],
    theirs: set[int],
    log: IO[bytes],
    log_path: Path,
) -> dict[str, Any]:
    """The first COMPLETED flow run of ``deployment``; fails on a failed or crashed one."""
    body = {"deployments": {"name": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_ASC"}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=10) as client:
        while True:
            assert serve.poll() is None, _tail(log, log_path)
            theirs.update(_descendants(serve.pid))
            runs = client.post("/flow_runs/filter", json=body).json()
            states = {r["state"]["type"] for r in runs if r.get("state")}
            assert not states & {"FAILED", "CRASHED"}, (runs, _tail(log, log_path))
            done = [r for r in runs if r["state"] and r["state"]["type"] == "COMPLETED"]
            if done:
                return dict(done[0])
            assert time.monotonic() < deadline, (states, _tail(log, log_path))
            time.sleep(2)
