"""Libraries' records of trouble that agrimon handles itself, demoted to debug records.

GDAL retries each HTTP read, odc-stac logs each failed load, and dask's scheduler, client
and nannies log each lost worker; agrimon retries or reschedules the same work and, when it
still fails, reports it once, in one line naming the scene or the tile. Each library's own
record of a try belongs in the verbose log only, not on the terminal.
"""

from __future__ import annotations

import logging

__all__ = ["DemoteToDebug", "demote"]


class DemoteToDebug(logging.Filter):
    """Turns a logger's records of ``level`` holding any of ``fragments`` into debug records.

    Args:
        level: The level of the records to demote.
        fragments: Text that marks them (any one is enough).
    """

    def __init__(self, level: int, fragments: tuple[str, ...]):
        super().__init__()
        self.level, self.fragments = level, fragments

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; a matching one is kept as a debug record."""
        if record.levelno == self.level:
            message = record.getMessage()
            if any(fragment in message for fragment in self.fragments):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def demote(logger: str, level: int, *fragments: str) -> None:
    """Demote ``logger``'s records of ``level`` holding any of ``fragments`` (idempotent).

    A logger's filters see the records made on it, not those its children pass up, so
    ``logger`` is the exact name the library logs under.
    """
    target = logging.getLogger(logger)
    for existing in target.filters:
        if isinstance(existing, DemoteToDebug) and existing.level == level:
            existing.fragments = tuple(dict.fromkeys((*existing.fragments, *fragments)))
            return
    target.addFilter(DemoteToDebug(level, fragments))
