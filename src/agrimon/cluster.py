"""Where dask computes: the local threads by default, or an existing distributed cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from agrimon.errors import ConfigError

#: Environment variable naming a scheduler, as dask-distributed's own tools use it.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def scheduler_address(explicit: str | None) -> str | None:
    """The scheduler to use: the explicit address, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    return explicit or os.environ.get(SCHEDULER_ENV) or None


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
    except (OSError, TimeoutError) as err:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {target}: {type(err).__name__}; start it "
            f"(dask scheduler), fix --dask-address or unset {SCHEDULER_ENV}"
        ) from err
    try:
        yield target
    finally:
        client.close()  # type: ignore[no-untyped-call]
