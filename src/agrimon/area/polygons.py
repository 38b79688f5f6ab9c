"""Polygons of a class map: vectorised window by window, joined at the seams, sieved, simplified.

A class raster (uint8, 0 = nodata, ``i + 1`` for class ``i``) becomes one polygon per patch,
a patch being a 4-connected set of pixels of one class (pixels that share an edge; corner
contact does not join, as in ``gdal_polygonize`` and ``gdal_sieve`` by default). 4-connectivity
makes every patch a single valid polygon, so a patch's pixels and its polygon are the same
thing.

The raster is read twice, one window at a time, so memory holds one window plus a few numbers
per patch, never the raster:

1. Each window's patches are labelled and counted (pixels, probability and uncertainty sums,
   borders with other patches); patches of one class that meet across a window seam (an edge
   of pixels on either side) are joined into one, their counts added.
2. The :func:`sieve` merges every patch smaller than the minimum mapping unit (MMU) into the
   neighbour with which it shares the longest border, smallest patches first, until none is
   left below the MMU; a small patch with no class neighbour (only nodata around) is dropped.
3. The second pass polygonises each window with the sieved patch ids
   (``rasterio.features.shapes``, same connectivity); the pieces of a patch cut by seams are
   unioned. Coordinates stay in pixel units (integers) until the end, so unions are exact
   and an unsimplified polygon's area is its pixel count times the pixel area.
4. The polygons are noded into an exact coverage and simplified with
   ``shapely.coverage_simplify``, which moves shared edges together: no gaps, no overlaps.

Nothing here depends on where the windows fall: the result is the same for any ``window_px``.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.errors
import rasterio.io
import shapely
from affine import Affine
from numpy.typing import NDArray
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from agrimon.area.classmap import raster_classes as stored_classes
from agrimon.errors import ConfigError
from agrimon.products.folder import GDAL_CACHE_MB
from agrimon.products.vectors import write_geojson, write_geopackage

log = logging.getLogger(__name__)

#: Pixels of one patch share an edge (4-connectivity), in the vectoriser and in the sieve.
CONNECTIVITY = 4
#: Default minimum mapping unit, hectares.
DEFAULT_MMU_HA = 0.5
#: Default simplification tolerance, pixels. ``coverage_simplify`` removes a vertex when the
#: square root of its triangle's area is below the tolerance; a one-pixel stair step is
#: sqrt(0.5) = 0.71 px, so half a pixel would leave the pixel stairs untouched.
DEFAULT_SIMPLIFY_PX = 1.0
#: Default window side, pixels: about 40 MB of working arrays at a time.
DEFAULT_WINDOW_PX = 1024
#: Default GeoPackage layer name.
DEFAULT_LAYER = "invasive_polygons"

I32 = NDArray[np.int32]
I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]

_EDGES = ndimage.generate_binary_structure(2, 1)  # 4-connectivity
# Vertices (about 100 bytes each in temporaries) and polygons handled at once in pass 2.
_CHUNK_VERTICES = 1 << 18
_CHUNK_POLYGONS = 1 << 14


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """The maps' values in one window.

    Attributes:
        classes: Class values, 0 for nodata, ``i + 1`` for class ``i``.
        probability: Target-class probability, NaN where there is none; None without one.
        uncertainty: Uncertainty, NaN where there is none; None without one.
    """

    classes: U8
    probability: F64 | None = None
    uncertainty: F64 | None = None


class MapReader(Protocol):
    """Windows of a class map and its optional probability and uncertainty maps."""

    @property
    def name(self) -> str:
        """What to call the maps in an error message (the class raster's path)."""
        ...

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the maps."""
        ...

    @property
    def layers(self) -> tuple[bool, bool]:
        """Whether a probability and an uncertainty map are read."""
        ...

    def read(self, window: Window) -> Block:
        """The values of ``window`` (inside the maps)."""
        ...


@dataclass(frozen=True)
class ArrayMaps:
    """A :class:`MapReader` of arrays in memory (tests, small maps)."""

    classes: U8
    probability: F64 | None = None
    uncertainty: F64 | None = None
    name: str = "class array"

    def __post_init__(self) -> None:
        if self.classes.dtype != np.uint8 or self.classes.ndim != 2:
            raise ConfigError(
                f"{self.name} is not a class map ({self.classes.ndim}-d {self.classes.dtype}): "
                "pass a 2-d uint8 array of class values"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the maps."""
        rows, cols = self.classes.shape
        return rows, cols

    @property
    def layers(self) -> tuple[bool, bool]:
        """Whether a probability and an uncertainty map are read."""
        return self.probability is not None, self.uncertainty is not None

    def read(self, window: Window) -> Block:
        """The values of ``window``."""
        rows, cols = window.toslices()

        def cut(values: F64 | None) -> F64 | None:
            return None if values is None else np.asarray(values[rows, cols], dtype=np.float64)

        return Block(
            np.asarray(self.classes[rows, cols]),
            cut(self.probability),
            cut(self.uncertainty),
        )


class RasterMaps:
    """A :class:`MapReader` of GeoTIFFs on one pixel grid; open with :func:`open_maps`."""

    def __init__(
        self,
        classes: rasterio.io.DatasetReader,
        probability: rasterio.io.DatasetReader | None,
        uncertainty: rasterio.io.DatasetReader | None,
    ) -> None:
        self._classes = classes
        self._probability = probability
        self._uncertainty = uncertainty

    @property
    def name(self) -> str:
        """The class raster's path."""
        return str(self._classes.name)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the maps."""
        return self._classes.height, self._classes.width

    @property
    def layers(self) -> tuple[bool, bool]:
        """Whether a probability and an uncertainty map are read."""
        return self._probability is not None, self._uncertainty is not None

    @property
    def dataset(self) -> rasterio.io.DatasetReader:
        """The open class raster."""
        return self._classes

    @property
    def transform(self) -> Affine:
        """Pixel to map coordinates."""
        transform: Affine = self._classes.transform
        return transform

    @property
    def crs(self) -> Any:
        """The maps' CRS."""
        return self._classes.crs

    def read(self, window: Window) -> Block:
        """The values of ``window``; nodata of the class raster becomes 0, of the others NaN."""
        values = self._classes.read(1, window=window)
        nodata = self._classes.nodata
        if nodata is not None and nodata != 0:
            values[values == nodata] = 0
        return Block(
            np.asarray(values, dtype=np.uint8),
            _continuous(self._probability, window),
            _continuous(self._uncertainty, window),
        )


def _continuous(src: rasterio.io.DatasetReader | None, window: Window) -> F64 | None:
    if src is None:
        return None
    values = src.read(1, window=window).astype(np.float64)
    if src.nodata is not None and not math.isnan(src.nodata):
        values[values == src.nodata] = np.nan
    return np.asarray(values, dtype=np.float64)


@contextmanager
def open_maps(
    class_path: Path,
    *,
    probability_path: Path | None = None,
    uncertainty_path: Path | None = None,
) -> Iterator[RasterMaps]:
    """Open a class raster and its optional probability and uncertainty rasters.

    Raises:
        ConfigError: A file cannot be read, the class raster is not one (a float or
            multi-band raster) or the others are not on its pixel grid.
    """
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), ExitStack() as stack:

        def open_one(path: Path) -> rasterio.io.DatasetReader:
            try:
                return stack.enter_context(rasterio.open(path))
            except rasterio.errors.RasterioIOError as err:
                raise ConfigError(
                    f"cannot read raster '{path}' ({' '.join(str(err).split())}): pass the "
                    "path of a GeoTIFF the monitor wrote"
                ) from err

        classes = open_one(class_path)
        dtype = np.dtype(classes.dtypes[0])
        if classes.count != 1 or dtype != np.uint8:
            raise ConfigError(
                f"'{class_path}' is not a class raster ({classes.count} band(s) of {dtype}): "
                "pass a single-band uint8 class raster such as invasive_class.tif"
            )
        others: list[rasterio.io.DatasetReader | None] = []
        for path in (probability_path, uncertainty_path):
            if path is None:
                others.append(None)
                continue
            src = open_one(path)
            if (src.height, src.width) != (classes.height, classes.width) or (
                src.transform != classes.transform or src.crs != classes.crs
            ):
                raise ConfigError(
                    f"'{path}' is not on the pixel grid of '{class_path}': pass the rasters "
                    "of one monitor run and zone"
                )
            others.append(src)
        yield RasterMaps(classes, others[0], others[1])


