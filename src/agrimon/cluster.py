"""Where dask computes: the local threads by default, or an existing distributed cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any, TypeVar

from agrimon.errors import ClusterError, ConfigError
from agrimon.quiet import demote

# A lost worker, as the scheduler, the client and the nanny log it: dask reruns its tasks
# elsewhere, and a tile it gives up on is reported once by :func:`lost_worker`.
demote("distributed.scheduler", logging.ERROR, "workers died while trying", "Couldn't gather")
demote("distributed.scheduler", logging.WARNING, "caused the cluster to lose")
demote("distributed.client", logging.WARNING, "Couldn't gather")
demote("distributed.nanny", logging.WARNING, "Restarting worker")

#: Environment variable naming a scheduler, as dask-distributed's own tools use it.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
# Address schemes of dask.distributed that run over TCP.
_SCHEMES = ("tcp", "tls", "ws", "wss")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
#: Prefect's setting of its console handler's level (``logging.yml``, by environment).
_CONSOLE_LEVEL = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
#: The dask settings agrimon's tile workers start with: no statistical profiler. It samples
#: every thread's stack every 10 ms on the worker's event loop, which cost a tenth of a
#: tile's time, for a dashboard view that one long task per tile does not need. (A nanny
#: hands its own settings to its worker, so they apply where the nanny is made; ``dask
#: worker`` takes the same from ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``.)
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


def scheduler_address(explicit: str | None) -> str | None:
    """The scheduler to use: the explicit address, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    return explicit or os.environ.get(SCHEDULER_ENV) or None


def check_scheduler(address: str | None, *, timeout_s: float = 10.0) -> None:
    """Raise a one-line ConfigError unless the scheduler (if any) is a reachable address.

    Cheap and quiet: the address is parsed and its host and port opened with a plain TCP
    connection, without starting a dask client.

    Args:
        address: ``tcp://host:8786`` or None (then ``DASK_SCHEDULER_ADDRESS``, if set).
        timeout_s: How long to wait for the connection.
    """
    target = scheduler_address(address)
    if target is None:
        return
    origin = "--dask-address" if address else SCHEDULER_ENV
    fix = f"fix {origin}" + ("" if address else f" or unset {SCHEDULER_ENV}")
    scheme, sep, rest = target.partition("://")
    if not sep:
        scheme, rest = "tcp", target
    host, colon, port = rest.rstrip("/").rpartition(":")
    if scheme not in _SCHEMES or not colon or not host or not port.isdigit():
        raise ConfigError(
            f"{origin} {target!r} is not a Dask scheduler address: give one such as "
            f"tcp://host:8786 ({fix})"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(
            f"cannot reach the Dask scheduler at {target} ({origin}): {reason}; start it "
            f"(dask scheduler) or {fix}"
        ) from err


@contextmanager
def connect(address: str | None, *, timeout_s: float = 30.0) -> Iterator[str]:
    """Compute on the cluster at ``address`` for the duration of the block.

    Without an address (and without ``DASK_SCHEDULER_ADDRESS``) dask's local threaded
    scheduler is used and nothing changes. Results are identical either way: every task
    is a pure function of its inputs.

    Args:
        address: ``tcp://host:8786`` or None.
        timeout_s: How long to wait for the scheduler.

    Yields:
        What computes: the scheduler address or ``"local threads"``.
    """
    target = scheduler_address(address)
    if target is None:
        yield "local threads"
        return
    from distributed import Client

    try:
        client = Client(target, timeout=timeout_s, set_as_default=True)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {target}: {type(err).__name__}; start it "
            f"(dask scheduler), fix --dask-address or unset {SCHEDULER_ENV}"
        ) from err
    try:
        yield target
    finally:
        client.close()  # type: ignore[no-untyped-call]


def local_threads(workers: int) -> int:
    """Threads per process of a local cluster of ``workers`` processes: the cores shared."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


@contextmanager
def tile_cluster(
    address: str | None, *, workers: int = 1, timeout_s: float = 30.0
) -> Iterator[str | None]:
    """Where the run's tiles are computed, for the duration of the block.

    Each tile is one unit of work; on a cluster each runs whole on one worker, with that
    worker's threads, and writes its results to the run's work folder (which the workers
    must see: the same machine, or a shared file system).

    Args:
        address: An existing scheduler (else ``DASK_SCHEDULER_ADDRESS``), or None.
        workers: Without an address, this many local worker processes (a
            ``LocalCluster`` on 127.0.0.1, stopped with the block); 1 computes the tiles
            one after the other in this process.
        timeout_s: How long to wait for the scheduler.

    Yields:
        The scheduler address, or None for this process.
    """
    target = scheduler_address(address)
    if target is not None:
        check_scheduler(address, timeout_s=timeout_s)
        yield target
        return
    if workers <= 1:
        yield None
        return
    with local_cluster(workers, local_threads(workers), env=_worker_env()) as cluster:
        try:
            yield str(cluster.scheduler_address)
        except BaseException:
            # Stopped or failed: the tiles in flight are abandoned (their work folder
            # keeps what finished), so the workers go now instead of being asked to
            # finish and killed seconds later.
            _kill_workers(cluster)
            raise


def local_cluster(workers: int, threads: int, *, env: dict[str, str] | None = None) -> Any:
    """A ``LocalCluster`` of tile workers on 127.0.0.1 (:data:`WORKER_CONFIG`), started.

    Args:
        workers: Worker processes.
        threads: Threads per worker.
        env: Environment variables of the worker processes.
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set(WORKER_CONFIG):  # the nannies take it over as they start
        return LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
            env=env or {},
        )


