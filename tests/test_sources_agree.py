"""The three real sources give the same NDVI for the same real scenes, and the CLI lists them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from agrimon.cache import Cache, request_key
from agrimon.cli import app
from agrimon.grid import plan_tiles
from agrimon.sources import SOURCES, get_source
from agrimon.sources.settings import SourceSettings

from .conftest import SLOVENIA, assert_ndvi_matches_reference, real_path, slovenia_aoi
from .fakes.sentinelhub_api import CLIENT_ID, CLIENT_SECRET, fake_sentinelhub, token_url
from .fakes.stac_api import StacFakeConfig, stac_fake

START, END = date(2015, 7, 1), date(2015, 9, 30)
runner = CliRunner()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    SentinelHubDownloadClient.clear_cache()
    yield
    SentinelHubDownloadClient.clear_cache()


def test_local_stac_and_sentinelhub_agree_on_ndvi(tmp_path: Path) -> None:
    real_path("slovenia-s2", "scenes")
    tile = plan_tiles(slovenia_aoi(), tile_px=64)[0]
    common: dict[str, object] = {"level": "l1c", "max_cloud": 100.0, "backoff_s": 0.0}
    ndvi = {}
    with stac_fake(tmp_path / "stac", StacFakeConfig()) as stac, fake_sentinelhub() as sh:
        options: dict[str, dict[str, object]] = {
            "local": {"local_path": SLOVENIA / "scenes", "cache_dir": tmp_path / "c1"},
            "stac": {"stac_url": stac.url, "cache_dir": tmp_path / "c2"},
            "sentinelhub": {
                "sh_base_url": sh.url,
                "sh_token_url": token_url(sh),
                "sh_client_id": CLIENT_ID,
                "sh_client_secret": SecretStr(CLIENT_SECRET),
                "cache_dir": tmp_path / "c3",
            },
        }
        for name, values in options.items():
            source = get_source(name, SourceSettings.model_validate({**common, **values}))
            scenes = source.find_scenes(tile, START, END)
            assert len(scenes) == 5, name
            stack = source.load(tile, scenes, bands=("red", "nir")).compute()
            assert_ndvi_matches_reference(stack)
            ndvi[name] = ((stack.nir - stack.red) / (stack.nir + stack.red)).values
    np.testing.assert_allclose(ndvi["stac"], ndvi["local"], atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(ndvi["sentinelhub"], ndvi["local"], atol=1e-6, equal_nan=True)


def test_sources_command_lists_every_source_with_masked_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SH_CLIENT_ID", "my-client-id-1234")
    monkeypatch.setenv("SH_CLIENT_SECRET", "my-very-secret-value")
    result = runner.invoke(app, ["sources"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in SOURCES:
        assert name in out
    assert "earth-search.aws.element84.com" in out
    assert "sh.dataspace.copernicus.eu" in out
    assert "my-very-secret-value" not in out
    assert "****" in out


def test_cache_info_and_clear(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    for i in range(3):
        cache.put(request_key("x", i), b"0123456789")
    info = runner.invoke(app, ["cache", "info", "--cache-dir", str(tmp_path / "cache")])
    assert info.exit_code == 0
    assert "3 cached responses" in info.stdout
    cleared = runner.invoke(app, ["cache", "clear", "--cache-dir", str(tmp_path / "cache")])
    assert cleared.exit_code == 0
    assert "removed 3 cached responses" in cleared.stdout
    assert cache.stats().entries == 0


def test_plan_with_the_stac_source(tmp_path: Path) -> None:
    real_path("slovenia-s2", "scenes")
    aoi = tmp_path / "lj.geojson"
    import geopandas as gpd

    gpd.GeoDataFrame({"name": ["x"]}, geometry=[slovenia_aoi()], crs=4326).to_file(aoi)
    with stac_fake(tmp_path / "stac", StacFakeConfig()) as stac:
        result = runner.invoke(
            app,
            [
                "plan",
                str(aoi),
                "--source",
                "stac",
                "--stac-url",
                stac.url,
                "--level",
                "l1c",
                "--start",
                "2015-07-01",
                "--end",
                "2015-09-30",
                "--max-cloud",
                "50",
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
        )
        assert stac.count("/cogs/") == 0  # planning reads no pixel
    assert result.exit_code == 0, result.output
    assert "32633 (UTM 33N)" in result.stdout
    assert "stac (" + stac.url in result.stdout
    assert "2015-07-11" in result.stdout and "2015-09-09" in result.stdout
