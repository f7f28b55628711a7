"""The real SMTP engine, sync or async, behind one calling style (not a fake).

The ``connect`` fixture (conftest.py) runs a test once with :class:`SMTPConnection` and
once with :class:`AsyncSMTPConnection`, on its own event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from fluxmail.envelope import Composed, Envelope
from fluxmail.smtp import AsyncSMTPConnection, SendResult, SessionInfo, SMTPConnection
from fluxmail.smtp._options import SmtpConfig

GOOD, OTHER, BAD = "good@example.com", "other@example.com", "bad@example.com"


def msg(
    *rcpts: str,
    data: bytes = b"Subject: test\r\n\r\nHello\r\n",
    sender: str = "sender@example.com",
    smtputf8: bool = False,
) -> Composed:
    return Composed(Envelope(sender, rcpts or (GOOD,), smtputf8), data, "<t1@example.com>")


class Client:
    """The real engine, sync or async, behind one calling style (not a fake)."""

    def __init__(self, mode: str, config: SmtpConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.mode = mode
        self.loop = loop
        self.conn: SMTPConnection | AsyncSMTPConnection
        if mode == "sync":
            self.conn = SMTPConnection(config)
        else:
            self.conn = AsyncSMTPConnection(config)

    def _call(self, value: Any) -> Any:
        return self.loop.run_until_complete(value) if self.mode == "async" else value

    def open(self) -> SessionInfo:
        info: SessionInfo = self._call(self.conn.open())
        return info

    def send(self, composed: Composed) -> SendResult:
        result: SendResult = self._call(self.conn.send(composed))
        return result

    def close(self) -> None:
        self._call(self.conn.close())

    @property
    def is_open(self) -> bool:
        return self.conn.is_open


Connect = Callable[[SmtpConfig], Client]


def timed(call: Callable[[], object], exc: type[BaseException]) -> tuple[Any, float]:
    started = time.monotonic()
    with pytest.raises(exc) as info:
        call()
    return info.value, time.monotonic() - started
