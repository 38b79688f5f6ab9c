"""One tile's work, computed once and persisted: the unit that retries, caches and resumes.

A tile's work is load → clear mask and indices → composites and season metrics → the
encroachment map → zonal partials. :func:`run_tile` computes it and writes every layer as a
GeoTIFF of the tile's grid, the zonal partials as ``.npz`` and a ``result.json`` into
``<work>/tiles/<key>/`` (see :mod:`agrimon.products.workspace`), where ``key`` hashes every
input the pixels depend on: the parameters that change pixels, the tile and its footprint,
its scenes, the zones and fields, the model's checksum and agrimon's own code. The folder
appears whole or not at all (written beside, then renamed), so a tile whose folder exists
is finished: a rerun after a kill reuses it instead of computing it again.

The products are then assembled from the persisted tiles (``monitor.write_products``), so
no task holds more than one tile's pixels, and tiles may be computed in any process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import geopandas as gpd
import numpy as np
import rasterio
import xarray as xr
from dask.base import compute
from numpy.typing import NDArray
from rasterio.features import geometry_mask

import agrimon
from agrimon.cluster import on_worker
from agrimon.config import RunSpec
from agrimon.errors import ProductError, SourceError
from agrimon.grid import Tile
from agrimon.indices import composites, masks, phenology, spectral, zonal
from agrimon.invasive.features import SEASON_V1, feature_stack, monitor_model, season_window
from agrimon.malloc import adaptive_mmap_threshold, keep_freed_memory
from agrimon.plan import TilePlan, monitor_bands
from agrimon.products.cog import Layer, write_geotiff
from agrimon.products.manifest import sha256_file
from agrimon.products.workspace import TILES_FOLDER
from agrimon.sources import get_source

if TYPE_CHECKING:  # torch is imported only by runs that map
    from agrimon.invasive.card import LoadedModel

_log = logging.getLogger(__name__)

RESULT_JSON = "result.json"
ZONAL_NPZ = "zonal.npz"
UNITS_NPZ = "units.npz"
#: Version of a tile folder's layout: a change makes earlier tiles unreadable, not wrong.
FORMAT = 1

CLEAR_COUNT = Layer(
    "clear_count", "Number of clear-sky observations", "uint16", 65535, "count", "nearest"
)

#: Season metrics written as layers, with the resampling their overviews use.
PHENOLOGY_LAYERS: dict[str, str] = {
    "start_doy": "nearest",
    "peak_doy": "nearest",
    "end_doy": "nearest",
    "season_length": "nearest",
    "peak_value": "average",
    "amplitude": "average",
    "integral": "average",
    "dry_min": "average",
    "dry_wet_ratio": "average",
}

# RunSpec fields that never change a tile's pixels (where products go, how they are
# published, what compute runs them), and those hashed through their content instead.
_NOT_PIXELS = {
    "aoi",
    "out",
    "max_area_km2",
    "dask_address",
    "workers",
    "invasive_model",
    "yield_model",
    "fields",
    "mmu_ha",
    "reference",
    "compare",
    "change",
    "force",
    "source_settings",
}
# Source settings that say which data a source reads (not credentials, cache or retries).
_DATA_SETTINGS = (
    "level",
    "stac_preset",
    "stac_url",
    "max_cloud",
    "local_path",
    "sh_preset",
    "sh_base_url",
)


def phenology_params(*, southern: bool) -> phenology.PhenologyParams:
    """Season calendar of the AOI's hemisphere: July–June south, January–December north."""
    if southern:
        return phenology.PhenologyParams()
    return phenology.PhenologyParams(
        season_start=(1, 1), dry_months=(2, 3, 4), wet_months=(7, 8, 9)
    )


