"""The index stage on a real dask.distributed cluster gives the same products as local threads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from distributed import LocalCluster

from agrimon import monitor as stages
from agrimon.cluster import SCHEDULER_ENV, connect
from agrimon.errors import ConfigError

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
    # The work really ran on the workers.
    from distributed import Client

    with Client(cluster.scheduler_address) as client:
        assert len(client.scheduler_info()["workers"]) == 2


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
