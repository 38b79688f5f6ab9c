"""What a command-line run shows on the terminal: one progress bar, warnings, no log noise.

The library reports its progress as ordinary log records (``agrimon.monitor`` logs each batch
of tiles it computes, with :data:`TILES` in the record's ``extra``), so Prefect's UI and any
log file see the same events; :class:`RunProgress` turns them into one bar over the whole
run, filled between batches by dask's task callbacks, that never moves backwards.
:class:`TerminalLog` replaces Prefect's console handler: by default it shows warnings and
unexpected errors only (an error the user can fix is printed once, as one line, by the
command line itself); ``verbose`` shows every INFO line too.
"""

from __future__ import annotations

import logging
from typing import Any

from dask.callbacks import Callback
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from agrimon.errors import AgrimonError

#: Key of a log record's ``extra`` carrying ``(tiles done, tiles now computing, tiles in all)``.
TILES = "agrimon_tiles"

# Prefect loggers whose ERROR lines only restate a failure the command line reports itself.
_RUN_STATE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine")


class RunProgress(Callback):
    """One progress bar for a whole run, in tiles, fed by log records and dask callbacks.

    Before the first tile it shows what the run is doing (:meth:`status`); then
    ``tiles done + tiles computing × share of their dask tasks finished``, never less than
    it showed before. Nothing is drawn when the console is not a terminal.

    Args:
        console: Where to draw (standard error).
    """

    def __init__(self, console: Console) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[tiles]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task = self._progress.add_task("starting", total=None, tiles="")
        self._done = 0
        self._running = 0
        self._total = 0
        self._tasks_todo = 0
        self._tasks_done = 0
        self._shown = 0.0

    def __enter__(self) -> RunProgress:
        self._progress.start()
        super().__enter__()  # type: ignore[no-untyped-call]
        return self

    def __exit__(self, *args: Any) -> None:
        super().__exit__(*args)  # type: ignore[no-untyped-call]
        self._progress.stop()

    @property
    def shown(self) -> float:
        """Tiles the bar shows as done (fractional while a batch computes)."""
        return self._shown

    def status(self, text: str) -> None:
        """Say what the run is doing before (or after) the tiles are computed."""
        self._progress.update(self._task, description=text)

    def tiles(self, done: int, running: int, total: int) -> None:
        """``done`` of ``total`` tiles are finished and ``running`` more are computing."""
        self._done, self._running, self._total = done, running, total
        self._tasks_todo = self._tasks_done = 0
        text = "computing tiles" if running else "writing products"
        self._progress.update(
            self._task, description=text, total=max(total, 1), tiles=f"tiles {done}/{total}"
        )
        self._show(float(done))

    def _show(self, value: float) -> None:
        self._shown = max(self._shown, min(value, float(self._total)))
        self._progress.update(self._task, completed=self._shown)

    # dask callbacks: any compute in the process, from any thread, while a batch runs.
    def _start_state(self, dsk: Any, state: Any) -> None:
        self._tasks_todo += sum(len(state[k]) for k in ("ready", "waiting"))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self._tasks_done += 1
        if self._running and self._tasks_todo:
            share = min(self._tasks_done / self._tasks_todo, 1.0)
            self._show(self._done + self._running * share)


class TerminalLog(logging.Handler):
    """Log records on the terminal, one line each, above the progress bar.

    Args:
        console: Where to print (standard error).
        progress: Receives the records that carry :data:`TILES`.
        verbose: Show INFO records (Prefect's task lines, agrimon's tiles) and the
            flow and task state lines; else warnings and unexpected errors only.
        formatter: How to format a record (Prefect's, for its flow and task lines).
    """

    def __init__(
        self,
        console: Console,
        *,
        progress: RunProgress | None = None,
        verbose: bool = False,
        formatter: logging.Formatter | None = None,
    ) -> None:
        # Every record reaches handle() (progress records are INFO); filter() picks.
        super().__init__(level=logging.NOTSET)
        self.threshold = logging.INFO if verbose else logging.WARNING
        self.console = console
        self.progress = progress
        self.verbose = verbose
        self.setFormatter(formatter or logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def handle(self, record: logging.LogRecord) -> bool:
        """Feed the bar, then print the record if :meth:`filter` lets it through."""
        tiles = getattr(record, TILES, None)
        if tiles is not None and self.progress is not None:
            self.progress.tiles(*tiles)
        return super().handle(record)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to print ``record`` (see the class docstring)."""
        if record.levelno < self.threshold or not super().filter(record):
            return False
        user_error = record.exc_info is not None and isinstance(record.exc_info[1], AgrimonError)
        if user_error:
            if not self.verbose:
                return False  # the command line prints it once, as one line
            record.exc_info = None  # one line is enough
            record.exc_text = None
        restates_failure = record.levelno >= logging.ERROR and record.name.startswith(
            _RUN_STATE_LOGGERS
        )
        return self.verbose or not restates_failure

    def emit(self, record: logging.LogRecord) -> None:
        """Print one formatted record (rich keeps it above the live bar)."""
        try:
            text = self.format(record)
        except Exception:  # a broken record must not break the run
            self.handleError(record)
            return
        style = "yellow" if record.levelno == logging.WARNING else None
        if record.levelno >= logging.ERROR:
            style = "red"
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def install_terminal_log(
    console: Console, *, progress: RunProgress | None = None, verbose: bool = False
) -> TerminalLog:
    """Put :class:`TerminalLog` where Prefect's console handlers are (root, uvicorn, ...).

    Call after Prefect is imported (importing it configures logging). The handlers that
    send logs to a Prefect server stay, so its UI still gets every record.

    Returns:
        The installed handler.
    """
    formatter: logging.Formatter | None = None
    for name in ("", "uvicorn", "fastapi"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler).__name__ == "PrefectConsoleHandler":
                formatter = formatter or handler.formatter
                logger.removeHandler(handler)
    terminal = TerminalLog(console, progress=progress, verbose=verbose, formatter=formatter)
    logging.getLogger().addHandler(terminal)
    # The library's INFO records (tiles) must reach the handlers: the root is at WARNING.
    logging.getLogger("agrimon").setLevel(logging.INFO)
    return terminal
