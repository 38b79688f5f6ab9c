"""Run parameters: what a flow takes, validated once at the edge."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agrimon.aoi import DEFAULT_AOI, DEFAULT_MAX_AREA_KM2
from agrimon.errors import ConfigError
from agrimon.grid import DEFAULT_TILE_PX
from agrimon.indices.masks import DEFAULT_INVALID_SCL
from agrimon.indices.spectral import parse_indices
from agrimon.sources.base import DEFAULT_CHUNK_PX
from agrimon.sources.settings import SourceSettings

#: The default season: July 2023 to June 2024 in northern Namibia, the dry season before and
#: the rains with sowing to harvest (what phenology's dry/wet ratio needs).
DEFAULT_START = date(2023, 7, 1)
DEFAULT_END = date(2024, 6, 30)
#: Shortest period for which phenology layers are computed.
MIN_PHENOLOGY_DAYS = 120
DEFAULT_OUT = Path("outputs")
#: The shipped encroachment checkpoint, trained on the synthetic demo world (see its card).
SHIPPED_INVASIVE_MODEL = (
    Path(__file__).resolve().parents[2] / "models" / "invasive-demo" / "model.pt"
)
#: The shipped yield checkpoint, trained on the demo world's field history (see its card).
SHIPPED_YIELD_MODEL = Path(__file__).resolve().parents[2] / "models" / "yield-demo" / "model.pt"

SourceName = Literal["demo", "stac", "sentinelhub", "local"]


class RunSpec(BaseModel):
    """Everything one monitor run depends on.

    Attributes:
        aoi: AOI file (GeoJSON, GeoPackage, Shapefile, zipped Shapefile, KML).
        start: First day of the period (inclusive).
        end: Last day of the period (inclusive).
        source: Scene source name.
        out: Root folder of products; a run writes ``out/<aoi>/<start>_<end>/``.
        tile_px: Tile side in pixels.
        chunk_px: Dask chunk side in pixels (bounds memory).
        max_area_km2: Largest AOI accepted.
        invalid_scl: SCL classes masked as not clear.
        source_settings: Endpoints, credentials, cache and retries of the real sources.
        phenology: Write season metrics of the first index (when the period spans at least
            ``MIN_PHENOLOGY_DAYS``).
        indices: Spectral indices to composite (names from ``agrimon.indices.spectral``); a
            comma-separated string is accepted.
        dask_address: Dask scheduler to compute on (else ``DASK_SCHEDULER_ADDRESS``, else
            local threads).
        invasive_model: Encroachment checkpoint to map with: a path, ``"none"``, or
            ``"auto"`` (the shipped demo checkpoint for demo runs over a whole season).
        mmu_ha: Minimum mapping unit of the encroachment polygons, hectares.
        reference: A filled-in field-check sample (``agrimon sample``) of this AOI: the run
            then writes the area-adjusted estimates of its map (``assessment.json``).
        yield_model: Yield checkpoint to forecast with: a path, ``"none"``, or ``"auto"``
            (the shipped demo model for demo runs, forecasting the demo world's fields).
        fields: Vector file of the fields or regions to forecast (a ``name`` each);
            default: the demo fields (demo runs with ``auto``), else the AOI's zones.
        compare: An earlier run's folder to write change products against; default the
            newest complete run of the same AOI whose period ends before this one's.
        change: Write change products against an earlier run (``--no-change``: never).
        force: Run again although the products exist (else a complete run is a no-op).
            Tiles an interrupted run finished are reused either way: their keys hash
            every input and agrimon's code.
        workers: Local worker processes computing tiles side by side (a local Dask
            cluster); 1 computes them one after the other in this process. Ignored with
            ``dask_address``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    aoi: Path = DEFAULT_AOI
    start: date = DEFAULT_START
    end: date = DEFAULT_END
    source: SourceName = "demo"
    out: Path = DEFAULT_OUT
    tile_px: int = Field(default=DEFAULT_TILE_PX, ge=64, le=10980)
    chunk_px: int = Field(default=DEFAULT_CHUNK_PX, ge=64, le=4096)
    max_area_km2: float = Field(default=DEFAULT_MAX_AREA_KM2, gt=0)
    invalid_scl: tuple[int, ...] = DEFAULT_INVALID_SCL
    source_settings: SourceSettings = SourceSettings()
    dask_address: str | None = None
    indices: tuple[str, ...] = ("ndvi",)
    phenology: bool = True
    invasive_model: str = "auto"
    mmu_ha: float = Field(default=0.5, ge=0, le=10_000)
    reference: Path | None = None
    yield_model: str = "auto"
    fields: Path | None = None
    compare: Path | None = None
    change: bool = True
    force: bool = False
    workers: int = Field(default=1, ge=1, le=256)

    @field_validator("indices", mode="before")
    @classmethod
    def _known_indices(cls, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            return parse_indices(value)
        if isinstance(value, list | tuple):
            return parse_indices(",".join(str(v) for v in value))
        raise ValueError("give index names, e.g. ndvi,evi")

    @model_validator(mode="after")
    def _period_is_ordered(self) -> RunSpec:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}: swap --start and --end")
        today = date.today()
        if self.start > today:
            raise ValueError(
                f"start {self.start} is after today ({today}): no scene exists yet; "
                "give a --start in the past"
            )
        return self

    @property
    def wants_phenology(self) -> bool:
        """Whether phenology layers are made: asked for, and a period long enough for them."""
        return self.phenology and (self.end - self.start).days + 1 >= MIN_PHENOLOGY_DAYS

    @property
    def period(self) -> str:
        """The period as ``start_end`` (the product folder's name)."""
        return f"{self.start.isoformat()}_{self.end.isoformat()}"


#: Fields whose command-line name is not ``--`` + the field name with dashes.
_FLAGS = {"aoi": "AOI", "max_area_km2": "--max-area", "timeout_s": "--timeout"}


def flag_name(loc: tuple[int | str, ...]) -> str:
    """The command-line option of a field: ``("source_settings", "max_cloud")`` is --max-cloud."""
    names = [str(p) for p in loc if isinstance(p, str)]
    if not names:
        return "run parameters"
    field = names[-1] if names[0] == "source_settings" else names[0]
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def make_spec(**params: object) -> RunSpec:
    """Build a :class:`RunSpec`, turning validation errors into one-line ConfigErrors.

    The message names the command-line option (``--tile-px``), not the field.
    """
    try:
        return RunSpec.model_validate(params)
    except ValidationError as err:
        first = err.errors()[0]
        where = flag_name(tuple(first["loc"]))
        msg = str(first["msg"]).removeprefix("Value error, ")
        if first["loc"] and first["type"] != "value_error":
            value = first.get("input")
            shown = "" if isinstance(value, dict | list) else f" {value!r}"
            msg = msg[:1].lower() + msg[1:]
            raise ConfigError(f"invalid {where}{shown}: {msg}") from err
        raise ConfigError(f"invalid {where}: {msg}") from err
