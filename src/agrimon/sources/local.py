"""The local source: a folder of GeoTIFFs or a static STAC catalog on disk.

Three layouts are read:

* **one multi-band GeoTIFF per date**, bands named by their descriptions (``B04`` or
  ``red``), the date from a tag (``DATETIME``, ``ACQUISITION_DATE``, ``TIFFTAG_DATETIME``…)
  or else from the file or folder name (``S2_L1C_2015-07-11.tif``, ``20150711T100008``);
* **one GeoTIFF per band and date**, the band from the description or the file name
  (``S2_20150711_B04.tif``, ``2015-07-11_red.tif``, ``2015-07-11/B04.tif``); files of the same
  acquisition time, folder and name (less band and resolution) make one scene;
* **a static STAC catalog** (``catalog.json``, ``collection.json``, or item JSON files), assets
  keyed by common name or band id (or named through ``eo:bands``), with ``raster:bands``
  scale/offset/nodata and the processing-baseline offset applied exactly once.

The module keeps the pure parts (names, tags, grouping, band choice) apart from the I/O
(scanning headers, warping windows). Scenes found at the same time on separate files are
mosaicked (first file first). Integer files hold digital numbers (reflectance × 10000);
float files hold reflectance already.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from functools import partial
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pystac
import rasterio
import shapely
import xarray as xr
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio import crs as rio_crs
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window, from_bounds
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from agrimon.errors import ConfigError, SourceError
from agrimon.grid import Tile
from agrimon.sources.bands import (
    BAND_IDS,
    DN_SCALE,
    common_name,
    dn_to_reflectance,
    reflectance_offset,
)
from agrimon.sources.base import ALL_BANDS, BANDS, DEFAULT_CHUNK_PX, SCL, Scene
from agrimon.sources.lazy import lazy_stack
from agrimon.sources.settings import SourceSettings

NAME = "local"
#: What the user is told whenever a folder cannot be read.
LAYOUTS = (
    "the local source reads one multi-band GeoTIFF per date with band descriptions "
    "(B04 or red…), one GeoTIFF per band and date (S2_20150711_B04.tif, 2015-07-11/B04.tif), "
    "or a static STAC catalog (catalog.json)"
)
#: File suffixes scanned as rasters.
RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".jp2"})
#: Tags holding the acquisition time, most specific first (upper case).
TIME_TAGS = (
    "ACQUISITION_DATETIME",
    "ACQUISITION_DATE",
    "SENSING_TIME",
    "SENSING_DATE",
    "DATE_ACQUIRED",
    "DATETIME",
    "START_DATETIME",
)
#: GDAL's TIFF DateTime: often the time the file was written, so only a fallback.
STAMP_TAG = "TIFFTAG_DATETIME"
CLOUD_TAGS = ("EO:CLOUD_COVER", "CLOUD_COVER", "CLOUDY_PIXEL_PERCENTAGE")
BASELINE_TAGS = ("S2:PROCESSING_BASELINE", "PROCESSING_BASELINE")
APPLIED_TAGS = ("EARTHSEARCH:BOA_OFFSET_APPLIED", "BOA_OFFSET_APPLIED")
#: Extra source pixels read around a block's window (guards rounding at the edges).
WINDOW_MARGIN_PX = 2
#: Largest sub-pixel shift between grids still read as aligned (far below any pick change).
ALIGN_TOLERANCE_PX = 1e-6
_PREVIEW = frozenset({"thumbnail", "overview", "visual", "tci"})

_DATE_RE = re.compile(
    r"(?<![0-9])(?P<y>(?:19|20)\d{2})(?P<sep>[-_]?)(?P<m>\d{2})(?P=sep)(?P<d>\d{2})"
    r"(?:[Tt](?P<H>\d{2}):?(?P<M>\d{2}):?(?P<S>\d{2}))?(?![0-9])"
)
_TIFF_TIME_RE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_TOKEN_RE = re.compile(r"[A-Za-z0-9]+")
_RESOLUTION_RE = re.compile(r"(?<![A-Za-z0-9])\d+m(?![A-Za-z0-9])")
_SEP_RUN_RE = re.compile(r"[-_. ]{2,}")


# --- pure: what names, tags and catalogs say -------------------------------------------


@dataclass(frozen=True)
class BandRef:
    """Where one band of one acquisition lives and how to turn it into reflectance.

    Attributes:
        path: File path or URL.
        index: 1-based band index in the file.
        scale: Reflectance per DN; None: decided by the file's data type when read
            (integers: 1e-4, floats: 1).
        offset: Reflectance offset added after scaling (baseline harmonisation included).
        nodata: Nodata value of the pixels; None: the file's, else 0 for integer files.
    """

    path: str
    index: int = 1
    scale: float | None = None
    offset: float = 0.0
    nodata: float | None = None

    def to_meta(self) -> dict[str, Any]:
        """JSON-like form stored in ``Scene.meta``."""
        return asdict(self)

    @classmethod
    def from_meta(cls, data: Mapping[str, Any]) -> BandRef:
        """Inverse of :meth:`to_meta`."""
        scale, nodata = data.get("scale"), data.get("nodata")
        return cls(
            path=str(data["path"]),
            index=int(data.get("index", 1)),
            scale=None if scale is None else float(scale),
            offset=float(data.get("offset", 0.0)),
            nodata=None if nodata is None else float(nodata),
        )


@dataclass(frozen=True)
class Entry:
    """One acquisition held by one file, one group of band files or one STAC item.

    Attributes:
        id: File stem, group name or item id.
        time: Acquisition time (UTC, naive).
        bands: Where each band is.
        footprint: Area covered, in lon/lat.
        cloud_cover: Percent, when known.
    """

    id: str
    time: datetime
    bands: Mapping[str, BandRef]
    footprint: BaseGeometry
    cloud_cover: float | None = None


@dataclass(frozen=True)
class BandFile:
    """A single-band file: one band of one acquisition, waiting to be grouped.

    Attributes:
        ref: Where the band is.
        band: Common name of the band.
        time: Acquisition time.
        folder: Folder of the file.
        name: File stem less band and resolution tokens (may be empty).
        footprint: Area covered, in lon/lat.
        cloud_cover: Percent, when known.
    """

    ref: BandRef
    band: str
    time: datetime
    folder: str
    name: str
    footprint: BaseGeometry
    cloud_cover: float | None = None


@dataclass(frozen=True)
class RasterHeader:
    """What a raster file's header says, read once by :func:`read_header`.

    Attributes:
        path: The file.
        count: Number of bands.
        descriptions: Band descriptions (None where unset).
        dtypes: Band data types.
        nodata: Band nodata values.
        scales: Band scales (GDAL metadata, 1 when unset).
        offsets: Band offsets (GDAL metadata, 0 when unset).
        tags: Dataset tags, keys in upper case.
        footprint: Area covered in lon/lat; None when the file has no CRS.
    """

    path: Path
    count: int
    descriptions: tuple[str | None, ...]
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    tags: Mapping[str, str]
    footprint: BaseGeometry | None


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def time_from_name(text: str) -> datetime | None:
    """First acquisition date (and time, when given) written in a name.

    Accepts ``2015-07-11``, ``2015_07_11``, ``20150711``, each optionally followed by
    ``T100008`` or ``T10:00:08``. Digits glued to longer numbers are not dates.

    Args:
        text: A file stem, folder name or free text.

    Returns:
        The time (midnight when only a date is written), or None.
    """
    for match in _DATE_RE.finditer(text):
        y, m, d = int(match["y"]), int(match["m"]), int(match["d"])
        if match["H"] is not None:
            try:
                return datetime(y, m, d, int(match["H"]), int(match["M"]), int(match["S"]))
            except ValueError:
                pass  # an impossible time of day: keep the date alone
        try:
            return datetime(y, m, d)
        except ValueError:
            continue
    return None


def parse_timestamp(text: str) -> datetime | None:
    """Time written in a tag or catalog field.

    Accepts ISO 8601 (``2015-07-11T10:00:08``, ``…Z``, with offsets) and TIFF
    (``2015:07:11 10:00:08``); other text is searched like a name.

    Returns:
        UTC time without tzinfo, or None when the text holds no date.
    """
    value = text.strip()
    if not value:
        return None
    tiff = _TIFF_TIME_RE.fullmatch(value)
    if tiff:
        try:
            y, mo, d, h, mi, sec = (int(g) for g in tiff.groups())
            return datetime(y, mo, d, h, mi, sec)
        except ValueError:
            return None
    try:
        return _naive_utc(datetime.fromisoformat(value))
    except ValueError:
        return time_from_name(value)


def pick_time(tags: Mapping[str, str], names: Sequence[str]) -> datetime | None:
    """Acquisition time of a file from its tags and names.

    An acquisition tag wins; then the first name (file stem, then folders) holding a date;
    ``TIFFTAG_DATETIME`` is only a fallback (software writes the export time there), or the
    time of day of a date-only name when both fall on the same day.

    Args:
        tags: Dataset tags, keys in upper case.
        names: File stem first, then enclosing folder names, nearest first.

    Returns:
        The time, or None when nothing holds a date.
    """
    for key in TIME_TAGS:
        when = parse_timestamp(tags.get(key, ""))
        if when is not None:
            return when
    stamp = parse_timestamp(tags.get(STAMP_TAG, ""))
    named = next((t for t in map(time_from_name, names) if t is not None), None)
    if named is None:
        return stamp
    if stamp is not None and stamp.date() == named.date() and named.time() == time(0):
        return stamp
    return named


def band_from_name(stem: str) -> tuple[str, tuple[int, int]] | None:
    """Band named in a file stem, searching tokens from the end.

    Args:
        stem: File name without suffix (``S2_20150711_B04``, ``2015-07-11_red``, ``B8A``).

    Returns:
        ``(common name, (start, end) of the token in the stem)``, or None.
    """
    for match in reversed(list(_TOKEN_RE.finditer(stem))):
        band = common_name(match.group(0))
        if band is not None:
            return band, match.span()
    return None


def scene_name(stem: str, span: tuple[int, int] | None) -> str:
    """A band file's stem less its band and resolution tokens: what its scene is called.

    ``S2_20150711_B04`` → ``S2_20150711``; ``T33TWM_20150711T100008_B11_20m`` →
    ``T33TWM_20150711T100008``; ``B04`` → ``""``.
    """
    rest = stem if span is None else stem[: span[0]] + stem[span[1] :]
    rest = _RESOLUTION_RE.sub("", rest)
    rest = _SEP_RUN_RE.sub(lambda m: m.group(0)[0], rest)
    return rest.strip("-_. ")


def bands_from_descriptions(descriptions: Sequence[str | None]) -> dict[str, int]:
    """``{common name: 1-based index}`` of the bands whose description names a band."""
    out: dict[str, int] = {}
    for i, text in enumerate(descriptions):
        band = common_name(text) if text else None
        if band is not None and band not in out:
            out[band] = i + 1
    return out


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _flag(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes"}


def _first_tag(tags: Mapping[str, str], keys: Iterable[str]) -> str | None:
    return next((tags[k] for k in keys if k in tags), None)


def classify(header: RasterHeader, root: Path) -> Entry | BandFile | str:
    """Turn a raster header into an acquisition (multi-band) or a band file (single band).

    Args:
        header: The file's header.
        root: The scanned folder (folder names below it may hold the date).

    Returns:
        An :class:`Entry` for a file with several bands, a :class:`BandFile` for a
        single-band file, or ``"unnamed"`` / ``"undated"`` when the file cannot be used.

    Raises:
        SourceError: For a usable-looking file without a coordinate reference system.
    """
    path = header.path
    bands = bands_from_descriptions(header.descriptions)
    span: tuple[int, int] | None = None
    if header.count == 1:
        hit = band_from_name(path.stem)
        if hit is not None:
            # The band token leaves the scene name even when the description names the band,
            # so that S2_20150711_B04.tif and S2_20150711_B08.tif group together.
            span = hit[1]
            bands = bands or {hit[0]: 1}
    if not bands:
        return "unnamed"
    try:
        folders = list(path.parent.relative_to(root).parts)[::-1]
    except ValueError:
        folders = []
    when = pick_time(header.tags, [path.stem, *folders])
    if when is None:
        return "undated"
    if header.footprint is None:
        raise SourceError(
            f"{path} has no coordinate reference system: write it with one "
            "(gdal_edit.py -a_srs EPSG:…) so the local source can place it"
        )
    baseline = _first_tag(header.tags, BASELINE_TAGS)
    applied = _flag(_first_tag(header.tags, APPLIED_TAGS))
    refs = {
        band: _file_band_ref(header, index, band == SCL, baseline, applied)
        for band, index in bands.items()
    }
    cloud = _float_or_none(_first_tag(header.tags, CLOUD_TAGS))
    if header.count > 1:
        return Entry(path.stem, when, refs, header.footprint, cloud)
    ((band, ref),) = refs.items()
    name = scene_name(path.stem, span)
    return BandFile(ref, band, when, str(path.parent), name, header.footprint, cloud)


def _file_band_ref(
    header: RasterHeader, index: int, is_scl: bool, baseline: str | None, applied: bool | None
) -> BandRef:
    dtype = np.dtype(header.dtypes[index - 1])
    integer = bool(np.issubdtype(dtype, np.integer))
    nodata = header.nodata[index - 1]
    if nodata is None and integer:
        nodata = 0.0  # Sentinel-2 DN convention
    if is_scl:
        return BandRef(str(header.path), index, 1.0, 0.0, nodata)
    gdal_scale, gdal_offset = header.scales[index - 1], header.offsets[index - 1]
    if gdal_scale != 1.0 or gdal_offset != 0.0:
        scale, declared = gdal_scale, gdal_offset  # the file says how to unscale itself
    else:
        scale, declared = (DN_SCALE, 0.0) if integer else (1.0, 0.0)
    # Float files hold reflectance already: harmonised, whatever the baseline.
    offset = reflectance_offset(declared, baseline, applied) if integer else declared
    return BandRef(str(header.path), index, scale, offset, nodata)


def group_band_files(files: Sequence[BandFile]) -> list[Entry]:
    """Group single-band files into acquisitions by time, folder and name.

    Args:
        files: Band files from :func:`classify`.

    Returns:
        One entry per group, named by the common file name (or the folder when the names
        are bare band ids), sorted by time and name.

    Raises:
        SourceError: When two files of one group hold the same band.
    """
    groups: dict[tuple[datetime, str, str], list[BandFile]] = defaultdict(list)
    for f in files:
        groups[(f.time, f.folder, f.name)].append(f)
    entries = []
    for (when, folder, name), members in sorted(groups.items()):
        refs: dict[str, BandRef] = {}
        for f in sorted(members, key=lambda f: f.ref.path):
            if f.band in refs:
                raise SourceError(
                    f"{refs[f.band].path} and {f.ref.path} both hold {f.band} of "
                    f"{when:%Y-%m-%d %H:%M}: "
                    "keep one file per band and date, or put them in separate folders"
                )
            refs[f.band] = f.ref
        footprint = shapely.union_all([f.footprint for f in members])
        known = [f.cloud_cover for f in members if f.cloud_cover is not None]
        cloud = max(known) if known else None
        entries.append(Entry(name or PurePath(folder).name, when, refs, footprint, cloud))
    return entries


def item_entry(item: pystac.Item) -> Entry | str:
    """The acquisition a STAC item describes.

    Assets keyed by a band id or common name come first; other data assets count through
    their ``eo:bands`` common names (previews such as ``visual`` never do).

    Returns:
        The entry, or ``"undated"`` / ``"unnamed"`` / ``"no geometry"`` when unusable.
    """
    props = item.properties
    when = item.datetime
    if when is None:
        when = parse_timestamp(str(props.get("start_datetime") or "")) or None
    if when is None:
        return "undated"
    baseline = props.get("s2:processing_baseline")
    applied = _flag(props.get("earthsearch:boa_offset_applied"))
    baseline = None if baseline is None else str(baseline)
    keyed: dict[str, BandRef] = {}
    listed: dict[str, BandRef] = {}
    for key, asset in item.assets.items():
        href = asset.get_absolute_href() or asset.href
        raster = list(asset.extra_fields.get("raster:bands") or [])
        band = common_name(key)
        if band is not None:
            keyed[band] = _asset_band_ref(href, 1, band, _at(raster, 0), baseline, applied)
            continue
        if _PREVIEW & {key.lower(), *(asset.roles or [])}:
            continue
        eo = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
        for i, info in enumerate(eo):
            label = info.get("common_name") or info.get("eo:common_name") or info.get("name")
            band = common_name(str(label)) if label else None
            if band is not None and band not in listed:
                listed[band] = _asset_band_ref(href, i + 1, band, _at(raster, i), baseline, applied)
    bands = {**listed, **keyed}
    if not bands:
        return "unnamed"
    if item.geometry is not None:
        footprint: BaseGeometry = shape(item.geometry)
    elif item.bbox is not None:
        half = len(item.bbox) // 2
        footprint = box(item.bbox[0], item.bbox[1], item.bbox[half], item.bbox[half + 1])
    else:
        return "no geometry"
    cloud = _float_or_none(props.get("eo:cloud_cover"))
    return Entry(item.id, _naive_utc(when), bands, footprint, cloud)


def _at(values: Sequence[Any], i: int) -> Mapping[str, Any]:
    value = values[i] if i < len(values) else {}
    return value if isinstance(value, Mapping) else {}


def _asset_band_ref(
    href: str,
    index: int,
    band: str,
    raster: Mapping[str, Any],
    baseline: str | None,
    applied: bool | None,
) -> BandRef:
    nodata = _float_or_none(raster.get("nodata"))
    if band == SCL:
        return BandRef(href, index, 1.0, 0.0, nodata)
    scale = _float_or_none(raster.get("scale"))
    if scale is None and str(raster.get("data_type", "")).startswith("float"):
        scale = 1.0
    declared = _float_or_none(raster.get("offset")) or 0.0
    return BandRef(href, index, scale, reflectance_offset(declared, baseline, applied), nodata)


def scenes_from_entries(entries: Iterable[Entry]) -> tuple[Scene, ...]:
    """Scenes of entries, one per acquisition time (entries at one time are mosaicked).

    Returns:
        Scenes sorted by time; ``meta["parts"]`` lists each entry's id and band refs.
    """
    by_time: dict[datetime, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_time[entry.time].append(entry)
    scenes = []
    for when in sorted(by_time):
        parts = sorted(by_time[when], key=lambda e: e.id)
        known = [e.cloud_cover for e in parts if e.cloud_cover is not None]
        meta = {
            "parts": [
                {"id": e.id, "bands": {b: r.to_meta() for b, r in sorted(e.bands.items())}}
                for e in parts
            ]
        }
        scenes.append(
            Scene(
                id="+".join(e.id for e in parts),
                time=when,
                cloud_cover=round(sum(known) / len(known), 2) if known else None,
                meta=meta,
            )
        )
    return tuple(scenes)


def scene_parts(scene: Scene) -> list[dict[str, BandRef]]:
    """Band refs of each file part of a scene found by :class:`LocalSource`.

    Raises:
        SourceError: For a scene that another source found.
    """
    parts = scene.meta.get("parts")
    if not isinstance(parts, list) or not parts:
        raise SourceError(
            f"scene {scene.id} was not found by the local source: pass scenes from "
            "LocalSource.find_scenes"
        )
    return [{b: BandRef.from_meta(r) for b, r in part["bands"].items()} for part in parts]


def select_bands(
    requested: Sequence[str], available: Sequence[tuple[str, frozenset[str]]]
) -> tuple[str, ...]:
    """Bands a stack will hold.

    ``scl`` is optional: the stack holds it only when every scene has it (L1C files have
    none, and the masks judge such stacks on nodata alone).

    Args:
        requested: Bands asked for; :data:`ALL_BANDS` means "every band all scenes have".
        available: ``(scene id, bands it has)`` per scene.

    Returns:
        The bands, in the order asked (spectral order for ``ALL_BANDS``).

    Raises:
        SourceError: For an unknown band, or a reflectance band asked for explicitly that a
            scene lacks.
    """
    unknown = [b for b in requested if b not in BAND_IDS]
    if unknown:
        raise SourceError(
            f"local source has no band(s) {', '.join(unknown)}: choose from {', '.join(BAND_IDS)}"
        )
    if not available:
        return BANDS if tuple(requested) == ALL_BANDS else tuple(dict.fromkeys(requested))
    common = frozenset.intersection(*(have for _, have in available))
    if tuple(requested) == ALL_BANDS:
        chosen = tuple(b for b in ALL_BANDS if b in common)
        if not any(b in BANDS for b in chosen):
            raise SourceError(
                f"scenes {', '.join(s for s, _ in available)} share no reflectance band: {LAYOUTS}"
            )
        return chosen
    for band in requested:
        for scene_id, have in available:
            if band != SCL and band not in have:
                raise SourceError(
                    f"scene {scene_id} has no {band} band ({BAND_IDS[band]}): add it to the "
                    "scene's files or ask for fewer bands"
                )
    return tuple(b for b in dict.fromkeys(requested) if b != SCL or SCL in common)


def cover_window(
    bounds: tuple[float, float, float, float],
    transform: Any,
    width: int,
    height: int,
    *,
    margin: int = WINDOW_MARGIN_PX,
) -> Window | None:
    """Whole-pixel window of a raster covering bounds (in its CRS), plus a margin.

    Offsets are whole pixels, so ``window_transform`` of the result is an exact shift of
    the file's transform and nearest-neighbour picks equal those from the full array.

    Returns:
        The window clipped to the raster, or None when bounds and raster do not overlap.
    """
    win = from_bounds(*bounds, transform=transform)
    col0 = max(math.floor(win.col_off) - margin, 0)
    row0 = max(math.floor(win.row_off) - margin, 0)
    col1 = min(math.ceil(win.col_off + win.width) + margin, width)
    row1 = min(math.ceil(win.row_off + win.height) + margin, height)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def grid_offset(file_transform: Any, block_transform: Any) -> tuple[int, int] | None:
    """Whole-pixel ``(row, col)`` of a block's first pixel on a file's pixel grid.

    Both grids must be in one CRS (the caller checks). When the pixels have the same size
    and orientation and the block starts on a pixel corner of the file, nearest-neighbour
    warping copies pixels unchanged, so a plain window read gives the same values.

    Returns:
        The offset, or None when the grids differ (resolution, rotation, sub-pixel shift).
    """
    f, b = file_transform, block_transform
    if (f.a, f.b, f.d, f.e) != (b.a, b.b, b.d, b.e) or f.a == 0 or f.e == 0:
        return None
    col, row = (b.c - f.c) / f.a, (b.f - f.f) / f.e
    if abs(col - round(col)) > ALIGN_TOLERANCE_PX or abs(row - round(row)) > ALIGN_TOLERANCE_PX:
        return None
    return round(row), round(col)


# --- I/O: headers, catalogs, pixels ----------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _unreadable(path: str, exc: BaseException) -> SourceError:
    return SourceError(
        f"cannot read {path}: {_one_line(exc)}; replace the file with a complete GeoTIFF "
        "(re-download or re-export it) or remove it from the folder"
    )


def read_header(path: Path) -> RasterHeader:
    """Read a raster's header (no pixels).

    Raises:
        SourceError: When the file is not a readable raster.
    """
    try:
        with rasterio.open(path) as src:
            footprint = None
            if src.crs is not None:
                to_lonlat = Transformer.from_crs(src.crs.to_wkt(), "EPSG:4326", always_xy=True)
                ring = shapely.segmentize(box(*src.bounds), max(src.res) * 16)
                footprint = shapely.transform(
                    ring, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))
                )
            return RasterHeader(
                path=path,
                count=src.count,
                descriptions=tuple(src.descriptions),
                dtypes=tuple(src.dtypes),
                nodata=tuple(None if v is None else float(v) for v in src.nodatavals),
                scales=tuple(float(v) for v in src.scales),
                offsets=tuple(float(v) for v in src.offsets),
                tags={str(k).upper(): str(v) for k, v in src.tags().items()},
                footprint=footprint,
            )
    except (RasterioError, OSError) as exc:
        raise _unreadable(str(path), exc) from exc


def scan_rasters(root: Path) -> list[Entry]:
    """Acquisitions in a folder of rasters (both GeoTIFF layouts, mixed freely).

    Raises:
        SourceError: For no rasters, none with named bands, none with dates, or an
            unreadable file.
    """
    paths = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()
    )
    if not paths:
        raise SourceError(f"{root} holds no GeoTIFFs and no STAC catalog: {LAYOUTS}")
    entries: list[Entry] = []
    band_files: list[BandFile] = []
    skipped: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        found = classify(read_header(path), root)
        if isinstance(found, Entry):
            entries.append(found)
        elif isinstance(found, BandFile):
            band_files.append(found)
        else:
            skipped[found].append(path)
    entries.extend(group_band_files(band_files))
    if entries:
        return entries
    if skipped["undated"]:
        raise SourceError(
            f"no acquisition date found for {len(skipped['undated'])} raster(s) in {root} "
            f"(e.g. {skipped['undated'][0].name}): write it in a DATETIME tag or the file "
            f"name (…_2015-07-11.tif); {LAYOUTS}"
        )
    raise SourceError(
        f"none of the {len(paths)} raster(s) in {root} names its bands (e.g. "
        f"{paths[0].name}): {LAYOUTS}"
    )


def stac_root(path: Path) -> Path | None:
    """The STAC JSON file to start from, when ``path`` is (or holds) a catalog."""
    if path.is_file():
        return path if path.suffix.lower() == ".json" else None
    for name in ("catalog.json", "collection.json"):
        if (path / name).is_file():
            return path / name
    return None


def _read_stac(path: Path) -> pystac.STACObject:
    try:
        return pystac.read_file(str(path))
    except Exception as exc:  # pystac raises many types for a bad file; all mean the same
        raise SourceError(
            f"cannot read STAC file {path}: {_one_line(exc)}; fix the JSON or point "
            "--local-path at the catalog's catalog.json"
        ) from exc


def stac_items(path: Path) -> list[pystac.Item] | None:
    """Items of a static catalog at or in ``path``; None when there is no STAC there.

    Without ``catalog.json``/``collection.json``, every JSON file in the tree that is a
    STAC item counts; other JSON files are ignored.
    """
    start = stac_root(path)
    if start is not None:
        obj = _read_stac(start)
        if isinstance(obj, pystac.Item):
            return [obj]
        if isinstance(obj, pystac.Catalog):
            return list(obj.get_items(recursive=True))
        return None
    if not path.is_dir():
        return None
    items = []
    for json_path in sorted(path.rglob("*.json")):
        try:
            obj = pystac.read_file(str(json_path))
        except Exception:  # not STAC: not ours to judge
            continue
        if isinstance(obj, pystac.Item):
            items.append(obj)
    return items or None


def scan_stac(items: Sequence[pystac.Item], origin: Path) -> list[Entry]:
    """Acquisitions of STAC items.

    Raises:
        SourceError: When no item has a date and a band asset.
    """
    entries, reasons = [], []
    for item in items:
        found = item_entry(item)
        if isinstance(found, Entry):
            entries.append(found)
        else:
            reasons.append(f"{item.id}: {found}")
    if not entries:
        why = f" ({reasons[0]})" if reasons else ""
        raise SourceError(
            f"STAC catalog {origin} has no item with a date and band assets{why}: key assets "
            f"by common name or band id (red, B04) or list eo:bands; {LAYOUTS}"
        )
    return entries


def _holds_rasters_or_items(root: Path) -> bool:
    """Whether a folder tree holds a raster file or a STAC item JSON; stops at the first."""
    for path in root.rglob("*"):
        suffix = path.suffix.lower()
        if suffix in RASTER_SUFFIXES and path.is_file():
            return True
        if suffix == ".json" and path.is_file() and _looks_like_stac_item(path):
            return True
    return False


def _looks_like_stac_item(path: Path) -> bool:
    """Whether a JSON file is a STAC item (a GeoJSON Feature with ``stac_version``)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("type") == "Feature" and "stac_version" in data


