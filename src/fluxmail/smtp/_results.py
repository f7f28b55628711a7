"""Values the SMTP engine hands back: the session it opened and what a send achieved."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SessionInfo:
    """An open, ready SMTP session (after greeting, EHLO, STARTTLS and AUTH)."""

    host: str
    port: int
    greeting: str
    esmtp: bool
    tls_version: str | None
    cipher: str | None
    authenticated: bool
    auth_mechanism: str | None
    max_size: int | None
    pipelining: bool
    smtputf8: bool
    eightbitmime: bool
    capabilities: Mapping[str, str]
    connect_ms: float  # from the start of connect() to the session being ready


@dataclass(frozen=True)
class SendResult:
    """The server accepted the message for ``accepted``; ``refused`` maps each refused
    recipient to the server's (code, text)."""

    message_id: str
    accepted: tuple[str, ...]
    refused: Mapping[str, tuple[int, str]]
    smtp_code: int
    server_message: str
