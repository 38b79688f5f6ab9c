"""The bad-input corpus: each case builds its input in a folder and says how the CLI must fail.

A case is a command line (built from files it writes into a fresh folder), the error class
the CLI must report, a fragment of its one-line message and, always, exit code 2. The
cases are data; ``test_corpus.py`` runs them all the same way.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Lon/lat of a small square in the demo world (Grootfontein, Namibia).
LON, LAT, SIDE = 18.2, -19.6, 0.01


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: Short name (the test id).
        group: What kind of input it is (the README table's rows).
        build: Writes the input under the folder it is given and returns the arguments.
        error: Name of the :class:`agrimon.errors.AgrimonError` subclass expected, or
            ``UsageError`` for what the command line's parser refuses (a value that is not
            a number or a date, an unknown option).
        fragment: Text the one-line message must contain (case-insensitive).
    """

    id: str
    group: str
    build: Callable[[Path], list[str]]
    error: str
    fragment: str


def ring(lon: float = LON, lat: float = LAT, side: float = SIDE) -> list[list[float]]:
    return [[lon, lat], [lon + side, lat], [lon + side, lat + side], [lon, lat + side], [lon, lat]]


def feature(geometry: dict[str, Any] | None, name: str = "field") -> dict[str, Any]:
    return {"type": "Feature", "properties": {"name": name}, "geometry": geometry}


def polygon(coords: list[list[float]] | None = None) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [coords or ring()]}


