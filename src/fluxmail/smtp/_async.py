"""The SMTP driver: a small loop running the sans-IO conversation over a stream.

This file is the one source of both drivers: :class:`AsyncSMTPConnection` (asyncio, on
``AsyncStream``) is written here, and ``scripts/unasync.py`` generates ``_sync.py``
(:class:`SMTPConnection`, blocking sockets, on ``SyncStream``) from it by token
substitution. Edit this file, then run ``python scripts/unasync.py``; a test fails when
``_sync.py`` is not what the script makes of this file. What cannot be shared (sockets
versus an asyncio Protocol) lives in the two stream modules.

The driver only does I/O: each action's failure is reported to the session as a
:class:`~._actions.Failure` (what failed, whether the whole write reached the kernel,
what the server sent); the session decides what it means.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import NoReturn, TypeVar

from ..envelope import Composed
from ..errors import FluxMailException, ProtocolError
from ._actions import Answer, Conversation, Exchange, Failure, NextMessage
from ._async_stream import AsyncStream, pause
from ._common import (
    QUIT_TIMEOUT,
    WRITE_CHUNK,
    exchange_timeout,
    log,
    log_exchange,
    log_replies,
    tls_context,
    tls_details,
)
from ._errors import EarlyReplyError, ServerClosedError, io_error
from ._options import SmtpConfig
from ._protocol import Session, Upcoming, check_envelope
from ._replies import OUT_OF_STEP, Reply, ReplyParser, drain
from ._results import SendResult, SessionInfo
from ._tokens import aopen_with_token

T = TypeVar("T")


class AsyncSMTPConnection:
    """One SMTP client connection.

    ``open()`` connects, reads the greeting, says EHLO, upgrades with STARTTLS and
    authenticates as configured; ``send()`` delivers one message (opening first if
    needed) and can be called again on the same connection; ``close()`` says QUIT.
    Every step has its own deadline of ``config.timeout`` seconds. An interrupted call
    (a cancelled task, a KeyboardInterrupt) drops the connection: it is then closed.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._stream: AsyncStream | None = None
        self._parser = ReplyParser()
        self._session: Session | None = None
        self._info: SessionInfo | None = None
        self._out_of_step = False

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<AsyncSMTPConnection {self.config.host}:{self.config.port} {state}>"

    @property
    def is_open(self) -> bool:
        stream = self._stream
        return stream is not None and not stream.eof and self._usable

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
        stream = self._stream
        details = tls_details(stream.tls_details()) if stream is not None else None
        elapsed = (time.monotonic() - started) * 1000
        self._info = session.info(port=self.config.port, connect_ms=elapsed, tls=details)
        return self._info

    async def send(self, composed: Composed) -> SendResult:
        return await self.send_pipelined(composed, None)

    async def send_pipelined(
        self,
        composed: Composed,
        upcoming: Upcoming | None,
        meanwhile: Callable[[], None] | None = None,
        before_data: Callable[[], None] | None = None,
    ) -> SendResult:
        """``send(composed)``; then, if the server offers PIPELINING and ``upcoming()``
        (asked right before the final dot is written) returns the next message, that
        message's MAIL/RCPT/DATA go out in the same write as this final dot: one round
        trip per message. The next call must send that message (anything else drops the
        connection first); its envelope replies are already in.

        ``meanwhile()`` is called once the write ending the message's data has reached
        the kernel, before its replies are read: work that overlaps the server's (a
        batch composes its next message there, and keeps what that raises for after
        the outcome). It should not raise; what it raises is handled as an interrupt at
        that moment would be (the connection is dropped, the message's outcome unknown).

        ``before_data()`` is called right before the first byte of the message's data is
        written, once the envelope replies were judged (the server said 354): once per
        transaction (a follow-up for recipients deferred with 452 gets its own call). It
        marks the moment from which the final dot may reach the server. If it raises,
        nothing of the data is written: the open DATA cannot be ended without its dot,
        so the connection is dropped and the exception goes on (nothing was delivered
        by that transaction)."""
        ahead = self._session.ahead if self._session is not None else None
        if ahead is None or ahead.composed is not composed:
            check_envelope(composed)  # before connecting: CR, LF or NUL in an address
        # (else its envelope went out ahead: plan_message made these checks then)
        if ahead is not None and ahead.composed is not composed:
            self._drop()  # another message's transaction is open: never end it
        if self._stream is not None and not self._idle_and_quiet(self._stream):
            self._drop()  # the server spoke or left while idle (421, timeout): start afresh
        if not (self.is_open and self._info is not None):  # (else open() would return)
            await self.open()
        assert self._session is not None
        try:
            conversation = self._session.send_message(composed, upcoming is not None)
            return await self._run(conversation, upcoming, meanwhile, before_data)
        finally:
            if not self._usable:
                self._drop()

    async def close(self) -> None:
        """Say QUIT (best effort, short wait) and close the connection. Idempotent.

        With a next message's envelope in flight (see :meth:`send_pipelined`), the
        connection is dropped without QUIT, which the server would take as message data."""
        session = self._session
        if session is not None and session.ahead is not None and self._stream is not None:
            self._drop()
            await pause()
        if self._stream is not None and self._usable:
            with contextlib.suppress(Failure):
                await self._exchange(Exchange(b"QUIT\r\n", 1, "quit"), QUIT_TIMEOUT)
        if self._stream is not None:
            self._drop()
            await pause()  # let the transport finish closing the socket

    def lost_ahead(self, composed: Composed) -> FluxMailException | None:
        """If ``composed``'s envelope went out ahead (:meth:`send_pipelined`) and the
        connection ended before its transaction could go on, the error for it: a failure
        before its final dot (retryable), as if its own MAIL had failed. Else None."""
        session = self._session
        if session is None or session.ahead is None or session.ahead.composed is not composed:
            return None
        if not session.closing and not self._out_of_step:
            return None
        error = session.lost_ahead(composed)
        session.ahead = None
        return error or self._io_error("mail", ServerClosedError())

    # the driver loop
    async def _run(
        self,
        conversation: Conversation[T],
        upcoming: Upcoming | None = None,
        meanwhile: Callable[[], None] | None = None,
        before_data: Callable[[], None] | None = None,
    ) -> T:
        """Execute actions until the conversation returns; failures are thrown into it.
        ``meanwhile`` runs while the replies to a write ending a message are awaited;
        ``before_data`` right before a message's data is written (see send_pipelined)."""
        try:
            action = next(conversation)
            while True:
                try:
                    result: Answer = []
                    if isinstance(action, Exchange):
                        if action.guarded and before_data is not None:
                            before_data()  # raised: handled below, the write never begins
                        result = await self._exchange(
                            action,
                            exchange_timeout(self.config, action),
                            meanwhile if action.message_id is not None else None,
                        )
                    elif isinstance(action, NextMessage):
                        result = upcoming() if upcoming is not None else None
                    else:
                        await self._starttls()
                except Failure as failure:
                    action = conversation.throw(failure)
                except BaseException as exc:  # the caller's callbacks, an interrupt
                    self._drop()
                    action = conversation.throw(exc)
                else:
                    action = conversation.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value

    def _fail(self, stage: str, exc: BaseException) -> NoReturn:
        self._drop()
        raise self._io_error(stage, exc) from exc

    def _io_error(self, stage: str, exc: BaseException) -> FluxMailException:
        config = self.config
        error = io_error(
            stage,
            exc,
            host=config.host,
            port=config.port,
            timeout=config.timeout,
            use_ssl=config.use_ssl,
        )
        error.__cause__ = exc
        return error

    async def _connect(self, session: Session) -> None:
        config = self.config
        try:
            stream = await AsyncStream.connect(
                config.host, config.port, config.timeout, self._parser
            )
        except OSError as exc:  # TimeoutError included
            self._fail("connect", exc)
        self._stream = stream
        if config.use_ssl:
            try:
                await self._handshake()
            except Failure as failure:
                self._fail("tls", failure.cause)
            session.tls = True

    async def _starttls(self) -> None:
        self._parser.discard()  # never trust bytes that came before the handshake
        await self._handshake()

    async def _handshake(self) -> None:
        stream = self._stream
        assert stream is not None
        config = self.config
        try:
            await stream.start_tls(tls_context(config), config.host, config.timeout)
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            self._drop()
            raise Failure(exc) from exc
        except BaseException:
            self._drop()
            raise

    async def _exchange(
        self,
        exchange: Exchange,
        timeout: float,
        meanwhile: Callable[[], None] | None = None,
    ) -> list[Reply]:
        """Perform one exchange; any failure drops the connection and is reported as a
        :class:`Failure` (an interrupt or a cancellation is re-raised as it is).
        ``meanwhile()`` runs between the write and the read (its time is not taken from
        the read's deadline)."""
        stream = self._stream
        if stream is None or (self._out_of_step and not exchange.guarded):
            self._drop()  # (a guarded write reports the surplus as an early reply)
            raise Failure(ProtocolError(OUT_OF_STEP.format(host=self.config.host)))
        written = False
        replies: list[Reply] = []
        debug = log.isEnabledFor(logging.DEBUG)  # (asked once: per message, it adds up)
        try:
            if exchange.data or exchange.tail:
                if debug:
                    log_exchange(exchange)
                await self._write(stream, exchange, timeout)
            written = True
            if meanwhile is not None:
                meanwhile()
            await self._read(stream, exchange, time.monotonic() + timeout, replies)
            return replies
        except Failure:
            self._drop()
            raise
        except (OSError, ProtocolError) as exc:  # TimeoutError included
            if exchange.guarded and not written:
                early = await self._early(stream, after_failure=True)
                if early is not None:  # a refusal sent before the hang-up
                    self._drop()
                    raise early from exc
            self._drop()
            raise Failure(exc, written=written, replies=replies) from exc
        except BaseException:  # interrupted: the conversation is out of step, drop it
            self._drop()
            raise
        finally:
            if debug and written and replies:
                log_replies(replies, self._session, exchange.stage)

    async def _write(self, stream: AsyncStream, exchange: Exchange, timeout: float) -> None:
        """Write ``data`` + ``tail`` in slices, each with its own deadline (the tail goes
        with the last slice, never copied onto it). Before each slice of message data,
        look for input: a server that spoke or hung up in the middle of DATA gets nothing
        more (a final dot is never written to a server known to be gone, or to one that
        already answered)."""
        data, tail, guarded = exchange.data, exchange.tail, exchange.guarded
        if len(data) <= WRITE_CHUNK:  # one slice (most messages): _write_slice, inline
            if guarded:
                early = await self._early(stream)
                if early is not None:
                    raise early
            await stream.write(data, timeout, tail)
            return
        view = memoryview(data)
        pieces = [view[i : i + WRITE_CHUNK] for i in range(0, len(data), WRITE_CHUNK)]
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            await self._write_slice(stream, piece, tail if i == last else b"", guarded, timeout)

    async def _write_slice(
        self,
        stream: AsyncStream,
        piece: bytes | memoryview,
        tail: bytes,
        guarded: bool,
        timeout: float,
    ) -> None:
        if guarded:
            early = await self._early(stream)
            if early is not None:
                raise early
        await stream.write(piece, timeout, tail)

    async def _early(self, stream: AsyncStream, *, after_failure: bool = False) -> Failure | None:
        """What the server sent (or that it left) before the write finished, as a Failure
        with ``early``; None if it sent nothing (and, unless ``after_failure``, did not
        hang up)."""
        if not after_failure and self._idle_and_quiet(stream):
            return None  # nothing arrived and the server is there (most writes): no wait
        try:
            alive = await stream.take_input()
        except ProtocolError as exc:
            return Failure(exc, early=True)
        if not self._parser.buffered:
            return Failure(ServerClosedError()) if not (alive or after_failure) else None
        try:
            replies = drain(self._parser)
        except ProtocolError as exc:
            return Failure(exc, early=True)
        return Failure(EarlyReplyError(), early=True, replies=replies)

    async def _read(
        self, stream: AsyncStream, exchange: Exchange, deadline: float, replies: list[Reply]
    ) -> None:
        """Read the replies into ``replies``, all before one deadline: a trickling server
        cannot extend it."""
        take = self._parser.take  # (collect(), without a call of its own per read)
        while not take(exchange.replies, replies):
            await stream.receive(deadline)
        if self._parser.buffered and exchange.stage != "starttls":
            self._out_of_step = True  # use these replies, then never this connection again

    def _idle_and_quiet(self, stream: AsyncStream) -> bool:
        """Nothing arrived since the last reply (a live idle session stays silent)."""
        return not self._parser.buffered and not stream.eof and stream.quiet()

    def _drop(self) -> None:
        """Close the connection without a word (after failures, cancellation or QUIT)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()
        self._parser.discard()
