"""The blocking driver: a small loop running the sans-IO conversation over a socket."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from types import TracebackType
from typing import NoReturn, TypeVar

from ..envelope import Composed
from ..errors import FluxMailException, ProtocolError
from ._actions import Conversation, Exchange, StartTLS
from ._common import (
    QUIT_TIMEOUT,
    READ_SIZE,
    WRITE_CHUNK,
    log,
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
from ._tokens import open_with_token

T = TypeVar("T")


class SMTPConnection:
    """One blocking SMTP client connection.

    ``open()`` connects, reads the greeting, says EHLO, upgrades with STARTTLS and
    authenticates as configured; ``send()`` delivers one message (opening first if
    needed) and can be called again on the same connection; ``close()`` says QUIT.
    Every step has its own deadline of ``config.timeout`` seconds.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._sock: socket.socket | None = None
        self._parser = ReplyParser()
        self._session: Session | None = None
        self._info: SessionInfo | None = None
        self._out_of_step = False
        self._lost: FluxMailException | None = None  # how an envelope sent ahead was lost

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<SMTPConnection {self.config.host}:{self.config.port} {state}>"

    @property
    def is_open(self) -> bool:
        return self._sock is not None and self._usable

    @property
    def _usable(self) -> bool:
        session = self._session
        return session is not None and not session.closing and not self._out_of_step

    @property
    def info(self) -> SessionInfo | None:
        """The session opened last (kept after close for diagnostics)."""
        return self._info

    def __enter__(self) -> SMTPConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # public operations
    def open(self) -> SessionInfo:
        if self.is_open and self._info is not None:
            return self._info
        return open_with_token(self.config, self._open)

    def _open(self, token: str | None) -> SessionInfo:
        """Connect, TLS, AUTH (with the OAuth2 access ``token`` if configured)."""
        self._drop()
        self._out_of_step = False
        started = time.monotonic()
        session = self._session = Session(self.config, token)
        self._parser = ReplyParser()
        try:
            self._connect(session)
            self._run(session.handshake())
        except BaseException:
            self.close()
            raise
        sock = self._sock
        details = tls_details(sock) if isinstance(sock, ssl.SSLSocket) else None
        elapsed = (time.monotonic() - started) * 1000
        self._info = session.info(port=self.config.port, connect_ms=elapsed, tls=details)
        return self._info

    def send(self, composed: Composed) -> SendResult:
        return self.send_pipelined(composed, None)

    def send_pipelined(self, composed: Composed, upcoming: Upcoming | None) -> SendResult:
        """``send(composed)``; then, if the server offers PIPELINING and ``upcoming()``
        (asked right before the final dot is written) returns the next message, that
        message's MAIL/RCPT/DATA go out in the same write as this final dot: one round
        trip per message. The next call must send that message (anything else drops the
        connection first); its envelope replies are already in."""
        check_envelope(composed)  # before connecting: CR, LF or NUL in an address
        ahead = self._session.ahead if self._session is not None else None
        if ahead is not None and ahead.composed is not composed:
            self._drop()  # another message's transaction is open: never end it
        if self._sock is not None and not self._idle_and_quiet(self._sock):
            self._drop()  # the server spoke or left while idle (421, timeout): start afresh
        self.open()
        assert self._session is not None
        try:
            return self._run(self._session.send_message(composed, upcoming))
        finally:
            if not self._usable:
                self._drop()

    def close(self) -> None:
        """Say QUIT (best effort, short wait) and close the socket. Idempotent.

        With a next message's envelope in flight (see :meth:`send_pipelined`), the
        connection is dropped without QUIT, which the server would take as message data."""
        session = self._session
        if session is not None and session.ahead is not None:
            self._drop()
        if self._sock is not None and self._usable:
            with contextlib.suppress(OSError, FluxMailException):
                self._exchange(Exchange(b"QUIT\r\n", 1, "quit"), QUIT_TIMEOUT)
        self._drop()

    # the driver loop
    def _run(self, conversation: Conversation[T]) -> T:
        """Execute actions until the conversation returns; failures are thrown into it."""
        try:
            action = next(conversation)
            while True:
                try:
                    if isinstance(action, StartTLS):
                        result: list[Reply] = []
                        self._starttls()
                    else:
                        result = self._exchange(action, self.config.timeout)
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

    def _connect(self, session: Session) -> None:
        config = self.config
        try:
            sock = socket.create_connection((config.host, config.port), config.timeout)
        except OSError as exc:
            self._fail("connect", exc)
        self._sock = sock
        if config.use_ssl:
            self._wrap()
            session.tls = True

    def _wrap(self) -> None:
        assert self._sock is not None
        context = tls_context(self.config)
        self._sock.settimeout(self.config.timeout)
        try:
            self._sock = context.wrap_socket(self._sock, server_hostname=self.config.host)
        except OSError as exc:
            self._fail("tls", exc)

    def _starttls(self) -> None:
        self._parser.discard()  # never trust bytes that came before the handshake
        self._wrap()

    def _exchange(self, exchange: Exchange, timeout: float) -> list[Reply]:
        sock = self._sock
        if sock is None or self._out_of_step:
            self._drop()
            raise ProtocolError(OUT_OF_STEP.format(host=self.config.host))
        written = False
        try:
            if exchange.data or exchange.tail:
                log_exchange(exchange)
                self._write(sock, exchange, timeout)
            written = True
            return self._read(sock, exchange, timeout)
        except ProtocolError:
            self._drop()
            raise
        except OSError as exc:
            if written:
                self._fail(exchange.stage, exc, exchange.message_id)
            early = None
            if exchange.message_id is not None:
                self._take_input(sock)
                early = early_refusal(self._parser)
            if early is None:
                self._fail("body" if exchange.message_id else exchange.stage, exc)
            self._drop()  # the server refused the message before the dot, then hung up
            self._out_of_step = True
            return [early]
        except BaseException:  # interrupted: the conversation is out of step, drop it
            self._drop()
            raise

    def _write(self, sock: socket.socket, exchange: Exchange, timeout: float) -> None:
        """Write ``data`` + ``tail`` in slices, each with its own deadline. Before the
        slice that carries a message's final dot, make sure the server has not already
        hung up: then the failure provably happened before the dot."""
        data, tail = exchange.data, exchange.tail
        ends_message = exchange.message_id is not None
        sock.settimeout(timeout)
        if len(data) + len(tail) <= WRITE_CHUNK:
            if ends_message:
                self._check_peer(sock)
            sock.sendall(data + tail if tail else data)
            return
        view = memoryview(data)
        for start in range(0, len(data), WRITE_CHUNK):
            if ends_message and start + WRITE_CHUNK >= len(data):
                self._check_peer(sock)
            sock.sendall(view[start : start + WRITE_CHUNK])
        if tail:
            sock.sendall(tail)

    def _check_peer(self, sock: socket.socket) -> None:
        """Raise ServerClosedError if the server already closed the connection; bytes it
        sent meanwhile go to the parser (they are read as the next reply, as asyncio's
        driver does)."""
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            try:
                readable, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):
                return
            if not readable:
                return
        if not self._take_input(sock):
            raise ServerClosedError()

    def _take_input(self, sock: socket.socket) -> bool:
        """Feed the parser whatever already arrived, without waiting; False at EOF."""
        timeout = sock.gettimeout()
        try:
            sock.setblocking(False)
            while True:
                data = sock.recv(READ_SIZE)
                if not data:
                    return False
                self._parser.feed(data)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except (OSError, ProtocolError):
            return True  # a reset: the caller's write or read reports it
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)

    def _read(self, sock: socket.socket, exchange: Exchange, timeout: float) -> list[Reply]:
        """Read the replies with one deadline: a trickling server cannot extend it."""
        deadline = time.monotonic() + timeout
        replies: list[Reply] = []
        try:
            while not collect(self._parser, exchange.replies, replies):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out")
                sock.settimeout(remaining)
                data = sock.recv(READ_SIZE)
                if not data:
                    raise ServerClosedError()
                self._parser.feed(data)
        except OSError as exc:
            if not exchange.ahead or len(replies) < exchange.replies - exchange.ahead:
                raise
            # the final reply is in; only the next message's envelope replies are lost
            self._lost = self._io_error("mail", exc)
            log_replies(replies, self._session, exchange.stage)
            self._drop()
            self._out_of_step = True
            return replies
        log_replies(replies, self._session, exchange.stage)
        if self._parser.buffered and exchange.stage != "starttls":
            self._out_of_step = True  # use these replies, then never this connection again
        return replies

    def _idle_and_quiet(self, sock: socket.socket) -> bool:
        """Nothing arrived since the last reply (a live idle session stays silent)."""
        if self._parser.buffered or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def _drop(self) -> None:
        """Close the socket without a word (after failures, or after QUIT)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover - close() on a dead socket
                log.debug("error closing the socket", exc_info=True)
        self._parser.discard()
