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
untrusted CA for ``untrusted=True`` servers. Import everything from here; the fault
server lives in ``fault_server.py`` and the shared pieces in ``server_base.py``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from fault_server import (
    DEFAULT_CAPS,
    Action,
    Close,
    DropMidData,
    EarlyReply,
    Endless,
    FaultServer,
    FaultSession,
    Garbage,
    HangUp,
    Reply,
    Script,
    SlowRead,
    Stall,
    StartTLS,
    Transaction,
    Trickle,
)
from fluxmail.config import SmtpConfig
from server_base import (
    HOST,
    PASSWORD,
    USERNAME,
    ReceivedMessage,
    TLSMaterial,
    message_ids,
    tls_material,
)

__all__ = [
    "DEFAULT_CAPS",
    "HOST",
    "PASSWORD",
    "USERNAME",
    "Action",
    "Close",
    "DropMidData",
    "EarlyReply",
    "Endless",
    "FaultServer",
    "FaultSession",
    "Garbage",
    "HangUp",
    "ReceivedMessage",
    "Reply",
    "SMTPSession",
    "SMTPTestServer",
    "Script",
    "SlowRead",
    "Stall",
    "StartTLS",
    "TLSMaterial",
    "Transaction",
    "Trickle",
    "message_ids",
    "tls_material",
]


def _reply_for(code: int | str, default_text: str) -> str:
    if isinstance(code, str):
        return code
    return f"{code} {default_text}"


@dataclass
class SMTPSession:
    """One client connection to an SMTPTestServer (it survives STARTTLS)."""

    number: int
    commands: list[str] = field(default_factory=list)  # "MAIL FROM:<a@b>", "STARTTLS", ...
    messages: int = 0  # messages accepted in this session
    closed: bool = False


#: What ``fail=`` maps a stage to: a code (``451``), a full reply (``"554 5.7.1 no"``), or a
#: callable ``(SMTPSession) -> code | reply | None`` (``None``: behave normally).
Failure = int | str | Callable[[SMTPSession], "int | str | None"]
_FAILURE_TEXT = {4: "4.3.0 Temporary failure (scripted)", 5: "5.7.1 Refused (scripted)"}
_SCRIPTABLE = ("EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT")


# --- aiosmtpd-based server -------------------------------------------------------------


