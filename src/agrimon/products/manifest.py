"""Provenance manifest of a run: inputs, scenes, parameters, code, models, times, checksums."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import agrimon

#: File name of the manifest inside a run folder.
MANIFEST_JSON = "manifest.json"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks.

    The catalog and then the manifest checksum the same products: a file whose path, inode,
    size and change times are unchanged is not read twice.
    """
    st = path.stat()
    return _sha256(str(path.resolve()), (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


@lru_cache(maxsize=4096)
def _sha256(path: str, version: tuple[int, int, int, int]) -> str:
    """Hex SHA-256 of ``path``; ``version`` only keys the cache."""
    del version
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> dict[str, str]:
    """Agrimon's version, and the git commit when running from a checkout."""
    info = {"agrimon": agrimon.__version__, "python": platform.python_version()}
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(agrimon.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return info
    if out.returncode == 0:
        info["git_commit"] = out.stdout.strip()
    return info


def model_entry(task: str, path: Path, sha256: str | None = None, **extra: Any) -> dict[str, Any]:
    """The manifest's record of one model checkpoint a run used.

    The checksum is that of the file itself when it exists, so the manifest names the bytes
    the run loaded; a different checksum claimed by its card is kept beside it as
    ``card_sha256`` rather than silently trusted.

    Args:
        task: What the model did (``invasive``, ``yield``).
        path: The checkpoint file (or the folder holding ``model.pt``).
        sha256: Hex SHA-256 as its model card states it, if known.
        **extra: More JSON-serialisable facts (feature set, architecture, crop...).

    Returns:
        ``{"task", "path", "sha256", "bytes", **extra}`` (and ``card_sha256`` on a mismatch).
    """
    file = path / "model.pt" if path.is_dir() else path
    entry: dict[str, Any] = {"task": task, "path": str(path)}
    if file.is_file():
        actual = sha256_file(file)
        entry |= {"sha256": actual, "bytes": file.stat().st_size}
        if sha256 is not None and sha256.lower() != actual:
            entry["card_sha256"] = sha256
    else:
        entry["sha256"] = sha256
    return {**entry, **extra}


class RunClock:
    """When a run started, and the seconds each of its stages took (for the manifest).

    Example::

        clock = RunClock()
        with clock.stage("tiles"):
            ...
        write_manifest(folder, record, started=clock.started, timings=clock.timings)
    """

    def __init__(self, started: datetime | None = None) -> None:
        self.started = started if started is not None else datetime.now(UTC)
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (a stage entered twice adds up)."""
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - begin


def _utc(moment: datetime) -> datetime:
    # A naive time is taken as UTC, as agrimon keeps its times.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def write_manifest(
    folder: Path,
    record: Mapping[str, Any],
    *,
    started: datetime | None = None,
    timings: Mapping[str, float] | None = None,
) -> Path:
    """Write ``manifest.json``: ``record`` plus code version, run times and file checksums.

    Args:
        folder: Run folder whose files are listed (all but the manifest itself).
        record: Inputs, parameters, source, models (:func:`model_entry`) and tiles with their
            scene ids (JSON-serialisable). The distinct scene ids of all tiles are added as
            ``scenes`` unless the record has them.
        started: When the run started (naive: UTC); ``finished`` is now.
        timings: Seconds spent per stage, in the order the stages ran.

    Returns:
        Path of ``manifest.json``.
    """
    finished = datetime.now(UTC)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_JSON)
    run: dict[str, Any] = {"finished": finished.isoformat(timespec="seconds")}
    if started is not None:
        run = {
            "started": _utc(started).isoformat(timespec="seconds"),
            **run,
            "seconds": round((finished - _utc(started)).total_seconds(), 3),
        }
    if timings is not None:
        run["stages"] = {name: round(float(s), 3) for name, s in timings.items()}
    manifest: dict[str, Any] = dict(record)
    if "scenes" not in manifest and "tiles" in manifest:
        # A tile's scenes are ids, or objects with an ``id`` (and cloud cover, say).
        manifest["scenes"] = sorted(
            {
                str(s["id"] if isinstance(s, Mapping) else s)
                for tile in manifest["tiles"]
                for s in tile.get("scenes", ())
            }
        )
    manifest |= {
        "code": code_version(),
        "created": run["finished"],
        "run": run,
        "files": {
            p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in files
        },
    }
    path = folder / MANIFEST_JSON
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return path