def collection(*features: dict[str, Any]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


def run(folder: Path, aoi: Path | str, *options: str) -> list[str]:
    """``agrimon run AOI --out OUT ...`` with the output under the case's folder."""
    return ["run", str(aoi), "--out", str(folder / "out"), *options]


def aoi_text(name: str, text: str | bytes, *options: str) -> Callable[[Path], list[str]]:
    """A case whose AOI file ``name`` holds ``text``."""

    def build(folder: Path) -> list[str]:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return run(folder, path, *options)

    return build


def good_aoi(*options: str) -> Callable[[Path], list[str]]:
    """A case with a valid AOI and bad options."""
    return aoi_text("field.geojson", collection(feature(polygon())), *options)


def _zip_of(members: dict[str, bytes]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        path = folder / "aoi.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        return run(folder, path)

    return build


def _zip_bomb(folder: Path) -> list[str]:
    path = folder / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("aoi.geojson", b" " * (64 << 20))  # 64 MiB of spaces, ~64 KiB zipped
    return run(folder, path)


def _folder_aoi(folder: Path) -> list[str]:
    (folder / "a folder.geojson").mkdir()
    return run(folder, folder / "a folder.geojson")


def _big_polygon(folder: Path) -> list[str]:
    import math

    n = 200_000
    points = [
        [LON + SIDE * math.cos(2 * math.pi * k / n), LAT + SIDE * math.sin(2 * math.pi * k / n)]
        for k in range(n)
    ]
    points.append(points[0])
    path = folder / "vertices.geojson"
    path.write_text(collection(feature(polygon(points))), encoding="utf-8")
    return run(folder, path)


KML_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE kml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark><name>&xxe;</name>
<Polygon><outerBoundaryIs><LinearRing><coordinates>
18.2,-19.6 18.21,-19.6 18.21,-19.59 18.2,-19.59 18.2,-19.6
</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark></Document></kml>"""

KML_NETWORK_LINK = """<?xml version="1.0"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document><NetworkLink><name>remote</name>
<Link><href>http://127.0.0.1:9/aoi.kml</href></Link></NetworkLink></Document></kml>"""

ZERO_AREA = polygon([[LON, LAT], [LON + SIDE, LAT], [LON + 2 * SIDE, LAT], [LON, LAT]])
BOW_TIE_FLAT = polygon(
    [[LON, LAT], [LON + SIDE, LAT + SIDE], [LON + SIDE, LAT + SIDE], [LON, LAT], [LON, LAT]]
)
OUT_OF_RANGE = polygon(
    [[LON + 400.0, LAT], [LON + 401.0, LAT], [LON + 401.0, LAT + 1], [LON + 400.0, LAT]]
)

CASES: list[Case] = [
    # --- AOI files --------------------------------------------------------------------
    Case(
        "aoi-missing",
        "AOI file",
        lambda f: run(f, f / "nowhere.geojson"),
        "AoiNotFoundError",
        "does not exist",
    ),
    Case("aoi-folder", "AOI file", _folder_aoi, "AoiError", "folder"),
    Case(
        "aoi-empty-file",
        "AOI file",
        aoi_text("empty.geojson", ""),
        "AoiFormatError",
        "empty.geojson",
    ),
    Case(
        "aoi-invalid-json",
        "AOI file",
        aoi_text("bad.geojson", "{not json"),
        "AoiFormatError",
        "bad.geojson",
    ),
    Case(
        "aoi-binary-garbage",
        "AOI file",
        aoi_text("noise.geojson", bytes(range(256)) * 8),
        "AoiFormatError",
        "noise.geojson",
    ),
    Case(
        "aoi-unknown-extension", "AOI file", aoi_text("aoi.txt", "hello"), "AoiFormatError", ".txt"
    ),
    Case(
        "aoi-no-features",
        "AOI file",
        aoi_text("none.geojson", collection()),
        "AoiError",
        "none.geojson",
    ),
    Case(
        "aoi-points-only",
        "AOI file",
        aoi_text(
            "points.geojson", collection(feature({"type": "Point", "coordinates": [LON, LAT]}))
        ),
        "AoiGeometryError",
        "polygon",
    ),
    Case(
        "aoi-geometry-collection-without-polygons",
        "AOI file",
        aoi_text(
            "gc.geojson",
            collection(
                feature(
                    {
                        "type": "GeometryCollection",
                        "geometries": [
                            {"type": "Point", "coordinates": [LON, LAT]},
                            {"type": "LineString", "coordinates": [[LON, LAT], [LON + SIDE, LAT]]},
                        ],
                    }
                )
            ),
        ),
        "AoiGeometryError",
        "polygon",
    ),
    Case(
        "aoi-null-geometry",
        "AOI file",
        aoi_text("null.geojson", collection(feature(None))),
        "AoiGeometryError",
        "geometry",
    ),
    Case(
        "aoi-zero-area",
        "AOI file",
        aoi_text("flat.geojson", collection(feature(ZERO_AREA))),
        "AoiGeometryError",
        "area",
    ),
    Case(
        "aoi-self-intersecting-no-area",
        "AOI file",
        aoi_text("bowtie.geojson", collection(feature(BOW_TIE_FLAT))),
        "AoiGeometryError",
        "area",
    ),
    Case(
        "aoi-coordinates-out-of-range",
        "AOI file",
        aoi_text("far.geojson", collection(feature(OUT_OF_RANGE))),
        "AoiCoordinateError",
        "far.geojson",
    ),
    Case(
        "aoi-nan-coordinates",
        "AOI file",
        aoi_text("nan.geojson", collection(feature(polygon())).replace(str(LON + SIDE), "NaN", 1)),
        "AoiError",
        "nan.geojson",
    ),
    Case("aoi-200000-vertices", "AOI file", _big_polygon, "AoiError", "vertices"),
    Case(
        "aoi-kml-external-entity",
        "AOI file",
        aoi_text("xxe.kml", KML_ENTITY),
        "AoiFormatError",
        "xxe.kml",
    ),
    Case(
        "aoi-kml-network-link",
        "AOI file",
        aoi_text("link.kml", KML_NETWORK_LINK),
        "AoiError",
        "link.kml",
    ),
    Case(
        "aoi-zip-not-a-zip", "AOI file", aoi_text("fake.zip", "not a zip"), "AoiFormatError", "zip"
    ),
    Case(
        "aoi-zip-without-shapefile",
        "AOI file",
        _zip_of({"readme.txt": b"hello"}),
        "AoiFormatError",
        ".shp",
    ),
    Case("aoi-zip-bomb", "AOI file", _zip_bomb, "AoiError", "bomb.zip"),
    Case(
        "aoi-path-with-spaces-and-accents",
        "AOI file",
        aoi_text(
            "dossier é ü/zone à côté.geojson",
            collection(feature({"type": "Point", "coordinates": [LON, LAT]})),
        ),
        "AoiGeometryError",
        "zone à côté.geojson",
    ),
    # --- dates ------------------------------------------------------------------------
    Case(
        "dates-reversed",
        "dates",
        good_aoi("--start", "2024-06-30", "--end", "2024-01-01"),
        "ConfigError",
        "before",
    ),
    Case("dates-unparseable", "dates", good_aoi("--start", "yesterday"), "UsageError", "yesterday"),
    Case(
        "dates-future",
        "dates",
        good_aoi("--start", "2099-01-01", "--end", "2099-06-30"),
        "ConfigError",
        "after today",
    ),
    Case(
        "dates-impossible-day",
        "dates",
        good_aoi("--start", "2024-02-30"),
        "UsageError",
        "2024-02-30",
    ),
    # --- options ----------------------------------------------------------------------
    Case("index-unknown", "options", good_aoi("--indices", "ndvi,xyz"), "ConfigError", "xyz"),
    Case("index-empty", "options", good_aoi("--indices", ","), "ConfigError", "index"),
    Case("source-unknown", "options", good_aoi("--source", "landsat"), "AgrimonError", "landsat"),
    Case("tile-zero", "options", good_aoi("--tile-px", "0"), "ConfigError", "tile"),
    Case("tile-negative", "options", good_aoi("--tile-px", "-512"), "ConfigError", "tile"),
    Case("tile-huge", "options", good_aoi("--tile-px", "10000000"), "ConfigError", "tile"),
    Case("chunk-zero", "options", good_aoi("--chunk-px", "0"), "ConfigError", "chunk"),
    Case("chunk-negative", "options", good_aoi("--chunk-px", "-1"), "ConfigError", "chunk"),
    Case("tile-not-a-number", "options", good_aoi("--tile-px", "abc"), "UsageError", "--tile-px"),
    Case("option-unknown", "options", good_aoi("--bogus"), "UsageError", "--bogus"),
    Case("level-unknown", "options", good_aoi("--level", "l3"), "UsageError", "--level"),
    Case("workers-zero", "options", good_aoi("--workers", "0"), "AgrimonError", "workers"),
    Case("max-area-zero", "options", good_aoi("--max-area", "0"), "ConfigError", "area"),
    Case("max-cloud-over-100", "options", good_aoi("--max-cloud", "150"), "ConfigError", "cloud"),
    Case("mmu-negative", "options", good_aoi("--mmu-ha", "-1"), "ConfigError", "mmu"),
    Case(
        "local-without-path", "options", good_aoi("--source", "local"), "AgrimonError", "local-path"
    ),
    Case(
        "local-path-missing",
        "options",
        good_aoi("--source", "local", "--local-path", "/nonexistent/scenes"),
        "AgrimonError",
        "/nonexistent/scenes",
    ),
]


def schedules(text: str) -> Callable[[Path], list[str]]:
    """``agrimon deployments`` of a schedules file holding ``text``."""

    def build(folder: Path) -> list[str]:
        (folder / "field.geojson").write_text(collection(feature(polygon())), encoding="utf-8")
        path = folder / "schedules.yaml"
        path.write_text(text, encoding="utf-8")
        return ["deployments", "--schedules", str(path)]

    return build


def _entry(**fields: str) -> str:
    base = {
        "name": "weekly",
        "flow": "monitor",
        "period": "last 30 days",
        "cron": '"0 3 * * 1"',
        "aoi": "field.geojson",
    }
    base.update(fields)
    aoi = base.pop("aoi")
    lines = [f"  - name: {base.pop('name')}", "    parameters:", f"      aoi: {aoi}"]
    lines += [f"    {k}: {v}" for k, v in base.items()]
    return "schedules:\n" + "\n".join(lines) + "\n"


def _cache_is_a_file(folder: Path) -> list[str]:
    (folder / "cache").write_text("not a folder", encoding="utf-8")
    return ["cache", "info", "--cache-dir", str(folder / "cache")]


CASES += [
    # --- schedules files --------------------------------------------------------------
    Case(
        "schedules-invalid-yaml",
        "schedules",
        schedules("schedules: [\n  - name: {"),
        "ConfigError",
        "yaml",
    ),
    Case(
        "schedules-not-a-list", "schedules", schedules("schedules: 3\n"), "ConfigError", "schedules"
    ),
    Case(
        "schedules-unknown-aoi",
        "schedules",
        schedules(_entry(aoi="nowhere.geojson")),
        "AgrimonError",
        "nowhere.geojson",
    ),
    Case(
        "schedules-bad-cron",
        "schedules",
        schedules(_entry(cron='"61 3 * * 1"')),
        "ConfigError",
        "cron",
    ),
    Case(
        "schedules-unknown-period",
        "schedules",
        schedules(_entry(period="fortnightly")),
        "ConfigError",
        "fortnightly",
    ),
    Case(
        "schedules-unknown-flow",
        "schedules",
        schedules(_entry(flow="harvest")),
        "ConfigError",
        "harvest",
    ),
    Case(
        "schedules-missing",
        "schedules",
        lambda f: ["deployments", "--schedules", str(f / "none.yaml")],
        "AgrimonError",
        "none.yaml",
    ),
    # --- the cache --------------------------------------------------------------------
    Case("cache-dir-is-a-file", "cache", _cache_is_a_file, "AgrimonError", "cache"),
]


def _file_named(name: str, text: str = "not what it should be") -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_text(text, encoding="utf-8")
        return path

    return make


def with_file(option: str, make: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    """A case with a valid AOI and ``option`` pointing at what ``make`` writes."""

    def build(folder: Path) -> list[str]:
        args = good_aoi()(folder)
        return [*args, option, str(make(folder))]

    return build


def _missing(name: str) -> Callable[[Path], Path]:
    return lambda folder: folder / name


def _shapefile_without_prj_in_utm(folder: Path) -> list[str]:
    import geopandas as gpd
    from shapely.geometry import box

    frame = gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(600000, 7800000, 601000, 7801000)])
    path = folder / "utm.shp"
    frame.to_file(path)
    return run(folder, path)


def _foreign_cache(folder: Path) -> list[str]:
    cache = folder / "my documents"
    cache.mkdir()
    (cache / "thesis.docx").write_text("years of work", encoding="utf-8")
    return ["cache", "clear", "--cache-dir", str(cache)]


CASES += [
    # --- models, references, fields, the output folder ---------------------------------
    Case(
        "invasive-model-missing",
        "models and files",
        with_file("--invasive-model", _missing("model.pt")),
        "AgrimonError",
        "model.pt",
    ),
    Case(
        "invasive-model-garbage",
        "models and files",
        with_file("--invasive-model", _file_named("model.pt")),
        "AgrimonError",
        "model.pt",
    ),
    Case(
        "yield-model-missing",
        "models and files",
        with_file("--yield-model", _missing("yield.pt")),
        "AgrimonError",
        "yield.pt",
    ),
    Case(
        "reference-missing",
        "models and files",
        with_file("--reference", _missing("sample.csv")),
        "AgrimonError",
        "sample.csv",
    ),
    Case(
        "fields-missing",
        "models and files",
        with_file("--fields", _missing("fields.gpkg")),
        "AgrimonError",
        "fields.gpkg",
    ),
    Case(
        "fields-garbage",
        "models and files",
        with_file("--fields", _file_named("fields.geojson")),
        "AgrimonError",
        "fields.geojson",
    ),
    Case(
        "out-is-a-file",
        "models and files",
        with_file("--out", _file_named("outputs")),
        "AgrimonError",
        "outputs",
    ),
    Case(
        "compare-missing",
        "models and files",
        with_file("--compare", _missing("earlier-run")),
        "AgrimonError",
        "earlier-run",
    ),
    Case(
        "aoi-shapefile-without-prj-in-utm",
        "AOI file",
        _shapefile_without_prj_in_utm,
        "AoiCoordinateError",
        "prj",
    ),
    Case(
        "cache-clear-of-a-folder-it-did-not-make",
        "cache",
        _foreign_cache,
        "AgrimonError",
        "my documents",
    ),
]


def _australia_swapped() -> str:
    lon, lat = 135.0, -25.0
    return collection(feature(polygon([[y, x] for x, y in ring(lon, lat)])))


def _labels(
    name: str, classes: list[str], column: str = "class", epsg: int = 4326
) -> Callable[[Path], list[str]]:
    """``agrimon train invasive`` of the good AOI with a labels file of ``classes``."""

    def build(folder: Path) -> list[str]:
        import geopandas as gpd
        from shapely.geometry import box

        half = SIDE / 2
        boxes = [
            box(LON + k * half, LAT, LON + (k + 1) * half, LAT + SIDE) for k in range(len(classes))
        ]
        frame = gpd.GeoDataFrame({column: classes}, geometry=boxes, crs=4326)
        if epsg != 4326:
            # Metres written under a CRS that is not theirs: the labels land far away.
            frame = frame.to_crs(32734).set_crs(epsg, allow_override=True)
        path = folder / name
        frame.to_file(path)
        args = good_aoi()(folder)
        return ["train", "invasive", args[1], "--labels", str(path), "--out", str(folder / "model")]

    return build


def _yield_data(tables: dict[str, str]) -> Callable[[Path], list[str]]:
    """``agrimon yield backtest`` of a CY-Bench folder holding ``tables`` (name → CSV text)."""

    def build(folder: Path) -> list[str]:
        data = folder / "cybench" / "maize" / "ES"
        data.mkdir(parents=True)
        for name, text in tables.items():
            (data / f"{name}_maize_ES.csv").write_text(text, encoding="utf-8")
        return [
            "yield",
            "backtest",
            "--data",
            str(folder / "cybench"),
            "--crop",
            "maize",
            "--country",
            "ES",
        ]

    return build


CALENDAR = "crop_name,adm_id,sos,eos\nmaize,ES11,120,270\n"


def _mount(folder: Path, options: str) -> Path:
    """A small tmpfs mounted with ``options`` at ``folder/disk`` (skips where it can't)."""
    import subprocess

    import pytest

    mount = folder / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}): needs root")
    return mount


