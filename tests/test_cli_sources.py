"""`agrimon run` end to end from the command line against the loopback fakes of real services."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from agrimon.grid import geobox_for

from .conftest import (
    SLOVENIA,
    SLOVENIA_DATES,
    pick_nearest,
    real_path,
    reference_ndvi,
    slovenia_aoi,
)
from .fakes.base import FakeServer
from .fakes.sentinelhub_api import (
    CLIENT_SECRET,
    cli_options,
    fake_sentinelhub,
)
from .fakes.stac_api import StacFakeConfig, stac_fake
from .test_cli import AGRIMON

PERIOD = ["--start", "2015-07-01", "--end", "2015-09-30"]


@pytest.fixture
def aoi_file(tmp_path: Path) -> Path:
    real_path("slovenia-s2", "scenes")
    path = tmp_path / "ljubljana.geojson"
    gpd.GeoDataFrame({"name": ["Ljubljana fields"]}, geometry=[slovenia_aoi()], crs=4326).to_file(
        path
    )
    return path


@pytest.fixture
def stac_server(tmp_path: Path) -> Iterator[FakeServer]:
    real_path("slovenia-s2", "scenes")
    with stac_fake(tmp_path / "fake", StacFakeConfig()) as server:
        yield server


def agrimon(
    *args: str, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real console script with a private Prefect home and loopback settings."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "NO_PROXY": "127.0.0.1,localhost",
        **(extra_env or {}),
    }
    return subprocess.run(
        [str(AGRIMON), *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def _reference_composites(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Median NDVI and clear count of the real series on a product's own grid, by hand.

    L1C has no SCL, so a date is clear where the haze-optimised transform of the real blue
    and red bands, ``B02/1e4 - 0.5 * B04/1e4 - 0.08``, is not above 0 (Zhang et al. 2002).
    """
    with rasterio.open(path) as src:
        grid = geobox_for(tuple(src.bounds), src.crs.to_epsg(), src.res[0])
        inside = src.read_masks(1) > 0
    series, clear = [], []
    for i, day in enumerate(SLOVENIA_DATES):
        with rasterio.open(SLOVENIA / "scenes" / f"S2_L1C_{day}.tif") as scene:
            blue, red = (
                pick_nearest(scene.read(b), scene.transform, scene.crs, grid, src_nodata=0) / 1e4
                for b in (2, 4)
            )
        ok = np.isfinite(blue) & (blue - 0.5 * red - 0.08 <= 0)
        clear.append(ok)
        series.append(np.where(ok, reference_ndvi(grid, i), np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.where(inside, np.nanmedian(np.stack(series), axis=0), np.nan)
    return median, np.where(inside, np.sum(clear, axis=0), 65535)


def _median_reference(path: Path) -> np.ndarray:
    return _reference_composites(path)[0]


@pytest.mark.slow
def test_run_stac_end_to_end_then_from_cache_then_offline(
    stac_server: FakeServer, aoi_file: Path, tmp_path: Path
) -> None:
    common = [
        str(aoi_file),
        "--source",
        "stac",
        "--stac-url",
        stac_server.url,
        "--level",
        "l1c",
        *PERIOD,
    ]
    common += ["--cache-dir", str(tmp_path / "cache"), "--tile-px", "64"]
    first = agrimon("run", *common, "--out", str(tmp_path / "out"), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = Path(first.stdout.strip().splitlines()[-1])
    assert folder == tmp_path / "out" / "ljubljana" / "2015-07-01_2015-09-30"
    with rasterio.open(folder / "ndvi_median.tif") as src:
        assert src.crs.to_epsg() == 32633
        got = src.read(1)
    np.testing.assert_allclose(
        got, _median_reference(folder / "ndvi_median.tif"), atol=1e-6, equal_nan=True
    )
    with rasterio.open(folder / "clear_count.tif") as src:
        counts = src.read(1)
    # L1C has no SCL: the reflectance cloud test masks the cloudy and the hazy dates.
    want = _reference_composites(folder / "ndvi_median.tif")[1]
    np.testing.assert_array_equal(counts, want)
    assert 2 <= int(np.median(counts[counts != 65535])) <= 4
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"]["endpoint"] == stac_server.url
    assert len(manifest["tiles"][0]["scenes"]) == 5

    stac_server.reset_counts()
    again = agrimon("run", *common, "--out", str(tmp_path / "again"), tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert stac_server.count() == 0  # every response came from the cache

    offline = agrimon(
        "run", *common, "--offline", "--out", str(tmp_path / "offline"), tmp_path=tmp_path
    )
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert stac_server.count() == 0
    with rasterio.open(Path(offline.stdout.strip().splitlines()[-1]) / "ndvi_median.tif") as src:
        np.testing.assert_array_equal(src.read(1), got)


@pytest.mark.slow
def test_run_stac_with_a_lasting_corrupt_cog_exits_2_and_writes_nothing(
    stac_server: FakeServer, aoi_file: Path, tmp_path: Path
) -> None:
    stac_server.inject("/cogs/", "corrupt", times=10_000)
    out = tmp_path / "out"
    proc = agrimon(
        "run",
        str(aoi_file),
        "--source",
        "stac",
        "--stac-url",
        stac_server.url,
        "--level",
        "l1c",
        *PERIOD,
        "--retries",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        tmp_path=tmp_path,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "S2A_33TVM_2015" in errors[0] and "tile 33N_" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (out / "ljubljana" / "2015-07-01_2015-09-30").exists()
    # No half-written product hides beside it either.
    parent = out / "ljubljana"
    assert not parent.exists() or list(parent.iterdir()) == []


@pytest.fixture
def sh_server() -> Iterator[FakeServer]:
    real_path("slovenia-s2", "scenes")
    with fake_sentinelhub() as server:
        yield server


def _sh_args(server: FakeServer, secret: str, tmp_path: Path) -> list[str]:
    return [
        *cli_options(server, secret),
        "--level",
        "l1c",
        "--max-cloud",
        "100",
        "--tile-px",
        "64",
        "--cache-dir",
        str(tmp_path / "cache"),
        *PERIOD,
    ]


SH_ENV = {"OAUTHLIB_INSECURE_TRANSPORT": "1"}  # the fake's token URL is plain http


def _run_sh(
    server: FakeServer, aoi: Path, secret: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """`agrimon run` against the Sentinel Hub fake with ``secret``, products in tmp/out."""
    env = {**SH_ENV, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    args = [str(aoi), *_sh_args(server, secret, tmp_path), "--out", str(tmp_path / "out")]
    return agrimon("run", *args, tmp_path=tmp_path, extra_env=env)


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_run_sentinelhub_end_to_end_and_the_secret_stays_secret(
    sh_server: FakeServer, aoi_file: Path, tmp_path: Path
) -> None:
    proc = _run_sh(sh_server, aoi_file, CLIENT_SECRET, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = Path(proc.stdout.strip().splitlines()[-1])
    with rasterio.open(folder / "ndvi_median.tif") as src:
        got = src.read(1)
    np.testing.assert_allclose(
        got, _median_reference(folder / "ndvi_median.tif"), atol=1e-6, equal_nan=True
    )
    assert sh_server.count("/api/v1/process") > 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parameters"]["source_settings"]["sh_client_secret"] == "**********"
    # Neither the logs nor any file written (products, cache, Prefect's database) hold it.
    assert CLIENT_SECRET not in proc.stdout + proc.stderr
    assert _files_containing(tmp_path, CLIENT_SECRET.encode()) == []


@pytest.mark.slow
def test_run_sentinelhub_with_a_rejected_secret_exits_2(
    sh_server: FakeServer, aoi_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    wrong = "not-the-secret-8f2k"
    proc = _run_sh(sh_server, aoi_file, wrong, tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "credentials" in errors[0] and "SH_CLIENT_SECRET" in errors[0]
    assert "Traceback" not in proc.stderr and wrong not in proc.stderr
    assert not out.exists() or not any(out.rglob("*.tif"))
