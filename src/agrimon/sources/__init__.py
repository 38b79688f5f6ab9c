"""Scene sources: one module per source, all behind the ``Source`` protocol."""

from __future__ import annotations

from agrimon.errors import ConfigError
from agrimon.sources.base import Source
from agrimon.sources.demo import DemoSource

#: Every source by name, with a one-line description for ``agrimon sources``.
SOURCES: dict[str, str] = {
    "demo": "embedded synthetic Sentinel-2 L2A scenes (no network, no account)",
}


def get_source(name: str) -> Source:
    """The source called ``name``.

    Raises:
        ConfigError: For an unknown name.
    """
    if name == "demo":
        return DemoSource()
    raise ConfigError(f"unknown source '{name}': choose one of {', '.join(SOURCES)}")


__all__ = ["SOURCES", "Source", "get_source"]
