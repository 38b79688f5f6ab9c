"""The fake STAC API + COG server, exercised through the real clients.

pystac-client searches it (both paging styles, filters, faults), rasterio/GDAL reads its COGs
through ``/vsicurl/`` (ranges, faults, retries) and odc-stac loads its items: what these
tests pin down is that the fake speaks the protocols the way the real services do, so that
tests of agrimon's STAC source against it mean something.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pystac
import pystac_client
import pytest
import rasterio
import requests
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from rasterio.errors import RasterioIOError
from urllib3.util.retry import Retry

from tests.fakes.base import FakeServer, FaultKind
from tests.fakes.stac_api import (
    BAND_IDS,
    CLOUD_COVER,
    SCENE_DATES,
    SCENES_DIR,
    AssetStyle,
    OffsetDeclaration,
    Paging,
    StacFakeConfig,
    item_id,
    scene_path,
    stac_fake,
)

COLLECTION = "sentinel-2-l1c"
PERIOD = "2015-07-01/2015-09-30"
#: A WGS84 box around the scenes (they cover ~14.551–14.564 E, 45.866–45.875 N).
AOI_BBOX = [14.5, 45.8, 14.6, 45.9]
B04 = BAND_IDS.index("B04") + 1


@pytest.fixture(scope="module")
def scenes_dir() -> Path:
    """Folder of the real Slovenia scenes; skip when they are not laid beside the project."""
    if not all(scene_path(day).exists() for day in SCENE_DATES):
        pytest.skip(f"real Slovenia scenes missing under {SCENES_DIR}: lay shared/data/real")
    return SCENES_DIR


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not go through a proxy (requests and GDAL's curl)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def server(scenes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    """One default fake (Earth Search naming, body-token paging) shared by read-only tests."""
    with stac_fake(tmp_path_factory.mktemp("stac-cogs"), scenes_dir=scenes_dir) as fake:
        yield fake


@pytest.fixture
def fresh(scenes_dir: Path, tmp_path: Path) -> Iterator[FakeServer]:
    """A fake of its own, for tests that arm faults or count requests."""
    with stac_fake(tmp_path, scenes_dir=scenes_dir) as fake:
        yield fake


def open_client(server: FakeServer, **kwargs: Any) -> pystac_client.Client:
    """``Client.open`` on the fake with every warning raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return pystac_client.Client.open(server.url + "/", **kwargs)


def search_all(client: pystac_client.Client, **kwargs: Any) -> list[pystac.Item]:
    """All items of a search over the AOI and period (overridable)."""
    params: dict[str, Any] = {
        "collections": [COLLECTION],
        "bbox": AOI_BBOX,
        "datetime": PERIOD,
        "max_items": None,
    }
    params.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return list(client.search(**params).items())


def original_band(day: date, band: int = B04) -> tuple[np.ndarray[Any, Any], Any]:
    """DNs and transform of one band of the original scene."""
    with rasterio.open(scene_path(day)) as src:
        return src.read(band), src.transform


def gdal_env(server: FakeServer, **extra: Any) -> rasterio.Env:
    """The GDAL settings a loopback COG read needs (and no caching across reads)."""
    return rasterio.Env(
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        CPL_VSIL_CURL_NON_CACHED=f"/vsicurl/{server.url}/",
        **extra,
    )


def read_asset(server: FakeServer, href: str, **extra: Any) -> tuple[np.ndarray[Any, Any], Any]:
    """Band 1 and transform of a COG read through GDAL's /vsicurl/."""
    with gdal_env(server, **extra), rasterio.open(href) as src:
        return src.read(1), src.transform


# --- landing page, collections ----------------------------------------------------------


