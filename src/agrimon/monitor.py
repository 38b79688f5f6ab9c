"""The monitor stages as plain functions: the Prefect flow only wires these together.

plan → each tile's work (:mod:`agrimon.tilework`: scenes, clear mask, indices, composites,
season metrics, the encroachment map and zonal partials, persisted per tile) → products
assembled from the persisted tiles. Memory follows the tile and chunk size, not the AOI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from odc.geo.geobox import GeoBox

from agrimon.aoi import Aoi, read_aoi
from agrimon.checkpoint import CARD_JSON
from agrimon.cluster import (
    assembly_pool,
    check_scheduler,
    lost_worker,
    run_jobs,
    tile_cluster,
    warm_workers,
)
from agrimon.config import RunSpec
from agrimon.errors import ConfigError, SourceError
from agrimon.grid import Tile, geobox_for, zone_pieces
from agrimon.indices import zonal
from agrimon.invasive.features import monitor_model
from agrimon.invasive.products import MapModel
from agrimon.plan import RunPlan, plan_run
from agrimon.products.catalog import ZoneProducts, mean_cloud_cover, write_catalog
from agrimon.products.change import CHANGE_LAYER, anomaly_layer, incompatibility, write_change
from agrimon.products.cog import BLOCK_PX, CogWriter, Layer, window_of
from agrimon.products.deliver import deliver
from agrimon.products.folder import check_output_folder, staged_folder
from agrimon.products.layers import run_stem, write_base_layers
from agrimon.products.manifest import MANIFEST_JSON, RunClock, model_entry, write_manifest
from agrimon.products.runs import Run, check_compare, find_earlier, update_latest
from agrimon.products.symbology import StyleContext
from agrimon.products.workspace import check_unlocked, workspace
from agrimon.progress import TILES
from agrimon.sources import get_source
from agrimon.tilework import (
    TileResult,
    TileWork,
    phenology_params,
    plan_work,
    product_layers,
    run_tile,
    summed_confusion,
    warm_process,
)
from agrimon.yieldcast.products import (
    check_yield,
    forecast_units,
    yield_model_path,
    yield_products,
)

_log = logging.getLogger(__name__)

#: Demo runs score their encroachment map against the demo truth into this file.
INVASIVE_ACCURACY = "invasive_accuracy.json"


def make_plan(spec: RunSpec) -> RunPlan:
    """Read and check the AOI, tile it and find the scenes: the ``plan`` stage."""
    aoi = read_aoi(spec.aoi, max_area_km2=spec.max_area_km2)
    return plan_run(spec, aoi, get_source(spec.source, spec.source_settings))


def check_inputs(spec: RunSpec) -> Aoi:
    """The checks of a run that need no network, in a second: AOI, folders, source settings.

    Returns:
        The validated AOI.

    Raises:
        AgrimonError: The first problem found, as a one-line message.
    """
    aoi = read_aoi(spec.aoi, max_area_km2=spec.max_area_km2)
    check_output_folder(spec.out / aoi.name / spec.period)
    settings = spec.source_settings
    if spec.source != "demo" and not settings.no_cache:
        settings.cache().check(for_writing=not settings.offline)
    get_source(spec.source, settings).check()
    loaded = None
    if monitor_model(spec) is not None:
        from agrimon.invasive.mapping import check_monitor_model  # torch: only when mapping

        loaded = check_monitor_model(spec)
    if spec.reference is not None:
        check_reference(spec.reference, loaded.classes if loaded else None, aoi)
    check_yield(spec, aoi.geometry, aoi.zones)
    if spec.compare is not None and spec.change:
        check_compare(spec.compare)
    return aoi


def check_reference(path: Path, classes: tuple[str, ...] | None, aoi: Aoi) -> None:
    """Check a run's reference sample before the run: readable, filled in, inside the AOI.

    Raises:
        ConfigError: The run maps no encroachment, so there is nothing to assess.
        AssessmentError: The sample is not usable (see ``read_reference``).
    """
    from agrimon.area.fieldcheck import read_reference
    from agrimon.errors import AssessmentError

    if classes is None:
        raise ConfigError(
            f"--reference {path}: this run makes no encroachment map to assess; give "
            "--invasive-model, or drop --reference"
        )
    ref = read_reference(path, classes)
    inside = ref.points.to_crs(4326).geometry.within(aoi.geometry.buffer(1e-6))
    if not inside.all():
        ids = ref.points["id"][~inside].tolist()[:10]
        raise AssessmentError(
            f"reference sample {path}: point(s) {', '.join(map(str, ids))} lie outside AOI "
            f"{aoi.name}: use the sample drawn on this AOI's map"
        )


def preflight(spec: RunSpec, aoi: Aoi | None = None) -> RunPlan:
    """Everything a run can check before it starts: :func:`check_inputs`, then the plan.

    Finds a period without scenes and an unreachable Dask scheduler before any pixel is
    read, so that a run fails in seconds rather than mid-way.

    Args:
        spec: Run parameters.
        aoi: The AOI :func:`check_inputs` returned, if it was called already.

    Returns:
        The run's plan.

    Raises:
        AgrimonError: The first problem found, as a one-line message.
    """
    aoi = aoi if aoi is not None else check_inputs(spec)
    plan = plan_run(spec, aoi, get_source(spec.source, spec.source_settings))
    require_scenes(plan)
    utm_zones = {t.tile.epsg for t in plan.tiles}
    if spec.reference is not None and len(utm_zones) > 1:
        raise ConfigError(
            f"--reference {spec.reference}: AOI {aoi.name} spans {len(utm_zones)} UTM zones, "
            "so its map is one raster per zone; assess each with 'agrimon assess' instead"
        )
    if spec.compare is not None and spec.change:
        reason = incompatibility(check_compare(spec.compare), sorted(utm_zones))
        if reason is not None:
            raise ConfigError(f"--compare {spec.compare}: {reason}")
    check_output_folder(spec.out / aoi.name / spec.period, needs_bytes=product_bytes(plan))
    check_unlocked(spec.out / aoi.name / spec.period)
    check_scheduler(spec.dask_address)
    return plan


def require_scenes(plan: RunPlan) -> None:
    """Raise a one-line SourceError when a tile of the plan has no scene to load."""
    spec = plan.spec
    empty = [t.tile.id for t in plan.tiles if not t.scenes]
    if not empty:
        return
    hint = "widen the period with --start/--end"
    if spec.source != "demo":
        hint += f" or raise --max-cloud (now {spec.source_settings.max_cloud:g} %)"
    where = (
        "the AOI"
        if len(empty) == len(plan.tiles)
        else f"{len(empty)} of {len(plan.tiles)} tiles ({', '.join(empty[:3])}"
        + (", ..." if len(empty) > 3 else "")
        + ")"
    )
    raise SourceError(
        f"source '{spec.source}' has no scenes for {where} between {spec.start} and "
        f"{spec.end}: {hint}"
    )


def run_units(plan: RunPlan) -> gpd.GeoDataFrame | None:
    """The fields or regions a run forecasts yields for, or None (no model, none inside)."""
    if yield_model_path(plan.spec) is None:
        return None
    units = forecast_units(plan.spec, plan.aoi.geometry, plan.aoi.zones)
    if units.empty:
        _log.info("no field or region to forecast yields for in AOI %s", plan.aoi.name)
        return None
    return units


def tile_work(plan: RunPlan, work: Path) -> list[TileWork]:
    """Each tile's unit of work for a run whose work folder is ``work``."""
    return plan_work(plan.spec, plan.tiles, work, zones=plan.aoi.zones, units=run_units(plan))