def quiet_warp_warnings() -> None:
    """Hide rasterio's spurious "no geotransform" warning from array warps.

    It fires at random when dask threads warp arrays concurrently, though the arrays carry
    their transforms and the picks are exact (odc-geo#131). Only warnings raised inside
    ``rasterio.warp`` are hidden; adding the filter again replaces it (idempotent).
    """
    warnings.filterwarnings(
        "ignore",
        message="Dataset has no geotransform",
        category=NotGeoreferencedWarning,
        module=r"rasterio\.warp",
    )


#: rasterio's CRS of each grid CRS seen, by its text: read once, not per file and block.
_RIO_CRS: dict[str, rio_crs.CRS] = {}


def _rio_crs(geobox: GeoBox) -> rio_crs.CRS:
    if geobox.crs is None:
        raise SourceError(
            "cannot load onto a pixel grid without a CRS: plan tiles with agrimon.grid"
        )
    key = str(geobox.crs)
    crs = _RIO_CRS.get(key)
    if crs is None:
        crs = _RIO_CRS[key] = rio_crs.CRS.from_user_input(geobox.crs.to_wkt())
    return crs


def warp_window(
    src: Any, indexes: Sequence[int], nodata: Sequence[float | None], block: GeoBox
) -> NDArray[np.float64]:
    """Bands of an open raster picked onto ``block`` by nearest neighbour.

    Reads only the window covering the block (plus a margin), with an exactly shifted
    transform, so the picks equal those from warping the whole file. When the block lies on
    the file's own grid (same CRS, pixel size and orientation, whole-pixel offset) the picks
    are the pixels themselves: the block's window is read as it is, without warping.

    Returns:
        ``(len(indexes), ny, nx)`` values; NaN at nodata and outside the file.
    """
    dst = np.full((len(indexes), *block.shape), np.nan, dtype=np.float64)
    dst_crs = _rio_crs(block)
    offset = _aligned_offset(src, block)
    if offset is not None:  # nearest-neighbour picks on the file's own grid: a plain read
        got = _read_inside(src, indexes, offset, (block.shape[0], block.shape[1]))
        if got is not None:
            data, rows, cols = got
            part = dst[:, rows, cols]
            part[...] = data
            for k, value in enumerate(nodata):
                if value is not None:
                    part[k][data[k] == value] = np.nan
        return dst
    bb = block.boundingbox
    bounds = transform_bounds(
        dst_crs, src.crs, bb.left, bb.bottom, bb.right, bb.top, densify_pts=21
    )
    win = cover_window(bounds, src.transform, src.width, src.height)
    if win is None:
        return dst
    data = src.read(list(indexes), window=win).astype(np.float64)
    for k, value in enumerate(nodata):
        if value is not None:
            data[k][data[k] == value] = np.nan
    reproject(
        source=data,
        destination=dst,
        src_transform=src.window_transform(win),
        src_crs=src.crs,
        src_nodata=np.nan,
        dst_transform=block.affine,
        dst_crs=dst_crs,
        dst_nodata=np.nan,
        resampling=Resampling.nearest,
    )
    return dst