def _worker_env() -> dict[str, str]:
    """Local workers print Prefect's log lines to the terminal only as this process does.

    Without ``--verbose`` the terminal shows warnings and errors only; the workers' records
    still reach the Prefect API.
    """
    from agrimon.progress import TerminalLog

    quiet = any(isinstance(h, TerminalLog) and not h.verbose for h in logging.getLogger().handlers)
    if not quiet or _CONSOLE_LEVEL in os.environ:
        return {}
    return {_CONSOLE_LEVEL: "WARNING"}


def _kill_workers(cluster: object) -> None:
    """SIGKILL the worker processes of a local cluster (its nannies then close at once)."""
    for nanny in getattr(cluster, "workers", {}).values():
        process = getattr(getattr(nanny, "process", None), "process", None)
        pid = getattr(process, "pid", None)
        if isinstance(pid, int):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def lost_worker(err: BaseException, tile_id: str) -> ClusterError | None:
    """The one-line error for a tile whose workers all died computing it, else None.

    Dask gives a task to another worker when the one computing it dies, and gives up
    (``KilledWorker``) once ``distributed.scheduler.allowed-failures`` more have died on
    it: most often each ran out of memory on the tile.

    Args:
        err: What the tile's future raised.
        tile_id: The tile, named in the message.
    """
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:
        return None
    if not isinstance(err, KilledWorker):
        return None
    deaths = err.allowed_failures + 1
    times = "once" if deaths == 1 else f"{deaths} times"
    return ClusterError(
        f"tile {tile_id}: the Dask worker computing it died {times} (out of memory, or "
        "killed); rerun the same command to resume from the finished tiles, with fewer "
        "--workers or a smaller --chunk-px if memory is short"
    )


def on_worker() -> bool:
    """Whether this code runs inside a dask.distributed worker."""
    try:
        from distributed import get_worker
    except ImportError:
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def warm_workers(address: str, setup: Callable[..., T], *args: object) -> dict[str, T]:
    """Run ``setup(*args)`` once on every worker of the cluster, as a task, before the tiles.

    What a worker loads once (torch and a model) is then loaded by all at once, not inside
    each worker's first tile, so a tile's task holds only what the tile needs. It runs on a
    task thread (``client.run`` would block the worker's event loop meanwhile); a worker
    that joins later loads the same on its first tile.

    Returns:
        What ``setup`` returned on each worker, by worker address.
    """
    from distributed import Client

    with Client(address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        workers = list(client.scheduler_info()["workers"])
        futures = [
            client.submit(setup, *args, workers=[w], allow_other_workers=False, pure=False)
            for w in workers
        ]
        # A setup that failed fails the run here, with its message.
        results = client.gather(futures)
        return dict(zip(workers, results, strict=True))


@contextmanager
def assembly_pool(address: str | None) -> Iterator[Executor | None]:
    """The cluster at ``address`` as an executor, for the assembly's independent jobs.

    The run's pictures are drawn there, one per task, while the tiles' workers would
    otherwise idle; each job reads and writes the run's staging folder, which the workers
    see as they see its work folder.

    Yields:
        An executor of the cluster, or None without one (the jobs then run here, in turn).
    """
    if address is None:
        yield None
        return
    from distributed import Client

    with Client(address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        yield client.get_executor(pure=False)


def run_jobs(jobs: Mapping[K, Callable[[], T]], pool: Executor | None) -> dict[K, T]:
    """Run independent jobs, one task each on ``pool`` (in turn, here, without); results by key.

    Args:
        jobs: Each job by key: a picklable callable of no argument (a ``functools.partial``).
        pool: From :func:`assembly_pool`.
    """
    if pool is None:
        return {key: job() for key, job in jobs.items()}
    return dict(zip(jobs, pool.map(_run, jobs.values()), strict=True))


def _run(job: Callable[[], T]) -> T:
    return job()