def product_layers(spec: RunSpec) -> dict[str, Layer]:
    """The raster products of a run computed from its scenes, by file stem.

    One median per index, the clear-observation count and, for periods long enough, the
    season metrics of the first index (``<index>_<metric>``).
    """
    layers = {
        f"{name}_median": Layer(
            f"{name}_median",
            f"Median {name.upper()} of clear observations",
            "float32",
            float("nan"),
            "1",
            "average",
        )
        for name in spec.indices
    }
    layers[CLEAR_COUNT.name] = CLEAR_COUNT
    if spec.wants_phenology:
        first = spec.indices[0]
        for metric, resampling in PHENOLOGY_LAYERS.items():
            units = phenology.METRICS[metric]
            title = f"{first.upper()} phenology: {metric.replace('_', ' ')} ({units})"
            layers[f"{first}_{metric}"] = Layer(
                f"{first}_{metric}", title, "float32", float("nan"), units, resampling
            )
    return layers


@dataclass(frozen=True, eq=False)
class TileComposite:
    """Lazy results of one tile.

    Attributes:
        tile: The tile.
        layers: Seasonal raster layers by product name.
        features: The encroachment model's features, when the run maps with a per-pixel
            model (computed with the other layers, from the same scenes).
        series: Index time series, NaN where not clear (for the zonal statistics).
        clear: Clear-sky mask ``(time, y, x)``.
    """

    tile: Tile
    layers: dict[str, xr.DataArray]
    series: xr.Dataset
    clear: xr.DataArray
    features: xr.DataArray | None = None


def load_stack(spec: RunSpec, tile_plan: TilePlan) -> xr.Dataset:
    """Lazy scene stack of one tile with the bands the monitor needs.

    With an encroachment model that is every band (its features use them all).
    """
    if not tile_plan.scenes:
        raise SourceError(
            f"source '{spec.source}' has no scenes for tile {tile_plan.tile.id} between "
            f"{spec.start} and {spec.end}: widen the period with --start/--end"
        )
    source = get_source(spec.source, spec.source_settings)
    return source.load(
        tile_plan.tile, tile_plan.scenes, bands=monitor_bands(spec), chunk_px=spec.chunk_px
    )


def composite_tile(spec: RunSpec, tile: Tile, stack: xr.Dataset) -> TileComposite:
    """Clear mask, the selected indices and their seasonal composites for one tile (lazy)."""
    clear = masks.clear_mask(stack, invalid=spec.invalid_scl)
    series = spectral.compute_indices(stack, spec.indices, clear=clear)
    layers = {f"{name}_median": composites.median(series[name]) for name in spec.indices}
    layers[CLEAR_COUNT.name] = masks.clear_count(clear)
    if spec.wants_phenology:
        first = spec.indices[0]
        params = phenology_params(southern=tile.hemisphere == "S")
        season = phenology.phenology(series[first], params)
        for metric in PHENOLOGY_LAYERS:
            layers[f"{first}_{metric}"] = season[metric]
    features = None
    model = monitor_model(spec)
    if model is not None and model_halo(model) == 0:
        params = phenology_params(southern=tile.hemisphere == "S")
        features = feature_stack(
            stack,
            SEASON_V1,
            season=season_window(spec.start, spec.end, params),
            params=params,
            invalid_scl=spec.invalid_scl,
        )
    return TileComposite(tile=tile, layers=layers, series=series, clear=clear, features=features)


def model_halo(model: Path) -> int:
    """Pixels of context the encroachment model reads around each window."""
    from agrimon.invasive.card import model_config  # torch: only when mapping

    return model_config(model).halo


def inside_mask(tile: Tile) -> NDArray[np.bool_]:
    """True for the pixels of ``tile.geobox`` whose centre lies in the tile's footprint."""
    geobox = tile.geobox
    if tile.footprint is None:
        return np.ones(geobox.shape, dtype=bool)
    outside = geometry_mask(
        [tile.footprint], out_shape=geobox.shape, transform=geobox.affine, all_touched=False
    )
    return np.asarray(~outside, dtype=bool)


# --- keys ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of agrimon's version and every module of the installed package.

    A tile computed by other code is never reused, even from an edited checkout whose git
    commit has not changed.
    """
    root = Path(agrimon.__file__).parent
    digest = hashlib.sha256(agrimon.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def frame_digest(frame: gpd.GeoDataFrame | None) -> str | None:
    """SHA-256 of a vector layer's attributes, geometries and CRS (None for None)."""
    if frame is None:
        return None
    return hashlib.sha256(frame.to_json(sort_keys=True).encode()).hexdigest()


