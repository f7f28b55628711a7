"""A scripted, deliberately misbehaving SMTP server (asyncio, in a background thread).

For what aiosmtpd cannot do: stalls, drops, garbage, endless multi-line replies, bytes
injected after STARTTLS, slow readers, replies in the middle of DATA (:class:`EarlyReply`),
garbage or oversized replies to the final dot (:class:`Garbage`). Every DATA the server
opens is recorded as a :class:`Transaction` that says whether its final dot arrived.
Its script maps a stage name (``"greeting"``, ``"EHLO"``, ``"MAIL"``, ``"RCPT"``,
``"DATA"``, ``"DOT"`` (after the final dot), ``"STARTTLS"``, ``"AUTH"``, ...) to an
action, or to a callable ``(FaultSession) -> action | None`` (``None`` means "behave
normally"). Import it through ``servers``.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fluxmail.config import SmtpConfig
from server_base import HOST, PASSWORD, USERNAME, ReceivedMessage, message_ids, tls_material


@dataclass
class Reply:
    """Send ``data`` (a str without a line end gets CRLF), then optionally close or stall
    (read and ignore everything until the client goes away)."""

    data: bytes | str
    close: bool = False
    stall: bool = False

    def raw(self) -> bytes:
        if isinstance(self.data, bytes):
            return self.data
        text = self.data if self.data.endswith("\n") else self.data + "\r\n"
        return text.encode()


@dataclass
class Stall:
    """Send nothing and keep the connection open."""


@dataclass
class Close:
    """Close the connection; ``reset=True`` aborts it (RST)."""

    reset: bool = False


@dataclass
class Endless:
    """An endless multi-line reply (``250-...`` lines until the client gives up)."""

    line: bytes = b"250-" + b"x" * 60


@dataclass
class Trickle:
    """Send ``data`` one byte every ``interval`` seconds."""

    data: bytes
    interval: float = 0.1


@dataclass
class StartTLS:
    """Answer STARTTLS with ``220`` plus ``inject`` in the same write, then go TLS."""

    inject: bytes = b""


@dataclass
class DropMidData:
    """Answer DATA with 354, read ``after`` bytes of the body, then abort (RST); with
    ``reply``, first send it (an early refusal such as ``552``) and give it time to
    arrive."""

    after: int = 1024
    reply: bytes = b""


@dataclass
class HangUp:
    """Send ``data`` and the FIN in one TCP segment (TCP_CORK): the client sees the reply
    and the end of the connection at once. Then read and drop whatever still comes."""

    data: bytes | str

    def raw(self) -> bytes:
        return Reply(self.data).raw()


@dataclass
class SlowRead:
    """Answer DATA with 354, then read the body ``chunk`` bytes at a time at ``rate`` bytes
    per second (``rate=0``: stop reading after ``chunk`` bytes and never answer), then
    answer the final dot normally (or with the ``DOT`` script)."""

    rate: float
    chunk: int = 4096


@dataclass
class EarlyReply:
    """Answer DATA with 354, read ``after`` bytes of the body, send ``reply`` (before the
    final dot, as no server should), then keep reading as usual: the final dot, if it
    comes, is answered by the ``DOT`` script or normally. ``after=0`` sends ``reply`` in
    the same write as the 354."""

    reply: bytes | str
    after: int = 65536

    def raw(self) -> bytes:
        return Reply(self.reply).raw()


@dataclass
class Garbage:
    """A reply that is not SMTP (``oversized=False``) or one over the client's size caps
    (a 250 line of 10,000 bytes), then keep reading."""

    oversized: bool = False

    def raw(self) -> bytes:
        if self.oversized:
            return b"250 " + b"x" * 10_000 + b"\r\n"
        return b"Hello? This is not SMTP\r\n"


Action = (
    Reply
    | Stall
    | Close
    | Endless
    | Trickle
    | StartTLS
    | DropMidData
    | SlowRead
    | HangUp
    | EarlyReply
    | Garbage
)
Script = Mapping[str, "Action | Callable[[FaultSession], Action | None]"]


@dataclass
class Transaction:
    """One DATA the server opened (answered 354): ``completed`` once its final dot
    arrived, with ``size`` bytes of data read until then (or until the client left)."""

    session: int
    completed: bool = False
    size: int = 0


@dataclass
class FaultSession:
    """One client connection to a FaultServer."""

    number: int
    commands: list[str] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)  # read index each command arrived in
    dots: list[int] = field(default_factory=list)  # read index each final dot arrived in
    tls: bool = False
    closed: bool = False  # the connection has ended
    messages: int = 0  # messages accepted in this session
    mail_from: str | None = None
    mail_options: list[str] = field(default_factory=list)
    rcpt_tos: list[str] = field(default_factory=list)

    def chunk_of(self, verb: str, nth: int = 0) -> int:
        """The read index in which the ``nth`` command with this verb arrived.

        Commands sent in one write (pipelined) share a read index.
        """
        seen = [c for cmd, c in zip(self.commands, self.chunks, strict=True) if _verb(cmd) == verb]
        return seen[nth]

    def verbs(self) -> list[str]:
        return [_verb(cmd) for cmd in self.commands]

    def message_ids(self, *, received: bool = False) -> list[str]:
        """The Message-ID of every accepted (or, with ``received``, every complete)
        message, in order of arrival."""
        with self._lock:
            return message_ids(self.received if received else self.messages)


def _verb(command: str) -> str:
    return command.split(" ", 1)[0].upper()


def _path_and_params(arg: str) -> tuple[str, list[str]]:
    """``FROM:<a@b> SIZE=10`` -> (``a@b``, [``SIZE=10``])."""
    _, _, rest = arg.partition(":")
    path, _, params = rest.strip().partition(" ")
    return path.strip("<>"), params.split()


DEFAULT_CAPS = ("PIPELINING", "SIZE 10000000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8")


class _Closed(Exception):
    """The client went away."""


class _Conn:
    """One server-side connection: a line reader that remembers read boundaries."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: FaultSession
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.session = session
        self.buf = bytearray()
        self.reads = 0
        self.read_size = 65536
        self.pause = 0.0  # seconds to sleep after each read (a slow reader)

    async def readline(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            data = await self.reader.read(self.read_size)
            if not data:
                raise _Closed
            self.reads += 1
            self.buf += data
            if self.pause:
                await asyncio.sleep(self.pause)

    async def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise _Closed
        self.writer.write(data)
        await self.writer.drain()


class FaultServer:
    """A scripted, deliberately misbehaving SMTP server (see the module docstring).

    By default it behaves like a small correct ESMTP server advertising ``capabilities``
    (plus STARTTLS when ``tls=True`` and AUTH when ``auth_mechanisms``), accepting any
    MAIL/RCPT and the AUTH credentials ``USERNAME``/``PASSWORD``.
    ``close_after``: 421-and-close at the MAIL of message N+1 of each session;
    ``strip_starttls``: TLS works but STARTTLS is not advertised (a downgrading
    middlebox); ``max_recipients``: 452 4.5.3 to RCPTs beyond that many per transaction;
    a ``SIZE n`` capability is enforced (552 at MAIL ``SIZE=`` or after the dot);
    ``rcvbuf``: the receive buffer of accepted sockets (small makes slow readers bite).
    ``sessions`` records every command with the read it arrived in; ``received`` every
    complete DATA body (with ``raw``, the exact wire bytes); ``messages`` those answered
    with the default 250.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        capabilities: tuple[str, ...] = DEFAULT_CAPS,
        tls: bool = False,
        auth_mechanisms: tuple[str, ...] = (),
        greeting: str = "220 fault.test.invalid ESMTP ready",
        close_after: int | None = None,
        strip_starttls: bool = False,
        max_recipients: int | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        self.close_after = close_after
        self.strip_starttls = strip_starttls
        self.max_recipients = max_recipients
        self.rcvbuf = rcvbuf
        sizes = [c.split()[1] for c in capabilities if c.upper().startswith("SIZE ")]
        self.size_limit = int(sizes[0]) if sizes and int(sizes[0]) > 0 else None
        self.host = HOST
        self.port = 0
        self.script: dict[str, Any] = dict(script or {})
        self.capabilities = capabilities
        self.tls = tls
        self.auth_mechanisms = auth_mechanisms
        self.greeting = greeting
        self.sessions: list[FaultSession] = []
        self.transactions: list[Transaction] = []  # every DATA opened (see Transaction)
        self.received: list[ReceivedMessage] = []
        self.messages: list[ReceivedMessage] = []
        material = tls_material() if tls else None
        self.ca_pem: str | None = material.ca_pem if material else None
        self.client_ssl_context = material.client_context() if material else None
        self._server_ctx = material.server_context() if material else None
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._stopping = False
        self._lock = threading.Lock()

    # lifecycle
    def start(self) -> FaultServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("fault server did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when
        # their proto says TCP, and Nagle would add 40 ms to every reply.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        if self.rcvbuf is not None:  # before listen(): accepted sockets inherit it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind((HOST, 0))
        server = loop.run_until_complete(asyncio.start_server(self._handle, sock=sock))
        self.port = server.sockets[0].getsockname()[1]
        loop.call_soon(ready.set)
        loop.run_forever()
        # Close every connection before the loop goes: a socket left to the garbage
        # collector is a ResourceWarning, an error in this suite. First let connections
        # accepted a moment ago start their handler, so that each one is cancelled inside
        # it and its finally block closes its transport.
        self._stopping = True
        loop.run_until_complete(asyncio.sleep(0))
        for task in list(self._tasks):
            task.cancel()
        loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.run_until_complete(asyncio.sleep(0))  # the transports' close callbacks
        loop.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # helpers for tests
    def smtp_config(self, **overrides: Any) -> SmtpConfig:
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "timeout": 5.0}
        if self.tls:
            kwargs["use_tls"] = True
            kwargs["ssl_context"] = self.client_ssl_context
        kwargs.update(overrides)
        return SmtpConfig(**kwargs)

    def fluxmail_kwargs(self, **overrides: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"object_type": "smtp", "host": self.host, "port": self.port}
        if self.tls:
            kwargs["use_tls"] = True
            kwargs["ssl_context"] = self.client_ssl_context
        kwargs.update(overrides)
        return kwargs

    def close_sessions(self, farewell: bytes = b"421 4.4.2 Idle timeout\r\n") -> None:
        """End every open session from the server side (as an idle timeout would)."""

        async def close_all() -> None:
            for writer in list(self._writers.values()):
                if farewell:
                    writer.write(farewell)
                writer.close()

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(5)
        deadline = time.monotonic() + 5
        while any(not s.closed for s in self.sessions) and time.monotonic() < deadline:
            time.sleep(0.005)

    @property
    def commands(self) -> list[str]:
        """Every command of every session, in order."""
        with self._lock:
            return [cmd for s in self.sessions for cmd in s.commands]

    def verbs(self) -> list[str]:
        return [_verb(cmd) for cmd in self.commands]

    def message_ids(self, *, received: bool = False) -> list[str]:
        """The Message-ID of every accepted (or, with ``received``, every complete)
        message, in order of arrival."""
        with self._lock:
            return message_ids(self.received if received else self.messages)

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the server has seen every session end (the client dropped it)."""
        deadline = time.monotonic() + timeout
        while any(not s.closed for s in self.sessions) and time.monotonic() < deadline:
            time.sleep(0.005)

    def completed(self) -> list[bool]:
        """For every DATA opened, in order: whether its final dot arrived."""
        with self._lock:
            return [t.completed for t in self.transactions]

    # serving
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            session = FaultSession(number=len(self.sessions) + 1)
            self.sessions.append(session)
        conn = _Conn(reader, writer, session)
        self._writers[session.number] = writer
        try:
            await self._serve(conn)
        except (_Closed, OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Stopping: end normally. (Python 3.11's stream server logs an error for a
            # handler task that ends cancelled, and leaves its transport open.)
        finally:
            self._writers.pop(session.number, None)
            session.closed = True
            if self._stopping:
                writer.transport.abort()  # now, even with unsent data buffered
            elif not writer.is_closing():
                writer.close()
            self._tasks.discard(task)

    def _action(self, stage: str, session: FaultSession) -> Action | None:
        entry = self.script.get(stage)
        if callable(entry):
            result: Action | None = entry(session)
            return result
        return entry  # type: ignore[no-any-return]

    async def _serve(self, conn: _Conn) -> None:
        greeting = self._action("greeting", conn.session)
        if greeting is None:
            await conn.write(self.greeting.encode() + b"\r\n")
        elif not await self._perform(conn, greeting):
            return
        while True:
            line = await conn.readline()
            text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
            verb = _verb(text)
            with self._lock:
                conn.session.commands.append(text)
                conn.session.chunks.append(conn.reads)
            action = self._action(verb, conn.session)
            if action is not None:
                if not await self._perform(conn, action):
                    return
            elif not await self._default(conn, verb, text):
                return

    async def _perform(self, conn: _Conn, action: Action) -> bool:
        """Carry out a scripted action; False ends the session."""
        if isinstance(action, Reply):
            await conn.write(action.raw())
            if not action.stall:
                return not action.close
        if isinstance(action, (Stall, Reply)):
            while await conn.reader.read(65536):
                pass
            return False
        if isinstance(action, Close):
            if action.reset:
                conn.writer.transport.abort()
            return False
        if isinstance(action, Endless):
            for _ in range(200_000):  # ~12 MB, a safety net for a client that never stops
                await conn.write(action.line + b"\r\n")
            return False
        if isinstance(action, Trickle):
            for i in range(len(action.data)):
                await conn.write(action.data[i : i + 1])
                await asyncio.sleep(action.interval)
            return True
        if isinstance(action, StartTLS):
            await self._starttls(conn, action.inject)
            return True
        if isinstance(action, HangUp):
            sock = conn.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            conn.writer.write(action.raw())
            conn.writer.write_eof()  # flushes the corked reply with the FIN
            while await conn.reader.read(65536):
                pass
            return False
        if isinstance(action, Garbage):
            await conn.write(action.raw())
            return True
        if isinstance(action, EarlyReply):
            if action.after <= 0:
                await conn.write(b"354 Go ahead\r\n" + action.raw())
                return await self._data(conn)
            await conn.write(b"354 Go ahead\r\n")
            return await self._data(conn, early=action)
        if isinstance(action, SlowRead):
            await conn.write(b"354 Go ahead (slowly)\r\n")
            conn.read_size = action.chunk
            if action.rate <= 0:  # read one chunk, then nothing more
                await conn.reader.read(action.chunk)
                while True:
                    await asyncio.sleep(3600)
            conn.pause = action.chunk / action.rate
            try:
                return await self._data(conn)
            finally:
                conn.read_size, conn.pause = 65536, 0.0
        assert isinstance(action, DropMidData)
        await conn.write(b"354 Go ahead\r\n")
        received = len(conn.buf)
        while received < action.after:
            data = await conn.reader.read(65536)
            if not data:
                break
            received += len(data)
        if action.reply:
            await conn.write(action.reply)
            await asyncio.sleep(0.1)
        conn.writer.transport.abort()
        return False

    async def _starttls(self, conn: _Conn, inject: bytes = b"") -> None:
        if self._server_ctx is None:
            await conn.write(b"454 4.7.0 TLS not available\r\n")
            return
        await conn.write(b"220 2.0.0 Ready to start TLS\r\n" + inject)
        conn.buf.clear()
        await conn.writer.start_tls(self._server_ctx)
        conn.session.tls = True

    async def _default(self, conn: _Conn, verb: str, text: str) -> bool:
        session = conn.session
        arg = text[len(verb) :].strip()
        if verb == "EHLO":
            await conn.write(self._ehlo_reply(session))
        elif verb == "HELO":
            await conn.write(b"250 fault.test.invalid\r\n")
        elif verb == "STARTTLS" and self.tls and not session.tls:
            await self._starttls(conn)
        elif verb == "AUTH" and self.auth_mechanisms:
            await self._auth(conn, arg)
        elif verb == "MAIL":
            if self.close_after is not None and session.messages >= self.close_after:
                await conn.write(b"421 4.7.0 Too many messages in this session, closing\r\n")
                return False
            session.mail_from, session.mail_options = _path_and_params(arg)
            session.rcpt_tos = []
            if self._too_big(session.mail_options):
                session.mail_from = None
                await conn.write(b"552 5.3.4 Message size exceeds fixed limit\r\n")
            else:
                await conn.write(b"250 2.1.0 OK\r\n")
        elif verb == "RCPT":
            if self.max_recipients is not None and len(session.rcpt_tos) >= self.max_recipients:
                await conn.write(b"452 4.5.3 Too many recipients\r\n")
            else:
                session.rcpt_tos.append(_path_and_params(arg)[0])
                await conn.write(b"250 2.1.5 OK\r\n")
        elif verb == "DATA" and not session.rcpt_tos:
            await conn.write(b"554 5.5.1 No valid recipients\r\n")
        elif verb == "DATA":
            await conn.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            return await self._data(conn)
        elif verb in ("RSET", "NOOP"):
            session.mail_from, session.rcpt_tos = None, []
            await conn.write(b"250 2.0.0 OK\r\n")
        elif verb == "QUIT":
            await conn.write(b"221 2.0.0 Bye\r\n")
            return False
        else:
            await conn.write(b"502 5.5.2 Command not recognized\r\n")
        return True

    def _ehlo_reply(self, session: FaultSession) -> bytes:
        lines = ["fault.test.invalid", *self.capabilities]
        if self.tls and not session.tls and not self.strip_starttls:
            lines.append("STARTTLS")
        if self.auth_mechanisms:
            lines.append("AUTH " + " ".join(self.auth_mechanisms))
        out = [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]
        return ("\r\n".join(out) + "\r\n").encode()

    async def _auth(self, conn: _Conn, arg: str) -> None:
        mech, _, initial = arg.partition(" ")
        if mech.upper() == "PLAIN":
            if not initial:
                await conn.write(b"334 \r\n")
                initial = (await conn.readline()).decode().strip()
            parts = base64.b64decode(initial).split(b"\0")
            user, password = (parts[1], parts[2]) if len(parts) == 3 else (b"", b"")
        else:
            await conn.write(b"334 VXNlcm5hbWU6\r\n")
            user = base64.b64decode((await conn.readline()).strip())
            await conn.write(b"334 UGFzc3dvcmQ6\r\n")
            password = base64.b64decode((await conn.readline()).strip())
        if user == USERNAME.encode() and password == PASSWORD.encode():
            await conn.write(b"235 2.7.0 Authentication successful\r\n")
        else:
            await conn.write(b"535 5.7.8 Authentication credentials invalid\r\n")

    def _too_big(self, options: list[str]) -> bool:
        limit = self.size_limit
        for option in options:
            key, _, value = option.partition("=")
            if limit is not None and key.upper() == "SIZE" and value.isdigit():
                return int(value) > limit
        return False

    async def _data(self, conn: _Conn, early: EarlyReply | None = None) -> bool:
        """Read DATA up to the final dot (sending ``early``'s reply on the way)."""
        lines: list[bytes] = []
        raw: list[bytes] = []
        transaction = Transaction(conn.session.number)
        with self._lock:
            self.transactions.append(transaction)
        while True:
            line = await conn.readline()
            raw.append(line)
            transaction.size += len(line)
            if early is not None and transaction.size >= early.after:
                await conn.write(early.raw())
                early = None
            if line == b".\r\n":
                conn.session.dots.append(conn.reads)
                transaction.completed = True
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        session = conn.session
        received = ReceivedMessage(
            mail_from=session.mail_from or "",
            rcpt_tos=list(session.rcpt_tos),
            data=b"".join(lines),
            mail_options=list(session.mail_options),
            tls=session.tls,
            auth_user=None,
            received_at=time.monotonic(),
            session_id=session.number,
            raw=b"".join(raw),
        )
        del lines, raw
        with self._lock:
            self.received.append(received)
        action = self._action("DOT", session)
        if action is not None:
            return await self._perform(conn, action)
        if self.size_limit is not None and len(received.data) > self.size_limit:
            await conn.write(b"552 5.3.4 Message size exceeds fixed limit\r\n")
            return True
        with self._lock:
            self.messages.append(received)
        session.messages += 1
        await conn.write(f"250 2.0.0 OK queued as {len(self.messages)}\r\n".encode())
        return True
