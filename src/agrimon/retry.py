"""Retries with exponential backoff for remote calls."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from agrimon.errors import SourceError

T = TypeVar("T")


class RetryableError(Exception):
    """A failure worth trying again (timeout, 429, 5xx, truncated or corrupt payload).

    Attributes:
        wait_s: Server-requested wait (Retry-After) before the next try, if any.
    """

    def __init__(self, message: str, *, wait_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        attempts: Tries in all (1 = no retry).
        backoff_s: Wait before the second try; doubles each time, with ±25 % jitter.
        max_wait_s: Upper bound of any single wait.
    """

    attempts: int = 4
    backoff_s: float = 1.0
    max_wait_s: float = 60.0

    def wait(self, attempt: int, requested: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        if requested is not None:
            return min(requested, self.max_wait_s)
        base = self.backoff_s * 2 ** (attempt - 1)
        return float(min(base * random.uniform(0.75, 1.25), self.max_wait_s))


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``, retrying :class:`RetryableError` with backoff.

    Args:
        call: The remote call.
        what: What is fetched, named in the final error ("scene S2A_..., tile 33N_...").
        policy: Attempts and waits.
        sleep: Sleep function (tests pass a recorder).

    Raises:
        SourceError: When every attempt failed; the message names ``what`` and the cause.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except RetryableError as err:
            if attempt == policy.attempts:
                raise SourceError(
                    f"could not fetch {what} after {policy.attempts} attempts: {err}; "
                    "check the connection or the service status, then rerun "
                    "(what was fetched is cached)"
                ) from err
            sleep(policy.wait(attempt, err.wait_s))
    raise AssertionError("unreachable")