def tile_key(
    spec: RunSpec,
    tile_plan: TilePlan,
    *,
    zones: str | None,
    units: str | None,
    model: str | None,
    code: str,
) -> str:
    """The cache key of a tile's work: a SHA-256 of everything its pixels depend on.

    Args:
        spec: Run parameters (only those that change pixels count).
        tile_plan: The tile and its scenes.
        zones: :func:`frame_digest` of the AOI's zones.
        units: :func:`frame_digest` of the yield forecast's fields, or None.
        model: SHA-256 of the encroachment checkpoint, or None.
        code: :func:`code_digest`.
    """
    tile = tile_plan.tile
    settings = spec.source_settings.model_dump(mode="json")
    record = {
        "format": FORMAT,
        "spec": spec.model_dump(mode="json", exclude=_NOT_PIXELS),
        "source": {k: settings[k] for k in _DATA_SETTINGS},
        "tile": {
            "id": tile.id,
            "crs": str(tile.geobox.crs),
            "affine": list(tile.geobox.affine)[:6],
            "shape": list(tile.geobox.shape),
            "footprint": None if tile.footprint is None else tile.footprint.wkb_hex,
        },
        "scenes": [[s.id, s.time.isoformat()] for s in tile_plan.scenes],
        "zones": zones,
        "units": units,
        "model": model,
        "code": code,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


# --- the unit of work ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TileWork:
    """Everything one tile's work needs, picklable for another process.

    Attributes:
        spec: Run parameters.
        tile_plan: The tile and its scenes.
        zones: The AOI's zones (zonal statistics).
        units: The fields of a yield forecast, or None.
        key: :func:`tile_key` of this work.
        folder: Where its results go (``<work>/tiles/<key>``).
    """

    spec: RunSpec
    tile_plan: TilePlan
    zones: gpd.GeoDataFrame
    units: gpd.GeoDataFrame | None
    key: str
    folder: Path

    @property
    def tile(self) -> Tile:
        """The tile."""
        return self.tile_plan.tile


@dataclass(frozen=True)
class TileResult:
    """A finished tile: where its results are, and its encroachment scores.

    Attributes:
        tile: The tile.
        folder: Its results' folder.
        layers: Raster layers it holds (``<name>.tif`` each).
        confusion: ``[[tn, fp], [fn, tp]]`` of its map against the demo truth, or None.
        computed: True when this call computed it, False when it was reused.
        worker: ``host:pid`` of the process that computed it.
    """

    tile: Tile
    folder: Path
    layers: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...] | None = None
    computed: bool = True
    worker: str = ""

    def read(self, name: str) -> NDArray[Any]:
        """A layer's pixels on the tile's grid."""
        with rasterio.open(self.folder / f"{name}.tif") as src:
            return np.asarray(src.read(1))

    def zonal_partial(self) -> zonal.ZonalPartial:
        """The tile's per-zone partial statistics."""
        return zonal.load_partial(self.folder / ZONAL_NPZ)

    def units_partial(self) -> zonal.ZonalPartial | None:
        """The tile's partial statistics of the forecast's fields, or None."""
        path = self.folder / UNITS_NPZ
        return zonal.load_partial(path) if path.is_file() else None


def plan_work(
    spec: RunSpec,
    tiles: Sequence[TilePlan],
    work: Path,
    *,
    zones: gpd.GeoDataFrame,
    units: gpd.GeoDataFrame | None,
) -> list[TileWork]:
    """The work of each tile of a run whose work folder is ``work``."""
    model = monitor_model(spec)
    model_sha = None if model is None else sha256_file(_checkpoint_file(model))
    zones_sha, units_sha, code = frame_digest(zones), frame_digest(units), code_digest()
    out = []
    for tile_plan in tiles:
        key = tile_key(
            spec, tile_plan, zones=zones_sha, units=units_sha, model=model_sha, code=code
        )
        out.append(TileWork(spec, tile_plan, zones, units, key, work / TILES_FOLDER / key))
    return out


