"""Dry-run planning: what a run will fetch and cost, before any pixel is read."""

from __future__ import annotations

from dataclasses import dataclass

from agrimon.aoi import Aoi
from agrimon.config import RunSpec
from agrimon.grid import Tile, plan_tiles
from agrimon.indices.spectral import required_bands
from agrimon.invasive.features import SEASON_V1, monitor_model
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
PROCESS_BYTES = 640 << 20
#: Memory per pixel of a tile in flight whatever the dates (calibrated on measured runs).
TILE_PIXEL_BYTES = 130
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
        :data:`PROCESS_BYTES`. Per thread, one chunk's whole series: float32 bands, each index
        and its sorted copy. Per tile in flight, every date's loaded bands, SCL, mask and
        indices (dask holds them until the tile's composites and zonal series are done), and
        per pixel the output layers, masks, zone pixel lists and the source's rendering
        (:data:`TILE_PIXEL_BYTES`). It depends on the chunk and tile sizes and the number of
        dates, not on the AOI's size; the COGs are finished with a fixed GDAL cache. A run
        that maps encroachment also holds every band of a chunk's series and each tile's
        feature image. Measured peaks on 2 cores, one tile in flight: 0.76 GiB for a 10-day
        run of the default AOI, 3.6 GiB for the default demo year with its model, 0.74 GiB
        for Vihiga county (two UTM zones, 16 tiles, 10 days); this predicts each within 10 %.
        """
        dates = max((len(t.scenes) for t in self.tiles), default=0)
        n_bands = len(index_bands(self.spec)) - 1
        n_idx = len(self.spec.indices)
        tile = min(self.spec.tile_px**2, max((t.pixels for t in self.tiles), default=0))
        chunk = min(self.spec.chunk_px**2, tile)
        per_obs_chunk = 4 * n_bands + 8 * n_idx
        per_obs_tile = 4 * n_bands + 2 + 8 * n_idx
        mapping = 0
        if monitor_model(self.spec) is not None:
            # Every band of a chunk's series, and each tile's feature image.
            extra_bands = len(monitor_bands(self.spec)) - 1 - n_bands
            channels = len(SEASON_V1.channels)
            mapping = (
                threads * chunk * dates * 4 * extra_bands + TILES_IN_FLIGHT * tile * 4 * channels
            )
        return (
            PROCESS_BYTES
            + threads * chunk * dates * per_obs_chunk
            + TILES_IN_FLIGHT * tile * (TILE_PIXEL_BYTES + dates * per_obs_tile)
            + mapping
        )


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
