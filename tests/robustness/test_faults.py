"""Fault injection: whole runs of the command line against services and a cluster that fail.

Each case runs the real console script against the loopback fakes of a STAC API and of
Sentinel Hub, armed with faults (429 storms, 503 bursts, connections reset mid-body, replies
slower than ``--timeout``), against a cache whose entries were damaged, and on a local Dask
cluster that loses a worker mid-tile. A run either completes with products byte for byte
those of a fault-free run, or stops with one ``error:`` line naming what failed and exit
code 2, with no product folder and no lock left: the same command then completes and
gives the fault-free products. SIGINT, SIGTERM and SIGKILL mid-run are in
``tests/test_cli_run.py`` and ``tests/test_resume.py``; a disk that fills up while the
products are written is in ``tests/test_cli_run.py`` too.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pytest

from tests.conftest import real_path, slovenia_aoi
from tests.fakes.base import FakeServer
from tests.fakes.sentinelhub_api import PROCESS_PATH, cli_options, fake_sentinelhub
from tests.fakes.stac_api import StacFakeConfig, stac_fake
from tests.test_cli_run import AGRIMON, SHORT, _children, _env, _run

pytestmark = pytest.mark.slow

PERIOD = ("--start", "2015-07-01", "--end", "2015-09-30")
#: Where the Slovenia runs put their products, under their ``--out``.
PRODUCTS = Path("ljubljana") / "2015-07-01_2015-09-30"
#: Sentinel Hub's client reads plain http token URLs only with this set (the fake's is).
SH_ENV = {"OAUTHLIB_INSECURE_TRANSPORT": "1", "NO_PROXY": "127.0.0.1,localhost"}


def product_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every raster, table, vector and picture of a product folder, by name.

    The manifest, catalog, report and GeoPackage record when they were made, so they
    differ between runs by design; every figure they hold comes from the files hashed here.
    """
    kinds = ("*.tif", "*.csv", "*.geojson", "pictures/*.png")
    files = sorted(p for kind in kinds for p in folder.glob(kind))
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@dataclass
class Fakes:
    """The fakes of one module, the AOI file and the fault-free products of each source."""

    stac: FakeServer
    sh: FakeServer
    aoi: Path
    reference: dict[str, dict[str, str]]


def _args(source: str, fakes: Fakes, cache: Path) -> list[str]:
    """The run's options for ``source`` against its fake, with its own cache."""
    common = [str(fakes.aoi), "--level", "l1c", "--tile-px", "64", *PERIOD]
    common += ["--cache-dir", str(cache), "--no-phenology"]
    if source == "stac":
        return [*common, "--source", "stac", "--stac-url", fakes.stac.url]
    return [*common, *cli_options(fakes.sh), "--max-cloud", "100"]


