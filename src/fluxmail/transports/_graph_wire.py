"""Microsoft Graph, the pure part: settings, request bodies, what each answer (or failed
exchange) means, and the throttle shared by every request of one mailer. No I/O here;
``graph.py`` does it.

What an answer means (``sendMail`` and ``messages`` alike):

=========================  ====================================================  ========
answer                     fluxmail                                              retried
=========================  ====================================================  ========
202 / 201                  accepted (201 carries the draft's id and webLink)
429, 503                   GraphThrottledError (transient), waits Retry-After    yes
401 (first)                drop the cached token, get a new one, send again      once
401 (again)                AuthenticationError, Graph's code in the text         no
other 4xx (400, 403, 404)  GraphError with ``status`` and ``graph_code``         no
500, 502, 504, other 5xx   OutcomeUnknownError: Graph may have taken it          no
=========================  ====================================================  ========
"""

from __future__ import annotations

import base64
import json
import math
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from ..errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    FluxMailException,
    GraphError,
    GraphThrottledError,
    InvalidMessageError,
    OutcomeUnknownError,
    ProtocolError,
    SendTimeoutError,
    TLSVerifyError,
)
from ..smtp import SendResult

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..smtp._tokens import TokenSource

DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
#: Graph refuses a request over 4 MB; the request is the base64 of the MIME message, so
#: the MIME itself can be about 3 MB. No upload session: a larger message is refused here.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: Outlook's limit: 4 concurrent requests per app and mailbox; more only earns 429s.
MAX_CONCURRENCY = 4
MAX_ANSWER_BYTES = 1024 * 1024  # an error or a draft is a few KB; never buffer more
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_SMTP_SCOPES = (
    "https://outlook.office365.com/.default",
    "https://outlook.office.com/SMTP.Send offline_access",
)
#: What ``test_connection()`` posts to sendMail: not base64, so Graph can only refuse it
#: (400) after checking the token and the mailbox (401/403/404). Nothing can be sent.
PROBE_BODY = b"!"
PROBE_REFUSAL = "ErrorMimeContentInvalidBase64String"


def check_graph_url(value: object) -> str:
    """``https://...`` (``http://`` only on 127.0.0.1/localhost), without a trailing /."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError("graph_url must be a URL such as " + DEFAULT_GRAPH_URL)
    parts = urlsplit(value.strip())
    local = parts.scheme == "http" and parts.hostname in _LOOPBACK
    if not ((parts.scheme == "https" and parts.hostname) or local):
        raise ConfigurationError(
            "graph_url must be an https:// URL (http:// only for 127.0.0.1/localhost): "
            "every request carries an access token"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigurationError("graph_url must not have credentials, a query or a fragment")
    if any(ord(ch) < 0x21 for ch in value.strip()):
        raise ConfigurationError("graph_url contains a space or a control character")
    return value.strip().rstrip("/")


@dataclass(frozen=True)
class GraphConfig:
    """Where and as whom a Graph mailer sends. The token source never shows in ``repr``."""

    username: str
    oauth2: TokenSource = field(repr=False)
    graph_url: str = DEFAULT_GRAPH_URL
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "graph_url", check_graph_url(self.graph_url))
        if not isinstance(self.username, str) or "@" not in self.username:
            raise ConfigurationError(
                'object_type="graph" needs username: the mailbox that sends (reports@contoso.com)'
            )
        if any(ord(ch) < 0x21 for ch in self.username):
            raise ConfigurationError("username contains a space or a control character")
        source = self.oauth2
        methods = (getattr(source, "token", None), getattr(source, "atoken", None))
        if source is None or not (callable(source) or any(callable(m) for m in methods)):
            raise ConfigurationError(
                'object_type="graph" needs oauth2=: a token source such as '
                'fluxmail.oauth.MicrosoftOAuth2(..., scope="https://graph.microsoft.com/.default")'
            )
        if getattr(source, "scope", None) in _SMTP_SCOPES:
            raise ConfigurationError(
                "the oauth2 provider asks for an SMTP token; Graph needs "
                'scope="https://graph.microsoft.com/.default" (app-only) or '
                '"https://graph.microsoft.com/Mail.Send offline_access" (delegated)'
            )
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)):
            raise ConfigurationError(f"timeout must be a number of seconds, got {self.timeout!r}")
        if not 0 < self.timeout <= 86400:  # also refuses NaN and infinity
            raise ConfigurationError("timeout must be a positive number of seconds up to 86400")

    def url(self, action: str) -> str:
        """``{graph_url}/users/{username}/{action}``; the address is one path segment."""
        return f"{self.graph_url}/users/{quote(self.username, safe='@')}/{action}"


def request_body(composed: Composed) -> bytes:
    """The base64 MIME body Graph takes, or the refusal of a message over its limit."""
    size = 4 * math.ceil(len(composed.data) / 3)
    if size > MAX_REQUEST_BYTES:
        raise InvalidMessageError(
            f"the message is {len(composed.data):,} bytes, {size:,} in base64: over "
            f"Microsoft Graph's {MAX_REQUEST_BYTES:,}-byte request limit (about 3 MB of "
            "message). Send large attachments as links, or use SMTP",
            code="message_too_large",
        )
    return base64.b64encode(composed.data)


def headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "text/plain",
        "Accept": "application/json",
    }


# --- what an answer means -------------------------------------------------------------------


def retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def graph_error(body: bytes) -> tuple[str | None, str]:
    """Graph's ``{"error": {"code": ..., "message": ...}}`` as (code, message)."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None, ""
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, str) and code else None,
        message.strip() if isinstance(message, str) else "",
    )


