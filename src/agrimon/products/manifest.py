"""Provenance manifest of a run: inputs, scenes, parameters, code version, checksums."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import agrimon


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
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


def write_manifest(folder: Path, record: Mapping[str, Any]) -> Path:
    """Write ``manifest.json``: ``record`` plus code version, time and product checksums.

    Args:
        folder: Run folder whose files are listed (all but the manifest itself).
        record: Inputs, parameters and scenes of the run (JSON-serialisable).

    Returns:
        Path of ``manifest.json``.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        **record,
        "code": code_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {
            str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in files
        },
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return path
