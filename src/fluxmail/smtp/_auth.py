"""SASL mechanisms for SMTP AUTH, as sans-IO sub-conversations.

Each mechanism is a function ``(ask, credentials) -> conversation`` returning the
server's final reply; ``ask`` performs one :class:`~fluxmail.smtp._protocol.Exchange`.
Credential-bearing lines are logged as ``[redacted]``.

Password mechanisms: PLAIN, then LOGIN. OAuth2 mechanisms (the secret is an access
token): XOAUTH2 (Google's, also spoken by Microsoft 365), then OAUTHBEARER (RFC 7628).
XOAUTH2 comes first because both big providers advertise it, Microsoft only it. With an
OAuth2 token there is never a fallback to PLAIN or LOGIN, and with a password never to
the bearer mechanisms.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from ._actions import CRLF, Ask, Conversation, Exchange
from ._replies import Reply

if TYPE_CHECKING:
    from ._options import SmtpConfig

REDACTED = "[redacted]"
_STATUS = re.compile(r"[A-Za-z0-9_.-]{1,40}")


@dataclass(frozen=True)
class Credentials:
    """Who logs in and with what: a password, or an OAuth2 access token (``oauth``).

    ``host`` and ``port`` are the server's, which OAUTHBEARER sends along.
    """

    username: str
    secret: str = field(repr=False)
    oauth: bool = False
    host: str = ""
    port: int = 0

    @classmethod
    def of(cls, config: SmtpConfig, token: str | None = None) -> Credentials:
        oauth = config.oauth2 is not None
        secret = (token or "") if oauth else (config.password or "")
        return cls(config.username or "", secret, oauth, config.host, config.port)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms these credentials can use, in order of preference."""
        return OAUTH_PREFERENCE if self.oauth else AUTH_PREFERENCE

    @cached_property
    def secrets(self) -> tuple[str, ...]:
        """Every form of the secret that might end up in a server's echo."""
        forms = list(secrets_of(self.username, self.secret))
        if self.oauth and self.secret:
            forms += [
                xoauth2_response(self.username, self.secret).decode(),
                oauthbearer_response(self.username, self.secret, self.host, self.port).decode(),
            ]
        return tuple(forms)


Mechanism = Callable[[Ask, Credentials], Conversation[Reply]]


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


# --- password mechanisms ----------------------------------------------------------------


def auth_plain(ask: Ask, creds: Credentials) -> Conversation[Reply]:
    token = _b64(b"\0" + creds.username.encode() + b"\0" + creds.secret.encode())
    replies = yield from ask(
        Exchange(b"AUTH PLAIN " + token + CRLF, 1, "auth", log=f"AUTH PLAIN {REDACTED}")
    )
    if replies and replies[0].code == 334:  # the server wants the response on its own line
        replies = yield from ask(Exchange(token + CRLF, 1, "auth", log=REDACTED))
    return replies[0]


def auth_login(ask: Ask, creds: Credentials) -> Conversation[Reply]:
    replies = yield from ask(Exchange(b"AUTH LOGIN\r\n", 1, "auth"))
    for secret in (creds.username, creds.secret):
        if replies[0].code != 334:
            break
        data = _b64(secret.encode()) + CRLF
        replies = yield from ask(Exchange(data, 1, "auth", log=REDACTED))
    return replies[0]


# --- OAuth2 bearer mechanisms ------------------------------------------------------------


def xoauth2_response(username: str, token: str) -> bytes:
    """``base64("user=<username>^Aauth=Bearer <token>^A^A")`` (Google's XOAUTH2)."""
    return _b64(f"user={username}\x01auth=Bearer {token}\x01\x01".encode())


def _saslname(value: str) -> str:
    """RFC 5801 saslname: ``,`` and ``=`` escaped as ``=2C`` and ``=3D``."""
    return value.replace("=", "=3D").replace(",", "=2C")


def oauthbearer_response(username: str, token: str, host: str, port: int) -> bytes:
    """RFC 7628 initial client response: a GS2 header, then host, port and the token."""
    gs2 = f"n,a={_saslname(username)}," if username else "n,,"
    fields = f"\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return _b64((gs2 + fields).encode())


def _oauth_status(reply: Reply) -> str | None:
    """The ``status`` of the JSON error a server sends in a 334 challenge, if it is sane."""
    try:
        data = json.loads(base64.b64decode(reply.text.strip(), validate=True))
    except (binascii.Error, ValueError):
        return None
    status = data.get("status") if isinstance(data, dict) else None
    return status if isinstance(status, str) and _STATUS.fullmatch(status) else None


def _bearer(ask: Ask, name: str, response: bytes, dummy: bytes) -> Conversation[Reply]:
    """Send the initial response; answer an error challenge (334 + base64 JSON) with
    ``dummy``, as the mechanism requires, to get the server's final reply."""
    replies = yield from ask(
        Exchange(
            f"AUTH {name} ".encode() + response + CRLF, 1, "auth", log=f"AUTH {name} {REDACTED}"
        )
    )
    reply = replies[0]
    if reply.code == 334 and not reply.text.strip():  # wants the response on its own line
        replies = yield from ask(Exchange(response + CRLF, 1, "auth", log=REDACTED))
        reply = replies[0]
    if reply.code != 334:
        return reply
    status = _oauth_status(reply)
    replies = yield from ask(Exchange(dummy + CRLF, 1, "auth", log=dummy.decode() or "<empty>"))
    reply = replies[0]
    if status is not None and reply.code != 235:
        reply = Reply(reply.code, (*reply.lines, f"(OAuth2 error status: {status})"))
    return reply


def auth_xoauth2(ask: Ask, creds: Credentials) -> Conversation[Reply]:
    """XOAUTH2: after an error challenge the client sends an empty line."""
    response = xoauth2_response(creds.username, creds.secret)
    return (yield from _bearer(ask, "XOAUTH2", response, b""))


def auth_oauthbearer(ask: Ask, creds: Credentials) -> Conversation[Reply]:
    """OAUTHBEARER (RFC 7628): after an error challenge the client sends ``%x01``."""
    response = oauthbearer_response(creds.username, creds.secret, creds.host, creds.port)
    return (yield from _bearer(ask, "OAUTHBEARER", response, _b64(b"\x01")))


AUTH_PREFERENCE: tuple[str, ...] = ("PLAIN", "LOGIN")
OAUTH_PREFERENCE: tuple[str, ...] = ("XOAUTH2", "OAUTHBEARER")
AUTHENTICATORS: Mapping[str, Mechanism] = {
    "PLAIN": auth_plain,
    "LOGIN": auth_login,
    "XOAUTH2": auth_xoauth2,
    "OAUTHBEARER": auth_oauthbearer,
}
