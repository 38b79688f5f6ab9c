"""Sentinel Hub source against a loopback fake serving real Sentinel-2 L1C scenes.

The fake (``tests/fakes/sentinelhub_api.py``) speaks the token, Catalog and Process protocols;
the source talks to it through sentinelhub-py's real client. Pixels are checked against the
NDVI reference of the same real scenes, reprojected independently onto the tile grid.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import date, datetime
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from numpy.typing import NDArray
from pydantic import SecretStr
from shapely.geometry import box

from agrimon.cache import CorruptCacheError, OfflineMissError
from agrimon.errors import ConfigError, SourceError
from agrimon.grid import Tile, plan_tiles, to_lonlat
from agrimon.retry import RetryableError
from agrimon.sources import get_source
from agrimon.sources.base import ALL_BANDS, BANDS, SCL, Scene
from agrimon.sources.sentinelhub import (
    MAX_PX,
    SentinelHubSource,
    catalog_filter,
    clear_sessions,
    decode_process_response,
    plan_fetch_px,
    process_plan,
    profile_credentials,
    redact,
    resolve_credentials,
    scenes_from_features,
    split_windows,
    stack_bands,
    time_range,
    to_stack,
)
from agrimon.sources.settings import SourceSettings
from tests.conftest import reference_ndvi
from tests.fakes.base import FakeServer
from tests.fakes.sentinelhub_api import (
    CLIENT_ID,
    CLIENT_SECRET,
    PROCESS_PATH,
    SLOVENIA,
    data_available,
    fake_sentinelhub,
    geotiff,
    load_scenes,
    tar_of,
    token_url,
)

# rasterio warns while building reproject's in-memory destination, before it sets the
# transform (the fake and the reference both reproject arrays): benign.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

START, END = date(2015, 7, 1), date(2015, 9, 30)
#: Acquisition times of the five real scenes (``timestamps.json``).
TIMES = [
    datetime(2015, 7, 11, 10, 0, 8),
    datetime(2015, 7, 31, 10, 0, 9),
    datetime(2015, 8, 20, 10, 7, 28),
    datetime(2015, 8, 30, 10, 5, 47),
    datetime(2015, 9, 9, 10, 0, 17),
]


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """No developer profile or environment leaks in; sentinelhub sessions start empty."""
    from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake's token URL is http
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    SentinelHubDownloadClient.clear_cache()
    clear_sessions()
    yield
    SentinelHubDownloadClient.clear_cache()
    clear_sessions()


def need_data() -> None:
    if not data_available():
        pytest.skip(f"real data {SLOVENIA} is missing: lay shared/data/real beside the project")


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    need_data()
    with fake_sentinelhub() as server:
        yield server


def sh_settings(server: FakeServer, tmp_path: Path, **extra: object) -> SourceSettings:
    values: dict[str, object] = {
        "level": "l1c",
        "sh_base_url": server.url,
        "sh_token_url": token_url(server),
        "sh_client_id": CLIENT_ID,
        "sh_client_secret": SecretStr(CLIENT_SECRET),
        "cache_dir": tmp_path / "cache",
        "backoff_s": 0.0,
        "retries": 3,
        "max_cloud": 100.0,
    }
    values.update(extra)
    return SourceSettings.model_validate(values)


@pytest.fixture
def settings(fake: FakeServer, tmp_path: Path) -> SourceSettings:
    return sh_settings(fake, tmp_path)


@pytest.fixture(scope="module")
def tiles() -> tuple[Tile, ...]:
    """128 px tiles over the real scenes' footprint (shrunk 15 m so it stays inside)."""
    need_data()
    scene = load_scenes()[0]
    with rasterio.open(next((SLOVENIA / "scenes").glob("*.tif"))) as ds:
        inner = box(*ds.bounds).buffer(-15.0, join_style="mitre")
    assert scene.crs.endswith("32633") or "32633" in scene.crs
    aoi = to_lonlat(shapely.segmentize(inner, 50.0), 32633)
    return plan_tiles(aoi, tile_px=128)


def ndvi(red: NDArray[np.float32], nir: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray((nir - red) / (nir + red), dtype=np.float32)


def assert_matches_reference(
    source: SentinelHubSource, tile: Tile, scenes: tuple[Scene, ...]
) -> None:
    stack = source.load(tile, scenes, bands=("red", "nir"), chunk_px=64).compute()
    for t, scene in enumerate(scenes):
        band = TIMES.index(scene.time) + 1
        got = ndvi(stack["red"].values[t], stack["nir"].values[t])
        want = reference_ndvi(tile.geobox, band - 1)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert np.isfinite(got).mean() > 0.5


# --- pure planning ----------------------------------------------------------------------


def test_evalscript_l1c_returns_dn_bands_and_datamask() -> None:
    plan = process_plan(("red", "nir", "nir08"), scl=False)
    assert plan.band_ids == ("B04", "B08", "B8A")
    assert plan.responses == ("bands", "dataMask")
    assert "//VERSION=3" in plan.evalscript
    assert 'bands: ["B04", "B08", "B8A", "dataMask"], units: "DN"' in plan.evalscript
    assert '{id: "bands", bands: 3, sampleType: "UINT16"}' in plan.evalscript
    assert '{id: "dataMask", bands: 1, sampleType: "UINT8"}' in plan.evalscript
    assert "bands: [s.B04, s.B08, s.B8A]" in plan.evalscript
    assert "SCL" not in plan.evalscript


def test_evalscript_l2a_adds_scl() -> None:
    plan = process_plan(("red",), scl=True)
    assert plan.responses == ("bands", "scl", "dataMask")
    assert '"SCL"' in plan.evalscript
    assert '{id: "scl", bands: 1, sampleType: "UINT8"}' in plan.evalscript


def test_stack_bands_by_level() -> None:
    assert stack_bands("l1c", ALL_BANDS) == (BANDS, False)
    assert stack_bands("l2a", ALL_BANDS) == (BANDS, True)
    assert stack_bands("l2a", ("red",)) == (("red",), False)
    with pytest.raises(SourceError, match="no band"):
        stack_bands("l2a", ("red", "thermal"))


@pytest.mark.parametrize(
    ("shape", "count"), [((2500, 2500), 1), ((2501, 10), 2), ((5000, 2600), 4), ((7501, 1), 4)]
)
def test_split_windows_cover_exactly_within_limit(shape: tuple[int, int], count: int) -> None:
    windows = split_windows(shape)
    assert len(windows) == count
    cover = np.zeros(shape, np.int32)
    for y0, y1, x0, x1 in windows:
        assert 0 < y1 - y0 <= MAX_PX and 0 < x1 - x0 <= MAX_PX
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()


def test_plan_fetch_px() -> None:
    assert plan_fetch_px((1000, 1024), 512) == 1024  # whole tile, one request
    assert plan_fetch_px((100, 101), 64) == 128
    assert plan_fetch_px((5000, 5000), 512) == 2048  # largest multiple of the chunk ≤ 2500
    assert plan_fetch_px((5000, 5000), 4096) == 4096  # split inside the fetch instead


def test_scenes_merge_granules_of_one_pass() -> None:
    features = [
        {"id": "B", "properties": {"datetime": "2015-08-20T10:07:28Z", "eo:cloud_cover": 5.0}},
        {"id": "A", "properties": {"datetime": "2015-08-20T10:07:31Z", "eo:cloud_cover": 20.0}},
        {"id": "C", "properties": {"datetime": "2015-08-30T10:05:47Z", "eo:cloud_cover": None}},
    ]
    scenes = scenes_from_features(features, lon=14.5)
    assert [s.id for s in scenes] == ["B+1", "C"]
    assert scenes[0].time == datetime(2015, 8, 20, 10, 7, 28)
    assert scenes[0].cloud_cover == 20.0
    assert scenes[0].meta["features"] == ["B", "A"]
    assert scenes[1].cloud_cover is None
    start, end = time_range(scenes[0])
    assert start == datetime(2015, 8, 20, 9, 57, 28)
    assert end == datetime(2015, 8, 20, 10, 17, 31)
    # A scene made elsewhere (no meta) still gets a range around its time.
    assert time_range(Scene("x", datetime(2020, 1, 1, 12)))[0] == datetime(2020, 1, 1, 11, 50)


def test_catalog_filter_and_redaction() -> None:
    assert catalog_filter(80.0) == "eo:cloud_cover <= 80"
    assert catalog_filter(12.5) == "eo:cloud_cover <= 12.5"
    text = "body grant_type=client_credentials&client_secret=abc123&x=1 Bearer eyJ.a.b"
    assert redact(text) == "body grant_type=client_credentials&client_secret=****&x=1 Bearer ****"
    assert redact("{'access_token': 'abc.def', 'x': 3}") == "{'access_token': '****', 'x': 3}"


def test_decode_l2a_tar_to_stack() -> None:
    from affine import Affine

    dn = np.array([[[1000, 0], [2500, 300]], [[4000, 10], [5000, 20]]], np.uint16)
    scl = np.array([[[4, 8], [5, 9]]], np.uint8)
    mask = np.array([[[1, 1], [1, 0]]], np.uint8)
    tr = Affine(10, 0, 0, 0, -10, 20)
    payload = tar_of(
        {
            "bands.tif": geotiff(dn, tr, "EPSG:32633"),
            "scl.tif": geotiff(scl, tr, "EPSG:32633"),
            "dataMask.tif": geotiff(mask, tr, "EPSG:32633"),
        }
    )
    plan = process_plan(("red", "nir"), scl=True)
    out = to_stack(decode_process_response(payload, plan.responses, (2, 2)), plan)
    np.testing.assert_allclose(out["red"], [[0.1, np.nan], [0.25, np.nan]], rtol=1e-6)
    np.testing.assert_allclose(out["nir"], [[0.4, 0.001], [0.5, np.nan]], rtol=1e-6)
    assert out[SCL].dtype == np.uint8
    assert out[SCL].tolist() == [[4, 8], [5, 0]]
    with pytest.raises(RetryableError, match="expected 3×2"):
        decode_process_response(payload, plan.responses, (2, 3))
    with pytest.raises(RetryableError, match="undecodable"):
        decode_process_response(payload[:700], plan.responses, (2, 2))  # inside bands.tif
    single = geotiff(mask, tr, "EPSG:32633")
    assert decode_process_response(single, ("dataMask",), (2, 2))["dataMask"].shape == (1, 2, 2)


# --- credentials ------------------------------------------------------------------------


def test_credentials_resolve_settings_then_env_then_profile(tmp_path: Path) -> None:
    env = {"SH_CLIENT_ID": "env-id", "SH_CLIENT_SECRET": "env-secret"}
    prof = lambda: ("prof-id", "prof-secret")  # noqa: E731
    full = SourceSettings(sh_client_id="cli-id", sh_client_secret=SecretStr("cli-secret"))
    half = SourceSettings(sh_client_id="cli-id")
    creds = resolve_credentials(full, environ=env, profile=prof)
    assert creds is not None and (creds.client_id, creds.origin) == ("cli-id", "settings")
    creds = resolve_credentials(half, environ=env, profile=prof)
    assert creds is not None and (creds.client_id, creds.origin) == ("env-id", "environment")
    creds = resolve_credentials(half, environ={}, profile=prof)
    assert creds is not None and creds.origin == "sentinelhub profile"
    assert creds.secret.get_secret_value() == "prof-secret"
    assert resolve_credentials(half, environ={}, profile=lambda: None) is None


def test_profile_credentials_read_without_writing(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from sentinelhub.config import SHConfig

    xdg = tmp_path_factory.mktemp("profile")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert profile_credentials() is None
    assert not (xdg / "sentinelhub").exists()  # no default config file written
    SHConfig(use_defaults=True, sh_client_id="p-id", sh_client_secret="p-secret").save()
    assert profile_credentials() == ("p-id", "p-secret")


def test_missing_credentials_say_how_to_set_them(tmp_path: Path) -> None:
    need_data()
    with fake_sentinelhub() as server:
        settings = sh_settings(server, tmp_path, sh_client_id=None, sh_client_secret=None)
        source = get_source("sentinelhub", settings)
        assert isinstance(source, SentinelHubSource)
        assert source.describe()["credentials"].startswith("not set")
        with pytest.raises(SourceError) as err:
            source.find_scenes(
                plan_tiles(box(14.55, 45.86, 14.56, 45.87), tile_px=128)[0], START, END
            )
    message = str(err.value)
    assert "\n" not in message
    for hint in ("Copernicus Data Space", "--sh-client-id", "SH_CLIENT_ID", "sentinelhub.config"):
        assert hint in message
    assert server.count() == 0


def test_describe_masks_credentials(settings: SourceSettings) -> None:
    source = SentinelHubSource(settings)
    info = source.describe()
    assert info["endpoint"] == settings.sh_base_url
    assert info["token_url"] == settings.sh_token_url
    assert info["credentials"] == f"client id {CLIENT_ID[:4]}…(set, from settings), secret ****"
    assert CLIENT_SECRET not in str(info) + repr(source) + repr(settings) + str(settings)


def test_default_endpoint_is_cdse() -> None:
    info = SentinelHubSource(SourceSettings()).describe()
    assert info["endpoint"] == "https://sh.dataspace.copernicus.eu"
    assert info["token_url"].startswith("https://identity.dataspace.copernicus.eu/")
    commercial = SentinelHubSource(SourceSettings(sh_preset="sentinel-hub")).describe()
    assert commercial["endpoint"] == "https://services.sentinel-hub.com"


# --- against the fake -------------------------------------------------------------------


def test_find_scenes_pages_through_the_catalog(
    fake: FakeServer, settings: SourceSettings, tiles: tuple[Tile, ...]
) -> None:
    scenes = SentinelHubSource(settings).find_scenes(tiles[0], START, END)
    assert [s.time for s in scenes] == TIMES
    assert [s.id for s in scenes] == [s.id for s in load_scenes()]
    assert fake.count("/api/v1/catalog/1.0.0/search") >= 3  # 5 features, 2 a page
    assert all(s.cloud_cover is not None for s in scenes)


def test_find_scenes_filters_cloud_cover(
    fake: FakeServer, tmp_path: Path, tiles: tuple[Tile, ...]
) -> None:
    source = SentinelHubSource(sh_settings(fake, tmp_path, max_cloud=50.0))
    scenes = source.find_scenes(tiles[0], START, END)
    assert [s.time for s in scenes] == [TIMES[0], TIMES[3], TIMES[4]]
    assert all((s.cloud_cover or 0) <= 50 for s in scenes)


def test_load_matches_reference_ndvi(
    fake: FakeServer, settings: SourceSettings, tiles: tuple[Tile, ...]
) -> None:
    source = SentinelHubSource(settings)
    assert len(tiles) >= 2
    for tile in tiles:
        scenes = source.find_scenes(tile, START, END)
        assert len(scenes) == 5
        lazy = source.load(tile, scenes)
        assert SCL not in lazy  # L1C has no scene classification
        assert set(lazy.data_vars) == set(BANDS)
        assert lazy["red"].dtype == np.float32 and lazy["red"].chunks is not None
        assert lazy.odc.geobox == tile.geobox
        assert_matches_reference(source, tile, scenes)
    # One Process request per tile and date (the tile fits one request).
    assert fake.count(PROCESS_PATH) == 5 * len(tiles)


def test_rerun_reads_only_the_cache_and_offline_works(
    fake: FakeServer, settings: SourceSettings, tiles: tuple[Tile, ...]
) -> None:
    tile = tiles[0]
    source = SentinelHubSource(settings)
    scenes = source.find_scenes(tile, START, END)
    first = source.load(tile, scenes, bands=("red", "nir")).compute()
    fake.reset_counts()
    again = SentinelHubSource(settings)
    assert again.find_scenes(tile, START, END) == scenes
    second = again.load(tile, scenes, bands=("red", "nir")).compute()
    assert fake.count() == 0  # zero requests: catalog pages and pixels from the cache
    np.testing.assert_array_equal(first["nir"].values, second["nir"].values)

    offline = settings.model_copy(
        update={"offline": True, "sh_client_id": None, "sh_client_secret": None}
    )
    source = SentinelHubSource(offline)
    assert source.find_scenes(tile, START, END) == scenes
    third = source.load(tile, scenes, bands=("red", "nir")).compute()
    np.testing.assert_array_equal(first["red"].values, third["red"].values)
    assert fake.count() == 0


def test_offline_with_an_empty_cache_fails_clearly(
    fake: FakeServer, tmp_path: Path, tiles: tuple[Tile, ...]
) -> None:
    source = SentinelHubSource(sh_settings(fake, tmp_path, offline=True))
    with pytest.raises(OfflineMissError, match="not in the cache"):
        source.find_scenes(tiles[0], START, END)
    scene = Scene(load_scenes()[0].id, TIMES[0])
    with pytest.raises(OfflineMissError, match=f"scene {scene.id} tile {tiles[0].id}"):
        source.load(tiles[0], [scene], bands=("red",)).compute()
    assert fake.count() == 0


@pytest.mark.filterwarnings("ignore::sentinelhub.exceptions.SHRateLimitWarning")
def test_429_and_503_are_retried(
    fake: FakeServer, settings: SourceSettings, tiles: tuple[Tile, ...]
) -> None:
    tile = tiles[0]
    source = SentinelHubSource(settings)
    fake.inject("/api/v1/catalog", "503", times=1)
    fake.inject("/api/v1/catalog", "429", times=1, retry_after_ms=20)
    scenes = source.find_scenes(tile, START, END)[:2]
    assert [s.time for s in scenes] == TIMES[:2]
    assert fake.count("/api/v1/catalog") == 3 + 2  # three pages, two faults answered first
    fake.inject(PROCESS_PATH, "429", times=2, retry_after_ms=50)
    fake.inject(PROCESS_PATH, "503", times=2)
    fake.reset_counts()
    assert_matches_reference(source, tile, scenes)
    assert fake.count(PROCESS_PATH) == 2 + 4  # two scenes, four faults answered first


@pytest.mark.parametrize("kind", ["truncate", "corrupt"])
def test_a_transient_damaged_reply_is_retried(
    kind: str, fake: FakeServer, settings: SourceSettings, tiles: tuple[Tile, ...]
) -> None:
    tile = tiles[0]
    source = SentinelHubSource(settings)
    scenes = source.find_scenes(tile, START, END)[:1]
    fake.inject(PROCESS_PATH, kind, times=1)  # type: ignore[arg-type]
    assert_matches_reference(source, tile, scenes)
    assert fake.count(PROCESS_PATH) == 2


@pytest.mark.filterwarnings("ignore::sentinelhub.exceptions.SHRateLimitWarning")
def test_endless_429_gives_up(
    fake: FakeServer, settings: SourceSettings, tiles: tuple[Tile, ...]
) -> None:
    tile = tiles[0]
    source = SentinelHubSource(settings)
    scene = source.find_scenes(tile, START, END)[0]
    fake.inject(PROCESS_PATH, "429", times=1000, retry_after_ms=1)
    with pytest.raises(SourceError, match=f"too many requests.*scene {scene.id} tile {tile.id}"):
        source.load(tile, [scene], bands=("red",)).compute()
    assert fake.count(PROCESS_PATH) == settings.retries * 5  # Retry-After honoured, bounded


@pytest.mark.parametrize("kind", ["truncate", "corrupt"])
def test_a_persistently_damaged_reply_names_scene_and_tile(
    kind: str, fake: FakeServer, settings: SourceSettings, tiles: tuple[Tile, ...]
) -> None:
    tile = tiles[0]
    source = SentinelHubSource(settings)
    scene = source.find_scenes(tile, START, END)[0]
    fake.inject(PROCESS_PATH, kind, times=100)  # type: ignore[arg-type]
    with pytest.raises(SourceError) as err:
        source.load(tile, [scene], bands=("red",)).compute()
    message = str(err.value)
    assert f"scene {scene.id} tile {tile.id}" in message
    assert "\n" not in message
    assert fake.count(PROCESS_PATH) == settings.retries


def test_rejected_credentials_stop_at_once(
    fake: FakeServer, settings: SourceSettings, tmp_path: Path, tiles: tuple[Tile, ...]
) -> None:
    tile = tiles[0]
    scenes = SentinelHubSource(settings).find_scenes(tile, START, END)[:1]
    fake.inject(PROCESS_PATH, "401", times=1)
    with pytest.raises(SourceError, match="rejected the credentials \\(HTTP 401\\)") as err:
        SentinelHubSource(settings).load(tile, scenes, bands=("red",)).compute()
    assert "--sh-client-id" in str(err.value) and "SH_CLIENT_ID" in str(err.value)
    assert fake.count(PROCESS_PATH) == 1  # not retried

    wrong = sh_settings(fake, tmp_path / "other", sh_client_secret=SecretStr("not-the-secret"))
    with pytest.raises(SourceError, match="rejected the credentials \\(invalid_client\\)") as err:
        SentinelHubSource(wrong).find_scenes(tile, START, END)
    assert "not-the-secret" not in str(err.value)


def test_secret_never_leaks(
    fake: FakeServer,
    settings: SourceSettings,
    tmp_path: Path,
    tiles: tuple[Tile, ...],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    tile = tiles[0]
    source = SentinelHubSource(settings)
    scenes = source.find_scenes(tile, START, END)
    source.load(tile, scenes[:2], bands=("red", "nir")).compute()
    fake.inject(PROCESS_PATH, "403", times=1)
    with pytest.raises(SourceError) as err:
        source.load(tile, scenes[2:3], bands=("red",)).compute()
    wrong = sh_settings(fake, tmp_path / "wrong", sh_client_secret=SecretStr(CLIENT_SECRET + "x"))
    with pytest.raises(SourceError) as err2:
        SentinelHubSource(wrong).find_scenes(tile, START, END)
    out = capsys.readouterr()
    assert "client_secret" in caplog.text  # the token request was logged, redacted
    texts = [
        caplog.text,
        out.out,
        out.err,
        str(err.value),
        str(err2.value),
        str(source.describe()),
        repr(source),
        repr(settings),
        settings.model_dump_json(),
    ]
    for text in texts:
        assert CLIENT_SECRET not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files  # the cache was written
    for path in files:
        assert CLIENT_SECRET.encode() not in path.read_bytes(), path


def test_large_tile_is_split_into_requests_within_the_limit(
    fake: FakeServer, settings: SourceSettings
) -> None:
    # A 2600 px tile (26 km) containing the real scenes, fetched as one 2600 px block.
    tile = Tile(32633, 17, 195, size=2600)
    source = SentinelHubSource(settings)
    scenes = source.find_scenes(tile, START, END)[:1]
    fake.reset_counts()
    stack = source.load(tile, scenes, bands=("red", "nir"), chunk_px=2600).compute()
    assert fake.count(PROCESS_PATH) == 4  # 2 × 2 sub-requests of 1300 px
    got = ndvi(stack["red"].values[0], stack["nir"].values[0])
    want = reference_ndvi(tile.geobox, 0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.isfinite(got).sum() > 9000


def test_fake_refuses_more_than_2500_px(fake: FakeServer, settings: SourceSettings) -> None:
    tile = Tile(32633, 17, 195, size=2600)
    source = SentinelHubSource(settings)
    scene = source.find_scenes(tile, START, END)[0]
    plan = process_plan(("red",), scl=False)
    with pytest.raises(SourceError, match=r"HTTP 400.*2500"):
        source._fetch_window(scene, tile.geobox, plan, f"scene {scene.id} tile {tile.id}")


def test_l2a_request_asks_for_scl() -> None:
    source = SentinelHubSource(SourceSettings(level="l2a"))
    tile = Tile(32633, 363, 3968, size=128)
    refl, scl = stack_bands("l2a", ("red", SCL))
    plan = process_plan(refl, scl=scl)
    request = source._process_request(Scene("S2B_X", TIMES[0]), tile.geobox, plan)
    assert request.post_values is not None
    assert request.post_values["input"]["data"][0]["type"] == "sentinel-2-l2a"
    assert '"SCL"' in request.post_values["evalscript"]
    assert [r["identifier"] for r in request.post_values["output"]["responses"]] == [
        "bands",
        "scl",
        "dataMask",
    ]


def test_process_request_body() -> None:
    # Building a request touches no network: the body is inspectable before any I/O.
    source = SentinelHubSource(SourceSettings(level="l1c"))
    tile = Tile(32633, 363, 3968, size=128)
    scene = Scene(
        "S2A_X", TIMES[0], meta={"start": TIMES[0].isoformat(), "end": TIMES[0].isoformat()}
    )
    request = source._process_request(scene, tile.geobox, process_plan(("red",), scl=False))
    body = request.post_values
    assert body is not None
    assert request.url == "https://sh.dataspace.copernicus.eu/api/v1/process"
    assert (
        body["input"]["bounds"]["properties"]["crs"]
        == "http://www.opengis.net/def/crs/EPSG/0/32633"
    )
    assert body["input"]["bounds"]["bbox"] == list(tile.geobox.boundingbox)
    assert (body["output"]["width"], body["output"]["height"]) == (128, 128)
    assert body["input"]["data"][0]["type"] == "sentinel-2-l1c"
    assert body["input"]["data"][0]["dataFilter"]["mosaickingOrder"] == "leastCC"
    assert body["input"]["data"][0]["dataFilter"]["timeRange"] == {
        "from": "2015-07-11T09:50:08Z",
        "to": "2015-07-11T10:10:08Z",
    }
    assert request.headers["accept"] == "application/x-tar"


# --- endpoints and pre-flight -------------------------------------------------------------


def test_check_passes_against_the_fake_and_needs_no_request(
    fake: FakeServer, settings: SourceSettings
) -> None:
    SentinelHubSource(settings).check()
    assert fake.count() == 0


def test_a_period_without_scenes_is_an_empty_tuple(
    fake: FakeServer, settings: SourceSettings, tiles: tuple[Tile, ...]
) -> None:
    source = SentinelHubSource(settings)
    assert source.find_scenes(tiles[0], date(2016, 1, 1), date(2016, 1, 31)) == ()
    assert fake.count("/api/v1/catalog/1.0.0/search") == 1
    offline = SentinelHubSource(settings.model_copy(update={"offline": True}))
    assert offline.find_scenes(tiles[0], date(2016, 1, 1), date(2016, 1, 31)) == ()
    assert fake.count("/api/v1/catalog/1.0.0/search") == 1


@pytest.mark.parametrize(
    ("option", "url"),
    [("sh_base_url", "http://sh.example.org"), ("sh_token_url", "http://id.example.org/token")],
)
def test_plain_http_off_this_machine_is_a_config_error(
    tmp_path: Path, tiles: tuple[Tile, ...], option: str, url: str
) -> None:
    """Not "rejected the credentials": OAUTHLIB_INSECURE_TRANSPORT (set here) changes nothing."""
    settings = SourceSettings(
        sh_client_id=CLIENT_ID,
        sh_client_secret=SecretStr(CLIENT_SECRET),
        cache_dir=tmp_path / "cache",
        retries=1,
        **{option: url},  # type: ignore[arg-type]
    )
    source = SentinelHubSource(settings)
    assert source.describe()["endpoint"]  # still listed by ``agrimon sources``
    flag = "--" + option.replace("_", "-")
    for call in (source.check, partial(source.find_scenes, tiles[0], START, END)):
        with pytest.raises(ConfigError) as err:
            call()
        message = str(err.value)
        assert flag in message and repr(url) in message and "https://" in message
        assert "rejected" not in message and "\n" not in message


def test_plain_http_token_url_without_insecure_transport_is_named(
    fake: FakeServer,
    settings: SourceSettings,
    tiles: tuple[Tile, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """requests-oauthlib's InsecureTransportError is not a credentials problem."""
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT")
    source = SentinelHubSource(settings)
    with pytest.raises(ConfigError) as err:
        source.check()
    assert "OAUTHLIB_INSECURE_TRANSPORT=1" in str(err.value)
    # The same message when the token request itself is refused, mid-run.
    with pytest.raises(ConfigError) as err:
        source.find_scenes(tiles[0], START, END)
    message = str(err.value)
    assert "--sh-token-url" in message and token_url(fake) in message
    assert "OAUTHLIB_INSECURE_TRANSPORT=1" in message and "rejected" not in message
    assert fake.count() == 0


def test_an_unreachable_host_is_named(tmp_path: Path, tiles: tuple[Tile, ...]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    settings = SourceSettings(
        sh_base_url=base,
        sh_token_url=base + "/token",
        sh_client_id=CLIENT_ID,
        sh_client_secret=SecretStr(CLIENT_SECRET),
        cache_dir=tmp_path / "cache",
        retries=2,
        backoff_s=0.0,
    )
    source = SentinelHubSource(settings)
    source.check()  # well formed: only trying finds the host down
    with pytest.raises(SourceError) as err:
        source.find_scenes(tiles[0], START, END)
    message = str(err.value)
    assert f"could not reach Sentinel Hub host 127.0.0.1:{port}" in message
    assert "--sh-base-url and --sh-token-url" in message
    assert "rejected" not in message and "\n" not in message


def test_offline_a_corrupt_catalog_page_is_reported_as_corrupt(
    fake: FakeServer, settings: SourceSettings, tiles: tuple[Tile, ...]
) -> None:
    SentinelHubSource(settings).find_scenes(tiles[0], START, END)
    pages = sorted(settings.cache_dir.rglob("*.bin"))
    assert pages
    for path in pages:
        path.write_bytes(path.read_bytes()[:-5])  # truncated: the checksum no longer matches
    offline = SentinelHubSource(settings.model_copy(update={"offline": True}))
    with pytest.raises(CorruptCacheError) as err:
        offline.find_scenes(tiles[0], START, END)
    message = str(err.value)
    assert f"catalog page 1 of tile {tiles[0].id}" in message and "is corrupt" in message
    assert "checksum" in message and "without --offline" in message
    assert "not in the cache" not in message
