"""A fake Sentinel Hub on 127.0.0.1: OAuth2 token endpoint, Catalog API and Process API.

It serves the five real Sentinel-2 L1C scenes of ``shared/data/real/slovenia-s2/scenes``
(uint16 DN, nodata 0, 13 bands, EPSG:32633, 100 × 101 px at their odd native pixel size of
about 9.9948 × 9.9974 m, kept as is). What it checks and answers:

* ``POST /auth/realms/CDSE/protocol/openid-connect/token``: form-encoded client-credentials
  grant; checks ``client_id``/``client_secret``; answers a JWT-shaped ``access_token``
  (three base64url parts, the middle one JSON with ``exp``), ``token_type: Bearer`` and
  ``expires_in``; 401 ``invalid_client`` otherwise.
* ``POST /api/v1/catalog/1.0.0/search``: Bearer token; ``collections``, ``datetime`` (a/b),
  ``bbox`` (WGS84) and a CQL2-text ``filter`` on ``eo:cloud_cover``; pages of ``page_size``
  features (default 2) linked by ``context.next`` (an offset), absent on the last page.
  ``eo:cloud_cover`` of a scene is the mean s2cloudless probability of the patch × 100.
* ``POST /api/v1/process``: Bearer token; bounds ``bbox`` + ``properties.crs`` (OGC EPSG URL),
  ``input.data[0]`` of type ``sentinel-2-l1c`` with ``timeRange``, ``maxCloudCoverage`` and
  ``mosaickingOrder``; ``output.width``/``height`` of 1…2500 px (400 beyond, as the service);
  ``output.responses``. The evalscript is not executed: the input band names are read from
  its ``bands: [...]`` list and the sample types from its ``output`` declarations. A response
  whose identifier names an input band (``dataMask``, ``SCL``, case-insensitive) carries that
  band; any other carries the remaining spectral bands in input order. Pixels are the
  matching scenes (mosaicked in the requested order) reprojected from their full native
  arrays with nearest-neighbour resampling onto the requested grid; ``dataMask`` is 1 where a
  scene has data. One response is a bare GeoTIFF, several a tar of ``<identifier>.tif``.
  SCL does not exist in L1C: asking for it is a 400, as on the real service.

Every route counts its requests and honours the faults armed with ``server.inject``.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import rasterio
from affine import Affine
from numpy.typing import NDArray
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject, transform_bounds

from tests.fakes.base import FakeHandler, FakeServer, serving

#: The real data beside the project (``shared/data/real``).
REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
SLOVENIA = REAL_DATA / "slovenia-s2"
SCENES_DIR = SLOVENIA / "scenes"

TOKEN_PATH = "/auth/realms/CDSE/protocol/openid-connect/token"
CATALOG_PATH = "/api/v1/catalog/1.0.0/search"
PROCESS_PATH = "/api/v1/process"
COLLECTION = "sentinel-2-l1c"
MAX_PX = 2500
CLIENT_ID = "agrimon-fake-client"
CLIENT_SECRET = "fake-secret-Zq8rT3vX0wYp"

_SAMPLE_TYPES = {"UINT8": np.uint8, "UINT16": np.uint16, "FLOAT32": np.float32}
_INPUT_BANDS = re.compile(r"bands\s*:\s*\[([^\]]*)\]")
_OUTPUT_DECL = re.compile(r"\{\s*id\s*:\s*\"([^\"]+)\"[^}]*?sampleType\s*:\s*\"(\w+)\"")
_CLOUD_TERM = re.compile(r"eo:cloud_cover\s*(<=|>=|<|>|=)\s*([0-9.]+)")


class FakeApiError(Exception):
    """A request the fake refuses, answered with ``status`` and Sentinel Hub's error JSON."""

    def __init__(self, status: int, message: str, code: str = "COMMON_BAD_PAYLOAD"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass(frozen=True)
class FakeScene:
    """One real L1C scene as the fake serves it."""

    id: str
    time: datetime
    cloud_cover: float
    data: NDArray[np.uint16]
    transform: Affine
    crs: str
    bands: tuple[str, ...]
    bbox_lonlat: tuple[float, float, float, float]

    @property
    def valid(self) -> NDArray[np.uint8]:
        """1 where the scene has data (any band non-zero)."""
        return np.asarray((self.data != 0).any(axis=0), dtype=np.uint8)


def data_available() -> bool:
    """Whether the real scenes are laid beside the project."""
    return SCENES_DIR.is_dir() and any(SCENES_DIR.glob("S2_L1C_*.tif"))


@lru_cache(maxsize=1)
def load_scenes() -> tuple[FakeScene, ...]:
    """The real scenes, their acquisition times and a cloud cover from s2cloudless."""
    paths = sorted(SCENES_DIR.glob("S2_L1C_*.tif"))
    clouds: dict[str, float] = {}
    prob = SLOVENIA / "cloud_probability_timeseries.tif"
    if prob.exists():
        with rasterio.open(prob) as ds:
            for i, desc in enumerate(ds.descriptions, start=1):
                if desc:
                    clouds[desc] = round(100.0 * float(np.nanmean(ds.read(i))), 1)
    scenes = []
    for path in paths:
        with rasterio.open(path) as ds:
            stamp = ds.tags()["DATETIME"]
            when = datetime.fromisoformat(stamp)
            bbox = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
            scenes.append(
                FakeScene(
                    id=f"S2A_MSIL1C_{when:%Y%m%dT%H%M%S}_N0204_R122_T33TVL_{when:%Y%m%dT%H%M%S}",
                    time=when,
                    cloud_cover=clouds.get(stamp, 0.0),
                    data=ds.read(),
                    transform=ds.transform,
                    crs=str(ds.crs),
                    bands=tuple(str(d) for d in ds.descriptions),
                    bbox_lonlat=(bbox[0], bbox[1], bbox[2], bbox[3]),
                )
            )
    return tuple(scenes)


# --- pure helpers ---------------------------------------------------------------------


def make_token(client_id: str, expires_in: int) -> str:
    """A JWT-shaped token: base64url header, JSON claims with ``exp``, random signature.

    The claims are padded so that their base64 needs no ``=`` and has no ``-``/``_``: the
    client decodes that part with plain ``b64decode``.
    """
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    while True:
        claims = {
            "sub": client_id,
            "azp": client_id,
            "exp": int(time.time()) + expires_in,
            "iat": int(time.time()),
            "jti": secrets.token_hex(8),
        }
        raw = json.dumps(claims).encode()
        raw += b" " * (-len(raw) % 3)
        middle = base64.urlsafe_b64encode(raw).decode()
        if "-" not in middle and "_" not in middle:
            break
    signature = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
    return f"{header}.{middle}.{signature}"


def parse_time(text: str) -> datetime:
    """Naive UTC datetime of an RFC 3339 string."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def cloud_filter(text: str | None) -> list[tuple[str, float]]:
    """``eo:cloud_cover`` comparisons of a CQL2-text filter (terms joined by AND)."""
    if not text:
        return []
    terms = [t.strip() for t in re.split(r"\s+AND\s+", text, flags=re.IGNORECASE) if t.strip()]
    out = []
    for term in terms:
        match = _CLOUD_TERM.fullmatch(term)
        if match is None:
            raise FakeApiError(400, f"fake catalog understands only eo:cloud_cover terms: {term}")
        out.append((match.group(1), float(match.group(2))))
    return out


def _compare(value: float, op: str, limit: float) -> bool:
    return {
        "<=": value <= limit,
        "<": value < limit,
        ">=": value >= limit,
        ">": value > limit,
        "=": value == limit,
    }[op]


def evalscript_bands(script: str) -> list[str]:
    """Input band names of an evalscript's ``setup()`` (the first ``bands: [...]`` list)."""
    match = _INPUT_BANDS.search(script)
    if match is None:
        raise FakeApiError(400, "evalscript declares no input bands")
    return re.findall(r"[\"']([A-Za-z0-9]+)[\"']", match.group(1))


def evalscript_sample_types(script: str) -> dict[str, str]:
    """``sampleType`` of each output id declared in an evalscript."""
    return {m.group(1): m.group(2).upper() for m in _OUTPUT_DECL.finditer(script)}


def response_bands(identifier: str, inputs: list[str]) -> list[str]:
    """Input bands a response carries: the band it names, else every spectral band."""
    named = [b for b in inputs if b.lower() == identifier.lower()]
    if named:
        return named
    return [b for b in inputs if b not in ("SCL", "dataMask")]


def geotiff(values: NDArray[Any], transform: Affine, crs: str) -> bytes:
    """A deflate-compressed GeoTIFF of a ``(count, height, width)`` array."""
    count, height, width = values.shape
    with rasterio.MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype=values.dtype,
            crs=crs,
            transform=transform,
            compress="deflate",
        ) as ds:
            ds.write(values)
        return bytes(mem.read())