def raster_classes(src: rasterio.io.DatasetReader) -> list[str]:
    """Class names the monitor stored in a class raster (see ``classmap.raster_classes``).

    Raises:
        ConfigError: The raster names no classes.
    """
    names = stored_classes(src)
    if names is None:
        raise ConfigError(
            f"'{src.name}' names no classes (no CATEGORY_NAMES or CLASSES tag): pass classes= "
            "from the model card"
        )
    return list(names)


# --- pure raster work -----------------------------------------------------------------------


def label_patches(classes: U8) -> tuple[I32, U8]:
    """Label the 4-connected patches of one class each (0 is nodata, not a patch).

    Returns:
        ``(labels, class_of)``: labels ``1..n`` (0 where nodata) and the class value of
        label ``i`` at ``class_of[i - 1]``.
    """
    labels = np.zeros(classes.shape, dtype=np.int32)
    class_of: list[U8] = []
    count = 0
    for value in np.flatnonzero(np.bincount(classes.ravel(), minlength=1)[1:]) + 1:
        own, found = ndimage.label(classes == value, structure=_EDGES)
        labels += np.where(own > 0, own + count, 0).astype(np.int32)
        class_of.append(np.full(found, value, dtype=np.uint8))
        count += found
    return labels, np.concatenate([np.zeros(0, np.uint8), *class_of])


