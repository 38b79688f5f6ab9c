"""Dry-run planning: what a run will fetch and cost, before any pixel is read."""

from __future__ import annotations

from dataclasses import dataclass

from agrimon.aoi import Aoi
from agrimon.config import RunSpec
from agrimon.grid import Tile, plan_tiles
from agrimon.indices.spectral import required_bands
from agrimon.invasive.features import monitor_model
from agrimon.sources.base import BANDS, SCL, Scene, Source

# Bytes per pixel of each loaded band as delivered (uint16 DN; SCL uint8).
_DN_BYTES, _SCL_BYTES = 2, 1


def monitor_bands(spec: RunSpec) -> tuple[str, ...]:
    """Bands the monitor loads: those its indices need, and what the clear mask needs.

    That is SCL; where a product may have none (L1C, local files), also blue and red for
    the reflectance cloud test (``masks.cloud_test``). A run that maps encroachment loads
    every band (its features use them all).
    """
    if monitor_model(spec) is not None:
        return (*BANDS, SCL)
    return index_bands(spec)


def index_bands(spec: RunSpec) -> tuple[str, ...]:
    """The bands of :func:`monitor_bands` without an encroachment model."""
    bands = set(required_bands(spec.indices))
    if spec.source == "local" or spec.source_settings.level == "l1c":
        bands |= {"blue", "red"}
    return (*(b for b in BANDS if b in bands), SCL)


THREADS_DEFAULT = 2
#: Resident memory of the ``agrimon run`` process beside its tile in flight: Python, numpy,
#: GDAL, dask, Prefect's client and what the assembly of the products holds (pictures,
#: report, QGIS project); calibrated on the measured runs below.
PROCESS_BYTES = 560 << 20
#: What a run that maps adds once per process: torch and the loaded model.
MODEL_PROCESS_BYTES = 670 << 20
#: Memory of a tile in flight per pixel and date (its output layers, masks, the chunks'
#: zonal partials until they are merged, the GeoTIFFs being written), and what mapping
#: adds per pixel (probabilities, inference buffers). Calibrated by ``bench/tile_memory.py``
#: (one 1024-px tile, 73 dates, 256- and 512-px chunks, with and without the model) and
#: the measured runs of ``peak_memory_bytes``, with a demo or local source (one task per
#: chunk's series).
TILE_OBS_BYTES = 2.39
MAPPING_PIXEL_BYTES = 30
#: Per thread, bytes per pixel-date of a chunk's series, per loaded band (its float32
#: series) and per index (the index, its masked and sorted copies, the season metrics'
#: smoothing), calibrated with the above.
BAND_OBS_BYTES = 4.06
INDEX_OBS_BYTES = 28.4
#: Per chunk of the tile and date: its zonal partials (a large zone's histogram), held
#: until the tile's chunks are merged.
CHUNK_DATE_BYTES = 40_000
#: Tiles a process computes at once: one (its chunks on every thread), see
#: :func:`agrimon.monitor.run_tiles`; a cluster's worker also holds one per task.
TILES_IN_FLIGHT = 1


@dataclass(frozen=True)
class TilePlan:
    """One tile and the scenes found for it."""

    tile: Tile
    scenes: tuple[Scene, ...]

    @property
    def pixels(self) -> int:
        """Pixels loaded per band and date."""
        height, width = self.tile.geobox.shape
        return int(height * width)


@dataclass(frozen=True, eq=False)
class RunPlan:
    """What a run will do: the AOI, its tiles, the scenes per tile and the estimates."""

    spec: RunSpec
    aoi: Aoi
    tiles: tuple[TilePlan, ...]

    @property
    def zones(self) -> tuple[int, ...]:
        """EPSG codes of the UTM zones the tiles lie in."""
        return tuple(sorted({t.tile.epsg for t in self.tiles}))

    @property
    def pixels(self) -> int:
        """Pixels per band and date over all tiles."""
        return sum(t.pixels for t in self.tiles)

    @property
    def observations(self) -> int:
        """Pixel-dates to load (pixels × scenes, summed over tiles)."""
        return sum(t.pixels * len(t.scenes) for t in self.tiles)

    @property
    def fetch_bytes(self) -> int:
        """Uncompressed volume of the bands to load."""
        bands = monitor_bands(self.spec)
        return self.observations * sum(_SCL_BYTES if b == SCL else _DN_BYTES for b in bands)

    def peak_memory_bytes(self, threads: int = THREADS_DEFAULT) -> int:
        """Estimated peak memory (resident set) of ``agrimon run``, the process included.

        The process itself (Python, numpy, GDAL, dask, Prefect's client) takes
        :data:`PROCESS_BYTES`, and :data:`MODEL_PROCESS_BYTES` more when it maps. A tile in
        flight holds, per thread, one chunk's whole series (:data:`BAND_OBS_BYTES` per band,
        every band when it maps, and :data:`INDEX_OBS_BYTES` per index): its composites,
        season metrics, encroachment map and zonal partials are computed chunk by chunk.
        Per pixel and date of the tile it holds the output layers and the rest
        (:data:`TILE_OBS_BYTES`; :data:`MAPPING_PIXEL_BYTES` per pixel when it maps), and
        per chunk and date the chunks' zonal partials (:data:`CHUNK_DATE_BYTES`). It
        depends on the chunk and tile sizes and the number of dates, not on the AOI's size;
        the COGs are finished with a fixed GDAL cache.
        """
        dates = max((len(t.scenes) for t in self.tiles), default=0)
        n_bands = len(monitor_bands(self.spec)) - 1
        n_idx = len(self.spec.indices)
        tile = min(self.spec.tile_px**2, max((t.pixels for t in self.tiles), default=0))
        chunk = min(self.spec.chunk_px**2, tile)
        per_obs_chunk = BAND_OBS_BYTES * n_bands + INDEX_OBS_BYTES * n_idx
        per_pixel = MAPPING_PIXEL_BYTES if monitor_model(self.spec) is not None else 0
        chunks = -(-tile // chunk) if chunk else 0
        return int(
            self.process_bytes()
            + threads * chunk * dates * per_obs_chunk
            + TILES_IN_FLIGHT
            * (tile * (per_pixel + dates * TILE_OBS_BYTES) + chunks * dates * CHUNK_DATE_BYTES)
        )

    def tile_memory_bytes(self, threads: int = THREADS_DEFAULT) -> int:
        """The part of :meth:`peak_memory_bytes` one tile in flight needs (no process)."""
        return self.peak_memory_bytes(threads) - self.process_bytes()

    def process_bytes(self) -> int:
        """The run's process without its tile: :data:`PROCESS_BYTES`, and the model's."""
        mapping = monitor_model(self.spec) is not None
        return PROCESS_BYTES + (MODEL_PROCESS_BYTES if mapping else 0)


def plan_run(spec: RunSpec, aoi: Aoi, source: Source) -> RunPlan:
    """Tile the AOI and ask the source which scenes cover each tile.

    Args:
        spec: Run parameters.
        aoi: The validated AOI.
        source: Where scenes come from.

    Returns:
        The plan; nothing has been loaded.
    """
    tiles = plan_tiles(aoi.geometry, tile_px=spec.tile_px)
    return RunPlan(
        spec=spec,
        aoi=aoi,
        tiles=tuple(TilePlan(t, source.find_scenes(t, spec.start, spec.end)) for t in tiles),
    )