class _RecordingSMTP(SMTP):  # type: ignore[misc]
    """aiosmtpd's SMTP, recording sessions and commands for the owning SMTPTestServer and
    answering the stages it was told to fail (see ``SMTPTestServer(fail=...)``)."""

    owner: SMTPTestServer
    record: SMTPSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # aiosmtpd calls connection_made again for the TLS transport after STARTTLS:
        # that is the same session, not a new connection.
        if self._original_transport is None:
            self.record = self.owner._connection_opened(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.record is not None:
            self.record.closed = True
        super().connection_lost(error)


def _scriptable(verb: str) -> Callable[..., Any]:
    original = getattr(SMTP, "smtp_" + verb)

    async def method(self: _RecordingSMTP, arg: str | None) -> None:
        record = self.record
        if record is not None:
            record.commands.append(f"{verb} {arg}" if arg else verb)
        reply = self.owner._scripted(verb, record) if record is not None else None
        if reply is None:
            await original(self, arg)
            return
        await self.push(reply)
        if reply.startswith("421"):  # "closing transmission channel"
            assert self.transport is not None
            self.transport.close()

    method.__name__ = "smtp_" + verb
    return method


for _verb in _SCRIPTABLE:
    setattr(_RecordingSMTP, "smtp_" + _verb, _scriptable(_verb))


class _Controller(Controller):  # type: ignore[misc]
    def __init__(self, owner: SMTPTestServer, **kwargs: Any) -> None:
        self._owner = owner
        self._live: weakref.WeakSet[SMTP] = weakref.WeakSet()
        super().__init__(owner, hostname=HOST, port=0, ready_timeout=5.0, **kwargs)

    def factory(self) -> SMTP:
        server = _RecordingSMTP(self.handler, **self.SMTP_kwargs)
        server.owner = self._owner
        self._live.add(server)
        return server

    def cancel_tasks(self, stop_loop: bool = True) -> None:
        # aiosmtpd stops the loop with the accepted connections still open, and the
        # garbage collector then warns about each socket (an error in this suite).
        for server in list(self._live):
            if server.transport is not None:
                server.transport.abort()
        super().cancel_tasks(stop_loop)

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
    ``exclude_auth`` (AUTH mechanisms not to offer, e.g. ``("PLAIN",)``),
    ``fail`` ({stage: code, reply or callable}: answer that command with it instead; the
    stages are EHLO, HELO, STARTTLS, AUTH, MAIL, RCPT, DATA (the command), DOT (the end of
    the data), RSET, NOOP, QUIT; a ``421`` reply also closes the connection),
    ``close_after`` (421-and-close at the MAIL of message N+1 of each session),
    ``strip_starttls`` (do not advertise STARTTLS, as a downgrading middlebox would),
    ``cert_for`` (a certificate of the trusted CA for these host names only).
    Recorded: ``messages`` (accepted), ``refused_data`` (refused at the final dot),
    ``events`` (EHLO/HELO/AUTH/MAIL/RCPT/DATA/RSET as seen), ``sessions`` (every
    connection with its commands), ``connections`` (how many, STARTTLS not counted twice).
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
        fail: Mapping[str, Failure] | None = None,
        close_after: int | None = None,
        strip_starttls: bool = False,
        cert_for: tuple[str, ...] | None = None,
    ) -> None:
        if tls not in ("none", "starttls", "ssl"):
            raise ValueError("tls must be 'none', 'starttls' or 'ssl'")
        self.fail: dict[str, Failure] = {k.upper(): v for k, v in (fail or {}).items()}
        unknown = set(self.fail) - {*_SCRIPTABLE, "DOT"}
        if unknown:
            raise ValueError(f"unknown stage(s) in fail=: {sorted(unknown)}")
        self.close_after = close_after
        self.strip_starttls = strip_starttls
        self.sessions: list[SMTPSession] = []
        self._stopped = False
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
        server_ctx = (
            material.server_context(untrusted=untrusted, hostnames=cert_for) if material else None
        )
        kwargs = self._aiosmtpd_kwargs(tls, auth, server_ctx, size_limit, smtputf8, exclude_auth)
        kwargs["ident"] = ident or "fluxmail test server"
        self._controller = _Controller(self, **kwargs)

    def _aiosmtpd_kwargs(
        self,
        tls: str,
        auth: bool,
        server_ctx: ssl.SSLContext | None,
        size_limit: int | None,
        smtputf8: bool,
        exclude_auth: tuple[str, ...],
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "data_size_limit": size_limit or None,
            "enable_SMTPUTF8": smtputf8,
            "server_hostname": "mx.test.invalid",
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
        return kwargs

    # lifecycle
    def start(self) -> SMTPTestServer:
        self._controller.start()
        self.port = self._controller.port
        with self._lock:
            self.connections = 0  # forget aiosmtpd's readiness probe
            self.sessions.clear()
        return self

    def stop(self) -> None:
        """Stop the server; calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
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

    def message_ids(self) -> list[str]:
        """The Message-ID of every accepted message, in order of arrival."""
        with self._lock:
            return message_ids(self.messages)

    # recording internals
    def _connection_opened(self, server: SMTP) -> SMTPSession:
        with self._lock:
            self.connections += 1
            record = SMTPSession(number=len(self.sessions) + 1)
            self.sessions.append(record)
            return record

    def _scripted(self, verb: str, record: SMTPSession) -> str | None:
        """The reply that replaces the normal answer to ``verb``, if any."""
        if verb == "MAIL" and self.close_after is not None and record.messages >= self.close_after:
            return "421 4.7.0 Too many messages in this session, closing"
        entry = self.fail.get(verb)
        value = entry(record) if callable(entry) else entry
        if value is None or isinstance(value, str):
            return value
        return _reply_for(value, _FAILURE_TEXT.get(value // 100, "scripted reply"))

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
        if self.strip_starttls:
            responses = [r for r in responses if r[4:].upper() != "STARTTLS"]
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
        dot = self.fail.get("DOT")
        reply = dot(self._record_of(server)) if callable(dot) else dot
        if reply is None:
            reply = self.data_reply
        if reply is not None:
            with self._lock:
                self.refused_data.append(received)
            text = _reply_for(reply, "message refused")
            if text.startswith("421"):
                server.loop.call_soon(server.transport.close)
            return text
        with self._lock:
            self.messages.append(received)
        record = self._record_of(server)
        if record is not None:
            record.messages += 1
        return "250 2.0.0 OK queued"

    @staticmethod
    def _record_of(server: SMTP) -> SMTPSession | None:
        record: SMTPSession | None = getattr(server, "record", None)
        return record
