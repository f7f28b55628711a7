"""Moved to :mod:`fluxmail.smtp._tokens` (the engine owns its inputs); kept as a re-export
until every import points there."""

from .smtp._tokens import (
    ASYNC_ONLY,
    AsyncTokenProvider,
    TokenProvider,
    TokenSettings,
    TokenSource,
    aget_token,
    aopen_with_token,
    check_oauth2,
    get_token,
    invalidate,
    open_with_token,
    token_refused,
)

__all__ = [
    "ASYNC_ONLY",
    "AsyncTokenProvider",
    "TokenProvider",
    "TokenSettings",
    "TokenSource",
    "aget_token",
    "aopen_with_token",
    "check_oauth2",
    "get_token",
    "invalidate",
    "open_with_token",
    "token_refused",
]
