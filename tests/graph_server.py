"""A local Microsoft Graph for the tests: the two mail endpoints and a token endpoint, on
127.0.0.1 at free ports (stdlib ``http.server`` in threads, HTTP/1.1 keep-alive).

* ``POST /v1.0/users/{mailbox}/sendMail`` and ``POST /v1.0/users/{mailbox}/messages``
  check the bearer token (valid tokens come from the :class:`TokenEndpoint` of
  ``oauth_servers``, sharing one ``ValidTokens``), the ``text/plain`` content type and
  Graph's 4 MB request limit, decode and record the base64 MIME, and answer 202 (sent) or
  201 with a draft's ``id`` and ``webLink``. Not base64: 400
  ``ErrorMimeContentInvalidBase64String``, as Graph documents. An unknown mailbox: 404;
  a mailbox the app may not use: 403 (an application access policy).
* ``script`` holds answers given instead, in order, one per request: 429/503 with
  Retry-After, 401, JSON 400 errors, 500, or a stall.

It records every request (``requests``), every accepted message (``sent``, ``drafts``),
how many requests were in flight at most, and how many TCP connections were opened.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from oauth_servers import TokenEndpoint, ValidTokens
from server_base import HOST

MAILBOX = "reports@contoso.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
LIMIT = 4 * 1024 * 1024


@dataclass
class Reply:
    """A scripted answer: ``status`` with Graph's error JSON (``code``) or ``body``;
    ``retry_after`` sets the header; ``delay`` stalls before answering."""

    status: int
    code: str | None = None
    message: str = "scripted"
    retry_after: str | None = None
    delay: float = 0.0
    body: bytes | None = None

    def payload(self) -> bytes:
        if self.body is not None:
            return self.body
        if self.code is None:
            return b""
        error = {"code": self.code, "message": self.message, "innerError": {"request-id": "x"}}
        return json.dumps({"error": error}).encode()


@dataclass
class GraphRequest:
    path: str
    action: str  # "sendMail", "messages" or "" (an unknown path)
    mailbox: str
    token: str
    content_type: str
    body: bytes
    mime: bytes | None  # the decoded message, when the body was base64
    at: float  # time.monotonic() when the request arrived
    status: int = 0
    answered_at: float = 0.0  # time.monotonic() when the answer was ready

    @property
    def message(self) -> EmailMessage:
        assert self.mime is not None
        parsed = email.message_from_bytes(self.mime, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's pool reuses connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._connected()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        status, headers, payload = self.server.owner.handle(self.path, dict(self.headers), body)
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (a timeout test)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: GraphServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class GraphServer:
    """The local Graph. ``mailboxes``: those that exist; ``allowed``: those the app may
    send as (None: all of them). ``delay`` stalls every mail request (to see concurrency)."""

    mailboxes: tuple[str, ...] = (MAILBOX,)
    allowed: tuple[str, ...] | None = None
    delay: float = 0.0
    tokens: ValidTokens = field(default_factory=ValidTokens)
    script: list[Reply] = field(default_factory=list)
    requests: list[GraphRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self._drafts = 0
        self.endpoint = TokenEndpoint(
            tokens=self.tokens, grant="client_credentials", scope=GRAPH_SCOPE
        )
        self._server = _Server((HOST, 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]

    def start(self) -> GraphServer:
        self.endpoint.start()
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.endpoint.stop()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1.0"

    @property
    def token_url(self) -> str:
        return self.endpoint.url("/tenant/oauth2/v2.0/token")

    # --- what it received --------------------------------------------------------------

    def _of(self, action: str) -> list[GraphRequest]:
        with self._lock:
            return [r for r in self.requests if r.action == action and r.status in (201, 202)]

    @property
    def sent(self) -> list[GraphRequest]:
        return self._of("sendMail")

    @property
    def drafts(self) -> list[GraphRequest]:
        return self._of("messages")

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1

    # --- answering -----------------------------------------------------------------------

    def handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        request = self._record(path, headers, body)
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            reply = self.script.pop(0) if self.script else None
        try:
            if self.delay:
                time.sleep(self.delay)
            if reply is not None:
                time.sleep(reply.delay)
                status, extra, payload = reply.status, {}, reply.payload()
                if reply.retry_after is not None:
                    extra["Retry-After"] = reply.retry_after
            else:
                status, extra, payload = self._answer(request)
        finally:
            with self._lock:
                self._in_flight -= 1
                request.status = status
                request.answered_at = time.monotonic()
        if payload:
            extra["Content-Type"] = "application/json"
        return status, extra, payload

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> GraphRequest:
        parts = path.split("/")  # ['', 'v1.0', 'users', mailbox, action]
        ok = len(parts) == 5 and parts[1] == "v1.0" and parts[2] == "users"
        auth = {k.lower(): v for k, v in headers.items()}
        token = auth.get("authorization", "")
        try:
            mime: bytes | None = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            mime = None
        request = GraphRequest(
            path=path,
            action=parts[4] if ok and parts[4] in ("sendMail", "messages") else "",
            mailbox=unquote(parts[3]) if ok else "",
            token=token.removeprefix("Bearer ") if token.startswith("Bearer ") else "",
            content_type=auth.get("content-type", ""),
            body=body,
            mime=mime,
            at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(request)
        return request

    def _answer(self, request: GraphRequest) -> tuple[int, dict[str, str], bytes]:
        def error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
            return status, {}, Reply(status, code, message).payload()

        if not request.action:
            return error(400, "BadRequest", "Resource not found for the segment.")
        if not request.token or request.token not in self.tokens:
            return error(401, "InvalidAuthenticationToken", "Access token has expired.")
        if request.mailbox not in self.mailboxes:
            return error(404, "ErrorInvalidUser", f"The requested user '{request.mailbox}'")
        if self.allowed is not None and request.mailbox not in self.allowed:
            return error(403, "ErrorAccessDenied", "Access to OData is disabled.")
        if len(request.body) > LIMIT:
            return error(413, "RequestEntityTooLarge", "The request is too large.")
        if not request.content_type.startswith("text/plain"):
            return error(415, "UnsupportedMediaType", "Use text/plain for MIME.")
        if request.mime is None:
            return error(
                400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME."
            )
        if request.action == "sendMail":
            return 202, {}, b""
        with self._lock:
            self._drafts += 1
            ident = f"AAMkDraft{self._drafts}"
        link = f"https://outlook.office365.com/owa/?ItemID={ident}&exvsurl=1&viewmodel=ReadMessageItem"
        return 201, {}, json.dumps({"id": ident, "webLink": link, "isDraft": True}).encode()