def final_folder(plan: RunPlan) -> Path:
    """Where the run's products go: ``<out>/<aoi>/<start>_<end>``."""
    return plan.spec.out / plan.aoi.name / plan.spec.period


def write_products(
    plan: RunPlan,
    results: Sequence[TileResult],
    *,
    clock: RunClock | None = None,
    address: str | None = None,
) -> Path:
    """Assemble the finished tiles into the run's products, atomically.

    Mosaics (COGs), tables, vectors, styles, pictures, report, ``catalog.json`` and
    ``manifest.json``, read from the tiles' persisted results one tile at a time.

    Args:
        plan: The run plan.
        results: Every tile's result (:func:`agrimon.tilework.run_tile`).
        clock: When the run started and its stages' times so far (the manifest records
            them); a new clock by default.
        address: The run's Dask cluster, which writes the mosaics, draws the pictures and
            forecasts the yields (one task each); they are made here without one.

    Returns:
        The product folder ``<out>/<aoi>/<start>_<end>``.
    """
    spec = plan.spec
    clock = clock if clock is not None else RunClock()
    final = final_folder(plan)
    grids = zone_grids([r.tile for r in results])
    zones = sorted(grids)
    layers = product_layers(spec)
    # The map's layers and accuracy come from the model's card: on a cluster the tiles were
    # mapped there, and this process need not load torch.
    model_path = monitor_model(spec)
    mapped = MapModel.read(model_path) if model_path is not None else None
    map_names: list[str] = []
    if mapped is not None:
        layers = {**layers, **mapped.layers}
        map_names = list(mapped.layers)
    units = run_units(plan)
    zone_files: dict[str, dict[str, Path]] = {}
    with staged_folder(final) as folder, assembly_pool(address) as pool:
        zone_products = []
        for epsg in zones:
            in_zone = [r for r in results if r.tile.epsg == epsg]
            grid = grids[epsg]
            suffix = (
                ""
                if len(zones) == 1
                else f"_{in_zone[0].tile.zone:02d}{in_zone[0].tile.hemisphere}"
            )
            tags = {
                "PERIOD": f"{spec.start}/{spec.end}",
                "SOURCE": spec.source,
                "AOI": plan.aoi.name,
            }
            files = {name: folder / f"{name}{suffix}.tif" for name in layers}
            zone_files[suffix] = files
            with clock.stage("mosaics"):
                run_jobs(
                    {
                        name: partial(mosaic, files[name], grid, layer, in_zone, tags=tags)
                        for name, layer in layers.items()
                    },
                    pool,
                )
            footprint = zone_pieces(plan.aoi.geometry)[epsg]
            cloud = mean_cloud_cover(
                s.cloud_cover for t in plan.tiles if t.tile.epsg == epsg for s in t.scenes
            )
            zone_products.append(
                ZoneProducts(
                    epsg,
                    footprint,
                    (grid.shape.y, grid.shape.x),
                    list(grid.affine)[:6],
                    files,
                    cloud_cover=cloud,
                )
            )
        partials = [r.zonal_partial() for r in results]
        gpkg = folder / f"{run_stem(plan.aoi.name, spec.period)}.gpkg"
        zone_table, tables = write_zone_tables(folder, partials)
        if mapped is not None:
            from agrimon.area.products import area_products

            tables.update(
                area_products(
                    folder,
                    {
                        suffix: {n: files[n] for n in map_names}
                        for suffix, files in zone_files.items()
                    },
                    zones=plan.aoi.zones,
                    mmu_ha=spec.mmu_ha,
                    reference=spec.reference,
                    gpkg=gpkg,
                )
            )
        vectors = write_base_layers(
            gpkg,
            aoi_name=plan.aoi.name,
            aoi=plan.aoi.geometry,
            zones=plan.aoi.zones,
            epsg=zones[0],
            zonal_table=zone_table,
            map_areas=tables.get("invasive_map_areas"),
        )
        if units is not None:
            unit_partials = [p for p in (r.units_partial() for r in results) if p is not None]
            table = zonal.zonal_table(zonal.combine_partials(unit_partials))
            # A job: on a cluster a worker forecasts, with torch loaded already.
            forecast = partial(yield_products, folder, spec, units, table, gpkg=gpkg)
            tables.update(run_jobs({"forecast": forecast}, pool)["forecast"])
        earlier = earlier_run(spec, final, zones)
        change = None
        if earlier is not None:
            change = write_change(
                folder,
                earlier,
                suffixes=list(zone_files),
                indices=spec.indices,
                zones=plan.aoi.zones,
                gpkg=gpkg,
                mmu_ha=spec.mmu_ha,
            )
        confusion = summed_confusion(results) if spec.source == "demo" else None
        accuracy = mapped.accuracy(confusion) if mapped and confusion is not None else None
        if accuracy is not None:
            path = folder / INVASIVE_ACCURACY
            path.write_text(json.dumps(accuracy, indent=2) + "\n")
            tables["invasive_accuracy"] = path
        styled = {name: (gpkg, layer) for name, layer in vectors.items()}
        for layer in pyogrio.list_layers(gpkg)[:, 0]:
            if str(layer) not in ("aoi", "zones", "zonal_stats"):
                styled[str(layer)] = (gpkg, str(layer))
        rasters = {
            f"{name}{suffix}": (path, layers[name])
            for suffix, files in zone_files.items()
            for name, path in files.items()
        }
        if change is not None:
            for name, path in change.files.items():
                if path.suffix == ".tif":
                    base = CHANGE_LAYER if name.startswith(CHANGE_LAYER.name) else None
                    rasters[name] = (path, base or anomaly_layer(name))
        first = plan.tiles[0].tile
        with clock.stage("styles, pictures and report"):
            deliver(
                folder,
                stem=run_stem(plan.aoi.name, spec.period),
                aoi_name=plan.aoi.name,
                aoi=plan.aoi.geometry,
                zones=plan.aoi.zones,
                epsg=zones[0],
                start=spec.start,
                end=spec.end,
                rasters=rasters,
                vectors=styled,
                context=StyleContext(
                    season_start=phenology_params(southern=first.hemisphere == "S").season_start,
                    n_dates=len({s.time.date() for t in plan.tiles for s in t.scenes}),
                ),
                zonal_table=zone_table,
                index=spec.indices[0],
                model_cards=model_cards(spec),
                change=change,
                pool=pool,
            )
        tables["run_gpkg"] = gpkg
        run_id = f"{plan.aoi.name}-{spec.period}"
        write_catalog(
            folder,
            run_id=run_id,
            title=f"agrimon monitor: {plan.aoi.name}, {spec.start} to {spec.end}",
            start=spec.start,
            end=spec.end,
            zones=zone_products,
            layers=layers,
            tables=tables,
            aoi=plan.aoi.geometry,
        )
        write_manifest(
            folder, run_record(plan, results), started=clock.started, timings=clock.timings
        )
    update_latest(final.parent)
    return final


