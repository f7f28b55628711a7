"""SASL mechanisms for SMTP AUTH, as sans-IO sub-conversations.

Each mechanism is a function ``(ask, username, password) -> conversation`` returning the
server's final reply; ``ask`` performs one :class:`~fluxmail.smtp._protocol.Exchange`.
Credential-bearing lines are logged as ``[redacted]``. Adding XOAUTH2 later means adding
one function here and its name to :data:`AUTH_PREFERENCE`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping

from ._actions import CRLF, Ask, Conversation, Exchange
from ._replies import Reply

Mechanism = Callable[[Ask, str, str], Conversation[Reply]]

REDACTED = "[redacted]"


def _b64(value: bytes) -> bytes:
    return base64.b64encode(value)


def secrets_of(username: str, password: str) -> tuple[str, ...]:
    """Every form of the password that might end up in a server's echo."""
    forms = [password]
    plain = b"\0" + username.encode() + b"\0" + password.encode()
    forms.append(_b64(plain).decode())
    forms.append(_b64(password.encode()).decode())
    return tuple(f for f in forms if f)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def auth_plain(ask: Ask, username: str, password: str) -> Conversation[Reply]:
    token = _b64(b"\0" + username.encode() + b"\0" + password.encode())
    replies = yield from ask(
        Exchange(b"AUTH PLAIN " + token + CRLF, 1, "auth", log=f"AUTH PLAIN {REDACTED}")
    )
    if replies and replies[0].code == 334:  # the server wants the response on its own line
        replies = yield from ask(Exchange(token + CRLF, 1, "auth", log=REDACTED))
    return replies[0]


def auth_login(ask: Ask, username: str, password: str) -> Conversation[Reply]:
    replies = yield from ask(Exchange(b"AUTH LOGIN\r\n", 1, "auth"))
    for secret in (username, password):
        if replies[0].code != 334:
            break
        data = _b64(secret.encode()) + CRLF
        replies = yield from ask(Exchange(data, 1, "auth", log=REDACTED))
    return replies[0]


AUTH_PREFERENCE: tuple[str, ...] = ("PLAIN", "LOGIN")
AUTHENTICATORS: Mapping[str, Mechanism] = {"PLAIN": auth_plain, "LOGIN": auth_login}
