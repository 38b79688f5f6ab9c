"""Benchmark: agrimon's encroachment-map inference against a naive torchgeo loop.

Writes a synthetic feature raster to a temporary folder — ``SIDE`` × ``SIDE`` px at 10 m
(419 km²) in EPSG:32733 on the global grid, one float32 band per model input channel,
smooth random values (a few separable sinusoids per band), a patch with no data (NaN) —
then maps it twice in this process:

1. **naive**: torchgeo's ``RasterDataset`` of the raster, a ``GridGeoSampler`` of
   ``NAIVE_PX`` chips without overlap, a ``DataLoader`` with batch size 1 and
   ``stack_samples``, the model in eval mode under ``torch.no_grad`` one chip at a time,
   the softmax pasted into a whole-raster array (no halo: seams at the chip borders);
2. **agrimon**: ``predict_raster`` — tiles with their halo, blended windows (overlap on),
   batches under ``torch.inference_mode`` with batch norms folded — writing the class,
   probability and uncertainty COGs.

Both runs use the default thread count (``torch.get_num_threads()``); the naive one runs
first, before agrimon raises glibc's malloc thresholds for the process. Then it maps a
raster of one tile (``SMALL`` px) and the 4× larger one with ``predict_raster`` in fresh
processes (``multiprocessing``
spawn), each reporting its peak resident set above the one it started with (the kernel's
``VmHWM``, reset through ``/proc/self/clear_refs`` once the model is warm, or a 20 ms
sampler where that is not available): memory must depend on the tile, not on the raster.

Prints the machine (CPU model, numpy's SIMD features, threads, versions), the agreement of
the two class maps, and ends with ``speedup`` (naive time / agrimon time, higher is
better), ``km2_per_s`` (agrimon) and ``memory_small_mb`` / ``memory_large_mb``.

The model is the shipped checkpoint ``models/invasive-demo.pt`` when it exists, else
:func:`fallback_model` (the demo architecture with random weights: speed does not depend on
the weights).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
import torchgeo
from affine import Affine
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import GridGeoSampler

from agrimon.invasive import predict
from agrimon.invasive.card import load_checkpoint
from agrimon.invasive.model import ModelConfig, build_classifier
from agrimon.invasive.predict import predict_raster
from bench._measure import cpu_and_simd, in_child, peak_rss_increase

#: Raster side: 2048 px at 10 m (419 km²) for throughput and the large memory run, one
#: tile (1024 px, 105 km²) for the small one.
SIDE, SMALL = 2048, 1024
RES = 10.0
#: Top-left corner on the global 10 m grid, UTM 33S (northern Namibia).
ORIGIN = (600_000.0, 8_000_000.0)
CRS = "EPSG:32733"
CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "invasive-demo" / "model.pt"
#: agrimon's settings: predict_raster's defaults.
TILE_PX, WINDOW, OVERLAP, BATCH = 1024, predict.WINDOW, predict.OVERLAP, predict.BATCH_SIZE
#: The naive loop's chip side.
NAIVE_PX = 128


# --- model ----------------------------------------------------------------------------


def fallback_model() -> tuple[nn.Module, ModelConfig, tuple[str, ...], str]:
    """The demo architecture with random weights, until the shipped checkpoint exists."""
    config = ModelConfig("tempcnn-unet", steps=6, per_step=12, static=9, classes=2)
    torch.manual_seed(0)
    model = build_classifier(config, torch.zeros(config.channels), torch.ones(config.channels))
    return model.eval(), config, ("other", "encroached"), "encroached"


def shipped_model() -> tuple[nn.Module, ModelConfig, tuple[str, ...], str, str]:
    """Model, config, classes, target class and where they came from."""
    if CHECKPOINT.exists():
        loaded = load_checkpoint(CHECKPOINT)
        return loaded.model, loaded.config, loaded.classes, loaded.target, str(CHECKPOINT)
    return (*fallback_model(), "fallback_model() (no models/invasive-demo.pt yet)")


# --- input ----------------------------------------------------------------------------


def write_features(path: Path, side: int, channels: int) -> None:
    """Smooth random float32 features, ``channels`` bands, a NaN patch; tiled, uncompressed."""
    rng = np.random.default_rng(7)
    yy = np.arange(side, dtype=np.float32)[:, None]
    xx = np.arange(side, dtype=np.float32)[None, :]
    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": channels,
        "dtype": "float32",
        "crs": CRS,
        "transform": Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]),
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "interleave": "band",
    }
    gap = slice(side // 3, side // 3 + side // 10)
    with rasterio.open(path, "w", **profile) as dst:
        for band in range(1, channels + 1):
            values = np.zeros((side, side), dtype=np.float32)
            for _ in range(3):
                fy, fx = rng.uniform(0.002, 0.05, size=2)
                py, px = rng.uniform(0, 2 * np.pi, size=2)
                values += rng.normal() * np.sin(fy * yy + py) * np.cos(fx * xx + px)
            values[gap, gap] = np.nan
            dst.write(values, band)


# --- the two ways -----------------------------------------------------------------------


def naive(model: nn.Module, path: Path) -> NDArray[np.float32]:
    """The torchgeo tutorial's loop: grid chips, batch size 1, paste the outputs."""
    dataset = RasterDataset(paths=str(path))
    sampler = GridGeoSampler(dataset, size=NAIVE_PX, stride=NAIVE_PX)
    loader = DataLoader(dataset, sampler=sampler, batch_size=1, collate_fn=stack_samples)
    with rasterio.open(path) as src:
        height, width, transform = src.height, src.width, src.transform
    out: NDArray[np.float32] | None = None
    model.eval()
    with torch.no_grad():
        for batch in loader:
            probs = torch.softmax(model(batch["image"]), dim=1)[0].numpy()
            if out is None:
                out = np.full((probs.shape[0], height, width), np.nan, dtype=np.float32)
            x_slice, y_slice, _ = batch["bounds"][0]
            col, row = ~transform * (x_slice.start, y_slice.stop)
            r, c = round(row), round(col)
            out[:, r : r + probs.shape[1], c : c + probs.shape[2]] = probs
    assert out is not None
    return out