def earlier_run(spec: RunSpec, final: Path, epsgs: Sequence[int]) -> Run | None:
    """The run to map change against: ``--compare``, else the AOI's newest earlier run."""
    if not spec.change:
        return None
    if spec.compare is not None:
        return check_compare(spec.compare)
    earlier = find_earlier(final.parent, start=spec.start, end=spec.end)
    if earlier is None:
        return None
    reason = incompatibility(earlier, epsgs)
    if reason is not None:
        _log.warning("no change products: %s", reason)
        return None
    return earlier


def report_tiles(done: int, running: Sequence[Tile], total: int) -> None:
    """Log the tiles now computing (the terminal's progress bar and Prefect's UI read it)."""
    if running:
        ids = ", ".join(t.id for t in running[:4])
        ids += f" and {len(running) - 4} more" if len(running) > 4 else ""
        message = f"{done} of {total} tiles done; computing {ids}"
    else:
        message = f"computed {done} of {total} tiles; writing tables, catalog and manifest"
    _log.info(message, extra={TILES: (done, len(running), total)})


def published(plan: RunPlan) -> Path | None:
    """The run's product folder when it is complete already (a rerun is then a no-op)."""
    final = final_folder(plan)
    return final if (final / MANIFEST_JSON).is_file() else None


def write_zone_tables(
    folder: Path, partials: Sequence[zonal.ZonalPartial]
) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Per-zone time series of every index as Parquet and CSV tables.

    Returns:
        The table (it also goes into the run's GeoPackage) and its files by format.
    """
    table = zonal.zonal_table(zonal.combine_partials(partials))
    paths = zonal.write_zonal_table(table, folder)
    return table, {p.suffix.lstrip("."): p for p in paths}


def run_record(plan: RunPlan, results: Sequence[TileResult] = ()) -> dict[str, Any]:
    """Inputs, parameters and scenes of a run, for the manifest.

    With the tiles' results, each tile also records its key (the hash of its inputs), the
    process that computed it and whether this run reused it from an interrupted one.
    """
    source = get_source(plan.spec.source, plan.spec.source_settings)
    done = {r.tile.id: r for r in results}
    return {
        "flow": "monitor",
        "parameters": plan.spec.model_dump(mode="json"),
        "aoi": {
            "path": str(plan.aoi.path),
            "name": plan.aoi.name,
            "sha256": plan.aoi.sha256,
            "area_km2": round(plan.aoi.area_km2, 3),
            "zones": [str(n) for n in plan.aoi.zones["name"]],
        },
        "source": {"name": plan.spec.source, **source.describe()},
        "models": _model_record(plan.spec),
        "tiles": [
            {
                "id": t.tile.id,
                "epsg": t.tile.epsg,
                "bounds": list(t.tile.area_bounds),
                "scenes": [s.id for s in t.scenes],
                **(
                    {
                        "key": done[t.tile.id].folder.name,
                        "worker": done[t.tile.id].worker,
                        "reused": not done[t.tile.id].computed,
                    }
                    if t.tile.id in done
                    else {}
                ),
            }
            for t in plan.tiles
        ],
    }


def model_cards(spec: RunSpec) -> list[tuple[str, str]]:
    """``(title, Markdown)`` of the model cards of the models a run uses."""
    cards = []
    for title, path in (
        ("Bush encroachment model", monitor_model(spec)),
        ("Yield model", yield_model_path(spec)),
    ):
        if path is not None:
            card = (path if path.is_dir() else path.parent) / "card.md"
            if card.is_file():
                cards.append((title, card.read_text()))
    return cards


def _model_record(spec: RunSpec) -> list[dict[str, Any]]:
    """The checkpoints a run mapped and forecast with, by path, checksum and what they take."""
    models = []
    path = monitor_model(spec)
    if path is not None:
        card = json.loads(((path if path.is_dir() else path.parent) / CARD_JSON).read_text())
        models.append(
            model_entry(
                "invasive",
                path,
                card["sha256"],
                feature_set=f"{card['feature_set']['name']}/v{card['feature_set']['version']}",
                architecture=card["model"]["name"],
            )
        )
    yield_path = yield_model_path(spec)
    if yield_path is not None:
        card = json.loads(yield_path.with_name("card.json").read_text())
        models.append(
            model_entry(
                "yield",
                yield_path,
                card.get("sha256"),
                crop=card.get("crop"),
                country=card.get("country"),
            )
        )
    return models


def mosaic(
    path: Path,
    grid: GeoBox,
    layer: Layer,
    tiles: Sequence[TileResult],
    *,
    tags: dict[str, str],
) -> Path:
    """Write one layer's COG on ``grid`` from the tiles' persisted results, a tile at a time."""
    with CogWriter(path, grid, layer, tags=tags) as writer:
        for result in tiles:
            writer.write(result.tile.geobox, result.read(layer.name))
    return path


def zone_grids(tiles: Sequence[Tile]) -> dict[int, GeoBox]:
    """The mosaic grid of each UTM zone: the pixel grid covering the zone's tiles."""
    grids = {}
    for epsg in sorted({t.epsg for t in tiles}):
        in_zone = [t for t in tiles if t.epsg == epsg]
        grids[epsg] = geobox_for(
            _union_bounds([t.area_bounds for t in in_zone]), epsg, in_zone[0].res
        )
    return grids


def product_bytes(plan: RunPlan) -> int:
    """Disk space a run needs at its peak, in bytes (an upper bound).

    While the mosaics are assembled every layer has a scratch GeoTIFF, uncompressed but
    sparse: only the blocks a tile touches take space. The first COG is made while every
    scratch file still exists (at most its scratch's size, and a third more for overviews);
    later ones replace scratch files, compressed. The tables take about 100 bytes per zone,
    date and index; a megabyte more for the catalog and manifest.
    """
    layers = product_layers(plan.spec).values()
    sizes = [np.dtype(layer.dtype).itemsize for layer in layers]
    tiles = [t.tile for t in plan.tiles]
    blocks = 0
    for epsg, grid in zone_grids(tiles).items():
        touched: set[tuple[int, int]] = set()
        for tile in (t for t in tiles if t.epsg == epsg):
            win = window_of(grid, tile.geobox)
            rows = range(win.row_off // BLOCK_PX, -(-(win.row_off + win.height) // BLOCK_PX))
            cols = range(win.col_off // BLOCK_PX, -(-(win.col_off + win.width) // BLOCK_PX))
            touched.update((r, c) for r in rows for c in cols)
        blocks += len(touched)
    scratch = blocks * BLOCK_PX**2
    dates = len({s.time.date() for t in plan.tiles for s in t.scenes})
    tables = 100 * len(plan.aoi.zones) * dates * len(plan.spec.indices)
    return scratch * sum(sizes) + scratch * max(sizes) * 4 // 3 + tables + (1 << 20)


def _union_bounds(
    bounds: Sequence[tuple[float, float, float, float]],
) -> tuple[float, float, float, float]:
    return (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )


def run_monitor(spec: RunSpec) -> Path:
    """The whole monitor run without Prefect (library use, tests); returns the product folder.

    Tiles are computed one after the other into the run's work folder (reused when an
    earlier, interrupted run finished them); a complete run is left as it is unless
    ``spec.force``.
    """
    clock = RunClock()
    with clock.stage("plan"):
        plan = make_plan(spec)
    done = published(plan)
    if done is not None and not spec.force:
        _log.info("%s is complete: nothing to do (force reruns it)", done)
        return done
    with (
        workspace(final_folder(plan)) as work,
        tile_cluster(spec.dask_address, workers=spec.workers) as address,
    ):
        works = tile_work(plan, work)
        with clock.stage("tiles"):
            results = run_tiles(works) if address is None else distribute(works, address)
        return write_products(plan, results, clock=clock, address=address)


def distribute(works: Sequence[TileWork], address: str) -> list[TileResult]:
    """Each tile's work as one task on the cluster at ``address``; results in tile order."""
    from distributed import Client, as_completed

    if works:
        warm_workers(address, warm_process, works[0].spec)
    with Client(address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        futures = client.map(run_tile, list(works), pure=False)
        completed = as_completed(futures, loop=client.loop)  # type: ignore[no-untyped-call]
        return gather_tiles(works, futures, completed)


def gather_tiles(
    works: Sequence[TileWork], futures: Sequence[Any], completed: Iterable[Any]
) -> list[TileResult]:
    """The tiles' results in tile order, reporting progress as their futures complete.

    Args:
        works: The tiles' work.
        futures: One future per tile, in the same order (Prefect's or dask's).
        completed: The same futures as they complete.
    """
    position = {id(f): i for i, f in enumerate(futures)}
    results: list[TileResult | None] = [None] * len(works)
    report_tiles(0, [w.tile for w in works], len(works))
    for done, future in enumerate(completed, start=1):
        i = position[id(future)]
        try:
            results[i] = future.result()
        except Exception as err:
            lost = lost_worker(err, works[i].tile.id)
            if lost is None:
                raise
            raise lost from None  # dask's message and worker state say nothing more
        left = [w.tile for w, r in zip(works, results, strict=True) if r is None]
        report_tiles(done, left, len(works))
    return [r for r in results if r is not None]


def run_tiles(
    works: Sequence[TileWork], run: Callable[[TileWork], TileResult] = run_tile
) -> list[TileResult]:
    """Each tile's work in turn, in this thread, reporting progress.

    One tile at a time: dask already spreads a tile's chunks over every core, and a tile
    computing in this thread stops at once on Ctrl-C, where one in a worker thread would
    run on.

    Args:
        works: The tiles' work.
        run: What runs one tile (the flow passes its cached task).
    """
    results = []
    for i, one in enumerate(works):
        report_tiles(i, [one.tile], len(works))
        results.append(run(one))
    report_tiles(len(works), [], len(works))
    return results
