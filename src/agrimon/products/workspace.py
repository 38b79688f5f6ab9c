"""A run's work folder: the tiles it finished, kept until it publishes, and its lock.

Each tile's results are persisted into ``<out>/<aoi>/.<period>.work/`` as the run goes
(see :mod:`agrimon.tilework`). The folder survives a killed run (SIGKILL, a power cut) or a
failed one, so the same command resumes with the tiles already finished; it is removed once
the products are published, or when the user stops the run (Ctrl-C, SIGTERM), so that an
abandoned run leaves nothing behind.

The folder's ``lock`` file is held (``flock``) while a run works on it: a second run of the
same AOI and period fails at once with a message naming the first one's process, instead of
computing into the same tiles and publishing over it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agrimon.errors import ConfigError, InterruptedRun

#: Name suffix of a run's work folder beside its product folder.
WORK_SUFFIX = ".work"
LOCK = "lock"
#: Folder of the finished tiles' results inside a work folder (see ``agrimon.tilework``).
TILES_FOLDER = "tiles"


def work_folder(final: Path) -> Path:
    """The work folder of the run whose products go to ``final``."""
    return final.parent / f".{final.name}{WORK_SUFFIX}"


def check_unlocked(final: Path) -> None:
    """Raise a one-line ConfigError if another process is running into ``final`` now."""
    with run_lock(final, create=False):
        pass


@contextmanager
def run_lock(final: Path, *, create: bool = True) -> Iterator[Path]:
    """Hold the lock of ``final``'s work folder for the block; yield the work folder.

    Args:
        final: The run's product folder.
        create: Create the work folder (and its parents) if missing; without it, a missing
            folder means no run holds the lock and nothing is created.

    Raises:
        ConfigError: Another process holds the lock.
    """
    work = work_folder(final)
    if not create and not work.is_dir():
        yield work
        return
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(work / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(
                f"another agrimon run is writing {final} ({holder}): wait for it to finish, "
                "or stop it, before running the same AOI and period again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield work
    finally:
        os.close(fd)  # releases the flock


@contextmanager
def workspace(final: Path) -> Iterator[Path]:
    """The run's locked work folder for the block: kept on a failure, gone on success or stop.

    On success and on :class:`InterruptedRun` / ``KeyboardInterrupt`` (the user stopped the
    run) the folder is removed, and so are the parent folders it made that are still empty;
    on any other failure it is kept, when it holds a finished tile, so that the same command
    resumes from its tiles.
    """
    made = [p for p in (final.parent, *final.parent.parents) if not p.exists()]
    with run_lock(final) as work:
        try:
            yield work
        except BaseException as err:
            # A stop (Ctrl-C, SIGTERM, or Prefect's signals, which are BaseExceptions) is a
            # cancel; a failure keeps the tiles it finished, if any, for the rerun.
            stopped = isinstance(err, InterruptedRun) or not isinstance(err, Exception)
            if stopped or not _has_tiles(work):
                remove_work(final, made)
            raise
        remove_work(final, made)


def _has_tiles(work: Path) -> bool:
    """Whether the work folder holds a finished tile (its ``tiles/<key>/`` folders)."""
    tiles = work / TILES_FOLDER
    return tiles.is_dir() and any(not p.name.startswith(".") for p in tiles.iterdir())


def remove_work(final: Path, made: list[Path] | None = None) -> None:
    """Remove ``final``'s work folder, then the parents in ``made`` left empty."""
    shutil.rmtree(work_folder(final), ignore_errors=True)
    for folder in made or ():
        try:
            folder.rmdir()
        except OSError:
            return