def agrimon(
    model: nn.Module, config: ModelConfig, classes: tuple[str, ...], target: str, path: Path
) -> dict[str, Path]:
    """predict_raster with blending on, into a folder beside the input."""
    return predict_raster(
        model,
        path,
        path.parent / f"{path.stem}-products",
        classes=classes,
        target=target,
        halo=config.halo,
        tile_px=TILE_PX,
        window=WINDOW,
        overlap=OVERLAP,
        batch_size=BATCH,
    )


# --- measuring ------------------------------------------------------------------------


def memory_phase(path: Path) -> tuple[int, float]:
    """Map ``path`` in this (fresh) process: ``(peak RSS increase in bytes, seconds)``."""
    model, config, classes, target, _ = shipped_model()
    # Warm up first: the first forward pass allocates oneDNN's caches once per process.
    with torch.inference_mode():
        model(torch.zeros(1, config.channels, WINDOW, WINDOW))
    memory: dict[str, int] = {}
    with peak_rss_increase(memory):
        start = time.perf_counter()
        agrimon(model, config, classes, target, path)
        seconds = time.perf_counter() - start
    return memory["peak"], seconds


def machine() -> str:
    """CPU model, numpy's SIMD features found, threads and versions."""
    return (
        f"{cpu_and_simd()} threads={torch.get_num_threads()} "
        f"torch={torch.__version__} torchgeo={torchgeo.__version__} numpy={np.__version__} "
        f"rasterio={rasterio.__version__} gdal={rasterio.__gdal_version__}"
    )


def main() -> None:
    model, config, classes, target, source = shipped_model()
    print(machine())
    print(f"model: {config.name} ({config.channels} channels, halo {config.halo}) from {source}")
    with tempfile.TemporaryDirectory(prefix="agrimon-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        path = folder / "features.tif"
        write_features(path, SIDE, config.channels)
        km2 = SIDE * SIDE * RES * RES / 1e6
        print(
            f"input: {SIDE}x{SIDE} px x {config.channels} bands float32 = {km2:.0f} km2, "
            f"{path.stat().st_size / 2**20:.0f} MiB, written in {time.perf_counter() - start:.1f} s"
        )
        # Warm both up (oneDNN initialisation) so neither pays it.
        with torch.no_grad():
            model(torch.zeros(1, config.channels, NAIVE_PX, NAIVE_PX))
        start = time.perf_counter()
        ref = naive(model, path)
        t_naive = time.perf_counter() - start
        start = time.perf_counter()
        products = agrimon(model, config, classes, target, path)
        t_agri = time.perf_counter() - start
        with rasterio.open(products["invasive_class"]) as src:
            got = src.read(1)
        valid = got != 0  # pixels with features (the naive map has none missing)
        agree = float(np.mean(got[valid] == ref[:, valid].argmax(axis=0) + 1))
        small = folder / "features-small.tif"
        write_features(small, SMALL, config.channels)
        sizes = {SMALL: in_child(memory_phase, small), SIDE: in_child(memory_phase, path)}
    print(
        f"naive: torchgeo GridGeoSampler {NAIVE_PX} px chips, stride {NAIVE_PX}, batch 1, "
        f"no_grad; agrimon: tile {TILE_PX}, window {WINDOW}, overlap {OVERLAP}, batch {BATCH}"
    )
    print(f"naive_s={t_naive:.2f} agrimon_s={t_agri:.2f} class_agreement={agree:.4f}")
    for side, (peak, seconds) in sizes.items():
        print(
            f"memory run: {side}x{side} px = {side * side * RES * RES / 1e6:.0f} km2, "
            f"{seconds:.1f} s, peak RSS increase {peak / 2**20:.0f} MiB"
        )
    (m_small, _), (m_large, _) = sizes[SMALL], sizes[SIDE]
    print(f"speedup={t_naive / t_agri:.2f}")
    print(f"km2_per_s={km2 / t_agri:.2f}")
    print(f"memory_small_mb={m_small / 2**20:.0f}")
    print(f"memory_large_mb={m_large / 2**20:.0f}")
    print(f"memory_ratio={m_large / m_small:.3f}")


if __name__ == "__main__":
    main()
