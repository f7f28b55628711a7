"""Retry decisions and backoff arithmetic (pure).

What is safe to try again: connection failures and timeouts *before* the final '.' of
DATA, and 4xx replies (421 included). Never 5xx, never a message whose outcome is unknown
(the server may already have it), never TLS/verification/protocol failures (they will not
fix themselves), never invalid input.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from .errors import FluxMailException, OutcomeUnknownError

MAX_DELAY = 60.0
JITTER = 0.1


def is_retryable(exc: BaseException) -> bool:
    if not isinstance(exc, FluxMailException) or isinstance(exc, OutcomeUnknownError):
        return False
    return exc.transient


def retry_delays(
    max_retries: int, retry_delay: float, rand: Callable[[], float] = random.random
) -> Iterator[float]:
    """Delays before retry 1..max_retries: ``retry_delay`` doubling each time, capped at
    60 s, each spread by up to ±10 % so that many clients do not retry in lockstep."""
    for attempt in range(max_retries):
        base = min(retry_delay * (2**attempt), MAX_DELAY)
        yield max(0.0, base * (1 + JITTER * (2 * rand() - 1)))
