"""Fake STAC API and COG file server over the real Slovenia Sentinel-2 L1C scenes.

One loopback server, two route families:

* a STAC API (landing page, ``/collections``, ``/collections/<id>``,
  ``/collections/<id>/items[/<item>]``, ``GET``/``POST /search``) speaking what pystac-client
  0.9 expects: ``conformsTo`` with core, collections, ogcapi-features, item-search and
  item-search#query; paging through ``rel=next`` links in Earth Search style (``body-token``:
  ``{"next": token}`` with ``merge: true``) or Planetary Computer style (``full-body``: the
  whole request body plus ``"token"``, ``merge: false``);
* ``/cogs/<item-id>/<band>.tif``: one single-band Cloud-Optimised GeoTIFF per scene and band,
  served with HTTP ranges (``HEAD``, ``GET`` → ``206`` + ``Content-Range``) as GDAL's
  ``/vsicurl/`` needs; anything else under ``/cogs/`` (``.aux.xml``, ``.ovr`` sidecars) is 404.

The five scenes (2015-07-11 … 2015-09-09) are 100 × 101 px, EPSG:32633, with the scenes' odd
native pixel size (~9.9948 × 9.9974 m) kept exactly. Items carry ``eo:cloud_cover`` from
:data:`CLOUD_COVER` (2015-08-20 is the cloudy one), ``s2:processing_baseline``,
``earthsearch:boa_offset_applied`` and per-asset ``proj:shape``/``proj:transform`` and
``raster:bands`` (``nodata`` 0, ``scale`` 1e-4, ``offset``).

Processing-baseline variants (:class:`StacFakeConfig`), all giving the same reflectance as
the 2015 original ``DN / 10000`` to a client that removes the baseline shift exactly once:

=============  ==================  =============  ===========================================
``baseline``   ``boa_offset_       served DN      ``raster:bands`` offset
               applied``
=============  ==================  =============  ===========================================
``"02.01"``    any                 original       0
``"04.00"``    ``False``           original+1000  −0.1
``"04.00"``    ``None``            original+1000  −0.1 (the property is left out, as on
                                                  Planetary Computer)
``"04.00"``    ``True``            original       0 (``offset_declaration="effective"``) or
                                                  −0.1 (``"baseline"``: what Earth Search
                                                  declares whatever the flag, so a client
                                                  must honour the flag and not apply it again)
=============  ==================  =============  ===========================================

Shifted DNs are clipped to uint16 and nodata (0) stays 0. With the default
``offset_declaration="effective"``, ``DN × scale + offset`` alone is right for every variant.

Typical use::

    with stac_fake(tmp_path, StacFakeConfig(paging="full-body")) as server:
        client = pystac_client.Client.open(server.url + "/")
        items = list(client.search(collections=["sentinel-2-l1c"], max_items=None).items())

Every handler calls :meth:`FakeHandler.apply_fault` with the bytes it would send (for a COG
range request: the requested slice), so ``server.inject("/search", "503")`` or
``server.inject("/cogs/", "truncate", times=5)`` work. 404 answers consume no fault. One
GDAL read makes a ``HEAD`` and one or more ranged ``GET`` requests, so arm COG faults with enough
``times`` to reach the ``GET``. GDAL keeps damaged bytes in its process-wide /vsicurl/ cache:
read with ``CPL_VSIL_CURL_NON_CACHED=f"/vsicurl/{server.url}/"`` (GDAL splits the value on
``:``, so in practice this turns caching off for every ``/vsicurl/http`` URL while set) and
``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``, and set ``NO_PROXY=127.0.0.1,localhost``.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import rasterio
from rasterio.warp import transform as warp_transform
from shapely.geometry import box, shape

from tests.fakes.base import FakeHandler, FakeServer

#: Default folder of the real scenes: ``<root>/shared/data/real/slovenia-s2``.
SLOVENIA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "slovenia-s2"
#: Folder holding ``S2_L1C_<date>.tif``.
SCENES_DIR = SLOVENIA_DIR / "scenes"

#: Band ids in the order of the scene files' bands.
BAND_IDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
#: STAC ``eo:bands`` common name of each band id (also Earth Search's asset keys).
COMMON_NAMES: dict[str, str] = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B10": "cirrus",
    "B11": "swir16",
    "B12": "swir22",
}
#: Centre wavelength (µm) of each band, Sentinel-2A.
_WAVELENGTHS: dict[str, float] = {
    "B01": 0.443,
    "B02": 0.49,
    "B03": 0.56,
    "B04": 0.665,
    "B05": 0.704,
    "B06": 0.74,
    "B07": 0.783,
    "B08": 0.842,
    "B8A": 0.865,
    "B09": 0.945,
    "B10": 1.375,
    "B11": 1.61,
    "B12": 2.19,
}
#: ``eo:cloud_cover`` (%) of each scene: fixed, plausible; 2015-08-20 is cloudy.
CLOUD_COVER: dict[date, float] = {
    date(2015, 7, 11): 4.2,
    date(2015, 7, 31): 12.7,
    date(2015, 8, 20): 61.3,
    date(2015, 8, 30): 8.9,
    date(2015, 9, 9): 21.5,
}
#: Acquisition dates of the served scenes, oldest first.
SCENE_DATES: tuple[date, ...] = tuple(sorted(CLOUD_COVER))
#: Baseline-04.00 shift of the digital numbers and its reflectance offset.
BASELINE_DN_SHIFT = 1000
BASELINE_OFFSET = -0.1
DN_SCALE = 1e-4

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_VERSION = "1.0.0"
CONFORMS_TO: tuple[str, ...] = (
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
)
_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
_GEOJSON = "application/geo+json"

#: Next-link style: Earth Search (``body-token``) or Planetary Computer (``full-body``).
Paging = Literal["body-token", "full-body"]
#: Asset keys: common names (Earth Search) or band ids (Planetary Computer).
AssetStyle = Literal["earth-search", "planetary-computer"]
#: What ``raster:bands`` offset declares when the flag says the offset was applied.
OffsetDeclaration = Literal["effective", "baseline"]
_MAX_LIMIT = 10_000


@dataclass(frozen=True)
class StacFakeConfig:
    """How the fake behaves.

    Attributes:
        page_size: Most items per page, whatever the request's ``limit``.
        paging: ``body-token`` (Earth Search) or ``full-body`` (Planetary Computer) next links.
        assets: Asset keys: ``earth-search`` common names or ``planetary-computer`` band ids.
        baseline: ``s2:processing_baseline``; ``"04.00"`` or later shifts DNs by +1000.
        boa_offset_applied: ``earthsearch:boa_offset_applied``; True serves the original
            (harmonised) DNs; None leaves the property out.
        collection: Collection id of the scenes.
        offset_declaration: ``effective``: ``raster:bands`` offset is what to add
            (0 when the offset was applied); ``baseline``: −0.1 on every ≥ 04.00 item, as
            Earth Search declares whatever the flag says.
    """

    page_size: int = 2
    paging: Paging = "body-token"
    assets: AssetStyle = "earth-search"
    baseline: str = "02.01"
    boa_offset_applied: bool | None = False
    collection: str = "sentinel-2-l1c"
    offset_declaration: OffsetDeclaration = "effective"

    @property
    def shifted(self) -> bool:
        """Whether the baseline is 04.00 or later (the +1000 DN convention)."""
        return float(self.baseline) >= 4.0

    @property
    def serves_shifted_dns(self) -> bool:
        """Whether the served DNs carry the +1000 shift."""
        return self.shifted and not self.boa_offset_applied

    @property
    def declared_offset(self) -> float:
        """The ``raster:bands`` offset of every asset."""
        if not self.shifted:
            return 0.0
        if self.offset_declaration == "baseline" or not self.boa_offset_applied:
            return BASELINE_OFFSET
        return 0.0


def scene_path(day: date, scenes_dir: Path | None = None) -> Path:
    """Path of the real scene of ``day``.

    Args:
        day: One of :data:`SCENE_DATES`.
        scenes_dir: Folder of ``S2_L1C_<date>.tif`` (default :data:`SCENES_DIR`).

    Returns:
        The GeoTIFF path (not checked for existence).
    """
    return (scenes_dir or SCENES_DIR) / f"S2_L1C_{day.isoformat()}.tif"


def item_id(day: date) -> str:
    """Stable item id of the scene of ``day``, Earth Search style."""
    return f"S2A_33TVM_{day:%Y%m%d}_0_L1C"


def asset_key(band: str, assets: AssetStyle) -> str:
    """Asset key of band id ``band`` (``B04``) in the given naming style."""
    return COMMON_NAMES[band] if assets == "earth-search" else band


def served_dns(original: np.ndarray[Any, Any], config: StacFakeConfig) -> np.ndarray[Any, Any]:
    """Digital numbers the fake serves for ``original`` (uint16) under ``config``.

    Args:
        original: The 2015 digital numbers (nodata 0).
        config: The fake's configuration.

    Returns:
        uint16 array: original + 1000 where not nodata (clipped) for unharmonised ≥ 04.00
        variants, else the original.
    """
    if not config.serves_shifted_dns:
        return original.astype(np.uint16)
    shifted = np.clip(original.astype(np.int64) + BASELINE_DN_SHIFT, 0, 65535)
    return np.where(original == 0, 0, shifted).astype(np.uint16)


@dataclass(frozen=True)
class _Scene:
    day: date
    item_id: str
    datetime: str
    transform: list[float]
    shape: list[int]
    bbox: list[float]
    geometry: dict[str, Any]


def _write_cogs(
    src_path: Path, day: date, workdir: Path, config: StacFakeConfig
) -> tuple[_Scene, dict[str, bytes]]:
    """Write one single-band COG per band of a scene; return its metadata and the COG bytes."""
    files: dict[str, bytes] = {}
    ident = item_id(day)
    folder = workdir / ident
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src_path) as src:
        descriptions = list(src.descriptions)
        if descriptions != list(BAND_IDS):
            raise ValueError(f"{src_path}: band descriptions {descriptions}, want {BAND_IDS}")
        stamp = src.tags().get("DATETIME")
        if not stamp:
            raise ValueError(f"{src_path}: no DATETIME tag")
        profile = {
            "driver": "COG",
            "width": src.width,
            "height": src.height,
            "count": 1,
            "dtype": "uint16",
            "crs": src.crs,
            "transform": src.transform,
            "nodata": 0,
            "compress": "deflate",
            "blocksize": 256,
        }
        for index, band in enumerate(BAND_IDS, start=1):
            data = served_dns(src.read(index), config)
            path = folder / f"{band}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data, 1)
                dst.set_band_description(1, band)
                dst.update_tags(DATETIME=stamp)
            files[f"/cogs/{ident}/{band}.tif"] = path.read_bytes()
        t = src.transform
        left, bottom, right, top = src.bounds
        xs = [left, right, right, left, left]
        ys = [top, top, bottom, bottom, top]
        lons, lats = warp_transform(src.crs, "EPSG:4326", xs, ys)
        ring = [[round(x, 9), round(y, 9)] for x, y in zip(lons, lats, strict=True)]
        scene = _Scene(
            day=day,
            item_id=ident,
            datetime=datetime.fromisoformat(stamp).replace(tzinfo=None).isoformat() + "Z",
            transform=[t.a, t.b, t.c, t.d, t.e, t.f],
            shape=[src.height, src.width],
            bbox=[min(lons), min(lats), max(lons), max(lats)],
            geometry={"type": "Polygon", "coordinates": [ring]},
        )
    return scene, files


def _item(scene: _Scene, base: str, config: StacFakeConfig) -> dict[str, Any]:
    """STAC 1.0.0 Item of a scene with hrefs under ``base``."""
    properties: dict[str, Any] = {
        "datetime": scene.datetime,
        "platform": "sentinel-2a",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": CLOUD_COVER[scene.day],
        "proj:epsg": 32633,
        "proj:code": "EPSG:32633",
        "mgrs:utm_zone": 33,
        "mgrs:latitude_band": "T",
        "mgrs:grid_square": "VM",
        "grid:code": "MGRS-33TVM",
        "s2:processing_baseline": config.baseline,
        "s2:product_type": "S2MSI1C",
    }
    if config.boa_offset_applied is not None:
        properties["earthsearch:boa_offset_applied"] = bool(config.boa_offset_applied)
    assets: dict[str, Any] = {}
    for band in BAND_IDS:
        assets[asset_key(band, config.assets)] = {
            "href": f"{base}/cogs/{scene.item_id}/{band}.tif",
            "type": COG_TYPE,
            "title": f"{band} ({COMMON_NAMES[band]})",
            "roles": ["data"],
            "proj:shape": list(scene.shape),
            "proj:transform": list(scene.transform),
            "raster:bands": [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": 10,
                    "scale": DN_SCALE,
                    "offset": config.declared_offset,
                }
            ],
            "eo:bands": [
                {
                    "name": band,
                    "common_name": COMMON_NAMES[band],
                    "center_wavelength": _WAVELENGTHS[band],
                }
            ],
        }
    coll = config.collection
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(_EXTENSIONS),
        "id": scene.item_id,
        "collection": coll,
        "geometry": copy.deepcopy(scene.geometry),
        "bbox": list(scene.bbox),
        "properties": properties,
        "links": [
            {
                "rel": "self",
                "type": _GEOJSON,
                "href": f"{base}/collections/{coll}/items/{scene.item_id}",
            },
            {"rel": "collection", "type": "application/json", "href": f"{base}/collections/{coll}"},
            {"rel": "parent", "type": "application/json", "href": f"{base}/collections/{coll}"},
            {"rel": "root", "type": "application/json", "href": f"{base}/"},
        ],
        "assets": assets,
    }


def _collection(items: Sequence[Mapping[str, Any]], base: str, config: StacFakeConfig) -> Any:
    """STAC 1.0.0 Collection of the items."""
    coll = config.collection
    bboxes = [item["bbox"] for item in items]
    spatial = [
        min(b[0] for b in bboxes),
        min(b[1] for b in bboxes),
        max(b[2] for b in bboxes),
        max(b[3] for b in bboxes),
    ]
    times = [item["properties"]["datetime"] for item in items]
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": coll,
        "title": "Sentinel-2 Level-1C (fake)",
        "description": "Real 2015 Sentinel-2 L1C scenes over Slovenia served by a loopback fake.",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [spatial]},
            "temporal": {"interval": [[min(times), max(times)]]},
        },
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{base}/collections/{coll}"},
            {"rel": "root", "type": "application/json", "href": f"{base}/"},
            {"rel": "parent", "type": "application/json", "href": f"{base}/"},
            {"rel": "items", "type": _GEOJSON, "href": f"{base}/collections/{coll}/items"},
        ],
    }


def _landing(base: str) -> dict[str, Any]:
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": "agrimon-fake-stac",
        "title": "agrimon fake STAC API",
        "description": "Loopback STAC API over real Sentinel-2 scenes, for tests.",
        "conformsTo": list(CONFORMS_TO),
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{base}/"},
            {"rel": "root", "type": "application/json", "href": f"{base}/"},
            {"rel": "data", "type": "application/json", "href": f"{base}/collections"},
            {"rel": "conformance", "type": "application/json", "href": f"{base}/conformance"},
            {"rel": "search", "type": _GEOJSON, "method": "GET", "href": f"{base}/search"},
            {"rel": "search", "type": _GEOJSON, "method": "POST", "href": f"{base}/search"},
        ],
    }


class BadRequestError(ValueError):
    """A search request the fake (like a real API) answers with 400."""


def _parse_instant(text: str, *, end: bool) -> datetime | None:
    text = text.strip()
    if text in ("", ".."):
        return None
    if len(text) == 10:  # a bare date
        text += "T23:59:59.999999Z" if end else "T00:00:00Z"
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as err:
        raise BadRequestError(f"invalid datetime {text!r}") from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _datetime_filter(value: str) -> tuple[datetime | None, datetime | None]:
    if "/" in value:
        start, _, stop = value.partition("/")
        return _parse_instant(start, end=False), _parse_instant(stop, end=True)
    return _parse_instant(value, end=False), _parse_instant(value, end=True)


_OPS = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "in": lambda a, b: a in b,
}


def _matches_query(properties: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    for name, condition in query.items():
        if not isinstance(condition, Mapping):
            raise BadRequestError(f"query for {name!r} must be an object of operators")
        if name not in properties:
            return False
        for op, operand in condition.items():
            if op not in _OPS:
                raise BadRequestError(f"unsupported query operator {op!r}")
            if not _OPS[op](properties[name], operand):
                return False
    return True


def search_items(items: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> list[Any]:
    """Items matching a search, sorted by datetime.

    Honours ``collections``, ``ids``, ``bbox``, ``intersects``, ``datetime`` (``a/b``, open
    ends ``..``) and ``query`` (``eq``, ``neq``, ``lt``, ``lte``, ``gt``, ``gte``, ``in``).

    Args:
        items: All items of the fake.
        params: The search parameters, JSON-decoded (as in a POST body).

    Returns:
        Matching items, oldest first.

    Raises:
        BadRequestError: A parameter is malformed.
    """
    found = list(items)
    collections = params.get("collections")
    if collections:
        found = [i for i in found if i["collection"] in collections]
    ids = params.get("ids")
    if ids:
        found = [i for i in found if i["id"] in ids]
    bbox = params.get("bbox")
    if bbox:
        if len(bbox) not in (4, 6):
            raise BadRequestError(f"bbox must have 4 or 6 numbers, got {bbox}")
        coords = [float(v) for v in bbox]
        area = box(*coords[:2], *coords[-3:-1]) if len(coords) == 6 else box(*coords)
        found = [i for i in found if area.intersects(shape(i["geometry"]))]
    intersects = params.get("intersects")
    if intersects:
        geom = shape(intersects)
        found = [i for i in found if geom.intersects(shape(i["geometry"]))]
    when = params.get("datetime")
    if when:
        start, stop = _datetime_filter(str(when))
        kept = []
        for item in found:
            moment = _parse_instant(item["properties"]["datetime"], end=False)
            assert moment is not None
            if (start is None or moment >= start) and (stop is None or moment <= stop):
                kept.append(item)
        found = kept
    query = params.get("query")
    if query:
        if not isinstance(query, Mapping):
            raise BadRequestError("query must be an object")
        found = [i for i in found if _matches_query(i["properties"], query)]
    return sorted(found, key=lambda i: (i["properties"]["datetime"], i["id"]))


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError) as err:
        raise BadRequestError(f"invalid paging token {token!r}") from err


def _get_params(query_string: str) -> dict[str, Any]:
    """Search parameters of a GET request, decoded to their POST-body form."""
    raw = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=False).items()}
    params: dict[str, Any] = {}
    try:
        for key, value in raw.items():
            if key in ("collections", "ids"):
                params[key] = [v for v in value.split(",") if v]
            elif key == "bbox":
                params[key] = [float(v) for v in value.split(",")]
            elif key == "limit":
                params[key] = int(value)
            elif key in ("query", "intersects"):
                params[key] = json.loads(value)
            else:
                params[key] = value
    except ValueError as err:
        raise BadRequestError(f"invalid search parameter: {err}") from err
    return params


class StacHandler(FakeHandler):
    """Routes of the STAC API and of the COG files."""

    @property
    def config(self) -> StacFakeConfig:
        """The server's configuration."""
        config: StacFakeConfig = self.server.state["config"]
        return config

    @property
    def items(self) -> list[dict[str, Any]]:
        """All items, oldest first."""
        items: list[dict[str, Any]] = self.server.state["items"]
        return items

    def _not_found(self, what: str) -> None:
        self.send_json({"code": "NotFound", "description": f"{what} not found"}, status=404)

    def _json(self, payload: Any, content_type: str = "application/json") -> None:
        data = json.dumps(payload).encode()
        if not self.apply_fault(data):
            self.send_bytes(data, content_type=content_type)

    def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
        """HEAD: as GET without the body (GDAL's /vsicurl/ asks for the size first)."""
        self._route_get()

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        """GET routes."""
        self._route_get()

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        """POST /search."""
        self.server.record("POST", self.path)
        parts = urlsplit(self.path)
        if parts.path.rstrip("/") != "/search":
            self.body_bytes()
            self._not_found(parts.path)
            return
        try:
            body = self.body_json() or {}
        except ValueError:
            self.send_json({"code": "BadRequest", "description": "body is not JSON"}, status=400)
            return
        if not isinstance(body, dict):
            self.send_json({"code": "BadRequest", "description": "body must be an object"}, 400)
            return
        self._search(body, method="POST", href=f"{self.server.url}/search")

    def _route_get(self) -> None:
        self.server.record(self.command, self.path)
        parts = urlsplit(self.path)
        path = parts.path
        base = self.server.url
        segments = [s for s in path.split("/") if s]
        if path.startswith("/cogs/"):
            data = self.server.state["files"].get(path)
            if data is None:
                self._not_found(path)
                return
            payload = self._range_payload(data)
            if not self.apply_fault(payload):
                self.send_file_bytes(data)
            return
        if not segments:
            self._json(_landing(base))
        elif segments == ["conformance"]:
            self._json({"conformsTo": list(CONFORMS_TO)})
        elif segments == ["search"]:
            try:
                params = _get_params(parts.query)
            except BadRequestError as err:
                self.send_json({"code": "BadRequest", "description": str(err)}, status=400)
                return
            self._search(params, method="GET", href=f"{base}/search")
        elif segments == ["collections"]:
            self._json(
                {
                    "collections": [_collection(self.items, base, self.config)],
                    "links": [
                        {"rel": "self", "type": "application/json", "href": f"{base}/collections"},
                        {"rel": "root", "type": "application/json", "href": f"{base}/"},
                    ],
                }
            )
        elif len(segments) >= 2 and segments[0] == "collections":
            if segments[1] != self.config.collection:
                self._not_found(f"collection {segments[1]}")
            elif len(segments) == 2:
                self._json(_collection(self.items, base, self.config))
            elif len(segments) == 3 and segments[2] == "items":
                try:
                    params = _get_params(parts.query)
                except BadRequestError as err:
                    self.send_json({"code": "BadRequest", "description": str(err)}, status=400)
                    return
                params["collections"] = [self.config.collection]
                self._search(params, method="GET", href=f"{base}{path}")
            elif len(segments) == 4 and segments[2] == "items":
                found = [i for i in self.items if i["id"] == segments[3]]
                if found:
                    self._json(found[0], content_type=_GEOJSON)
                else:
                    self._not_found(f"item {segments[3]}")
            else:
                self._not_found(path)
        else:
            self._not_found(path)

    def _range_payload(self, data: bytes) -> bytes:
        """The bytes a GET (with or without Range) would send: faults act on those."""
        header = self.headers.get("Range", "").strip()
        if header.startswith("bytes="):
            start_text, _, end_text = header[6:].partition("-")
            if start_text.isdigit():
                start = int(start_text)
                end = int(end_text) if end_text.isdigit() else len(data) - 1
                return data[start : end + 1]
        return data

    def _search(self, params: dict[str, Any], *, method: str, href: str) -> None:
        config = self.config
        token = params.pop("next", None) or params.pop("token", None)
        try:
            offset = _decode_token(str(token)) if token else 0
            limit = int(params.get("limit") or config.page_size)
            if not 1 <= limit <= _MAX_LIMIT:
                raise BadRequestError(f"limit must be 1..{_MAX_LIMIT}, got {limit}")
            found = search_items(self.items, params)
        except (BadRequestError, TypeError, ValueError) as err:
            self.send_json({"code": "BadRequest", "description": str(err)}, status=400)
            return
        size = min(limit, config.page_size)
        page = found[offset : offset + size]
        links: list[dict[str, Any]] = [
            {"rel": "root", "type": "application/json", "href": f"{self.server.url}/"},
        ]
        if offset + size < len(found):
            links.append(self._next_link(params, _encode_token(offset + size), method, href))
        payload = {
            "type": "FeatureCollection",
            "features": page,
            "links": links,
            "numberMatched": len(found),
            "numberReturned": len(page),
            "context": {"limit": limit, "matched": len(found), "returned": len(page)},
        }
        self._json(payload, content_type=_GEOJSON)

    def _next_link(
        self, params: Mapping[str, Any], token: str, method: str, href: str
    ) -> dict[str, Any]:
        style = self.config.paging
        key = "next" if style == "body-token" else "token"
        link: dict[str, Any] = {"rel": "next", "type": _GEOJSON}
        if method == "GET":
            query = {k: _query_value(v) for k, v in params.items()}
            query[key] = token
            link.update(href=f"{href}?{urlencode(query)}", method="GET")
        elif style == "body-token":
            link.update(href=href, method="POST", body={"next": token}, merge=True)
        else:
            link.update(href=href, method="POST", body={**params, "token": token}, merge=False)
        return link


