"""The index stage on a real dask.distributed cluster gives the same products as local threads."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import rasterio
from distributed import LocalCluster

from agrimon import monitor as stages
from agrimon.cluster import (
    SCHEDULER_ENV,
    assembly_pool,
    connect,
    run_jobs,
    tile_cluster,
    warm_workers,
)
from agrimon.errors import ConfigError
from agrimon.malloc import adaptive_mmap_threshold

from .conftest import demo_spec


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A scheduler and two worker processes on 127.0.0.1."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as local:
        yield local


@pytest.mark.slow
def test_cluster_run_equals_local_run(cluster: LocalCluster, tmp_path: Path) -> None:
    base = demo_spec(tmp_path / "local").model_copy(update={"end": date(2024, 1, 31)})
    local = stages.run_monitor(base)
    remote_spec = base.model_copy(
        update={"out": tmp_path / "cluster", "dask_address": cluster.scheduler_address}
    )
    remote = stages.run_monitor(remote_spec)
    for name in ("ndvi_median", "clear_count"):
        with rasterio.open(local / f"{name}.tif") as a, rasterio.open(remote / f"{name}.tif") as b:
            assert a.transform == b.transform
            np.testing.assert_array_equal(a.read(1), b.read(1))
    # The work really ran on the two workers, one tile per task.
    from distributed import Client

    with Client(cluster.scheduler_address) as client:
        pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids
    assert _computed_by(remote) <= pids and len(_computed_by(remote)) == 2
    assert _computed_by(local) == {os.getpid()}


def test_every_worker_is_set_up_once_before_the_tiles(cluster: LocalCluster) -> None:
    pids = warm_workers(str(cluster.scheduler_address), os.getpid)
    # One setup task per worker, each on its own worker process, none here.
    assert len(pids) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in pids)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()


def test_pictures_are_drawn_on_the_workers_and_in_turn_without_a_cluster(
    cluster: LocalCluster,
) -> None:
    jobs = {name: partial(_pid_and, name) for name in ("ndvi_median", "clear_count", "chart")}
    with assembly_pool(str(cluster.scheduler_address)) as pool:
        assert pool is not None
        remote = run_jobs(jobs, pool)
    from distributed import Client

    with Client(cluster.scheduler_address) as client:
        workers = set(client.run(os.getpid).values())
    assert [r[1] for r in remote.values()] == list(jobs)  # each job's own result, by key
    assert {r[0] for r in remote.values()} <= workers
    with assembly_pool(None) as none:
        assert none is None
        here = run_jobs(jobs, none)
    assert {r[0] for r in here.values()} == {os.getpid()}


def _pid_and(name: str) -> tuple[int, str]:
    return os.getpid(), name


def test_workers_tune_their_allocator_and_agrimons_own_run_no_profiler(
    cluster: LocalCluster,
) -> None:
    from distributed import Client

    # Here nothing changes; a nanny's worker (MALLOC_TRIM_THRESHOLD_ set) is tuned.
    assert "MALLOC_TRIM_THRESHOLD_" in os.environ or adaptive_mmap_threshold() is False
    tuned = warm_workers(str(cluster.scheduler_address), adaptive_mmap_threshold)
    with Client(cluster.scheduler_address) as client:
        profiled = client.run(_profiler_on)
    assert len(tuned) == 2
    assert sys.platform != "linux" or set(tuned.values()) == {True}
    assert set(profiled.values()) == {True}  # dask's default, on a cluster not ours
    with tile_cluster(None, workers=2) as address, Client(address) as client:
        assert set(client.run(_profiler_on).values()) == {False}
        assert len(client.run(os.getpid)) == 2


def _profiler_on() -> bool:
    import dask

    return bool(dask.config.get("distributed.worker.profile.enabled"))


def _computed_by(folder: Path) -> set[int]:
    """Pids of the processes that computed the run's tiles (from its manifest)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return {int(t["worker"].rsplit(":", 1)[1]) for t in manifest["tiles"]}


def test_address_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, cluster: LocalCluster
) -> None:
    monkeypatch.setenv(SCHEDULER_ENV, cluster.scheduler_address)
    with connect(None) as where:
        assert where == cluster.scheduler_address
    monkeypatch.delenv(SCHEDULER_ENV)
    with connect(None) as where:
        assert where == "local threads"


def test_unreachable_scheduler_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError) as err, connect("tcp://127.0.0.1:9", timeout_s=2):
        pass
    assert "tcp://127.0.0.1:9" in str(err.value) and "\n" not in str(err.value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_the_cli_on_a_scheduler_and_two_worker_processes_equals_a_local_run(
    tmp_path: Path,
) -> None:
    from .test_cli_run import SHORT, _env, _run, _wait_gone

    bin_dir = Path(sys.executable).parent
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = _env(tmp_path / "prefect")
    started = [
        subprocess.Popen(
            [
                str(bin_dir / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for _ in range(2):
            started.append(
                subprocess.Popen(
                    [
                        str(bin_dir / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            pids = set(client.run(os.getpid).values())
        args = ["run", *SHORT, "--no-phenology"]
        local = _run([*args, "--out", str(tmp_path / "local")], env)
        assert local.returncode == 0, local.stderr[-3000:]
        remote = _run([*args, "--out", str(tmp_path / "cluster"), "--dask-address", address], env)
        assert remote.returncode == 0, remote.stderr[-3000:]
        a = Path(local.stdout.strip().splitlines()[-1])
        b = Path(remote.stdout.strip().splitlines()[-1])
        digests = [
            {
                str(p.relative_to(f)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted([*f.glob("*.tif"), *f.glob("pictures/*.png")])
            }
            for f in (a, b)
        ]
        # The COGs, and the pictures the cluster's workers drew.
        assert digests[0] == digests[1] and len(digests[0]) >= 4
        assert any(name.startswith("pictures/") for name in digests[0])
        assert _computed_by(b) == pids  # every tile on a worker, both workers used
    finally:
        for proc in reversed(started):
            proc.terminate()
        for proc in started:
            proc.wait(timeout=30)
    assert _wait_gone([p.pid for p in started]) == []
