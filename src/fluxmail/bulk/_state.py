"""BulkSender's bookkeeping, shared by its sync and async loops: result counts and
callbacks, and the hooks through which the transport reports each message. When to try a
message again and what stops a batch is the delivery policy's call; the loops themselves
are the transport's ``send_many``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from typing import TYPE_CHECKING, Any, TypedDict

from ..delivery import policy
from ..delivery._journal import Journal, outcome_of
from ..delivery._ratelimit import RateLimiter
from ..envelope import Composed
from ..errors import FluxMailException, SMTPResponseError
from ._progress import Progress

if TYPE_CHECKING:
    from ..mailer._receipt import SendReceipt
    from ..smtp import SendResult
    from ..transports.base import Item

OnSuccess = Callable[[int, str], None]
OnError = Callable[[int, FluxMailException], None]
MessageSpec = Mapping[str, Any]
_Item = tuple[int, Composed, str]  # index, the composed message, its journal key


class _Counts(TypedDict):
    sent: int
    failed: int
    total: int
    errors: list[tuple[int, FluxMailException]]


class BulkResult(_Counts, total=False):
    """``sent + failed (+ skipped) == total`` for a finished batch (a stopped one keeps its
    length in ``total``); ``errors`` holds ``(index, exception)``."""

    skipped: int  # with a journal: messages an earlier run finished (accepted or refused)


class _Tally:
    """Counts, errors, callbacks and the journal: the bookkeeping shared by the sync and
    async loops. Each outcome goes to the journal before the user's callback runs."""

    def __init__(
        self,
        on_success: OnSuccess | None,
        on_error: OnError | None,
        progress: Progress,
        journal: Journal | None = None,
        total: int | None = None,
    ) -> None:
        self.result: BulkResult = {"sent": 0, "failed": 0, "total": 0, "errors": []}
        self._total = total  # len(messages) when it has one, for a batch that stops early
        if journal is not None:
            self.result["skipped"] = 0
        self.journal = journal
        self._on_success = on_success
        self._on_error = on_error
        self._progress = progress

    def _advance(self) -> None:
        done = self.result["sent"] + self.result.get("skipped", 0)
        self._progress.advance(done, self.result["failed"])

    def success(self, index: int, result: SendResult) -> None:
        if self.journal is not None:
            self.journal.outcome(index, "accepted")
        receipt: SendReceipt | None = None
        if self._on_success is not None or result.refused:  # (_receipt logs the refused)
            from ..mailer._receipt import _receipt

            receipt = _receipt(result)
        self.result["sent"] += 1
        self._advance()
        if self._on_success is not None:
            assert receipt is not None
            self._on_success(index, receipt)

    def failure(self, index: int, exc: FluxMailException) -> None:
        if self.journal is not None:
            code = exc.smtp_code if isinstance(exc, SMTPResponseError) else exc.code
            self.journal.outcome(index, outcome_of(exc), code=code)
        self.result["failed"] += 1
        self.result["errors"].append((index, exc))
        self._advance()
        if self._on_error is not None:
            self._on_error(index, exc)

    def skip(self) -> None:
        self.result["skipped"] = self.result.get("skipped", 0) + 1
        self._advance()

    def abort(self, exc: FluxMailException) -> FluxMailException:
        """The error that stops the batch, with the counts so far (a copy of ``exc``)."""
        if self._total is not None:  # the batch's size, not how far it got
            self.result["total"] = self._total
        return exc.with_batch_result(self.result)


async def _each(
    messages: Iterable[MessageSpec] | AsyncIterable[MessageSpec],
) -> AsyncIterator[MessageSpec]:
    if isinstance(messages, AsyncIterable):
        async for spec in messages:
            yield spec
    else:
        for spec in messages:
            yield spec


def _total(messages: object) -> int | None:
    try:
        return len(messages)  # type: ignore[arg-type]
    except TypeError:
        return None


class _Hooks:
    """What the transport tells BulkSender about each message (``BatchHooks``): its
    rate-limit slot and its durable ``sending`` record right before its envelope may be
    written, then its outcome (journal first, then the user's callback)."""

    def __init__(self, tally: _Tally, limiter: RateLimiter) -> None:
        self._tally = tally
        self._limiter = limiter
        self._keys: dict[int, str] = {}  # journal keys of messages not started yet

    def item(self, item: _Item) -> Item:
        index, composed, key = item
        self._keys[index] = key
        return index, composed

    def ready(self, key: int, composed: Composed) -> bool:
        limiter = self._limiter
        if limiter.enabled:
            if limiter.wait(limiter.clock()) > 0:
                return False  # its slot is not due: it waits for its own turn
            limiter.take(limiter.clock())
        self._sending(key, composed)
        return True

    def start(self, key: int, composed: Composed) -> None:
        self._limiter.acquire_sync()
        self._sending(key, composed)

    def _sending(self, index: int, composed: Composed) -> None:
        """Record, durably, that the message may reach the server from now on."""
        key = self._keys.pop(index, "")
        if self._tally.journal is not None:
            self._tally.journal.sending(index, key, composed.message_id)

    def finished(self, key: int, outcome: SendResult | FluxMailException) -> None:
        if isinstance(outcome, FluxMailException):
            self._tally.failure(key, outcome)
        else:
            self._tally.success(key, outcome)

    def abandoned(self, key: int, error: BaseException) -> None:
        """Started, but the batch stopped before its final dot: not delivered."""
        if self._tally.journal is not None:
            code = error.code if isinstance(error, FluxMailException) else "interrupted"
            self._tally.journal.outcome(key, policy.Outcome.DEFERRED.value, code=code)


class _AsyncHooks(_Hooks):
    """``AsyncBatchHooks``: the same, waiting for the rate limit without blocking."""

    def __init__(self, tally: _Tally, limiter: RateLimiter) -> None:
        super().__init__(tally, limiter)
        self._batch = asyncio.current_task()  # the task a callback would cancel

    def cancelling(self) -> bool:
        """Was a cancellation of the batch's task asked for (by a callback: nothing else
        runs between two waits of a connection) that has not landed yet? A connection
        then lets it land before a message written ahead goes on, instead of giving the
        event loop a turn before every such message. Before Python 3.11 a task cannot
        tell: always maybe."""
        if sys.version_info < (3, 11) or self._batch is None:
            return True
        return self._batch.cancelling() > 0

    async def start(self, key: int, composed: Composed) -> None:  # type: ignore[override]
        await self._limiter.acquire()
        self._sending(key, composed)
