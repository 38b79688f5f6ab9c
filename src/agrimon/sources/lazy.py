"""Build lazy scene stacks from a per-block fetch function: the one dask graph every source uses.

A source only says how to produce the pixels of one acquisition over one block of its grid
(``fetch``); this module turns that into a dask-backed scene stack with one task per block
and date, each variable picking its band from that task (one request or render serves every
band), and output chunks cut from the fetched blocks.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from agrimon.sources.base import SCL

#: ``fetch(t, block, prepared)`` → ``{band: 2-D array}`` for acquisition ``t`` over ``block``.
Fetch = Callable[[int, GeoBox, Any], Mapping[str, NDArray[Any]]]
#: ``prepare(block)`` → anything ``fetch`` needs for every date of that block (or None).
Prepare = Callable[[GeoBox], Any]
#: ``fetch_into(t, block, prepared, out)`` writes acquisition ``t``'s bands over ``block``
#: into ``out`` (``{band: 2-D array of band_dtype(band)}``): what ``fetch`` returns,
#: without an array of its own per date and band.
FetchInto = Callable[[int, GeoBox, Any, Mapping[str, NDArray[Any]]], None]


def band_dtype(band: str) -> np.dtype[Any]:
    """float32 reflectance for bands, uint8 for the scene classification."""
    return np.dtype(np.uint8) if band == SCL else np.dtype(np.float32)


def band_attrs(band: str) -> dict[str, Any]:
    """Variable attributes of a scene-stack band."""
    if band == SCL:
        return {"long_name": "Sen2Cor scene classification", "nodata": 0}
    return {"long_name": f"{band} reflectance", "units": "1", "nodata": float("nan")}


def splits(n: int, size: int) -> tuple[int, ...]:
    """Sizes of consecutive chunks of at most ``size`` covering ``n``."""
    full, rest = divmod(n, size)
    return (size,) * full + ((rest,) if rest else ())


def lazy_stack(
    geobox: GeoBox,
    times: Sequence[datetime],
    bands: Sequence[str],
    *,
    fetch: Fetch,
    name: str,
    chunk_px: int,
    fetch_px: int | None = None,
    prepare: Prepare | None = None,
    token: object = None,
    attrs: Mapping[str, Any] | None = None,
    fetch_into: FetchInto | None = None,
) -> xr.Dataset:
    """Dask-backed scene stack ``(time, y, x)`` on ``geobox``.

    Args:
        geobox: Pixel grid of the stack.
        times: Acquisition times, one per ``t`` passed to ``fetch``.
        bands: Variables to build.
        fetch: Pixels of one acquisition over one block, all bands at once.
        name: Prefix of the dask keys (the source's name).
        chunk_px: Side of the output chunks.
        fetch_px: Side of the fetched blocks of a remote source, a multiple of ``chunk_px``
            (remote sources fetch a whole tile per request and serve chunks from it); None
            for a source that reads each chunk on its own.
        prepare: Optional per-block step shared by every date (computed once per block).
        token: Anything that identifies the request beyond grid, times and bands (e.g. the
            scene ids), so equal requests share dask keys and different ones never do.
        attrs: Dataset attributes.
        fetch_into: Optional ``fetch`` that writes into the series' arrays (sources that
            read each chunk on their own): the same values, one copy fewer per date.

    Returns:
        The lazy stack; nothing has been fetched. Without ``fetch_px`` (a source that reads
        each chunk on its own: rendered, or windows of files on disk), each chunk's whole
        series is one task, chunks ``(time, chunk_px, chunk_px)``: a pixel's series is
        what every stage after the load needs, and one task per date and chunk made a graph
        of tens of thousands of tasks per tile, and a copy of every date's block when the
        time axis was gathered. With ``fetch_px`` (a remote source: requests are slow, made
        for many dates at once, and may serve several chunks), chunks are one date each,
        ``(1, chunk_px, chunk_px)``, and each request is made once.
    """
    if fetch_px is None:
        tok = tokenize(
            geobox.affine, str(geobox.crs), geobox.shape, list(times), list(bands), chunk_px, token
        )
        return _series_stack(
            geobox,
            times,
            bands,
            chunk_px,
            (name, tok),
            fetch=fetch_into or _copying(fetch),
            prepare=prepare,
            attrs=attrs,
        )
    if fetch_px % chunk_px:
        raise ValueError(f"fetch_px {fetch_px} is not a multiple of chunk_px {chunk_px}")
    per = fetch_px // chunk_px
    ny, nx = geobox.shape
    tok = tokenize(
        geobox.affine, str(geobox.crs), ny, nx, list(times), list(bands), chunk_px, fetch_px, token
    )
    prep_name, fetch_name = f"{name}-prepare-{tok}", f"{name}-fetch-{tok}"
    graph: dict[Any, Any] = {}
    for i, (y0, cy) in enumerate(_starts(splits(ny, fetch_px))):
        for j, (x0, cx) in enumerate(_starts(splits(nx, fetch_px))):
            block = geobox[y0 : y0 + cy, x0 : x0 + cx]
            prepared: Any = None
            if prepare is not None:
                graph[(prep_name, i, j)] = (prepare, block)
                prepared = (prep_name, i, j)
            for t in range(len(times)):
                graph[(fetch_name, t, i, j)] = (fetch, t, block, prepared)

    ychunks, xchunks = splits(ny, chunk_px), splits(nx, chunk_px)
    data_vars = {}
    # The fetch tasks are one layer every band depends on: dask then sees that the bands
    # share them (a band holding its own copy made graph optimisation fetch twice).
    fetch_layer = MaterializedLayer(graph)
    for band in bands:
        var = f"{name}-{band}-{tok}"
        layer: dict[Any, Any] = {}
        for t in range(len(times)):
            for ci, (cy0, cy) in enumerate(_starts(ychunks)):
                for cj, (cx0, cx) in enumerate(_starts(xchunks)):
                    src = (fetch_name, t, ci // per, cj // per)
                    oy, ox = cy0 - (ci // per) * fetch_px, cx0 - (cj // per) * fetch_px
                    layer[(var, t, ci, cj)] = (_pick, src, band, oy, ox, cy, cx)
        hlg = HighLevelGraph(
            {fetch_name: fetch_layer, var: MaterializedLayer(layer)},
            {fetch_name: set(), var: {fetch_name}},
        )
        arr = da.Array(  # type: ignore[no-untyped-call]
            hlg, var, chunks=((1,) * len(times), ychunks, xchunks), dtype=band_dtype(band)
        )
        data_vars[band] = (("time", "y", "x"), arr, band_attrs(band))
    return _dataset(geobox, times, data_vars, attrs)


def _series_stack(
    geobox: GeoBox,
    times: Sequence[datetime],
    bands: Sequence[str],
    chunk_px: int,
    keys: tuple[str, str],
    *,
    fetch: FetchInto,
    prepare: Prepare | None,
    attrs: Mapping[str, Any] | None,
) -> xr.Dataset:
    """The stack with one task per chunk fetching its whole series (see :func:`lazy_stack`).

    A grid of fewer chunks than threads has its series cut into as many spans of dates as
    keep every thread busy. ``keys``: the source's name and the request's token.
    """
    name, tok = keys
    prep_name, fetch_name = f"{name}-prepare-{tok}", f"{name}-series-{tok}"
    ychunks, xchunks = splits(geobox.shape[0], chunk_px), splits(geobox.shape[1], chunk_px)
    spans = max(1, min(len(times), -(-_threads() // (len(ychunks) * len(xchunks)))))
    tchunks = splits(len(times), -(-len(times) // spans)) if times else (0,)
    graph: dict[Any, Any] = {}
    for i, (y0, cy) in enumerate(_starts(ychunks)):
        for j, (x0, cx) in enumerate(_starts(xchunks)):
            block = geobox[y0 : y0 + cy, x0 : x0 + cx]
            prepared: Any = None
            if prepare is not None:
                graph[(prep_name, i, j)] = (prepare, block)
                prepared = (prep_name, i, j)
            for k, (t0, nt) in enumerate(_starts(tchunks)):
                graph[(fetch_name, k, i, j)] = (
                    _fetch_series,
                    fetch,
                    range(t0, t0 + nt),
                    block,
                    prepared,
                    tuple(bands),
                )
    fetch_layer = MaterializedLayer(graph)
    data_vars = {}
    for band in bands:
        var = f"{name}-{band}-{tok}"
        layer = {
            (var, k, i, j): (operator.getitem, (fetch_name, k, i, j), band)
            for k in range(len(tchunks))
            for i in range(len(ychunks))
            for j in range(len(xchunks))
        }
        hlg = HighLevelGraph(
            {fetch_name: fetch_layer, var: MaterializedLayer(layer)},
            {fetch_name: set(), var: {fetch_name}},
        )
        arr = da.Array(  # type: ignore[no-untyped-call]
            hlg, var, chunks=(tchunks, ychunks, xchunks), dtype=band_dtype(band)
        )
        data_vars[band] = (("time", "y", "x"), arr, band_attrs(band))
    return _dataset(geobox, times, data_vars, attrs)


def _threads() -> int:
    """Threads the graph will run on: dask's configured number, else the CPUs."""
    configured = dask.config.get("num_workers", None)
    return int(configured) if configured else os.cpu_count() or 1


