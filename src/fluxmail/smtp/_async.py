"""The asyncio driver: the same sans-IO conversation over an asyncio transport.

It uses a small :class:`asyncio.Protocol` that feeds received bytes straight into the
reply parser (no stream layer in between) and ``loop.start_tls`` for STARTTLS, which
works the same on every supported Python. The write buffer limit is zero, so a write
is complete once the kernel has every byte: that is what "the final dot was sent" means.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import ssl
import time
from types import TracebackType
from typing import NoReturn, TypeVar

from ..envelope import Composed
from ..errors import FluxMailException, ProtocolError
from ._actions import Conversation, Exchange, StartTLS
from ._common import (
    QUIT_TIMEOUT,
    WRITE_CHUNK,
    log_exchange,
    log_replies,
    tls_context,
    tls_details,
)
from ._errors import ServerClosedError, io_error
from ._options import SmtpConfig
from ._protocol import Session, Upcoming, check_envelope
from ._replies import OUT_OF_STEP, Reply, ReplyParser, collect, early_refusal
from ._results import SendResult, SessionInfo
from ._tokens import aopen_with_token

T = TypeVar("T")
_NAP = 0.005  # while a TLS write drains, look again this often (seconds)


class _ClientProtocol(asyncio.Protocol):
    """Feeds the parser and wakes the driver on data, flow control and connection loss.

    ``raw`` is the TCP transport; ``transport`` is what the driver writes to (TLS on top
    of ``raw`` after a handshake). A write is complete once both have empty buffers and
    ``raw`` did not fail: only then has the kernel every byte.
    """

    def __init__(self, parser: ReplyParser) -> None:
        self.parser = parser
        self.raw: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._expired = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw = self.transport = transport
        transport.set_write_buffer_limits(high=0)  # resume_writing once the kernel has all

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except ProtocolError as exc:
            self.error = exc
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return True  # stay writable: a failing write is what tells that data was lost

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.lost = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()

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
        if self.error is not None:
            raise self.error
        if self.lost or self.eof or raw.is_closing():
            raise ServerClosedError()
        return transport.get_write_buffer_size() == 0 and raw.get_write_buffer_size() == 0

    def arm(self, deadline: float) -> asyncio.TimerHandle:
        """Start a deadline (loop time) for the waits that follow; cancel it when done."""
        self._expired = False
        return self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._wake()

    async def wait(self, nap: float | None = None) -> None:
        """Sleep until woken (data, flow control, loss) or ``nap`` seconds passed.

        Raises TimeoutError once the armed deadline has passed.
        """
        if self._expired:
            raise TimeoutError("timed out")
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(nap, self._wake) if nap is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
        if self._expired:
            raise TimeoutError("timed out")


async def _settle(proto: _ClientProtocol) -> None:
    """Before the slice with a final dot: if the socket has unread input (an EOF, a
    reset), let the event loop deliver it first, so that a server that hung up before
    the dot is known to have done so (the blocking driver checks the same way)."""
    raw = proto.raw
    sock = raw.get_extra_info("socket") if raw is not None else None
    for _ in range(3):
        if sock is None or proto.eof or proto.error is not None:
            return
        try:
            readable, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return
        if not readable:
            return
        await asyncio.sleep(0)


class AsyncSMTPConnection:
    """One asyncio SMTP client connection; the async twin of ``SMTPConnection``.

    Every step has its own deadline of ``config.timeout`` seconds. Cancelling a task
    that is using the connection aborts the transport: the connection is then closed.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._proto: _ClientProtocol | None = None
        self._parser = ReplyParser()
        self._session: Session | None = None
        self._info: SessionInfo | None = None
        self._out_of_step = False
        self._lost: FluxMailException | None = None  # how an envelope sent ahead was lost

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<AsyncSMTPConnection {self.config.host}:{self.config.port} {state}>"

    @property
    def is_open(self) -> bool:
        proto = self._proto
        return proto is not None and not proto.eof and self._usable

    @property
    def _usable(self) -> bool:
        session = self._session
        return session is not None and not session.closing and not self._out_of_step

    @property
    def info(self) -> SessionInfo | None:
        """The session opened last (kept after close for diagnostics)."""
        return self._info

    async def __aenter__(self) -> AsyncSMTPConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # public operations
    async def open(self) -> SessionInfo:
        if self.is_open and self._info is not None:
            return self._info
        return await aopen_with_token(self.config, self._open)

    async def _open(self, token: str | None) -> SessionInfo:
        """Connect, TLS, AUTH (with the OAuth2 access ``token`` if configured)."""
        self._drop()
        self._out_of_step = False
        started = time.monotonic()
        session = self._session = Session(self.config, token)
        self._parser = ReplyParser()
        try:
            await self._connect(session)
            await self._run(session.handshake())
        except BaseException:
            await self.close()
            raise
        elapsed = (time.monotonic() - started) * 1000
        info = session.info(port=self.config.port, connect_ms=elapsed, tls=self._tls_details())
        self._info = info
        return info

    async def send(self, composed: Composed) -> SendResult:
        return await self.send_pipelined(composed, None)

    async def send_pipelined(self, composed: Composed, upcoming: Upcoming | None) -> SendResult:
        """``send(composed)``, writing the next message's envelope (``upcoming()``) behind
        the final dot: see :meth:`SMTPConnection.send_pipelined`."""
        check_envelope(composed)  # before connecting: CR, LF or NUL in an address
        ahead = self._session.ahead if self._session is not None else None
        if ahead is not None and ahead.composed is not composed:
            self._drop()  # another message's transaction is open: never end it
        if self._proto is not None and not self._idle_and_quiet(self._proto):
            self._drop()  # the server spoke or left while idle (421, timeout): start afresh
        await self.open()
        assert self._session is not None
        try:
            return await self._run(self._session.send_message(composed, upcoming))
        finally:
            if not self._usable:
                self._drop()

    async def close(self) -> None:
        """Say QUIT (best effort, short wait) and close the transport. Idempotent.

        With a next message's envelope in flight, the transport is dropped without QUIT."""
        session = self._session
        if session is not None and session.ahead is not None and self._proto is not None:
            self._drop()
            await asyncio.sleep(0)
        if self._proto is not None and self._usable:
            with contextlib.suppress(OSError, FluxMailException):
                await self._exchange(Exchange(b"QUIT\r\n", 1, "quit"), QUIT_TIMEOUT)
        if self._proto is not None:
            self._drop()
            await asyncio.sleep(0)  # let the transport finish closing the socket

    # the driver loop
    async def _run(self, conversation: Conversation[T]) -> T:
        """Execute actions until the conversation returns; failures are thrown into it."""
        try:
            action = next(conversation)
            while True:
                try:
                    if isinstance(action, StartTLS):
                        result: list[Reply] = []
                        await self._starttls()
                    else:
                        result = await self._exchange(action, self.config.timeout)
                except FluxMailException as exc:
                    action = conversation.throw(exc)
                else:
                    action = conversation.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value

    def _fail(self, stage: str, exc: BaseException, message_id: str | None = None) -> NoReturn:
        self._drop()
        raise self._io_error(stage, exc, message_id) from exc

    def _io_error(
        self, stage: str, exc: BaseException, message_id: str | None = None
    ) -> FluxMailException:
        config = self.config
        error = io_error(
            stage,
            exc,
            host=config.host,
            port=config.port,
            timeout=config.timeout,
            message_id=message_id,
        )
        error.__cause__ = exc
        return error

    def lost_ahead(self, composed: Composed) -> FluxMailException | None:
        """If ``composed``'s envelope went out ahead (:meth:`send_pipelined`) and the
        connection ended before its transaction could go on, the error for it: a failure
        before its final dot (retryable), as if its own MAIL had failed. Else None."""
        session = self._session
        if session is None or session.ahead is None or session.ahead.composed is not composed:
            return None
        if not session.closing and not self._out_of_step:
            return None
        error = session.lost_ahead(composed) or self._lost
        session.ahead, self._lost = None, None
        return error or self._io_error("mail", ServerClosedError())

    async def _connect(self, session: Session) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        proto = _ClientProtocol(self._parser)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: proto, config.host, config.port),
                config.timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self._fail("connect", exc)
        except BaseException:
            if proto.raw is not None:
                proto.raw.abort()
            raise
        self._proto = proto
        if config.use_ssl:
            await self._handshake()
            session.tls = True

    async def _starttls(self) -> None:
        self._parser.discard()  # never trust bytes that came before the handshake
        await self._handshake()

    async def _handshake(self) -> None:
        proto = self._proto
        assert proto is not None
        assert proto.raw is not None
        loop = asyncio.get_running_loop()
        context = tls_context(self.config)
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(proto.raw, proto, context, server_hostname=self.config.host),
                self.config.timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self._fail("tls", exc)
        except BaseException:
            self._drop()
            raise
        if transport is None:  # pragma: no cover - only for a closing transport
            self._fail("tls", ServerClosedError())
        proto.transport = transport

    async def _exchange(self, exchange: Exchange, timeout: float) -> list[Reply]:
        proto = self._proto
        if proto is None or self._out_of_step:
            self._drop()
            raise ProtocolError(OUT_OF_STEP.format(host=self.config.host))
        loop = asyncio.get_running_loop()
        written = False
        try:
            if exchange.data or exchange.tail:
                log_exchange(exchange)
                await self._write(proto, exchange, timeout)
            written = True
            return await self._read(proto, exchange, loop.time() + timeout)
        except ProtocolError:
            self._drop()
            raise
        except (OSError, asyncio.TimeoutError) as exc:
            if written:
                self._fail(exchange.stage, exc, exchange.message_id)
            early = early_refusal(self._parser) if exchange.message_id else None
            if early is None:
                self._fail("body" if exchange.message_id else exchange.stage, exc)
            self._drop()  # the server refused the message before the dot, then hung up
            self._out_of_step = True
            return [early]
        except BaseException:  # cancelled: the conversation is out of step, drop it
            self._drop()
            raise

    @staticmethod
    async def _write(proto: _ClientProtocol, exchange: Exchange, timeout: float) -> None:
        """Write ``data`` + ``tail`` in slices, each with its own deadline, until the kernel
        has every byte. Before each slice, a failed or hung-up connection raises: a final
        dot is never written to a server known to be gone."""
        loop = asyncio.get_running_loop()
        data, tail = exchange.data, exchange.tail
        if len(data) + len(tail) <= WRITE_CHUNK:
            slices: list[bytes | memoryview] = [data + tail if tail else data]
        else:
            view = memoryview(data)
            slices = [view[i : i + WRITE_CHUNK] for i in range(0, len(data), WRITE_CHUNK)]
            slices[-1] = bytes(slices[-1]) + tail
        for number, piece in enumerate(slices, 1):
            if exchange.message_id is not None and number == len(slices):
                await _settle(proto)
            proto.flushed()  # raises if the connection already failed
            assert proto.transport is not None
            proto.transport.write(piece)
            if proto.flushed():
                continue
            timer = proto.arm(loop.time() + timeout)
            try:
                while not proto.flushed():
                    await proto.wait(_NAP)
            finally:
                timer.cancel()

    async def _read(
        self, proto: _ClientProtocol, exchange: Exchange, deadline: float
    ) -> list[Reply]:
        """Collect the replies, all before one deadline: trickling cannot extend it."""
        replies: list[Reply] = []
        timer = proto.arm(deadline)
        try:
            while not collect(self._parser, exchange.replies, replies):
                proto.check_readable()
                await proto.wait()
        except (OSError, asyncio.TimeoutError) as exc:
            if not exchange.ahead or len(replies) < exchange.replies - exchange.ahead:
                raise
            # the final reply is in; only the next message's envelope replies are lost
            self._lost = self._io_error("mail", exc)
            log_replies(replies, self._session, exchange.stage)
            self._drop()
            self._out_of_step = True
            return replies
        finally:
            timer.cancel()
        log_replies(replies, self._session, exchange.stage)
        if self._parser.buffered and exchange.stage != "starttls":
            self._out_of_step = True  # use these replies, then never this connection again
        return replies

    def _tls_details(self) -> tuple[str, str] | None:
        proto = self._proto
        transport = proto.transport if proto is not None else None
        obj = transport.get_extra_info("ssl_object") if transport is not None else None
        return tls_details(obj) if isinstance(obj, ssl.SSLObject) else None

    def _idle_and_quiet(self, proto: _ClientProtocol) -> bool:
        """Nothing arrived since the last reply (a live idle session stays silent).

        The socket is only polled, never read: the event loop still owns it.
        """
        if self._parser.buffered or proto.eof or proto.raw is None:
            return False
        sock = proto.raw.get_extra_info("socket")
        try:
            readable, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError, AttributeError):
            return False
        return not readable

    def _drop(self) -> None:
        """Abort the transport without a word (after failures, cancellation or QUIT)."""
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.abort()
        if proto is not None and proto.raw is not None:
            proto.raw.abort()
        self._parser.discard()