def _clip(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass(frozen=True)
class Answer:
    """One HTTP answer from Graph: its status, the headers that matter and the body."""

    status: int
    body: bytes
    retry_after: str | None = None


def failure(
    answer: Answer, what: str, composed: Composed | None, secrets: tuple[str, ...] = ()
) -> FluxMailException:
    """The error for a non-2xx answer (``what``: "sendMail", "create draft"...)."""
    code, text = graph_error(answer.body)
    detail = _clip(f"{code or 'no error code'}: {text}" if text else (code or ""), secrets)
    said = f"Microsoft Graph {what}: HTTP {answer.status}" + (f" ({detail})" if detail else "")
    if answer.status in (429, 503):
        wait = retry_after(answer.retry_after)
        after = f"; retry after {wait:g} s" if wait is not None else ""
        return GraphThrottledError(
            said + after, status=answer.status, graph_code=code, retry_after=wait
        )
    if answer.status == 401:
        return AuthenticationError(said + ": the access token was refused")
    if answer.status >= 500:
        message_id = composed.message_id if composed is not None else None
        return OutcomeUnknownError(
            said + ": Graph may or may not have taken the request; not sent again",
            message_id=message_id,
        )
    return GraphError(said, status=answer.status, graph_code=code)


def draft_link(answer: Answer) -> tuple[str, str]:
    """The ``id`` and ``webLink`` of a created draft (201)."""
    try:
        payload: Any = json.loads(answer.body)
    except ValueError:
        payload = None
    ident = payload.get("id") if isinstance(payload, Mapping) else None
    link = payload.get("webLink") if isinstance(payload, Mapping) else None
    if not isinstance(ident, str) or not isinstance(link, str) or not ident:
        raise GraphError(
            "Microsoft Graph created the draft but its answer has no id and webLink",
            status=answer.status,
        )
    return ident, link


# --- what a failed exchange means ---------------------------------------------------------------


def accepted_result(composed: Composed, status: int) -> SendResult:
    """Graph took the message for every recipient of its headers (To, Cc, Bcc)."""
    return SendResult(
        message_id=composed.message_id,
        accepted=composed.envelope.rcpt_to,
        refused={},
        smtp_code=250,  # an SMTP-shaped result: "accepted"; the HTTP status is in the text
        server_message=f"{status} Accepted by Microsoft Graph",
    )


def _chain_has(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def translate(
    exc: Exception, config: GraphConfig, what: str, composed: Composed | None
) -> FluxMailException:
    """One httpx failure as the fluxmail error that says whether the request went out."""
    import httpx

    where = f"Microsoft Graph {what} ({config.graph_url})"
    kind = type(exc).__name__
    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout)):
        return SendTimeoutError(f"{where}: {kind} before the request was complete; not sent")
    if isinstance(exc, httpx.ConnectError) and _chain_has(exc, ssl.SSLCertVerificationError):
        return TLSVerifyError(f"{where}: the server's certificate did not verify")
    if isinstance(exc, (httpx.ConnectError, httpx.WriteError)):
        return ConnectError(f"{where}: {kind} before the request was complete; not sent")
    if isinstance(exc, (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)):
        return unknown(config, what, composed, f"{kind} after the request went out")
    return ProtocolError(f"{where}: {kind}")


def unknown(
    config: GraphConfig, what: str, composed: Composed | None, why: str
) -> OutcomeUnknownError:
    return OutcomeUnknownError(
        f"Microsoft Graph {what}: {why}; Graph may or may not have taken it, so it is not "
        "sent again",
        message_id=composed.message_id if composed is not None else None,
    )


# --- the throttle -------------------------------------------------------------------------------


class Throttle:
    """When Graph said "wait" (429/503 with Retry-After), every request of the mailer waits
    until then, not only the one that was refused: the limit is per app and mailbox.
    A wait is bounded by the mailer's timeout. Thread-safe; the clock is injectable."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0

    def hold(self, seconds: float | None, cap: float) -> None:
        """Graph asked for ``seconds`` (None: it did not say; then one second)."""
        wait = min(1.0 if seconds is None else seconds, cap)
        with self._lock:
            self._until = max(self._until, self._clock() + wait)

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - self._clock())
