"""Cloud-Optimised GeoTIFF writer for mosaics assembled tile by tile."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rasterio._err import CPLE_BaseError
from rasterio.windows import Window

from agrimon.products.folder import writing

BLOCK_PX = 512


@dataclass(frozen=True)
class Layer:
    """What a single-band product raster holds.

    Attributes:
        name: File stem and catalog asset key, e.g. ``ndvi_median``.
        title: Human description, written as the band description.
        dtype: Numpy dtype name of the pixels.
        nodata: Value of pixels outside the AOI (NaN for floats).
        units: Units of the values (``1`` for indices).
        resampling: Overview resampling, ``average`` for continuous values, ``nearest`` for
            counts and classes.
    """

    name: str
    title: str
    dtype: str
    nodata: float
    units: str
    resampling: str = "average"


def window_of(grid: GeoBox, part: GeoBox) -> Window:
    """Pixel window of ``part`` inside ``grid`` (same CRS and pixel grid)."""
    col = (part.affine.c - grid.affine.c) / grid.affine.a
    row = (part.affine.f - grid.affine.f) / grid.affine.e
    if not (
        math.isclose(col, round(col), abs_tol=1e-6) and math.isclose(row, round(row), abs_tol=1e-6)
    ):
        raise ValueError(f"grid {part.affine} is not aligned with {grid.affine}")
    height, width = part.shape
    return Window(round(col), round(row), width, height)


class CogWriter:
    """Single-band COG assembled from pieces, one piece in memory at a time.

    Pieces go into a sparse tiled GeoTIFF beside the target (missing blocks read as nodata);
    :meth:`close` copies it through GDAL's COG driver with DEFLATE compression and
    overviews, then removes it. Use as a context manager; on an exception nothing is left.

    Args:
        path: Output file (``.tif``).
        grid: Pixel grid of the whole raster.
        layer: What the raster holds.
        tags: Extra dataset metadata (period, source, ...).
    """

    def __init__(
        self, path: Path, grid: GeoBox, layer: Layer, *, tags: Mapping[str, str] | None = None
    ):
        self.path = path
        self.grid = grid
        self.layer = layer
        self._scratch = path.with_suffix(".scratch.tif")
        with writing(path):
            self._dst = self._open(tags)

    def _open(self, tags: Mapping[str, str] | None) -> Any:
        grid, layer = self.grid, self.layer
        height, width = grid.shape
        dst = rasterio.open(
            self._scratch,
            "w",
            driver="GTiff",
            width=width,
            height=height,
            count=1,
            dtype=layer.dtype,
            crs=str(grid.crs.to_wkt()) if grid.crs is not None else None,
            transform=grid.affine,
            nodata=layer.nodata,
            tiled=True,
            blockxsize=BLOCK_PX,
            blockysize=BLOCK_PX,
            sparse_ok=True,
        )
        dst.set_band_description(1, layer.title)
        dst.units = (layer.units,)
        dst.update_tags(PRODUCT=layer.name, **dict(tags or {}))
        return dst

    def write(self, part: GeoBox, values: NDArray[np.generic]) -> None:
        """Write the pixels of ``part`` (a grid inside the whole raster's grid)."""
        with writing(self.path):
            self._dst.write(
                np.asarray(values, dtype=self.layer.dtype), 1, window=window_of(self.grid, part)
            )

    def close(self) -> Path:
        """Finish the COG and return its path."""
        with writing(self.path):
            self._dst.close()
            rasterio.shutil.copy(
                self._scratch,
                self.path,
                driver="COG",
                COMPRESS="DEFLATE",
                PREDICTOR="YES",
                BLOCKSIZE=BLOCK_PX,
                OVERVIEW_RESAMPLING=self.layer.resampling.upper(),
                NUM_THREADS="ALL_CPUS",
            )
        self._scratch.unlink()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        # Closing may fail again on a full disk; the file goes anyway, GDAL's complaint to
        # logging (an environment), not to the terminal.
        with rasterio.Env(), contextlib.suppress(rasterio.errors.RasterioError, CPLE_BaseError):
            self._dst.close()
        self._scratch.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> CogWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_cog(
    path: Path,
    grid: GeoBox,
    pieces: Iterable[tuple[GeoBox, NDArray[np.generic]]],
    layer: Layer,
    *,
    tags: Mapping[str, str] | None = None,
) -> Path:
    """Write pieces of a single-band raster into one COG (see :class:`CogWriter`)."""
    with CogWriter(path, grid, layer, tags=tags) as writer:
        for part, values in pieces:
            writer.write(part, values)
    return path