def _query_value(value: Any) -> str:
    """A search parameter in its GET form."""
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def start_stac_fake(
    workdir: Path,
    config: StacFakeConfig | None = None,
    scenes_dir: Path | None = None,
) -> FakeServer:
    """Write the COGs under ``workdir`` and start the fake; the caller stops it.

    Args:
        workdir: Empty folder for the COGs (one sub-folder per item).
        config: Behaviour of the fake (default :class:`StacFakeConfig`).
        scenes_dir: Folder of ``S2_L1C_<date>.tif`` (default :data:`SCENES_DIR`).

    Returns:
        The running server; ``server.url`` is the API root, ``server.state["items"]`` its
        items (dicts), ``server.state["files"]`` the served COG bytes by URL path.

    Raises:
        FileNotFoundError: A scene file is missing.
    """
    config = config or StacFakeConfig()
    if config.page_size < 1:
        raise ValueError(f"page_size must be ≥ 1, got {config.page_size}")
    files: dict[str, bytes] = {}
    scenes: list[_Scene] = []
    for day in SCENE_DATES:
        path = scene_path(day, scenes_dir)
        if not path.exists():
            raise FileNotFoundError(f"scene {path} is missing")
        scene, cogs = _write_cogs(path, day, Path(workdir), config)
        scenes.append(scene)
        files.update(cogs)
    server = FakeServer(StacHandler, config=config, files=files)
    server.state["items"] = [_item(scene, server.url, config) for scene in scenes]
    return server.start()


@contextmanager
def stac_fake(
    workdir: Path,
    config: StacFakeConfig | None = None,
    scenes_dir: Path | None = None,
) -> Iterator[FakeServer]:
    """Run the fake STAC API for the duration of a ``with`` block (see :func:`start_stac_fake`)."""
    server = start_stac_fake(workdir, config, scenes_dir)
    try:
        yield server
    finally:
        server.stop()