def tar_of(files: dict[str, bytes]) -> bytes:
    """A tar archive of named byte strings."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- the handler ----------------------------------------------------------------------


class SentinelHubHandler(FakeHandler):
    """Routes of the fake Sentinel Hub (state: credentials, page size, issued tokens)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        """No GET route is served."""
        self.server.record("GET", self.path)
        self._error(404, "not found", "RESOURCE_NOT_FOUND")

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        """Token, Catalog and Process routes."""
        path = self.path.split("?", 1)[0]
        raw = self.body_bytes()
        self.server.record("POST", path)
        routes = {
            TOKEN_PATH: self._token,
            CATALOG_PATH: self._catalog,
            PROCESS_PATH: self._process,
        }
        route = routes.get(path)
        if route is None:
            self._error(404, f"no route {path}", "RESOURCE_NOT_FOUND")
            return
        try:
            status, content_type, payload = route(raw)
        except FakeApiError as err:
            if not self.apply_fault(None):
                self._error(err.status, err.message, err.code)
            return
        if self.apply_fault(payload):
            return
        self.send_bytes(payload, status=status, content_type=content_type)

    # routes --------------------------------------------------------------------------

    def _token(self, raw: bytes) -> tuple[int, str, bytes]:
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        state = self.server.state
        if form.get("grant_type") != "client_credentials":
            return 400, "application/json", json.dumps({"error": "unsupported_grant_type"}).encode()
        if form.get("client_id") != state["client_id"] or not secrets.compare_digest(
            form.get("client_secret", ""), state["client_secret"]
        ):
            body = {
                "error": "invalid_client",
                "error_description": "Invalid client or Invalid client credentials",
            }
            return 401, "application/json", json.dumps(body).encode()
        token = make_token(state["client_id"], state["expires_in"])
        state["tokens"].add(token)
        reply = {"access_token": token, "token_type": "Bearer", "expires_in": state["expires_in"]}
        return 200, "application/json", json.dumps(reply).encode()

    def _authorize(self) -> None:
        header = self.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if not header.startswith("Bearer ") or token not in self.server.state["tokens"]:
            raise FakeApiError(401, "missing or invalid bearer token", "COMMON_UNAUTHORIZED")

    def _catalog(self, raw: bytes) -> tuple[int, str, bytes]:
        self._authorize()
        body = json.loads(raw or b"{}")
        terms = cloud_filter(body.get("filter"))
        start, end = (parse_time(t) for t in str(body.get("datetime", "..")).split("/"))
        west, south, east, north = body.get("bbox", (-180, -90, 180, 90))
        hits = []
        for scene in load_scenes() if COLLECTION in body.get("collections", []) else ():
            w, s, e, n = scene.bbox_lonlat
            if not (start <= scene.time <= end) or e < west or w > east or n < south or s > north:
                continue
            if all(_compare(scene.cloud_cover, op, lim) for op, lim in terms):
                hits.append(scene)
        offset = int(body.get("next") or 0)
        size = min(int(body.get("limit", 10)), int(self.server.state["page_size"]))
        page = hits[offset : offset + size]
        context: dict[str, Any] = {"limit": size, "returned": len(page)}
        if offset + size < len(hits):
            context["next"] = offset + size
        features = [
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": s.id,
                "collection": COLLECTION,
                "bbox": list(s.bbox_lonlat),
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [s.bbox_lonlat[0], s.bbox_lonlat[1]],
                            [s.bbox_lonlat[2], s.bbox_lonlat[1]],
                            [s.bbox_lonlat[2], s.bbox_lonlat[3]],
                            [s.bbox_lonlat[0], s.bbox_lonlat[3]],
                            [s.bbox_lonlat[0], s.bbox_lonlat[1]],
                        ]
                    ],
                },
                "properties": {
                    "datetime": s.time.isoformat() + "Z",
                    "eo:cloud_cover": s.cloud_cover,
                    "platform": "sentinel-2a",
                    "instruments": ["msi"],
                },
                "links": [],
                "assets": {},
            }
            for s in page
        ]
        reply = {"type": "FeatureCollection", "features": features, "links": [], "context": context}
        return 200, "application/geo+json", json.dumps(reply).encode()

    def _process(self, raw: bytes) -> tuple[int, str, bytes]:
        self._authorize()
        body = json.loads(raw or b"{}")
        bounds = body.get("input", {}).get("bounds", {})
        bbox, crs_url = bounds.get("bbox"), bounds.get("properties", {}).get("crs", "")
        epsg = re.fullmatch(r"http://www\.opengis\.net/def/crs/EPSG/0/(\d+)", crs_url)
        if not bbox or len(bbox) != 4 or epsg is None:
            raise FakeApiError(400, "input.bounds needs bbox and properties.crs (EPSG URL)")
        data = body["input"].get("data") or [{}]
        if data[0].get("type") != COLLECTION:
            raise FakeApiError(400, f"fake serves {COLLECTION} only, not {data[0].get('type')}")
        output = body.get("output", {})
        width, height = output.get("width"), output.get("height")
        if not isinstance(width, int) or not isinstance(height, int):
            raise FakeApiError(400, "output.width and output.height are required")
        if not (1 <= width <= MAX_PX and 1 <= height <= MAX_PX):
            raise FakeApiError(
                400,
                f"Requested image width or height ({width}x{height}) exceeds the maximum "
                f"of {MAX_PX} pixels",
            )
        responses = [r["identifier"] for r in output.get("responses", [])]
        if not responses:
            raise FakeApiError(400, "output.responses is empty")
        formats = {r.get("format", {}).get("type") for r in output["responses"]}
        if formats != {"image/tiff"}:
            raise FakeApiError(400, f"fake answers image/tiff only, not {sorted(formats)}")
        accept = self.headers.get("Accept", "")
        wanted = "application/x-tar" if len(responses) > 1 else "image/tiff"
        if wanted not in accept:
            raise FakeApiError(400, f"{len(responses)} response(s) need accept: {wanted}")

        script = str(body.get("evalscript", ""))
        inputs = evalscript_bands(script)
        known = set(load_scenes()[0].bands) | {"dataMask"}
        unknown = [b for b in inputs if b not in known]
        if "SCL" in inputs:
            raise FakeApiError(400, f"band SCL does not exist in collection {COLLECTION}")
        if unknown:
            raise FakeApiError(400, f"unknown band(s) {unknown} in {COLLECTION}")
        types = evalscript_sample_types(script)

        scenes = self._pick_scenes(data[0].get("dataFilter", {}))
        dst_transform = from_bounds(*bbox, width, height)
        dst_crs = f"EPSG:{epsg.group(1)}"
        files: dict[str, bytes] = {}
        for ident in responses:
            names = response_bands(ident, inputs)
            dtype = _SAMPLE_TYPES.get(types.get(ident, "UINT16"))
            if dtype is None:
                raise FakeApiError(400, f"unsupported sampleType {types[ident]}")
            layers = [
                self._render(scenes, b, dst_transform, dst_crs, (height, width)) for b in names
            ]
            files[ident] = geotiff(np.stack(layers).astype(dtype), dst_transform, dst_crs)
        if len(responses) == 1:
            return 200, "image/tiff", files[responses[0]]
        return 200, "application/x-tar", tar_of({f"{k}.tif": v for k, v in files.items()})

    # rendering -----------------------------------------------------------------------

    @staticmethod
    def _pick_scenes(data_filter: dict[str, Any]) -> list[FakeScene]:
        time_range = data_filter.get("timeRange", {})
        start = parse_time(time_range.get("from", "1900-01-01T00:00:00Z"))
        end = parse_time(time_range.get("to", "2100-01-01T00:00:00Z"))
        max_cc = float(data_filter.get("maxCloudCoverage", 100))
        picked = [s for s in load_scenes() if start <= s.time <= end and s.cloud_cover <= max_cc]
        order = data_filter.get("mosaickingOrder", "mostRecent")
        if order == "leastCC":
            picked.sort(key=lambda s: s.cloud_cover)
        else:
            picked.sort(key=lambda s: s.time, reverse=order == "mostRecent")
        return picked

    @staticmethod
    def _render(
        scenes: list[FakeScene],
        band: str,
        transform: Affine,
        crs: str,
        shape: tuple[int, int],
    ) -> NDArray[Any]:
        """Mosaic of ``band``: each pixel from the first scene with data there."""
        out = np.zeros(shape, np.uint16)
        filled = np.zeros(shape, np.uint8)
        for scene in scenes:
            source = scene.valid if band == "dataMask" else scene.data[scene.bands.index(band)]
            layer = np.zeros(shape, source.dtype)
            mask = np.zeros(shape, np.uint8)
            for src, dst in ((source, layer), (scene.valid, mask)):
                reproject(
                    source=src,
                    destination=dst,
                    src_transform=scene.transform,
                    src_crs=scene.crs,
                    dst_transform=transform,
                    dst_crs=crs,
                    src_nodata=0,
                    dst_nodata=0,
                    resampling=Resampling.nearest,
                )
            take = (mask == 1) & (filled == 0)
            out[take] = layer[take]
            filled[take] = 1
        return out

    def _error(self, status: int, message: str, code: str) -> None:
        reason = self.responses.get(status, ("Error",))[0]
        body = {"error": {"status": status, "reason": reason, "message": message, "code": code}}
        self.send_json(body, status=status)


@contextmanager
def fake_sentinelhub(
    *,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
    page_size: int = 2,
    expires_in: int = 3600,
) -> Iterator[FakeServer]:
    """Run the fake Sentinel Hub for a ``with`` block.

    Args:
        client_id: Accepted OAuth client id.
        client_secret: Accepted OAuth client secret.
        page_size: Largest number of features per Catalog page.
        expires_in: Token lifetime in seconds.
    """
    with serving(
        SentinelHubHandler,
        client_id=client_id,
        client_secret=client_secret,
        page_size=page_size,
        expires_in=expires_in,
        tokens=set(),
    ) as server:
        yield server


def token_url(server: FakeServer) -> str:
    """Token endpoint URL of a running fake."""
    return server.url + TOKEN_PATH


def cli_options(server: FakeServer, secret: str = CLIENT_SECRET) -> list[str]:
    """``agrimon run``'s options that point the ``sentinelhub`` source at a running fake."""
    return [
        *("--source", "sentinelhub", "--sh-base-url", server.url),
        *("--sh-token-url", token_url(server), "--sh-client-id", CLIENT_ID),
        *("--sh-client-secret", secret),
    ]
