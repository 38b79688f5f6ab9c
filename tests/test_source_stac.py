"""The STAC source through pystac-client and odc-stac against the loopback STAC fake."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agrimon.cache import CorruptCacheError, OfflineMissError
from agrimon.errors import ConfigError, SourceError
from agrimon.grid import Tile, plan_tiles
from agrimon.sources import get_source
from agrimon.sources.settings import SourceSettings
from agrimon.sources.stac import StacSource, asset_key, group_scenes, search_body

from .conftest import assert_ndvi_matches_reference, real_path, slovenia_aoi
from .fakes.base import FakeServer
from .fakes.stac_api import StacFakeConfig, stac_fake

START, END = date(2015, 7, 1), date(2015, 9, 30)


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def tiles() -> tuple[Tile, ...]:
    real_path("slovenia-s2", "scenes")
    return plan_tiles(slovenia_aoi(), tile_px=64)


def _fake(tmp_path: Path, **config: object) -> Iterator[FakeServer]:
    with stac_fake(tmp_path / "fake", StacFakeConfig(**config)) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    real_path("slovenia-s2", "scenes")
    yield from _fake(tmp_path)


def _source(server: FakeServer, tmp_path: Path, **settings: object) -> StacSource:
    values: dict[str, object] = {
        "stac_url": server.url,
        "level": "l1c",
        "cache_dir": tmp_path / "cache",
        "backoff_s": 0,
        "retries": 3,
        **settings,
    }
    source = get_source("stac", SourceSettings.model_validate(values))
    assert isinstance(source, StacSource)
    return source


def test_pure_helpers() -> None:
    body = search_body("sentinel-2-l2a", (14.5, 45.9, 14.6, 46.0), START, END, 30)
    assert body["datetime"] == "2015-07-01T00:00:00Z/2015-09-30T23:59:59Z"
    assert body["query"] == {"eo:cloud_cover": {"lte": 30}}
    es: dict[str, Any] = {"assets": {"red": {}, "nir08": {}, "scl": {}}}
    pc: dict[str, Any] = {"assets": {"B04": {}, "B8A": {}, "SCL": {}}}
    cdse: dict[str, Any] = {"assets": {"B04_10m": {}, "B8A_20m": {}, "SCL_20m": {}}}
    eo: dict[str, Any] = {
        "assets": {"band4": {"eo:bands": [{"name": "B04", "common_name": "red"}]}}
    }
    assert [asset_key(i, "red") for i in (es, pc, cdse, eo)] == ["red", "B04", "B04_10m", "band4"]
    assert [asset_key(i, "nir08") for i in (es, pc, cdse)] == ["nir08", "B8A", "B8A_20m"]
    assert [asset_key(i, "scl") for i in (es, pc, cdse, eo)] == ["scl", "SCL", "SCL_20m", None]
    # Two granules of one pass (same solar day) become one scene.
    item = {
        "properties": {"datetime": "2024-01-05T09:00:00Z", "eo:cloud_cover": 10},
        "bbox": [18, -20, 19, -19],
    }
    scenes = group_scenes([{**item, "id": "b"}, {**item, "id": "a"}])
    assert len(scenes) == 1 and scenes[0].id == "a+1" and scenes[0].cloud_cover == 10


def test_ndvi_through_stac_equals_the_reference(
    server: FakeServer, tmp_path: Path, tiles: tuple[Tile, ...]
) -> None:
    source = _source(server, tmp_path)
    for tile in tiles:
        scenes = source.find_scenes(tile, START, END)
        assert [s.time.date().isoformat() for s in scenes] == [
            "2015-07-11",
            "2015-07-31",
            "2015-08-20",
            "2015-08-30",
            "2015-09-09",
        ]
        stack = source.load(tile, scenes, bands=("red", "nir", "scl")).compute()
        assert "scl" not in stack  # L1C has none
        assert stack["red"].dtype == np.float32
        assert stack.odc.geobox == tile.geobox
        assert_ndvi_matches_reference(stack)


@pytest.mark.parametrize("paging", ["body-token", "full-body"])
def test_search_pages_through_next_links(
    tmp_path: Path, tiles: tuple[Tile, ...], paging: str
) -> None:
    real_path("slovenia-s2", "scenes")
    for server in _fake(tmp_path, paging=paging):
        scenes = _source(server, tmp_path).find_scenes(tiles[0], START, END)
        assert len(scenes) == 5
        assert server.count("/search", "POST") == 3  # page size 2: 2 + 2 + 1


def test_cloud_filter(server: FakeServer, tmp_path: Path, tiles: tuple[Tile, ...]) -> None:
    scenes = _source(server, tmp_path, max_cloud=50).find_scenes(tiles[0], START, END)
    assert "2015-08-20" not in [s.time.date().isoformat() for s in scenes]
    assert len(scenes) == 4
    assert all(s.cloud_cover is not None and s.cloud_cover <= 50 for s in scenes)


@pytest.mark.parametrize(
    "variant",
    [
        {"baseline": "04.00", "boa_offset_applied": False},
        {"baseline": "04.00", "boa_offset_applied": None},
        {"baseline": "04.00", "boa_offset_applied": True},
        {"baseline": "04.00", "boa_offset_applied": True, "offset_declaration": "baseline"},
        {"assets": "planetary-computer"},
    ],
)
def test_reflectance_is_the_same_whatever_the_baseline_and_naming(
    tmp_path: Path, tiles: tuple[Tile, ...], variant: dict[str, object]
) -> None:
    real_path("slovenia-s2", "scenes")
    tile = tiles[len(tiles) // 2]
    for server in _fake(tmp_path, **variant):
        source = _source(server, tmp_path)
        stack = source.load(
            tile, source.find_scenes(tile, START, END), bands=("red", "nir")
        ).compute()
        assert_ndvi_matches_reference(stack)
        # Red reflectance itself (not only the ratio) equals DN / 10000 of the real scene.
        assert 0.0 < float(np.nanmin(stack["red"].values)) < 0.2


def test_429_and_503_are_retried(
    server: FakeServer, tmp_path: Path, tiles: tuple[Tile, ...]
) -> None:
    tile = tiles[0]
    server.inject("/search", "429", times=1, retry_after_ms=10)
    server.inject("/search", "503", times=1)
    source = _source(server, tmp_path)
    scenes = source.find_scenes(tile, START, END)
    assert len(scenes) == 5
    server.inject("/cogs/", "503", times=2)
    assert_ndvi_matches_reference(source.load(tile, scenes, bands=("red", "nir")).compute())


@pytest.mark.parametrize("kind", ["truncate", "corrupt"])
def test_a_broken_cog_is_retried_then_named(
    server: FakeServer, tmp_path: Path, tiles: tuple[Tile, ...], kind: str
) -> None:
    tile = tiles[0]
    source = _source(server, tmp_path)
    scenes = source.find_scenes(tile, START, END)
    # A passing fault: retried, and the pixels are right.
    server.inject(f"/cogs/{scenes[0].id}/", kind, times=2)  # type: ignore[arg-type]
    assert_ndvi_matches_reference(source.load(tile, scenes[:1], bands=("red", "nir")).compute())
    # A lasting one: a one-line error naming the scene and the tile.
    server.inject(f"/cogs/{scenes[1].id}/", kind, times=1000)  # type: ignore[arg-type]
    with pytest.raises(SourceError) as err:
        source.load(tile, scenes[1:2], bands=("red", "nir")).compute()
    message = str(err.value)
    assert scenes[1].id in message and tile.id in message and "\n" not in message


def test_second_run_reads_only_the_cache_and_offline_works(
    server: FakeServer, tmp_path: Path, tiles: tuple[Tile, ...]
) -> None:
    tile = tiles[0]
    first = _source(server, tmp_path)
    a = first.load(tile, first.find_scenes(tile, START, END), bands=("red", "nir")).compute()
    assert server.count() > 0
    server.reset_counts()
    again = _source(server, tmp_path)
    b = again.load(tile, again.find_scenes(tile, START, END), bands=("red", "nir")).compute()
    assert server.count() == 0
    np.testing.assert_array_equal(a["red"].values, b["red"].values)
    offline = _source(server, tmp_path, offline=True)
    c = offline.load(tile, offline.find_scenes(tile, START, END), bands=("red", "nir")).compute()
    assert server.count() == 0
    np.testing.assert_array_equal(a["nir"].values, c["nir"].values)
    with pytest.raises(OfflineMissError, match="--offline"):
        _source(server, tmp_path, offline=True, cache_dir=tmp_path / "empty").find_scenes(
            tile, START, END
        )


def test_describe_and_presets(tmp_path: Path) -> None:
    es = get_source("stac", SourceSettings(cache_dir=tmp_path))
    assert es.describe()["endpoint"] == "https://earth-search.aws.element84.com/v1"
    pc = get_source("stac", SourceSettings(stac_preset="planetary-computer", cache_dir=tmp_path))
    assert "planetarycomputer" in pc.describe()["endpoint"]
    with pytest.raises(Exception, match="no L1C collection"):
        get_source("stac", SourceSettings(stac_preset="planetary-computer", level="l1c"))


def test_a_stac_url_that_is_not_a_url_is_refused_at_once(
    tmp_path: Path, tiles: tuple[Tile, ...]
) -> None:
    """Not read as a file path and retried: one ConfigError before any request."""
    for url in ("not a url", str(tmp_path / "catalog.json")):
        source = get_source("stac", SourceSettings(stac_url=url, cache_dir=tmp_path / "c"))
        assert source.describe()["endpoint"] == url  # ``agrimon sources`` still lists it
        for call in (source.check, partial(source.find_scenes, tiles[0], START, END)):
            with pytest.raises(ConfigError) as err:
                call()
            message = str(err.value)
            assert "\n" not in message
            assert "--stac-url" in message and repr(url) in message
            assert "https://" in message and "--source local" in message
    assert not (tmp_path / "c").exists()


def test_a_period_without_scenes_is_an_empty_tuple(
    server: FakeServer, tmp_path: Path, tiles: tuple[Tile, ...]
) -> None:
    source = _source(server, tmp_path)
    source.check()
    assert source.find_scenes(tiles[0], date(2016, 1, 1), date(2016, 1, 31)) == ()
    assert server.count("/search", "POST") == 1
    # And from the cache, offline.
    offline = _source(server, tmp_path, offline=True)
    assert offline.find_scenes(tiles[0], date(2016, 1, 1), date(2016, 1, 31)) == ()
    assert server.count("/search", "POST") == 1


def test_offline_a_corrupt_cache_entry_is_reported_as_corrupt(
    server: FakeServer, tmp_path: Path, tiles: tuple[Tile, ...]
) -> None:
    tile = tiles[0]
    online = _source(server, tmp_path)
    scenes = online.find_scenes(tile, START, END)
    online.load(tile, scenes[:1], bands=("red",)).compute()
    entries = sorted((tmp_path / "cache").rglob("*.bin"))
    assert len(entries) == 2  # the search and one scene's pixels
    for path in entries:
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        path.write_bytes(bytes(raw))
    offline = _source(server, tmp_path, offline=True)
    with pytest.raises(CorruptCacheError) as err:
        offline.find_scenes(tile, START, END)
    message = str(err.value)
    assert "is corrupt" in message and "not in the cache" not in message
    assert "the STAC search of" in message and "without --offline" in message
    assert any(str(p) in message for p in entries) and "\n" not in message
    with pytest.raises(CorruptCacheError, match=f"scene {scenes[0].id} for tile {tile.id}"):
        offline.load(tile, scenes[:1], bands=("red",)).compute()
    # The entries stay for an online run, which fetches them again.
    assert all(p.exists() for p in entries)
    server.reset_counts()
    assert _source(server, tmp_path).find_scenes(tile, START, END) == scenes
    assert server.count("/search", "POST") >= 1
