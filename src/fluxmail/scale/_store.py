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

A fourth, ``{prefix}:dots:{token}``, is one claimant's *dot marks*: a bitmap with one bit
per message of a chunk, set (``SETBIT``, written without waiting for the reply) right
before that message's data goes out (after the server's 354); see :mod:`._decide`.

A worker works on a chunk of messages with a few calls per chunk, not per message:
:meth:`Store.claim_many` (one round trip), :meth:`Store.write_many` (one round trip while
the writer's claims are certainly its own, see :meth:`Write.unchecked`; two more for
compare-and-set: ``WATCH`` + ``MGET``, ``MULTI``...``EXEC``) and a :class:`Scribe`, which
sends dot marks and outcomes while the worker's claims are certainly its own, without
waiting for replies (they are read in one go, :meth:`Scribe.drain`).

Writes are compare-and-set (``WATCH`` + ``MULTI``, or ``SET NX`` over an absent record;
no Lua): :meth:`update` writes only while the claim is still the writer's *and* the
record is still the one the writer last saw; :meth:`finish` needs only the latter. So a
worker that outlived its claim can still record its outcome if nobody took over, and
never overwrites what a successor recorded. The only writes that compare nothing are
those of a writer whose claims are certainly its own, over records it wrote itself.

:class:`RedisStore` is the fleet's; :class:`~._memstore.MemoryStore` has the same semantics
inside one process (eager mode, the in-process fallback, users' tests).

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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

from ..errors import ConnectError
from ._decide import Record
from ._scribe import RedisScribe
from ._scribe import resp as _resp

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
        started = time.monotonic()
        try:  # the common case first, with no set-up (a worker calls this per message)
            return call(False)
        except Exception as exc:  # what it means is decided below
            failure = exc
        from ._deps import redis_module

        errors = redis_module().exceptions
        outage = (errors.ConnectionError, errors.TimeoutError)
        deadline = started + (self.wait if wait else 0.0)
        pause = _FIRST_PAUSE
        while True:
            if isinstance(failure, outage):
                if time.monotonic() + pause > deadline:
                    raise self.unavailable(failure) from failure
                log.warning(
                    "%s unreachable (%s); trying again", self.where, type(failure).__name__
                )
            elif isinstance(failure, errors.RedisError):
                raise self.unavailable(failure) from failure
            else:
                raise failure
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
            try:
                return call(True)
            except Exception as exc:
                failure = exc

    def fail(self, exc: Exception) -> NoReturn:
        """Raise what ``exc``, from a call tried once, means (as :meth:`retrying` with
        ``wait=False``): a ConnectError for Redis's errors, else ``exc`` itself."""
        from ._deps import redis_module

        if isinstance(exc, redis_module().exceptions.RedisError):
            raise self.unavailable(exc) from exc
        raise exc

    def unavailable(self, exc: Exception) -> ConnectError:
        waited = f" (waited {self.wait:g} s)" if self.wait else ""
        return ConnectError(
            f"{self.where} is unreachable{waited}: {type(exc).__name__}", code=UNAVAILABLE
        )


#: (taken, the record, the claim's lease left in seconds) for one message of a chunk.
Claimed = tuple[bool, Record | None, float]


@dataclass(frozen=True)
class Write:
    """One message's part of :meth:`Store.write_many`.

    ``record`` replaces ``expected`` (None deletes the record: a try that never began).
    ``owned``: only while the claim is the writer's (and it is renewed), as
    :meth:`Store.update`; otherwise as :meth:`Store.finish` (only the record must be
    unchanged). ``change=False`` writes nothing; ``release`` drops the claim if it is
    the writer's. ``sure``: the writer's claim is certainly its own (its lease is far
    from over, see :meth:`unchecked`)."""

    message_id: str
    expected: Record | None
    record: Record | None
    owned: bool = True
    release: bool = False
    change: bool = True
    renew: bool = True  # (an owned write renews the claim unless told not to)
    sure: bool = False

    def unchecked(self, token: str) -> bool:
        """True when this write needs no ``WATCH``: the claim is certainly ``token``'s
        (so it is released, renewed, with a plain ``DEL``, ``PEXPIRE``) and

        * nothing of the record changes, or
        * the record was absent: ``SET NX`` compares with absent and sets in one
          command (an outlived claimant's late write, before or after, is never lost:
          whichever comes second is refused), or
        * ``expected`` is ``token``'s own record (one token per try at a chunk):
          while ``token`` holds the claim, only ``token`` writes a record it owns (a
          worker that outlived its claim compares with its own records, written under
          its own token, and writes without comparing only while its claims are
          certainly its own, as here), so the record is still ``expected``.

        Anything else (a record another claimant wrote: a recovered or retried message,
        whose outlived claimant may still finish it) is compare-and-set."""
        if not self.sure or not self.change:
            return self.sure
        if self.expected is None:
            return self.record is not None
        return self.expected.owner == token


class Scribe(Protocol):
    """Writes that need no compare-and-set (the writer's claims are certainly its own),
    sent without waiting for their replies; :meth:`drain` reads the replies."""

    def mark(self, index: int) -> None:
        """Set dot mark ``index``: sent before this returns (before the caller writes
        the message's data), its reply read later."""
        ...

    def record(self, message_id: str, record: Record) -> None: ...

    def renew(self, message_ids: list[str], token: str, lease: float) -> bool:
        """Extend ``token``'s claims on these messages to ``lease`` seconds from now,
        waiting for the replies: False if any was no longer ``token``'s."""
        ...

    def flush(self) -> None:
        """Send what :meth:`record` holds (before the caller waits for anything)."""
        ...

    @property
    def intact(self) -> bool:
        """False once a write may have been lost (Redis went away): what was given to
        the scribe must be written again."""
        ...

    def drain(self) -> None:
        """Send what is held, read every reply still unread; raises ConnectError if a
        write failed."""
        ...

    def close(self) -> None: ...


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

    # --- chunks ------------------------------------------------------------------------

    def claim_many(self, message_ids: list[str], token: str, lease: float) -> list[Claimed]:
        """:meth:`claim` for every message, in one step."""
        ...

    def write_many(self, token: str, writes: list[Write], lease: float) -> list[bool]:
        """Every :class:`Write` in one compare-and-set step; which of them were done."""
        ...

    def scribe(self, token: str) -> Scribe:
        """A :class:`Scribe` for ``token``'s dot marks and records."""
        ...

    def dotted_many(self, marks: list[tuple[str, int]]) -> list[bool]:
        """For each (owner token, mark): may that message's dot have been written? A
        mark below 0 (none was kept) is always True."""
        ...

    def reserve_queued(
        self, entries: list[tuple[str, str]], hold: float
    ) -> list[tuple[bool, str | None, Record | None]]:
        """For each (message_id, enqueue_id): note it queued by that enqueue for ``hold``
        seconds unless another enqueue's note is there; (noted, the enqueue_id noted,
        the record)."""
        ...

    def take_queued(self, entries: list[tuple[str, str]], hold: float) -> None:
        """Note them queued by these enqueues, over any older note."""
        ...

    def confirm_queued(self, message_ids: list[str]) -> None:
        """They were published: keep their notes as long as results."""
        ...

    def close(self) -> None: ...


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

    def _record_key(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{message_id}"

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

    # --- chunks ------------------------------------------------------------------------

    def claim_many(self, message_ids: list[str], token: str, lease: float) -> list[Claimed]:
        if not message_ids:
            return []
        keys = [self._keys(mid) for mid in message_ids]
        n, ms = len(keys), _ms(lease)

        def take(conn: Any, retried: bool) -> list[Claimed]:
            commands = [_resp(b"MULTI")]
            commands += [_resp(b"SET", ck, token, b"NX", b"PX", ms) for _, ck in keys]
            commands.append(_resp(b"MGET", *(rk for rk, _ in keys)))
            if retried:  # a first try may have taken some: ours if they hold our token
                commands.append(_resp(b"MGET", *(ck for _, ck in keys)))
            replies = _exchange(conn, [*commands, _resp(b"EXEC")])[-1]
            holders = replies[n + 1] if retried else [None] * n
            found = [
                (t is not None or _text(h) == token, _record(raw))
                for t, h, raw in zip(replies[:n], holders, replies[n], strict=True)
            ]
            pairs = zip(found, keys, strict=True)
            lost = [claim_key for (taken, _), (_, claim_key) in pairs if not taken]
            left = iter(_exchange(conn, [_resp(b"PTTL", k) for k in lost]) if lost else [])
            return [(t, r, 0.0 if t else max(0, int(next(left))) / 1000) for t, r in found]

        return self.calls.retrying(lambda retried: self._on_connection(take, retried))

    def write_many(self, token: str, writes: list[Write], lease: float) -> list[bool]:
        """One round trip for the writes that need no compare-and-set
        (:meth:`Write.unchecked`: ``SET NX``, ``SET``, ``DEL``, ``PEXPIRE``); two more,
        ``WATCH`` + ``MGET`` then ``MULTI`` ... ``EXEC``, for the others (read and
        decide again if another client wrote in between). After a lost connection every
        write is compare-and-set (the claims may have run out meanwhile; a write whose
        reply was lost is recognised as done)."""
        if not writes:
            return []

        def body(conn: Any, retried: bool) -> list[bool]:
            plain = [] if retried else [i for i, w in enumerate(writes) if w.unchecked(token)]
            done = [True] * len(writes)
            if plain:
                done_plain = self._write_plain(conn, [writes[i] for i in plain], lease)
                for i, ok in zip(plain, done_plain, strict=True):
                    done[i] = ok
            if len(plain) < len(writes):
                taken = set(plain)
                rest = [i for i in range(len(writes)) if i not in taken]
                checked = self._write_checked(conn, token, [writes[i] for i in rest], lease)
                for i, ok in zip(rest, checked, strict=True):
                    done[i] = ok
            return done

        return self.calls.retrying(lambda retried: self._on_connection(body, retried))

    def _write_plain(self, conn: Any, writes: list[Write], lease: float) -> list[bool]:
        """The unchecked writes, in one round trip; False where ``SET NX`` found a
        record."""
        commands: list[bytes] = []
        first_set: list[int] = []  # where each SET NX is in ``commands`` (or -1)
        released: list[str] = []
        ttl = self.result_ttl_ms
        for w in writes:
            record_key, claim_key = self._keys(w.message_id)
            first_set.append(-1)
            if w.change:
                if w.record is None:
                    commands.append(_resp(b"DEL", record_key))
                else:
                    data = w.record.to_json()
                    if w.expected is None:
                        first_set[-1] = len(commands)
                        commands.append(_resp(b"SET", record_key, data, b"NX", b"PX", ttl))
                    else:
                        commands.append(_resp(b"SET", record_key, data, b"PX", ttl))
            if w.release:
                released.append(claim_key)
            elif w.change and w.owned and w.renew:
                commands.append(_resp(b"PEXPIRE", claim_key, _ms(lease)))
        if released:
            commands.append(_resp(b"DEL", *released))
        replies = _exchange(conn, commands) if commands else []
        return [at < 0 or replies[at] is not None for at in first_set]

    def _write_checked(
        self, conn: Any, token: str, writes: list[Write], lease: float
    ) -> list[bool]:
        keys = [self._keys(w.message_id) for w in writes]
        watched = [k for pair in keys for k in pair]

        def attempt() -> list[bool] | None:
            raws = _exchange(conn, [_resp(b"WATCH", *watched), _resp(b"MGET", *watched)])[1]
            commands: list[bytes] = []
            done = [
                self._queue_write(commands, w, token, lease, keys[i], raws[2 * i], raws[2 * i + 1])
                for i, w in enumerate(writes)
            ]
            released = [
                claim_key
                for i, (w, (_, claim_key)) in enumerate(zip(writes, keys, strict=True))
                if w.release and _text(raws[2 * i + 1]) == token
            ]
            if released:
                commands.append(_resp(b"DEL", *released))
            if not commands:
                _exchange(conn, [_resp(b"UNWATCH")])
                return done
            replies = _exchange(conn, [_resp(b"MULTI"), *commands, _resp(b"EXEC")])
            return None if replies[-1] is None else done  # None: a watched key changed

        for _ in range(_WATCH_TRIES):
            done = attempt()
            if done is not None:
                return done
        raise RuntimeError(f"claim store: {watched[0]} kept changing under us")

    def _on_connection(self, body: Callable[[Any, bool], T], retried: bool) -> T:
        """``body(conn, retried)`` on a connection of the pool, commands packed here
        (redis-py's packing costs more per message than the rest of the bookkeeping)."""
        pool = self.client.connection_pool
        conn: Any = pool.get_connection()
        try:
            return body(conn, retried)
        except BaseException:
            conn.disconnect()  # (a reply may be unread, a WATCH pending)
            raise
        finally:
            pool.release(conn)

    def _queue_write(
        self,
        commands: list[bytes],
        w: Write,
        token: str,
        lease: float,
        keys: tuple[str, str],
        raw: object,
        holder: object,
    ) -> bool:
        record_key, claim_key = keys
        ours = _text(holder) == token
        done = True
        if w.change:
            stored = _record(raw)
            # already as wanted: a first try whose reply was lost, or the scribe's write
            written = stored == w.record and (ours or not w.owned)
            done = written or (stored == w.expected and (ours or not w.owned))
            if done and not written:
                if w.record is None:
                    commands.append(_resp(b"DEL", record_key))
                else:
                    data = w.record.to_json()
                    commands.append(_resp(b"SET", record_key, data, b"PX", self.result_ttl_ms))
            if done and w.owned and w.renew and not w.release:
                commands.append(_resp(b"PEXPIRE", claim_key, _ms(lease)))
        return done

    def scribe(self, token: str) -> Scribe:

        return RedisScribe(
            self.client,
            dots_key=self.dots_key(token),
            record_key=self._record_key,
            claim_key=lambda mid: self._keys(mid)[1],
            ttl_ms=self.result_ttl_ms,
            calls=self.calls,
        )

    def dots_key(self, token: str) -> str:
        return f"{self.prefix}:dots:{token}"

    def dotted_many(self, marks: list[tuple[str, int]]) -> list[bool]:
        asked = [(owner, mark) for owner, mark in marks if mark >= 0]

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for owner, mark in asked:
                pipe.getbit(self.dots_key(owner), mark)
            return list(pipe.execute())

        bits = iter(self.calls(read) if asked else [])
        return [mark < 0 or bool(next(bits)) for _, mark in marks]

    def reserve_queued(
        self, entries: list[tuple[str, str]], hold: float
    ) -> list[tuple[bool, str | None, Record | None]]:
        if not entries:
            return []

        def reserve() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for mid, enqueue_id in entries:
                key = f"{self.prefix}:queued:{mid}"
                pipe.set(key, enqueue_id, nx=True, px=_ms(hold))
                pipe.get(key)
                pipe.get(self._keys(mid)[0])
            return list(pipe.execute())

        r = self.calls(reserve, wait=False)
        return [
            (bool(r[3 * i]), _text(r[3 * i + 1]), _record(r[3 * i + 2]))
            for i in range(len(entries))
        ]

    def take_queued(self, entries: list[tuple[str, str]], hold: float) -> None:
        def take() -> None:
            pipe = self.client.pipeline(transaction=False)
            for mid, enqueue_id in entries:
                pipe.set(f"{self.prefix}:queued:{mid}", enqueue_id, px=_ms(hold))
            pipe.execute()

        if entries:
            self.calls(take, wait=False)

    def confirm_queued(self, message_ids: list[str]) -> None:
        def confirm() -> None:
            pipe = self.client.pipeline(transaction=False)
            for mid in message_ids:
                pipe.pexpire(f"{self.prefix}:queued:{mid}", self.result_ttl_ms)
            pipe.execute()

        if message_ids:
            self.calls(confirm, wait=False)

    def close(self) -> None:
        """Close this store's connections to Redis."""
        self.client.close()

    def _transaction(self, body: Callable[[Any, bool], bool], *keys: str) -> bool:
        """Run ``body(pipe, retried)`` under WATCH ``keys``: it reads, calls ``multi()``
        and queues the writes. A write by another client in between makes us read and
        decide again; ``retried`` is true after a lost connection."""
        return self.calls.retrying(lambda retried: self._watched(body, retried, *keys))

    def _watched(self, body: Callable[[Any, bool], T], retried: bool, *keys: str) -> T:
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


def _exchange(conn: Any, commands: list[bytes]) -> list[Any]:
    """Send ``commands`` in one write, read one reply each (one round trip)."""
    conn.send_packed_command([b"".join(commands)], check_health=False)
    return [conn.read_response() for _ in commands]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _record(raw: object) -> Record | None:
    return None if raw is None else Record.from_json(raw)  # type: ignore[arg-type]


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) or value is None else str(value)
