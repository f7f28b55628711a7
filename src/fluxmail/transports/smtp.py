"""The SMTP transport: delivery through fluxmail's engine (:mod:`fluxmail.smtp`).

One class, :class:`SMTPTransport`, is both the blocking and the asyncio transport. What
a failure means (retry or not, the free retry of a reused connection, the outcome) is the
delivery policy's call (:mod:`fluxmail.delivery.policy`); this module only applies it:

* ``send()`` retries up to ``max_retries``; ``send_async()`` does not retry (the API page
  says so); both reopen a held connection once, transparently, when the server closed it
  while it sat idle between messages (that failure comes before the final dot);
* ``send_many()`` / ``send_many_async()`` (:mod:`._pipeline`) run a batch on a
  connection of their own, pipelined, with retries;
* whatever is raised after the retries keeps its cause: the low-level error of the last
  try (``OSError``, ``ssl.SSLError``) or, for a reply, the :class:`~fluxmail.errors.
  ServerReply` (see ``docs/errors.md``).

A held async connection belongs to the event loop that opened it: used from another loop
(a second ``asyncio.run()``), the transport starts afresh in that loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..config import SmtpConfig
from ..delivery import policy
from ..envelope import Composed
from ..errors import FluxMailException
from ..smtp import AsyncSMTPConnection, SendResult, SessionInfo, SMTPConnection
from . import _pipeline
from .base import AsyncBatchHooks, AsyncTransport, BatchHooks, Item, Source, Transport

T = TypeVar("T")

__all__ = ["SMTPTransport", "diagnostics"]


class SMTPTransport(Transport, AsyncTransport):
    """Blocking and asyncio SMTP delivery. Thread-safe: one blocking send at a time on
    the held connection; concurrent async sends on it are serialised."""

    name = "smtp"

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
        self._used = False  # the held connection carried a message (so it can go stale)
        self._holding = 0
        self._async = _AsyncHeld()

    def __repr__(self) -> str:
        return f"<SMTPTransport {self.config.host}:{self.config.port}>"

    def _attempts(self, retries: bool = True) -> policy.Attempts:
        return policy.Attempts(self.max_retries if retries else 0, self.retry_delay)

    # --- blocking ---------------------------------------------------------------------

    def hold(self) -> None:
        with self._lock:
            self._holding += 1

    def hold_async(self) -> None:
        self._async.holding += 1

    def release(self) -> None:
        with self._lock:
            self._holding = max(0, self._holding - 1)
            if self._holding == 0:
                self.close()

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, None
            if held is not None:
                held.close()

    def open(self) -> None:
        """Open the held connection now (connect, TLS, AUTH), retrying what the policy
        retries, so that a wrong password or a dead server shows up here rather than at
        the first message."""
        self._retrying(self._open_once)

    def _open_once(self) -> None:
        with self._lock:
            if self._held is None or not self._held.is_open:
                self._held, self._used = SMTPConnection(self.config), False
                self._held.open()

    def send(self, composed: Composed) -> SendResult:
        return self._retrying(lambda: self._send_once(composed))

    def _retrying(self, attempt: Callable[[], T]) -> T:
        attempts = self._attempts()
        tries = 0
        while True:
            tries += 1
            try:
                return attempt()
            except FluxMailException as exc:
                delay = attempts.after(exc, reused=False, still_open=False)
                if delay is None:
                    _pipeline.chained(exc)
                    if tries == 1:
                        raise
                    raise exc.with_attempts(tries) from exc.__cause__  # "after N attempts"
            self._sleep(delay)

    def _send_once(self, composed: Composed) -> SendResult:
        with self._lock:
            if self._holding == 0:
                with SMTPConnection(self.config) as conn:
                    return conn.send(composed)
            held = self._held
            reused = held is not None and held.is_open and self._used
            if held is None or not held.is_open:
                held = self._held = SMTPConnection(self.config)
            self._used = True
            try:
                return held.send(composed)
            except FluxMailException as exc:
                if not policy.free_retry(exc, reused=reused, still_open=held.is_open):
                    raise
            held.close()  # the server had closed it while idle: once more, on a fresh one
            self._held = SMTPConnection(self.config)
            return self._held.send(composed)

    def send_many(self, items: Iterable[Item], hooks: BatchHooks) -> None:
        """Pipelined, on a connection of its own (closed at the end), with retries."""
        _pipeline.Batch(self, hooks).run(items)

    def probe(self) -> dict[str, Any]:
        """Open a fresh session (TLS, AUTH) and close it: the health check."""
        with SMTPConnection(self.config) as conn:
            return diagnostics(conn.open())

    # --- asyncio ----------------------------------------------------------------------

    async def release_async(self) -> None:
        self._async.holding = max(0, self._async.holding - 1)
        if self._async.holding == 0:
            await self.close_async()

    async def close_async(self) -> None:
        held = self._async.take()
        if held is not None:
            await held.close()

    async def send_async(self, composed: Composed) -> SendResult:
        try:
            return await self._send_async_once(composed)
        except FluxMailException as exc:
            _pipeline.chained(exc)
            raise

    async def _send_async_once(self, composed: Composed) -> SendResult:
        state = self._async
        if state.holding == 0:
            async with AsyncSMTPConnection(self.config) as conn:
                return await conn.send(composed)
        async with state.lock():
            held = state.connection()
            reused = held is not None and held.is_open and state.used
            if held is None or not held.is_open:
                held = state.replace(AsyncSMTPConnection(self.config))
            state.used = True
            try:
                return await held.send(composed)
            except FluxMailException as exc:
                if not policy.free_retry(exc, reused=reused, still_open=held.is_open):
                    raise
            await held.close()  # the server had closed it while idle: once more, afresh
            held = state.replace(AsyncSMTPConnection(self.config))
            state.used = True
            return await held.send(composed)

    async def send_many_async(self, source: Source, hooks: AsyncBatchHooks) -> None:
        """Pipelined, on a connection of its own (closed at the end), with retries."""
        await _pipeline.AsyncBatch(self, hooks).run(source)


class _AsyncHeld:
    """The held async connection and its lock, both bound to the event loop that made
    them. In another loop (a second ``asyncio.run()``) they are dropped and made anew:
    an asyncio lock or stream cannot be used from a loop other than its own."""

    def __init__(self) -> None:
        self.holding = 0
        self.used = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._held: AsyncSMTPConnection | None = None

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # the old loop's connection cannot be closed from here; its loop is gone or
            # busy elsewhere, and the server will time it out
            self._loop, self._lock, self._held, self.used = loop, asyncio.Lock(), None, False

    def lock(self) -> asyncio.Lock:
        self._check_loop()
        assert self._lock is not None
        return self._lock

    def connection(self) -> AsyncSMTPConnection | None:
        self._check_loop()
        return self._held

    def replace(self, conn: AsyncSMTPConnection) -> AsyncSMTPConnection:
        self._held, self.used = conn, False
        return conn

    def take(self) -> AsyncSMTPConnection | None:
        if self._loop is not asyncio.get_running_loop():
            self._held = None
        held, self._held = self._held, None
        return held


def diagnostics(info: SessionInfo) -> dict[str, Any]:
    """What ``FluxMail.test_connection()`` reports about an SMTP session."""
    return {
        "tls": info.tls_version,
        "authenticated": info.authenticated,
        "auth_mechanism": info.auth_mechanism,
        "esmtp": info.esmtp,
        "max_size": info.max_size,
        "pipelining": info.pipelining,
        "smtputf8": info.smtputf8,
        "greeting": info.greeting,
    }