def _fetch_series(
    fetch: FetchInto, dates: range, block: GeoBox, prepared: Any, bands: tuple[str, ...]
) -> dict[str, NDArray[Any]]:
    """Every band's series ``(date, y, x)`` over one block, fetched date by date.

    Each date's block is written into the series as it comes, so the block's dates are
    never held twice.
    """
    cy, cx = block.shape
    out = {band: np.empty((len(dates), cy, cx), dtype=band_dtype(band)) for band in bands}
    for n, t in enumerate(dates):
        fetch(t, block, prepared, {band: out[band][n] for band in bands})
    return out


def _copying(fetch: Fetch) -> FetchInto:
    """A :data:`FetchInto` that copies what ``fetch`` returns."""
    return partial(_copy_fetched, fetch)


def _copy_fetched(
    fetch: Fetch, t: int, block: GeoBox, prepared: Any, out: Mapping[str, NDArray[Any]]
) -> None:
    fetched = fetch(t, block, prepared)
    cy, cx = block.shape
    for band, target in out.items():
        target[...] = _pick(fetched, band, 0, 0, cy, cx)[0]


def _dataset(
    geobox: GeoBox,
    times: Sequence[datetime],
    data_vars: Mapping[str, Any],
    attrs: Mapping[str, Any] | None,
) -> xr.Dataset:
    coords = xr_coords(geobox, crs_coord_name="spatial_ref")
    coords["time"] = xr.DataArray(np.array(times, dtype="datetime64[ns]"), dims=("time",))
    ds = xr.Dataset(dict(data_vars), coords=coords, attrs=dict(attrs or {}))
    for band in data_vars:
        ds[band].encoding["grid_mapping"] = "spatial_ref"
    return ds


def _starts(sizes: Sequence[int]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for size in sizes:
        out.append((pos, size))
        pos += size
    return out


def _pick(
    fetched: Mapping[str, NDArray[Any]], band: str, oy: int, ox: int, cy: int, cx: int
) -> NDArray[Any]:
    values = np.asarray(fetched[band][oy : oy + cy, ox : ox + cx], dtype=band_dtype(band))
    if values.shape != (cy, cx):
        raise ValueError(f"fetched {band} block has shape {values.shape}, expected {(cy, cx)}")
    return values[None]
