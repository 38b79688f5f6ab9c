"""STAC API source: pystac-client to search, odc-stac to read Cloud-Optimised GeoTIFFs.

Presets cover Earth Search v1 (default, no account), Microsoft Planetary Computer (hrefs
signed with the ``planetary-computer`` package) and the Copernicus Data Space STAC; any STAC
API works with ``--stac-url``. Assets are matched to the common band names whatever the
catalog calls them (``red``, ``B04``, ``B04_10m`` or an ``eo:bands`` common name).
Reflectance is ``DN × scale + offset`` from ``raster:bands``, with the processing-baseline
04.00 shift removed exactly once (``earthsearch:boa_offset_applied`` respected).

Each search and each (scene, tile) read goes through the response cache and is retried with
backoff; a read that keeps failing names the scene and the tile.
"""

from __future__ import annotations

import io
import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Any

import numpy as np
import pystac
import rasterio
import rasterio.errors
import requests
import xarray as xr
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from urllib3.util.retry import Retry

from agrimon.cache import request_key
from agrimon.errors import ConfigError, SourceError
from agrimon.grid import Tile
from agrimon.quiet import demote
from agrimon.retry import RetryableError, with_retries
from agrimon.sources import bands as s2
from agrimon.sources.base import (
    ALL_BANDS,
    DEFAULT_CHUNK_PX,
    SCL,
    Scene,
    parse_utc,
    solar_day,
    url_problem,
)
from agrimon.sources.lazy import lazy_stack
from agrimon.sources.settings import SourceSettings

NAME = "stac"


@dataclass(frozen=True)
class StacPreset:
    """A public STAC API and its Sentinel-2 collections by processing level."""

    url: str
    collections: Mapping[str, str]
    sign: bool = False
    note: str = ""


PRESETS: dict[str, StacPreset] = {
    "earth-search": StacPreset(
        "https://earth-search.aws.element84.com/v1",
        {"l2a": "sentinel-2-l2a", "l1c": "sentinel-2-l1c"},
        note="Element 84 Earth Search on AWS: free, no account",
    ),
    "planetary-computer": StacPreset(
        "https://planetarycomputer.microsoft.com/api/stac/v1",
        {"l2a": "sentinel-2-l2a"},
        sign=True,
        note="Microsoft Planetary Computer: free, hrefs signed anonymously",
    ),
    "cdse": StacPreset(
        "https://stac.dataspace.copernicus.eu/v1",
        {"l2a": "sentinel-2-l2a", "l1c": "sentinel-2-l1c"},
        note="Copernicus Data Space: assets on S3, need CDSE S3 keys (AWS_* variables)",
    ),
}

# GDAL settings for COG range reads: no directory listing, retries on 429/5xx, no reuse of
# a response cached from a failed (truncated, corrupt) read.
GDAL_HTTP_ENV: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": 3,
    "GDAL_HTTP_RETRY_DELAY": 0.5,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2",
    "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/",
    "VSI_CACHE": "FALSE",
    "GDAL_HTTP_MULTIRANGE": "YES",
}
_PAGE_LIMIT = 100


# Each failed try of a read (``GDAL HTTP error code: 0 … Retrying``): retried, and a read
# that still fails is reported once, naming its scene and tile.
demote("rasterio._env", logging.WARNING, " HTTP ")
demote("odc.loader._rio", logging.ERROR, "Failed to load")


# --- pure helpers -----------------------------------------------------------------------


def search_body(
    collection: str, bbox: Sequence[float], start: date, end: date, max_cloud: float
) -> dict[str, Any]:
    """POST /search body for one tile and period (RFC 3339 datetimes, cloud filter)."""
    return {
        "collections": [collection],
        "bbox": [round(float(v), 7) for v in bbox],
        "datetime": f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z",
        "query": {"eo:cloud_cover": {"lte": max_cloud}},
        "limit": _PAGE_LIMIT,
    }


