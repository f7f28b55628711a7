"""Real servers for the OAuth2 tests, on 127.0.0.1 at free ports.

* :class:`TokenEndpoint` -- a fake OAuth2 token endpoint (stdlib ``http.server`` in a
  thread) that checks the grant's parameters, issues access tokens with the expiry it is
  told, counts requests, and can be told to fail or to stall, and to misbehave: ``echo``
  quotes the request form back in its error (raw, decoded, base64), ``trickle`` sends
  its answer one byte every so many seconds, ``flood`` sends an endless access token.
* :class:`OAuthSMTPServer` -- the aiosmtpd test server with the XOAUTH2 and OAUTHBEARER
  mechanisms (aiosmtpd picks up ``auth_<MECHANISM>`` methods of the handler), accepting
  only tokens that are currently valid in a shared :class:`ValidTokens`.

Tokens issued by the endpoint become valid at the SMTP server when both share one
``ValidTokens``; ``ValidTokens.expire()`` makes the server refuse a token the client still
has cached, as a real server does once the token expires.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from aiosmtpd.smtp import MISSING, SMTP, AuthResult

from server_base import HOST, USERNAME
from servers import SMTPTestServer

CLIENT_ID = "client-id-123.apps.example"
CLIENT_SECRET = "client-secret-XYZ-987"
REFRESH_TOKEN = "1//refresh-token-abcdef"
OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


class ValidTokens:
    """The access tokens an SMTP server currently accepts (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: set[str] = set()

    def add(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)

    def expire(self, token: str | None = None) -> None:
        """Stop accepting ``token`` (every token when None)."""
        with self._lock:
            if token is None:
                self._tokens.clear()
            else:
                self._tokens.discard(token)

    def __contains__(self, token: object) -> bool:
        with self._lock:
            return token in self._tokens


# --- the token endpoint --------------------------------------------------------------------


@dataclass
class TokenRequest:
    path: str
    form: dict[str, str]
    content_type: str
    accept: str


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        request = TokenRequest(
            path=self.path,
            form=dict(parse_qsl(body)),
            content_type=self.headers.get("Content-Type", ""),
            accept=self.headers.get("Accept", ""),
        )
        owner = self.server.owner
        if owner.echo:
            return self._echo(body, owner.echo)
        if owner.flood:
            return self._flood(owner)
        status, payload = owner.answer(request)
        if owner.trickle:
            return self._trickle(owner, status, payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _echo(self, body: str, how: str) -> None:
        """An endpoint that quotes what it was sent in its error: the form as it came
        (URL-encoded), its decoded values, or their base64."""
        values = [value for _, value in parse_qsl(body)]
        if how == "values":
            body = " ".join(values)
        elif how == "base64":
            body = " ".join(base64.b64encode(value.encode()).decode() for value in values)
        description = f"bad request: {body}"
        payload = json.dumps({"error": "invalid_request", "error_description": description})
        self._raw(400, payload.encode())

    def _raw(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _trickle(self, owner: TokenEndpoint, status: int, payload: bytes) -> None:
        """The whole answer, status line first, one byte every ``owner.trickle`` s."""
        head = (
            f"HTTP/1.0 {status} OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + owner.trickle_for
        with contextlib.suppress(OSError):
            for byte in head + payload:
                if time.monotonic() > deadline:
                    break  # the server gives up
                self.wfile.write(bytes([byte]))
                owner.count_sent(1)
                time.sleep(owner.trickle)

    def _flood(self, owner: TokenEndpoint) -> None:
        """200 and an access token of ``owner.flood`` bytes, no Content-Length."""
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
        self.wfile.write(b'{"token_type": "Bearer", "access_token": "')
        chunk = b"x" * 65536
        with contextlib.suppress(OSError):
            for _ in range(owner.flood // len(chunk)):
                self.wfile.write(chunk)
                owner.count_sent(len(chunk))
            self.wfile.write(b'"}')

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: TokenEndpoint

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up
            super().handle_error(request, client_address)


@dataclass
class TokenEndpoint:
    """A fake token endpoint; ``requests`` records every request (thread-safe count).

    ``grant`` decides what it accepts: ``"refresh_token"`` (Google, Microsoft delegated)
    or ``"client_credentials"``. ``failures`` are sent, in order, instead of a token
    (``(status, body)``); ``delay`` stalls every answer; ``rotate`` hands out a new
    refresh token with every access token (as Microsoft does).
    """

    tokens: ValidTokens = field(default_factory=ValidTokens)
    grant: str = "refresh_token"
    expires_in: int | None = 3600
    scope: str | None = None  # required scope, if any
    secret_required: bool = True
    rotate: bool = False
    token_size: int = 0  # pad tokens to this many characters (Microsoft's are ~2 KB)
    delay: float = 0.0
    failures: list[tuple[int, bytes]] = field(default_factory=list)
    echo: str = ""  # answer 400 quoting the request: "form", "values" or "base64"
    trickle: float = 0.0  # seconds between two bytes of the answer
    trickle_for: float = 8.0  # ... until the endpoint gives up
    flood: int = 0  # bytes of access token to send
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    sent: int = 0  # bytes trickle and flood got onto the wire

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self.refresh_token = REFRESH_TOKEN
        self._server = _HTTPServer((HOST, 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> TokenEndpoint:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "/token") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def count_sent(self, size: int) -> None:
        with self._lock:
            self.sent += size

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def answer(self, request: TokenRequest) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(request)
            failure = self.failures.pop(0) if self.failures else None
        if self.delay:
            time.sleep(self.delay)
        if failure is not None:
            return failure
        problem = self._check(request.form)
        if problem is not None:
            return problem
        token = self._issue()
        payload: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            payload["expires_in"] = self.expires_in
        if self.rotate:
            with self._lock:
                self.refresh_token = f"{REFRESH_TOKEN}-rotated-{len(self.issued)}"
                payload["refresh_token"] = self.refresh_token
        return 200, json.dumps(payload).encode()

    def _issue(self) -> str:
        token = f"ya29.access-{next(self._counter)}-{time.monotonic_ns()}"
        if self.token_size > len(token):
            token += "x" * (self.token_size - len(token))
        with self._lock:
            self.issued.append(token)
        self.tokens.add(token)
        return token

    def _check(self, form: dict[str, str]) -> tuple[int, bytes] | None:
        def error(status: int, code: str, description: str) -> tuple[int, bytes]:
            body = {"error": code, "error_description": description}
            return status, json.dumps(body).encode()

        if form.get("grant_type") != self.grant:
            return error(400, "unsupported_grant_type", "wrong grant_type")
        if form.get("client_id") != CLIENT_ID:
            return error(401, "invalid_client", "unknown client")
        secret = form.get("client_secret")
        if (secret is not None or self.secret_required) and secret != CLIENT_SECRET:
            return error(401, "invalid_client", "bad client secret")
        if self.grant == "refresh_token":
            with self._lock:
                current = self.refresh_token
            if form.get("refresh_token") != current:
                return error(400, "invalid_grant", "Token has been expired or revoked.")
        elif "refresh_token" in form:
            return error(400, "invalid_request", "refresh_token with client_credentials")
        if self.scope is not None and form.get("scope") != self.scope:
            return error(400, "invalid_scope", "wrong scope")
        return None


# --- the SMTP server ---------------------------------------------------------------------


@dataclass
class AuthAttempt:
    mechanism: str
    user: str
    token: str
    ok: bool
    fields: dict[str, str] = field(default_factory=dict)  # OAUTHBEARER key/values
    ack: bytes | None = None  # the client's answer to the error challenge


def _unescape(saslname: str) -> str:
    return saslname.replace("=2C", ",").replace("=3D", "=")


class OAuthSMTPServer(SMTPTestServer):
    """The recording aiosmtpd server (STARTTLS by default) with XOAUTH2 and OAUTHBEARER.

    ``mechanisms``: which of the two to offer (PLAIN and LOGIN are always offered too,
    as Gmail does, so that tests see that fluxmail never falls back to them).
    ``attempts`` records every OAuth2 AUTH.
    """

    def __init__(
        self,
        tokens: ValidTokens,
        *,
        mechanisms: tuple[str, ...] = OAUTH_MECHANISMS,
        user: str = USERNAME,
        tls: str = "starttls",
        **options: Any,
    ) -> None:
        excluded = tuple(m for m in OAUTH_MECHANISMS if m not in mechanisms)
        super().__init__(tls=tls, auth=True, exclude_auth=excluded, **options)
        self.tokens = tokens
        self.oauth_user = user
        self.attempts: list[AuthAttempt] = []

    def kwargs(self, oauth2: Any, **overrides: Any) -> dict[str, Any]:
        """FluxMail keyword arguments: this server, ``oauth2`` and no password."""
        return self.fluxmail_kwargs(password=None, oauth2=oauth2, **overrides)

    async def _initial(self, server: SMTP, args: list[str]) -> bytes | None:
        if len(args) == 2:
            return base64.b64decode(args[1])
        blob = await server.challenge_auth("")
        return None if blob is MISSING else blob  # type: ignore[no-any-return]

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        blob = await self._initial(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = dict(p.split("=", 1) for p in blob.decode().split("\x01") if "=" in p)
        token = parts.get("auth", "").removeprefix("Bearer ")
        attempt = AuthAttempt("XOAUTH2", parts.get("user", ""), token, False)
        error = {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        return await self._judge(server, attempt, error)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        blob = await self._initial(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        gs2, *pairs = blob.decode().split("\x01")
        fields = dict(p.split("=", 1) for p in pairs if "=" in p)
        user = next((_unescape(p[2:]) for p in gs2.split(",") if p.startswith("a=")), "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        attempt = AuthAttempt("OAUTHBEARER", user, token, False, fields)
        error = {"status": "invalid_token", "scope": "https://mail.google.com/"}
        return await self._judge(server, attempt, error)

    async def _judge(
        self, server: SMTP, attempt: AuthAttempt, error: dict[str, str]
    ) -> AuthResult:
        attempt.ok = attempt.user == self.oauth_user and attempt.token in self.tokens
        with self._lock:
            self.attempts.append(attempt)
        self._event(f"AUTH {attempt.mechanism} {'ok' if attempt.ok else 'failed'}")
        if attempt.ok:
            return AuthResult(success=True, auth_data=attempt.user)
        ack = await server.challenge_auth(json.dumps(error))
        if ack is MISSING:
            return AuthResult(success=False, handled=True)
        attempt.ack = ack
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )
