"""Writes to Redis sent without waiting for their replies (see :class:`~._store.Scribe`).

A dot mark must be in Redis before the message's final '.' can be on the wire, yet a
round trip per message would halve a worker's rate. So the mark is *sent* once the
server has said 354, right before the message data is written, and its reply is read
later: the bytes are in the kernel's socket buffer before the SMTP write begins, and a
process killed after that still has them delivered (the kernel sends what a closed
socket had buffered). The same connection
carries each outcome as soon as the server gave it. Replies are read in one go every
few hundred writes and at the end of the chunk (:meth:`RedisScribe.drain`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

    from ._decide import Record


def resp(*parts: bytes | str | int) -> bytes:
    """One command in Redis's wire format (RESP), packed here: redis-py's packing costs
    more than the rest of a message's bookkeeping."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


#: Read the replies once this many are waiting (a few bytes each).
DRAIN_EVERY = 256


class RedisScribe:
    def __init__(
        self,
        client: redis.Redis,
        *,
        dots_key: str,
        record_key: Callable[[str], str],
        claim_key: Callable[[str], str],
        ttl_ms: int,
        calls: Any,  # the store's RedisCalls: errors translated, without the URL
    ) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None
        self._unread = 0
        self._dots_key = dots_key
        self._record_key = record_key
        self._claim_key = claim_key
        self._marked = False
        self._held: list[bytes] = []  # packed commands not sent yet
        self._broken = False
        self._ttl_ms = ttl_ms
        self._calls = calls
        # The fixed parts of the two commands sent per message, packed once:
        # SETBIT <dots> <index> 1 and SET <record key> <json> PX <ttl>.
        self._setbit = b"*4\r\n" + _bulk(b"SETBIT") + _bulk(dots_key.encode())
        self._set_px = _bulk(b"PX") + _bulk(b"%d" % ttl_ms)

    def mark(self, index: int) -> None:
        if not self._marked:  # the marks live as long as the records that point at them
            self._marked = True
            self._held.append(resp(b"PEXPIRE", self._dots_key, self._ttl_ms))
        bit = b"%d" % index
        self._held.append(b"%s$%d\r\n%s\r\n$1\r\n1\r\n" % (self._setbit, len(bit), bit))
        self.flush()

    def record(self, message_id: str, record: Record) -> None:
        """Held until the next :meth:`mark`, :meth:`flush` or :meth:`drain` (one write
        for both: the next message's mark follows its predecessor's outcome at once)."""
        key = self._record_key(message_id).encode()
        data = record.to_json().encode()
        self._held.append(
            b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n%s"
            % (len(key), key, len(data), data, self._set_px)
        )

    def renew(self, message_ids: list[str], token: str, lease: float) -> bool:
        """Extend the claims (one round trip): True if every one was still ``token``'s.
        (``SET XX GET`` replaces only an existing claim and returns what it held.)"""
        ms = max(1, int(lease * 1000))
        self.drain()
        for mid in message_ids:
            self._held.append(resp(b"SET", self._claim_key(mid), token, b"XX", b"PX", ms, b"GET"))
        self.flush(read=False)
        return all(_text(held) == token for held in self._read())

    def flush(self, *, read: bool = True) -> None:
        """Send what is held, in one write; read the replies if many are waiting."""
        if not self._held:
            return
        data, count, self._held = b"".join(self._held), len(self._held), []
        try:  # (per message: no closure, no retry loop on the way)
            if self._conn is None:
                self._conn = self._pool.get_connection()
            self._conn.send_packed_command([data], check_health=False)
        except BaseException as exc:
            self._drop()
            if isinstance(exc, Exception):
                self._calls.fail(exc)  # what it means: a ConnectError for Redis's errors
            raise
        self._unread += count
        if read and self._unread >= DRAIN_EVERY:
            self._read()

    def drain(self) -> None:
        self.flush(read=False)
        self._read()

    def _read(self) -> list[Any]:
        def read() -> list[Any]:
            replies = []
            try:
                while self._unread:
                    replies.append(self._conn.read_response())
                    self._unread -= 1
            except BaseException:
                self._drop()
                raise
            return replies

        return list(self._calls(read, wait=False)) if self._unread else []

    @property
    def intact(self) -> bool:
        return not self._broken

    def _drop(self) -> None:
        self._broken = True  # what was held, sent or unread may be lost
        conn, self._conn, self._unread = self._conn, None, 0
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)

    def close(self) -> None:
        try:
            self.drain()
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                self._pool.release(conn)