def test_client_opens_landing_page_without_warnings(server: FakeServer) -> None:
    client = open_client(server)
    assert client.id == "agrimon-fake-stac"
    assert client.conforms_to("ITEM_SEARCH") and client.conforms_to("QUERY")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [c.id for c in client.get_collections()] == [COLLECTION]
        collection = client.get_collection(COLLECTION)
        assert collection is not None
        assert [i.id for i in collection.get_items()] == [item_id(d) for d in SCENE_DATES]
    opened_bare = pystac_client.Client.open(server.url)  # no trailing slash: same catalog
    assert opened_bare.id == client.id


def test_unknown_routes_and_sidecars_are_404(server: FakeServer) -> None:
    base = f"{server.url}/cogs/{item_id(SCENE_DATES[0])}"
    assert requests.get(f"{base}/B04.tif.aux.xml", timeout=5).status_code == 404
    assert requests.get(f"{base}/B04.ovr", timeout=5).status_code == 404
    assert requests.get(f"{server.url}/collections/nope", timeout=5).status_code == 404
    head = requests.head(f"{base}/B04.tif", timeout=5)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) > 0
    part = requests.get(f"{base}/B04.tif", headers={"Range": "bytes=0-3"}, timeout=5)
    assert part.status_code == 206 and part.content in (b"II*\x00", b"MM\x00*")
    assert part.headers["Content-Range"].startswith("bytes 0-3/")


# --- search ---------------------------------------------------------------------------


@pytest.mark.parametrize("paging", ["body-token", "full-body"])
def test_search_pages_through_all_items(paging: Paging, scenes_dir: Path, tmp_path: Path) -> None:
    config = StacFakeConfig(paging=paging)
    with stac_fake(tmp_path, config, scenes_dir) as fake:
        items = search_all(open_client(fake))
        assert [i.id for i in items] == [item_id(d) for d in SCENE_DATES]
        assert fake.count("/search", "POST") == 3


@pytest.mark.parametrize("paging", ["body-token", "full-body"])
def test_next_link_shapes(paging: Paging, scenes_dir: Path, tmp_path: Path) -> None:
    body = {"collections": [COLLECTION], "query": {"eo:cloud_cover": {"lt": 50}}, "limit": 10}
    with stac_fake(tmp_path, StacFakeConfig(paging=paging, page_size=3), scenes_dir) as fake:
        first = requests.post(f"{fake.url}/search", json=body, timeout=5).json()
        (link,) = [x for x in first["links"] if x["rel"] == "next"]
        if paging == "body-token":  # Earth Search: a token, merged into the original body
            assert link["merge"] is True and set(link["body"]) == {"next"}
            again = {**body, **link["body"]}
        else:  # Planetary Computer: the whole body again, plus a token
            assert link["merge"] is False and link["body"]["query"] == body["query"]
            again = link["body"]
        assert link["method"] == "POST" and link["href"] == f"{fake.url}/search"
        second = requests.post(link["href"], json=again, timeout=5).json()
    assert first["numberMatched"] == 4 and len(first["features"]) == 3
    assert len(second["features"]) == 1
    assert not [x for x in second["links"] if x["rel"] == "next"]


def test_get_search_pages_too(fresh: FakeServer) -> None:
    items = search_all(open_client(fresh), method="GET", limit=50)
    assert len(items) == len(SCENE_DATES)
    assert fresh.count("/search", "GET") == 3


def test_cloud_filter_drops_the_cloudy_date(server: FakeServer) -> None:
    items = search_all(open_client(server), query={"eo:cloud_cover": {"lt": 50}})
    days = [i.datetime.date() for i in items if i.datetime is not None]
    assert days == [d for d in SCENE_DATES if CLOUD_COVER[d] < 50]
    assert date(2015, 8, 20) not in days and len(days) == 4
    cloudy = search_all(open_client(server), query={"eo:cloud_cover": {"gte": 50}})
    assert [i.id for i in cloudy] == [item_id(date(2015, 8, 20))]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2015-08-01/2015-08-31", [date(2015, 8, 20), date(2015, 8, 30)]),
        ("2015-08-25/..", [date(2015, 8, 30), date(2015, 9, 9)]),
        ("../2015-07-31", [date(2015, 7, 11), date(2015, 7, 31)]),
        ("2016-01-01/2016-12-31", []),
    ],
)
def test_datetime_filter(server: FakeServer, when: str, expected: list[date]) -> None:
    items = search_all(open_client(server), datetime=when)
    assert [i.id for i in items] == [item_id(d) for d in expected]


