"""A send-rate limiter (pure arithmetic; the caller does the sleeping).

``max_per_second`` is a promise about every one-second window, not an average: at most
``rate`` sends start in any window of ``WINDOW`` seconds, and sends are spaced at least
``1 / rate`` apart so the limit holds from the first message (no burst at the start).
The window is 5 % longer than a second so that jitter on the way to the server cannot
squeeze one extra message into a second as the server measures it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

WINDOW = 1.05


class RateLimiter:
    """``wait = limiter.reserve(now)`` gives how long to wait before the next send."""

    def __init__(self, max_per_second: float, clock: Callable[[], float] = time.monotonic):
        if isinstance(max_per_second, bool) or max_per_second < 0:
            raise ValueError("max_per_second must be >= 0 (0 means no limit)")
        self.rate = float(max_per_second)
        self.clock = clock
        self._slots: deque[float] = deque(maxlen=max(1, math.ceil(self.rate)) if self.rate else 1)
        self._last = -math.inf

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def reserve(self, now: float) -> float:
        """Claim the next send slot at or after ``now``; return the wait until it."""
        if not self.enabled:
            return 0.0
        start = max(now, self._last + WINDOW / self.rate)
        if len(self._slots) == self._slots.maxlen:
            start = max(start, self._slots[0] + WINDOW)
        self._slots.append(start)
        self._last = start
        return start - now

    async def acquire(self) -> None:
        wait = self.reserve(self.clock())
        if wait > 0:
            await asyncio.sleep(wait)

    def acquire_sync(self, sleep: Callable[[float], None] = time.sleep) -> None:
        wait = self.reserve(self.clock())
        if wait > 0:
            sleep(wait)
