"""The asyncio stream under the driver: connect, write, receive, TLS, close.

It uses a small :class:`asyncio.Protocol` that feeds received bytes straight into the
reply parser (no stream layer in between) and ``loop.start_tls`` for STARTTLS, which
works the same on every supported Python. The write buffer limit is zero, so a write
is complete once the kernel has every byte: that is what "the final dot was sent" means.

:class:`AsyncStream` has the same methods as the blocking ``SyncStream`` (``_sync_stream``)
so that one driver (``_async``, from which ``_sync`` is generated) runs on both. Timeouts
are raised as the builtin :class:`TimeoutError` on every Python.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time

from ..errors import ProtocolError
from ._common import READ_SIZE
from ._errors import ServerClosedError
from ._replies import ReplyParser

_NAP = 0.005  # while a TLS write drains, look again this often (seconds)


async def pause() -> None:
    """Let the event loop run once (a transport finishing its close, say)."""
    await asyncio.sleep(0)


class _ClientProtocol(asyncio.BufferedProtocol):
    """Feeds the parser and wakes the driver on data, flow control and connection loss.

    ``raw`` is the TCP transport; ``transport`` is what the driver writes to (TLS on top
    of ``raw`` after a handshake). A write is complete once both have empty buffers and
    ``raw`` did not fail: only then has the kernel every byte.

    A buffered protocol: the transport reads into one buffer this connection keeps
    (``recv_into``), where a plain protocol gets a fresh bytes object per read, which
    asyncio allocates at 256 KiB and then shrinks (glibc may serve each one with
    ``mmap``, ``mremap`` and ``munmap``: three system calls and a page fault per reply).
    """

    def __init__(self, parser: ReplyParser) -> None:
        self.parser = parser
        self.raw: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.lost = False
        self.tls = False  # the transport is TLS (after the handshake)
        self.error: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._expired = False
        self._deadline: float | None = None  # loop time; None: no wait is timed now
        self._timer: asyncio.TimerHandle | None = None  # fires at or before _deadline
        self._buffer = memoryview(bytearray(READ_SIZE))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw = self.transport = transport
        transport.set_write_buffer_limits(high=0)  # resume_writing once the kernel has all

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self.parser.feed(bytes(self._buffer[:nbytes]))
        except ProtocolError as exc:
            self.error = exc
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Plaintext: stay writable, a failing write is what tells that data was lost.
        # Over TLS the SSL layer closes anyway and warns if we ask otherwise (as
        # asyncio.streams does, return False there); flushed() still sees the EOF.
        return not self.tls

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.lost = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        self.close_timer()

    def resume_writing(self) -> None:
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def check_readable(self) -> None:
        if self.error is not None:
            raise self.error
        if self.eof:
            raise ServerClosedError()

    def flushed(self) -> bool:
        """True once every written byte is in the kernel; raises if the connection failed
        or the server hung up (EOF): what is not in the kernel yet will never be answered,
        so a failure here happened before the end of the write."""
        raw, transport = self.raw, self.transport
        assert raw is not None
        assert transport is not None
        self.check_writable()
        if transport.get_write_buffer_size():
            return False
        return transport is raw or raw.get_write_buffer_size() == 0

    def check_writable(self) -> None:
        """Raise if the connection failed or the server hung up (see :meth:`flushed`)."""
        if self.error is not None:
            raise self.error
        raw = self.raw
        assert raw is not None
        if self.lost or self.eof or raw.is_closing():
            raise ServerClosedError()

    def arm(self, delay: float) -> None:
        """Start a deadline ``delay`` seconds from now for the waits that follow; call
        :meth:`disarm` when done.

        One timer per connection serves every deadline: a later deadline keeps the
        pending timer, which on firing moves itself to the current deadline (a batch
        arms a deadline for every reply it reads, and a timer scheduled and cancelled
        per reply would cost more than the reply)."""
        self._expired = False
        deadline = self._deadline = self._loop.time() + max(delay, 0.0)
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)

    def disarm(self) -> None:
        """No wait is timed any more (the timer, if pending, will find nothing to do)."""
        self._deadline = None
        self._waiter = None

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:  # re-armed later since: follow the deadline
            self._timer = self._loop.call_at(deadline, self._expire)
            return
        self._expired = True
        self._wake()

    def close_timer(self) -> None:
        """Drop the pending timer (the connection is going away)."""
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def waiter(self) -> asyncio.Future[None]:
        """A future that data, flow control or a loss (or the armed deadline) resolves;
        raises TimeoutError if the deadline passed already. Awaited once, then
        :meth:`done_waiting`."""
        if self._expired:
            raise TimeoutError("timed out")
        waiter = self._waiter = self._loop.create_future()
        return waiter

    def done_waiting(self) -> None:
        """After a :meth:`waiter` resolved: raises TimeoutError if the armed deadline
        passed meanwhile."""
        self._waiter = None
        if self._expired:
            raise TimeoutError("timed out")

    async def wait(self, nap: float | None = None) -> None:
        """Sleep until woken (data, flow control, loss) or ``nap`` seconds passed.

        Raises TimeoutError once the armed deadline has passed.
        """
        waiter = self.waiter()
        timer = self._loop.call_later(nap, self._wake) if nap is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
        self.done_waiting()


class AsyncStream:
    """One asyncio connection to an SMTP server, feeding ``parser``."""

    def __init__(self, proto: _ClientProtocol) -> None:
        self._proto = proto
        self._loop = asyncio.get_running_loop()
        # the raw socket, polled (never read: the event loop owns it) by quiet() and
        # take_input(); one poll object per connection, registered once
        self._readable: select.poll | None = None
        raw = proto.raw
        sock = raw.get_extra_info("socket") if raw is not None else None
        if sock is not None:
            self._readable = select.poll()
            self._readable.register(sock.fileno(), select.POLLIN)

    def _gone(self) -> bool:
        """The server left, or the transport is closing here (nothing left to poll)."""
        raw = self._proto.raw
        return self._proto.eof or raw is None or raw.is_closing() or self._readable is None

    def _input_waiting(self) -> bool:
        """The socket has unread input (data, an EOF, a reset); call when not gone."""
        assert self._readable is not None
        return bool(self._readable.poll(0))

    @classmethod
    async def connect(
        cls, host: str, port: int, timeout: float, parser: ReplyParser
    ) -> AsyncStream:
        """Open a TCP connection; raises OSError or TimeoutError."""
        loop = asyncio.get_running_loop()
        proto = _ClientProtocol(parser)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: proto, host, port), timeout)
        except asyncio.TimeoutError as exc:
            raise TimeoutError("timed out") from exc
        except BaseException:  # cancelled: never leave the socket behind
            if proto.raw is not None:
                proto.raw.abort()
            raise
        return cls(proto)

    @property
    def eof(self) -> bool:
        """The server closed the connection (as far as is known without reading)."""
        return self._proto.eof

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str, timeout: float
    ) -> None:
        """The TLS handshake; raises OSError (ssl.SSLError) or TimeoutError."""
        proto = self._proto
        assert proto.raw is not None
        start = self._loop.start_tls(proto.raw, proto, context, server_hostname=server_hostname)
        try:
            transport = await asyncio.wait_for(start, timeout)
        except asyncio.TimeoutError as exc:
            raise TimeoutError("timed out") from exc
        if transport is None:  # pragma: no cover - only for a closing transport
            raise ServerClosedError()
        proto.transport = transport
        proto.tls = True

    async def write(self, data: bytes | memoryview, timeout: float, tail: bytes = b"") -> None:
        """Write ``data`` then ``tail`` and wait, at most ``timeout`` seconds, until the
        kernel has every byte. A failed or hung-up connection raises before anything is
        written."""
        proto = self._proto
        proto.check_writable()  # raises if the connection already failed
        assert proto.transport is not None
        if tail:
            proto.transport.writelines((data, tail))
        else:
            proto.transport.write(data)
        if proto.flushed():
            return
        proto.arm(timeout)
        try:
            while not proto.flushed():
                await proto.wait(_NAP)
        finally:
            proto.disarm()

    async def receive(self, deadline: float) -> None:
        """Wait for more bytes for the parser until ``deadline`` (``time.monotonic()``);
        raises TimeoutError, ServerClosedError or the parser's ProtocolError."""
        proto = self._proto
        proto.check_readable()
        proto.arm(deadline - time.monotonic())
        try:
            await proto.waiter()  # (awaited here: no coroutine of its own per reply)
        finally:
            proto.disarm()
        proto.done_waiting()

    async def take_input(self) -> bool:
        """Let whatever already arrived reach the parser, without waiting; False once the
        server has closed the connection. Raises the parser's ProtocolError.

        If the socket has unread input (data, an EOF, a reset), the event loop delivers
        it first, so that a server that hung up before the dot is known to have done so.
        """
        proto = self._proto
        for _ in range(3):
            if self._gone() or proto.error is not None or not self._input_waiting():
                break
            await asyncio.sleep(0)
        if isinstance(proto.error, ProtocolError):
            raise proto.error
        return not proto.eof

    def quiet(self) -> bool:
        """Nothing arrived and the server did not leave (a live idle session is silent);
        False too when what arrived was refused (a parser's error waits to be raised).

        The socket is only polled, never read: the event loop still owns it.
        """
        return not (self._gone() or self._proto.error is not None or self._input_waiting())

    def tls_details(self) -> ssl.SSLObject | None:
        transport = self._proto.transport
        obj = transport.get_extra_info("ssl_object") if transport is not None else None
        return obj if isinstance(obj, ssl.SSLObject) else None

    def abort(self) -> None:
        """Close the connection at once, without a word."""
        proto = self._proto
        proto.close_timer()
        if proto.transport is not None:
            proto.transport.abort()
        if proto.raw is not None:
            proto.raw.abort()
