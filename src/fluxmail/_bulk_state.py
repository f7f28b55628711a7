"""BulkSender's bookkeeping, shared by its sync and async loops: result counts and
callbacks, when to try a message again, what stops a batch, and the message written
ahead behind the previous final dot."""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from ._journal import Journal, outcome_of
from ._progress import Progress
from ._ratelimit import RateLimiter
from ._retry import is_retryable, retry_delays
from .envelope import Composed
from .errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    FluxMailException,
    MissingDependencyError,
    SendTimeoutError,
    SMTPResponseError,
    TLSRequiredError,
    TLSVerifyError,
)

if TYPE_CHECKING:
    from ._facade import SendReceipt
    from .bulk import BulkSender
    from .smtp import SendResult

OnSuccess = Callable[[int, str], None]
OnError = Callable[[int, FluxMailException], None]
MessageSpec = Mapping[str, Any]
_Item = tuple[int, Composed, str]  # index, the composed message, its journal key
_T = TypeVar("_T")


class _Counts(TypedDict):
    sent: int
    failed: int
    total: int
    errors: list[tuple[int, FluxMailException]]


class BulkResult(_Counts, total=False):
    """``sent + failed (+ skipped) == total``; ``errors`` holds ``(index, exception)``."""

    skipped: int  # with a journal: messages an earlier run finished (accepted or refused)


_FATAL = (
    AuthenticationError,
    TLSRequiredError,
    TLSVerifyError,
    ConfigurationError,
    MissingDependencyError,
)


def _is_fatal(exc: FluxMailException) -> bool:
    """Errors that would fail every message the same way."""
    return isinstance(exc, _FATAL) and not exc.transient


class _Tally:
    """Counts, errors, callbacks and the journal: the bookkeeping shared by the sync and
    async loops. Each outcome goes to the journal before the user's callback runs."""

    def __init__(
        self,
        on_success: OnSuccess | None,
        on_error: OnError | None,
        progress: Progress,
        journal: Journal | None = None,
    ) -> None:
        self.result: BulkResult = {"sent": 0, "failed": 0, "total": 0, "errors": []}
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
        from ._facade import _receipt

        if self.journal is not None:
            self.journal.outcome(index, "accepted")
        receipt: SendReceipt = _receipt(result)
        self.result["sent"] += 1
        self._advance()
        if self._on_success is not None:
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

    def abort(self, exc: FluxMailException, index: int | None = None) -> FluxMailException:
        """The error that stops the batch; message ``index`` (if any) was not sent."""
        if self.journal is not None and index is not None:
            self.journal.outcome(index, "deferred", code=exc.code)
        return exc.with_batch_result(self.result)


class _Attempts:
    """When to try one message again (pure). A reused connection that the server closed
    (idle timeout, 421) gets one immediate retry on a fresh connection, free of
    ``max_retries``: it failed before the final '.', so nothing can be sent twice."""

    def __init__(self, max_retries: int, retry_delay: float) -> None:
        self._delays = retry_delays(max_retries, retry_delay)
        self._free_retry = True

    def after(self, error: FluxMailException, *, reused: bool, still_open: bool) -> float | None:
        """Seconds to wait before the next try, or None to stop trying."""
        if reused and not still_open and self._free_retry and _server_closed(error):
            self._free_retry = False
            return 0.0
        return next(self._delays, None) if is_retryable(error) else None


def _server_closed(error: FluxMailException) -> bool:
    """The server closed the reused connection (a 421, a reset): not a timeout, which
    would cost a second full timeout on the new connection."""
    if isinstance(error, SMTPResponseError):
        return error.smtp_code == 421
    return (
        isinstance(error, ConnectError)
        and error.transient
        and not isinstance(error, SendTimeoutError)
    )


async def _each(
    messages: Iterable[MessageSpec] | AsyncIterable[MessageSpec],
) -> AsyncIterator[MessageSpec]:
    if isinstance(messages, AsyncIterable):
        async for spec in messages:
            yield spec
    else:
        for spec in messages:
            yield spec


async def _offer(queue: asyncio.Queue[_T], item: _T, workers: list[asyncio.Task[None]]) -> None:
    """Put ``item`` on the (bounded) queue; if a worker stopped the batch meanwhile, raise
    its error instead of waiting forever for room that no worker will make."""
    put_task = asyncio.ensure_future(queue.put(item))
    try:
        while not put_task.done():
            for task in workers:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            running = [task for task in workers if not task.done()]
            if not running:
                raise RuntimeError("every BulkSender worker has stopped")
            await asyncio.wait([put_task, *running], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not put_task.done():
            put_task.cancel()


def _total(messages: object) -> int | None:
    try:
        return len(messages)  # type: ignore[arg-type]
    except TypeError:
        return None


class _Ahead:
    """The next message of a connection, written ahead behind the current message's final
    dot (one round trip per message when the server offers PIPELINING).

    ``item`` is the next message, already prepared (sync: taken from the input before the
    current message is sent; async: taken from the queue, without waiting, when the
    driver asks). ``upcoming()`` hands it to the driver only when its rate-limit slot is
    due, after recording it durably as ``sending`` in the journal: both happen before the
    write that carries its MAIL. ``started(item)`` tells the loop that this was done.
    """

    def __init__(
        self,
        sender: BulkSender,
        tally: _Tally,
        limiter: RateLimiter,
        queue: asyncio.Queue[_Item | None] | None = None,
    ) -> None:
        self._sender = sender
        self._tally = tally
        self._limiter = limiter
        self._queue = queue
        self.item: _Item | None = None
        self.finished = False  # async: the end-of-input marker was taken from the queue
        self._started = -1  # index of the item written ahead

    def started(self, item: _Item) -> bool:
        return self._started == item[0]

    def release(self, exc: FluxMailException) -> None:
        """The batch stops: the next message, if written ahead, was not delivered (its
        final dot never went out), so the journal says deferred, not sending."""
        item, journal = self.item, self._tally.journal
        if item is not None and self.started(item) and journal is not None:
            journal.outcome(item[0], "deferred", code=exc.code)

    def upcoming(self) -> Composed | None:
        if self.item is None and self._queue is not None and not self.finished:
            try:
                taken = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
            if taken is None:
                self.finished = True
            self.item = taken
        item = self.item
        if item is None:
            return None
        if not self.started(item):
            limiter = self._limiter
            if limiter.wait(limiter.clock()) > 0:
                return None  # its slot is not due: it waits for its turn instead
            limiter.take(limiter.clock())
            self._sender._started(self._tally, item)
            self._started = item[0]
        return item[1]
