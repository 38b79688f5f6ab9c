"""Dry-run planning: what a run will fetch and cost, before any pixel is read."""

from __future__ import annotations

from dataclasses import dataclass

from agrimon.aoi import Aoi
from agrimon.config import RunSpec
from agrimon.grid import Tile, plan_tiles
from agrimon.sources.base import Scene, Source

#: Bands the monitor stage loads: red and nir for NDVI, SCL for the mask.
MONITOR_BANDS: tuple[str, ...] = ("red", "nir", "scl")
# Bytes per pixel of each loaded band as delivered (uint16 DN; SCL uint8).
_FETCH_BYTES = {"red": 2, "nir": 2, "scl": 1}
# Bytes per pixel and date held while a chunk's whole series is in memory: float32 red, nir,
# NDVI and its sorted copy, plus uint8 SCL and the boolean mask.
_WORK_BYTES_PER_OBS = 4 * 4 + 1 + 1
THREADS_DEFAULT = 2


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
        return self.observations * sum(_FETCH_BYTES[b] for b in MONITOR_BANDS)

    def peak_memory_bytes(self, threads: int = THREADS_DEFAULT) -> int:
        """Estimated peak working memory: one chunk's full series per thread, plus a tile.

        It depends on the chunk size and the number of dates, not on the AOI's size.
        """
        dates = max((len(t.scenes) for t in self.tiles), default=0)
        chunk = self.spec.chunk_px**2
        tile = self.spec.tile_px**2
        return threads * chunk * dates * _WORK_BYTES_PER_OBS + tile * (4 + 2)


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
