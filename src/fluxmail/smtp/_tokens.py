"""OAuth2 token sources: what ``oauth2=`` accepts, and how the SMTP drivers call it.

A token source is a callable returning an access token (``def get() -> str`` or
``async def get() -> str``), or a provider object with ``token()`` and/or ``atoken()``
and, optionally, ``invalidate()`` (the built-ins of :mod:`fluxmail.oauth` have all
three). The blocking driver needs a token without an event loop: an async-only source
there is a :class:`~fluxmail.errors.ConfigurationError`. The asyncio driver awaits
``atoken()`` or an async callable, and calls a sync one directly (it may block the loop
for as long as it takes).

After the server refused a token (a 5xx reply to AUTH), the drivers call
``invalidate()``, fetch a token again and retry AUTH once on a new connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from ..errors import AuthenticationError, ConfigurationError, FluxMailException

T = TypeVar("T")
log = logging.getLogger("fluxmail.oauth")
_RETRYING = "SMTP server %s refused the OAuth2 token; fetching a new one and trying once more"


class TokenProvider(Protocol):
    """A provider that hands out access tokens, cached as it sees fit.

    It may also have ``atoken()`` (used by the asyncio driver) and ``invalidate()``
    (called when the server refused its token, before asking for a new one).
    """

    def token(self) -> str: ...


class AsyncTokenProvider(Protocol):
    """The asyncio flavour of :class:`TokenProvider` (``invalidate()`` optional too)."""

    async def atoken(self) -> str: ...


TokenSource = Callable[[], str] | Callable[[], Awaitable[str]] | TokenProvider | AsyncTokenProvider


class TokenSettings(Protocol):
    """What opening a session with a token needs to know (``SmtpConfig`` has both)."""

    @property
    def host(self) -> str: ...

    @property
    def oauth2(self) -> TokenSource | None: ...


ASYNC_ONLY = (
    "the oauth2 token provider is async-only, and send()/test_connection()/send_batch() "
    "need a token without an event loop: give a provider with a sync token() method (the "
    "built-in GoogleOAuth2 and MicrosoftOAuth2 have both), a plain function, or use "
    "send_async()/send_batch_async()"
)


def check_oauth2(source: object, *, username: str | None, password: str | None) -> None:
    """Refuse an ``oauth2=`` setting that cannot work, before anything is sent."""
    methods = (getattr(source, "token", None), getattr(source, "atoken", None))
    if not callable(source) and not any(callable(m) for m in methods):
        raise ConfigurationError(
            "oauth2 must be a function returning an access token (sync or async) or a "
            "provider with token()/atoken(), such as fluxmail.oauth.GoogleOAuth2"
        )
    if not username:
        raise ConfigurationError(
            "oauth2 needs username: the mailbox the token belongs to (user@example.com)"
        )
    if "\x01" in username:
        raise ConfigurationError("username contains a control character")
    if password is not None:
        raise ConfigurationError(
            "give either password or oauth2, not both: with oauth2, fluxmail "
            "authenticates only with the token (XOAUTH2/OAUTHBEARER), never PLAIN/LOGIN"
        )


def _checked(value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(
            f"the oauth2 token provider returned {type(value).__name__}, not a str"
        )
    if not value or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value):
        raise ConfigurationError(
            "the oauth2 token provider returned an empty token or one with spaces or "
            "control characters"
        )
    return value


def _provider_failed(exc: Exception) -> AuthenticationError:
    # Only the type: the message of someone else's exception might quote a secret.
    return AuthenticationError(
        f"the oauth2 token provider failed ({type(exc).__name__}); see the chained error"
    )


def _call(function: Callable[[], Any]) -> Any:
    try:
        return function()
    except FluxMailException:
        raise
    except Exception as exc:
        raise _provider_failed(exc) from exc


def get_token(source: TokenSource) -> str:
    """A token for the blocking driver."""
    method: Any = getattr(source, "token", None)
    if not callable(method):
        if callable(getattr(source, "atoken", None)):
            raise ConfigurationError(ASYNC_ONLY)
        method = source
    value = _call(method)
    if isinstance(value, Awaitable):
        if isinstance(value, Coroutine):
            value.close()  # never awaited: no "coroutine was never awaited" warning
        raise ConfigurationError(ASYNC_ONLY)
    return _checked(value)


async def aget_token(source: TokenSource) -> str:
    """A token for the asyncio driver."""
    method: Any = getattr(source, "atoken", None)
    if not callable(method):
        method = getattr(source, "token", None)
    if not callable(method):
        method = source
    value = _call(method)
    if isinstance(value, Awaitable):
        try:
            value = await value
        except FluxMailException:
            raise
        except Exception as exc:
            raise _provider_failed(exc) from exc
    return _checked(value)


def invalidate(source: TokenSource) -> None:
    """Tell the provider that the server refused its token (if it wants to know)."""
    method = getattr(source, "invalidate", None)
    if callable(method):
        _call(method)


def token_refused(exc: AuthenticationError) -> bool:
    """The server refused the credentials (5xx to AUTH): a fresh token may fix that."""
    return exc.smtp_code is not None and 500 <= exc.smtp_code < 600


def open_with_token(config: TokenSettings, attempt: Callable[[str | None], T]) -> T:
    """``attempt(token)`` opens a session (blocking). With OAuth2: if the server refuses
    the token, invalidate it, fetch a new one and try once more on a new connection."""
    source = config.oauth2
    if source is None:
        return attempt(None)
    try:
        return attempt(get_token(source))
    except AuthenticationError as exc:
        if not token_refused(exc):
            raise
    log.info(_RETRYING, config.host)
    invalidate(source)
    return attempt(get_token(source))


async def aopen_with_token(
    config: TokenSettings, attempt: Callable[[str | None], Awaitable[T]]
) -> T:
    """The asyncio twin of :func:`open_with_token`."""
    source = config.oauth2
    if source is None:
        return await attempt(None)
    try:
        return await attempt(await aget_token(source))
    except AuthenticationError as exc:
        if not token_refused(exc):
            raise
    log.info(_RETRYING, config.host)
    invalidate(source)
    return await attempt(await aget_token(source))