def _mounted(options: str) -> Callable[[Path], list[str]]:
    """A run whose ``--out`` is a small tmpfs mounted with ``options``."""

    def build(folder: Path) -> list[str]:
        mount = _mount(folder, options)
        args = good_aoi("--start", "2024-02-01", "--end", "2024-02-15", "--no-phenology")(folder)
        return [*args[:2], "--out", str(mount), *args[4:]]

    return build


def _read_only_cache(folder: Path) -> list[str]:
    """A STAC run whose ``--cache-dir`` lies on a read-only file system.

    The cache is checked before the source is reached, so the URL is never asked.
    """
    mount = _mount(folder, "ro,size=64k")
    args = good_aoi("--source", "stac", "--stac-url", "http://127.0.0.1:9/stac")(folder)
    return [*args, "--cache-dir", str(mount / "cache")]


def _other_feature_set(folder: Path) -> list[str]:
    """A run given an encroachment model trained on a user's 3-band raster, not on a season."""
    from agrimon.invasive.card import save_checkpoint
    from agrimon.invasive.features import raster_feature_set
    from agrimon.invasive.model import ModelConfig, build_classifier

    config = ModelConfig(name="tempcnn", steps=3, per_step=1, static=0, classes=2)
    save_checkpoint(
        folder / "raster model",
        build_classifier(config),
        config=config,
        feature_set=raster_feature_set(("b1", "b2", "b3")),
        classes=("encroached", "open"),
        target="encroached",
        card={},
    )
    return [*good_aoi()(folder), "--invasive-model", str(folder / "raster model")]


