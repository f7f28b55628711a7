"""The claim store in one process: :class:`~._store.RedisStore`'s semantics in a dict,
with a lock and a monotonic clock (eager mode, the in-process fallback, users' tests)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable

from ._decide import Record
from ._store import Claimed, Scribe, Write


class MemoryStore:
    """The same semantics in one process (a dict, a lock and a monotonic clock)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._records: dict[str, Record] = {}
        self._claims: dict[str, tuple[str, float]] = {}
        self._queued: dict[str, tuple[str, float]] = {}  # message_id: (enqueue_id, until)
        self._dots: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _claim_of(self, message_id: str) -> str | None:
        held = self._claims.get(message_id)
        if held is None or held[1] <= self._clock():
            self._claims.pop(message_id, None)
            return None
        return held[0]

    def get(self, message_id: str) -> Record | None:
        with self._lock:
            return self._records.get(message_id)

    def get_many(self, message_ids: Iterable[str]) -> list[Record | None]:
        with self._lock:
            return [self._records.get(mid) for mid in message_ids]

    def claim(self, message_id: str, token: str, lease: float) -> tuple[bool, Record | None]:
        with self._lock:
            taken = self._claim_of(message_id) is None
            if taken:
                self._claims[message_id] = (token, self._clock() + lease)
            return taken, self._records.get(message_id)

    def lease_left(self, message_id: str) -> float:
        with self._lock:
            held = self._claims.get(message_id)
            return 0.0 if held is None else max(0.0, held[1] - self._clock())

    def update(
        self, message_id: str, token: str, expected: Record | None, record: Record, lease: float
    ) -> bool:
        with self._lock:
            if self._claim_of(message_id) != token or self._records.get(message_id) != expected:
                return False
            self._records[message_id] = record
            self._claims[message_id] = (token, self._clock() + lease)
            return True

    def finish(self, message_id: str, token: str, expected: Record | None, record: Record) -> bool:
        with self._lock:
            if self._claim_of(message_id) == token:
                del self._claims[message_id]
            if self._records.get(message_id) != expected:
                return False
            self._records[message_id] = record
            return True

    def release(self, message_id: str, token: str) -> None:
        with self._lock:
            if self._claim_of(message_id) == token:
                del self._claims[message_id]

    def mark_queued(self, message_ids: Iterable[str]) -> None:
        with self._lock:
            for mid in message_ids:
                self._queued[mid] = ("", math.inf)

    def queued(self, message_ids: Iterable[str]) -> list[bool]:
        with self._lock:
            return [self._queued_by(mid) is not None for mid in message_ids]

    def _queued_by(self, message_id: str) -> str | None:
        noted = self._queued.get(message_id)
        if noted is None or noted[1] <= self._clock():
            self._queued.pop(message_id, None)
            return None
        return noted[0]

    # --- chunks ------------------------------------------------------------------------

    def claim_many(self, message_ids: list[str], token: str, lease: float) -> list[Claimed]:
        found: list[Claimed] = []
        for mid in message_ids:
            taken, record = self.claim(mid, token, lease)
            with self._lock:
                held = self._claims.get(mid)
                left = max(0.0, held[1] - self._clock()) if held else 0.0
            found.append((taken, record, left))
        return found

    def write_many(self, token: str, writes: list[Write], lease: float) -> list[bool]:
        with self._lock:
            return [self._write(token, w, lease) for w in writes]

    def _write(self, token: str, w: Write, lease: float) -> bool:
        if w.unchecked(token):  # as RedisStore: no comparison but "absent" for SET NX
            return self._write_unchecked(token, w, lease)
        ours = self._claim_of(w.message_id) == token
        done = True
        if w.change:
            done = self._records.get(w.message_id) == w.expected and (ours or not w.owned)
            if done and w.record is None:
                self._records.pop(w.message_id, None)
            elif done and w.record is not None:
                self._records[w.message_id] = w.record
            if done and ours and w.owned and w.renew:
                self._claims[w.message_id] = (token, self._clock() + lease)
        if w.release and ours:
            del self._claims[w.message_id]
        return done

    def _write_unchecked(self, token: str, w: Write, lease: float) -> bool:
        mid, done = w.message_id, True
        if w.change and w.record is None:
            self._records.pop(mid, None)
        elif w.change and w.record is not None:
            done = w.expected is not None or mid not in self._records
            if done:
                self._records[mid] = w.record
        if w.release:
            self._claims.pop(mid, None)
        elif w.change and w.owned and w.renew and self._claim_of(mid) is not None:
            self._claims[mid] = (self._claims[mid][0], self._clock() + lease)
        return done

    def scribe(self, token: str) -> Scribe:
        return _MemoryScribe(self, token)

    def dotted_many(self, marks: list[tuple[str, int]]) -> list[bool]:
        with self._lock:
            return [m < 0 or m in self._dots.get(owner, ()) for owner, m in marks]

    def reserve_queued(
        self, entries: list[tuple[str, str]], hold: float
    ) -> list[tuple[bool, str | None, Record | None]]:
        found: list[tuple[bool, str | None, Record | None]] = []
        with self._lock:
            for mid, enqueue_id in entries:
                holder = self._queued_by(mid)
                if holder is None:
                    holder = enqueue_id
                    self._queued[mid] = (enqueue_id, self._clock() + hold)
                    found.append((True, holder, self._records.get(mid)))
                else:
                    found.append((False, holder, self._records.get(mid)))
        return found

    def take_queued(self, entries: list[tuple[str, str]], hold: float) -> None:
        with self._lock:
            for mid, enqueue_id in entries:
                self._queued[mid] = (enqueue_id, self._clock() + hold)

    def confirm_queued(self, message_ids: list[str]) -> None:
        with self._lock:
            for mid in message_ids:
                noted = self._queued.get(mid)
                if noted is not None:
                    self._queued[mid] = (noted[0], math.inf)

    def close(self) -> None:
        return None  # (nothing to close)


class _MemoryScribe:
    def __init__(self, store: MemoryStore, token: str) -> None:
        self._store = store
        self._token = token

    def mark(self, index: int) -> None:
        with self._store._lock:
            self._store._dots.setdefault(self._token, set()).add(index)

    def record(self, message_id: str, record: Record) -> None:
        with self._store._lock:
            self._store._records[message_id] = record

    def renew(self, message_ids: list[str], token: str, lease: float) -> bool:
        store = self._store
        with store._lock:
            ours = all(store._claim_of(mid) == token for mid in message_ids)
            for mid in message_ids:
                if store._claim_of(mid) == token:
                    store._claims[mid] = (token, store._clock() + lease)
            return ours

    def flush(self) -> None:
        return None  # (every write is done when it returns)

    @property
    def intact(self) -> bool:
        return True

    def drain(self) -> None:
        return None

    def close(self) -> None:
        return None
