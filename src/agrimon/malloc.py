"""glibc's malloc, tuned for arrays of tens of MiB: its thresholds and trimming, once per process.

Elsewhere than on glibc (macOS, Windows, musl) every function here does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

#: glibc ``mallopt`` parameters.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: What :func:`keep_freed_memory` sets both thresholds to.
KEEP_BYTES = 256 << 20
#: glibc's own ceiling for its adaptive mmap threshold on 64-bit systems.
ADAPTIVE_MMAP_BYTES = 32 << 20


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """This process's C library if it is glibc (it has ``mallopt`` and ``malloc_trim``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # not glibc: musl has neither
        return None
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed blocks of up to 256 MiB (once per process).

    A forward pass allocates tens of MiB per layer. By default glibc maps blocks over 32 MiB
    afresh and returns freed heap tops to the system, so every layer of every window pays
    for zero-filled page faults: a third to half of the inference time on a CPU. Raising the
    mmap and trim thresholds keeps those blocks in the heap for the next window. The peak
    resident set stays what the passes need; up to 256 MiB freed stay resident.

    Returns:
        Whether the thresholds were set (glibc).
    """
    libc = glibc()
    if libc is None:
        return False
    libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)
    libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES)
    return True


@functools.cache
def adaptive_mmap_threshold() -> bool:
    """Undo what a set trim threshold does to glibc's mmap threshold (once per process).

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set (to give freed memory
    back to the system). Setting it also stops glibc from raising its mmap threshold above
    128 KiB as a process's arrays grow (glibc's rule), so every array of 128 KiB to 32 MiB
    is mapped and unmapped on its own: on a worker's first tile that cost 3.6 million page
    faults and about 8 s of system time, nearly doubling the tile (``bench/scaling.py``).
    Setting the threshold to glibc's own ceiling gives what glibc would have adapted to;
    the trim threshold still gives memory back. A threshold the user set is left alone.

    Returns:
        Whether the threshold was set (glibc, started with a trim threshold and no mmap
        threshold of its own).
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = glibc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, ADAPTIVE_MMAP_BYTES))


def release_freed_memory() -> None:
    """Hand the heap's free memory back to the system (glibc's ``malloc_trim``).

    Called when a tile or array is done, so that each starts from the same heap and the
    memory of many tiles stays that of one.
    """
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
