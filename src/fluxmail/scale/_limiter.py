"""One send rate for the whole fleet.

``max_per_second`` is the promise BulkSender makes (:mod:`fluxmail.delivery._ratelimit`), kept
across processes: consecutive sends start at least ``1.05 / rate`` seconds apart, fleet
wide, so that no one-second window ever holds more than ``rate`` sends, with a 5 % margin
for the jitter between a worker taking its slot and the server receiving the message. The
slot is one Redis key taken with ``SET NX PX`` (the interval, in Redis's own clock): a
single atomic command, no script. The ``limits`` package has no window shorter than a
second and its moving window allows a burst of ``rate`` at once, which would leave no margin
at the window's edge, so it is not used for this one.

Per-minute, per-hour and per-day quotas (as ESPs impose them) use ``limits``' moving
window on the same Redis (``MovingWindowRateLimiter``); they allow bursts within the
per-second spacing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..delivery._ratelimit import WINDOW

if TYPE_CHECKING:
    import redis

Calls = Callable[[Callable[[], Any]], Any]
_QUOTAS = (("per_minute", "minute"), ("per_hour", "hour"), ("per_day", "day"))


class Spacer(Protocol):
    def take(self, interval: float) -> float:
        """Take the next send slot: 0.0 if taken, else the seconds until it frees."""
        ...


class RedisSpacer:
    def __init__(
        self,
        client: redis.Redis,
        key: str,
        calls: Calls | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.calls = calls or _direct  # RedisCalls: waits out an outage, ConnectError after

    def take(self, interval: float) -> float:
        def slot() -> tuple[Any, Any]:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self.key, b"1", nx=True, px=max(1, math.ceil(interval * 1000)))
            pipe.pttl(self.key)
            taken, left = pipe.execute()
            return taken, left

        taken, left = self.calls(slot)
        return 0.0 if taken else max(0.001, int(left) / 1000)


def _direct(call: Callable[[], Any]) -> Any:
    return call()


class MemorySpacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._free_at = -math.inf
        self._lock = threading.Lock()
        self._clock = clock

    def take(self, interval: float) -> float:
        with self._lock:
            now = self._clock()
            if now < self._free_at:
                return self._free_at - now
            self._free_at = now + interval
            return 0.0


class FleetLimiter:
    """``try_acquire()`` takes a send slot (0.0) or says how long to wait."""

    def __init__(
        self,
        *,
        max_per_second: float,
        spacer: Spacer,
        quotas: dict[str, int] | None = None,
        quota_storage: Callable[[], Any] | None = None,
        key: str = "fluxmail",
        calls: Calls | None = None,
    ) -> None:
        self.interval = WINDOW / max_per_second if max_per_second > 0 else 0.0
        self.spacer = spacer
        self.key = key
        self._calls = calls or _direct  # for the quotas' storage (the same Redis)
        self._items: list[Any] = []
        self._strategy: Any = None
        self._storage: Any = None
        wanted = {name: amount for name, amount in (quotas or {}).items() if amount}
        if wanted:
            from ._deps import limits_module

            items = limits_module("limits")
            per = {"minute": items.RateLimitItemPerMinute, "hour": items.RateLimitItemPerHour}
            per["day"] = items.RateLimitItemPerDay
            for name, unit in _QUOTAS:
                if wanted.get(name):
                    self._items.append(per[unit](wanted[name]))
            assert quota_storage is not None
            strategies = limits_module("strategies")
            self._storage = quota_storage()
            self._strategy = strategies.MovingWindowRateLimiter(self._storage)

    def close(self) -> None:
        """Close the quotas' Redis client (the slot's is the claim store's)."""
        client = getattr(self._storage, "storage", None)
        if client is not None and hasattr(client, "close"):
            client.close()

    @property
    def enabled(self) -> bool:
        return self.interval > 0 or bool(self._items)

    def try_acquire(self) -> float:
        return float(self._calls(self._try_acquire))

    def _try_acquire(self) -> float:
        quota_wait = self._quota_wait()
        if quota_wait > 0:
            return quota_wait
        if self.interval > 0:
            wait = self.spacer.take(self.interval)
            if wait > 0:
                return wait
        for item in self._items:
            if not self._strategy.hit(item, self.key):  # lost a race for the last one
                return max(0.01, self._reset_in(item))
        return 0.0

    def _quota_wait(self) -> float:
        waits = [self._reset_in(i) for i in self._items if not self._strategy.test(i, self.key)]
        return max(0.01, *waits) if waits else 0.0

    def _reset_in(self, item: Any) -> float:
        stats = self._strategy.get_window_stats(item, self.key)
        return max(0.0, float(stats.reset_time) - time.time())

    def acquire(
        self,
        max_wait: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> float:
        """Wait up to ``max_wait`` seconds for a slot: 0.0 once taken, else the wait still
        ahead (the caller gives the message back to the queue for that long)."""
        if not self.enabled:
            return 0.0
        deadline = clock() + max_wait
        for _ in range(10_000):
            wait = self.try_acquire()
            if wait <= 0:
                return 0.0
            if clock() + wait > deadline:
                return wait
            sleep(wait)
        return self.interval or 1.0
