"""The last stage of a run: styles, QGIS project, pictures and report from the written files.

Called inside the run's staging folder once every raster, table and vector is written,
before the catalog and the manifest (which list what this stage adds).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import date
from functools import partial
from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry.base import BaseGeometry

from agrimon.cluster import run_jobs
from agrimon.products.change import ChangeSummary
from agrimon.products.cog import Layer
from agrimon.products.pictures import quicklook, season_dates, zone_chart
from agrimon.products.qgis import write_qgis_products
from agrimon.products.report import ChangeReport, ReportInputs, write_report
from agrimon.products.symbology import StyleContext, raster_symbology

#: Folder of the run's PNGs, inside the run folder.
PICTURES = "pictures"
#: Quicklooks the report shows, in this order, when the run has them.
REPORT_MAPS = ("ndvi_median", "invasive_class", "invasive_probability", "ndvi_peak_doy")


def deliver(
    folder: Path,
    *,
    stem: str,
    aoi_name: str,
    aoi: BaseGeometry,
    zones: gpd.GeoDataFrame,
    epsg: int,
    start: date,
    end: date,
    rasters: Mapping[str, tuple[Path, Layer]],
    vectors: Mapping[str, tuple[Path, str]],
    context: StyleContext,
    zonal_table: pd.DataFrame,
    index: str,
    model_cards: Sequence[tuple[str, str]] = (),
    change: ChangeSummary | None = None,
    pool: Executor | None = None,
) -> Path:
    """Write the QGIS styles and project, the quicklooks and charts, and ``report.html``.

    Args:
        folder: The run's (staged) folder.
        stem: The run's file stem (project and GeoPackage).
        aoi_name: The AOI's name.
        aoi: The AOI outline in lon/lat.
        zones: The AOI's zones.
        epsg: The run's (first) UTM CRS.
        start: First day of the period.
        end: Last day of the period.
        rasters: Every raster product by name (with its UTM-zone suffix): file and layer.
        vectors: Every styled vector layer by style name: GeoPackage and layer name.
        context: The run's season, dates and classes.
        zonal_table: The per-zone index time series.
        index: The index of the charts (the run's first).
        model_cards: ``(title, Markdown)`` of the models the run used.
        change: The change against an earlier run, if any.
        pool: Where the pictures are drawn, one job each (a cluster's executor); in turn,
            here, without one.

    Returns:
        The report's path.
    """
    outline = gpd.GeoSeries([aoi], crs=4326).to_crs(epsg).iloc[0]
    extent = tuple(float(v) for v in outline.bounds)
    project = write_qgis_products(
        folder,
        stem=stem,
        epsg=epsg,
        extent=(extent[0], extent[1], extent[2], extent[3]),
        rasters=rasters,
        vectors=vectors,
        context=context,
    )
    pictures = folder / PICTURES
    pictures.mkdir(exist_ok=True)
    period = f"{start} – {end}"
    looks: dict[Hashable, Callable[[], Path]] = {
        name: partial(
            quicklook,
            path,
            raster_symbology(layer, context),
            title=f"{aoi_name} · {period} · {layer.title}",
            out=pictures / f"{name}.png",
            outline=outline,
        )
        for name, (path, layer) in rasters.items()
    }
    doy = {m: folder / f"{index}_{m}_doy.tif" for m in ("start", "peak", "end")}
    seasons = (
        season_dates(doy, zones, period_start=start)
        if all(p.is_file() for p in doy.values())
        else {}
    )
    charts: dict[str, Callable[[], Path]] = {}
    for i, name in enumerate(str(n) for n in zones["name"]):
        rows = zonal_table[(zonal_table["name"] == name) & (zonal_table["index"] == index)]
        if rows.empty:
            continue
        charts[name] = partial(
            zone_chart,
            rows,
            title=f"{name} · {index.upper()} · {period}",
            out=pictures / f"series_{i + 1}.png",
            season=seasons.get(name),
        )
    drawn = run_jobs({**looks, **{("chart", name): job for name, job in charts.items()}}, pool)
    looks_drawn = {name: drawn[name] for name in looks}
    chart_files = [(name, drawn["chart", name]) for name in charts]
    shown = [(rasters[n][1].title, looks_drawn[n]) for n in REPORT_MAPS if n in looks_drawn]
    change_report = None
    if change is not None:
        change_looks = [
            (rasters[n][1].title, looks_drawn[n]) for n in change.files if n in looks_drawn
        ]
        change_report = ChangeReport.from_summary(change, quicklooks=change_looks)
    return write_report(
        folder,
        ReportInputs(
            title=f"agrimon monitor: {aoi_name}, {start} to {end}",
            aoi_name=aoi_name,
            period=(start, end),
            project_file=project.name,
            quicklooks=shown,
            zone_charts=chart_files,
            model_cards=list(model_cards),
            change=change_report,
            seasons=seasons,
        ),
    )
