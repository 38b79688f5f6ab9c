"""Validate STAC catalogs without a network: extension schemas from ``../shared/stac-schemas``.

pystac's ``validate()`` fetches each extension schema from its URL. :class:`OfflineStacIO`
answers those URLs from the shared folder laid out by URL (see its README), and the core
STAC 1.1 and GeoJSON schemas from the copies shipped inside pystac; any other URL raises, so
a catalog that declares a schema nobody holds fails loudly instead of reaching the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pystac
import pystac.validation
import pytest
from pystac.stac_io import DefaultStacIO
from pystac.validation.local_validator import get_local_schema_cache

#: Official extension schemas, laid out by URL (``<host>/<path>``).
SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "stac-schemas"

requires_schemas = pytest.mark.skipif(
    not SCHEMAS.is_dir(),
    reason=f"STAC extension schemas {SCHEMAS} are missing: lay shared/stac-schemas beside "
    "the project to validate catalogs offline",
)


class SchemaNotHeldError(LookupError):
    """A schema URL that neither the shared folder nor pystac holds."""


class OfflineStacIO(DefaultStacIO):
    """Reads local files as usual and schema URLs from the shared folder or pystac, only."""

    # The core STAC and GeoJSON schemas pystac ships, by URL.
    _bundled: dict[str, dict[str, Any]] = get_local_schema_cache()

    def read_text_from_href(self, href: str) -> str:
        """Text of ``href``: a local file, or a schema URL held offline."""
        parts = urlsplit(href)
        if parts.scheme not in ("http", "https"):
            return super().read_text_from_href(href)
        url = f"https://{parts.netloc}{parts.path}"
        if url in self._bundled:
            return json.dumps(self._bundled[url])
        path = SCHEMAS / parts.netloc / parts.path.lstrip("/")
        if not path.is_file():
            raise SchemaNotHeldError(f"{href} is not held offline (looked for {path})")
        return path.read_text(encoding="utf-8")


@contextmanager
def offline_stac_io() -> Iterator[None]:
    """Make :class:`OfflineStacIO` pystac's default while the block runs."""
    before = pystac.StacIO._default_io
    pystac.StacIO.set_default(OfflineStacIO)
    try:
        yield
    finally:
        pystac.StacIO._default_io = before


def validate_offline(catalog_path: Path) -> list[str]:
    """Validate a catalog and every item below it, offline; return the items' ids.

    The JSON is validated as written (not as pystac would migrate it on reading), against the
    core schema and every extension each object declares.

    Raises:
        pystac.errors.STACValidationError: An object breaks a schema.
        SchemaNotHeldError: An object declares a schema not held offline.
    """
    io = OfflineStacIO()
    ids: list[str] = []
    with offline_stac_io():
        pending = [str(catalog_path.resolve())]
        while pending:
            href = pending.pop(0)
            stac = io.read_json(href)
            checked = pystac.validation.validate_dict(stac, href=href)
            missing = set(stac.get("stac_extensions", ())) - set(checked)
            assert not missing, f"{href}: extensions not validated: {sorted(missing)}"
            if stac.get("type") == "Feature":
                ids.append(str(stac["id"]))
                continue
            for link in stac.get("links", ()):
                if link.get("rel") in ("item", "child"):
                    pending.append(pystac.utils.make_absolute_href(link["href"], href))
    return ids
