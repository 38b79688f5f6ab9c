"""``Source.check``: every source's pre-flight check, offline and within a second.

The CLI calls ``get_source(...).check()`` before it starts a flow, so that a bad option fails
in the first second with one line naming the option, rather than mid-run after retries.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from pydantic import SecretStr

from agrimon.errors import AgrimonError, ConfigError, SourceError
from agrimon.sources import SOURCES, get_source
from agrimon.sources.base import Source, is_loopback, url_host, url_problem
from agrimon.sources.settings import SourceSettings

CREDENTIALS: dict[str, Any] = {"sh_client_id": "check-id", "sh_client_secret": SecretStr("s3")}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Any connection or name lookup fails the test; no developer profile leaks in."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"check() touched the network: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_PROFILE", "OAUTHLIB_INSECURE_TRANSPORT"):
        monkeypatch.delenv(var, raising=False)


def _check(name: str, **settings: Any) -> None:
    """``get_source(name).check()``, which must take well under a second."""
    source = get_source(name, SourceSettings.model_validate(settings))
    assert isinstance(source, Source)
    began = time.perf_counter()
    try:
        source.check()
    finally:
        assert time.perf_counter() - began < 1.0


def _fails(error: type[AgrimonError], name: str, *words: str, **settings: Any) -> str:
    """Check that ``check()`` raises ``error`` with one line holding every word."""
    with pytest.raises(error) as err:
        _check(name, **settings)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def _geotiff(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": 4,
        "height": 4,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, 4, 4), np.uint16))
    return path


# --- every source -------------------------------------------------------------------------


def test_every_source_has_a_check_and_unconfigured_ones_still_describe() -> None:
    """``agrimon sources`` lists every source, configured or not: constructors never raise."""
    for name in SOURCES:
        source = get_source(name, SourceSettings(stac_url="not a url"))
        assert isinstance(source, Source)
        assert source.describe()["endpoint"]
    assert get_source("local", SourceSettings()).describe()["endpoint"].startswith("not set")


def test_demo_check_does_nothing() -> None:
    _check("demo")
    _check("demo", offline=True, stac_url="not a url", local_path="/nowhere")


# --- local --------------------------------------------------------------------------------


def test_local_without_a_path(tmp_path: Path) -> None:
    _fails(ConfigError, "local", "--local-path DIR")


def test_local_path_that_does_not_exist(tmp_path: Path) -> None:
    _fails(
        ConfigError,
        "local",
        str(tmp_path / "nowhere"),
        "does not exist",
        "--local-path",
        local_path=tmp_path / "nowhere",
    )


def test_local_path_that_is_a_file_but_not_a_catalog(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    _fails(ConfigError, "local", str(notes), "not a STAC catalog", "--local-path", local_path=notes)
    tif = _geotiff(tmp_path / "S2_2024-01-05.tif")
    _fails(ConfigError, "local", str(tif), "catalog.json", "folder", local_path=tif)


def test_local_folder_with_nothing_to_read(tmp_path: Path) -> None:
    _fails(ConfigError, "local", str(tmp_path), "no GeoTIFFs", "--local-path", local_path=tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.json").write_text('{"type": "FeatureCollection"}')
    (tmp_path / "readme.md").write_text("# nothing here")
    _fails(ConfigError, "local", "no GeoTIFFs", "STAC catalog", "B04", local_path=tmp_path)


def test_local_broken_catalog(tmp_path: Path) -> None:
    (tmp_path / "catalog.json").write_text("{not json")
    _fails(SourceError, "local", "catalog.json", "STAC", local_path=tmp_path)
    _fails(SourceError, "local", "catalog.json", local_path=tmp_path / "catalog.json")


def test_local_paths_that_pass(tmp_path: Path) -> None:
    _geotiff(tmp_path / "tiffs" / "2024-01-05" / "B04.tif")
    _check("local", local_path=tmp_path / "tiffs")

    catalog = pystac.Catalog("c", "a catalog")
    item = pystac.Item(
        "i",
        None,
        [14.0, 46.0, 14.1, 46.1],
        pystac.utils.str_to_datetime("2024-01-05T10:00:00Z"),
        {},
    )
    catalog.add_item(item)
    catalog.normalize_and_save(str(tmp_path / "stac"), pystac.CatalogType.SELF_CONTAINED)
    _check("local", local_path=tmp_path / "stac")
    _check("local", local_path=tmp_path / "stac" / "catalog.json")

    # Loose item files without a catalog.json count too.
    items = tmp_path / "items"
    items.mkdir()
    (items / "other.json").write_text(json.dumps({"hello": 1}))
    (items / "i.json").write_text(json.dumps(item.to_dict(include_self_link=False)))
    _check("local", local_path=items)


# --- stac ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["not a url", "/data/catalog.json", "file:///data/catalog.json", "ftp://host/stac", "https://"],
)
def test_stac_url_must_be_http_with_a_host(url: str) -> None:
    message = _fails(ConfigError, "stac", "--stac-url", repr(url), "https://", stac_url=url)
    assert "--source local" in message


@pytest.mark.parametrize(
    "url", [None, "https://earth-search.aws.element84.com/v1/", "http://127.0.0.1:8123/stac"]
)
def test_stac_urls_that_pass(url: str | None) -> None:
    _check("stac", stac_url=url)


# --- sentinelhub --------------------------------------------------------------------------


def test_sentinelhub_without_credentials_says_how_to_set_them() -> None:
    _fails(
        ConfigError,
        "sentinelhub",
        "Copernicus Data Space",
        "--sh-client-id",
        "SH_CLIENT_ID",
        "sentinelhub.config",
    )
    # Half a pair is no pair.
    _fails(ConfigError, "sentinelhub", "--sh-client-secret", sh_client_id="only-the-id")


def test_sentinelhub_offline_needs_no_credentials() -> None:
    _check("sentinelhub", offline=True)


def test_sentinelhub_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SH_CLIENT_ID", "env-id")
    monkeypatch.setenv("SH_CLIENT_SECRET", "env-secret")
    _check("sentinelhub")
    _check("sentinelhub", sh_preset="sentinel-hub")


@pytest.mark.parametrize(
    ("option", "url"),
    [
        ("sh_base_url", "http://sh.example.org"),
        ("sh_token_url", "http://identity.example.org/token"),
        ("sh_base_url", "http://10.0.0.7:8080"),
    ],
)
def test_sentinelhub_plain_http_is_refused_off_this_machine(option: str, url: str) -> None:
    flag = "--" + option.replace("_", "-")
    message = _fails(
        ConfigError, "sentinelhub", flag, repr(url), "plain http", "https://", **{option: url}
    )
    assert "rejected" not in message
    # Offline too: the URL is wrong whatever the cache holds.
    _fails(ConfigError, "sentinelhub", flag, offline=True, **{option: url})


@pytest.mark.parametrize(
    ("option", "url"),
    [("sh_base_url", "not a url"), ("sh_token_url", "sh.example.org/token"), ("sh_base_url", "")],
)
def test_sentinelhub_malformed_urls(option: str, url: str) -> None:
    if not url:  # an empty option means "the preset's URL"
        _check("sentinelhub", **CREDENTIALS, **{option: url})
        return
    flag = "--" + option.replace("_", "-")
    _fails(ConfigError, "sentinelhub", flag, repr(url), "https://", **CREDENTIALS, **{option: url})


@pytest.mark.parametrize("host", ["127.0.0.1:8099", "localhost:8099", "[::1]:8099"])
def test_sentinelhub_plain_http_on_loopback(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    urls = {"sh_base_url": f"http://{host}", "sh_token_url": f"http://{host}/token"}
    # requests-oauthlib refuses a plain-http token URL unless told otherwise: say so now.
    _fails(
        ConfigError,
        "sentinelhub",
        "--sh-token-url",
        "OAUTHLIB_INSECURE_TRANSPORT=1",
        **CREDENTIALS,
        **urls,
    )
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    _check("sentinelhub", **CREDENTIALS, **urls)
    # An https token URL with a loopback http base URL needs nothing more.
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT")
    _check("sentinelhub", **CREDENTIALS, sh_base_url=f"http://{host}")


def test_sentinelhub_https_passes() -> None:
    _check("sentinelhub", **CREDENTIALS)
    _check(
        "sentinelhub",
        **CREDENTIALS,
        sh_base_url="https://sh.example.org/",
        sh_token_url="https://identity.example.org/token",
    )


# --- URL helpers --------------------------------------------------------------------------


def test_url_helpers() -> None:
    assert url_problem("https://earth-search.aws.element84.com/v1") is None
    assert url_problem("http://[::1]:8080/x") is None
    assert url_problem("not a url") == "has no http:// or https:// scheme"
    assert url_problem("https:///path") == "has no host"
    assert url_problem("http://exa mple.org") == "has no host"
    assert url_problem("http://host:port") == "cannot be parsed as a URL"
    assert url_problem("http://[::1") == "cannot be parsed as a URL"
    assert url_host("https://user@sh.example.org:8443/api") == "sh.example.org:8443"
    assert all(
        is_loopback(u)
        for u in ("http://localhost", "http://127.0.0.1:9", "http://127.3.2.1", "http://[::1]/")
    )
    assert not any(
        is_loopback(u) for u in ("http://10.0.0.1", "http://localhost.example.org", "nothing")
    )
