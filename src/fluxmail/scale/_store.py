"""Claim stores: where workers claim a Message-ID and record its outcome.

Two keys per message, both under ``prefix``:

* ``{prefix}:claim:{message_id}`` -- the claim: ``SET NX PX lease`` holding the claimant's
  random token. It exists while one worker works on the message and expires on its own
  if that worker dies.
* ``{prefix}:msg:{message_id}`` -- the record (JSON, see :class:`~._decide.Record`), kept
  ``result_ttl`` seconds. It outlives the claim, which is how a later delivery learns that
  a vanished claimant had already begun the SMTP transaction (``sending``).

A third, ``{prefix}:queued:{message_id}``, is written when the message is enqueued (kept
``result_ttl``): it tells "queued, not started yet" from "Redis has no trace of it".

Writes are compare-and-set (``WATCH`` + ``MULTI``, no Lua): :meth:`update` writes only
while the claim is still the writer's *and* the record is still the one the writer last
saw; :meth:`finish` needs only the latter. So a worker that outlived its claim can still
record its outcome if nobody took over, and never overwrites what a successor recorded.

:class:`RedisStore` is the fleet's; :class:`MemoryStore` has the same semantics inside one
process (eager mode, the in-process fallback, users' tests).

**When Redis is unreachable** every call raises :class:`~fluxmail.errors.ConnectError`
(code ``redis_unavailable``, chained to redis-py's error, without the URL's password).
The calls a worker makes about a message it holds (claim, update, finish, release) first
wait for Redis to come back, with a backoff, for up to ``wait`` seconds (a restart, a
failover): the worker then carries on where it was instead of dropping what it knows,
such as an outcome the server already gave. Retried writes are idempotent: a write whose
reply was lost is recognised as already done. Reads for callers (``get``, ``get_many``,
``queued``) never wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import ConnectError
from ._decide import Record

if TYPE_CHECKING:
    import redis

log = logging.getLogger("fluxmail.scale")
T = TypeVar("T")
#: A WATCH conflict means another client wrote in between; try again a few times.
_WATCH_TRIES = 5
#: The first and the longest pause between two tries while Redis is unreachable.
_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 1.0
UNAVAILABLE = "redis_unavailable"


class RedisCalls:
    """Runs redis-py calls: translates their errors, and waits out a short outage."""

    def __init__(self, client: redis.Redis, *, wait: float = 0.0) -> None:
        self.client = client
        self.wait = wait
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        self.where = f"Redis at {where}"  # never the URL: it may hold the password

    def __call__(self, call: Callable[[], T], *, wait: bool = True) -> T:
        return self.retrying(lambda _retried: call(), wait=wait)

    def retrying(self, call: Callable[[bool], T], *, wait: bool = True) -> T:
        """``call(retried)``: ``retried`` is true once a try failed on the connection
        (its command may have run in Redis with the reply lost)."""
        from ._deps import redis_module

        errors = redis_module().exceptions
        outage = (errors.ConnectionError, errors.TimeoutError)
        deadline = time.monotonic() + (self.wait if wait else 0.0)
        pause = _FIRST_PAUSE
        retried = False
        while True:
            try:
                return call(retried)
            except outage as exc:
                if time.monotonic() + pause > deadline:
                    raise self.unavailable(exc) from exc
                log.warning("%s unreachable (%s); trying again", self.where, type(exc).__name__)
            except errors.RedisError as exc:
                raise self.unavailable(exc) from exc
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
            retried = True

    def unavailable(self, exc: Exception) -> ConnectError:
        waited = f" (waited {self.wait:g} s)" if self.wait else ""
        return ConnectError(
            f"{self.where} is unreachable{waited}: {type(exc).__name__}", code=UNAVAILABLE
        )


class Store(Protocol):
    def get(self, message_id: str) -> Record | None: ...

    def get_many(self, message_ids: Iterable[str]) -> list[Record | None]: ...

    def claim(self, message_id: str, token: str, lease: float) -> tuple[bool, Record | None]:
        """Take the claim if free; in the same step, read the record."""
        ...

    def lease_left(self, message_id: str) -> float: ...

    def update(
        self, message_id: str, token: str, expected: Record | None, record: Record, lease: float
    ) -> bool:
        """Replace ``expected`` by ``record`` and renew the claim for ``lease`` seconds,
        only if the claim is still ``token``'s and the stored record is still
        ``expected``. False: nothing was written."""
        ...

    def finish(self, message_id: str, token: str, expected: Record | None, record: Record) -> bool:
        """Replace ``expected`` by the final ``record`` if the stored record is still
        ``expected`` (even when the claim has expired meanwhile: nobody took over), and
        release the claim if it is ``token``'s. False: someone else wrote first."""
        ...

    def release(self, message_id: str, token: str) -> None: ...

    def mark_queued(self, message_ids: Iterable[str]) -> None:
        """Note that these messages were enqueued (kept as long as results)."""
        ...

    def queued(self, message_ids: Iterable[str]) -> list[bool]: ...


