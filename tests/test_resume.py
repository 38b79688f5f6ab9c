"""Resume and idempotency: a killed run resumes, a complete one is not redone, one at a time.

A killed run resumes from its finished tiles, a complete run is a no-op, and two runs of
one AOI and period cannot run into each other. The real console script in a subprocess,
with its own ``PREFECT_HOME``, as a user runs it.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from agrimon.config import make_spec
from agrimon.monitor import make_plan, run_monitor
from agrimon.products.workspace import run_lock

from .test_cli_run import SEASON, SHORT, _env, _run, _start_season_run


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tif"))
    }


def _finished_tiles(work: Path) -> list[Path]:
    tiles = work / "tiles"
    return [p for p in tiles.iterdir() if not p.name.startswith(".")] if tiles.is_dir() else []


@pytest.mark.slow
def test_a_killed_run_resumes_with_its_finished_tiles_and_equals_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    env = _env(tmp_path / "prefect")
    proc = _start_season_run(out, env)
    work = out / "grootfontein" / ".2023-11-01_2024-03-31.work"
    deadline = time.monotonic() + 600
    while len(_finished_tiles(work)) < 2:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never finished two tiles"
        time.sleep(0.1)
    proc.kill()  # a power cut
    proc.communicate(timeout=30)
    done = [p.name for p in _finished_tiles(work)]
    spec = make_spec(start="2023-11-01", end="2024-03-31", tile_px=512, out=tmp_path / "ref")
    total = len(make_plan(spec).tiles)
    assert 2 <= len(done) < total

    again = _run(["run", *SEASON, "--out", str(out), "--verbose"], env)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stderr
    # The finished tiles came back: from Prefect's cache, or, for a tile killed between
    # saving its files and Prefect recording its result, from its saved files (run_tile).
    # Only the others were computed.
    cached = re.findall(r"Task run 'tile \S+' - Finished in state Cached", log)
    assert len(cached) + log.count(": reusing its finished results") == len(done)
    assert len(cached) >= len(done) - 1  # only the tile being saved at the kill can miss
    assert log.count(": computed and saved") == total - len(done)
    final = out / "grootfontein" / "2023-11-01_2024-03-31"
    assert not work.exists()  # published: the work folder went with it

    # The same bytes as a run that was never interrupted (here, the library's).
    reference = run_monitor(spec)
    assert _digests(final) == _digests(reference) != {}
    with (
        rasterio.open(final / "ndvi_median.tif") as a,
        rasterio.open(reference / "ndvi_median.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert np.isfinite(a.read(1)).mean() > 0.5


@pytest.mark.slow
def test_a_complete_run_is_a_no_op_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = _env(tmp_path / "prefect")
    args = ["run", *SHORT, "--out", str(out), "--no-phenology"]
    first = _run(args, env)
    assert first.returncode == 0, first.stderr[-3000:]
    final = Path(first.stdout.strip().splitlines()[-1])
    manifest = (final / "manifest.json").stat().st_mtime_ns
    again = _run(args, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert Path(again.stdout.strip().splitlines()[-1]) == final
    assert again.stderr.strip().splitlines() == [
        f"note: {final} is complete: nothing to do (--force runs it again)"
    ]
    assert (final / "manifest.json").stat().st_mtime_ns == manifest
    forced = _run([*args, "--force"], env)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert (final / "manifest.json").stat().st_mtime_ns > manifest
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name, "latest"]


def test_a_second_run_of_the_same_aoi_and_period_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    final = out / "grootfontein" / "2024-02-01_2024-02-15"
    with run_lock(final) as work:
        proc = _run(["run", *SHORT, "--out", str(out)], _env(tmp_path / "prefect"))
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr[-3000:]
        assert lines[0].startswith(f"error: another agrimon run is writing {final} (pid ")
        assert lines[0].endswith("before running the same AOI and period again")
        assert sorted(p.name for p in work.iterdir()) == ["lock"]  # nothing of the refused run
    assert not final.exists()
