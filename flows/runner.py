"""Run the monitor flow from the command line: checks first, then the API, then the flow.

Everything that can be found wrong before the flow starts is found here, in seconds (the
AOI, the output and cache folders, the source's settings, a period without scenes, the Dask
scheduler, the Prefect API), while a temporary Prefect server starts in the background when
no ``PREFECT_API_URL`` is configured (see :mod:`flows.api`). The terminal shows one
progress bar and the warnings; Ctrl-C or SIGTERM stop the run within seconds, publish
nothing and stop the server.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

from rich.console import Console

from agrimon import monitor as stages
from agrimon.config import RunSpec
from agrimon.errors import InterruptedRun
from agrimon.products.manifest import MANIFEST_JSON
from agrimon.progress import RunProgress, install_terminal_log
from flows.api import TemporaryApi, check_api, drain_prefect


def run_from_cli(spec: RunSpec, *, console: Console, verbose: bool = False) -> Path:
    """Check the inputs, start or check the Prefect API and run the ``monitor`` flow.

    Args:
        spec: Run parameters.
        console: Standard error, for the progress bar and log lines.
        verbose: Show Prefect's INFO lines (task runs) too.

    Returns:
        The product folder.

    Raises:
        AgrimonError: A problem with the inputs, the source, the API or the products.
        InterruptedRun: Ctrl-C or SIGTERM; nothing was published.
    """
    with _signals_interrupt(), ExitStack() as stack:
        progress = stack.enter_context(RunProgress(console))
        progress.status("checking the inputs")
        aoi = stages.check_inputs(spec)
        final = spec.out / aoi.name / spec.period
        if (final / MANIFEST_JSON).is_file() and not spec.force:
            message = f"note: {final} is complete: nothing to do (--force runs it again)"
            console.print(message, soft_wrap=True, markup=False, highlight=False)
            return final
        api = None
        if not os.environ.get("PREFECT_API_URL"):
            api = TemporaryApi(status=progress.status)
            stack.callback(api.stop)
            api.start()  # boots while the source is searched and Prefect imported
        progress.status("finding scenes")
        stages.preflight(spec, aoi)
        progress.status("loading Prefect")
        # Send the library's own log records (tile progress) to Prefect's UI as well.
        os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "agrimon")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.monitor import monitor

        install_terminal_log(console, progress=progress, verbose=verbose)
        configured = PREFECT_API_URL.value()  # also from a Prefect profile
        if configured:
            if api is not None:
                api.stop()
            check_api(configured)
            url = configured
        else:
            assert api is not None
            url = api.wait()
        progress.status("planning")
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                folder: Path = monitor(spec)
            finally:
                drain_prefect()
        return folder


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn Ctrl-C and SIGTERM into :class:`InterruptedRun` (exit 130 or 143)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_lost_stops(previous_hook)
    try:
        yield
    except BaseException as err:
        signum = _stop_in_chain(err)
        if signum is None:
            raise
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        interrupted = InterruptedRun(
            f"interrupted by {name}: the run stopped and published nothing; rerun the same "
            "command to start again"
        )
        interrupted.exit_code = 128 + signum
        raise interrupted from None
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)


def _stop_signal(exc: BaseException | None) -> int | None:
    """The signal a stop exception (ours, Python's Ctrl-C or Prefect's SIGTERM) stands for."""
    if isinstance(exc, KeyboardInterrupt):
        return exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
    signum = getattr(exc, "signal", None)  # prefect.exceptions.TerminationSignal
    if isinstance(exc, BaseException) and not isinstance(exc, Exception):
        return signum if isinstance(signum, int) else None
    return None


def _stop_in_chain(exc: BaseException) -> int | None:
    """The stop signal behind ``exc``: itself, or what it was raised while handling.

    A stop that lands while Prefect sets up a task run makes its crash handler fail in
    turn (``ValueError: Task run is not set``), raised while handling the stop.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        signum = _stop_signal(current)
        if signum is not None:
            return signum
        current = current.__cause__ or current.__context__
    return None


def _redeliver_lost_stops(
    previous: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], None]:
    """An unraisable hook that sends a swallowed stop signal again.

    A signal handler runs wherever the main thread is. Inside a weakref callback or a
    ``__del__`` (an import's module-lock callback, say) Python cannot raise its exception:
    it prints "Exception ignored" and the run would go on to the end, publishing. Sending
    the signal again makes the handler run once the callback has returned.
    """

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        signum = _stop_signal(unraisable.exc_value)
        if signum is None:
            previous(unraisable)
            return
        # From another thread and a moment later: raised here, the handler would run
        # inside this hook and be swallowed again.
        resend = threading.Timer(0.1, os.kill, (os.getpid(), signum))
        resend.daemon = True
        resend.start()

    return hook
