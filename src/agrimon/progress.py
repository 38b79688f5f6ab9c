"""A rich progress bar fed by dask's scheduler callbacks."""

from __future__ import annotations

from typing import Any

from dask.callbacks import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class DaskProgress(Callback):
    """Show dask tasks done / to do on the terminal while anything computes.

    Every ``compute`` in the process, from any thread, adds its tasks to one bar, so a flow
    that computes tile after tile shows one steadily growing bar. Nothing is drawn when the
    console is not a terminal (CI, pipes, log files).
    """

    def __init__(self, console: Console, description: str = "computing") -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task = self._progress.add_task(description, total=0)

    def __enter__(self) -> DaskProgress:
        self._progress.start()
        super().__enter__()  # type: ignore[no-untyped-call]
        return self

    def __exit__(self, *args: Any) -> None:
        super().__exit__(*args)  # type: ignore[no-untyped-call]
        self._progress.stop()

    def _start_state(self, dsk: Any, state: Any) -> None:
        todo = sum(len(state[k]) for k in ("ready", "waiting"))
        self._progress.update(self._task, total=(self._progress.tasks[0].total or 0) + todo)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self._progress.advance(self._task)
