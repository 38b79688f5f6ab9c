"""On-disk cache of remote responses: keyed by a hash of the request, atomic, verified.

Agencies on patchy, metered links should never download the same thing twice: every remote
response (search pages, scene pixels, Sentinel Hub replies) goes through :meth:`Cache.fetch`.
Entries are written to a temporary file and renamed into place, and carry the SHA-256 of
their payload, checked on every read: a corrupt entry is discarded and fetched again. With
``offline=True`` nothing is fetched and a miss is a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agrimon.errors import SourceError

#: Default cache folder, relative to the working directory (the project's ``data/``).
DEFAULT_CACHE_DIR = Path("data") / "cache"
_MAGIC = b"agrimon-cache-1\n"


def request_key(*parts: Any) -> str:
    """Stable hex key of a request from JSON-serialisable parts (order of dict keys ignored)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class OfflineMissError(SourceError):
    """An offline run needed something that is not in the cache."""


@dataclass(frozen=True)
class CacheStats:
    """What the cache holds."""

    root: Path
    entries: int
    bytes: int


class Cache:
    """Content-verified response cache under ``root``.

    Args:
        root: Cache folder (created on first write).
        offline: Serve from the cache only; a miss raises :class:`OfflineMissError`.
        enabled: When False every fetch goes to the network and nothing is stored.
    """

    def __init__(
        self, root: Path = DEFAULT_CACHE_DIR, *, offline: bool = False, enabled: bool = True
    ):
        self.root = Path(root)
        self.offline = offline
        self.enabled = enabled

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}, offline={self.offline}, enabled={self.enabled})"

    def path(self, key: str) -> Path:
        """File of an entry (two-level fan-out keeps folders small)."""
        return self.root / key[:2] / f"{key}.bin"

    def get(self, key: str) -> bytes | None:
        """Payload of an entry, or None when absent or corrupt (a corrupt file is removed)."""
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        header_len = len(_MAGIC) + 65
        digest, payload = raw[len(_MAGIC) : header_len - 1], raw[header_len:]
        if raw[: len(_MAGIC)] != _MAGIC or hashlib.sha256(payload).hexdigest().encode() != digest:
            path.unlink(missing_ok=True)
            return None
        return payload

    def put(self, key: str, payload: bytes) -> None:
        """Store an entry atomically (temporary file, then rename)."""
        if not self.enabled:
            return
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        digest = hashlib.sha256(payload).hexdigest().encode()
        with tmp.open("wb") as fh:
            fh.write(_MAGIC + digest + b"\n" + payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def fetch(
        self,
        key: str,
        download: Callable[[], bytes],
        *,
        what: str,
        check: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Payload from the cache, else from ``download`` (then stored).

        Args:
            key: Request key (see :func:`request_key`).
            download: Fetches the payload from the network.
            what: The request in words, for the offline error ("scene X band Y").
            check: Validates a payload (raise to reject); applied to downloads before they
                are stored and to cache hits, whose failure means a refetch.

        Raises:
            OfflineMissError: Offline and not cached.
        """
        cached = self.get(key)
        if cached is not None:
            try:
                if check is not None:
                    check(cached)
                return cached
            except Exception:  # any failed check means: fetch again
                self.path(key).unlink(missing_ok=True)
        if self.offline:
            raise OfflineMissError(
                f"offline run needs {what}, which is not in the cache at '{self.root}': "
                "run once without --offline to fill the cache"
            )
        payload = download()
        if check is not None:
            check(payload)
        self.put(key, payload)
        return payload

    def stats(self) -> CacheStats:
        """Number of entries and their total size."""
        files = [p for p in self.root.rglob("*.bin")] if self.root.exists() else []
        return CacheStats(self.root, len(files), sum(p.stat().st_size for p in files))

    def clear(self) -> CacheStats:
        """Delete every entry; returns what was deleted."""
        before = self.stats()
        if self.root.exists():
            shutil.rmtree(self.root)
        return before