def _checkpoint_file(model: Path) -> Path:
    return model / "model.pt" if model.is_dir() else model


def finished(work: TileWork) -> TileResult | None:
    """The tile's persisted result, if it was finished before (else None)."""
    path = work.folder / RESULT_JSON
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        layers = tuple(str(n) for n in record["layers"])
        confusion = record.get("confusion")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("format") != FORMAT or record.get("key") != work.key:
        return None
    if not all((work.folder / f"{n}.tif").is_file() for n in layers):
        return None
    return TileResult(
        work.tile,
        work.folder,
        layers,
        None if confusion is None else tuple(tuple(int(v) for v in row) for row in confusion),
        computed=False,
        worker=str(record.get("worker", "")),
    )


def run_tile(work: TileWork) -> TileResult:
    """The tile's result: reused when finished before, else computed and persisted.

    Raises:
        SourceError: A scene could not be read (after the source's retries); the message
            names the tile and the scene.
        ProductError: The results could not be written (disk full, permissions).
    """
    done = finished(work)
    if done is not None:
        _log.info("tile %s: reusing its finished results", work.tile.id)
        return done
    try:
        if on_worker():
            # On a cluster the tile is this worker's whole task: its graph runs on as many
            # threads as the worker has (not one per core: workers share the cores), not
            # back through the scheduler; on one, in the task's own thread, with no pool
            # thread handing results back (which took a fifth of a second core).
            from distributed import get_worker

            threads = get_worker().state.nthreads
            adaptive_mmap_threshold()  # a worker that joined after the set-up
            scheduler = "sync" if threads == 1 else "threads"
            with dask.config.set(scheduler=scheduler, num_workers=threads):
                return _compute(work)
        return _compute(work)
    except SourceError as err:
        if work.tile.id in str(err):
            raise
        raise SourceError(f"tile {work.tile.id}: {err}") from err


