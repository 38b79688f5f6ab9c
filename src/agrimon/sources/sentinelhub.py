"""Sentinel Hub source: Catalog API to find acquisitions, Process API to render their pixels.

Everything goes through sentinelhub-py's real client (``SHConfig``, ``SentinelHubCatalog``,
``SentinelHubRequest``, ``SentinelHubDownloadClient``). The default deployment is the free
Copernicus Data Space Ecosystem; ``sh_preset="sentinel-hub"`` selects the commercial service
and ``sh_base_url`` / ``sh_token_url`` point anywhere else (a loopback fake in the tests).

* **Scenes**: the Catalog API is searched for the tile's lon/lat bounds and the period, with
  ``eo:cloud_cover <= max_cloud``; features of the same solar day (neighbouring granules of one
  pass) are merged into one scene, because the Process API mosaics them anyway.
* **Pixels**: one Process request per tile and scene, on the tile's own UTM grid (``bounds`` =
  the geobox bbox, ``width``/``height`` = its shape), so pixels land exactly on agrimon's 10 m
  grid. The service refuses more than 2500 px a side: larger blocks are cut into sub-requests.
* **Cache and retries**: every Catalog page and every Process response goes through the
  response cache (a rerun makes no request; ``offline`` works from the cache alone).
  sentinelhub-py retries HTTP-level trouble (429 after ``Retry-After``, 5xx, connection errors,
  bodies shorter than their ``Content-Length``); agrimon retries payloads that arrive whole
  but do not decode (corrupt TIFF or tar). 401/403 stop at once.
* **Credentials** resolve settings > ``SH_CLIENT_ID``/``SH_CLIENT_SECRET`` > the sentinelhub
  config profile. The secret is never logged, shown or written: it stays a ``SecretStr`` until
  a request needs it, and a log filter redacts it from requests-oauthlib's debug output.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import rasterio.errors
import requests
import xarray as xr
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from pydantic import SecretStr

from agrimon.cache import request_key
from agrimon.errors import AgrimonError, ConfigError, SourceError
from agrimon.grid import Tile
from agrimon.retry import RetryableError, with_retries
from agrimon.sources.bands import BAND_IDS, dn_to_reflectance
from agrimon.sources.base import (
    ALL_BANDS,
    DEFAULT_CHUNK_PX,
    SCL,
    Scene,
    is_loopback,
    parse_utc,
    solar_day,
    url_host,
    url_problem,
)
from agrimon.sources.lazy import lazy_stack
from agrimon.sources.settings import Level, SourceSettings

if TYPE_CHECKING:
    from sentinelhub.config import SHConfig
    from sentinelhub.data_collections import DataCollection
    from sentinelhub.download.models import DownloadRequest
    from sentinelhub.download.session import SentinelHubSession

NAME = "sentinelhub"


@dataclass(frozen=True)
class Deployment:
    """A Sentinel Hub deployment: where the APIs and the OAuth2 token endpoint live."""

    base_url: str
    token_url: str
    note: str


PRESETS: dict[str, Deployment] = {
    "cdse": Deployment(
        "https://sh.dataspace.copernicus.eu",
        "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token",
        "Copernicus Data Space Ecosystem: free account",
    ),
    "sentinel-hub": Deployment(
        "https://services.sentinel-hub.com",
        "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token",
        "Sentinel Hub commercial service: paid account",
    ),
}

#: Largest width or height the Process API accepts (it answers 400 beyond).
MAX_PX = 2500
#: Process ``timeRange`` margin around a scene's acquisitions: granules of one pass lie
#: seconds apart, two passes over one place are days apart.
TIME_PAD = timedelta(minutes=10)
#: Catalog page size (the service's maximum).
CATALOG_LIMIT = 100
#: Response identifiers of the Process requests (``<id>.tif`` members of the tar).
RESP_BANDS, RESP_SCL, RESP_MASK = "bands", "scl", "dataMask"
# 429 answers are normal under parallel load: honour Retry-After this many times per allowed
# attempt before giving up, so a misbehaving server cannot keep us looping forever.
_RATE_LIMIT_PATIENCE = 5
# Concurrent Process requests of this process: dask may run many fetch tasks at once, the
# service's rate limit (and a laptop's uplink) is better served by a few at a time.
_PROCESS_SLOTS = threading.BoundedSemaphore(4)
# OAuth sessions by token URL, base URL, client id and secret hash; one token request even
# when many tasks start together.
_SESSIONS: dict[tuple[str, str, str, bytes], SentinelHubSession] = {}
_SESSION_LOCK = threading.Lock()
_COLLECTION_LOCK = threading.Lock()

HOW_TO_SET = (
    "pass --sh-client-id/--sh-client-secret, set SH_CLIENT_ID/SH_CLIENT_SECRET, or run "
    "`sentinelhub.config --sh_client_id ID --sh_client_secret SECRET`"
)
MISSING_CREDENTIALS = (
    "the sentinelhub source needs OAuth client credentials: create a free Copernicus Data "
    "Space account (https://dataspace.copernicus.eu), register an OAuth client in its "
    f"dashboard, then {HOW_TO_SET}"
)
#: Plain http is refused by requests-oauthlib unless this variable is set (loopback tests).
INSECURE_TRANSPORT_VAR = "OAUTHLIB_INSECURE_TRANSPORT"


# --- endpoints --------------------------------------------------------------------------


def check_url(url: str, *, flag: str, example: str) -> None:
    """Refuse a Sentinel Hub URL that is not ``https://`` with a host.

    Plain ``http://`` is accepted for loopback hosts only (``localhost``, ``127.0.0.1``,
    ``::1``: a test server on this machine); anywhere else the OAuth token and the
    credentials would cross the network unencrypted.

    Args:
        url: The base or token URL.
        flag: The command-line option it came from (``--sh-base-url``), for the message.
        example: A correct URL to show.

    Raises:
        ConfigError: Naming ``flag``, the value and the fix.
    """
    problem = url_problem(url)
    if problem is not None:
        raise ConfigError(
            f"{flag} {url!r} {problem}: pass an absolute https:// URL (e.g. {example})"
        )
    if url.strip().lower().startswith("http://") and not is_loopback(url):
        raise ConfigError(
            f"{flag} {url!r} uses plain http, which would send the OAuth credentials "
            f"unencrypted: use https:// (e.g. {example})"
        )


def insecure_token_url_error(token_url: str) -> ConfigError:
    """The error for a plain-http token URL that requests-oauthlib refuses to use."""
    return ConfigError(
        f"--sh-token-url {token_url!r} uses plain http, which OAuth refuses: use https://, "
        f"or for a test server on this machine set {INSECURE_TRANSPORT_VAR}=1"
    )


# --- credentials ------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """OAuth client credentials and where they came from (secret masked in repr)."""

    client_id: str
    secret: SecretStr
    origin: str

    def masked(self) -> str:
        """``client id abcd…(set, from environment), secret ****``."""
        return f"client id {mask_id(self.client_id)}(set, from {self.origin}), secret ****"


def mask_id(client_id: str) -> str:
    """First four characters of a client id and an ellipsis."""
    return f"{client_id[:4]}…"


def profile_credentials() -> tuple[str, str] | None:
    """Client id and secret of the sentinelhub config profile, when one is saved."""
    from sentinelhub.config import SHConfig

    # SHConfig.load() writes a default config file when none exists: look before loading.
    if not os.path.exists(SHConfig.get_config_location()):
        return None
    try:
        config = SHConfig.load()  # profile from SH_PROFILE, else the default profile
    except (KeyError, OSError, ValueError):
        return None
    if config.sh_client_id and config.sh_client_secret:
        return config.sh_client_id, config.sh_client_secret
    return None


def resolve_credentials(
    settings: SourceSettings,
    *,
    environ: Mapping[str, str] | None = None,
    profile: Callable[[], tuple[str, str] | None] = profile_credentials,
) -> Credentials | None:
    """Credentials from settings, else the environment, else the sentinelhub profile.

    Each place counts only when it holds both the id and the secret, so a half-set pair
    never mixes with another place's half.

    Args:
        settings: Source settings (``sh_client_id``, ``sh_client_secret``).
        environ: Environment (default ``os.environ``).
        profile: Reads the sentinelhub config profile.

    Returns:
        The credentials, or None when no place has both.
    """
    env = os.environ if environ is None else environ
    if settings.sh_client_id and settings.sh_client_secret is not None:
        secret = settings.sh_client_secret.get_secret_value()
        if secret:
            return _remember(Credentials(settings.sh_client_id, SecretStr(secret), "settings"))
    cid, secret = env.get("SH_CLIENT_ID", ""), env.get("SH_CLIENT_SECRET", "")
    if cid and secret:
        return _remember(Credentials(cid, SecretStr(secret), "environment"))
    saved = profile()
    if saved is not None:
        return _remember(Credentials(saved[0], SecretStr(saved[1]), "sentinelhub profile"))
    return None


# requests-oauthlib logs the token request body (client_secret included) and the token at
# DEBUG level: a filter on its logger redacts them before any handler sees the record.
_SECRETS: set[str] = set()
_SECRET_PATTERNS = (
    (re.compile(r"(client_secret=)[^&\s'\"]+"), r"\1****"),
    (re.compile(r"""(["']?(?:access_token|client_secret)["']?\s*[:=]\s*["'])[^"']+"""), r"\1****"),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1****"),
)