def check_stac_url(url: str) -> None:
    """Refuse a ``--stac-url`` that is not an absolute ``http(s)://`` URL with a host.

    pystac-client would read anything else as a local file path (and fail only after the
    retries, with a confusing message); files on disk are the local source's job.

    Raises:
        ConfigError: Naming ``--stac-url``, the value and the fix.
    """
    problem = url_problem(url)
    if problem is not None:
        raise ConfigError(
            f"--stac-url {url!r} {problem}: pass the absolute URL of a STAC API "
            f"(e.g. {PRESETS['earth-search'].url}); for a folder or catalog on disk use "
            "--source local --local-path DIR"
        )


def asset_key(item: Mapping[str, Any], band: str) -> str | None:
    """Key of the asset holding ``band`` (common name) in a STAC item dict, or None."""
    assets: Mapping[str, Any] = item.get("assets", {})
    band_id = s2.BAND_IDS.get(band, band).upper()
    for key in assets:
        if key.lower() == band or key.upper() == band_id:
            return str(key)
    for key in assets:
        if key.upper().startswith(band_id + "_"):  # CDSE: B04_10m, SCL_20m
            return str(key)
    for key, asset in assets.items():
        names = [b.get("common_name") for b in asset.get("eo:bands", []) if isinstance(b, dict)]
        if band in names and band != SCL:
            return str(key)
    return None


def asset_scaling(item: Mapping[str, Any], key: str) -> tuple[float, float, float | None]:
    """``(scale, offset, nodata)`` of an asset, baseline-04.00 shift applied exactly once."""
    asset = item["assets"][key]
    raster = (asset.get("raster:bands") or [{}])[0]
    props = item.get("properties", {})
    offset = s2.reflectance_offset(
        raster.get("offset"),
        props.get("s2:processing_baseline"),
        props.get("earthsearch:boa_offset_applied"),
    )
    nodata = raster.get("nodata", 0)
    return (
        float(raster.get("scale", s2.DN_SCALE)),
        offset,
        None if nodata is None else float(nodata),
    )


def _item_day(item: Mapping[str, Any]) -> date:
    """Local solar date of an item's acquisition."""
    bbox = item.get("bbox") or [0.0, 0.0, 0.0, 0.0]
    return solar_day(parse_utc(str(item["properties"]["datetime"])), (bbox[0] + bbox[2]) / 2)


def group_scenes(items: Sequence[Mapping[str, Any]]) -> tuple[Scene, ...]:
    """One scene per solar day: granules of the same pass are mosaicked together."""
    by_day: dict[date, list[Mapping[str, Any]]] = {}
    for item in items:
        by_day.setdefault(_item_day(item), []).append(item)
    scenes = []
    for _, group in sorted(by_day.items()):
        group = sorted(group, key=lambda i: str(i["id"]))
        first = group[0]
        when = parse_utc(str(first["properties"]["datetime"]))
        clouds = [i["properties"].get("eo:cloud_cover") for i in group]
        known = [float(c) for c in clouds if c is not None]
        scenes.append(
            Scene(
                id=str(first["id"]) + (f"+{len(group) - 1}" if len(group) > 1 else ""),
                time=when,
                cloud_cover=round(sum(known) / len(known), 1) if known else None,
                meta={"items": [dict(i) for i in group]},
            )
        )
    return tuple(scenes)


