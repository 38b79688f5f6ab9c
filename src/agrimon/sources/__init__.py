"""Scene sources: one module per source, all behind the ``Source`` protocol."""

from __future__ import annotations

from agrimon.errors import ConfigError
from agrimon.sources.base import Source
from agrimon.sources.demo import DemoSource
from agrimon.sources.settings import SourceSettings

#: Every source by name, with a one-line description for ``agrimon sources``.
SOURCES: dict[str, str] = {
    "demo": "embedded synthetic Sentinel-2 L2A scenes (no network, no account)",
    "stac": "any STAC API through pystac-client and odc-stac (default: Earth Search, no account)",
    "sentinelhub": "Sentinel Hub Process API (default: Copernicus Data Space, free account)",
    "local": "a folder of GeoTIFFs or a static STAC catalog on disk",
}


def get_source(name: str, settings: SourceSettings | None = None) -> Source:
    """The source called ``name``, configured by ``settings``.

    Raises:
        ConfigError: For an unknown name.
    """
    settings = settings or SourceSettings()
    # Real sources are imported on demand: their client libraries are slow to import.
    if name == "demo":
        return DemoSource()
    if name == "stac":
        from agrimon.sources.stac import StacSource

        return StacSource(settings)
    if name == "sentinelhub":
        from agrimon.sources.sentinelhub import SentinelHubSource

        return SentinelHubSource(settings)
    if name == "local":
        from agrimon.sources.local import LocalSource

        return LocalSource(settings)
    raise ConfigError(f"unknown source '{name}': choose one of {', '.join(SOURCES)}")


__all__ = ["SOURCES", "Source", "SourceSettings", "get_source"]
