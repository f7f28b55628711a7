"""The asyncio driver: the same sans-IO conversation over an asyncio transport.

It uses a small :class:`asyncio.Protocol` that feeds received bytes straight into the
reply parser (no stream layer in between) and ``loop.start_tls`` for STARTTLS, which
works the same on every supported Python. The write buffer limit is zero, so a write
is complete once the kernel has every byte: that is what "the final dot was sent" means.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from types import TracebackType
from typing import NoReturn, TypeVar

from ..config import SmtpConfig
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
from ._protocol import Session
from ._replies import Reply, ReplyParser, collect
from ._results import SendResult, SessionInfo

T = TypeVar("T")


class _ClientProtocol(asyncio.Protocol):
    """Feeds the parser; wakes the reader; implements write flow control."""

    def __init__(self, parser: ReplyParser) -> None:
        self.parser = parser
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except ProtocolError as exc:
            self.error = exc
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def _wake(self) -> None:
        for waiter in (self._data_waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def check(self) -> None:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise ServerClosedError()

    async def wait_data(self) -> None:
        self.check()
        self._data_waiter = self._loop.create_future()
        try:
            await self._data_waiter
        finally:
            self._data_waiter = None

    async def drain(self) -> None:
        while True:
            self.check()
            if not self._paused:
                return
            self._drain_waiter = self._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None


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

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<AsyncSMTPConnection {self.config.host}:{self.config.port} {state}>"

    @property
    def is_open(self) -> bool:
        proto, session = self._proto, self._session
        return (
            proto is not None and not proto.closed and session is not None and not session.closing
        )

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
        self._drop()
        started = time.monotonic()
        session = self._session = Session(self.config)
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
        await self.open()
        assert self._session is not None
        try:
            return await self._run(self._session.send_message(composed))
        finally:
            if self._session is not None and self._session.closing:
                self._drop()

    async def close(self) -> None:
        """Say QUIT (best effort, short wait) and close the transport. Idempotent."""
        session = self._session
        if self._proto is not None and session is not None and not session.closing:
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
        config = self.config
        error = io_error(
            stage,
            exc,
            host=config.host,
            port=config.port,
            timeout=config.timeout,
            message_id=message_id,
        )
        raise error from exc

    async def _connect(self, session: Session) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        proto = _ClientProtocol(self._parser)
        context = tls_context(config) if config.use_ssl else None
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: proto,
                    config.host,
                    config.port,
                    ssl=context,
                    server_hostname=config.host if context else None,
                ),
                config.timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self._fail("connect", exc)
        except BaseException:
            if proto.transport is not None:
                proto.transport.abort()
            raise
        self._proto = proto
        session.tls = context is not None

    async def _starttls(self) -> None:
        proto = self._proto
        assert proto is not None
        assert proto.transport is not None
        self._parser.discard()  # never trust bytes that came before the handshake
        loop = asyncio.get_running_loop()
        context = tls_context(self.config)
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(proto.transport, proto, context, server_hostname=self.config.host),
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
        transport.set_write_buffer_limits(high=0)

    async def _exchange(self, exchange: Exchange, timeout: float) -> list[Reply]:
        proto = self._proto
        if proto is None or proto.transport is None:
            raise ProtocolError("the connection is closed")
        written = False
        try:
            if exchange.data:
                log_exchange(exchange)
                await self._write(proto, exchange.data, timeout)
            written = True
            return await asyncio.wait_for(self._read(proto, exchange), timeout)
        except ProtocolError:
            self._drop()
            raise
        except (OSError, asyncio.TimeoutError) as exc:
            self._fail(exchange.stage, exc, exchange.message_id if written else None)
        except BaseException:  # cancelled: the conversation is out of step, drop it
            self._drop()
            raise

    @staticmethod
    async def _write(proto: _ClientProtocol, data: bytes, timeout: float) -> None:
        view = memoryview(data)
        for start in range(0, len(data), WRITE_CHUNK):
            proto.check()
            assert proto.transport is not None
            proto.transport.write(view[start : start + WRITE_CHUNK])
            await asyncio.wait_for(proto.drain(), timeout)

    async def _read(self, proto: _ClientProtocol, exchange: Exchange) -> list[Reply]:
        """Collect the replies (the caller's wait_for is the deadline for all of them)."""
        replies: list[Reply] = []
        surplus_ok = exchange.stage == "starttls"
        while not collect(self._parser, exchange.replies, replies, surplus_ok=surplus_ok):
            await proto.wait_data()
        log_replies(replies)
        return replies

    def _tls_details(self) -> tuple[str, str] | None:
        proto = self._proto
        transport = proto.transport if proto is not None else None
        obj = transport.get_extra_info("ssl_object") if transport is not None else None
        return tls_details(obj) if isinstance(obj, ssl.SSLObject) else None

    def _drop(self) -> None:
        """Abort the transport without a word (after failures, cancellation or QUIT)."""
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.abort()
        self._parser.discard()
