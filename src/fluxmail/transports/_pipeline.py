"""``SMTPTransport.send_many``: a batch on one connection, pipelined, with retries.

The next message's envelope (MAIL, RCPT, DATA) goes out in the same write as the current
message's final dot when the server offers PIPELINING: one round trip per message. That
next message is *started* (the hooks take its rate-limit slot and record it durably as
being sent) only when the engine asks for it, right before that write.

When the batch stops (an error that stops it, KeyboardInterrupt, an exception from the
input, asyncio cancellation), every started message without an outcome is *abandoned*
(deferred: none of its data left the process) except the one whose final dot may be on
the wire at that moment (:attr:`_Run.in_flight`: its data began to be written), whose
outcome is unknown.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..config import SmtpConfig
from ..delivery import policy
from ..errors import AuthenticationError, FluxMailException, ServerReply, SMTPResponseError
from ..smtp import AsyncSMTPConnection, SendResult, SMTPConnection
from .base import dotting

if TYPE_CHECKING:
    from ..envelope import Composed
    from .base import AsyncBatchHooks, BatchHooks, Item, Source

_C = TypeVar("_C", SMTPConnection, AsyncSMTPConnection)

AHEAD_LIMIT = 4 << 20
"""A message larger than this (bytes) is sent before the next one is composed: with a
50 MB attachment, two composed messages at once would be ~2.7x the file in memory. The
round trip it saves is nothing next to the time such a message takes on the wire."""


class Owner(Protocol):
    """What a batch uses of its :class:`~.smtp.SMTPTransport` (which imports this module)."""

    config: SmtpConfig
    _sleep: Callable[[float], None]

    def _attempts(self) -> policy.Attempts: ...


def chained(exc: FluxMailException) -> FluxMailException:
    """``exc`` with its cause: a failure the server answered (a reply) gets the
    :class:`ServerReply` as ``__cause__``; I/O failures already carry their ``OSError``.
    Errors fluxmail detects itself before sending (invalid input, SIZE, SMTPUTF8) are
    their own origin and stay as they are."""
    if exc.__cause__ is not None or not exc.message.startswith("SMTP server "):
        return exc
    if isinstance(exc, SMTPResponseError):
        exc.__cause__ = ServerReply(exc.smtp_code, exc.enhanced_code, exc.server_message)
    elif isinstance(exc, AuthenticationError) and exc.smtp_code is not None:
        text = exc.message.partition(": ")[2]
        exc.__cause__ = ServerReply(exc.smtp_code, exc.enhanced_code, text)
    return exc


class _Run:
    """The bookkeeping of one batch on one connection."""

    def __init__(self, hooks: BatchHooks | AsyncBatchHooks, source: Source | None = None):
        self.hooks = hooks
        self.source = source  # async: where the next message is taken from, unwaited
        self.ahead: Item | None = None  # the next message, maybe written ahead
        self.drained = False  # async: the end of the input was taken from the source
        self.started: dict[int, Composed] = {}  # started, no outcome yet
        self.trying: int | None = None  # the message being sent now
        self.in_flight: int | None = None  # its final dot may have been written
        self.refused: FluxMailException | None = None  # what the hooks' dotting raised

    def upcoming(self) -> Composed | None:
        """The engine asks, right before the current message's final dot: the next
        message, if it may go out now (started here), else None."""
        if self.ahead is None and self.source is not None and not self.drained:
            try:
                self.ahead = self.source.get_nowait()
            except asyncio.QueueEmpty:
                return None
            self.drained = self.ahead is None
        if self.ahead is None:
            return None
        key, composed = self.ahead
        if key not in self.started:
            if not self.hooks.ready(key, composed):
                return None  # its rate-limit slot is not due: it waits for its turn
            self.started[key] = composed
        return composed

    def writing(self) -> None:
        """The driver, right before the data of the message being tried is written (its
        envelope accepted, the 354 read; again for a 452 follow-up transaction): the
        hooks' optional ``dotting(key)`` (see :class:`~.base.BatchHooks`), then the
        message is in flight. If ``dotting`` raises, no byte of the data is written and
        the batch stops: the message is abandoned, not unknown (unless an earlier
        transaction of it was in flight already)."""
        key = self.trying
        assert key is not None
        try:
            dotting(self.hooks, key)
        except FluxMailException as exc:  # the hooks' own: it stops the batch, no retry
            self.refused = exc
            raise
        self.in_flight = key

    def finish(self, key: int, outcome: SendResult | FluxMailException) -> None:
        self.started.pop(key, None)
        self.hooks.finished(key, outcome)

    def abandon(self, error: BaseException) -> None:
        for key in list(self.started):
            if key != self.in_flight:
                del self.started[key]
                self.hooks.abandoned(key, error)


def fits_ahead(composed: Composed) -> bool:
    """A message small enough for the next one to be composed before it is sent (see
    :data:`AHEAD_LIMIT`)."""
    return len(composed.data) <= AHEAD_LIMIT


class _Feed:
    """The input of a blocking batch (see :class:`~.base.Preparable`).

    :meth:`take` runs at safe points only. :meth:`prepare`, while the replies to a final
    dot are awaited, lets a Preparable input make the message after next, so that
    composing overlaps the server's work; a plain iterable is never touched then. What
    ``prepare()`` raises (an interrupt, a defect) is kept in :attr:`interrupted` and
    raised by the batch once the message in flight has its outcome, before any retry.
    """

    def __init__(self, items: Iterable[Item]) -> None:
        self._items = iter(items)
        self._prepare = getattr(items, "prepare", None)
        self.interrupted: BaseException | None = None

    def take(self) -> Item | None:
        """The next message, or None at the end (a safe point: the caller's code runs)."""
        return next(self._items, None)

    def prepare(self, ahead: Item | None) -> None:
        """Have the message after ``ahead`` (the next one) made, unless ``ahead`` is big."""
        if self._prepare is None or self.interrupted is not None:
            return
        if ahead is None or not fits_ahead(ahead[1]):
            return
        try:
            self._prepare()
        except BaseException as exc:  # for after the outcome of the message in flight
            self.interrupted = exc

    def raise_interrupted(self) -> None:
        if self.interrupted is not None:
            error, self.interrupted = self.interrupted, None
            raise error


class Batch:
    """The blocking loop."""

    def __init__(self, transport: Owner, hooks: BatchHooks) -> None:
        self.transport = transport
        self.hooks = hooks
        self.run_ = _Run(hooks)
        self._feed: _Feed | None = None
        self._conn: SMTPConnection | None = None  # the connection in use (run, _deliver)

    def run(self, items: Iterable[Item], held: SMTPConnection | None = None) -> SMTPConnection:
        """Deliver ``items``. On ``held`` (a held connection) when given: it is left open
        for the next batch and returned (the one the batch ended on; closed if the batch
        raised); else on a connection of its own, closed at the end."""
        run = self.run_
        conn = self._conn = held or SMTPConnection(self.transport.config)
        keep = held is not None
        feed = self._feed = _Feed(items)
        try:
            item = feed.take()
            while item is not None:
                key, composed = item
                item = None  # (no reference left to a message once it is sent)
                if run.ahead is None and fits_ahead(composed):
                    run.ahead = feed.take()  # prepared before the dot of item
                if key not in run.started:
                    self.hooks.start(key, composed)
                    run.started[key] = composed
                conn = self._deliver(conn, key, composed)
                del composed
                item, run.ahead = run.ahead, None
                if item is None:
                    item = feed.take()
        except BaseException as exc:
            run.abandon(exc)
            keep = False
            raise
        finally:
            if not keep:  # (the one _deliver opened last, also when it raised)
                (self._conn or conn).close()  # an envelope written ahead is dropped
        return conn

    def _prefetch(self) -> None:
        """While the replies to a final dot are awaited: the message after next."""
        if self._feed is not None:
            self._feed.prepare(self.run_.ahead)

    def _deliver(self, conn: SMTPConnection, key: int, composed: Composed) -> SMTPConnection:
        run, feed = self.run_, self._feed
        assert feed is not None
        attempts: policy.Attempts | None = None  # made at the first failure (most have none)
        lost = conn.lost_ahead(composed)  # its envelope went out ahead, then the connection
        while True:
            reused = conn.is_open or lost is not None
            connected = reused
            try:
                if lost is not None:
                    error, lost = lost, None
                    raise error
                if not reused:
                    conn = self._conn = SMTPConnection(self.transport.config)
                    conn.open()
                    connected = True
                run.trying = key
                result = conn.send_pipelined(composed, run.upcoming, self._prefetch, run.writing)
            except FluxMailException as exc:
                if exc is run.refused:
                    raise  # the hooks' dotting (see _Run.writing)
                run.in_flight, error = None, exc
            else:
                run.in_flight = None
                run.finish(key, result)
                feed.raise_interrupted()
                return conn
            if feed.interrupted is not None:  # interrupted while it was tried: no retry
                error = chained(error)
                if not policy.stops_batch(error, connected=connected):
                    run.finish(key, error)  # (else the batch abandons it, as it would)
                feed.raise_interrupted()
            if attempts is None:
                attempts = self.transport._attempts()
            wait = attempts.after(error, reused=reused, still_open=conn.is_open)
            if wait is None:
                return _give_up(run, conn, key, error, connected)
            self.transport._sleep(wait)


class AsyncBatch:
    """The asyncio loop (one per connection of a pool)."""

    def __init__(self, transport: Owner, hooks: AsyncBatchHooks) -> None:
        self.transport = transport
        self.hooks = hooks
        self.run_ = _Run(hooks)

    async def run(self, source: Source) -> None:
        run = self.run_ = _Run(self.hooks, source)
        cancelling = _cancel_check(self.hooks, asyncio.current_task())
        conn = AsyncSMTPConnection(self.transport.config)
        try:
            while True:
                item, run.ahead = run.ahead, None
                if item is None and not run.drained:
                    item = await source.get()
                if item is None:
                    break
                key, composed = item
                if key not in run.started:
                    await self.hooks.start(key, composed)
                    run.started[key] = composed
                elif cancelling():  # written ahead: a cancellation asked for
                    await asyncio.sleep(0)  # meanwhile lands here, while none of its data left
                conn = await self._deliver(conn, key, composed)
        except BaseException as exc:
            run.abandon(exc)
            raise
        finally:
            await conn.close()

    async def _deliver(
        self, conn: AsyncSMTPConnection, key: int, composed: Composed
    ) -> AsyncSMTPConnection:
        run = self.run_
        attempts: policy.Attempts | None = None  # made at the first failure (most have none)
        lost = conn.lost_ahead(composed)  # its envelope went out ahead, then the connection
        while True:
            reused = conn.is_open or lost is not None
            connected = reused
            try:
                if lost is not None:
                    error, lost = lost, None
                    raise error
                if not reused:
                    conn = AsyncSMTPConnection(self.transport.config)
                    await conn.open()
                    connected = True
                run.trying = key
                result = await conn.send_pipelined(composed, run.upcoming, None, run.writing)
            except FluxMailException as exc:
                if exc is run.refused:
                    raise  # the hooks' dotting (see _Run.writing)
                run.in_flight, error = None, exc
            else:
                run.in_flight = None
                run.finish(key, result)
                return conn
            if attempts is None:
                attempts = self.transport._attempts()
            wait = attempts.after(error, reused=reused, still_open=conn.is_open)
            if wait is None:
                return _give_up(run, conn, key, error, connected)
            await asyncio.sleep(wait)


def _cancel_check(hooks: AsyncBatchHooks, task: asyncio.Task[None] | None) -> Callable[[], bool]:
    """Was a cancellation asked for that has not landed yet: of this connection's
    ``task``, or of the batch (the hooks' optional ``cancelling()``)? Only the user's
    callbacks run between two waits of the task, so only they can have asked. Before
    Python 3.11 (no ``Task.cancelling()``) or without the hook: maybe, always."""
    batch: Callable[[], bool] | None = getattr(hooks, "cancelling", None)
    if sys.version_info < (3, 11) or task is None or batch is None:
        return lambda: True
    own = task.cancelling
    return lambda: bool(own() or batch())


def _give_up(run: _Run, conn: _C, key: int, error: FluxMailException, connected: bool) -> _C:
    """No more tries for this message: the batch stops (raised; the loop abandons the
    message) or the message fails alone and the batch goes on."""
    error = chained(error)
    if policy.stops_batch(error, connected=connected):
        raise error
    run.finish(key, error)
    return conn
