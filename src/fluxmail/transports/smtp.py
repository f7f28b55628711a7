"""SMTP transports: deliver a Composed message, with retries and an optional held connection.

The sync transport retries transient failures (see ``_retry``). The async transport does
not retry on its own (the API page says so for ``send_async``); bulk sending layers its own
retry on top. Both reopen a held connection once, transparently, when the server dropped it
while it sat idle between messages: that failure happens before the final '.', so nothing
can be delivered twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .._retry import is_retryable, retry_delays
from ..config import SmtpConfig
from ..envelope import Composed
from ..errors import (
    ConnectError,
    FluxMailException,
    ProtocolError,
    SendTimeoutError,
    SMTPResponseError,
    TLSRequiredError,
    TLSVerifyError,
)
from ..smtp import AsyncSMTPConnection, SendResult, SessionInfo, SMTPConnection

T = TypeVar("T")


def _stale_connection_failure(exc: FluxMailException) -> bool:
    """How a reused connection fails when the server closed it while it sat idle: a plain
    connection failure, or a 421 reply ("service not available, closing"). Either comes
    before the server accepted the message, so sending it on a new connection is safe.
    A timeout is not one of them: the server is there but stalling, and waiting a second
    full timeout on a new connection would hold the caller twice as long as configured."""
    if isinstance(exc, SMTPResponseError):
        return exc.smtp_code == 421
    return isinstance(exc, ConnectError) and not isinstance(
        exc, (TLSRequiredError, TLSVerifyError, ProtocolError, SendTimeoutError)
    )


class SMTPTransport:
    """Blocking SMTP delivery. Thread-safe: one send at a time on a held connection."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        max_retries: int = 0,
        retry_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self._sleep = sleep
        self._lock = threading.RLock()
        self._held: SMTPConnection | None = None
        self._holding = 0

    def hold(self) -> None:
        """Keep one connection open across sends until :meth:`release`."""
        with self._lock:
            self._holding += 1

    def release(self) -> None:
        with self._lock:
            self._holding = max(0, self._holding - 1)
            if self._holding == 0 and self._held is not None:
                held, self._held = self._held, None
                held.close()

    def send(self, composed: Composed) -> SendResult:
        return self._retrying(lambda: self._send_once(composed))

    def connect(self) -> SessionInfo:
        """Open the held connection now (connect, TLS, AUTH), retrying transient failures,
        so that a wrong password or a dead server shows up here rather than at the first
        message. Returns the session of the already open connection if there is one."""
        return self._retrying(self._connect_once)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        delays = retry_delays(self.max_retries, self.retry_delay)
        attempts = 0
        while True:
            attempts += 1
            try:
                return attempt()
            except FluxMailException as exc:
                delay = next(delays, None) if is_retryable(exc) else None
                if delay is None:
                    exc.attempts = attempts  # "after N attempts" in the CLI
                    raise
            self._sleep(delay)

    def _connect_once(self) -> SessionInfo:
        with self._lock:
            if self._held is None or not self._held.is_open or self._held.info is None:
                self._held = SMTPConnection(self.config)
                return self._held.open()
            return self._held.info

    def _send_once(self, composed: Composed) -> SendResult:
        with self._lock:
            if self._holding == 0:
                with SMTPConnection(self.config) as conn:
                    return conn.send(composed)
            reused = self._held is not None and self._held.is_open
            if self._held is None or not self._held.is_open:
                self._held = SMTPConnection(self.config)
            try:
                return self._held.send(composed)
            except FluxMailException as exc:
                if not (reused and _stale_connection_failure(exc)):
                    raise
            self._held.close()
            self._held = SMTPConnection(self.config)
            return self._held.send(composed)

    def probe(self) -> SessionInfo:
        """Open a fresh session (TLS, AUTH) and close it: the health check."""
        with SMTPConnection(self.config) as conn:
            return conn.open()


class AsyncSMTPTransport:
    """asyncio delivery; concurrent sends on a held connection are serialised."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._lock: asyncio.Lock | None = None
        self._held: AsyncSMTPConnection | None = None
        self._holding = 0

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def hold(self) -> None:
        self._holding += 1

    async def release(self) -> None:
        self._holding = max(0, self._holding - 1)
        if self._holding == 0 and self._held is not None:
            held, self._held = self._held, None
            await held.close()

    async def send(self, composed: Composed) -> SendResult:
        if self._holding == 0:
            async with AsyncSMTPConnection(self.config) as conn:
                return await conn.send(composed)
        async with self._get_lock():
            reused = self._held is not None and self._held.is_open
            if self._held is None or not self._held.is_open:
                self._held = AsyncSMTPConnection(self.config)
            try:
                return await self._held.send(composed)
            except FluxMailException as exc:
                if not (reused and _stale_connection_failure(exc)):
                    raise
            await self._held.close()
            self._held = AsyncSMTPConnection(self.config)
            return await self._held.send(composed)
