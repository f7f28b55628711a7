"""The type rules for public arguments, checked where they are given.

A wrong type must fail where the caller gave it, as a :class:`ConfigurationError`
(code ``invalid_option``) naming the option, never as a bare ``TypeError`` deep in a
send, and never by being taken for something else: ``"false"`` is a true value to
``bool()``, so a string given for ``allow_insecure_auth`` would send the password in
plaintext. Booleans are ``bool`` only; in the environment only the documented words count
(``fluxmail._env``). Numbers are never ``bool``, NaN or infinite. The module lives in the
engine's package because ``SmtpConfig`` checks its own fields with it; it imports nothing
but ``fluxmail.errors``.

Error texts show the type of a wrong text value, never the value: it may be a password.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigurationError


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def flag(name: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False``; anything else names ``name``."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {_shown(value)}")
    return value


def optional_flag(name: str, value: object) -> bool | None:
    """``None``, ``True`` or ``False``."""
    return None if value is None else flag(name, value)


def text(name: str, value: object) -> str | None:
    """``None`` or a string (the type is named, the value never: it may be a secret)."""
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    return value


def rate(name: str, value: object) -> float:
    """A finite number >= 0 (0: no limit), not a bool."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(
            f"{name} must be a number >= 0 (0 means no limit), got {_shown(value)}"
        )
    return float(value)


def ssl_context(name: str, value: object) -> Any:
    """``None`` or an ``ssl.SSLContext`` (``ssl`` is imported only when one is given)."""
    if value is None:
        return None
    import ssl

    if not isinstance(value, ssl.SSLContext):
        raise ConfigurationError(f"{name} must be an ssl.SSLContext, got {type(value).__name__}")
    return value


def smtp_options(config: Any) -> None:
    """The types of an ``SmtpConfig`` (its value rules follow in ``__post_init__``)."""
    for option in ("use_tls", "use_ssl", "allow_insecure_auth"):
        flag(option, getattr(config, option))
    for option in ("username", "password", "local_hostname"):
        text(option, getattr(config, option))
    ssl_context("ssl_context", config.ssl_context)