def _agrimon(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return _run(["run", *args], _env(home, **SH_ENV))


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    real_path("slovenia-s2", "scenes")
    tmp = tmp_path_factory.mktemp("faults")
    aoi = tmp / "ljubljana.geojson"
    frame = gpd.GeoDataFrame({"name": ["Ljubljana fields"]}, geometry=[slovenia_aoi()], crs=4326)
    frame.to_file(aoi)
    with stac_fake(tmp / "stac", StacFakeConfig()) as stac, fake_sentinelhub() as sh:
        found = Fakes(stac, sh, aoi, {})
        for source in ("stac", "sentinelhub"):
            out = tmp / f"reference-{source}"
            args = [*_args(source, found, tmp / f"cache-{source}"), "--out", str(out)]
            proc = _agrimon(*args, home=tmp / "prefect")
            assert proc.returncode == 0, proc.stderr[-3000:]
            found.reference[source] = product_digests(out / PRODUCTS)
            assert len(found.reference[source]) >= 4
        yield found


@pytest.fixture
def fresh(fakes: Fakes) -> Iterator[Fakes]:
    """The module's fakes with no fault armed and no request counted."""
    yield fakes
    for server in (fakes.stac, fakes.sh):
        server.faults.clear()
        server.reset_counts()


#: Faults that every run must ride out, by case: (source, [(path prefix, kind, times)]).
#: Each read of a COG is a HEAD and ranged GETs, each retried by GDAL and then by agrimon,
#: so no count here can exhaust one read's tries, wherever the faults land.
SURVIVABLE: dict[str, tuple[str, list[tuple[str, str, int]]]] = {
    "stac: a storm of 429s and bursts of 503s": (
        "stac",
        [("/search", "429", 2), ("/search", "503", 1), ("/cogs/", "429", 8), ("/cogs/", "503", 4)],
    ),
    "stac: connections reset mid-body": ("stac", [("/search", "reset", 1), ("/cogs/", "reset", 6)]),
    "stac: replies slower than the timeout": (
        "stac",
        [("/search", "slow", 1), ("/cogs/", "slow", 3)],
    ),
    "sentinel hub: a storm of 429s and bursts of 503s": (
        "sentinelhub",
        [
            ("/api/v1/catalog", "429", 2),
            ("/api/v1/catalog", "503", 1),
            (PROCESS_PATH, "429", 10),
            (PROCESS_PATH, "503", 3),
        ],
    ),
    "sentinel hub: connections reset and replies slower than the timeout": (
        "sentinelhub",
        [(PROCESS_PATH, "reset", 2), (PROCESS_PATH, "slow", 2), ("/api/v1/catalog", "slow", 1)],
    ),
}


@pytest.mark.parametrize("case", sorted(SURVIVABLE))
def test_a_run_rides_out_the_faults_with_the_fault_free_products(
    fresh: Fakes, tmp_path: Path, case: str
) -> None:
    source, faults = SURVIVABLE[case]
    server = fresh.stac if source == "stac" else fresh.sh
    for prefix, kind, times in faults:
        # Retry-After 0: the fake's 429s ask for no wait (urllib3 reads it in seconds).
        server.inject(prefix, kind, times=times, retry_after_ms=0, delay_s=3.0)  # type: ignore[arg-type]
    out = tmp_path / "out"
    args = [*_args(source, fresh, tmp_path / "cache"), "--out", str(out), "--timeout", "1"]
    started = time.monotonic()
    proc = _agrimon(*args, home=tmp_path / "prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert server.faults_left() == 0, "not every armed fault was met"
    assert product_digests(out / PRODUCTS) == fresh.reference[source]
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 300


def test_a_lasting_fault_is_one_line_and_the_same_command_then_completes(
    fresh: Fakes, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [*_args("stac", fresh, tmp_path / "cache"), "--out", str(out), "--timeout", "1"]
    # One scene's files never arrive whole: every read of them is reset mid-body.
    scene = "S2A_33TVM_20150830"
    fresh.stac.inject(f"/cogs/{scene}", "reset", times=100_000)
    failed = _agrimon(*args, "--retries", "2", home=tmp_path / "prefect")
    assert failed.returncode == 2, failed.stderr[-3000:]
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not fetch scene "), lines
    assert scene in lines[0] and "for tile 33N_" in lines[0]
    assert not (out / PRODUCTS).exists()
    # Every tile needs that scene, so none finished and nothing is kept for a rerun.
    assert not out.exists()
    # The link is back: the same command runs (no stale lock) and gives the same products.
    fresh.stac.faults.clear()
    again = _agrimon(*args, home=tmp_path / "prefect")
    assert again.returncode == 0, again.stderr[-3000:]
    assert product_digests(out / PRODUCTS) == fresh.reference["stac"]
    assert list((out / PRODUCTS.parent).glob(".*")) == []


def _damage(entry: Path, how: str) -> None:
    data = entry.read_bytes()
    if how == "scrambled":  # the same length, 64 bytes flipped in the middle
        middle = len(data) // 2
        flipped = bytes(b ^ 0xFF for b in data[middle : middle + 64])
        entry.write_bytes(data[:middle] + flipped + data[middle + 64 :])
    elif how == "truncated":
        entry.write_bytes(data[: len(data) // 3])
    else:
        entry.write_bytes(b"")


def test_damaged_cache_entries_are_fetched_again(fresh: Fakes, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = _args("stac", fresh, cache)
    first = _agrimon(*args, "--out", str(tmp_path / "first"), home=tmp_path / "prefect")
    assert first.returncode == 0, first.stderr[-3000:]
    entries = sorted(cache.rglob("*.bin"), key=lambda p: p.stat().st_size)
    assert len(entries) >= 6
    # Damage three of every four entries, the search pages and the pixels alike, each way.
    damaged = []
    for k, how in enumerate(("scrambled", "truncated", "emptied")):
        for entry in entries[k::4]:
            _damage(entry, how)
            damaged.append(entry)
    fresh.stac.reset_counts()
    again = _agrimon(*args, "--out", str(tmp_path / "again"), home=tmp_path / "prefect")
    assert again.returncode == 0, again.stderr[-3000:]
    assert product_digests(tmp_path / "again" / PRODUCTS) == fresh.reference["stac"]
    assert fresh.stac.count() > 0  # the damaged entries were fetched again ...
    assert all(e.stat().st_size > 64 for e in damaged)  # ... and stored whole
    # ... and the run after that needs the service no more.
    fresh.stac.reset_counts()
    offline = _agrimon(
        *args, "--offline", "--out", str(tmp_path / "offline"), home=tmp_path / "prefect"
    )
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert fresh.stac.count() == 0


# --- a Dask worker killed mid-run ---------------------------------------------------------


def _workers_of(pid: int) -> list[int]:
    """The local cluster's worker processes under agrimon's process ``pid``.

    The nannies run in agrimon's process; each worker is a child of it spawned by
    multiprocessing (``spawn_main``). Prefect's temporary server is a child too, and so is
    multiprocessing's resource tracker, but neither runs ``spawn_main``.
    """
    found = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(child)
    return found


def _kill_a_worker_mid_tile(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the short demo on two local workers and SIGKILL one as a tile is computed."""
    args = [str(AGRIMON), "run", *SHORT, "--no-phenology", "--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 300
    # The tiles are under way once the first has its results in the work folder.
    while not list(out.glob("*/.*.work/tiles/[!.]*")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no tile finished"
        time.sleep(0.1)
    workers = _workers_of(proc.pid)
    assert len(workers) == 2, [Path(f"/proc/{w}/cmdline").read_bytes() for w in workers]
    os.kill(workers[0], signal.SIGKILL)  # the out-of-memory killer, say
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def demo_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The short demo's products made in one process, without a cluster."""
    tmp = tmp_path_factory.mktemp("demo-reference")
    proc = _run(["run", *SHORT, "--no-phenology", "--out", str(tmp)], _env(tmp / "prefect"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return product_digests(Path(proc.stdout.strip().splitlines()[-1]))


def test_a_worker_killed_mid_tile_is_replaced_and_the_products_are_the_same(
    tmp_path: Path, demo_reference: dict[str, str]
) -> None:
    out = tmp_path / "out"
    proc = _kill_a_worker_mid_tile(out, _env(tmp_path / "prefect"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Dask's notes of the lost worker and its rescheduled tiles are debug records.
    assert proc.stderr.strip() == "", proc.stderr[-3000:]
    assert product_digests(Path(proc.stdout.strip().splitlines()[-1])) == demo_reference


def test_a_tile_whose_worker_keeps_dying_is_one_line_and_the_rerun_completes(
    tmp_path: Path, demo_reference: dict[str, str]
) -> None:
    out = tmp_path / "out"
    # The scheduler gives up on a task at its first lost worker (dask's default: the 4th).
    env = _env(tmp_path / "prefect", DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    proc = _kill_a_worker_mid_tile(out, env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, "\n".join(lines)
    assert re.fullmatch(
        r"error: tile \S+: the Dask worker computing it died .*; rerun the same command .*",
        lines[0],
    ), lines[0]
    assert [p.name for p in out.glob("*/[!.]*")] == []  # no product folder
    again = _run(["run", *SHORT, "--no-phenology", "--out", str(out)], _env(tmp_path / "prefect"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert product_digests(Path(again.stdout.strip().splitlines()[-1])) == demo_reference
