"""The one protocol every scene source implements, and the scene-stack convention.

A source answers two questions for a tile and a period: which acquisitions exist
(:meth:`Source.find_scenes`, cheap, used by ``agrimon plan``) and what their pixels are
(:meth:`Source.load`, lazy: it returns a dask-backed scene stack and reads nothing yet).
Before either, :meth:`Source.check` finds configuration problems without any network access,
so that a run fails in its first second rather than after its first retries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import xarray as xr

from agrimon.grid import Tile

#: Reflectance bands of a scene stack, by STAC common name, in spectral order.
BANDS: tuple[str, ...] = (
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "swir16",
    "swir22",
)
#: Scene classification layer (Sen2Cor SCL codes), uint8.
SCL = "scl"
#: What ``Source.load`` returns unless asked otherwise: every band, and SCL where it exists.
ALL_BANDS: tuple[str, ...] = (*BANDS, SCL)
#: Default spatial chunk of scene stacks, in pixels.
DEFAULT_CHUNK_PX = 256


@dataclass(frozen=True)
class Scene:
    """One acquisition of one tile, as found by a source.

    Attributes:
        id: Scene identifier as the source names it.
        time: Acquisition time (UTC, naive).
        cloud_cover: Cloud cover of the scene in percent, when known.
        meta: What the source needs to load the scene later (a STAC item, file paths...);
            plain JSON-like data.
    """

    id: str
    time: datetime
    cloud_cover: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


@runtime_checkable
class Source(Protocol):
    """What the pipeline needs from a source of Sentinel-2 scenes."""

    name: str

    def check(self) -> None:
        """Find every configuration problem before a run starts, cheaply.

        No network access and no pixel reads: only the settings, the environment and a
        glance at local files, within about a second. What would otherwise fail only
        mid-run (a missing path, a malformed URL, missing credentials) fails here.

        Raises:
            AgrimonError: A one-line message naming the option (``--local-path``,
                ``--stac-url``...), what is wrong and how to fix it; usually a
                :class:`~agrimon.errors.ConfigError`.
        """
        ...

    def find_scenes(self, tile: Tile, start: date, end: date) -> tuple[Scene, ...]:
        """Acquisitions covering ``tile`` between ``start`` and ``end`` (inclusive)."""
        ...

    def load(
        self,
        tile: Tile,
        scenes: Sequence[Scene],
        *,
        bands: Sequence[str] = ALL_BANDS,
        chunk_px: int = DEFAULT_CHUNK_PX,
    ) -> xr.Dataset:
        """Lazy scene stack of ``tile.geobox`` for ``scenes``.

        Returns:
            Dataset with dims ``(time, y, x)``: one float32 reflectance variable per
            requested band, plus ``scl`` (uint8) where the source has it; CRS set,
            dask-chunked ``chunk_px`` square in space and, along time, by a chunk's whole
            series (sources that read each chunk on their own) or one date (remote
            sources), see :func:`agrimon.sources.lazy.lazy_stack`.
        """
        ...

    def describe(self) -> dict[str, str]:
        """Endpoint and settings to show the user and record in the manifest."""
        ...


def parse_utc(text: str) -> datetime:
    """Naive UTC datetime from an RFC 3339 string (``...Z`` or with an offset)."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def solar_day(when: datetime, lon: float) -> date:
    """Local solar date of a UTC time at longitude ``lon``: groups the granules of one pass."""
    return (when + timedelta(hours=lon / 15.0)).date()


def url_problem(url: str) -> str | None:
    """What keeps ``url`` from being an absolute ``http(s)://`` URL with a host, or None.

    Returns:
        A short phrase for an error message ("has no http:// or https:// scheme", "has no
        host"...), or None for a usable URL.
    """
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return "cannot be parsed as a URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "has no http:// or https:// scheme"
    host = parts.hostname or ""
    if not host or any(c.isspace() for c in parts.netloc):
        return "has no host"
    return None


def url_host(url: str) -> str:
    """Host (and port, when given) of a URL, for messages: ``sh.dataspace.copernicus.eu``."""
    try:
        return urlsplit(url.strip()).netloc.rsplit("@", 1)[-1] or url
    except ValueError:
        return url


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