def _aligned_offset(src: Any, block: GeoBox) -> tuple[int, int] | None:
    """:func:`grid_offset` of ``block`` on an open raster's grid; None unless in its CRS."""
    if src.crs is None or src.crs != _rio_crs(block):
        return None
    return grid_offset(src.transform, block.affine)


def _read_inside(
    src: Any, indexes: Sequence[int], offset: tuple[int, int], shape: tuple[int, int]
) -> tuple[NDArray[Any], slice, slice] | None:
    """Raw pixels of the part of an aligned block inside the file, and where they go.

    Returns:
        ``(pixels (bands, rows, cols), row slice, column slice)`` of the block, or None
        when the block lies outside the file.
    """
    row0, col0 = offset
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + shape[0], src.height), min(col0 + shape[1], src.width)
    if r1 <= r0 or c1 <= c0:
        return None
    data = src.read(list(indexes), window=Window(c0, r0, c1 - c0, r1 - r0))
    return data, slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0)


def _read_aligned_integers(
    src: Any,
    members: Sequence[tuple[str, BandRef]],
    nodata: Sequence[float | None],
    scales: Sequence[float],
    offset: tuple[int, int],
    shape: tuple[int, int],
    into: Mapping[str, NDArray[Any]],
) -> dict[str, NDArray[np.float32]]:
    """:func:`read_bands` of integer bands of a file on the block's grid, without warping.

    The same values as :func:`warp_window` followed by the reflectance conversion, bit for
    bit: nearest-neighbour picks on the file's own grid are the pixels themselves, and the
    conversion runs on the integers instead of on their float64 copies. Bands in ``into``
    that the file covers whole are written there (see :func:`read_bands`).
    """
    got = _read_inside(src, [ref.index for _, ref in members], offset, shape)
    out: dict[str, NDArray[np.float32]] = {}
    for k, (band, ref) in enumerate(members):
        if got is None:
            out[band] = np.full(shape, np.nan, dtype=np.float32)
            continue
        data, rows, cols = got
        scl = band == SCL  # raw classes: no scale, no offset
        if (
            band in into
            and data.shape[1:] == shape
            and _write_into(into[band], data[k], ref, scales[k], nodata[k], scl)
        ):
            continue
        values = dn_to_reflectance(
            data[k],
            scale=1.0 if scl else scales[k],
            offset=0.0 if scl else ref.offset,
            nodata=nodata[k],
        )
        if values.shape != shape:  # the block reaches beyond the file
            values, inside = np.full(shape, np.nan, dtype=np.float32), values
            values[rows, cols] = inside
        out[band] = values
    return out


