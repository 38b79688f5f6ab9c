"""The complete runs of an AOI: which exist, which came before, which is the latest.

A run's folder is ``<out>/<aoi>/<start>_<end>``; it is complete once published (the
staging folder is renamed into place only after its manifest is written). ``latest`` in
the AOI's folder points to the complete run whose period ends last: a relative symbolic
link, or where the file system has none (FAT, some network shares) a one-line text file
naming the folder.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from agrimon.errors import ConfigError

#: A run folder's name: ``<start>_<end>``.
PERIOD = re.compile(r"(?P<start>\d{4}-\d{2}-\d{2})_(?P<end>\d{4}-\d{2}-\d{2})")
#: The file that marks a run as complete (written last, before the folder is published).
COMPLETE_MARK = "manifest.json"
#: Name of the pointer to the newest complete run, in the AOI's folder.
LATEST = "latest"


@dataclass(frozen=True)
class Run:
    """A complete run folder of an AOI and its period."""

    folder: Path
    start: date
    end: date

    @property
    def period(self) -> str:
        """``<start>_<end>``."""
        return f"{self.start}_{self.end}"


def complete_runs(aoi_folder: Path) -> list[Run]:
    """The complete runs in an AOI's output folder, oldest period end first."""
    if not aoi_folder.is_dir():
        return []
    runs = []
    for path in aoi_folder.iterdir():
        run = as_run(path)
        if run is not None:
            runs.append(run)
    return sorted(runs, key=lambda r: (r.end, r.start))


def as_run(path: Path) -> Run | None:
    """``path`` as a complete run folder, or None (a staging folder, a link, another file)."""
    match = PERIOD.fullmatch(path.name)
    if match is None or path.is_symlink() or not (path / COMPLETE_MARK).is_file():
        return None
    try:
        return Run(path, date.fromisoformat(match["start"]), date.fromisoformat(match["end"]))
    except ValueError:
        return None


def find_earlier(aoi_folder: Path, *, start: date, end: date) -> Run | None:
    """The newest complete run of the AOI whose period ends before ``end`` (not this one)."""
    earlier = [r for r in complete_runs(aoi_folder) if r.end < end and r.period != f"{start}_{end}"]
    return earlier[-1] if earlier else None


def check_compare(path: Path) -> Run:
    """The run folder given with ``--compare``, checked before the run starts.

    Raises:
        ConfigError: Not a complete run folder with index composites.
    """
    where = f"--compare {path}"
    if not path.is_dir():
        raise ConfigError(
            f"{where} is not a folder: give an earlier run's folder, such as "
            "outputs/<aoi>/<start>_<end>"
        )
    match = PERIOD.fullmatch(path.resolve().name)
    if match is None or not (path / COMPLETE_MARK).is_file():
        raise ConfigError(
            f"{where} is not a complete agrimon run (no {COMPLETE_MARK} in a folder named "
            "<start>_<end>): give the folder of a finished run"
        )
    if not any(path.glob("*_median*.tif")):
        raise ConfigError(f"{where} holds no index composites (*_median.tif) to compare with")
    return Run(path, date.fromisoformat(match["start"]), date.fromisoformat(match["end"]))


def update_latest(aoi_folder: Path) -> Path | None:
    """Point ``<aoi_folder>/latest`` at the complete run whose period ends last.

    Replaced atomically. Something else named ``latest`` (a folder, a file that is not such
    a pointer) is left alone: a command never deletes what it did not create.

    Returns:
        The run pointed to, or None (no complete run, or ``latest`` is not agrimon's).
    """
    runs = complete_runs(aoi_folder)
    if not runs:
        return None
    newest = runs[-1].folder
    pointer = aoi_folder / LATEST
    if pointer.exists() and not (pointer.is_symlink() or _is_pointer_file(pointer)):
        return None
    temporary = aoi_folder / f".{LATEST}.{uuid.uuid4().hex[:8]}"
    try:
        os.symlink(newest.name, temporary, target_is_directory=True)
    except OSError:
        temporary.write_text(newest.name + "\n")
    os.replace(temporary, pointer)
    return newest


def read_latest(aoi_folder: Path) -> Path | None:
    """The run ``latest`` points to (link or text file), or None."""
    pointer = aoi_folder / LATEST
    if pointer.is_symlink():
        return aoi_folder / os.readlink(pointer)
    if _is_pointer_file(pointer):
        return aoi_folder / pointer.read_text().strip()
    return None


def _is_pointer_file(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size > 64:
        return False
    return PERIOD.fullmatch(path.read_text().strip()) is not None
