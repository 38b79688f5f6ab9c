"""Atomic product folders: a run is published whole or not at all."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agrimon.errors import ProductError


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``final``; rename it into place on success.

    On any exception the temporary folder is removed and ``final`` is left as it was, so a
    crashed run never leaves a half product that looks whole. An existing ``final`` (a
    rerun) is replaced only once the new folder is complete.

    Args:
        final: Folder the products must end up in.

    Yields:
        The temporary folder to write into.
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProductError(
            f"cannot create output folder '{final.parent}': {err.strerror}; choose another --out"
        ) from err
    stage = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    publish(stage, final)


def publish(stage: Path, final: Path) -> None:
    """Move a complete ``stage`` folder to ``final``, replacing any previous run."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        final.rename(old)
    stage.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
