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
#: Overview resampling methods of GDAL's COG driver a :class:`Layer` may name.
RESAMPLINGS = frozenset(
    ("nearest", "average", "mode", "bilinear", "cubic", "cubicspline", "lanczos", "rms")
)


@dataclass(frozen=True)
class Layer:
    """What a single-band product raster holds.

    Attributes:
        name: File stem and catalog asset key, e.g. ``ndvi_median``.
        title: Human description, written as the band description.
        dtype: Numpy dtype name of the pixels.
        nodata: Value of pixels outside the AOI (NaN for floats).
        units: Units of the values (``1`` for indices).
        resampling: Overview resampling (one of :data:`RESAMPLINGS`): ``average`` for
            continuous values, ``nearest`` for counts, ``mode`` for classes (the majority of
            each block, not whichever pixel happens to sit at its corner).
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
        if self.resampling not in RESAMPLINGS:
            raise ValueError(
                f"resampling {self.resampling!r} is not one of {', '.join(sorted(RESAMPLINGS))}"
            )
        if self.palette and self.dtype not in ("uint8", "uint16"):
            raise ValueError(f"a palette needs a uint8 or uint16 raster, not {self.dtype}")
        if any(len(c) != 4 or not all(0 <= v <= 255 for v in c) for c in self.palette):
            raise ValueError("palette entries are (red, green, blue, alpha), each 0..255")


@dataclass(frozen=True)
class BandStatistics:
    """Statistics of a raster's valid pixels (nodata and NaN left out), as GDAL keeps them.

    Attributes:
        pixels: All pixels of the raster.
        valid: Pixels holding a value.
        minimum: Smallest value (``None`` without valid pixels, as are the others).
        maximum: Largest value.
        mean: Mean value.
        stddev: Population standard deviation (``ddof=0``, as GDAL's).
    """

    pixels: int
    valid: int
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    stddev: float | None = None

    @property
    def valid_percent(self) -> float:
        """Percentage of the raster's pixels holding a value."""
        return 100.0 * self.valid / self.pixels if self.pixels else 0.0

    def gdal_metadata(self) -> dict[str, str]:
        """GDAL's band metadata items (``STATISTICS_*``), which ``gdalinfo`` and QGIS read."""
        items = {"STATISTICS_VALID_PERCENT": repr(self.valid_percent)}
        if self.valid:
            # repr: the shortest text that reads back to the same float64.
            items |= {
                "STATISTICS_MINIMUM": repr(self.minimum),
                "STATISTICS_MAXIMUM": repr(self.maximum),
                "STATISTICS_MEAN": repr(self.mean),
                "STATISTICS_STDDEV": repr(self.stddev),
            }
        return items


def read_statistics(path: Path) -> BandStatistics | None:
    """Band 1's statistics as stored in a raster's GDAL metadata; ``None`` if it has none."""
    with rasterio.open(path) as src:
        tags = src.tags(1)
        pixels = src.width * src.height
    if "STATISTICS_VALID_PERCENT" not in tags:
        return None
    valid = round(float(tags["STATISTICS_VALID_PERCENT"]) * pixels / 100.0)

    def item(name: str) -> float | None:
        # Another tool may have stored only some of the items.
        text = tags.get(f"STATISTICS_{name}")
        return float(text) if valid and text is not None else None

    return BandStatistics(
        pixels,
        valid,
        minimum=item("MINIMUM"),
        maximum=item("MAXIMUM"),
        mean=item("MEAN"),
        stddev=item("STDDEV"),
    )


class _Running:
    """Count, mean, sum of squared deviations, minimum and maximum over pieces, float64.

    Pieces are merged with Chan et al.'s pairwise update, which stays accurate where a
    running sum of squares would cancel (large mean, small spread).
    """

    def __init__(self, nodata: float) -> None:
        self.nodata = nodata
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, values: NDArray[np.generic]) -> None:
        data = np.asarray(values)
        valid = np.ones(data.shape, dtype=bool)
        if np.issubdtype(data.dtype, np.floating):
            valid &= ~np.isnan(data)
        if not math.isnan(self.nodata):
            valid &= data != self.nodata
        picked = data[valid].astype(np.float64)
        n = int(picked.size)
        if n == 0:
            return
        mean = float(picked.mean())
        m2 = float(np.square(picked - mean).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.minimum = min(self.minimum, float(picked.min()))
        self.maximum = max(self.maximum, float(picked.max()))

    def result(self, pixels: int) -> BandStatistics:
        if not self.count:
            return BandStatistics(pixels, 0)
        return BandStatistics(
            pixels,
            self.count,
            minimum=self.minimum,
            maximum=self.maximum,
            mean=self.mean,
            stddev=math.sqrt(self.m2 / self.count),
        )


def _overlaps(a: Window, b: Window) -> bool:
    cols = int(a.col_off) < int(b.col_off + b.width) and int(b.col_off) < int(a.col_off + a.width)
    rows = int(a.row_off) < int(b.row_off + b.height) and int(b.row_off) < int(a.row_off + a.height)
    return cols and rows


def _blocks(window: Window) -> list[tuple[int, int]]:
    """The ``BLOCK_PX`` blocks a window touches (an index: windows only meet inside one)."""
    row0, col0 = int(window.row_off), int(window.col_off)
    row1, col1 = row0 + int(window.height) - 1, col0 + int(window.width) - 1
    return [
        (r, c)
        for r in range(row0 // BLOCK_PX, row1 // BLOCK_PX + 1)
        for c in range(col0 // BLOCK_PX, col1 // BLOCK_PX + 1)
    ]


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

    Band 1's statistics (minimum, maximum, mean, standard deviation, valid percent) are
    accumulated exactly from the pieces as they are written and stored in the COG's own
    GDAL metadata, where ``gdalinfo`` and QGIS find them; :attr:`statistics` has them
    after :meth:`close`.

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
        self._running = _Running(layer.nodata)
        self._written: dict[tuple[int, int], list[Window]] = {}  # by block
        self._overlap = False
        self._statistics: BandStatistics | None = None
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
        window = window_of(self.grid, part)
        pixels = np.asarray(values, dtype=self.layer.dtype)
        with writing(self.path):
            self._dst.write(pixels, 1, window=window)
        if not self._overlap:
            # A rewritten pixel would be counted twice: then close() reads the file instead.
            blocks = _blocks(window)
            self._overlap = any(
                _overlaps(window, w) for b in blocks for w in self._written.get(b, ())
            )
            for b in blocks:
                self._written.setdefault(b, []).append(window)
            self._running.add(pixels)

    @property
    def statistics(self) -> BandStatistics:
        """Statistics of the finished raster's valid pixels (after :meth:`close`)."""
        if self._statistics is None:
            raise RuntimeError(f"{self.path} is not finished: statistics come with close()")
        return self._statistics

    def _scratch_statistics(self) -> BandStatistics:
        """Statistics read back from the closed scratch file, block by block."""
        running = _Running(self.layer.nodata)
        with rasterio.open(self._scratch) as src:
            for _, window in src.block_windows(1):
                running.add(src.read(1, window=window))
            return running.result(src.width * src.height)

    def close(self) -> Path:
        """Finish the COG and return its path (and its ``.aux.xml`` for category names)."""
        height, width = self.grid.shape
        with writing(self.path):
            if self._overlap:
                self._dst.close()
                stats = self._scratch_statistics()
                with rasterio.open(self._scratch, "r+") as dst:
                    dst.update_tags(1, **stats.gdal_metadata())
            else:
                stats = self._running.result(height * width)
                # Band metadata of a GeoTIFF goes into its GDAL_METADATA tag, which the COG
                # driver copies: the statistics live inside the COG, no sidecar needed.
                self._dst.update_tags(1, **stats.gdal_metadata())
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
        self._statistics = stats
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


def write_geotiff(
    path: Path,
    grid: GeoBox,
    values: NDArray[np.generic],
    *,
    dtype: str,
    nodata: float | None,
    **creation: Any,
) -> Path:
    """One band on ``grid`` as a plain tiled GeoTIFF (not a COG: working files, labels).

    Args:
        path: Output file.
        grid: The band's pixel grid.
        values: The pixels, ``grid.shape``.
        dtype: Their data type in the file.
        nodata: The nodata value, or None.
        **creation: GDAL creation options (``compress="ZSTD"``…); default DEFLATE.
    """
    height, width = grid.shape
    options = {"compress": "deflate", **creation}
    with (
        writing(path),
        rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=width,
            height=height,
            count=1,
            dtype=dtype,
            crs=grid.crs.to_wkt() if grid.crs is not None else None,
            transform=grid.affine,
            nodata=nodata,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            **options,
        ) as dst,
    ):
        dst.write(np.asarray(values, dtype=dtype), 1)
    return path