def redact(text: str) -> str:
    """``text`` with known secrets, client secrets and access tokens replaced by ``****``."""
    for secret in list(_SECRETS):
        text = text.replace(secret, "****")
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


logging.getLogger("requests_oauthlib.oauth2_session").addFilter(_RedactSecrets())


def _remember(creds: Credentials) -> Credentials:
    _SECRETS.add(creds.secret.get_secret_value())
    return creds


# --- pure planning ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessPlan:
    """What one Process request asks for.

    Attributes:
        bands: Reflectance bands by common name, in output order.
        band_ids: Their Sentinel-2 band ids (``B04``…).
        scl: Whether the scene classification is requested (L2A only).
        responses: Response identifiers, in request order.
        evalscript: Version-3 evalscript returning DNs.
    """

    bands: tuple[str, ...]
    band_ids: tuple[str, ...]
    scl: bool
    responses: tuple[str, ...]
    evalscript: str


def process_plan(bands: Sequence[str], *, scl: bool) -> ProcessPlan:
    """Evalscript and response identifiers for reflectance ``bands`` (and SCL).

    Bands come back as UINT16 digital numbers (``units: "DN"``), SCL and dataMask as UINT8,
    each in its own response so every GeoTIFF has one sample type.
    """
    band_ids = tuple(BAND_IDS[b] for b in bands)
    inputs = [*band_ids, *(["SCL"] if scl else []), "dataMask"]
    outputs: list[str] = []
    values: list[str] = []
    responses: list[str] = []
    if band_ids:
        outputs.append(f'{{id: "{RESP_BANDS}", bands: {len(band_ids)}, sampleType: "UINT16"}}')
        values.append(f"{RESP_BANDS}: [{', '.join(f's.{b}' for b in band_ids)}]")
        responses.append(RESP_BANDS)
    if scl:
        outputs.append(f'{{id: "{RESP_SCL}", bands: 1, sampleType: "UINT8"}}')
        values.append(f"{RESP_SCL}: [s.SCL]")
        responses.append(RESP_SCL)
    outputs.append(f'{{id: "{RESP_MASK}", bands: 1, sampleType: "UINT8"}}')
    values.append(f"{RESP_MASK}: [s.dataMask]")
    responses.append(RESP_MASK)
    script = "\n".join(
        [
            "//VERSION=3",
            "function setup() {",
            "  return {",
            f'    input: [{{bands: {json.dumps(inputs)}, units: "DN"}}],',
            "    output: [",
            ",\n".join(f"      {o}" for o in outputs),
            "    ]",
            "  };",
            "}",
            "",
            "function evaluatePixel(s) {",
            "  return {",
            ",\n".join(f"    {v}" for v in values),
            "  };",
            "}",
            "",
        ]
    )
    return ProcessPlan(tuple(bands), band_ids, scl, tuple(responses), script)


