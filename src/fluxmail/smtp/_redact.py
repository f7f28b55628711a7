"""Every form of every secret, and the one function that takes them out of text.

A hostile or broken server can echo what it was sent: the password, its base64 (AUTH
LOGIN), the AUTH PLAIN token, the XOAUTH2 or OAUTHBEARER response, the bearer token, or
any of these URL-encoded or JSON-escaped (an OAuth2 token endpoint). :class:`Secrets`
knows all those forms for one session; :meth:`Secrets.redact` replaces each with
``[redacted]``. The SMTP session applies it to every reply the moment it arrives
(``Session.ask``), so the exception texts, ``.server_message``, ``refused`` maps, logs,
batch results, the CLI and the Django backend only ever see redacted text.

Matching ignores case: a URL-encoding may come back as ``%2f`` instead of ``%2F``, and
redacting a little more than needed is harmless. Base64 forms are matched with and
without their ``=`` padding.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar
from urllib.parse import quote, quote_plus

from ._replies import Reply

REDACTED = "[redacted]"

E = TypeVar("E", bound=BaseException)


def _b64(data: bytes) -> tuple[str, ...]:
    padded = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode()
    return (padded, padded.rstrip("="), urlsafe, urlsafe.rstrip("="))


def _encodings(value: str) -> tuple[str, ...]:
    """``value`` as it is, URL-encoded (``quote`` with and without ``/`` kept,
    ``quote_plus``), JSON-escaped (an endpoint that echoes its request as JSON) and
    base64-encoded."""
    escaped = json.dumps(value)[1:-1]
    return (
        value,
        quote(value),
        quote(value, safe=""),
        quote_plus(value),
        escaped,
        *_b64(value.encode()),
    )


def xoauth2_text(username: str, token: str) -> str:
    """The XOAUTH2 initial response before base64 (Google's format)."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01"


def _saslname(value: str) -> str:
    """RFC 5801 saslname: ``,`` and ``=`` escaped as ``=2C`` and ``=3D``."""
    return value.replace("=", "=3D").replace(",", "=2C")


def oauthbearer_text(username: str, token: str, host: str, port: int) -> str:
    """The RFC 7628 initial client response before base64: a GS2 header, host, port and
    the token."""
    gs2 = f"n,a={_saslname(username)}," if username else "n,,"
    return f"{gs2}\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"


@dataclass(frozen=True)
class Secrets:
    """The forms of some secrets that must never be shown (no ``repr`` of them)."""

    forms: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def of(cls, *values: str | None) -> Secrets:
        """Plain secrets (client secrets, refresh tokens): raw, URL-encoded, base64."""
        return cls(frozenset(f for v in values if v for f in _encodings(v)))

    @classmethod
    def password(cls, username: str, password: str | None) -> Secrets:
        """A password and the AUTH forms that carry it: LOGIN (its own base64), PLAIN
        (``\\0user\\0password``, also with the user as authorisation identity)."""
        if not password:
            return cls()
        plain = f"\0{username}\0{password}"
        authzid = f"{username}{plain}"
        return cls.of(password, plain, authzid)

    @classmethod
    def bearer(cls, username: str, token: str | None, *, host: str = "", port: int = 0) -> Secrets:
        """An OAuth2 access token and the XOAUTH2 / OAUTHBEARER responses that carry it."""
        if not token:
            return cls()
        return cls.of(
            token,
            f"Bearer {token}",
            xoauth2_text(username, token),
            oauthbearer_text(username, token, host, port),
        )

    def __or__(self, other: Secrets) -> Secrets:
        return Secrets(self.forms | other.forms)

    def __contains__(self, text: object) -> bool:
        return text in self.forms

    def __bool__(self) -> bool:
        return bool(self.forms)

    @cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        if not self.forms:
            return None
        longest_first = sorted(self.forms, key=len, reverse=True)
        return re.compile("|".join(map(re.escape, longest_first)), re.IGNORECASE)

    def redact(self, text: str) -> str:
        """``text`` with every form of every secret replaced by ``[redacted]``."""
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def reply(self, reply: Reply) -> Reply:
        """``reply`` with its text redacted (the same object when nothing matched)."""
        pattern = self._pattern
        if pattern is None or not any(pattern.search(line) for line in reply.lines):
            return reply
        return Reply(reply.code, tuple(pattern.sub(REDACTED, line) for line in reply.lines))

    def replies(self, replies: list[Reply]) -> list[Reply]:
        if self._pattern is None:
            return replies
        return [self.reply(r) for r in replies]

    def exception(self, exc: E) -> E:
        """``exc`` with every secret taken out of its message (a reply line the parser
        refused is quoted in it), ``server_message`` and ``refused`` (a reply that came
        early): a new error of the same class, with every other attribute, its cause and
        traceback (errors are never changed once built); ``exc`` itself when there is no
        secret to take out."""
        if self._pattern is None:
            return exc
        state = dict(vars(exc))
        said = state.get("server_message")
        if isinstance(said, str):
            state["server_message"] = self.redact(said)
        refused = state.get("refused")
        if isinstance(refused, dict):
            state["refused"] = {
                address: (code, self.redact(text)) for address, (code, text) in refused.items()
            }
        clone = copy.copy(exc)
        if exc.args and isinstance(exc.args[0], str):
            clone.args = (self.redact(exc.args[0]), *exc.args[1:])
        clone.__dict__.update(state)
        clone.__cause__ = exc.__cause__
        clone.__suppress_context__ = exc.__suppress_context__
        return clone.with_traceback(exc.__traceback__)
