"""A local SMTP server that catches mail: for ``fluxmail demo``, ``fluxmail serve`` and tests.

It runs aiosmtpd on 127.0.0.1 in a background thread, optionally with STARTTLS or
implicit TLS (a throwaway certificate from a private CA made by trustme) and AUTH (given
credentials, or any), and keeps every message it receives. Needs the ``server`` extra
(``pip install -e ".[server]"`` in a clone).
"""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from ..errors import MissingDependencyError


@dataclass
class ReceivedMessage:
    """One message as the server received it.

    Attributes:
        mail_from: the MAIL FROM address.
        rcpt_tos: every RCPT TO address.
        data: the message bytes.
        tls: whether the session was encrypted.
        auth_user: who authenticated, if anyone.
        received_at: ``time.time()`` at the final dot.
    """

    mail_from: str
    rcpt_tos: list[str]
    data: bytes = field(repr=False)
    tls: bool
    auth_user: str | None
    received_at: float

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class _QuietLoginDataDeprecation(logging.Filter):
    """aiosmtpd logs "Session.login_data is deprecated" at WARNING on every successful AUTH,
    from its own code (we never touch login_data); with no logging configured that lands
    on stderr in ``fluxmail demo``. Drop that one message, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


_AIOSMTPD_FILTER = _QuietLoginDataDeprecation()


class _Handler:
    def __init__(self, server: LocalSMTPServer) -> None:
        self._server = server

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        # aiosmtpd reads commands one at a time, so pipelined commands (RFC 2920) work;
        # it just does not say so. Advertise it, so clients (and the demo) pipeline.
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        auth = session.auth_data
        user = auth.login.decode() if auth is not None and hasattr(auth, "login") else None
        received = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            tls=session.ssl is not None or self._server.implicit_tls,
            auth_user=user,
            received_at=time.monotonic(),
        )
        self._server.record(received)
        return "250 2.0.0 OK: queued"


ANY_CREDENTIALS: Literal["any"] = "any"


class LocalSMTPServer:
    """``with LocalSMTPServer(starttls=True, auth=("me@x.test", "pw")) as server: ...``

    ``server.port`` is the port; ``server.client_ssl_context()`` trusts its certificate;
    ``server.messages`` holds what arrived; ``on_message`` is called for each one.

    ``implicit_tls=True`` speaks TLS from the first byte (port 465 style) instead of
    offering STARTTLS. ``auth=ANY_CREDENTIALS`` accepts every username and password.
    ``strict`` (the default) requires the STARTTLS and the AUTH it offers; ``strict=False``
    (``fluxmail serve``) offers them and requires neither, so every kind of client works.
    ``ca`` shares one trustme CA between several servers.

    Args:
        host: the address to listen on.
        port: the port (0: a free one).
        starttls: offer STARTTLS (with a certificate from a throwaway CA).
        implicit_tls: speak TLS from the first byte instead.
        auth: ``(username, password)`` to accept, ``"any"`` (``ANY_CREDENTIALS``) for
            every pair, or None for no AUTH.
        strict: require the TLS and AUTH offered (``False``: offer them only).
        ca: a ``trustme.CA`` to share between servers.
        on_message: called with each :class:`ReceivedMessage`, from the server thread.
        save_dir: also write each message there as an ``.eml`` file.

    Raises:
        MissingDependencyError: ``missing_dependency``: aiosmtpd (the ``server`` extra),
            or trustme for TLS.

    Example:
        ```python
        from fluxmail.cli.localserver import LocalSMTPServer

        with LocalSMTPServer(starttls=True, auth=("app", "example-password")) as server:
            local = FluxMail(host="127.0.0.1", port=server.port, use_tls=True,
                             username="app", password="example-password",
                             sender="app@example.com",
                             ssl_context=server.client_ssl_context())
            local.create(subject="Over TLS", recipients=["ada@example.org"], body="Hi").send()
        [received] = server.messages
        assert received.tls and received.auth_user == "app"
        ```
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        starttls: bool = False,
        implicit_tls: bool = False,
        auth: tuple[str, str] | Literal["any"] | None = None,
        strict: bool = True,
        ca: Any = None,
        on_message: Callable[[ReceivedMessage], None] | None = None,
        save_dir: str | Path | None = None,
    ) -> None:
        try:
            from aiosmtpd.controller import Controller  # noqa: F401
        except ImportError:
            raise MissingDependencyError("The local SMTP server", "server", "aiosmtpd") from None
        self.host = host
        self.port = port or free_port(host)
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.strict = strict
        self.messages: list[ReceivedMessage] = []
        self._on_message = on_message
        self._save_dir = Path(save_dir) if save_dir else None
        self._lock = threading.Lock()
        self._ca: Any = ca
        self._controller: Any = None

    def record(self, received: ReceivedMessage) -> None:
        with self._lock:
            self.messages.append(received)
            count = len(self.messages)
        if self._save_dir is not None:
            self._save_dir.mkdir(parents=True, exist_ok=True)
            (self._save_dir / f"{int(time.time())}-{count:05d}.eml").write_bytes(received.data)
        if self._on_message is not None:
            self._on_message(received)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's private CA.

        Returns:
            An ``ssl.SSLContext`` for ``FluxMail(ssl_context=...)``.

        Raises:
            RuntimeError: the server runs without TLS (no CA exists).
        """
        if self._ca is None:
            raise RuntimeError("the server runs without TLS")
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    def _server_ssl_context(self) -> ssl.SSLContext:
        try:
            import trustme
        except ImportError:
            raise MissingDependencyError("TLS on the local server", "server", "trustme") from None
        if self._ca is None:
            self._ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        names = dict.fromkeys(("localhost", "127.0.0.1", self.host))  # and where it listens
        self._ca.issue_cert(*names).configure_cert(context)
        return context

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult

        assert self.auth is not None
        login = getattr(auth_data, "login", b"") or b""
        secret = getattr(auth_data, "password", b"") or b""
        if self.auth == ANY_CREDENTIALS:
            ok = bool(login)
        else:
            user, password = self.auth
            ok = (
                login.decode(errors="replace") == user
                and secret.decode(errors="replace") == password
            )
        # auth_data becomes session.auth_data, which is how _Handler knows who logged in.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def start(self) -> LocalSMTPServer:
        """Start listening, in a background thread (``with`` does it for you).

        Returns:
            The server itself.

        Raises:
            MissingDependencyError: ``missing_dependency``: trustme, for TLS.
            OSError: the port is taken.
        """
        from aiosmtpd.controller import Controller

        aiosmtpd_log = logging.getLogger("mail.log")
        if _AIOSMTPD_FILTER not in aiosmtpd_log.filters:
            aiosmtpd_log.addFilter(_AIOSMTPD_FILTER)

        options: dict[str, Any] = {"enable_SMTPUTF8": True, "ident": "fluxmail local server"}
        if self.starttls:
            options.update(tls_context=self._server_ssl_context(), require_starttls=self.strict)
        elif self.implicit_tls:
            options.update(ssl_context=self._server_ssl_context())
        if self.auth is not None:
            options.update(
                authenticator=self._authenticate,
                auth_required=self.strict,
                # A strict server takes credentials only over TLS; a lenient one also in
                # plaintext, for clients run with allow_insecure_auth / --allow-insecure-auth.
                auth_require_tls=self.strict and self.starttls,
            )
        self._controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",
            **options,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> LocalSMTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
