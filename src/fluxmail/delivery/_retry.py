"""Backoff arithmetic (pure). *Whether* a failure is retried is the delivery policy's
call (:mod:`fluxmail.delivery.policy`); this module only says how long to wait."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

MAX_DELAY = 60.0
JITTER = 0.1


def retry_delays(
    max_retries: int, retry_delay: float, rand: Callable[[], float] = random.random
) -> Iterator[float]:
    """Delays before retry 1..max_retries: ``retry_delay`` doubling each time, capped at
    60 s, each spread by up to ±10 % so that many clients do not retry in lockstep."""
    for attempt in range(max_retries):
        base = min(retry_delay * (2**attempt), MAX_DELAY)
        yield max(0.0, base * (1 + JITTER * (2 * rand() - 1)))