class RedisStore:
    """The claim store on Redis (redis-py); safe across processes and machines."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "fluxmail",
        result_ttl: float,
        wait: float = 0.0,
    ):
        self.client = client
        self.prefix = prefix
        self.result_ttl_ms = max(1000, int(result_ttl * 1000))
        self.calls = RedisCalls(client, wait=wait)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        from ._deps import redis_module

        return cls(redis_module().Redis.from_url(url), **options)

    def _keys(self, message_id: str) -> tuple[str, str]:
        return f"{self.prefix}:msg:{message_id}", f"{self.prefix}:claim:{message_id}"

    def get(self, message_id: str) -> Record | None:
        key = self._keys(message_id)[0]
        return _record(self.calls(lambda: self.client.get(key), wait=False))

    def get_many(self, message_ids: Iterable[str]) -> list[Record | None]:
        keys = [self._keys(mid)[0] for mid in message_ids]
        if not keys:
            return []
        return [_record(raw) for raw in self.calls(lambda: self.client.mget(keys), wait=False)]

    def mark_queued(self, message_ids: Iterable[str]) -> None:
        keys = [f"{self.prefix}:queued:{mid}" for mid in message_ids]

        def mark() -> None:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, b"1", px=self.result_ttl_ms)
            pipe.execute()

        if keys:
            self.calls(mark, wait=False)

    def queued(self, message_ids: Iterable[str]) -> list[bool]:
        keys = [f"{self.prefix}:queued:{mid}" for mid in message_ids]
        if not keys:
            return []
        return [raw is not None for raw in self.calls(lambda: self.client.mget(keys), wait=False)]

    def claim(self, message_id: str, token: str, lease: float) -> tuple[bool, Record | None]:
        record_key, claim_key = self._keys(message_id)

        def take(retried: bool) -> tuple[bool, Record | None]:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(claim_key, token, nx=True, px=_ms(lease))
            pipe.get(claim_key)
            pipe.get(record_key)
            taken, holder, raw = pipe.execute()
            # After a lost reply, a first try may have taken it: ours if it holds our token.
            return bool(taken) or (retried and _text(holder) == token), _record(raw)

        return self.calls.retrying(take)

    def lease_left(self, message_id: str) -> float:
        claim_key = self._keys(message_id)[1]
        left = int(self.calls(lambda: self.client.pttl(claim_key)))
        return max(0.0, left / 1000)

    def update(
        self, message_id: str, token: str, expected: Record | None, record: Record, lease: float
    ) -> bool:
        record_key, claim_key = self._keys(message_id)

        def write(pipe: Any, retried: bool) -> bool:
            raw, claim = pipe.mget(record_key, claim_key)
            if retried and _text(claim) == token and _record(raw) == record:
                return True  # a first try wrote it; its reply was lost
            if _text(claim) != token or _record(raw) != expected:
                return False
            pipe.multi()
            pipe.set(record_key, record.to_json(), px=self.result_ttl_ms)
            pipe.pexpire(claim_key, _ms(lease))
            return True

        return self._transaction(write, record_key, claim_key)

    def finish(self, message_id: str, token: str, expected: Record | None, record: Record) -> bool:
        record_key, claim_key = self._keys(message_id)

        def write(pipe: Any, retried: bool) -> bool:
            raw, claim = pipe.mget(record_key, claim_key)
            written = retried and _record(raw) == record  # by a first try, reply lost
            unchanged = written or _record(raw) == expected
            ours = _text(claim) == token
            if unchanged or ours:
                pipe.multi()
            if unchanged and not written:
                pipe.set(record_key, record.to_json(), px=self.result_ttl_ms)
            if ours:
                pipe.delete(claim_key)
            return unchanged

        return self._transaction(write, record_key, claim_key)

    def release(self, message_id: str, token: str) -> None:
        claim_key = self._keys(message_id)[1]

        def drop(pipe: Any, retried: bool) -> bool:
            if _text(pipe.get(claim_key)) == token:
                pipe.multi()
                pipe.delete(claim_key)
            return True

        self._transaction(drop, claim_key)

    def _transaction(self, body: Callable[[Any, bool], bool], *keys: str) -> bool:
        """Run ``body(pipe, retried)`` under WATCH ``keys``: it reads, calls ``multi()``
        and queues the writes. A write by another client in between makes us read and
        decide again; ``retried`` is true after a lost connection."""
        return self.calls.retrying(lambda retried: self._watched(body, retried, *keys))

    def _watched(self, body: Callable[[Any, bool], bool], retried: bool, *keys: str) -> bool:
        from ._deps import redis_module

        watch_error = redis_module().WatchError
        for _ in range(_WATCH_TRIES):
            with self.client.pipeline(transaction=True) as redis_pipe:
                pipe: Any = redis_pipe
                try:
                    pipe.watch(*keys)
                    done = body(pipe, retried)
                    if pipe.explicit_transaction:
                        pipe.execute()
                    return done
                except watch_error:
                    continue
        raise RuntimeError(f"claim store: {keys[0]} kept changing under us")


class MemoryStore:
    """The same semantics in one process (a dict, a lock and a monotonic clock)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._records: dict[str, Record] = {}
        self._claims: dict[str, tuple[str, float]] = {}
        self._queued: set[str] = set()
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
            self._queued.update(message_ids)

    def queued(self, message_ids: Iterable[str]) -> list[bool]:
        with self._lock:
            return [mid in self._queued for mid in message_ids]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _record(raw: object) -> Record | None:
    return None if raw is None else Record.from_json(raw)  # type: ignore[arg-type]


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) or value is None else str(value)
