"""The terminal's progress bar and log lines: one bar that never moves back, no noise."""

from __future__ import annotations

import io
import logging

import dask.array as da
import numpy as np
from rich.console import Console

from agrimon.errors import SourceError
from agrimon.progress import TILES, RunProgress, TerminalLog


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def _prefect_logger(name: str, *, verbose: bool) -> tuple[TerminalLog, io.StringIO, logging.Logger]:
    """A Prefect-like logger printing only through a TerminalLog into a buffer."""
    console, buffer = _console()
    handler = TerminalLog(
        console, verbose=verbose, formatter=logging.Formatter("%(levelname)s %(message)s")
    )
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # as Prefect sets its loggers
    logger.propagate = False
    return handler, buffer, logger


def _tiles(logger: logging.Logger, done: int, running: int, total: int) -> None:
    logger.info("tiles %d+%d of %d", done, running, total, extra={TILES: (done, running, total)})


def test_the_bar_follows_tiles_and_dask_tasks_and_never_moves_back() -> None:
    console, _ = _console()
    progress = RunProgress(console)
    handler = TerminalLog(console, progress=progress)
    logger = logging.getLogger("agrimon.test-progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    shown: list[float] = []
    try:
        with progress:
            assert progress.shown == 0.0
            # Computing before the tiles (planning, a probe): it moves nothing.
            da.ones(10, chunks=2).sum().compute(scheduler="sync")
            assert progress.shown == 0.0
            for done in (0, 2):
                _tiles(logger, done, 2, 4)
                shown.append(progress.shown)
                # One batch's compute: the bar moves through the two tiles as tasks finish.
                arr = da.from_array(np.arange(64.0), chunks=4)
                (arr + 1).sum().compute(scheduler="sync")
                shown.append(progress.shown)
                # A second, small compute in the same batch (e.g. zonal values) adds tasks.
                da.ones(4, chunks=1).sum().compute(scheduler="sync")
                shown.append(progress.shown)
            _tiles(logger, 4, 0, 4)
            shown.append(progress.shown)
    finally:
        logger.removeHandler(handler)
    assert shown == sorted(shown), shown  # monotone
    assert shown[0] == 0.0 and shown[3] == 2.0 and shown[-1] == 4.0
    assert 0.0 < shown[1] <= 2.0 and 2.0 < shown[4] <= 4.0


def test_terminal_log_shows_warnings_and_hides_info_and_user_errors() -> None:
    handler, buffer, logger = _prefect_logger("prefect.task_runs.test", verbose=False)
    try:
        logger.info("Finished in state Completed()")
        logger.warning("a warning the user should see")
        try:
            raise SourceError("scene X failed: rerun")
        except SourceError:
            logger.exception("Task run failed with exception")  # the CLI says it once
        logger.error("Finished in state Failed('Task run encountered an exception')")
        try:
            raise ValueError("a bug")
        except ValueError:
            logging.getLogger("agrimon.test").addHandler(handler)
            logging.getLogger("agrimon.test").exception("unexpected")
    finally:
        logger.removeHandler(handler)
        logging.getLogger("agrimon.test").removeHandler(handler)
    text = buffer.getvalue()
    assert "WARNING a warning the user should see" in text
    assert "Completed" not in text and "SourceError" not in text and "Failed" not in text
    assert "ERROR unexpected" in text and "ValueError: a bug" in text  # bugs stay visible


def test_verbose_terminal_log_shows_info_and_user_errors_in_one_line() -> None:
    handler, buffer, logger = _prefect_logger("prefect.task_runs.verbose", verbose=True)
    try:
        logger.info("Finished in state Completed()")
        try:
            raise SourceError("scene X failed: rerun")
        except SourceError:
            logger.exception("Task run failed")
    finally:
        logger.removeHandler(handler)
    lines = buffer.getvalue().strip().splitlines()
    assert lines == ["INFO Finished in state Completed()", "ERROR Task run failed"]