def label_borders(labels: I32) -> tuple[I32, I32, I64]:
    """Borders between the labelled patches of one window, in pixel edges.

    Returns:
        ``(lo, hi, length)``: label pairs ``lo < hi`` that share ``length`` pixel edges.
    """
    pairs = [
        (labels[:, :-1].ravel(), labels[:, 1:].ravel()),
        (labels[:-1, :].ravel(), labels[1:, :].ravel()),
    ]
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    keep = (a != b) & (a > 0) & (b > 0)
    lo = np.minimum(a[keep], b[keep]).astype(np.int64)
    hi = np.maximum(a[keep], b[keep]).astype(np.int64)
    base = int(labels.max()) + 1
    codes, length = np.unique(lo * base + hi, return_counts=True)
    return (codes // base).astype(np.int32), (codes % base).astype(np.int32), length


def sieve(
    classes: NDArray[np.integer[Any]],
    pixels: NDArray[np.integer[Any]],
    keys: NDArray[np.integer[Any]],
    borders: tuple[NDArray[np.integer[Any]], NDArray[np.integer[Any]], NDArray[np.integer[Any]]],
    min_pixels: int,
) -> I64:
    """Merge every patch under ``min_pixels`` into a neighbour, until none is left.

    The smallest patch goes first (ties: the lower key). It merges into the neighbour with
    which it shares the longest border (ties: the larger neighbour, then the lower key), so
    it takes that neighbour's class; neighbours of that class which the merge now joins
    become one patch with it, as they would on the sieved raster. A patch with no class
    neighbour (nodata all around) under ``min_pixels`` is dropped. Every decision depends on
    pixel counts, borders and keys only, so the result is deterministic.

    Args:
        classes: Class of each patch. Neighbours must differ in class (connected patches).
        pixels: Pixel count of each patch.
        keys: A distinct number per patch that fixes the order of ties (the raster index of
            its first pixel).
        borders: ``(a, b, length)``: patches ``a`` and ``b`` share ``length`` pixel edges,
            each pair once.
        min_pixels: Patches with fewer pixels are merged or dropped.

    Returns:
        For each patch, the patch it ends up in (itself when it survives), or -1 where it
        was dropped.
    """
    count = len(pixels)
    into = np.arange(count, dtype=np.int64)
    size = np.asarray(pixels, dtype=np.int64).copy()
    small = np.flatnonzero(size < min_pixels)
    if len(small) == 0:
        return into
    cls = np.asarray(classes).tolist()
    key = np.asarray(keys, dtype=np.int64).tolist()
    sizes: list[int] = size.tolist()
    links = _Borders(count, *borders)
    alive = [True] * count
    dropped = set()

    def absorb(host: int, part: int) -> None:
        """Move ``part``'s pixels and borders into ``host``."""
        near_host = links.of(host)
        near_host.pop(part, None)
        for other, length in links.of(part).items():
            if other == host:
                continue
            near_other = links.of(other)
            del near_other[part]
            near_other[host] = near_other.get(host, 0) + length
            near_host[other] = near_host.get(other, 0) + length
        links.close(part)
        sizes[host] += sizes[part]
        key[host] = min(key[host], key[part])
        into[part] = host
        alive[part] = False

    heap = [(sizes[p], key[p], int(p)) for p in small]
    heapq.heapify(heap)
    while heap:
        pixels_then, _, patch = heapq.heappop(heap)
        if not alive[patch] or pixels_then != sizes[patch]:
            continue  # merged away, or grown since it was queued
        near = links.of(patch)
        if not near:
            alive[patch] = False
            dropped.add(patch)
            continue
        host = max(near, key=lambda q: (near[q], sizes[q], -key[q]))
        same = [q for q in near if q != host and cls[q] == cls[host]]
        absorb(host, patch)
        for other in same:
            # Joining two patches of one class: the one with fewer borders moves, so that a
            # large patch joined again and again is not copied each time.
            if len(links.of(other)) > len(links.of(host)):
                host, other = other, host
            absorb(host, other)
        if sizes[host] < min_pixels:
            heapq.heappush(heap, (sizes[host], key[host], host))
    return _resolve(into, dropped)


class _Borders:
    """Symmetric patch adjacency: arrays until a patch is touched, then a dict per patch."""

    def __init__(
        self,
        count: int,
        a: NDArray[np.integer[Any]],
        b: NDArray[np.integer[Any]],
        length: NDArray[np.integer[Any]],
    ) -> None:
        start = np.concatenate([a, b]).astype(np.int64)
        order = np.argsort(start, kind="stable")
        self._to = np.concatenate([b, a]).astype(np.int64)[order]
        self._length = np.concatenate([length, length]).astype(np.int64)[order]
        self._start = np.searchsorted(start[order], np.arange(count + 1))
        self._open: dict[int, dict[int, int]] = {}

    def of(self, patch: int) -> dict[int, int]:
        """Neighbour to shared border length (a live dict: edit it in place)."""
        found = self._open.get(patch)
        if found is None:
            lo, hi = self._start[patch], self._start[patch + 1]
            found = dict(zip(self._to[lo:hi].tolist(), self._length[lo:hi].tolist(), strict=True))
            self._open[patch] = found
        return found

    def close(self, patch: int) -> None:
        """Forget ``patch``'s borders (it was merged)."""
        self._open[patch] = {}


def _distinct(values: I64) -> I64:
    """Sorted distinct values, by sorting (numpy's hash-based ``unique`` is far slower here)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


def _resolve(into: I64, dropped: set[int]) -> I64:
    """Follow merge chains to their end; -1 for chains ending in a dropped patch."""
    final = into.copy()
    while True:
        step = final[final]
        if np.array_equal(step, final):
            break
        final = step
    if dropped:
        final[np.isin(final, list(dropped))] = -1
    return final


# --- pass 1: patches, joined at the seams, sieved -----------------------------------------


@dataclass(frozen=True)
class Patches:
    """Sieved patches of a class map: per patch numbers, and how to find their pixels.

    Attributes:
        patch_of_raw: Patch id (1-based, 0 for none) of each window patch of pass 1, in the
            order the windows labelled them.
        offsets: First window patch number of each window, row by row.
        classes: Class value (index in the class names + 1) of patch ``id`` at ``classes[id - 1]``.
        pixels: Pixel count of each patch.
        sums: ``(probability sum, valid pixels)`` and ``(uncertainty sum, valid pixels)`` of
            each patch, or None where that map is not read.
    """

    patch_of_raw: I64
    offsets: tuple[int, ...]
    classes: I64
    pixels: I64
    sums: tuple[tuple[F64, I64] | None, tuple[F64, I64] | None]


def windows(shape: tuple[int, int], window_px: int) -> Iterator[Window]:
    """Windows of ``window_px`` pixels covering ``shape``, row by row."""
    if window_px < 1:
        raise ConfigError(f"window_px must be a positive number of pixels, not {window_px}")
    rows, cols = shape
    for row in range(0, rows, window_px):
        for col in range(0, cols, window_px):
            yield Window(col, row, min(window_px, cols - col), min(window_px, rows - row))


def find_patches(
    maps: MapReader, *, class_count: int, min_pixels: int, window_px: int = DEFAULT_WINDOW_PX
) -> Patches:
    """Patches of a class map, joined across window seams and sieved (pass 1).

    Args:
        maps: The class map and its optional probability and uncertainty maps.
        class_count: Number of classes; class values above it are an error.
        min_pixels: Patches with fewer pixels are merged or dropped (see :func:`sieve`).
        window_px: Side of the windows read at once.

    Raises:
        ConfigError: The class map holds values beyond ``class_count``.
    """
    cols = maps.shape[1]
    tally = _Tally(cols, maps.layers)
    for window in windows(maps.shape, window_px):
        block = maps.read(window)
        top = int(block.classes.max(initial=0))
        if top > class_count:
            raise ConfigError(
                f"'{maps.name}' holds class value {top} but there are {class_count} classes: "
                "pass the class raster and the classes of one model"
            )
        tally.add(window, block)
    return tally.finish(min_pixels)


class _Tally:
    """Pass-1 accumulator: window patches, their numbers, seams and borders."""

    def __init__(self, cols: int, layers: tuple[bool, bool]) -> None:
        self.cols = cols
        self.layers = layers
        self.offset = 0
        self.offsets: list[int] = []
        self.parts: dict[str, list[NDArray[Any]]] = {}
        # Raw patch ids and classes along the last row of the window row above, and along the
        # last column of the window to the left: the seams of the next windows.
        self.above_ids = np.full(cols, -1, dtype=np.int64)
        self.above_cls = np.zeros(cols, dtype=np.uint8)
        self.below_ids = self.above_ids.copy()
        self.below_cls = self.above_cls.copy()
        self.left: tuple[I64, U8] | None = None

    def _keep(self, name: str, values: NDArray[Any]) -> None:
        self.parts.setdefault(name, []).append(values)

    def add(self, window: Window, block: Block) -> None:
        row0, col0, width = window.row_off, window.col_off, window.width
        if col0 == 0 and row0 > 0:  # a new row of windows
            self.above_ids, self.below_ids = self.below_ids, self.above_ids
            self.above_cls, self.below_cls = self.below_cls, self.above_cls
        labels, class_of = label_patches(block.classes)
        count = len(class_of)
        flat = labels.ravel()
        self.offsets.append(self.offset)
        self._keep("class", class_of)
        self._keep("pixels", np.bincount(flat, minlength=count + 1)[1:])
        # The key of a patch is the raster index of its first pixel in row-major order: the
        # same for any windowing, so it orders ties and ids identically.
        first = np.full(count + 1, flat.size, dtype=np.int64)
        np.minimum.at(first, flat, np.arange(flat.size))
        first = first[1:]
        self._keep("key", (row0 + first // width) * self.cols + col0 + first % width)
        for name, values_of in zip(
            ("probability", "uncertainty"), (block.probability, block.uncertainty), strict=True
        ):
            if values_of is None:
                continue
            valid = np.isfinite(values_of).ravel()
            weights = np.where(valid, values_of.ravel(), 0.0)
            self._keep(f"{name}_sum", np.bincount(flat, weights, minlength=count + 1)[1:])
            self._keep(f"{name}_n", np.bincount(flat[valid], minlength=count + 1)[1:])
        lo, hi, length = label_borders(labels)
        self._keep("border_a", lo.astype(np.int64) - 1 + self.offset)
        self._keep("border_b", hi.astype(np.int64) - 1 + self.offset)
        self._keep("border_n", length)
        ids = np.where(labels > 0, labels.astype(np.int64) - 1 + self.offset, -1)
        if col0 > 0 and self.left is not None:
            self._seam(self.left[0], self.left[1], ids[:, 0], block.classes[:, 0])
        if row0 > 0:
            cut = slice(col0, col0 + width)
            self._seam(self.above_ids[cut], self.above_cls[cut], ids[0, :], block.classes[0, :])
        self.left = (ids[:, -1].copy(), block.classes[:, -1].copy())
        self.below_ids[col0 : col0 + width] = ids[-1, :]
        self.below_cls[col0 : col0 + width] = block.classes[-1, :]
        self.offset += count

    def _seam(self, ids_a: I64, cls_a: U8, ids_b: I64, cls_b: U8) -> None:
        """Join patches of one class across a seam; count the borders of the others."""
        both = (ids_a >= 0) & (ids_b >= 0)
        same = both & (cls_a == cls_b)
        self._keep("join_a", ids_a[same])
        self._keep("join_b", ids_b[same])
        other = both & ~same
        self._keep("border_a", ids_a[other])
        self._keep("border_b", ids_b[other])
        self._keep("border_n", np.ones(int(other.sum()), dtype=np.int64))

    def _all(self, name: str, dtype: type[np.generic]) -> NDArray[Any]:
        return np.concatenate([np.zeros(0, dtype), *self.parts.get(name, [])]).astype(dtype)

    def finish(self, min_pixels: int) -> Patches:
        raw = self.offset
        join_a, join_b = self._all("join_a", np.int64), self._all("join_b", np.int64)
        graph = coo_array((np.ones(len(join_a), np.int8), (join_a, join_b)), shape=(raw, raw))
        count, joined = connected_components(graph, directed=False)
        joined = joined.astype(np.int64)

        def total(values: NDArray[Any]) -> NDArray[Any]:
            # Sums of integers stay exact in float64 (below 2**53).
            return np.bincount(joined, weights=values, minlength=count)

        pixels = np.rint(total(self._all("pixels", np.int64))).astype(np.int64)
        classes = np.zeros(count, dtype=np.int64)
        classes[joined] = self._all("class", np.int64)
        keys = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(keys, joined, self._all("key", np.int64))
        a = joined[self._all("border_a", np.int64)]
        b = joined[self._all("border_b", np.int64)]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        codes, where = np.unique(lo * max(count, 1) + hi, return_inverse=True)
        length = np.rint(np.bincount(where, weights=self._all("border_n", np.int64))).astype(
            np.int64
        )
        borders = (codes // max(count, 1), codes % max(count, 1), length)
        into = sieve(classes, pixels, keys, borders, min_pixels)
        # Ids in raster order of each surviving patch's first pixel (merged keys included).
        survivors = np.flatnonzero(into == np.arange(count))
        first = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
        kept = into >= 0
        np.minimum.at(first, into[kept], keys[kept])
        order = survivors[np.argsort(first[survivors], kind="stable")]
        id_of = np.zeros(count + 1, dtype=np.int64)  # index -1 (dropped) stays 0
        id_of[order] = np.arange(1, len(order) + 1)
        patch_of = id_of[into]
        patch_of_raw = patch_of[joined]
        ids = len(order)

        def per_patch(values: NDArray[Any], integer: bool = False) -> NDArray[Any]:
            summed = np.bincount(patch_of_raw, weights=values, minlength=ids + 1)[1:]
            return np.rint(summed).astype(np.int64) if integer else summed

        sums: list[tuple[F64, I64] | None] = []
        for name, read in zip(("probability", "uncertainty"), self.layers, strict=True):
            if not read:
                sums.append(None)
                continue
            sums.append(
                (
                    per_patch(self._all(f"{name}_sum", np.float64)),
                    per_patch(self._all(f"{name}_n", np.int64), integer=True),
                )
            )
        return Patches(
            patch_of_raw=patch_of_raw,
            offsets=tuple(self.offsets),
            classes=classes[order],
            pixels=per_patch(self._all("pixels", np.int64), integer=True),
            sums=(sums[0], sums[1]),
        )


# --- pass 2: polygons ----------------------------------------------------------------------


def patch_polygons(
    maps: MapReader, patches: Patches, *, window_px: int = DEFAULT_WINDOW_PX
) -> NDArray[np.object_]:
    """Unsimplified polygons of the patches in pixel coordinates (column, row), by id - 1.

    Each window is polygonised with the patch ids of pass 1 (same windows, so the same
    labels); a patch's pieces from several windows are unioned. The polygons are then made
    canonical (corner vertices only, normalised ring order) and noded (:func:`node_coverage`):
    the same vertices for any windowing, and identical vertices on both sides of an edge.
    """
    pieces: list[Any] = []
    owners: list[I64] = []
    for number, window in enumerate(windows(maps.shape, window_px)):
        labels, class_of = label_patches(maps.read(window).classes)
        offset = patches.offsets[number]
        lookup = np.concatenate([[0], patches.patch_of_raw[offset : offset + len(class_of)]])
        ids = lookup[labels].astype(np.int32)
        at = Affine.translation(window.col_off, window.row_off)
        found = list(shapes(ids, mask=ids > 0, connectivity=CONNECTIVITY, transform=at))
        pieces.extend(_geojson_polygons([g["coordinates"] for g, _ in found]))
        owners.append(np.array([int(v) - 1 for _, v in found], dtype=np.int64))
    if not pieces:
        return np.zeros(0, dtype=object)
    # Noded, the pieces are an exact coverage, whose union only drops the shared edges: much
    # cheaper than a general overlay of polygons with many holes.
    noded = node_coverage(np.asarray(pieces, dtype=object))
    del pieces  # one copy of the map's vertices at a time
    owner = np.concatenate(owners)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(patches.pixels) + 1))
    joined = np.empty(len(patches.pixels), dtype=object)
    for patch in range(len(patches.pixels)):
        mine = noded[order[bounds[patch] : bounds[patch + 1]]]
        joined[patch] = mine[0] if len(mine) == 1 else shapely.coverage_union_all(mine)
    del noded, mine
    joined = shapely.normalize(corners_only(joined))
    return node_coverage(joined)


def _geojson_polygons(polygons: Sequence[Sequence[Sequence[tuple[float, float]]]]) -> Any:
    """Shapely polygons of GeoJSON polygon coordinates, built in one call (not vertex by vertex)."""
    if not polygons:
        return []
    rings = [np.asarray(ring, dtype=np.float64) for polygon in polygons for ring in polygon]
    ring_of = np.repeat(np.arange(len(rings)), [len(r) for r in rings])
    polygon_of = np.repeat(np.arange(len(polygons)), [len(p) for p in polygons])
    made = shapely.linearrings(np.concatenate(rings), indices=ring_of)
    return shapely.polygons(made, indices=polygon_of)


def _open_rings(polygons: NDArray[np.object_]) -> tuple[I64, I64, I64, I64]:
    """Vertices of every ring without the closing one, integer pixel coordinates.

    Returns:
        ``(xy, ring_of, polygon_of_ring, after)``: the vertices, the ring of each, the
        polygon of each ring and the index of each vertex's successor along its ring.
    """
    rings, polygon_of_ring = shapely.get_rings(polygons, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    closing = np.r_[ring_of[1:] != ring_of[:-1], True]
    xy, ring_of = np.rint(xy[~closing]).astype(np.int64), ring_of[~closing].astype(np.int64)
    return xy, ring_of, polygon_of_ring.astype(np.int64), _successor(ring_of)


def _successor(ring_of: I64) -> I64:
    """Index of the next vertex along each (open) ring, wrapping at its end."""
    starts = np.r_[0, np.flatnonzero(np.diff(ring_of)) + 1]
    lengths = np.diff(np.r_[starts, len(ring_of)])
    first, length = np.repeat(starts, lengths), np.repeat(lengths, lengths)
    return np.asarray(first + (np.arange(len(ring_of)) - first + 1) % length, dtype=np.int64)


def _polygons_of(xy: I64, ring_of: I64, polygon_of_ring: I64) -> NDArray[np.object_]:
    """Polygons of open rings (the first ring of each polygon its shell)."""
    ring_of = np.cumsum(np.r_[0, np.diff(ring_of) != 0])  # number the rings 0, 1, …
    rings = shapely.linearrings(xy.astype(np.float64), indices=ring_of)  # closes them
    return np.asarray(shapely.polygons(rings, indices=polygon_of_ring), dtype=object)


def _each_polygon(
    geometries: NDArray[np.object_], work: Callable[[NDArray[np.object_]], NDArray[np.object_]]
) -> NDArray[np.object_]:
    """Apply ``work`` to the polygons of (multi)polygons; multipolygons are rebuilt."""
    parts, owner = shapely.get_parts(geometries, return_index=True)
    parts = np.asarray(parts, dtype=object)
    done = np.concatenate([np.zeros(0, dtype=object), *(work(parts[c]) for c in _chunks(parts))])
    if len(parts) == len(geometries):
        return done
    counts = np.bincount(owner, minlength=len(geometries))
    out = np.asarray(shapely.multipolygons(done, indices=owner), dtype=object)
    single = counts == 1
    out[single] = done[np.searchsorted(owner, np.flatnonzero(single))]
    return out


def _chunks(parts: NDArray[np.object_]) -> Iterator[slice]:
    """Runs of polygons of about :data:`_CHUNK_VERTICES` vertices (at least one polygon each).

    Vertex arrays, with their temporaries, are then those of a chunk, not of the whole map.
    """
    ends = np.cumsum(shapely.get_num_coordinates(parts))
    start = 0
    while start < len(parts):
        done = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + _CHUNK_VERTICES, "right")))
        yield slice(start, stop)
        start = stop


def corners_only(polygons: NDArray[np.object_]) -> NDArray[np.object_]:
    """Rectilinear pixel polygons with only their corners (no repeated or collinear vertex).

    A union of pixel pieces keeps the vertices where seams cut its edges; without them the
    polygon of a patch is the same whatever the windowing.
    """

    def work(parts: NDArray[np.object_]) -> NDArray[np.object_]:
        xy, ring_of, polygon_of_ring, after = _open_rings(shapely.remove_repeated_points(parts))
        before = np.empty_like(after)
        before[after] = np.arange(len(after))
        straight = (xy[before, 0] == xy[:, 0]) & (xy[:, 0] == xy[after, 0])
        straight |= (xy[before, 1] == xy[:, 1]) & (xy[:, 1] == xy[after, 1])
        return _polygons_of(xy[~straight], ring_of[~straight], polygon_of_ring)

    return _each_polygon(polygons, work)


def node_coverage(polygons: NDArray[np.object_]) -> NDArray[np.object_]:
    """Insert into every edge the corners of other polygons lying on it.

    Pixel polygons tile the plane, but a straight edge of one polygon may run past a corner
    of its neighbours without a vertex there; coverage operations need the vertices of
    shared edges to match. All edges are horizontal or vertical with integer coordinates, so
    the corners on an edge are found exactly by sorting.
    """
    if len(polygons) == 0:
        return polygons
    scale = int(np.max(shapely.total_bounds(polygons))) + 2
    # Every corner, sorted by row then column (for horizontal edges) and by column then row.
    rows, cols = [], []
    for lo in range(0, len(polygons), _CHUNK_POLYGONS):
        xy = np.rint(shapely.get_coordinates(polygons[lo : lo + _CHUNK_POLYGONS])).astype(np.int64)
        rows.append(_distinct(xy[:, 1] * scale + xy[:, 0]))
        cols.append(_distinct(xy[:, 0] * scale + xy[:, 1]))
    by_row, by_col = _distinct(np.concatenate(rows)), _distinct(np.concatenate(cols))
    del rows, cols

    def work(parts: NDArray[np.object_]) -> NDArray[np.object_]:
        xy, ring_of, polygon_of_ring, after = _open_rings(parts)
        start, end = xy, xy[after]
        across = start[:, 1] == end[:, 1]  # horizontal edge
        line = np.where(across, start[:, 1], start[:, 0])
        along = np.where(across, 0, 1)
        a = np.take_along_axis(start, along[:, None], 1)[:, 0]
        b = np.take_along_axis(end, along[:, None], 1)[:, 0]
        lo, hi = np.zeros(len(xy), np.int64), np.zeros(len(xy), np.int64)
        long = np.abs(b - a) > 1  # a one-pixel edge has no corner inside
        for mask, keys in ((across & long, by_row), (~across & long, by_col)):
            lo[mask] = np.searchsorted(keys, line[mask] * scale + np.minimum(a, b)[mask], "right")
            hi[mask] = np.searchsorted(keys, line[mask] * scale + np.maximum(a, b)[mask], "left")
        inner = hi - lo
        # Each edge becomes its start vertex and the corners inside it, in its direction.
        size = 1 + inner
        offset = np.cumsum(size) - size
        out = np.empty((int(size.sum()), 2), dtype=np.int64)
        out[offset] = start
        edge = np.repeat(np.arange(len(xy)), inner)
        step = np.arange(len(edge)) - np.repeat(np.cumsum(inner) - inner, inner)
        pick = np.where((b > a)[edge], lo[edge] + step, hi[edge] - 1 - step)
        flat, horizontal = np.empty(len(edge), np.int64), across[edge]
        flat[horizontal] = by_row[pick[horizontal]]
        flat[~horizontal] = by_col[pick[~horizontal]]
        major, minor = flat // scale, flat % scale
        out[offset[edge] + 1 + step] = np.where(
            horizontal[:, None], np.column_stack([minor, major]), np.column_stack([major, minor])
        )
        return _polygons_of(out, np.repeat(ring_of, size), polygon_of_ring)

    return _each_polygon(polygons, work)


def to_map(geometries: NDArray[np.object_], transform: Affine) -> NDArray[np.object_]:
    """Pixel coordinates (column, row) to map coordinates, one vertex at a time.

    Element-wise arithmetic on all vertices at once: a vertex shared by two polygons maps to
    the same coordinates in both, so the coverage stays exact.
    """
    a, b, c, d, e, f = transform[:6]

    def move(xy: F64) -> F64:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    return np.asarray(shapely.transform(geometries, move), dtype=object)


def simplify_coverage(geometries: NDArray[np.object_], tolerance: float) -> NDArray[np.object_]:
    """Simplify a polygon coverage without opening gaps or overlaps between neighbours.

    Shared edges are simplified once for both sides (``shapely.coverage_simplify``, the
    coverage's outer boundary included). Should GEOS return an invalid polygon, the
    unsimplified coverage is kept whole, since simplifying part of it would break it.
    """
    if tolerance <= 0 or len(geometries) == 0:
        return geometries
    simple = np.asarray(shapely.coverage_simplify(geometries, tolerance), dtype=object)
    if not bool(np.all(shapely.is_valid(simple) & ~shapely.is_empty(simple))):
        log.warning("coverage simplification gave invalid polygons; kept them unsimplified")
        return geometries
    return simple


# --- the entry points ----------------------------------------------------------------------


def pixel_area(transform: Affine) -> float:
    """Area of one pixel in map units squared."""
    return abs(transform.a * transform.e - transform.b * transform.d)


def mmu_pixels(mmu_ha: float, transform: Affine) -> int:
    """Fewest pixels a patch keeps at a minimum mapping unit of ``mmu_ha`` hectares."""
    if mmu_ha < 0 or not math.isfinite(mmu_ha):
        raise ConfigError(f"mmu_ha must be zero or a positive number of hectares, not {mmu_ha}")
    # A hair below the exact ratio, so that 0.5 ha of 10 m pixels is 50 pixels, not 51.
    return math.ceil(mmu_ha * 10_000 / pixel_area(transform) - 1e-9)


def vectorise_maps(
    maps: MapReader,
    *,
    transform: Affine,
    crs: Any,
    classes: Sequence[str],
    mmu_ha: float = DEFAULT_MMU_HA,
    simplify_px: float = DEFAULT_SIMPLIFY_PX,
    window_px: int = DEFAULT_WINDOW_PX,
) -> gpd.GeoDataFrame:
    """Polygons of a class map read through ``maps`` (see :func:`vectorise`)."""
    if simplify_px < 0 or not math.isfinite(simplify_px):
        raise ConfigError(f"simplify_px must be zero or a positive number, not {simplify_px}")
    patches = find_patches(
        maps,
        class_count=len(classes),
        min_pixels=mmu_pixels(mmu_ha, transform),
        window_px=window_px,
    )
    polygons = to_map(patch_polygons(maps, patches, window_px=window_px), transform)
    polygons = simplify_coverage(polygons, simplify_px * math.sqrt(pixel_area(transform)))
    columns: dict[str, Any] = {
        "id": np.arange(1, len(patches.pixels) + 1, dtype=np.int64),
        "class": [classes[int(v) - 1] for v in patches.classes],
        "pixels": patches.pixels,
        "area_ha": patches.pixels * pixel_area(transform) / 10_000,
    }
    for name, sums in zip(("mean_probability", "mean_uncertainty"), patches.sums, strict=True):
        if sums is not None:
            total, valid = sums
            with np.errstate(invalid="ignore", divide="ignore"):
                columns[name] = np.where(valid > 0, total / np.maximum(valid, 1), np.nan)
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(polygons, crs=crs), crs=crs)


def vectorise(
    class_path: Path,
    *,
    probability_path: Path | None = None,
    uncertainty_path: Path | None = None,
    classes: Sequence[str] | None = None,
    mmu_ha: float = DEFAULT_MMU_HA,
    simplify_px: float = DEFAULT_SIMPLIFY_PX,
    window_px: int = DEFAULT_WINDOW_PX,
) -> gpd.GeoDataFrame:
    """Polygons of a class raster, one per patch, sieved to an MMU and simplified.

    The rasters are read ``window_px`` square at a time, twice; memory holds one window and
    a few numbers per patch. Patches are 4-connected (:data:`CONNECTIVITY`); a patch cut by
    window seams is one polygon.

    Args:
        class_path: Class raster: uint8, 0 nodata, ``i + 1`` for ``classes[i]``.
        probability_path: Target-class probability raster on the same grid, or None.
        uncertainty_path: Uncertainty raster on the same grid, or None.
        classes: Class names; None reads them from the raster's tags.
        mmu_ha: Minimum mapping unit, hectares: smaller patches merge into the neighbour with
            the longest shared border, or are dropped where only nodata is around (0: keep
            all).
        simplify_px: Coverage simplification tolerance in pixels (0: none).
        window_px: Side of the windows read at once, pixels.

    Returns:
        One row per polygon, in the raster's CRS, ordered by ``id`` (1, 2, … in raster order
        of each polygon's first pixel): ``class`` (name), ``pixels``, ``area_ha`` (pixel
        count times pixel area: the unsimplified polygon's area), ``mean_probability`` and
        ``mean_uncertainty`` (means over the polygon's pixels with a value, in the rasters'
        units, e.g. percent; NaN where none has one; only when that raster is given).

    Raises:
        ConfigError: A raster cannot be read, is not a class raster, holds values beyond the
            classes or is not on one grid with the others; or a parameter is invalid.
    """
    with open_maps(
        class_path, probability_path=probability_path, uncertainty_path=uncertainty_path
    ) as maps:
        names = list(classes) if classes is not None else raster_classes(maps.dataset)
        return vectorise_maps(
            maps,
            transform=maps.transform,
            crs=maps.crs,
            classes=names,
            mmu_ha=mmu_ha,
            simplify_px=simplify_px,
            window_px=window_px,
        )


# --- writers -------------------------------------------------------------------------------


def write_polygons(
    frame: gpd.GeoDataFrame,
    geojson_path: Path | None = None,
    gpkg_path: Path | None = None,
    *,
    layer: str = DEFAULT_LAYER,
) -> list[Path]:
    """Write the polygons as GeoJSON and/or GeoPackage (see the two writers).

    Returns:
        The files written.
    """
    written = []
    if geojson_path is not None:
        written.append(write_geojson(frame, geojson_path))
    if gpkg_path is not None:
        written.append(write_geopackage(frame, gpkg_path, layer=layer))
    return written