def test_bbox_filter(server: FakeServer) -> None:
    assert search_all(open_client(server), bbox=[15.0, 46.0, 15.1, 46.1]) == []


def test_items_carry_the_metadata_clients_need(server: FakeServer) -> None:
    item = search_all(open_client(server))[0]
    _, transform = original_band(SCENE_DATES[0])
    assert item.properties["datetime"] == "2015-07-11T10:00:08Z"
    # pystac migrates the projection extension v1.1 ``proj:epsg`` to ``proj:code``.
    assert item.properties["proj:code"] == "EPSG:32633"
    assert server.state["items"][0]["properties"]["proj:epsg"] == 32633
    assert item.properties["earthsearch:boa_offset_applied"] is False
    assert set(item.assets) == {
        "coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3",
        "nir", "nir08", "nir09", "cirrus", "swir16", "swir22",
    }  # fmt: skip
    red = item.assets["red"].to_dict()
    assert red["proj:shape"] == [101, 100]
    assert red["proj:transform"] == list(transform)[:6]
    assert red["raster:bands"][0] == {
        "nodata": 0,
        "data_type": "uint16",
        "bits_per_sample": 15,
        "spatial_resolution": 10,
        "scale": 0.0001,
        "offset": 0.0,
    }
    assert red["eo:bands"][0]["common_name"] == "red"
    west, south, east, north = item.bbox or []
    assert 14.55 < west < east < 14.57 and 45.86 < south < north < 45.88


# --- COG reads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assets", "key"), [("earth-search", "red"), ("planetary-computer", "B04")]
)
def test_cog_read_through_vsicurl_is_the_original_band(
    assets: AssetStyle, key: str, scenes_dir: Path, tmp_path: Path
) -> None:
    config = StacFakeConfig(assets=assets, paging="full-body")
    with stac_fake(tmp_path, config, scenes_dir) as fake:
        items = search_all(open_client(fake), datetime="2015-08-30")
        assert len(items) == 1
        data, transform = read_asset(fake, items[0].assets[key].href)
        original, original_transform = original_band(date(2015, 8, 30))
        assert np.array_equal(data, original)
        assert transform == original_transform
        assert fake.count("/cogs/", "GET") >= 1


@pytest.mark.parametrize(
    ("applied", "declaration", "shift", "offset"),
    [
        (False, "effective", 1000, -0.1),
        (None, "effective", 1000, -0.1),
        (True, "effective", 0, 0.0),
        (True, "baseline", 0, -0.1),
    ],
)
def test_baseline_04_variants(
    applied: bool | None,
    declaration: OffsetDeclaration,
    shift: int,
    offset: float,
    scenes_dir: Path,
    tmp_path: Path,
) -> None:
    config = StacFakeConfig(
        baseline="04.00",
        boa_offset_applied=applied,
        offset_declaration=declaration,
    )
    with stac_fake(tmp_path, config, scenes_dir) as fake:
        item = search_all(open_client(fake), datetime="2015-07-11")[0]
        assert item.properties["s2:processing_baseline"] == "04.00"
        assert item.properties.get("earthsearch:boa_offset_applied") == applied
        band = item.assets["red"].to_dict()["raster:bands"][0]
        assert band["offset"] == offset
        served, _ = read_asset(fake, item.assets["red"].href)
    original, _ = original_band(date(2015, 7, 11))
    valid = original > 0
    assert np.array_equal(served[~valid], original[~valid])
    assert np.array_equal(served[valid].astype(np.int64), original[valid].astype(np.int64) + shift)
    # Removing the baseline shift exactly once gives the 2015 reflectance.
    effective = 0.0 if applied else offset
    reflectance = served[valid] * band["scale"] + effective
    np.testing.assert_allclose(reflectance, original[valid] / 10000, atol=1e-9)


@pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")
def test_odc_stac_loads_the_native_grid(server: FakeServer) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    items = search_all(open_client(server))
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        stack = odc_stac.load(items, bands=["red", "nir"])
    original, transform = original_band(SCENE_DATES[0])
    assert stack.odc.geobox.transform == transform
    assert np.array_equal(stack.red.isel(time=0).values, original)
    assert stack.sizes == {"time": 5, "y": 101, "x": 100}


# --- faults ---------------------------------------------------------------------------


def test_search_503_once_then_works(fresh: FakeServer) -> None:
    client = open_client(fresh)
    fresh.inject("/search", "503")
    with pytest.raises(APIError) as info:
        search_all(client)
    assert info.value.status_code == 503
    assert len(search_all(client)) == len(SCENE_DATES)


def test_search_503_is_retried_by_a_retrying_client(fresh: FakeServer) -> None:
    retry = Retry(total=3, status_forcelist=[503], allowed_methods=None, backoff_factor=0)
    client = open_client(fresh, stac_io=StacApiIO(max_retries=retry))
    fresh.inject("/search", "503", times=2)
    assert len(search_all(client)) == len(SCENE_DATES)
    assert fresh.count("/search", "POST") == 5  # 2 refused + 3 pages


def test_search_401(fresh: FakeServer) -> None:
    client = open_client(fresh)
    fresh.inject("/search", "401")
    with pytest.raises(APIError) as info:
        search_all(client)
    assert info.value.status_code == 401


@pytest.mark.parametrize("kind", ["truncate", "corrupt"])
def test_damaged_cog_fails_the_read_then_a_clean_read_works(
    fresh: FakeServer, kind: FaultKind
) -> None:
    href = fresh.state["items"][1]["assets"]["red"]["href"]
    fresh.inject("/cogs/", kind, times=20)  # HEAD and every GET of the read
    with pytest.raises(RasterioIOError):
        read_asset(fresh, href)
    fresh.faults.clear()
    data, _ = read_asset(fresh, href)
    assert np.array_equal(data, original_band(SCENE_DATES[1])[0])


def test_cog_503_is_retried_by_gdal(fresh: FakeServer) -> None:
    href = fresh.state["items"][2]["assets"]["nir"]["href"]
    fresh.inject("/cogs/", "503", times=2)
    data, _ = read_asset(fresh, href, GDAL_HTTP_MAX_RETRY=3, GDAL_HTTP_RETRY_DELAY=0.01)
    assert np.array_equal(data, original_band(SCENE_DATES[2], BAND_IDS.index("B08") + 1)[0])
    assert fresh.count("/cogs/") >= 3


def test_reset_breaks_the_connection_mid_body_then_a_clean_read_works(fresh: FakeServer) -> None:
    href = fresh.state["items"][0]["assets"]["red"]["href"]
    fresh.inject("/cogs/", "reset", times=2)
    with pytest.raises(requests.ConnectionError, match="reset by peer"):
        requests.head(href, timeout=5)  # no answer at all
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="reset by peer"):
        requests.get(href, timeout=5)  # headers, half the body, then RST
    assert fresh.faults_left() == 0
    assert requests.get(href, timeout=5).content == fresh.state["files"][urlsplit(href).path]


def test_slow_answers_late_so_a_shorter_timeout_gives_up(fresh: FakeServer) -> None:
    fresh.inject("/conformance", "slow", delay_s=1.5)
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{fresh.url}/conformance", timeout=0.3)
    assert time.monotonic() - started < 1.0
    fresh.inject("/conformance", "slow", delay_s=0.3)
    late = requests.get(f"{fresh.url}/conformance", timeout=5)  # a patient client gets it
    assert late.status_code == 200 and "conformsTo" in late.json()
    assert fresh.faults_left() == 0 and fresh.count("/conformance") == 2
