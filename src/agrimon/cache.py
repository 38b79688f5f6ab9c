"""On-disk cache of remote responses: keyed by a hash of the request, atomic, verified.

Agencies on patchy, metered links should never download the same thing twice: every remote
response (search pages, scene pixels, Sentinel Hub replies) goes through :meth:`Cache.fetch`.
Entries are written to a temporary file and renamed into place, and carry the SHA-256 of
their payload, checked on every read: a corrupt entry is discarded and fetched again. With
``offline=True`` nothing is fetched, and a miss or a corrupt entry is a clear error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agrimon.errors import ConfigError, SourceError

#: Default cache folder, relative to the working directory (the project's ``data/``).
DEFAULT_CACHE_DIR = Path("data") / "cache"
_MAGIC = b"agrimon-cache-1\n"
#: The tag marking a folder as agrimon's cache (bford.info/cachedir: backup tools skip it).
TAG_NAME = "CACHEDIR.TAG"
TAG_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
TAG_TEXT = (
    f"{TAG_SIGNATURE}\n# This file is a cache directory tag created by agrimon: the folder\n"
    "# holds agrimon's cached remote responses (see `agrimon cache info`).\n"
)
_ENTRY = re.compile(r"[0-9a-f]{64}\.bin")
_TMP = re.compile(r"\.[0-9a-f]{64}\.bin\.[0-9a-f]{8}\.tmp")


def request_key(*parts: Any) -> str:
    """Stable hex key of a request from JSON-serialisable parts (order of dict keys ignored)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class OfflineMissError(SourceError):
    """An offline run needed something that is not in the cache."""


class CorruptCacheError(OfflineMissError):
    """An offline run needed a cache entry that is there but corrupt (cannot be refetched)."""


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
        payload, problem = self._read(key)
        if problem is not None:
            self.path(key).unlink(missing_ok=True)
        return payload

    def _read(self, key: str) -> tuple[bytes | None, str | None]:
        """``(payload, None)``, ``(None, None)`` when absent, ``(None, why)`` when corrupt."""
        if not self.enabled:
            return None, None
        try:
            raw = self.path(key).read_bytes()
        except FileNotFoundError:
            return None, None
        header_len = len(_MAGIC) + 65
        digest, payload = raw[len(_MAGIC) : header_len - 1], raw[header_len:]
        if raw[: len(_MAGIC)] != _MAGIC:
            return None, "not an agrimon cache entry"
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            return None, "checksum mismatch"
        return payload, None

    def put(self, key: str, payload: bytes) -> None:
        """Store an entry atomically (temporary file, then rename)."""
        if not self.enabled:
            return
        self._claim()
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
            CorruptCacheError: Offline and the cached copy is corrupt (bad checksum or
                failing ``check``); it is left in place for a later online run to replace.
        """
        cached, problem = self._read(key)
        if cached is not None and check is not None:
            try:
                check(cached)
            except Exception as err:  # any failed check means: fetch again
                cached, problem = None, _reason(err)
        if cached is not None:
            return cached
        if self.offline and problem is not None:
            raise CorruptCacheError(
                f"the cached copy of {what} at '{self.path(key)}' is corrupt ({problem}): "
                "run once without --offline to fetch it again"
            )
        if problem is not None:
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
        """Number of entries and their total size (0 for a cache not created yet).

        Raises:
            ConfigError: ``root`` is a file, or a folder that is not an agrimon cache.
        """
        self.check()
        files = list(self._entries())
        return CacheStats(self.root, len(files), sum(p.stat().st_size for p in files))

    def clear(self) -> CacheStats:
        """Delete every entry, and nothing else; returns what was deleted.

        Only files named like entries (and their temporary files) in the fan-out folders
        are removed, then those folders if empty; the cache folder, its tag and anything
        else in it stay.

        Raises:
            ConfigError: ``root`` is a file, or a folder that is not an agrimon cache (it
                is left untouched).
        """
        before = self.stats()
        for path in [*self._entries(), *self.root.glob("[0-9a-f][0-9a-f]/.*.bin.*.tmp")]:
            path.unlink(missing_ok=True)
        for fan in self.root.glob("[0-9a-f][0-9a-f]"):
            with contextlib.suppress(OSError):  # not empty: something of someone else's
                fan.rmdir()
        return before

    def check(self, *, for_writing: bool = False) -> None:
        """Raise a one-line ConfigError unless ``root`` is (or can become) this cache.

        Args:
            for_writing: Also require that entries can be written (a writable folder, or
                a writable place to create it).
        """
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(
                f"--cache-dir '{self.root}' is a file, not a folder: give a folder for the "
                f"cache (default {DEFAULT_CACHE_DIR})"
            )
        if self.root.is_dir() and not is_cache_folder(self.root):
            raise ConfigError(
                f"--cache-dir '{self.root}' holds other files and is not an agrimon cache: "
                f"give an empty or new folder for the cache (default {DEFAULT_CACHE_DIR})"
            )
        if for_writing:
            existing = next(p for p in (self.root, *self.root.parents) if p.exists())
            if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                raise ConfigError(
                    f"--cache-dir '{self.root}' cannot be written ('{existing}' is not a "
                    "writable folder): choose another --cache-dir, or --no-cache"
                )

    def _entries(self) -> Iterator[Path]:
        """The entry files of the cache (none when it does not exist yet)."""
        for path in self.root.glob("[0-9a-f][0-9a-f]/*.bin"):
            if _ENTRY.fullmatch(path.name) and path.name.startswith(path.parent.name):
                yield path

    def _claim(self) -> None:
        """Create ``root`` with its tag, or tag an untagged cache; refuse a foreign folder."""
        tag = self.root / TAG_NAME
        if tag.exists():
            return
        self.check()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{TAG_NAME}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(TAG_TEXT)
        os.replace(tmp, tag)


def is_cache_folder(folder: Path) -> bool:
    """Whether ``folder`` is an agrimon cache: tagged, empty, or holding only entries.

    A cache is tagged with a ``CACHEDIR.TAG`` (the Cache Directory Tagging convention, so
    backup tools skip it) naming agrimon; caches made before the tag existed are
    recognised by holding nothing but fan-out folders of entries.
    """
    tag = folder / TAG_NAME
    if tag.is_file():
        with contextlib.suppress(OSError):
            head = tag.read_bytes()[:512]
            return head.startswith(TAG_SIGNATURE.encode()) and b"agrimon" in head
        return False
    for child in folder.iterdir():
        if not (child.is_dir() and re.fullmatch(r"[0-9a-f]{2}", child.name)):
            return False
        for entry in child.iterdir():
            if not (_ENTRY.fullmatch(entry.name) or _TMP.fullmatch(entry.name)):
                return False
    return True


def _reason(err: BaseException) -> str:
    """One short line saying why a cached payload failed its check."""
    text = " ".join(str(err).split())[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