#: The fake STAC APIs the cases started, by case folder (stopped by :func:`stop_stac`).
_SERVERS: dict[Path, Any] = {}


def _cloudy_period(folder: Path) -> list[str]:
    """Earth-Search-like STAC over the Slovenia scenes, in a period of one 61 %-cloudy scene.

    Skips where the real scenes are missing (the fake serves them).
    """
    from tests.conftest import real_path, slovenia_aoi
    from tests.fakes.stac_api import start_stac_fake

    real_path("slovenia-s2", "scenes")
    server = start_stac_fake(folder / "stac")
    _SERVERS[folder] = server
    path = folder / "ljubljana.geojson"
    path.write_text(collection(feature(slovenia_aoi().__geo_interface__)), encoding="utf-8")
    return run(
        folder,
        path,
        *("--source", "stac", "--stac-url", server.url, "--no-cache", "--level", "l1c"),
        *("--start", "2015-08-15", "--end", "2015-08-25", "--max-cloud", "50"),
    )


def stop_stac(folder: Path) -> None:
    """Stop the fake a case started in ``folder``."""
    server = _SERVERS.pop(folder, None)
    if server is not None:
        server.stop()


def unmount(folder: Path) -> None:
    """Undo what :func:`_mounted` mounted in ``folder`` (nothing if it mounted nothing)."""
    import subprocess

    mount = folder / "disk"
    if mount.is_mount():
        subprocess.run(["umount", str(mount)], check=True)


