"""Mapping with an encroachment checkpoint: a feature raster, an AOI, the monitor's tiles.

The inference side of the encroachment job, apart from training (:mod:`agrimon.invasive.
pipeline`): it needs torch and the model, not the training stack (torchgeo's datasets,
scikit-learn), so that a worker that only maps loads in seconds what it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
import xarray as xr
from dask.base import compute, tokenize
from odc.geo.geobox import GeoBox

from agrimon.config import RunSpec
from agrimon.errors import ConfigError
from agrimon.grid import Tile
from agrimon.invasive import features as feats
from agrimon.invasive import products
from agrimon.invasive.card import LoadedModel, load_checkpoint
from agrimon.invasive.features import check_season, monitor_model
from agrimon.invasive.model import torch_threads
from agrimon.plan import TilePlan
from agrimon.products.cog import CogWriter, Layer
from agrimon.products.folder import staged_folder
from agrimon.sources import get_source
from agrimon.sources.base import ALL_BANDS

# --- computing features ---------------------------------------------------------------


def _southern(tile: Tile) -> bool:
    return tile.hemisphere == "S"


def _phenology_params(southern: bool) -> Any:
    from agrimon.tilework import phenology_params  # it imports this package

    return phenology_params(southern=southern)


def tile_features(
    spec: RunSpec, tile_plan: TilePlan, feature_set: feats.FeatureSet = feats.SEASON_V1
) -> xr.DataArray:
    """Lazy feature image of one tile, computed through the index stage."""
    params = _phenology_params(_southern(tile_plan.tile))
    season = feats.season_window(spec.start, spec.end, params)
    source = get_source(spec.source, spec.source_settings)
    stack = source.load(tile_plan.tile, tile_plan.scenes, bands=ALL_BANDS, chunk_px=spec.chunk_px)
    return feats.feature_stack(
        stack, feature_set, season=season, params=params, invalid_scl=spec.invalid_scl
    )


# --- feature rasters ------------------------------------------------------------------


def raster_grid(path: Path) -> tuple[GeoBox, tuple[str, ...], str | None]:
    """Grid, band names and feature-set tag of a feature GeoTIFF.

    Raises:
        ConfigError: The file is missing, unreadable, single-band without a CRS, or holds
            integer data without nodata.
    """
    if not path.is_file():
        raise ConfigError(f"feature raster {path} does not exist: check --features")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise ConfigError(
                    f"feature raster {path} has no CRS: save it with one (e.g. gdal_edit -a_srs)"
                )
            names = tuple(d or f"band{i + 1}" for i, d in enumerate(src.descriptions))
            grid = GeoBox((src.height, src.width), src.transform, src.crs.to_wkt())
            return grid, names, src.tags().get("FEATURE_SET")
    except rasterio.errors.RasterioIOError as err:
        raise ConfigError(f"feature raster {path} cannot be read ({err}): give a GeoTIFF") from err


def raster_feature_set(path: Path) -> feats.FeatureSet:
    """The feature set a raster holds: the computed set it was written as, or its bands."""
    _, names, tag = raster_grid(path)
    if tag in feats.FEATURE_SETS and feats.FEATURE_SETS[tag].channels == names:
        return feats.FEATURE_SETS[tag]
    return feats.raster_feature_set(names)


# --- prediction -----------------------------------------------------------------------


def load_for(model: Path, feature_set: feats.FeatureSet) -> LoadedModel:
    """Load a checkpoint for these features, refusing any other feature set."""
    return load_checkpoint(model, feature_set=feature_set)


def predict_features_file(model: Path, features: Path, out: Path, **kwargs: Any) -> dict[str, Path]:
    """Map a feature raster with a checkpoint into ``out`` (atomically)."""
    from agrimon.invasive.predict import predict_raster

    loaded = load_for(model, raster_feature_set(features))
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} exists and is not empty: choose a new folder")
    with staged_folder(out) as folder:
        written = predict_raster(
            loaded.model,
            features,
            folder,
            classes=loaded.classes,
            target=loaded.target,
            halo=loaded.config.halo,
            **kwargs,
        )
    return {k: out / p.name for k, p in written.items()}


# --- mapping an AOI -------------------------------------------------------------------


@dataclass(frozen=True)
class GridTile(Tile):
    """A tile whose sources load ``grid`` instead of the tile's own pixel grid (a halo)."""

    grid: GeoBox | None = field(default=None, compare=False, repr=False)

    @property
    def geobox(self) -> GeoBox:
        """The grid to load."""
        assert self.grid is not None
        return self.grid


