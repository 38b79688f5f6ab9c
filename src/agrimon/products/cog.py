"""Cloud-Optimised GeoTIFF writer for mosaics assembled tile by tile."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

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
        palette: RGBA colours of the pixel values 0, 1, 2, … of a class raster (a GDAL colour
            table, stored in the COG itself); empty for continuous values. Only for ``uint8``
            and ``uint16`` rasters.
        categories: Names of the pixel values 0, 1, 2, … of a class raster (``""`` for an
            unnamed value such as nodata). GDAL keeps category names in a ``.aux.xml``
            sidecar beside the COG, which QGIS and GDAL read; the names are also written into
            the COG as the band tag ``CATEGORY_NAMES`` (a JSON list).
    """

    name: str
    title: str
    dtype: str
    nodata: float
    units: str
    resampling: str = "average"
    palette: tuple[tuple[int, int, int, int], ...] = ()
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.palette and self.dtype not in ("uint8", "uint16"):
            raise ValueError(f"a palette needs a uint8 or uint16 raster, not {self.dtype}")
        if any(len(c) != 4 or not all(0 <= v <= 255 for v in c) for c in self.palette):
            raise ValueError("palette entries are (red, green, blue, alpha), each 0..255")


def _pam_categories(names: tuple[str, ...]) -> str:
    """GDAL's sidecar (``.aux.xml``) text naming band 1's pixel values ``0, 1, …``."""
    items = "".join(f"<Category>{escape(n)}</Category>" for n in names)
    return (
        '<PAMDataset><PAMRasterBand band="1">'
        f"<CategoryNames>{items}</CategoryNames>"
        "</PAMRasterBand></PAMDataset>\n"
    )


def _sidecar(path: Path) -> Path:
    """GDAL's auxiliary metadata file of ``path``."""
    return path.with_name(path.name + ".aux.xml")


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
        if layer.palette:
            dst.write_colormap(1, dict(enumerate(layer.palette)))
        if layer.categories:
            dst.update_tags(1, CATEGORY_NAMES=json.dumps(list(layer.categories)))
        return dst

    def write(self, part: GeoBox, values: NDArray[np.generic]) -> None:
        """Write the pixels of ``part`` (a grid inside the whole raster's grid)."""
        with writing(self.path):
            self._dst.write(
                np.asarray(values, dtype=self.layer.dtype), 1, window=window_of(self.grid, part)
            )

    def close(self) -> Path:
        """Finish the COG and return its path (and its ``.aux.xml`` for category names)."""
        with writing(self.path):
            self._dst.close()
            if self.layer.categories:
                # The COG driver carries the colour table over itself, category names only
                # from the source's sidecar into the target's.
                _sidecar(self._scratch).write_text(_pam_categories(self.layer.categories))
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
        _sidecar(self._scratch).unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        # Closing may fail again on a full disk; the file goes anyway, GDAL's complaint to
        # logging (an environment), not to the terminal.
        with rasterio.Env(), contextlib.suppress(rasterio.errors.RasterioError, CPLE_BaseError):
            self._dst.close()
        self._scratch.unlink(missing_ok=True)
        _sidecar(self._scratch).unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        if self.layer.categories:
            _sidecar(self.path).unlink(missing_ok=True)

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
