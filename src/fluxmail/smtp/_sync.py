"""The blocking driver: a small loop running the sans-IO conversation over a socket.

It only does I/O: each action's failure is reported to the session as a
:class:`~._actions.Failure` (what failed, whether the whole write reached the kernel,
what the server sent); the session decides what it means.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from types import TracebackType
from typing import NoReturn, TypeVar

from .._tokens import open_with_token
from ..config import SmtpConfig
from ..envelope import Composed
from ..errors import FluxMailException, ProtocolError
from ._actions import Answer, Conversation, Exchange, Failure, NextMessage, StartTLS
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
from ._errors import EarlyReplyError, ServerClosedError, io_error
from ._protocol import Session, Upcoming, check_envelope
from ._replies import OUT_OF_STEP, Reply, ReplyParser, collect, drain
from ._results import SendResult, SessionInfo

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
            conversation = self._session.send_message(composed, upcoming is not None)
            return self._run(conversation, upcoming)
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
            with contextlib.suppress(Failure):
                self._exchange(Exchange(b"QUIT\r\n", 1, "quit"), QUIT_TIMEOUT)
        self._drop()

    # the driver loop
    def _run(self, conversation: Conversation[T], upcoming: Upcoming | None = None) -> T:
        """Execute actions until the conversation returns; failures are thrown into it."""
        try:
            action = next(conversation)
            while True:
                try:
                    result: Answer = []
                    if isinstance(action, StartTLS):
                        self._starttls()
                    elif isinstance(action, NextMessage):
                        result = upcoming() if upcoming is not None else None
                    else:
                        result = self._exchange(action, self.config.timeout)
                except Failure as failure:
                    action = conversation.throw(failure)
                except BaseException as exc:  # the caller's upcoming() (or an interrupt)
                    self._drop()
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
        error = session.lost_ahead(composed)
        session.ahead = None
        return error or self._io_error("mail", ServerClosedError())

    def _connect(self, session: Session) -> None:
        config = self.config
        try:
            sock = socket.create_connection((config.host, config.port), config.timeout)
        except OSError as exc:
            self._fail("connect", exc)
        self._sock = sock
        if config.use_ssl:
            try:
                self._wrap()
            except Failure as failure:
                self._fail("tls", failure.cause)
            session.tls = True

    def _wrap(self) -> None:
        assert self._sock is not None
        context = tls_context(self.config)
        self._sock.settimeout(self.config.timeout)
        try:
            self._sock = context.wrap_socket(self._sock, server_hostname=self.config.host)
        except OSError as exc:
            self._drop()
            raise Failure(exc) from exc

    def _starttls(self) -> None:
        self._parser.discard()  # never trust bytes that came before the handshake
        self._wrap()

    def _exchange(self, exchange: Exchange, timeout: float) -> list[Reply]:
        """Perform one exchange; any failure drops the connection and is reported as a
        :class:`Failure` (an interrupt is re-raised as it is)."""
        sock = self._sock
        if sock is None or (self._out_of_step and not exchange.guarded):
            self._drop()  # (a guarded write reports the surplus as an early reply)
            raise Failure(ProtocolError(OUT_OF_STEP.format(host=self.config.host)))
        written = False
        replies: list[Reply] = []
        try:
            if exchange.data or exchange.tail:
                log_exchange(exchange)
                self._write(sock, exchange, timeout)
            written = True
            self._read(sock, exchange, timeout, replies)
            return replies
        except Failure:
            self._drop()
            raise
        except (OSError, ProtocolError) as exc:
            if exchange.guarded and not written:
                self._take_input(sock)  # a refusal sent before the hang-up
                early = self._early(eof=False)
                if early is not None:
                    raise early from exc
            self._drop()
            raise Failure(exc, written=written, replies=replies) from exc
        except BaseException:  # interrupted: the conversation is out of step, drop it
            self._drop()
            raise
        finally:
            if written and replies:
                log_replies(replies, self._session, exchange.stage)

    def _write(self, sock: socket.socket, exchange: Exchange, timeout: float) -> None:
        """Write ``data`` + ``tail`` in slices, each with its own deadline. Before each
        slice of message data, look for input: a server that spoke or hung up in the
        middle of DATA gets nothing more (a final dot is never written to a server known
        to be gone, or to one that already answered)."""
        data, tail = exchange.data, exchange.tail
        sock.settimeout(timeout)
        if len(data) + len(tail) <= WRITE_CHUNK:
            if exchange.guarded:
                self._check_peer(sock)
            sock.sendall(data + tail if tail else data)
            return
        view = memoryview(data)
        for start in range(0, len(data), WRITE_CHUNK):
            if exchange.guarded:
                self._check_peer(sock)
            sock.sendall(view[start : start + WRITE_CHUNK])
        if tail:
            sock.sendall(tail)

    def _check_peer(self, sock: socket.socket) -> None:
        """Raise a Failure (``early``) if the server sent anything or closed the
        connection since its last reply; bytes it sent go to the parser first."""
        if not self._parser.buffered and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            try:
                readable, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):
                return
            if not readable:
                return
        alive = self._take_input(sock)
        early = self._early(eof=not alive)
        if early is not None:
            raise early

    def _early(self, *, eof: bool) -> Failure | None:
        """What the server sent before the write finished, as a Failure with ``early``;
        at ``eof`` with nothing sent, a plain one; None if it sent nothing."""
        if not self._parser.buffered:
            return Failure(ServerClosedError()) if eof else None
        try:
            replies = drain(self._parser)
        except ProtocolError as exc:
            return Failure(exc, early=True)
        return Failure(EarlyReplyError(), early=True, replies=replies)

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
        except OSError:
            return False  # a reset
        except ProtocolError:
            return True  # garbage (an oversized line): the parser's buffer says so
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)

    def _read(
        self, sock: socket.socket, exchange: Exchange, timeout: float, replies: list[Reply]
    ) -> None:
        """Read the replies into ``replies`` with one deadline: a trickling server cannot
        extend it."""
        deadline = time.monotonic() + timeout
        while not collect(self._parser, exchange.replies, replies):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(remaining)
            data = sock.recv(READ_SIZE)
            if not data:
                raise ServerClosedError()
            self._parser.feed(data)
        if self._parser.buffered and exchange.stage != "starttls":
            self._out_of_step = True  # use these replies, then never this connection again

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