def tile_reader(
    spec: RunSpec, tile_plan: TilePlan, feature_set: feats.FeatureSet = feats.SEASON_V1
) -> Callable[[GeoBox], np.ndarray]:
    """Features of any grid around a tile, computed from the tile's scenes (for halos)."""
    tile = tile_plan.tile

    def read(grid: GeoBox) -> np.ndarray:
        padded = GridTile(tile.epsg, tile.col, tile.row, tile.size, tile.res, None, grid)
        lazy = tile_features(spec, TilePlan(padded, tile_plan.scenes), feature_set)
        (values,) = compute(lazy)  # type: ignore[no-untyped-call]
        return np.asarray(values, dtype=np.float32)

    return read


def map_tile(
    loaded: LoadedModel,
    read: Callable[[GeoBox], np.ndarray],
    tile: Tile,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class, probability and uncertainty of one tile, nodata outside the AOI."""
    from agrimon.invasive.predict import predict_tile

    with torch_threads(1):
        probs = predict_tile(loaded.model, read, tile.geobox, halo=loaded.config.halo)
    return tile_products(loaded, probs, tile)


def lazy_probabilities(loaded: LoadedModel, features: xr.DataArray, grid: GeoBox) -> da.Array:
    """Class probabilities ``(classes, y, x)`` of a per-pixel model, chunk by chunk.

    The model runs on each spatial chunk of the (dask-backed) features as soon as that
    chunk is computed, in the same graph, so a tile's whole feature image is never held:
    only the probabilities are. A per-pixel model (no halo) gives each pixel the same
    probabilities whatever the chunk around it. Compute it under ``torch_threads(1)``: the
    chunks run on dask's threads, each forward pass on one.

    Raises:
        ValueError: The model reads a halo (it needs :func:`map_tile` with a reader).
    """
    from agrimon.invasive.predict import predict_tile

    if loaded.config.halo:
        raise ValueError("a model with a halo cannot be mapped chunk by chunk")
    data = features.transpose("band", "y", "x").data
    if not isinstance(data, da.Array):
        data = da.from_array(data)  # type: ignore[no-untyped-call]
    data = data.rechunk({0: -1})
    classes = len(loaded.classes)

    def block(values: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        (y0, y1), (x0, x1) = block_info[0]["array-location"][1:]
        chunk = grid[y0:y1, x0:x1]
        return predict_tile(loaded.model, _given(values, chunk), chunk, halo=0)

    probs: da.Array = data.map_blocks(
        block,
        chunks=((classes,), *data.chunks[1:]),
        dtype=np.float32,
        name=f"probabilities-{tokenize(data.name, str(loaded.path), loaded.card.get('sha256'))}",
    )
    return probs


def tile_products(
    loaded: LoadedModel, probs: np.ndarray, tile: Tile
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class, probability and uncertainty of a tile's probabilities, nodata outside the AOI."""
    from agrimon.invasive.predict import class_products
    from agrimon.invasive.products import CLASS_NODATA, PERCENT_NODATA
    from agrimon.tilework import inside_mask

    label, probability, uncertainty = class_products(probs, loaded.classes.index(loaded.target))
    inside = inside_mask(tile)
    return (
        np.where(inside, label, CLASS_NODATA).astype(np.uint8),
        np.where(inside, probability, PERCENT_NODATA).astype(np.uint8),
        np.where(inside, uncertainty, PERCENT_NODATA).astype(np.uint8),
    )


def map_layers(loaded: LoadedModel) -> dict[str, Layer]:
    """The three map products of a model, by file stem."""
    return products.map_layers(loaded.classes, loaded.target)


def predict_aoi(model: Path, spec: RunSpec, out: Path) -> dict[str, Path]:
    """Map an AOI with a checkpoint: features tile by tile from the source, three COGs."""
    from agrimon.monitor import make_plan, require_scenes, zone_grids

    check_season(spec)
    loaded = load_for(model, feats.SEASON_V1)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} exists and is not empty: choose a new folder")
    plan = make_plan(spec)
    require_scenes(plan)
    grids = zone_grids([t.tile for t in plan.tiles])
    layers = map_layers(loaded)
    written: dict[str, Path] = {}
    with staged_folder(out) as folder:
        for epsg, grid in grids.items():
            suffix = "" if len(grids) == 1 else f"_{epsg % 100:02d}{'N' if epsg < 32700 else 'S'}"
            with ExitStack() as stack:
                writers = {
                    name: stack.enter_context(
                        CogWriter(folder / f"{name}{suffix}.tif", grid, layer)
                    )
                    for name, layer in layers.items()
                }
                for tp in (t for t in plan.tiles if t.tile.epsg == epsg):
                    values = map_tile(loaded, tile_reader(spec, tp), tp.tile)
                    for writer, value in zip(writers.values(), values, strict=True):
                        writer.write(tp.tile.geobox, value)
            written.update({n: out / f"{n}{suffix}.tif" for n in layers})
    return written


