"""The ``monitor`` flow: AOI → one task per tile → products assembled from the tiles.

Thin by design: each task calls one library stage. Each tile's task computes and persists
that tile's pixels (:func:`agrimon.tilework.run_tile`) into the run's work folder, and is
cached on its inputs (the tile's key hashes the parameters, tile, scenes, zones, model and
code), its small Prefect result persisted beside the tiles: a rerun after a kill shows the
finished tiles as ``Cached`` and computes only the others. The last task assembles the
mosaics, vectors, tables, report, catalog and manifest from the persisted tiles.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import Task, flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from agrimon import monitor as stages
from agrimon.cluster import tile_cluster, warm_workers
from agrimon.config import RunSpec
from agrimon.errors import AgrimonError
from agrimon.plan import RunPlan
from agrimon.products.manifest import RunClock
from agrimon.products.summary import report_link, run_summary
from agrimon.products.workspace import workspace
from agrimon.tilework import TileResult, TileWork, finished, run_tile, warm_process

_log = logging.getLogger("agrimon.monitor")

#: Folder of the tile tasks' Prefect results in the run's work folder: resumed and removed
#: with the tiles.
RESULTS_FOLDER = "prefect-results"


P = ParamSpec("P")
R = TypeVar("R")


def _unchained(stage: Callable[P, R]) -> Callable[P, R]:
    """``stage``, whose :class:`AgrimonError` reaches Prefect without the errors behind it.

    Prefect pickles a failed run's exception into its result storage (``PREFECT_HOME``, or
    the run's work folder), causes included; a source's error is caused by the HTTP error
    of the request that failed, which holds that request, its ``Authorization`` header with
    the access token too. The error's own one-line message says what went wrong.
    """

    @functools.wraps(stage)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return stage(*args, **kwargs)
        except AgrimonError as err:
            failure = err
        # Raised outside the except block, so that Python chains nothing to it again.
        failure.__cause__ = failure.__context__ = None
        failure.__suppress_context__ = True
        raise failure

    return run


def _key(work: TileWork) -> str:
    return f"agrimon-tile-{work.key}"


def _tile_key(context: Any, parameters: dict[str, Any]) -> str:
    """The tile task's cache key: the tile's own key (a hash of all its inputs)."""
    return _key(parameters["work"])


@task(name="plan tiles", cache_policy=NO_CACHE)
@_unchained
def plan_tiles(spec: RunSpec) -> RunPlan:
    """Read the AOI, tile it and find the scenes of each tile."""
    return stages.make_plan(spec)


@task(name="tile", cache_key_fn=_tile_key, persist_result=True)
@_unchained
def tile(work: TileWork) -> TileResult:
    """Compute one tile's layers, map and zonal partials and persist them (or reuse them)."""
    return run_tile(work)


@task(name="assemble products", cache_policy=NO_CACHE)
@_unchained
def assemble(
    plan: RunPlan, results: list[TileResult], clock: RunClock, address: str | None
) -> Path:
    """Mosaics, vectors, tables, styles, report, catalog and manifest, atomically.

    With a cluster (``address``) its workers draw the pictures.
    """
    return stages.write_products(plan, results, clock=clock, address=address)


@task(name="publish artifacts", cache_policy=NO_CACHE)
@_unchained
def publish_artifacts(folder: Path, aoi_name: str) -> None:
    """The run's summary (Markdown) and a link to its report, as Prefect artifacts."""
    key = artifact_key(aoi_name)
    create_markdown_artifact(
        markdown=run_summary(folder), key=key, description=f"agrimon run {folder.name}"
    )
    link = report_link(folder)
    if link is not None:
        create_link_artifact(
            link=link,
            link_text=f"report {folder.name}",
            key=f"{key}-report",
            description="The run's report.html (open it on the machine that ran it)",
        )


def artifact_key(aoi_name: str) -> str:
    """A Prefect artifact key for an AOI: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", aoi_name.lower()).strip("-") or "aoi"
    return f"agrimon-{slug}"


@flow(name="monitor", log_prints=True)
@_unchained
def monitor(spec: RunSpec) -> Path:
    """Monitor an AOI over a period and write its products.

    Args:
        spec: Run parameters.

    Returns:
        The product folder.
    """
    clock = RunClock()
    with clock.stage("plan"):
        plan = plan_tiles(spec)
    done = stages.published(plan)
    if done is not None and not spec.force:
        _log.info("%s is complete: nothing to do (--force reruns it)", done)
        return done
    final = stages.final_folder(plan)
    with (
        workspace(final) as work,
        tile_cluster(spec.dask_address, workers=spec.workers) as address,
    ):
        works = stages.tile_work(plan, work)
        storage = (work / RESULTS_FOLDER).absolute()
        with clock.stage("tiles"):
            if address is None:
                results = stages.run_tiles(works, lambda one: _tile_task(one, storage)(one))
            else:
                results = _on_cluster(works, storage, address)
        folder = assemble(plan, results, clock, address)
    publish_artifacts(folder, plan.aoi.name)
    return folder


def _tile_task(one: TileWork, storage: Path) -> Task[[TileWork], TileResult]:
    """The tile task for one tile: named after it, its result persisted in ``storage``."""
    return tile.with_options(
        task_run_name=f"tile {one.tile.id}",
        result_storage=storage,
        # A tile whose files are gone must not come back from a cached result.
        refresh_cache=finished(one) is None,
    )


def _on_cluster(works: list[TileWork], storage: Path, address: str) -> list[TileResult]:
    """Every tile's task on the Dask cluster at ``address``; results in tile order."""
    from prefect_dask.task_runners import DaskTaskRunner

    if works:
        warm_workers(address, warm_process, works[0].spec)
    with DaskTaskRunner(address=address) as runner:
        futures = [runner.submit(_tile_task(one, storage), {"work": one}) for one in works]
        return stages.gather_tiles(works, futures, as_completed(futures))