def _write_into(
    target: NDArray[Any],
    dn: NDArray[Any],
    ref: BandRef,
    scale: float,
    nodata: float | None,
    scl: bool,
) -> bool:
    """Write a band's digital numbers into ``target`` as :func:`band_values` would; or not.

    Returns:
        Whether it was written: reflectance into float32, SCL classes of a uint8 file into
        uint8 (0 at nodata); anything else is left to the float path.
    """
    if not scl and target.dtype == np.float32:
        dn_to_reflectance(dn, scale=scale, offset=ref.offset, nodata=nodata, out=target)
        return True
    if scl and target.dtype == np.uint8 and dn.dtype == np.uint8:
        np.copyto(target, dn)
        if nodata is not None:
            target[dn == nodata] = 0
        return True
    return False


def band_values(band: str, values: NDArray[np.float32]) -> NDArray[Any]:
    """A band as the scene stack holds it: reflectance as read, SCL as uint8 (0 at nodata)."""
    return np.nan_to_num(values, nan=0).astype(np.uint8) if band == SCL else values


def read_bands(
    refs: Mapping[str, BandRef],
    block: GeoBox,
    into: Mapping[str, NDArray[Any]] | None = None,
) -> dict[str, NDArray[np.float32]]:
    """Reflectance (or raw SCL) of bands onto ``block``, one open per file.

    Args:
        refs: Each band's file and conversion.
        block: Pixel grid to read onto.
        into: Optional arrays of the stack's dtypes (:func:`band_values`) to write bands
            into: those of integer files on the block's grid that cover it whole are
            written there, converted in strips, and left out of the result.

    Returns:
        float32 arrays, NaN at nodata and outside the files.

    Raises:
        SourceError: When a file cannot be read.
    """
    by_path: dict[str, list[tuple[str, BandRef]]] = defaultdict(list)
    for band, ref in refs.items():
        by_path[ref.path].append((band, ref))
    out: dict[str, NDArray[np.float32]] = {}
    for path, members in by_path.items():
        try:
            with rasterio.open(path) as src:
                nodata, scales, integers = [], [], []
                for _, ref in members:
                    integer = bool(np.issubdtype(np.dtype(src.dtypes[ref.index - 1]), np.integer))
                    integers.append(integer)
                    file_nodata = src.nodatavals[ref.index - 1]
                    fallback = file_nodata if file_nodata is not None else (0 if integer else None)
                    nodata.append(ref.nodata if ref.nodata is not None else fallback)
                    scales.append(
                        ref.scale if ref.scale is not None else (DN_SCALE if integer else 1.0)
                    )
                offset = _aligned_offset(src, block)
                if offset is not None and all(integers):
                    shape = (block.shape[0], block.shape[1])
                    out.update(
                        _read_aligned_integers(
                            src, members, nodata, scales, offset, shape, into or {}
                        )
                    )
                    continue
                raw = warp_window(src, [ref.index for _, ref in members], nodata, block)
        except (RasterioError, OSError, IndexError) as exc:
            raise _unreadable(path, exc) from exc
        for k, (band, ref) in enumerate(members):
            if band == SCL:
                out[band] = raw[k].astype(np.float32)
            else:
                out[band] = dn_to_reflectance(
                    raw[k], scale=scales[k], offset=ref.offset, nodata=None
                )
    return out


