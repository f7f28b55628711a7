"""A send-rate limiter (pure arithmetic; ``acquire`` does the sleeping).

``max_per_second`` is a promise about every one-second window, not an average: at most
``rate`` sends start in any window of ``WINDOW`` seconds, and sends are spaced ``WINDOW /
rate`` apart so the limit holds from the first message (no burst at the start). The window
is 5 % longer than a second so that jitter on the way to the server (up to ~50 ms between
two messages a window apart) cannot squeeze one extra message into a second as the server
measures it (with 4 %, a loaded machine's sink saw 11 in one second of a 10/s limit).

The spacing follows a grid of planned slots, not the previous actual start: a send that
starts a little late (a sleep overshoots, a busy machine's scheduler wakes the process
several milliseconds after the deadline) does not push every later slot back, or a 300/s
limit would deliver ~233/s; the next sends catch up. Only a send later than ``CATCH_UP``
(or a whole interval, when that is longer) moves the grid to it: the process was stalled,
or the server is the slower one, and catching up would be a burst. The window check on
the actual start times keeps the promise whatever the grid says. The limiter reaches
``rate / WINDOW`` (95.2 %) when the client and server keep up
(``benchmarks/hardening_bench.py ratelimit``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from ..smtp._checks import rate

WINDOW = 1.05
CATCH_UP = 0.05  # seconds: later than this (or an interval) is a stall, not jitter


class RateLimiter:
    """``limiter.wait(now)`` says how long to wait; ``limiter.take(now)`` records a send.

    Sends are recorded at the moment they really start (after any sleep overshoot); the
    next slot is the planned one plus an interval, unless this send was late by more than
    ``CATCH_UP`` or an interval: then the grid starts again from it (module docstring).
    """

    def __init__(self, max_per_second: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate("max_per_second", max_per_second)  # ConfigurationError
        self.clock = clock
        self.interval = WINDOW / self.rate if self.rate else 0.0
        self._next: float | None = None  # the planned slot of the next send
        # at most floor(rate) starts per window: 14.5/s is 14 in any second (ceil would
        # let a catch-up squeeze 15 into one)
        self._sent: deque[float] = deque(maxlen=max(1, math.floor(self.rate)))

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait(self, now: float) -> float:
        """Seconds until the next send may start (0 when it may start now)."""
        if not self.enabled or self._next is None:
            return 0.0
        start = self._next
        if len(self._sent) == self._sent.maxlen:
            start = max(start, self._sent[0] + WINDOW)
        return max(0.0, start - now)

    def take(self, now: float) -> None:
        if not self.enabled:
            return
        slot = now if self._next is None else self._next
        if now - slot > max(self.interval, CATCH_UP):  # a stall: a new grid from here
            slot = now
        self._next = slot + self.interval
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
