"""`agrimon run` as a user meets it: the first run, Ctrl-C, SIGKILL, errors found up front.

Every test runs the real console script in a subprocess with its own ``PREFECT_HOME``, so
the temporary Prefect server, signals and exit codes are the real ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio

from agrimon.grid import plan_tiles
from agrimon.sources.demo import DemoSource

AGRIMON = Path(sys.executable).parent / "agrimon"
SHORT = ("--start", "2024-02-01", "--end", "2024-02-15")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    return {**env, "PREFECT_HOME": str(home), **extra}


def _run(
    args: Sequence[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGRIMON), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def _children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """True for a process that exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: Sequence[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _api_files(home: Path) -> list[str]:
    """What the temporary server of each run left in PREFECT_HOME (its run files)."""
    folder = home / "agrimon-api"
    return sorted(p.name for p in folder.glob("run-*")) if folder.exists() else []


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Two processes that keep both cores busy, as on a loaded laptop."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_first_runs_on_a_fresh_loaded_machine_start_reliably_two_at_once(
    tmp_path: Path, busy_cores: None
) -> None:
    home = tmp_path / "fresh-prefect-home"  # nothing there: the database is made on first use
    env = _env(home)
    runs = [
        subprocess.Popen(
            [str(AGRIMON), "run", *SHORT, "--out", str(tmp_path / f"out{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    folders = []
    for i, proc in enumerate(runs):
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        folders.append(Path(out.strip().splitlines()[-1]))
        assert folders[-1] == tmp_path / f"out{i}" / "grootfontein" / "2024-02-01_2024-02-15"
    with (
        rasterio.open(folders[0] / "ndvi_median.tif") as a,
        rasterio.open(folders[1] / "ndvi_median.tif") as b,
    ):
        ndvi = a.read(1)
        assert np.isfinite(ndvi).mean() > 0.9
        np.testing.assert_array_equal(ndvi, b.read(1))
    # Each run's server and its database copy are gone; the migrated template stays.
    assert _api_files(home) == []
    assert sorted(p.name for p in (home / "agrimon-api").glob("template-*.db")) != []


#: A run long enough to be caught computing: a season of 512-px tiles.
SEASON = ("--start", "2023-11-01", "--end", "2024-03-31", "--tile-px", "512")


def _start_season_run(out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """``agrimon run`` of a season into ``out``, started as a terminal starts a command."""
    return subprocess.Popen(
        [str(AGRIMON), "run", *SEASON, "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )


def _start_and_wait_for_pixels(
    out: Path, env: dict[str, str], *extra: str
) -> tuple[subprocess.Popen[str], list[int]]:
    """Start a season's run; return once it computes pixels (its work folder exists)."""
    proc = _start_season_run(out, env, *extra)
    deadline = time.monotonic() + 600
    while not list(out.glob("*/.*.work/lock")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never started computing"
        time.sleep(0.2)
    children = _children(proc.pid)
    assert children, "the run has no temporary Prefect server"
    return proc, children


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "to_group", "code", "name", "workers"),
    [
        (signal.SIGINT, True, 130, "Ctrl-C", 1),  # what a terminal's Ctrl-C sends
        (signal.SIGINT, False, 130, "Ctrl-C", 1),  # kill -INT of the main process alone
        (signal.SIGTERM, False, 143, "SIGTERM", 1),
        # A local cluster: its workers go at once and print nothing of their own (no
        # task lines without --verbose, no nanny warnings).
        (signal.SIGINT, True, 130, "Ctrl-C", 2),
    ],
)
def test_ctrl_c_stops_within_seconds_and_leaves_nothing(
    tmp_path: Path, signum: int, to_group: bool, code: int, name: str, workers: int
) -> None:
    home = tmp_path / "prefect"
    out = tmp_path / "out"
    extra = ("--workers", str(workers)) if workers > 1 else ()
    proc, children = _start_and_wait_for_pixels(out, _env(home), *extra)
    if workers > 1:
        # Let the workers finish a tile or two: their task lines would show then.
        deadline = time.monotonic() + 300
        while not list(out.glob("*/.*.work/tiles/[!.]*")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)
        children = sorted({*children, *_children(proc.pid)})  # the workers too
        assert len(children) >= 3, "no worker processes"
    sent = time.monotonic()
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    stopped_after = time.monotonic() - sent
    assert proc.returncode == code, err[-3000:]
    assert stopped_after < 20, f"stopped only after {stopped_after:.0f} s"
    assert err.strip().splitlines() == [
        f"error: interrupted by {name}: the run stopped and published nothing; rerun the "
        "same command to start again"
    ]
    assert not out.exists()  # the run created it, and removed all it created
    assert _wait_gone(children) == []
    assert _api_files(home) == []


@pytest.mark.slow
def test_sigkill_leaves_no_process_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    out = tmp_path / "out"
    env = _env(home)
    proc, children = _start_and_wait_for_pixels(out, env)
    proc.kill()
    proc.communicate(timeout=30)
    assert _wait_gone(children) == [], "the Prefect server outlived the killed run"
    # What it left: its work folder (the tiles it finished, for the same command to resume).
    stale = list(out.glob("grootfontein/.*"))
    assert [p.name for p in stale] == [".2023-11-01_2024-03-31.work"] and _api_files(home) != []
    # Someone's own hidden folder beside the products is not touched by the cleanup.
    (out / "grootfontein" / ".notes").mkdir()
    # The next run of the same AOI and period removes what the killed one left behind.
    again = _run(["run", *SEASON, "--out", str(out), "--no-phenology"], env)
    assert again.returncode == 0, again.stderr[-3000:]
    final = out / "grootfontein" / "2023-11-01_2024-03-31"
    assert Path(again.stdout.strip().splitlines()[-1]) == final
    names = sorted(p.name for p in (out / "grootfontein").iterdir())
    assert names == [".notes", final.name, "latest"]
    assert (out / "grootfontein" / "latest").resolve() == final.resolve()
    assert _api_files(home) == []


def _no_scene_period() -> tuple[str, str]:
    """Two days on which the demo source has no acquisition over the default AOI."""
    from agrimon.aoi import DEFAULT_AOI, read_aoi

    tile = plan_tiles(read_aoi(DEFAULT_AOI).geometry)[0]
    day = date(2024, 2, 1)
    while DemoSource().find_scenes(tile, day, day + timedelta(days=1)):
        day += timedelta(days=1)
    return day.isoformat(), (day + timedelta(days=1)).isoformat()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PREFLIGHT: dict[str, tuple[list[str], dict[str, str], str]] = {
    "out is a file": (["--out", "{tmp}/file.txt"], {}, "is a file, not a folder"),
    "local path missing": (
        ["--source", "local", "--local-path", "{tmp}/nowhere"],
        {},
        "does not exist",
    ),
    "local path empty": (
        ["--source", "local", "--local-path", "{tmp}/empty"],
        {},
        "holds no GeoTIFFs and no STAC catalog",
    ),
    "period without scenes": (["--start", "{day0}", "--end", "{day1}"], {}, "has no scenes"),
    "sentinel hub without credentials": (
        ["--source", "sentinelhub"],
        {"HOME": "{tmp}/home"},
        "credentials",
    ),
    "dask scheduler unreachable": (
        ["--dask-address", "tcp://127.0.0.1:{port}"],
        {},
        "cannot reach the Dask scheduler at tcp://127.0.0.1:",
    ),
    "dask address garbage": (
        [],
        {"DASK_SCHEDULER_ADDRESS": "garbage"},
        "DASK_SCHEDULER_ADDRESS 'garbage' is not a Dask scheduler address",
    ),
    "prefect api unreachable": (
        [],
        {"PREFECT_API_URL": "http://127.0.0.1:{port}/api"},
        "cannot reach the Prefect API at PREFECT_API_URL=http://127.0.0.1:",
    ),
    "stac url not a url": (
        ["--source", "stac", "--stac-url", "not a url"],
        {},
        "--stac-url 'not a url'",
    ),
    "tile size zero": (["--tile-px", "0"], {}, "invalid --tile-px 0"),
    "cloud cover over 100": (["--max-cloud", "120"], {}, "invalid --max-cloud 120.0"),
    "cache dir is someone's folder": (
        ["--source", "stac", "--cache-dir", "{tmp}/documents"],
        {},
        "is not an agrimon cache",
    ),
}


@pytest.mark.parametrize("case", sorted(PREFLIGHT))
def test_errors_found_before_the_flow_starts_are_one_line(tmp_path: Path, case: str) -> None:
    args, extra, needle = PREFLIGHT[case]
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "empty").mkdir()
    (tmp_path / "home").mkdir()
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "letter.txt").write_text("mine")
    day0, day1 = _no_scene_period() if case == "period without scenes" else ("", "")
    values = {"tmp": str(tmp_path), "port": str(_closed_port()), "day0": day0, "day1": day1}
    out = tmp_path / "out"
    argv = ["run", *(a.format(**values) for a in args)]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    env = _env(tmp_path / "prefect", **{k: v.format(**values) for k, v in extra.items()})
    env.pop("SH_CLIENT_ID", None)
    env.pop("SH_CLIENT_SECRET", None)
    proc = _run(argv, env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert proc.stdout == ""
    # Nothing written, and the flow never ran: no output folder, no server left behind.
    assert not out.exists()
    assert _api_files(tmp_path / "prefect") == []
    assert (tmp_path / "documents" / "letter.txt").read_text() == "mine"


def test_plan_of_a_period_without_scenes_is_an_error(tmp_path: Path) -> None:
    day0, day1 = _no_scene_period()
    proc = _run(["plan", "--start", day0, "--end", day1], _env(tmp_path / "prefect"))
    assert proc.returncode == 2
    assert "scenes       0 (tile × date)" in proc.stdout  # the plan is shown...
    assert proc.stderr.strip().splitlines() == [  # ...and why it cannot run
        f"error: source 'demo' has no scenes for the AOI between {day0} and {day1}: widen "
        "the period with --start/--end"
    ]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs), mounted for the test; skips where that is refused."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_disk_too_small_for_the_products_is_found_before_the_run(
    tmp_path: Path, small_disk: Path
) -> None:
    proc = _run(["run", *SHORT, "--out", str(small_disk)], _env(tmp_path / "prefect"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the products need about ")
    assert f"but '{small_disk}' has 1.0 MiB free" in lines[0]
    assert list(small_disk.iterdir()) == []


def test_a_disk_that_fills_up_mid_run_gives_one_error_and_leaves_nothing(
    small_disk: Path,
) -> None:
    from agrimon import monitor as stages
    from agrimon.errors import ProductError
    from agrimon.tilework import run_tile

    from .conftest import demo_spec

    spec = demo_spec(small_disk)
    plan = stages.make_plan(spec)
    # The tiles are finished (their work folder elsewhere), the disk fills up afterwards.
    results = [run_tile(w) for w in stages.tile_work(plan, small_disk.parent / "work")]
    # Past the pre-flight check (another program filled the disk since): the writers fail.
    with pytest.raises(ProductError) as err:
        stages.write_products(plan, results)
    message = str(err.value)
    assert "\n" not in message and "(the disk is full)" in message
    assert f"in '{small_disk / 'grootfontein' / spec.period}'" in message  # not the staging
    assert list(small_disk.iterdir()) == []


def _pty_run(args: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
    """Run agrimon on a pseudo-terminal, as in a user's shell; returns (code, screen text)."""
    import pty
    import re

    pid, fd = pty.fork()
    if pid == 0:  # the child: become agrimon
        os.execve(str(AGRIMON), [str(AGRIMON), *args], {**env, "COLUMNS": "120"})
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    # What the screen shows: escape sequences gone, each line as last redrawn.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    lines = [ln.split("\r")[-1] for ln in text.replace("\r\n", "\n").split("\n")]
    return os.waitstatus_to_exitcode(status), "\n".join(ln for ln in lines if ln.strip())


@pytest.mark.slow
def test_on_a_terminal_the_product_folder_is_the_last_line_and_prefect_is_quiet(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    code, screen = _pty_run(["run", *SHORT, "--out", str(out)], _env(tmp_path / "prefect"))
    assert code == 0, screen[-3000:]
    assert screen.splitlines()[-1] == str(out / "grootfontein" / "2024-02-01_2024-02-15")
    for noise in ("Task run", "Flow run", "Finished in state", "temporary server", "INFO"):
        assert noise not in screen


@pytest.mark.slow
def test_verbose_brings_prefects_lines_back(tmp_path: Path) -> None:
    proc = _run(["run", *SHORT, "--out", str(tmp_path / "out"), "-v"], _env(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task run 'plan tiles" in proc.stderr and "Finished in state Completed" in proc.stderr
    assert "agrimon.monitor - 0 of 4 tiles done; computing 34S_" in proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "out" / "grootfontein" / "2024-02-01_2024-02-15")


def _peak_rss(args: Sequence[str], env: dict[str, str]) -> int:
    """Peak resident memory (VmHWM) of an ``agrimon`` process, in bytes, read as it runs."""
    proc = subprocess.Popen(
        [str(AGRIMON), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:  # it just ended
            pass
        time.sleep(0.05)
    _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return peak


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "demo",  # the default year: 4 tiles, 73 dates, phenology
        "ten-days",  # a short run: the process itself is most of it
        "multi-zone-county",  # Vihiga county, Kenya: UTM 36N and 36S, full tiles
    ],
)
def test_the_plans_peak_memory_is_within_15_percent_of_the_measured_peak(
    tmp_path: Path, case: str
) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read a process's peak memory")
    from agrimon import monitor as stages
    from agrimon.config import make_spec

    period = {} if case == "demo" else {"start": "2024-02-01", "end": "2024-02-10"}
    args = [a for k, v in period.items() for a in (f"--{k}", v)]
    spec = make_spec(**period)
    if case == "multi-zone-county":
        import geopandas as gpd

        from .conftest import real_path

        counties = gpd.read_file(real_path("aoi", "kenya_counties.geojson"))
        aoi = tmp_path / "vihiga.geojson"
        counties[counties["county"].str.lower() == "vihiga"].to_file(aoi, driver="GeoJSON")
        args = [str(aoi), *args]
        spec = make_spec(aoi=aoi, **period)
    plan = stages.make_plan(spec)
    if case == "multi-zone-county":
        assert len(plan.zones) == 2
    estimate = plan.peak_memory_bytes()
    measured = _peak_rss(["run", *args, "--out", str(tmp_path / "out")], _env(tmp_path / "p"))
    assert 0.85 * measured <= estimate <= 1.15 * measured, (estimate / 2**20, measured / 2**20)