def _fetch(
    t: int,
    block: GeoBox,
    _prepared: object,
    *,
    scenes: Sequence[Sequence[Mapping[str, BandRef]]],
    bands: Sequence[str],
) -> dict[str, NDArray[Any]]:
    mosaic: dict[str, NDArray[np.float32]] = {}
    for part in scenes[t]:
        # Later parts only fill what earlier ones left empty.
        todo = [b for b in bands if b not in mosaic or np.isnan(mosaic[b]).any()]
        if not todo:
            break
        for band, values in read_bands({b: part[b] for b in todo}, block).items():
            have = mosaic.get(band)
            mosaic[band] = values if have is None else np.where(np.isnan(have), values, have)
    out: dict[str, NDArray[Any]] = {}
    for band in bands:
        values = mosaic[band] if band in mosaic else np.full(block.shape, np.nan, np.float32)
        out[band] = band_values(band, values)
    return out


def _fetch_into(
    t: int,
    block: GeoBox,
    prepared: object,
    out: Mapping[str, NDArray[Any]],
    *,
    scenes: Sequence[Sequence[Mapping[str, BandRef]]],
    bands: Sequence[str],
) -> None:
    """:func:`_fetch` written into a series' arrays (see :data:`agrimon.sources.lazy.FetchInto`).

    A scene of one file set is read straight into them; a mosaic of several goes through
    :func:`_fetch`, whose later parts fill what earlier ones left empty.
    """
    if len(scenes[t]) != 1:
        for band, values in _fetch(t, block, prepared, scenes=scenes, bands=bands).items():
            out[band][...] = values
        return
    (part,) = scenes[t]
    for band, values in read_bands({b: part[b] for b in bands}, block, into=out).items():
        out[band][...] = band_values(band, values)


