"""Atomic product folders: a run is published whole or not at all, and leaves nothing else.

A run writes into a hidden staging folder beside its target, ``.<name>.partial-<pid>-<id>``,
and renames it into place when complete. On any failure (an exception, Ctrl-C) the staging
folder is removed, and so are the parent folders the run created; a run killed outright
(SIGKILL, a power cut) leaves its staging folder behind, and the next run of the same AOI
and period removes it once its process is gone.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from agrimon.errors import AgrimonError, ProductError

# Errors of the file system a user can do something about (space, permissions, limits).
_DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file is larger than the file system allows",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "an input/output error occurred",
}
#: GDAL's block cache while products are written, MB: enough for a COG's overviews.
GDAL_CACHE_MB = 64
# Free space below which a failed write is put down to a full disk.
_FULL_BYTES = 4 << 20
_STAGE = re.compile(r"\.(?P<name>.+)\.(?:partial|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}")


def check_output_folder(final: Path, *, needs_bytes: int = 0) -> None:
    """Raise a one-line ProductError unless a run could create and fill ``final``.

    Nothing is created: the nearest existing ancestor of ``final`` must be a folder this
    process can write into, with ``needs_bytes`` free, and neither ``final`` nor anything
    between must be a file.
    """
    for folder in (final, *final.parents):
        if not folder.exists() and not folder.is_symlink():
            continue
        if not folder.is_dir():
            raise ProductError(
                f"output folder '{folder}' is a file, not a folder: choose another --out"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ProductError(
                f"output folder '{folder}' is not writable: choose another --out or fix "
                "its permissions"
            )
        free = shutil.disk_usage(folder).free
        if free < needs_bytes:
            raise ProductError(
                f"the products need about {_mib(needs_bytes)} while writing but '{folder}' has "
                f"{_mib(free)} free: free space or choose another --out"
            )
        return


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``final``; rename it into place on success.

    On any exception the temporary folder is removed, and the parents of ``final`` this
    call created too, and ``final`` is left as it was, so a crashed run never leaves a half
    product that looks whole. An existing ``final`` (a rerun) is replaced only once the new
    folder is complete. A file system error (full disk, permissions) becomes a one-line
    :class:`ProductError`.

    Args:
        final: Folder the products must end up in.

    Yields:
        The temporary folder to write into.
    """
    check_output_folder(final)
    created = [p for p in (final.parent, *final.parent.parents) if not p.exists()]
    stage = final.parent / f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_stages(final)
        stage.mkdir()
    except OSError as err:
        _remove_empty(created)
        raise _disk_error(err, final) from err
    try:
        yield stage
        publish(stage, final)
    except BaseException as err:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_empty(created)
        if isinstance(err, ProductError) and str(stage) in str(err):
            # Name the folder the user asked for, not the hidden staging folder.
            raise ProductError(str(err).replace(str(stage), str(final))) from err
        if isinstance(err, OSError) and not isinstance(err, AgrimonError):
            raise _disk_error(err, final) from err
        raise


def publish(stage: Path, final: Path) -> None:
    """Move a complete ``stage`` folder to ``final``, replacing any previous run."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        final.rename(old)
    stage.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_stages(final: Path) -> list[Path]:
    """Remove what killed runs of ``final`` left beside it (their process is gone).

    Only this folder's own hidden ``.partial-``/``.old-`` siblings are touched, never
    anything else in the parent folder.

    Returns:
        The folders removed.
    """
    removed = []
    for path in final.parent.glob(f".{glob_escape(final.name)}.*-*"):
        match = _STAGE.fullmatch(path.name)
        if match is None or match["name"] != final.name or not path.is_dir():
            continue
        pid = match["pid"]
        if pid is not None and pid_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process included): whose stale files to keep."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders (deepest first) that are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failure to write ``path`` (GDAL, OGR or the OS) into a one-line ProductError.

    GDAL's own messages go to Python's logging meanwhile (a rasterio environment), not
    straight to standard error, and its block cache is :data:`GDAL_CACHE_MB`.
    """
    import pyogrio.errors
    import rasterio
    import rasterio.errors
    from rasterio._err import CPLE_BaseError

    try:
        # A fixed block cache: GDAL's default (5 % of RAM) lets a COG's overviews take as
        # much memory as the mosaic, so memory would grow with the AOI and the machine.
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            yield
    except (
        OSError,
        rasterio.errors.RasterioError,
        CPLE_BaseError,
        pyogrio.errors.DataSourceError,
        pyogrio.errors.DataLayerError,
    ) as err:
        if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
            reason = _DISK_ERRNOS[err.errno]
        else:
            reason = " ".join(str(err).split()) or type(err).__name__
            with suppress(OSError):
                if shutil.disk_usage(path.parent).free < _FULL_BYTES:
                    reason = _DISK_ERRNOS[errno.ENOSPC]
        raise ProductError(
            f"cannot write '{path.name}' in '{path.parent}' ({reason}): free space, fix the "
            "folder's permissions or choose another --out"
        ) from err


def _disk_error(err: OSError, final: Path) -> ProductError:
    reason = _DISK_ERRNOS.get(err.errno or 0, err.strerror or type(err).__name__)
    where = f" ({err.filename})" if err.filename else ""
    return ProductError(
        f"cannot write the products into '{final.parent}': {reason}{where}; free space, fix "
        "the permissions or choose another --out"
    )