def _compute(work: TileWork) -> TileResult:
    spec, tile_plan, tile = work.spec, work.tile_plan, work.tile
    comp = composite_tile(spec, tile, load_stack(spec, tile_plan))
    loaded = monitor_checkpoint(spec)
    base = product_layers(spec)
    names = list(base)
    inside = inside_mask(tile)
    frames = {
        ZONAL_NPZ: work.zones,
        **({UNITS_NPZ: work.units} if work.units is not None else {}),
    }
    # The zonal partials are made chunk by chunk in the same graph as the layers: each
    # chunk's series is loaded once and freed when its layers and partials are done, so
    # the tile's whole series is never held.
    lazy_partials = [
        zonal.zonal_partial_lazy(
            comp.series, frame, geobox=tile.geobox, inside=inside, footprint=tile.footprint
        )
        for frame in frames.values()
    ]
    probs = None
    if loaded is not None and comp.features is not None:
        from agrimon.invasive.mapping import lazy_probabilities

        # The model maps each chunk's features in the graph: the tile's feature image
        # (81 channels) is never held whole.
        probs = lazy_probabilities(loaded, comp.features, tile.geobox)
    with _torch_threads(loaded):
        computed = compute(  # type: ignore[no-untyped-call]
            *(comp.layers[n] for n in names), probs, *lazy_partials
        )
    probs = computed[len(names)]
    partials = dict(zip(frames, computed[len(names) + 1 :], strict=True))
    outside = ~inside
    layers: dict[str, tuple[Layer, NDArray[Any]]] = {
        name: (base[name], _blank(np.asarray(arr), outside, base[name].nodata))
        for name, arr in zip(names, computed, strict=False)
    }
    del computed  # the layers hold the arrays themselves, not copies
    confusion = None
    if loaded is not None:
        from agrimon.invasive.mapping import TileMapper

        mapper = TileMapper(spec, loaded, [tile_plan])
        mapped = mapper.map(tile, None, probs=None if probs is None else np.asarray(probs))
        probs = None
        for (name, layer), arr in zip(mapper.layers.items(), mapped, strict=True):
            layers[name] = (layer, arr)
        if mapper.confusion is not None:
            confusion = mapper.confusion.tolist()
    stage = work.folder.with_name(f".{work.key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        stage.mkdir(parents=True)
        for name, (layer, arr) in layers.items():
            # Fast ZSTD: a tile's layer is read back once, by the assembly.
            write_geotiff(
                stage / f"{name}.tif",
                tile.geobox,
                arr,
                dtype=layer.dtype,
                nodata=layer.nodata,
                compress="ZSTD",
                zstd_level=1,
            )
        for file, partial in partials.items():
            zonal.save_partial(partial, stage / file)
        record = {
            "format": FORMAT,
            "key": work.key,
            "tile": tile.id,
            "layers": list(layers),
            "confusion": confusion,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }
        (stage / RESULT_JSON).write_text(json.dumps(record, indent=1) + "\n")
        _publish(stage, work.folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _log.info("tile %s: computed and saved", tile.id)
    result = finished(work)
    if result is None:
        raise ProductError(f"tile {tile.id}: its results in {work.folder} could not be read back")
    return replace(result, computed=True)


def _torch_threads(loaded: LoadedModel | None) -> AbstractContextManager[None]:
    """One intra-op thread per forward pass while a graph maps (nothing without a model)."""
    if loaded is None:
        return nullcontext()
    from agrimon.invasive.model import torch_threads

    return torch_threads(1)


def _publish(stage: Path, folder: Path) -> None:
    """Rename a finished tile into place; a twin finished first by another worker wins."""
    try:
        stage.rename(folder)
    except OSError:
        if not (folder / RESULT_JSON).is_file():
            raise


def _blank(values: NDArray[Any], outside: NDArray[np.bool_], nodata: float) -> NDArray[Any]:
    """``values`` with ``nodata`` outside the footprint, in place where it can be."""
    if not values.flags.writeable or not np.can_cast(np.min_scalar_type(nodata), values.dtype):
        return np.where(outside, nodata, values)
    np.putmask(values, outside, nodata)
    return values


def warm_process(spec: RunSpec) -> None:
    """Set up this (worker) process for the run's tiles: its allocator, the model and torch.

    The process keeps freed blocks for the next chunk (:func:`agrimon.malloc.keep_freed_memory`)
    from the first tile's first chunk on: a chunk's series (tens of MiB per band) and a
    forward pass's layers are above glibc's mmap threshold, and zero-filling fresh pages for
    each of them cost the index stage a fifth of its time (``bench/indices.py``).
    """
    adaptive_mmap_threshold()
    keep_freed_memory()
    monitor_checkpoint(spec)  # loaded once per process, before the first tile


def monitor_checkpoint(spec: RunSpec) -> LoadedModel | None:
    """The run's encroachment checkpoint, loaded once per process and file version."""
    path = monitor_model(spec)
    if path is None:
        return None
    try:
        stat = _checkpoint_file(path).stat()
    except OSError:  # missing or unreadable: the loader refuses it in one line
        return _load_checkpoint(str(path), -1, -1)
    return _load_checkpoint(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=2)
def _load_checkpoint(path: str, mtime_ns: int, size: int) -> LoadedModel:
    from agrimon.invasive.mapping import load_for

    del mtime_ns, size  # they only key the cache
    return load_for(Path(path), SEASON_V1)


def summed_confusion(results: Sequence[TileResult]) -> NDArray[np.int64] | None:
    """The tiles' confusion matrices summed (None when no tile was scored)."""
    scored = [np.asarray(r.confusion, dtype=np.int64) for r in results if r.confusion is not None]
    return np.sum(scored, axis=0) if scored else None


def describe(results: Sequence[TileResult]) -> Mapping[str, int]:
    """How many tiles were computed and how many reused (for the log and the manifest)."""
    computed = sum(r.computed for r in results)
    return {"computed": computed, "reused": len(results) - computed}