CASES += [
    Case(
        "aoi-swapped-lon-lat",
        "AOI file",
        aoi_text("swapped.geojson", _australia_swapped()),
        "AoiCoordinateError",
        "swapped",
    ),
    Case(
        "dates-period-without-scenes",
        "dates",
        good_aoi("--start", "2024-02-01", "--end", "2024-02-01"),
        "SourceError",
        "no scenes",
    ),
    Case(
        "labels-wrong-column",
        "models and files",
        _labels("kinds.gpkg", ["encroached", "open"], column="kind"),
        "LabelError",
        "--class-column",
    ),
    Case(
        "labels-one-class",
        "models and files",
        _labels("one.gpkg", ["encroached", "encroached"]),
        "LabelError",
        "two classes",
    ),
    Case("labels-empty", "models and files", _labels("none.gpkg", []), "LabelError", "no features"),
    Case(
        "reference-not-a-sample",
        "models and files",
        with_file("--reference", _file_named("sample.csv", "x,y,class\n1,2,open\n")),
        "AgrimonError",
        "agrimon sample",
    ),
    Case(
        "yield-no-calendar",
        "models and files",
        _yield_data({"yield": "crop_name,adm_id,harvest_year,yield\nmaize,ES11,2020,9\n"}),
        "YieldDataError",
        "crop_calendar",
    ),
    Case(
        "yield-wrong-columns",
        "models and files",
        _yield_data({"crop_calendar": CALENDAR, "yield": "a,b\n1,2\n"}),
        "YieldDataError",
        "harvest_year",
    ),
    Case(
        "yield-empty",
        "models and files",
        _yield_data({"crop_calendar": CALENDAR, "yield": "crop_name,adm_id,harvest_year,yield\n"}),
        "YieldDataError",
        "no yields",
    ),
    Case("out-full-file-system", "models and files", _mounted("size=64k"), "ProductError", "space"),
    Case("out-read-only", "models and files", _mounted("ro,size=64k"), "AgrimonError", "disk"),
    Case(
        "labels-wrong-crs",
        "models and files",
        _labels("utm.gpkg", ["encroached", "open"], epsg=32633),
        "LabelError",
        "check the file's CRS",
    ),
    Case(
        "invasive-model-other-feature-set",
        "models and files",
        _other_feature_set,
        "ModelError",
        "trained on feature set raster/v1",
    ),
    Case("cache-read-only", "cache", _read_only_cache, "ConfigError", "cannot be written"),
    Case("dates-every-scene-cloudy", "dates", _cloudy_period, "SourceError", "--max-cloud (now 50"),
]

