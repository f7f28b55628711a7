"""OAuth2 access tokens for SMTP AUTH (XOAUTH2, OAUTHBEARER).

``FluxMail(..., username="me@gmail.com", oauth2=provider)`` authenticates with an access
token instead of a password. ``provider`` is any function returning a token (sync or
async) or one of the providers here, which turn a long-lived credential into short-lived
access tokens at the provider's token endpoint (RFC 6749) and cache them. Building one
contacts nothing; the first token is asked for at the first AUTH:

```python
google = GoogleOAuth2("client-id", "client-secret", "refresh-token")
delegated = MicrosoftOAuth2("contoso.onmicrosoft.com", "client-id", refresh_token="rt")
app_only = MicrosoftOAuth2("contoso.onmicrosoft.com", "client-id", "client-secret")
assert (delegated.grant, app_only.grant) == ("refresh_token", "client_credentials")
gmail = FluxMail(host="smtp.gmail.com", port=587, use_tls=True,
                 username="me@gmail.com", oauth2=google)
```

A token is kept until shortly before it expires (``expires_in`` less a minute, or less
half its lifetime for short ones). ``token()`` is thread-safe and ``atoken()`` task-safe:
concurrent callers share one request. ``invalidate()`` drops the cached token; the SMTP
engine calls it when the server refuses the token, then asks for a new one and retries
once. The HTTP requests use httpx (``pip install -e ".[oauth]"``). Refresh tokens,
client secrets and access tokens never appear in ``repr``, errors or logs, in any
encoding (an endpoint that echoes its URL-encoded request form is redacted too).

A token request has one deadline, ``timeout`` seconds for all of it (connecting, the
headers, the body), however slowly the endpoint trickles its answer; the answer is read
up to :data:`MAX_RESPONSE` bytes and the token may be :data:`MAX_TOKEN` characters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import AuthenticationError, ConfigurationError, MissingDependencyError
from .smtp._redact import Secrets
from .smtp._tokens import AsyncTokenProvider, TokenProvider, TokenSource

__all__ = [
    "AsyncTokenProvider",
    "GoogleOAuth2",
    "MicrosoftOAuth2",
    "RefreshingTokenProvider",
    "TokenProvider",
    "TokenSource",
]

log = logging.getLogger("fluxmail.oauth")

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"  # noqa: S105
#: Delegated SMTP sending (a user's refresh token) and app-only (client credentials).
MICROSOFT_DELEGATED_SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"
#: The same two for Microsoft Graph (object_type="graph", the Mail.Send permission).
GRAPH_DELEGATED_SCOPE = "https://graph.microsoft.com/Mail.Send offline_access"
GRAPH_APP_SCOPE = "https://graph.microsoft.com/.default"
REFRESH_MARGIN = 60.0  # seconds before expiry a cached token is replaced
DEFAULT_LIFETIME = 300.0  # when the endpoint does not say (no expires_in)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: A token endpoint answers in a few KB (Microsoft's tokens are about 2 KB); more is
#: refused unread, so that a broken or hostile endpoint cannot fill the memory.
MAX_RESPONSE = 64 * 1024
#: The longest access token sent to the SMTP server (one AUTH line).
MAX_TOKEN = 16 * 1024
#: RFC 6750 b64token, a little wider: visible ASCII, no spaces (never CR/LF in AUTH).
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
T = TypeVar("T")


class _TooLarge(Exception):
    """The answer passed MAX_RESPONSE bytes (reading stopped there)."""


def _require_httpx() -> None:
    try:
        import httpx  # noqa: F401
    except ImportError:
        raise MissingDependencyError("OAuth2 token refresh", "oauth", "httpx") from None


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string")
    if any(ord(ch) < 0x20 for ch in value):
        raise ConfigurationError(f"{name} contains a control character")
    return value


def _check_url(token_url: object) -> str:
    """https only, except on the loopback interface (a local test endpoint)."""
    url = _text("token_url", token_url)
    parts = urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in _LOOPBACK
    if not (parts.scheme == "https" and parts.hostname) and not local:
        raise ConfigurationError(
            "token_url must be an https:// URL (http:// only for 127.0.0.1/localhost): "
            "the request carries the client secret and the refresh token"
        )
    return url


class RefreshingTokenProvider:
    """Base of the built-in providers: an OAuth2 token request, a cache and its locks.

    Subclasses give :meth:`_form` (the grant's parameters) and :meth:`_secrets`.
    ``clock`` (monotonic seconds) can be replaced in tests.
    """

    name = "OAuth2"

    def __init__(
        self,
        token_url: str,
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = _check_url(token_url)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigurationError("timeout must be a positive number of seconds")
        self.timeout = float(timeout)
        self._clock = clock
        self._cached: tuple[str, float] | None = None  # (token, replace after this time)
        self._state = threading.Lock()  # guards the cache; never held across I/O
        self._fetching = threading.Lock()  # one sync request at a time
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._async_locks = weakref.WeakKeyDictionary()
        _require_httpx()

    # --- what subclasses give ------------------------------------------------------

    def _form(self) -> dict[str, str]:
        raise NotImplementedError

    def _secrets(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _took(self, payload: Mapping[str, Any]) -> None:
        """Called with a successful response (a rotated refresh token, for instance)."""

    # --- the public interface ------------------------------------------------------

    def token(self) -> str:
        """A valid access token, from the cache or a new request (blocking)."""
        cached = self._valid()
        if cached is not None:
            return cached
        with self._fetching:
            cached = self._valid()
            if cached is not None:
                return cached
            return self._store(self._fetch())

    async def atoken(self) -> str:
        """A valid access token, from the cache or a new request (asyncio)."""
        cached = self._valid()
        if cached is not None:
            return cached
        async with self._async_lock():
            cached = self._valid()
            if cached is not None:
                return cached
            return self._store(await self._afetch())

    def invalidate(self) -> None:
        """Forget the cached token: the next call asks the endpoint for a new one."""
        with self._state:
            self._cached = None

    # --- cache -------------------------------------------------------------------------

    def _valid(self) -> str | None:
        with self._state:
            cached = self._cached
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        return None

    def _store(self, answer: tuple[str, float]) -> str:
        token, lifetime = answer
        margin = min(REFRESH_MARGIN, lifetime / 2)
        with self._state:
            self._cached = (token, self._clock() + lifetime - margin)
        log.debug("%s: new access token from %s, valid %g s", self.name, self._host, lifetime)
        return token

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state:
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = self._async_locks[loop] = asyncio.Lock()
            return lock

    # --- HTTP ----------------------------------------------------------------------------

    @property
    def _host(self) -> str:
        return urlsplit(self.token_url).netloc

    def _fetch(self) -> tuple[str, float]:
        """The blocking request: the asyncio one in a private event loop, so that the
        deadline covers every byte (httpx's own timeouts are per read)."""
        return _run_sync(self._afetch)

    async def _afetch(self) -> tuple[str, float]:
        import httpx

        try:
            status, body = await asyncio.wait_for(self._post(), self.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
            raise self._unreachable(exc) from exc
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        except _TooLarge:
            raise self._refused(0, f"the answer is larger than {MAX_RESPONSE} bytes") from None
        return self._answer(status, body)

    async def _post(self) -> tuple[int, bytes]:
        import httpx

        async with (
            httpx.AsyncClient(timeout=self.timeout) as client,
            client.stream("POST", self.token_url, data=self._form(), headers=_HEADERS) as reply,
        ):
            declared = reply.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_RESPONSE:
                raise _TooLarge
            body = bytearray()
            async for chunk in reply.aiter_bytes():  # decoded: a gzip bomb stops too
                body += chunk
                if len(body) > MAX_RESPONSE:
                    raise _TooLarge
            return reply.status_code, bytes(body)

    def _unreachable(self, exc: Exception) -> AuthenticationError:
        import httpx

        if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
            why = f"no answer within {self.timeout:g} s"
        else:
            why = f"the request failed ({type(exc).__name__})"
        return AuthenticationError(
            f"{self.name} token endpoint {self._host}: {why}", transient=True
        )

    def _answer(self, status: int, body: bytes) -> tuple[str, float]:
        """The access token and its lifetime in seconds, or AuthenticationError."""
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise self._refused(status, "the answer is not a JSON object")
        if status != 200:
            error = payload.get("error")
            what = error if isinstance(error, str) else "no error code"
            description = payload.get("error_description")
            if isinstance(description, str) and description.strip():
                what += f": {description.strip()}"
            raise self._refused(status, what)
        token = payload.get("access_token")
        kind = payload.get("token_type", "Bearer")
        if not isinstance(token, str) or not token or not isinstance(kind, str):
            raise self._refused(status, "the answer has no access_token")
        if len(token) > MAX_TOKEN:
            raise self._refused(status, f"the access_token is longer than {MAX_TOKEN} characters")
        if not _TOKEN_CHARS.fullmatch(token):
            raise self._refused(status, "the access_token has characters a token cannot have")
        if kind.lower() != "bearer":
            raise self._refused(status, "the token is not a Bearer token")
        self._took(payload)
        return token, _lifetime(payload.get("expires_in"))

    def _refused(self, status: int, what: str) -> AuthenticationError:
        what = Secrets.of(*self._secrets()).redact(what)  # before cutting: no half secret
        if len(what) > 300:
            what = what[:297] + "..."
        answered = f"answered HTTP {status}" if status else "answered"
        return AuthenticationError(
            f"{self.name} token endpoint {self._host} {answered} ({what})",
            transient=status >= 500 or status == 429,
        )


_HEADERS = {"Accept": "application/json"}


def _run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from blocking code: in a new event loop here, or in
    a helper thread when this thread already runs one (a blocking send() in async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1, thread_name_prefix="fluxmail-oauth") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _lifetime(value: object) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME
    return seconds if 0 < seconds < 10**7 else DEFAULT_LIFETIME


class GoogleOAuth2(RefreshingTokenProvider):
    """Access tokens for Gmail / Google Workspace SMTP from a refresh token.

    The refresh token must have been granted the ``https://mail.google.com/`` scope.
    Use with ``host="smtp.gmail.com", port=587, use_tls=True, username=<the address>``.
    The secrets never show in ``repr``, errors or logs. ``token()`` / ``atoken()`` give
    a cached access token (thread- and task-safe); ``invalidate()`` forgets it.

    Args:
        client_id: the OAuth client's ID.
        client_secret: the OAuth client's secret.
        refresh_token: the user's refresh token.
        token_url: the token endpoint (Google's by default; ``http://`` only on loopback).
        timeout: seconds for a whole token request.
        clock: monotonic seconds (tests replace it).

    Raises:
        ConfigurationError: ``invalid_option``: an empty or non-string value, a token
            URL that is not ``https://``, a bad timeout.
        MissingDependencyError: ``missing_dependency``: httpx (the ``oauth`` extra).
        AuthenticationError: ``authentication_failed``, from ``token()``: the endpoint
            refused the grant or could not be reached.

    Example:
        ```python
        provider = GoogleOAuth2("client-id", os.environ["SMTP_PASSWORD"], "refresh-token")
        assert "example-password" not in repr(provider)
        mailer = FluxMail(host="smtp.gmail.com", port=587, use_tls=True,
                          username="me@gmail.com", oauth2=provider)
        ```
    """

    name = "Google OAuth2"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        *,
        token_url: str = GOOGLE_TOKEN_URL,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = _text("client_id", client_id)
        self._client_secret = _text("client_secret", client_secret)
        self._refresh_token = _text("refresh_token", refresh_token)
        super().__init__(token_url, timeout=timeout, clock=clock)

    def __repr__(self) -> str:
        return f"GoogleOAuth2(client_id={self.client_id!r})"

    def _form(self) -> dict[str, str]:
        with self._state:
            refresh_token = self._refresh_token
        return {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "refresh_token": refresh_token,
        }

    def _secrets(self) -> tuple[str, ...]:
        return (self._client_secret, self._refresh_token)


class MicrosoftOAuth2(RefreshingTokenProvider):
    """Access tokens for Microsoft 365 / Outlook.com SMTP (``smtp.office365.com``).

    With ``refresh_token``: the delegated flow, a user's refresh token (scope
    ``https://outlook.office.com/SMTP.Send offline_access``; ``client_secret`` only for
    confidential apps). Microsoft rotates refresh tokens: the newest one is kept in
    memory (:attr:`refresh_token_rotated` tells when it changed).
    Without it: the client credentials grant (app-only, ``client_secret`` required,
    scope ``https://outlook.office365.com/.default``); the app needs the SMTP.SendAsApp
    permission and access to the mailbox named by ``username``.

    Args:
        tenant: the tenant ID or domain (``contoso.onmicrosoft.com``).
        client_id: the app registration's client ID.
        client_secret: its secret (required without ``refresh_token``).
        refresh_token: a user's refresh token (the delegated flow).
        scope: the scope asked for (defaults per flow, above; Graph wants
            ``https://graph.microsoft.com/.default``).
        token_url: the token endpoint (Microsoft's for ``tenant`` by default).
        timeout: seconds for a whole token request.
        clock: monotonic seconds (tests replace it).

    Raises:
        ConfigurationError: ``invalid_option``: neither ``refresh_token`` nor
            ``client_secret``, a malformed tenant, a non-https token URL.
        MissingDependencyError: ``missing_dependency``: httpx (the ``oauth`` extra).
        AuthenticationError: ``authentication_failed``, from ``token()``.

    Example:
        ```python
        provider = MicrosoftOAuth2("contoso.onmicrosoft.com", "client-id", "client-secret")
        assert provider.grant == "client_credentials"
        assert provider.scope == "https://outlook.office365.com/.default"
        mailer = FluxMail(host="smtp.office365.com", port=587, use_tls=True,
                          username="shared@contoso.com", oauth2=provider)
        ```
    """

    name = "Microsoft OAuth2"

    def __init__(
        self,
        tenant: str,
        client_id: str,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        *,
        scope: str | None = None,
        token_url: str | None = None,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tenant = _text("tenant", tenant)
        if not all(ch.isalnum() or ch in ".-_" for ch in tenant):
            raise ConfigurationError("tenant must be a tenant ID or domain name")
        self.client_id = _text("client_id", client_id)
        self._client_secret = (
            None if client_secret is None else _text("client_secret", client_secret)
        )
        self._refresh_token = (
            None if refresh_token is None else _text("refresh_token", refresh_token)
        )
        if self._refresh_token is None and self._client_secret is None:
            raise ConfigurationError(
                "MicrosoftOAuth2 needs refresh_token (delegated) or client_secret (client "
                "credentials)"
            )
        self.grant = "refresh_token" if self._refresh_token else "client_credentials"
        default = MICROSOFT_DELEGATED_SCOPE if self._refresh_token else MICROSOFT_APP_SCOPE
        self.scope = default if scope is None else _text("scope", scope)
        self.refresh_token_rotated = False
        url = token_url if token_url is not None else MICROSOFT_TOKEN_URL.format(tenant=tenant)
        super().__init__(url, timeout=timeout, clock=clock)

    def __repr__(self) -> str:
        return (
            f"MicrosoftOAuth2(tenant={self.tenant!r}, client_id={self.client_id!r}, "
            f"grant={self.grant!r})"
        )

    @property
    def refresh_token(self) -> str | None:
        """The current refresh token (after a rotation, the new one: save it)."""
        with self._state:
            return self._refresh_token

    def _form(self) -> dict[str, str]:
        form = {"grant_type": self.grant, "client_id": self.client_id, "scope": self.scope}
        with self._state:
            if self._refresh_token is not None:
                form["refresh_token"] = self._refresh_token
        if self._client_secret is not None:
            form["client_secret"] = self._client_secret
        return form

    def _secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._client_secret, self._refresh_token) if s)

    def _took(self, payload: Mapping[str, Any]) -> None:
        rotated = payload.get("refresh_token")
        if self.grant == "refresh_token" and isinstance(rotated, str) and rotated:
            with self._state:
                if rotated != self._refresh_token:
                    self._refresh_token = rotated
                    self.refresh_token_rotated = True


def provider_from_env(
    environ: Mapping[str, str], *, graph: bool = False
) -> RefreshingTokenProvider | None:
    """The token provider the ``FLUXMAIL_OAUTH2_*`` variables describe, or None.

    ``FLUXMAIL_OAUTH2_PROVIDER`` is ``google`` or ``microsoft``; then
    ``FLUXMAIL_OAUTH2_CLIENT_ID``, ``FLUXMAIL_OAUTH2_CLIENT_SECRET``,
    ``FLUXMAIL_OAUTH2_REFRESH_TOKEN`` (Google: all three; Microsoft: a refresh token for
    the delegated flow, or a client secret alone for client credentials) and
    ``FLUXMAIL_OAUTH2_TENANT`` (Microsoft). ``FLUXMAIL_OAUTH2_TOKEN_URL`` overrides the
    token endpoint, ``FLUXMAIL_OAUTH2_SCOPE`` Microsoft's scope (with ``graph``, the
    default is a Graph scope). Errors name the variable, never its value.
    """
    kind = (environ.get("FLUXMAIL_OAUTH2_PROVIDER") or "").strip().lower()
    if not kind:
        return None

    def optional(name: str) -> str | None:
        value = environ.get(f"FLUXMAIL_OAUTH2_{name}")
        return value.strip() if value and value.strip() else None

    def required(name: str) -> str:
        value = optional(name)
        if value is None:
            raise ConfigurationError(
                f"FLUXMAIL_OAUTH2_{name} is not set (needed with FLUXMAIL_OAUTH2_PROVIDER={kind})"
            )
        return value

    token_url = optional("TOKEN_URL")
    if kind == "google":
        return GoogleOAuth2(
            required("CLIENT_ID"),
            required("CLIENT_SECRET"),
            required("REFRESH_TOKEN"),
            token_url=token_url or GOOGLE_TOKEN_URL,
        )
    if kind == "microsoft":
        scope = optional("SCOPE")
        if scope is None and graph:
            scope = GRAPH_DELEGATED_SCOPE if optional("REFRESH_TOKEN") else GRAPH_APP_SCOPE
        return MicrosoftOAuth2(
            required("TENANT"),
            required("CLIENT_ID"),
            optional("CLIENT_SECRET"),
            optional("REFRESH_TOKEN"),
            scope=scope,
            token_url=token_url,
        )
    raise ConfigurationError("FLUXMAIL_OAUTH2_PROVIDER must be 'google' or 'microsoft'")