# --- in the monitor run ---------------------------------------------------------------


def check_monitor_model(spec: RunSpec) -> LoadedModel | None:
    """Load (and so check) the run's checkpoint before the run starts; None without one.

    Raises:
        ModelError: The checkpoint is missing, tampered with or for other features.
        ConfigError: The period holds no whole season.
    """
    from agrimon.tilework import monitor_checkpoint  # it imports this module

    if monitor_model(spec) is None:
        return None
    check_season(spec)
    return monitor_checkpoint(spec)  # loaded once per process: the tiles reuse it


def _given(features: np.ndarray, grid: GeoBox) -> Callable[[GeoBox], np.ndarray]:
    """A reader of features already computed for ``grid`` (per-pixel models read no halo)."""

    def read(block: GeoBox) -> np.ndarray:
        if block != grid:
            raise ValueError("features were computed for the tile only, without a halo")
        return features

    return read


class TileMapper:
    """Maps the monitor's tiles with a checkpoint and scores them against the demo truth."""

    def __init__(self, spec: RunSpec, loaded: LoadedModel, plan_tiles: Sequence[TilePlan]):
        self.spec = spec
        self.loaded = loaded
        self.layers = map_layers(loaded)
        self._scenes = {tp.tile.id: tp for tp in plan_tiles}
        # Scored as target against the rest: (other, target) confusion on the demo truth.
        self.confusion = np.zeros((2, 2), dtype=np.int64) if spec.source == "demo" else None

    def features(self, spec: RunSpec, tile_plan: TilePlan) -> xr.DataArray | None:
        """Lazy features to compute with the tile's other layers (per-pixel models only)."""
        return None if self.loaded.config.halo else tile_features(spec, tile_plan)

    def map(
        self, tile: Tile, features: np.ndarray | None, *, probs: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """Class, probability and uncertainty of a tile.

        From its probabilities when given (:func:`lazy_probabilities`), else from its
        features, read with a halo when not given.
        """
        if probs is not None:
            values = tile_products(self.loaded, probs, tile)
        else:
            if features is not None:
                read = _given(features, tile.geobox)
            else:
                read = tile_reader(self.spec, self._scenes[tile.id])
            values = map_tile(self.loaded, read, tile)
        if self.confusion is not None:
            self._score(tile, values[0])
        return values

    def _score(self, tile: Tile, label: np.ndarray) -> None:
        from agrimon.invasive.metrics import confusion
        from agrimon.sources.demo import encroached_truth

        assert self.confusion is not None
        truth = np.asarray(encroached_truth(tile.geobox).values).astype(np.int64)
        known = label > 0
        target = self.loaded.classes.index(self.loaded.target)
        predicted = (label[known].astype(np.int64) - 1 == target).astype(np.int64)
        self.confusion += confusion(truth[known], predicted, 2)

    def accuracy(self) -> dict[str, Any] | None:
        """The run's map scored against the demo truth (demo runs only)."""
        if self.confusion is None:
            return None
        loaded = self.loaded
        model = products.MapModel(loaded.path, loaded.classes, loaded.target, loaded.card)
        return model.accuracy(self.confusion)
