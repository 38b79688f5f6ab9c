"""Benchmark: the whole monitor on one local worker process against two.

Writes a synthetic AOI to a temporary folder: a rectangle of ``COLS`` × ``ROWS`` whole
tiles of ``TILE_PX`` px on the global 10 m grid in EPSG:32734, its north-west tile the one
holding 19.58° S 18.15° E (farmland of the demo world near Grootfontein), inset
``INSET_M`` from the tiles' edges so that every tile is full and none is a sliver. Then runs
the full monitor (``run_monitor``: plan, every tile's work, assembly of the products; demo
source, the 2023/24 season, so the shipped encroachment model maps and the demo fields are
forecast) twice, each phase in a fresh process (``multiprocessing`` spawn) and a fresh
output folder:

1. **one**: a ``distributed.LocalCluster`` of 1 worker process with 1 thread;
2. **two**: a ``LocalCluster`` of 2 worker processes with 1 thread each.

Both phases start their own cluster the same way, as ``agrimon run --workers N`` starts
its own (``agrimon.cluster.local_cluster``: no statistical profiler on the workers, as the
README's Slurm recipe sets too), but with one thread per worker, and pass its address as
``dask_address``, so both have the same per-worker setup (``agrimon run --workers 1``
would compute in the calling process, without a cluster). A phase's time runs from the
cluster's start to ``run_monitor``'s return (closing the cluster is left out of both); the
run's own time (``run_monitor`` alone) and its stages' times from ``manifest.json`` are
printed beside it.

Memory: a sampler thread in the phase's process reads each worker process's resident set
(psutil) every ``SAMPLE_S`` seconds; ``peak_tile_mb`` is the largest of them while the
worker computes a tile, less that worker's resident set as its first tile started: after
the run set every worker up (``warm_workers``: torch and the model loaded once per
process), so it is what tiles in flight hold, whatever a process loads once. The
scheduler's task stream gives each tile's worker and compute time.

``--pin-threads`` also sets dask's ``num_workers`` to 1 on every worker, so that a tile's
own dask graph (computed with the threaded scheduler inside the worker's one task thread)
uses 1 thread, not one per core.

Ends with ``speedup`` (one / two phase time; higher is better), ``peak_tile_mb`` (lower is
better) and ``km2_per_core_hour`` (AOI km² per core-hour of the two-worker phase; higher is
better). ``load_before`` is the 1-minute load average as a phase starts (the phase before
it included). About 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dask
import numpy as np
import psutil  # type: ignore[import-untyped]  # comes with dask[distributed]
from shapely.geometry import Point, box, mapping
from shapely.geometry.base import BaseGeometry

from agrimon.cluster import local_cluster
from agrimon.config import make_spec
from agrimon.grid import from_lonlat, plan_tiles, to_lonlat
from bench._measure import cpu_and_simd, in_child

#: Tile side (10 m px) and the AOI's size in whole tiles.
TILE_PX, COLS, ROWS = 256, 4, 4
#: UTM zone 34S, and the point whose tile is the AOI's north-west one.
EPSG, CORNER_LON, CORNER_LAT = 32734, 18.15, -19.58
RES_M, INSET_M = 10.0, 20.0
#: A whole season (July to June), so the shipped encroachment model maps.
START, END = date(2023, 7, 1), date(2024, 6, 30)
#: Cores the two-worker phase uses (one thread each).
CORES = 2
SAMPLE_S = 0.05
MIB = 2**20


# --- the AOI --------------------------------------------------------------------------


def aoi_geometry(tile_px: int = TILE_PX, cols: int = COLS, rows: int = ROWS) -> BaseGeometry:
    """The AOI in lon/lat: ``cols`` × ``rows`` whole tiles, inset from their edges."""
    span = tile_px * RES_M
    corner = from_lonlat(Point(CORNER_LON, CORNER_LAT), EPSG)
    col, row = math.floor(corner.x / span), math.floor(corner.y / span)
    local = box(
        col * span + INSET_M,
        (row - rows + 1) * span + INSET_M,
        (col + cols) * span - INSET_M,
        (row + 1) * span - INSET_M,
    )
    return to_lonlat(local, EPSG)


def write_aoi(folder: Path) -> Path:
    """Write the AOI as GeoJSON into ``folder``; returns its path."""
    path = folder / "scaling.geojson"
    feature = {
        "type": "Feature",
        "properties": {"name": "scaling"},
        "geometry": mapping(aoi_geometry()),
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


# --- one phase ------------------------------------------------------------------------


@dataclass
class Sampler:
    """Each watched process's resident set every ``SAMPLE_S`` seconds, in a thread.

    Attributes:
        pids: The processes, by name (the worker's address).
        samples: ``(time.time(), name, rss bytes)`` as sampled.
    """

    pids: dict[str, int]
    samples: list[tuple[float, str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}

        def sample() -> None:
            while True:
                now = time.time()
                for name, proc in procs.items():
                    with contextlib.suppress(psutil.Error):  # a worker that has exited
                        self.samples.append((now, name, int(proc.memory_info().rss)))
                if self._stop.wait(SAMPLE_S):
                    return

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def peak(self, name: str, begin: float, end: float) -> int:
        """The largest resident set of ``name`` sampled between ``begin`` and ``end``."""
        inside = [rss for t, n, rss in self.samples if n == name and begin <= t <= end]
        return max(inside, default=0)

    def first(self, name: str, begin: float) -> int:
        """The first resident set of ``name`` sampled at or after ``begin``."""
        return next((rss for t, n, rss in self.samples if n == name and t >= begin), 0)


def graph_threads() -> int:
    """Threads dask's threaded scheduler would use in this process."""
    return int(dask.config.get("num_workers", None) or dask.system.CPU_COUNT)


def pin_graph_threads() -> None:
    """Set dask's ``num_workers`` to 1 in this process (a worker), for good."""
    dask.config.set({"num_workers": 1})


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run_phase(workers: int, aoi: Path, out: Path, pin: bool) -> dict[str, Any]:
    """Start a local cluster of ``workers`` 1-thread processes and run the monitor on it.

    Args:
        workers: Worker processes.
        aoi: The AOI file.
        out: A fresh output root.
        pin: Set dask's ``num_workers`` to 1 on the workers (see the module's docstring).

    Returns:
        The phase's times, the run's stages, the workers' memory and CPU and the tiles'
        tasks (JSON-serialisable).
    """
    from distributed import Client, get_task_stream

    from agrimon.monitor import run_monitor

    load = os.getloadavg()[0]
    begin = time.perf_counter()
    cluster = local_cluster(workers, 1)
    client = Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(workers)
        started_s = time.perf_counter() - begin
        if pin:
            client.run(pin_graph_threads)
        pids: dict[str, int] = client.run(os.getpid)
        threads: dict[str, int] = client.run(graph_threads)
        idle = {name: int(psutil.Process(pid).memory_info().rss) for name, pid in pids.items()}
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        spec = make_spec(
            aoi=aoi,
            out=out,
            start=START,
            end=END,
            tile_px=TILE_PX,
            workers=workers,
            dask_address=str(cluster.scheduler_address),
        )
        run_begin = time.perf_counter()
        with Sampler(pids) as sampler, get_task_stream(client=client) as stream:
            final = run_monitor(spec)
        run_s = time.perf_counter() - run_begin
        phase_s = time.perf_counter() - begin
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        after = {name: int(psutil.Process(pid).memory_info().rss) for name, pid in pids.items()}
        tasks = []
        for record in stream.data:
            spans = [s for s in record["startstops"] if s["action"] == "compute"]
            if not spans or "run_tile" not in str(record["key"]):
                continue  # the workers' setup (warm_process) is not a tile
            t0, t1 = min(s["start"] for s in spans), max(s["stop"] for s in spans)
            name = record["worker"]
            tasks.append(
                {
                    "worker": name,
                    "start": t0,
                    "seconds": t1 - t0,
                    "rss_start": sampler.first(name, t0),
                    "rss_peak": sampler.peak(name, t0, t1),
                }
            )
    finally:
        client.close()
        cluster.close()
    manifest = json.loads((final / "manifest.json").read_text())
    return {
        "workers": workers,
        "load_before": load,
        "cluster_start_s": started_s,
        "run_s": run_s,
        "phase_s": phase_s,
        "stages": manifest["run"]["stages"],
        "area_km2": manifest["aoi"]["area_km2"],
        "scenes": [len(t["scenes"]) for t in manifest["tiles"]],
        "graph_threads": sorted(threads.values()),
        "idle_rss": idle,
        "after_rss": after,
        "cpu_s": cpu,
        "tasks": sorted(tasks, key=lambda t: t["start"]),
    }


# --- report ---------------------------------------------------------------------------


def machine() -> str:
    """CPU model, numpy's SIMD features found, cores and versions."""
    return (
        f"{cpu_and_simd()} cores={os.cpu_count()} numpy={np.__version__} "
        f"dask={version('dask')} distributed={version('distributed')}"
    )


def describe(name: str, phase: dict[str, Any]) -> None:
    """Print one phase's times, tiles, CPU and memory."""
    stages = phase["stages"]
    tiles_s = float(stages.get("tiles", 0.0))
    print(
        f"{name}: workers={phase['workers']} threads_per_worker=1 "
        f"tile_graph_threads={phase['graph_threads']} load_before={phase['load_before']:.2f}"
    )
    print(
        f"{name}_s={phase['phase_s']:.1f} {name}_cluster_start_s={phase['cluster_start_s']:.1f} "
        f"{name}_run_s={phase['run_s']:.1f} {name}_tiles_s={tiles_s:.1f} "
        f"{name}_serial_s={phase['run_s'] - tiles_s:.1f} "
        + " ".join(f"[{k}={v:.1f}]" for k, v in stages.items())
    )
    tasks = phase["tasks"]
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_worker.setdefault(task["worker"], []).append(task)
    for i, (worker, mine) in enumerate(sorted(by_worker.items())):
        busy = sum(t["seconds"] for t in mine)
        cores = phase["cpu_s"][worker] / busy if busy else float("nan")
        idle = phase["idle_rss"][worker]
        seconds = " ".join(f"{t['seconds']:.1f}" for t in mine)
        above_idle = " ".join(f"{(t['rss_peak'] - idle) / MIB:.0f}" for t in mine)
        above_start = " ".join(f"{(t['rss_peak'] - t['rss_start']) / MIB:.0f}" for t in mine)
        print(
            f"  worker{i}: tiles={len(mine)} busy_s={busy:.1f} tile_s=[{seconds}] "
            f"cpu_s={phase['cpu_s'][worker]:.1f} cores_while_busy={cores:.2f} "
            f"idle_mb={idle / MIB:.0f} after_mb={phase['after_rss'][worker] / MIB:.0f} "
            f"peak_above_idle_mb=[{above_idle}] peak_above_tile_start_mb=[{above_start}]"
        )


def first_tile_rss(phase: dict[str, Any], worker: str) -> int:
    """A worker's resident set as its first tile started: set up, torch and model loaded."""
    mine = [t for t in phase["tasks"] if t["worker"] == worker]
    return int(min(mine, key=lambda t: t["start"])["rss_start"])


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--pin-threads",
        action="store_true",
        help="also set dask num_workers=1 on the workers (a tile's graph on 1 thread)",
    )
    args = parser.parse_args()
    print(machine())
    tiles = plan_tiles(aoi_geometry(), tile_px=TILE_PX)
    with tempfile.TemporaryDirectory(prefix="agrimon-bench-") as tmp:
        folder = Path(tmp)
        aoi = write_aoi(folder)
        one = in_child(run_phase, 1, aoi, folder / "out-1", args.pin_threads)
        two = in_child(run_phase, CORES, aoi, folder / "out-2", args.pin_threads)
    km2 = float(one["area_km2"])
    print(
        f"aoi: {km2:.1f} km2, tiles={len(tiles)} ({COLS}x{ROWS}) tile_px={TILE_PX} "
        f"scenes_per_tile={sorted(set(one['scenes']))} period={START}..{END} "
        f"pin_threads={args.pin_threads}"
    )
    describe("one", one)
    describe("two", two)
    peak = max(
        t["rss_peak"] - first_tile_rss(phase, t["worker"])
        for phase in (one, two)
        for t in phase["tasks"]
    )
    t_one, t_two = one["phase_s"], two["phase_s"]
    tiles_one, tiles_two = float(one["stages"]["tiles"]), float(two["stages"]["tiles"])
    print(
        f"tiles_speedup={tiles_one / tiles_two:.3f} run_speedup={one['run_s'] / two['run_s']:.3f}"
    )
    print(f"speedup={t_one / t_two:.3f}")
    print(f"peak_tile_mb={peak / MIB:.0f}")
    print(f"km2_per_core_hour={km2 / (t_two * CORES / 3600):.1f}")


if __name__ == "__main__":
    main()
