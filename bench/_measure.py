"""What the benchmarks measure with: a fresh process per phase and its peak memory."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # comes with dask[distributed]


def _vm_hwm() -> int:
    """The process's peak resident set (bytes) since start or the last reset."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


@contextmanager
def peak_rss_increase(result: dict[str, int]) -> Iterator[None]:
    """Put the peak resident set above the starting one (bytes) in ``result["peak"]``."""
    proc = psutil.Process()
    start = proc.memory_info().rss
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
        _vm_hwm()
        kernel = True
    except OSError:
        kernel = False
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = None if kernel else threading.Thread(target=sample, daemon=True)
    if sampler is not None:
        sampler.start()
    try:
        yield
    finally:
        stop.set()
        if sampler is not None:
            sampler.join()
        top = _vm_hwm() if kernel else max(peak[0], proc.memory_info().rss)
        result["peak"] = max(top - start, 0)


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh spawned process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def cpu_and_simd() -> str:
    """``cpu='…' simd=…``: the CPU model and the SIMD features numpy found on it."""
    import importlib
    import platform

    try:
        umath = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:  # numpy < 2
        umath = importlib.import_module("numpy.core._multiarray_umath")
    features: dict[str, bool] = umath.__cpu_features__
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [x for x in info.read_text().splitlines() if x.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    simd = " ".join(
        k for k in ("SSE42", "AVX", "AVX2", "FMA3", "AVX512F", "AVX512_BF16") if features.get(k)
    )
    # Kernels numpy was told not to dispatch to (e.g. AVX-512, to measure as on AVX2 alone).
    disabled = os.environ.get("NPY_DISABLE_CPU_FEATURES", "").strip()
    return f"cpu={cpu!r} simd={simd}" + (f" numpy_disabled={disabled!r}" if disabled else "")