def stack_bands(level: Level, bands: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """Reflectance bands to request and whether SCL is, for a processing level.

    L1C has no scene classification: ``scl`` is dropped there (a stack without SCL is masked
    on nodata alone), as the protocol says "plus scl where the source has it".

    Raises:
        SourceError: For a band name that is not a scene-stack band.
    """
    unknown = [b for b in bands if b not in ALL_BANDS]
    if unknown:
        raise SourceError(
            f"sentinelhub source has no band(s) {', '.join(unknown)}: "
            f"choose from {', '.join(ALL_BANDS)}"
        )
    return tuple(b for b in bands if b != SCL), SCL in bands and level == "l2a"


Window = tuple[int, int, int, int]


def split_windows(shape: tuple[int, int], max_px: int = MAX_PX) -> tuple[Window, ...]:
    """Cut a ``(height, width)`` block into near-equal windows of at most ``max_px`` a side.

    Returns:
        ``(y0, y1, x0, x1)`` windows, row by row, covering the block exactly once.
    """
    ys = _even_cuts(shape[0], max_px)
    xs = _even_cuts(shape[1], max_px)
    return tuple((y0, y1, x0, x1) for y0, y1 in ys for x0, x1 in xs)


def _even_cuts(n: int, max_px: int) -> list[tuple[int, int]]:
    parts = max(1, math.ceil(n / max_px))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return list(itertools.pairwise(edges))


def plan_fetch_px(shape: tuple[int, int], chunk_px: int, max_px: int = MAX_PX) -> int:
    """Side of the fetched blocks: the whole tile in one request when it fits the service.

    A multiple of ``chunk_px`` (as :func:`agrimon.sources.lazy.lazy_stack` needs): the tile
    rounded up to chunks when that is at most ``max_px``, else as many chunks as fit in
    ``max_px`` (at least one; a chunk larger than ``max_px`` is split inside the fetch).
    """
    whole = chunk_px * math.ceil(max(shape) / chunk_px)
    if whole <= max_px:
        return whole
    return chunk_px * max(1, max_px // chunk_px)


def scenes_from_features(features: Sequence[Mapping[str, Any]], *, lon: float) -> tuple[Scene, ...]:
    """One scene per solar day at ``lon``, from Catalog features.

    Granules of the same pass (same day, minutes apart) are merged: the Process API mosaics
    them within the scene's time range. The scene takes the earliest feature's id (``+N``
    when N more were merged) and time, and the largest cloud cover of its features (the
    conservative figure: every one of them passed the filter).
    """
    by_day: dict[date, list[tuple[datetime, str, float | None]]] = {}
    for feature in features:
        props = feature.get("properties", {})
        when = parse_utc(str(props["datetime"]))
        cloud = props.get("eo:cloud_cover")
        entry = (when, str(feature["id"]), None if cloud is None else float(cloud))
        by_day.setdefault(solar_day(when, lon), []).append(entry)
    scenes = []
    for _, group in sorted(by_day.items()):
        group = sorted(set(group), key=lambda e: (e[0], e[1]))
        clouds = [c for _, _, c in group if c is not None]
        first, last = group[0][0], group[-1][0]
        scenes.append(
            Scene(
                id=group[0][1] + (f"+{len(group) - 1}" if len(group) > 1 else ""),
                time=first,
                cloud_cover=max(clouds) if clouds else None,
                meta={
                    "features": [i for _, i, _ in group],
                    "start": first.isoformat(),
                    "end": last.isoformat(),
                },
            )
        )
    return tuple(scenes)


def time_range(scene: Scene, pad: timedelta = TIME_PAD) -> tuple[datetime, datetime]:
    """Process ``timeRange`` of a scene: its acquisitions ± ``pad``."""
    start = parse_utc(str(scene.meta.get("start", scene.time.isoformat())))
    end = parse_utc(str(scene.meta.get("end", scene.time.isoformat())))
    return start - pad, end + pad


def catalog_filter(max_cloud: float) -> str:
    """CQL2-text filter of the Catalog search."""
    return f"eo:cloud_cover <= {max_cloud:g}"


# --- decoding ---------------------------------------------------------------------------


def decode_process_response(
    payload: bytes, responses: Sequence[str], shape: tuple[int, int]
) -> dict[str, NDArray[Any]]:
    """Arrays ``(count, height, width)`` of each response of a Process reply.

    One response comes back as a bare GeoTIFF, several as a tar of ``<identifier>.tif``.

    Raises:
        RetryableError: When the payload does not decode or has the wrong shape (a corrupt or
            truncated reply: worth fetching again).
    """
    try:
        if len(responses) == 1:
            files = {responses[0]: payload}
        else:
            files = {}
            with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
                for member in tar.getmembers():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        files[member.name.rsplit(".", 1)[0]] = handle.read()
        out = {}
        for ident in responses:
            if ident not in files:
                raise RetryableError(f"reply has no {ident}.tif (members: {sorted(files)})")
            with rasterio.MemoryFile(files[ident]) as mem, mem.open() as ds:
                values = ds.read()
            if values.shape[1:] != shape:
                raise RetryableError(
                    f"{ident}.tif is {values.shape[2]}×{values.shape[1]} px, "
                    f"expected {shape[1]}×{shape[0]}"
                )
            out[ident] = values
        return out
    except RetryableError:
        raise
    except (tarfile.TarError, rasterio.errors.RasterioError, OSError, EOFError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise RetryableError(f"undecodable reply ({type(err).__name__}: {first})") from err


def to_stack(arrays: Mapping[str, NDArray[Any]], plan: ProcessPlan) -> dict[str, NDArray[Any]]:
    """Scene-stack variables from decoded Process responses.

    Reflectance = DN × 1e-4 with NO offset: Sentinel Hub harmonises processing-baseline
    ≥ 04.00 values to the older baselines by default (``harmonizeValues``), so the −1000 DN
    shift is already gone. NaN where dataMask is 0 (or DN is 0); SCL 0 there.
    """
    nodata = arrays[RESP_MASK][0] == 0
    out: dict[str, NDArray[Any]] = {}
    if plan.bands:
        dn = arrays[RESP_BANDS]
        if dn.shape[0] != len(plan.bands):
            raise RetryableError(f"reply has {dn.shape[0]} bands, expected {len(plan.bands)}")
        for i, band in enumerate(plan.bands):
            refl = dn_to_reflectance(dn[i], nodata=0)
            refl[nodata] = np.nan
            out[band] = refl
    if plan.scl:
        scl = arrays[RESP_SCL][0].astype(np.uint8)
        scl[nodata] = 0
        out[SCL] = scl
    return out


def _check_json_page(payload: bytes) -> None:
    try:
        page = json.loads(payload)
        if not isinstance(page, dict) or not isinstance(page.get("features"), list):
            raise ValueError("no features list")
    except ValueError as err:
        raise RetryableError(f"undecodable catalog page ({err})") from err


# --- the source -------------------------------------------------------------------------


def collection_for(level: Level, base_url: str) -> DataCollection:
    """Sentinel-2 collection of ``level`` whose Process calls go to ``base_url``.

    Predefined collections carry their own service URL, which beats ``sh_base_url``: derive
    one with ours. The name is a hash of the URL, so deriving again returns the same enum.
    """
    from sentinelhub.data_collections import DataCollection

    parent = DataCollection.SENTINEL2_L2A if level == "l2a" else DataCollection.SENTINEL2_L1C
    digest = hashlib.sha1(base_url.encode()).hexdigest()[:10]
    with _COLLECTION_LOCK:
        return parent.define_from(f"AGRIMON_{parent.name}_{digest}", service_url=base_url)


class SentinelHubSource:
    """Sentinel-2 L2A or L1C from a Sentinel Hub deployment (see module docstring).

    Args:
        settings: Endpoints (``sh_preset``, ``sh_base_url``, ``sh_token_url``), credentials,
            level, cloud limit, cache and retry settings.
    """

    name = NAME

    def __init__(self, settings: SourceSettings):
        self.settings = settings
        preset = PRESETS[settings.sh_preset]
        self.base_url = (settings.sh_base_url or preset.base_url).rstrip("/")
        self.token_url = settings.sh_token_url or preset.token_url
        self.note = preset.note if not settings.sh_base_url else "custom deployment"
        self.level: Level = settings.level
        self.credentials = resolve_credentials(settings)
        self.cache = settings.cache()
        self.policy = settings.retry_policy()

    def __repr__(self) -> str:
        creds = self.credentials.masked() if self.credentials else "no credentials"
        return f"SentinelHubSource({self.base_url!r}, level={self.level!r}, {creds})"

    @property
    def collection_id(self) -> str:
        """Catalog / Process id of the collection (``sentinel-2-l2a`` or ``sentinel-2-l1c``)."""
        return "sentinel-2-l2a" if self.level == "l2a" else "sentinel-2-l1c"

    def check(self) -> None:
        """Pre-flight check, no network: URLs and credentials.

        The base and token URLs must be ``https://`` (plain ``http://`` only on loopback
        hosts, and for the token URL only with ``OAUTHLIB_INSECURE_TRANSPORT`` set, as
        requests-oauthlib demands); credentials must be set unless the run is offline
        (served from the cache alone).

        Raises:
            ConfigError: For a malformed or plain-http URL, or missing credentials.
        """
        self._check_urls()
        if self.settings.offline:
            return
        if self.credentials is None:
            raise ConfigError(MISSING_CREDENTIALS)
        from oauthlib.oauth2.rfc6749.utils import (  # type: ignore[import-untyped]
            is_secure_transport,
        )

        if not is_secure_transport(self.token_url):
            raise insecure_token_url_error(self.token_url)

    def _check_urls(self) -> None:
        preset = PRESETS[self.settings.sh_preset]
        check_url(
            self.settings.sh_base_url or self.base_url,
            flag="--sh-base-url",
            example=preset.base_url,
        )
        check_url(
            self.settings.sh_token_url or self.token_url,
            flag="--sh-token-url",
            example=preset.token_url,
        )

    def describe(self) -> dict[str, str]:
        """Endpoint, token URL, collection and whether credentials are set (masked)."""
        creds = self.credentials.masked() if self.credentials else "not set: " + HOW_TO_SET
        return {
            "endpoint": self.base_url,
            "token_url": self.token_url,
            "collection": self.collection_id,
            "deployment": self.note,
            "credentials": creds,
        }

    def config(self, *, need_credentials: bool = True) -> SHConfig:
        """The sentinelhub-py ``SHConfig`` of these settings (defaults only, no local profile).

        Raises:
            ConfigError: For a malformed or plain-http base or token URL.
            SourceError: When credentials are needed and none are set.
        """
        from sentinelhub.config import SHConfig

        self._check_urls()
        if need_credentials and self.credentials is None:
            raise SourceError(MISSING_CREDENTIALS)
        creds = self.credentials
        return SHConfig(
            use_defaults=True,
            sh_base_url=self.base_url,
            sh_token_url=self.token_url,
            sh_client_id=creds.client_id if creds else "",
            sh_client_secret=creds.secret.get_secret_value() if creds else "",
            max_download_attempts=self.settings.retries,
            download_sleep_time=self.settings.backoff_s,
            max_retries=self.settings.retries * _RATE_LIMIT_PATIENCE,
            download_timeout_seconds=self.settings.timeout_s,
        )

    # search -----------------------------------------------------------------------------

    def find_scenes(self, tile: Tile, start: date, end: date) -> tuple[Scene, ...]:
        """Acquisitions over ``tile`` from ``start`` to ``end``, one per solar day.

        Returns:
            The scenes, oldest first; empty when the period has none.

        Raises:
            ConfigError: A malformed or plain-http base or token URL.
            SourceError: Missing or rejected credentials, a failing service, or an offline
                run whose pages are not cached.
        """
        from sentinelhub.api.catalog import SentinelHubCatalog
        from sentinelhub.constants import CRS
        from sentinelhub.geometry import BBox

        footprint = tile.footprint_lonlat()
        catalog = SentinelHubCatalog(config=self.config(need_credentials=False))
        search = catalog.search(
            collection_for(self.level, self.base_url),
            time=(datetime.combine(start, time.min), datetime.combine(end, time(23, 59, 59))),
            bbox=BBox(footprint.bounds, crs=CRS.WGS84),
            filter=catalog_filter(self.settings.max_cloud),
            fields={
                "include": ["id", "properties.datetime", "properties.eo:cloud_cover"],
                "exclude": [],
            },
            limit=CATALOG_LIMIT,
        )
        url, params = str(search.url), dict(search.params)
        features: list[dict[str, Any]] = []
        token: Any = None
        for page_no in range(1, 10_000):
            body = {k: v for k, v in {**params, "next": token}.items() if v is not None}
            what = f"catalog page {page_no} of tile {tile.id} ({start} to {end})"
            payload = with_retries(
                partial(
                    self.cache.fetch,
                    request_key("sentinelhub-catalog", url, body),
                    partial(self._post_json, url, body, what),
                    what=what,
                    check=_check_json_page,
                ),
                what=what,
                policy=self.policy,
            )
            page = json.loads(payload)
            features.extend(page["features"])
            token = (page.get("context") or {}).get("next")
            if token is None or not page["features"]:
                break
        # The service filters already; this keeps a cached or lenient answer honest.
        kept = [
            f
            for f in features
            if (f.get("properties", {}).get("eo:cloud_cover") or 0.0) <= self.settings.max_cloud
        ]
        return scenes_from_features(kept, lon=footprint.centroid.x)

    def _post_json(self, url: str, body: Mapping[str, Any], what: str) -> bytes:
        from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient

        try:
            client = SentinelHubDownloadClient(config=self.config(), session=self._session())
            page = client.get_json_dict(url, post_values=dict(body), use_session=True)
        except ValueError as err:  # JSON decoding of a damaged reply
            raise RetryableError(f"undecodable catalog page ({type(err).__name__})") from err
        except Exception as err:
            raise _source_error(
                err, what, base_url=self.base_url, token_url=self.token_url
            ) from err
        return json.dumps(page).encode()

    # pixels -----------------------------------------------------------------------------

    def load(
        self,
        tile: Tile,
        scenes: Sequence[Scene],
        *,
        bands: Sequence[str] = ALL_BANDS,
        chunk_px: int = DEFAULT_CHUNK_PX,
    ) -> xr.Dataset:
        """Lazy scene stack of ``tile.geobox``: one cached Process request per block and scene.

        The block is the whole tile when it fits the service's 2500 px limit (one request
        serves every chunk of it), else the largest multiple of ``chunk_px`` that fits.
        """
        refl, scl = stack_bands(self.level, bands)
        plan = process_plan(refl, scl=scl)
        variables = [*refl, *([SCL] if scl else [])]
        scenes = tuple(scenes)
        geobox = tile.geobox
        return lazy_stack(
            geobox,
            [s.time for s in scenes],
            variables,
            fetch=partial(self._fetch, scenes=scenes, plan=plan, tile_id=tile.id),
            name=NAME,
            chunk_px=chunk_px,
            fetch_px=plan_fetch_px(_shape(geobox), chunk_px),
            token=(self.base_url, self.level, [(s.id, time_range(s)) for s in scenes]),
            attrs={
                "source": NAME,
                "endpoint": self.base_url,
                "collection": self.collection_id,
                "processing_level": self.level.upper(),
            },
        )

    def _fetch(
        self,
        t: int,
        block: GeoBox,
        _prepared: Any,
        *,
        scenes: Sequence[Scene],
        plan: ProcessPlan,
        tile_id: str,
    ) -> dict[str, NDArray[Any]]:
        """Pixels of scene ``t`` over ``block``, in sub-requests of at most 2500 px."""
        scene = scenes[t]
        what = f"scene {scene.id} tile {tile_id}"
        windows = split_windows(_shape(block))
        if len(windows) == 1:
            return self._fetch_window(scene, block, plan, what)
        ny, nx = block.shape
        out: dict[str, NDArray[Any]] = {
            b: np.full((ny, nx), np.nan, np.float32) for b in plan.bands
        }
        if plan.scl:
            out[SCL] = np.zeros((ny, nx), np.uint8)
        for k, (y0, y1, x0, x1) in enumerate(windows, start=1):
            part = self._fetch_window(
                scene, block[y0:y1, x0:x1], plan, f"{what} (part {k} of {len(windows)})"
            )
            for band, values in part.items():
                out[band][y0:y1, x0:x1] = values
        return out

    def _fetch_window(
        self, scene: Scene, block: GeoBox, plan: ProcessPlan, what: str
    ) -> dict[str, NDArray[Any]]:
        """One Process request (through the cache, retried) decoded to stack variables."""
        request = self._process_request(scene, block, plan)
        shape = _shape(block)
        decoded: dict[str, dict[str, NDArray[Any]]] = {}

        def check(payload: bytes) -> None:
            # Decoding is the check: keep the result so that a good payload decodes once.
            decoded["arrays"] = decode_process_response(payload, plan.responses, shape)

        with_retries(
            partial(
                self.cache.fetch,
                request_key("sentinelhub-process", request.url, request.post_values),
                partial(self._download, request, what),
                what=what,
                check=check,
            ),
            what=what,
            policy=self.policy,
        )
        return to_stack(decoded["arrays"], plan)

    def _session(self) -> SentinelHubSession:
        """The OAuth session of these credentials, created (one token request) on first use.

        sentinelhub-py caches sessions by client id and URL only, so a cached session would
        hide a changed or wrong secret: agrimon keeps its own, keyed on the secret's hash too.
        """
        from sentinelhub.download.session import SentinelHubSession

        config = self.config()
        secret = config.sh_client_secret.encode()
        key = (self.token_url, self.base_url, config.sh_client_id, hashlib.sha256(secret).digest())
        with _SESSION_LOCK:
            session = _SESSIONS.get(key)
            if session is None:
                session = _SESSIONS[key] = SentinelHubSession(config=config)
            return session

    def _process_request(self, scene: Scene, block: GeoBox, plan: ProcessPlan) -> DownloadRequest:
        """The Process API download request of ``scene`` over ``block`` (no I/O)."""
        from sentinelhub.api.process import SentinelHubRequest
        from sentinelhub.constants import CRS, MimeType, MosaickingOrder
        from sentinelhub.geometry import BBox

        epsg = block.crs.epsg if block.crs is not None else None
        if epsg is None:
            raise SourceError(f"tile grid {block.crs} has no EPSG code: Sentinel Hub needs one")
        request = SentinelHubRequest(
            evalscript=plan.evalscript,
            input_data=[
                SentinelHubRequest.input_data(
                    collection_for(self.level, self.base_url),
                    time_interval=time_range(scene),
                    maxcc=self.settings.max_cloud / 100.0,
                    mosaicking_order=MosaickingOrder.LEAST_CC,
                )
            ],
            responses=[
                SentinelHubRequest.output_response(r, MimeType.TIFF) for r in plan.responses
            ],
            bbox=BBox(_bounds(block), crs=CRS(epsg)),
            size=(_shape(block)[1], _shape(block)[0]),  # (width, height)
            config=self.config(need_credentials=False),
        )
        return request.download_list[0]

    def _download(self, request: DownloadRequest, what: str) -> bytes:
        """POST a Process request with sentinelhub-py's client (its retries and rate limit)."""
        from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient

        with _PROCESS_SLOTS:
            try:
                client = SentinelHubDownloadClient(config=self.config(), session=self._session())
                (response,) = client.download([request], max_threads=1, decode_data=False)
            except Exception as err:
                raise _source_error(
                    err, what, base_url=self.base_url, token_url=self.token_url
                ) from err
        return bytes(response.content)


def _shape(geobox: GeoBox) -> tuple[int, int]:
    return int(geobox.shape[0]), int(geobox.shape[1])


def _bounds(geobox: GeoBox) -> tuple[float, float, float, float]:
    left, bottom, right, top = geobox.boundingbox
    return float(left), float(bottom), float(right), float(top)


def clear_sessions() -> None:
    """Forget the OAuth sessions (tests; or after credentials were revoked)."""
    with _SESSION_LOCK:
        _SESSIONS.clear()


def _source_error(
    err: Exception, what: str, *, base_url: str = "", token_url: str = ""
) -> Exception:
    """One-line agrimon error for a sentinelhub-py / OAuth failure (secret never included).

    Args:
        err: What sentinelhub-py, requests-oauthlib or requests raised.
        what: The request in words ("scene X tile Y").
        base_url: The base URL in use, to name the option of a host that is unreachable.
        token_url: The OAuth token URL in use, named when OAuth refuses plain http.
    """
    from oauthlib.oauth2.rfc6749.errors import (  # type: ignore[import-untyped]
        InsecureTransportError,
        OAuth2Error,
    )
    from sentinelhub.decoding import decode_sentinelhub_err_msg
    from sentinelhub.exceptions import DownloadFailedException, OutOfRequestsException

    if isinstance(err, AgrimonError | RetryableError):
        return err
    if isinstance(err, InsecureTransportError):  # an OAuth2Error, but not about credentials
        return insecure_token_url_error(token_url or "(not known)")
    unreachable = _unreachable_host(err)
    if unreachable is not None:
        options = [
            flag
            for flag, url in (("--sh-base-url", base_url), ("--sh-token-url", token_url))
            if url and url_host(url) == unreachable
        ] or ["--sh-base-url", "--sh-token-url"]
        return SourceError(
            f"could not reach Sentinel Hub host {unreachable} while fetching {what}: "
            f"connection failed after all retries; check the host in {' and '.join(options)}, "
            "the connection or the service status, then rerun (what was fetched is cached)"
        )
    if isinstance(err, OAuth2Error):
        return SourceError(
            f"Sentinel Hub rejected the credentials ({err.error}) while fetching {what}: "
            f"check them and {HOW_TO_SET}"
        )
    if isinstance(err, OutOfRequestsException):
        return SourceError(
            f"Sentinel Hub kept answering 'too many requests' for {what}: wait a while or "
            "check the processing units left on the account, then rerun (what was fetched is "
            "cached)"
        )
    if isinstance(err, DownloadFailedException):
        cause = err.request_exception
        response = getattr(cause, "response", None)
        status = getattr(response, "status_code", None)
        if status in (401, 403):
            return SourceError(
                f"Sentinel Hub rejected the credentials (HTTP {status}) while fetching {what}: "
                f"check them and {HOW_TO_SET}"
            )
        if isinstance(cause, requests.HTTPError) and response is not None and status:
            message = redact(" ".join(decode_sentinelhub_err_msg(response).split()))[:300]
            if status < 500:
                return SourceError(
                    f"Sentinel Hub refused {what} (HTTP {status}): {message or 'no message'}"
                )
            return SourceError(
                f"could not fetch {what}: Sentinel Hub kept failing (HTTP {status}) "
                "after all retries; check the service status, then rerun (what was fetched "
                "is cached)"
            )
        kind = type(cause).__name__ if cause is not None else type(err).__name__
        if isinstance(cause, requests.exceptions.ChunkedEncodingError):
            kind = f"reply cut short ({kind})"
        return SourceError(
            f"could not fetch {what}: {kind} after all retries; check the connection or the "
            "service status, then rerun (what was fetched is cached)"
        )
    return SourceError(f"could not fetch {what}: {type(err).__name__}: {redact(str(err))[:300]}")


_URL_RE = re.compile(r"https?://[^\s'\"]+")


def _failed_url(err: BaseException) -> str | None:
    """URL of the request that failed, from the exception (or its message)."""
    request = getattr(err, "request", None)
    url = getattr(request, "url", None)
    if isinstance(url, str) and url:
        return url
    found = _URL_RE.search(str(err))
    return found.group(0) if found else None


def _unreachable_host(err: Exception) -> str | None:
    """Host that could not be connected to (DNS, refused, connect timeout), else None."""
    from sentinelhub.exceptions import DownloadFailedException

    cause: BaseException | None = err
    if isinstance(err, DownloadFailedException):
        cause = err.request_exception
    if not isinstance(cause, requests.ConnectionError):
        return None
    url = _failed_url(cause) or _failed_url(err)
    return url_host(url) if url else "(unknown host)"
