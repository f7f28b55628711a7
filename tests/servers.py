"""Real SMTP servers for the test suite, all on 127.0.0.1 at a free port.

* :class:`SMTPTestServer` wraps an aiosmtpd ``Controller`` (plain, STARTTLS or implicit
  TLS, optional AUTH) with a recording handler and a few hooks (refuse recipients, reply
  to the final dot with a given code, advertise PIPELINING or not, ...).
* :class:`FaultServer` is a small scripted asyncio SMTP server for what aiosmtpd cannot
  do: stalls, drops, garbage, endless multi-line replies, bytes injected after STARTTLS.
  Its script maps a stage name (``"greeting"``, ``"EHLO"``, ``"MAIL"``, ``"RCPT"``,
  ``"DATA"``, ``"DOT"``, ``"STARTTLS"``, ``"AUTH"``, ...) to an action, or to a callable
  ``(FaultSession) -> action | None`` (``None`` means "behave normally").

Certificates come from trustme: one trusted CA (its PEM path is ``ca_pem``) and one
untrusted CA for ``untrusted=True`` servers.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.message
import email.policy
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from fluxmail.config import SmtpConfig

HOST = "127.0.0.1"
USERNAME = "user@example.com"
PASSWORD = "s3cret-pa55"

__all__ = [
    "HOST",
    "PASSWORD",
    "USERNAME",
    "Close",
    "DropMidData",
    "Endless",
    "FaultServer",
    "FaultSession",
    "ReceivedMessage",
    "Reply",
    "SMTPTestServer",
    "Stall",
    "StartTLS",
    "TLSMaterial",
    "Trickle",
    "tls_material",
]


# --- certificates ----------------------------------------------------------------------


class TLSMaterial:
    """A trusted and an untrusted trustme CA, with server contexts for localhost."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        self._dir = tempfile.mkdtemp(prefix="fluxmail-tests-")
        self.ca_pem = os.path.join(self._dir, "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_pem)
        self._cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self._other_cert = self.other_ca.issue_cert("localhost", "127.0.0.1")

    def server_context(self, *, untrusted: bool = False) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        (self._other_cert if untrusted else self._cert).configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the test CA (TLS >= 1.2)."""
        ctx = ssl.create_default_context(cafile=self.ca_pem)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


_TLS: TLSMaterial | None = None
_TLS_LOCK = threading.Lock()


def tls_material() -> TLSMaterial:
    """The process-wide test CA (created on first use; cheap afterwards)."""
    global _TLS
    with _TLS_LOCK:
        if _TLS is None:
            _TLS = TLSMaterial()
        return _TLS


# --- what servers record ---------------------------------------------------------------


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # raw bytes as received, dot-unstuffed
    mail_options: list[str]
    tls: bool
    auth_user: str | None
    received_at: float  # time.monotonic()
    session_id: int = 0

    @property
    def message(self) -> email.message.EmailMessage:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        return msg


def _reply_for(code: int | str, default_text: str) -> str:
    if isinstance(code, str):
        return code
    return f"{code} {default_text}"


# --- aiosmtpd-based server -------------------------------------------------------------


class _RecordingSMTP(SMTP):  # type: ignore[misc]
    """aiosmtpd's SMTP, counting connections for the owning SMTPTestServer."""

    owner: SMTPTestServer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.owner._connection_opened(self)
        super().connection_made(transport)


class _Controller(Controller):  # type: ignore[misc]
    def __init__(self, owner: SMTPTestServer, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(owner, hostname=HOST, port=0, ready_timeout=5.0, **kwargs)

    def factory(self) -> SMTP:
        server = _RecordingSMTP(self.handler, **self.SMTP_kwargs)
        server.owner = self._owner
        return server

    def _trigger_server(self) -> None:
        # Bound to port 0: learn the real port before aiosmtpd's readiness probe.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SMTPTestServer:
    """An aiosmtpd server on 127.0.0.1 that records what it receives.

    Options: ``tls`` ("none", "starttls", "ssl"), ``auth`` (require AUTH PLAIN/LOGIN
    with ``username``/``password``), ``untrusted`` (certificate from an unknown CA),
    ``reject_mail`` (code or full reply), ``reject_rcpt`` ({address: code or reply}),
    ``max_recipients`` (452 4.5.3 after that many accepted RCPTs in one transaction),
    ``data_reply`` (code or reply for the final dot), ``size_limit`` (advertised SIZE,
    ``None`` or 0 for none), ``smtputf8``, ``pipelining``, ``ident`` (greeting banner),
    ``exclude_auth`` (AUTH mechanisms not to offer, e.g. ``("PLAIN",)``).
    Recorded: ``messages`` (accepted), ``refused_data`` (refused at the final dot),
    ``events`` (EHLO/HELO/AUTH/MAIL/RCPT/DATA/RSET as seen), ``connections``.
    """

    def __init__(
        self,
        *,
        tls: str = "none",
        auth: bool = False,
        username: str = USERNAME,
        password: str = PASSWORD,
        untrusted: bool = False,
        reject_mail: int | str | None = None,
        reject_rcpt: Mapping[str, int | str] | None = None,
        max_recipients: int | None = None,
        data_reply: int | str | None = None,
        size_limit: int | None = 33554432,
        smtputf8: bool = True,
        pipelining: bool = True,
        ident: str | None = None,
        exclude_auth: tuple[str, ...] = (),
    ) -> None:
        if tls not in ("none", "starttls", "ssl"):
            raise ValueError("tls must be 'none', 'starttls' or 'ssl'")
        self.host = HOST
        self.port = 0
        self.tls_mode = tls
        self.messages: list[ReceivedMessage] = []
        self.events: list[str] = []  # "EHLO x", "MAIL a", "RCPT b", "DATA", "RSET", "AUTH u"
        self.refused_data: list[ReceivedMessage] = []  # messages refused at the final dot
        self.connections = 0
        self.username: str | None = username if auth else None
        self.password: str | None = password if auth else None
        self.reject_mail = reject_mail
        self.reject_rcpt = dict(reject_rcpt or {})
        self.max_recipients = max_recipients
        self.data_reply = data_reply
        self.pipelining = pipelining
        self._lock = threading.Lock()
        self._session_ids: dict[int, int] = {}
        material = tls_material() if tls != "none" else None
        self.ca_pem: str | None = material.ca_pem if material else None
        self.client_ssl_context: ssl.SSLContext | None = (
            material.client_context() if material else None
        )
        server_ctx = material.server_context(untrusted=untrusted) if material else None
        kwargs: dict[str, Any] = {
            "data_size_limit": size_limit or None,
            "enable_SMTPUTF8": smtputf8,
            "server_hostname": "mx.test.invalid",
            "ident": ident or "fluxmail test server",
            # AUTH is advertised after STARTTLS; on implicit TLS (aiosmtpd cannot tell)
            # and on plain servers with auth=True (the allow_insecure_auth tests) always.
            "auth_require_tls": tls == "starttls" or not auth,
            "authenticator": self._authenticate,
            "auth_exclude_mechanism": exclude_auth,
            "timeout": 30,
        }
        if tls == "starttls":
            kwargs["tls_context"] = server_ctx
            kwargs["require_starttls"] = auth
        elif tls == "ssl":
            kwargs["ssl_context"] = server_ctx
        self._controller = _Controller(self, **kwargs)

    # lifecycle
    def start(self) -> SMTPTestServer:
        self._controller.start()
        self.port = self._controller.port
        with self._lock:
            self.connections = 0  # forget aiosmtpd's readiness probe
        return self

    def stop(self) -> None:
        self._controller.stop(no_assert=True)

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # helpers for tests
    def fluxmail_kwargs(self, **overrides: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"object_type": "smtp", "host": self.host, "port": self.port}
        if self.tls_mode == "starttls":
            kwargs["use_tls"] = True
        elif self.tls_mode == "ssl":
            kwargs["use_ssl"] = True
        if self.username is not None:
            kwargs["username"] = self.username
            kwargs["password"] = self.password
        if self.client_ssl_context is not None:
            kwargs["ssl_context"] = self.client_ssl_context
        kwargs.update(overrides)
        return kwargs

    def smtp_config(self, **overrides: Any) -> SmtpConfig:
        """An SmtpConfig for the engine (``object_type`` dropped, timeout 5 s)."""
        kwargs = self.fluxmail_kwargs(**overrides)
        kwargs.pop("object_type", None)
        kwargs.setdefault("timeout", 5.0)
        return SmtpConfig(**kwargs)

    def commands(self, verb: str) -> list[str]:
        """Recorded events starting with ``verb`` (e.g. ``"MAIL"``)."""
        with self._lock:
            return [e for e in self.events if e.split(" ", 1)[0] == verb]

    # recording internals
    def _connection_opened(self, server: SMTP) -> None:
        with self._lock:
            self.connections += 1

    def _event(self, text: str) -> None:
        with self._lock:
            self.events.append(text)

    def _session_id(self, session: Any) -> int:
        with self._lock:
            return self._session_ids.setdefault(id(session), len(self._session_ids) + 1)

    def _authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.username is not None
            and auth_data.login == self.username.encode()
            and auth_data.password == (self.password or "").encode()
        )
        login = auth_data.login.decode(errors="replace") if ok else None
        self._event(f"AUTH {mechanism} {'ok' if ok else 'failed'}")
        return AuthResult(success=ok, handled=False, auth_data=login)

    # aiosmtpd handler hooks
    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self._session_id(session)
        self._event(f"EHLO {hostname}")
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        responses.insert(-1, "250-ENHANCEDSTATUSCODES")
        return responses

    async def handle_HELO(self, server: SMTP, session: Any, envelope: Any, hostname: str) -> str:
        session.host_name = hostname
        self._event(f"HELO {hostname}")
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self._event(f"MAIL {address}")
        if self.username is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if self.reject_mail is not None:
            return _reply_for(self.reject_mail, "5.7.1 Sender refused")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self._event(f"RCPT {address}")
        if address in self.reject_rcpt:
            return _reply_for(self.reject_rcpt[address], f"5.1.1 <{address}>: refused")
        if self.max_recipients is not None and len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server: SMTP, session: Any, envelope: Any) -> str:
        self._event("RSET")
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self._event("DATA")
        auth = session.auth_data if session.authenticated else None
        received = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            mail_options=list(envelope.mail_options),
            tls=session.ssl is not None or self.tls_mode == "ssl",
            auth_user=auth if isinstance(auth, str) else None,
            received_at=time.monotonic(),
            session_id=self._session_id(session),
        )
        if self.data_reply is not None:
            with self._lock:
                self.refused_data.append(received)
            return _reply_for(self.data_reply, "message refused")
        with self._lock:
            self.messages.append(received)
        return "250 2.0.0 OK queued"