def _pack(arrays: Mapping[str, NDArray[Any]]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _unpack(payload: bytes) -> dict[str, NDArray[Any]]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


# --- the source -------------------------------------------------------------------------


class StacSource:
    """Sentinel-2 from a STAC API (see module docstring)."""

    name = NAME

    def __init__(self, settings: SourceSettings):
        self.settings = settings
        self.preset = PRESETS[settings.stac_preset]
        self.url = (settings.stac_url or self.preset.url).rstrip("/")
        collection = self.preset.collections.get(settings.level)
        if collection is None:
            raise ConfigError(
                f"STAC preset '{settings.stac_preset}' has no {settings.level.upper()} collection: "
                f"use --level {', '.join(self.preset.collections)} or another --stac-preset"
            )
        self.collection = collection
        self.cache = settings.cache()
        self.policy = settings.retry_policy()

    def check(self) -> None:
        """Pre-flight check, no network: the STAC API URL is an absolute http(s) URL.

        Raises:
            ConfigError: For a malformed ``--stac-url``.
        """
        check_stac_url(self.settings.stac_url or self.url)

    def describe(self) -> dict[str, str]:
        """Endpoint, collection and account needs."""
        return {
            "endpoint": self.url,
            "collection": self.collection,
            "credentials": "none needed" if self.settings.stac_preset != "cdse" else "CDSE S3 keys",
            "note": self.preset.note,
        }

    # search -----------------------------------------------------------------------------

    def find_scenes(self, tile: Tile, start: date, end: date) -> tuple[Scene, ...]:
        """Scenes (one per solar day) whose items intersect the tile, cloud-filtered.

        Returns:
            The scenes, oldest first; empty when the period has none.

        Raises:
            ConfigError: For a malformed ``--stac-url`` (before any request).
            SourceError: When the search keeps failing, or offline and not cached.
        """
        self.check()
        body = search_body(
            self.collection, tile.footprint_lonlat().bounds, start, end, self.settings.max_cloud
        )
        what = f"the STAC search of {self.url} for tile {tile.id} ({start} to {end})"
        payload = self.cache.fetch(
            request_key("stac-search", self.url, body),
            partial(with_retries, partial(self._search, body), what=what, policy=self.policy),
            what=what,
            check=_check_json,
        )
        items = _json_loads(payload)
        return group_scenes(items)

    def _search(self, body: Mapping[str, Any]) -> bytes:
        from pystac_client import Client
        from pystac_client.exceptions import APIError
        from pystac_client.stac_api_io import StacApiIO

        retry = Retry(
            total=max(self.policy.attempts - 1, 0),
            backoff_factor=self.policy.backoff_s,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        try:
            stac_io = StacApiIO(max_retries=retry, timeout=self.settings.timeout_s)
            client = Client.open(self.url, stac_io=stac_io)
            search = client.search(
                **{k: v for k, v in body.items() if k != "limit"}, limit=body["limit"]
            )
            items = [item for page in search.pages_as_dicts() for item in page.get("features", [])]
        except APIError as err:
            status = getattr(err, "status_code", None)
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            if status in (401, 403):
                raise SourceError(
                    f"STAC API {self.url} refused the request ({status}): it needs credentials "
                    "this source does not have; use a public preset or another --stac-url"
                ) from err
            raise RetryableError(f"STAC API error {status or ''} {text}".strip()) from err
        except (requests.RequestException, OSError) as err:
            raise RetryableError(f"{type(err).__name__}: {err}") from err
        return json.dumps(items).encode()

    # pixels -----------------------------------------------------------------------------

    def load(
        self,
        tile: Tile,
        scenes: Sequence[Scene],
        *,
        bands: Sequence[str] = ALL_BANDS,
        chunk_px: int = DEFAULT_CHUNK_PX,
    ) -> xr.Dataset:
        """Lazy scene stack of ``tile.geobox``: one cached, retried read per scene."""
        items0 = [i for s in scenes for i in s.meta.get("items", [])]
        available = (
            [b for b in bands if any(asset_key(i, b) for i in items0)] if items0 else list(bands)
        )
        missing = [b for b in bands if b not in available and b != SCL]
        if missing:
            raise SourceError(
                f"STAC items of {self.collection} at {self.url} have no asset for "
                f"{', '.join(missing)}: check the collection (--level) or the catalog's asset names"
            )
        ny, nx = tile.geobox.shape
        fetch_px = chunk_px * -(-max(ny, nx) // chunk_px)
        return lazy_stack(
            tile.geobox,
            [s.time for s in scenes],
            available,
            fetch=partial(self._fetch, scenes=list(scenes), bands=available, tile_id=tile.id),
            name=NAME,
            chunk_px=chunk_px,
            fetch_px=fetch_px,
            token=(self.url, [s.id for s in scenes]),
            attrs={"source": NAME, "endpoint": self.url, "collection": self.collection},
        )

    def _fetch(
        self,
        t: int,
        block: GeoBox,
        _prepared: Any,
        *,
        scenes: Sequence[Scene],
        bands: Sequence[str],
        tile_id: str,
    ) -> dict[str, NDArray[Any]]:
        scene = scenes[t]
        items = list(scene.meta["items"])
        what = f"scene {scene.id} for tile {tile_id}"
        key = request_key(
            "stac-pixels",
            [i["id"] for i in items],
            [
                {b: (i["assets"].get(asset_key(i, b) or "", {}).get("href")) for b in bands}
                for i in items
            ],
            list(bands),
            str(block.crs),
            list(block.affine)[:6],
            list(block.shape),
        )
        payload = self.cache.fetch(
            key,
            partial(
                with_retries,
                partial(self._read, items, bands, block, what),
                what=what,
                policy=self.policy,
            ),
            what=what,
            check=_check_npz,
        )
        return _unpack(payload)

    def _read(
        self, items: Sequence[Mapping[str, Any]], bands: Sequence[str], block: GeoBox, what: str
    ) -> bytes:
        """Read one scene's items onto ``block`` with odc-stac, as reflectance."""
        import odc.stac

        out: dict[str, NDArray[Any]] = {}
        for band in bands:
            layers: list[NDArray[Any]] = []
            for item in items:
                key = asset_key(item, band)
                if key is None:
                    continue
                scale, offset, nodata = asset_scaling(item, key)
                dn = self._read_asset(odc.stac, item, key, block)
                if band == SCL:
                    layers.append(np.where(np.isnan(dn), 0, dn).astype(np.uint8))
                else:
                    layers.append(
                        _sanity(
                            s2.dn_to_reflectance(dn, scale=scale, offset=offset, nodata=nodata),
                            what,
                        )
                    )
            if not layers:
                continue
            out[band] = _first_valid(layers, band)
        return _pack(out)

    def _read_asset(
        self, odc_stac: Any, item: Mapping[str, Any], key: str, block: GeoBox
    ) -> NDArray[Any]:
        patch: Callable[[str], str] | None = None
        if self.preset.sign:
            import planetary_computer

            patch = planetary_computer.sign
        try:
            # A reply that stalls longer than the timeout fails this try (retried below);
            # GDAL reads the option as whole seconds.
            timeout = max(1, math.ceil(self.settings.timeout_s))
            with rasterio.Env(**GDAL_HTTP_ENV, GDAL_HTTP_TIMEOUT=timeout):
                ds = odc_stac.load(
                    [pystac.Item.from_dict(dict(item))],
                    bands=[key],
                    geobox=block,
                    resampling="nearest",
                    dtype="float64",
                    groupby="id",
                    chunks=None,
                    pool=None,
                    fail_on_error=True,
                    patch_url=patch,
                )
        except (rasterio.errors.RasterioError, OSError, RuntimeError, ValueError) as err:
            raise RetryableError(
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ) from err
        values = np.asarray(ds[key].values[0], dtype=np.float64)
        nodata = ds[key].attrs.get("nodata")
        if nodata is not None:
            values = np.where(values == nodata, np.nan, values)
        return values


def _first_valid(layers: Sequence[NDArray[Any]], band: str) -> NDArray[Any]:
    """Mosaic granules of one pass: the first valid value wins (as odc-stac's default fuser)."""
    out = layers[0].copy()
    for layer in layers[1:]:
        hole = (out == 0) if band == SCL else np.isnan(out)
        out[hole] = layer[hole]
    return out


def _sanity(values: NDArray[np.float32], what: str) -> NDArray[np.float32]:
    """Warn when reflectance looks offset twice (Earth Search's flag is wrong on some items)."""
    valid = values[np.isfinite(values)]
    if valid.size > 100 and float(np.percentile(valid, 5)) < -0.05:
        warnings.warn(
            f"{what}: many reflectances below −0.05; the baseline-04.00 offset may have been "
            "applied twice (catalog metadata wrong): check this scene",
            stacklevel=2,
        )
    return values


def _json_loads(payload: bytes) -> list[dict[str, Any]]:
    data = json.loads(payload)
    if not isinstance(data, list):
        raise ValueError("cached search is not a list of items")
    return data


def _check_npz(payload: bytes) -> None:
    _unpack(payload)


def _check_json(payload: bytes) -> None:
    _json_loads(payload)