class LocalSource:
    """Scenes from a folder of GeoTIFFs or a static STAC catalog on disk."""

    name = NAME

    def __init__(self, settings: SourceSettings) -> None:
        """Remember the path; it is checked by :meth:`check` and scanned on first use.

        Nothing is raised here, so that ``agrimon sources`` can list an unconfigured source.
        """
        self.path: Path | None = (
            None if settings.local_path is None else Path(settings.local_path).expanduser()
        )
        self.settings = settings
        self._entries: tuple[Entry, ...] | None = None

    def check(self) -> None:
        """Pre-flight check: the path is set, exists and holds something readable.

        A glance, not a scan: the first GeoTIFF, ``catalog.json`` or STAC item JSON found
        ends the search; only a STAC root file is parsed. File headers are read later.

        Raises:
            ConfigError: When ``--local-path`` is unset, does not exist, is a file other than
                a STAC JSON file, or is a folder with no GeoTIFF and no STAC catalog.
            SourceError: When its STAC catalog cannot be read.
        """
        root = self._root()
        start = stac_root(root)
        if start is not None:
            _read_stac(start)  # the root file only: children are read when scanning
            return
        if root.is_file():
            raise ConfigError(
                f"--local-path {root} is a file but not a STAC catalog (catalog.json): pass "
                f"the folder that holds the GeoTIFFs, or the catalog.json; {LAYOUTS}"
            )
        if not root.is_dir():
            raise ConfigError(
                f"--local-path {root} is neither a folder nor a STAC catalog: pass a folder "
                f"of GeoTIFFs or a catalog.json; {LAYOUTS}"
            )
        if not _holds_rasters_or_items(root):
            raise ConfigError(
                f"--local-path {root} holds no GeoTIFFs and no STAC catalog: pass the folder "
                f"that holds them; {LAYOUTS}"
            )

    def _root(self) -> Path:
        """The configured path, once it is known to be set and to exist.

        Raises:
            ConfigError: When ``--local-path`` is unset or does not exist.
        """
        if self.path is None:
            raise ConfigError(
                "the local source needs a folder of GeoTIFFs or a STAC catalog: "
                "pass --local-path DIR"
            )
        if not self.path.exists():
            raise ConfigError(
                f"local path {self.path} does not exist: pass --local-path DIR with a folder "
                "of GeoTIFFs or a STAC catalog"
            )
        return self.path

    def entries(self) -> tuple[Entry, ...]:
        """Every acquisition under the path (scanned once, then cached).

        Raises:
            ConfigError: When ``--local-path`` is unset or does not exist.
            SourceError: When the path holds nothing the source can read.
        """
        if self._entries is None:
            root = self._root()
            items = stac_items(root)
            if items is not None:
                found = scan_stac(items, root)
            elif root.is_dir():
                found = scan_rasters(root)
            else:
                raise SourceError(f"{root} is neither a folder nor a STAC JSON file: {LAYOUTS}")
            self._entries = tuple(sorted(found, key=lambda e: (e.time, e.id)))
        return self._entries

    def find_scenes(self, tile: Tile, start: date, end: date) -> tuple[Scene, ...]:
        """Acquisitions whose footprint meets ``tile`` between ``start`` and ``end``."""
        area = tile.footprint_lonlat()
        hits = [
            e
            for e in self.entries()
            if start <= e.time.date() <= end and area.intersects(e.footprint)
        ]
        return scenes_from_entries(hits)

    def load(
        self,
        tile: Tile,
        scenes: Sequence[Scene],
        *,
        bands: Sequence[str] = ALL_BANDS,
        chunk_px: int = DEFAULT_CHUNK_PX,
    ) -> xr.Dataset:
        """Lazy scene stack of ``tile.geobox`` (see :meth:`agrimon.sources.base.Source.load`).

        With the default ``bands``, the stack holds the bands every scene has (``scl``
        only where the files have it).

        Raises:
            SourceError: For no scenes, a band asked for that a scene lacks, or scenes
                another source found.
        """
        if not scenes:
            raise SourceError(
                f"no scenes to load for tile {tile.id}: widen the dates or check that "
                f"{self.path} covers the area (find_scenes found none)"
            )
        parts = [scene_parts(s) for s in scenes]
        available = [
            (s.id, frozenset.intersection(*(frozenset(p) for p in ps)))
            for s, ps in zip(scenes, parts, strict=True)
        ]
        names = select_bands(bands, available)
        quiet_warp_warnings()
        return lazy_stack(
            tile.geobox,
            [s.time for s in scenes],
            names,
            fetch=partial(_fetch, scenes=parts, bands=names),
            fetch_into=partial(_fetch_into, scenes=parts, bands=names),
            name=NAME,
            chunk_px=chunk_px,
            token=[json.dumps(dict(s.meta), sort_keys=True) for s in scenes],
            attrs={"source": NAME, "path": str(self.path)},
        )

    def describe(self) -> dict[str, str]:
        """Path and layout of the source (``not set`` without ``--local-path``)."""
        if self.path is None:
            return {
                "endpoint": "not set: pass --local-path DIR",
                "layout": "-",
                "credentials": "none needed",
            }
        layout = (
            "static STAC catalog" if stac_root(self.path) else "folder of GeoTIFFs or STAC items"
        )
        return {"endpoint": str(self.path), "layout": layout, "credentials": "none needed"}