#: What a case leaves to undo, by case id (its folder is given).
CLEANUP: dict[str, Callable[[Path], None]] = {
    "out-full-file-system": unmount,
    "out-read-only": unmount,
    "cache-read-only": unmount,
    "dates-every-scene-cloudy": stop_stac,
}


@dataclass(frozen=True)
class Unusual:
    """An odd but valid input: planned, not refused.

    Attributes:
        id: Short name (the test id).
        build: Writes the input under the folder it is given and returns the arguments.
        expect: Regular expressions the command's output (standard output, then standard
            error: its warnings) must each match.
    """

    id: str
    build: Callable[[Path], list[str]]
    expect: tuple[str, ...]


def plan(aoi: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    """``agrimon plan`` of the AOI a ``run`` case builds (a plan writes nothing)."""

    def build(folder: Path) -> list[str]:
        return ["plan", aoi(folder)[1]]

    return build


def _two_shapefiles(folder: Path) -> list[str]:
    """A zip of two Shapefiles (two farms' exports), each naming its one polygon "Camp"."""
    import geopandas as gpd
    from shapely.geometry import box

    path = folder / "farms.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for k, name in enumerate(("north", "south")):
            part = folder / "parts" / name
            part.mkdir(parents=True)
            west, south = LON + 2 * k * SIDE, LAT
            square = box(west, south, west + SIDE, south + SIDE)
            gpd.GeoDataFrame({"name": ["Camp"]}, geometry=[square], crs=4326).to_file(
                part / f"{name}.shp"
            )
            for member in part.iterdir():
                archive.write(member, member.name)
    for member in (folder / "parts").rglob("*"):
        if member.is_file():
            member.unlink()
    return run(folder, path)


def _lonlat(points: list[tuple[float, float]], z: float | None = None) -> dict[str, Any]:
    ring_ = [[x, y] if z is None else [x, y, z] for x, y in [*points, points[0]]]
    return polygon(ring_)


UNUSUAL: list[Unusual] = [
    Unusual(
        "aoi-3d-coordinates",
        plan(
            aoi_text(
                "hills.geojson",
                collection(
                    feature(
                        _lonlat(
                            [
                                (LON, LAT),
                                (LON + SIDE, LAT),
                                (LON + SIDE, LAT + SIDE),
                                (LON, LAT + SIDE),
                            ],
                            1100.0,
                        )
                    )
                ),
            )
        ),
        (r"32734 \(UTM 34S\)", r"tiles\s+1 of"),
    ),
    Unusual(
        "aoi-across-a-utm-zone-border",
        plan(
            aoi_text(
                "border.geojson",
                collection(
                    feature(
                        _lonlat(
                            [(17.99, LAT), (18.01, LAT), (18.01, LAT + SIDE), (17.99, LAT + SIDE)]
                        )
                    )
                ),
            )
        ),
        (r"32733 \(UTM 33S\), 32734 \(UTM 34S\)", r"tiles\s+2 of"),
    ),
    Unusual(
        "aoi-across-the-antimeridian",
        plan(
            aoi_text(
                "fiji.geojson",
                collection(
                    feature(
                        _lonlat(
                            [(179.99, -17.0), (-179.99, -17.0), (-179.99, -16.99), (179.99, -16.99)]
                        )
                    )
                ),
            )
        ),
        # 0.02° of longitude, not 359.98°: about 2.1 km × 1.1 km.
        (r"32701 \(UTM 1S\), 32760 \(UTM 60S\)", r"area\s+2\.4 km²"),
    ),
    Unusual(
        "aoi-zip-of-two-shapefiles",
        plan(_two_shapefiles),
        (r"farms, 2 zones", r"warning: .*zone names repeat.*'Camp \(2\)'"),
    ),
]