# --- scripted fault server -------------------------------------------------------------


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
    """Answer DATA with 354, read ``after`` bytes of the body, then abort (RST)."""

    after: int = 1024


Action = Reply | Stall | Close | Endless | Trickle | StartTLS | DropMidData
Script = Mapping[str, "Action | Callable[[FaultSession], Action | None]"]


@dataclass
class FaultSession:
    """One client connection to a FaultServer."""

    number: int
    commands: list[str] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)  # read index each command arrived in
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

    async def readline(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            data = await self.reader.read(65536)
            if not data:
                raise _Closed
            self.reads += 1
            self.buf += data

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
    ``sessions`` records every command with the read it arrived in; ``received`` every
    complete DATA body; ``messages`` those answered with the default 250.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        capabilities: tuple[str, ...] = DEFAULT_CAPS,
        tls: bool = False,
        auth_mechanisms: tuple[str, ...] = (),
        greeting: str = "220 fault.test.invalid ESMTP ready",
    ) -> None:
        self.host = HOST
        self.port = 0
        self.script: dict[str, Any] = dict(script or {})
        self.capabilities = capabilities
        self.tls = tls
        self.auth_mechanisms = auth_mechanisms
        self.greeting = greeting
        self.sessions: list[FaultSession] = []
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
        server = loop.run_until_complete(asyncio.start_server(self._handle, HOST, 0))
        self.port = server.sockets[0].getsockname()[1]
        loop.call_soon(ready.set)
        loop.run_forever()
        for task in list(self._tasks):
            task.cancel()
        loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
        server.close()
        loop.run_until_complete(server.wait_closed())
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
        finally:
            self._writers.pop(session.number, None)
            session.closed = True
            if not writer.is_closing():
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
        assert isinstance(action, DropMidData)
        await conn.write(b"354 Go ahead\r\n")
        received = len(conn.buf)
        while received < action.after:
            data = await conn.reader.read(65536)
            if not data:
                break
            received += len(data)
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
            session.mail_from, session.mail_options = _path_and_params(arg)
            session.rcpt_tos = []
            await conn.write(b"250 2.1.0 OK\r\n")
        elif verb == "RCPT":
            session.rcpt_tos.append(_path_and_params(arg)[0])
            await conn.write(b"250 2.1.5 OK\r\n")
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
        if self.tls and not session.tls:
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

    async def _data(self, conn: _Conn) -> bool:
        lines: list[bytes] = []
        while True:
            line = await conn.readline()
            if line == b".\r\n":
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
        )
        with self._lock:
            self.received.append(received)
        action = self._action("DOT", session)
        if action is not None:
            return await self._perform(conn, action)
        with self._lock:
            self.messages.append(received)
        session.messages += 1
        await conn.write(f"250 2.0.0 OK queued as {len(self.messages)}\r\n".encode())
        return True
