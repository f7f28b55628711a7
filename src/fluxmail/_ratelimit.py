"""A send-rate limiter (pure arithmetic; ``acquire`` does the sleeping).

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

from ._checks import rate

WINDOW = 1.05


class RateLimiter:
    """``limiter.wait(now)`` says how long to wait; ``limiter.take(now)`` records a send.

    Sends are recorded at the moment they really start (after any sleep overshoot), so a
    late send pushes the following ones back instead of letting them bunch up behind it.
    """

    def __init__(self, max_per_second: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate("max_per_second", max_per_second)  # ConfigurationError
        self.clock = clock
        self._sent: deque[float] = deque(maxlen=max(1, math.ceil(self.rate)) if self.rate else 1)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait(self, now: float) -> float:
        """Seconds until the next send may start (0 when it may start now)."""
        if not self.enabled or not self._sent:
            return 0.0
        start = self._sent[-1] + WINDOW / self.rate
        if len(self._sent) == self._sent.maxlen:
            start = max(start, self._sent[0] + WINDOW)
        return max(0.0, start - now)

    def take(self, now: float) -> None:
        if self.enabled:
            self._sent.append(now)

    async def acquire(self) -> None:
        """Wait for a slot and take it (safe with many tasks: check and take happen
        without an await in between)."""
        while (delay := self.wait(self.clock())) > 0:
            await asyncio.sleep(delay)
        self.take(self.clock())

    def acquire_sync(self, sleep: Callable[[float], None] = time.sleep) -> None:
        while (delay := self.wait(self.clock())) > 0:
            sleep(delay)
        self.take(self.clock())
