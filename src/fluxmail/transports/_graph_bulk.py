"""BulkSender over Microsoft Graph: BulkSender's validation, journal, callbacks and rate
limit around the Graph transports' ``send_many``.

BulkSender drives SMTP connections itself; for a Graph mailer it hands its prepared
messages to these two loops instead (a two-line hook in ``bulk.py``). Each message is
marked "sending" in the journal just before the transport takes it, and gets exactly one
outcome. What stops the batch: what stops an SMTP batch (bad credentials, a refused
token, configuration), and a 403 or 404 from Graph, which names the mailbox or the app's
access to it and would fail every message the same way. A 400 fails its message alone.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

from .._bulk_state import MessageSpec, _each, _is_fatal, _Item, _Tally
from ..errors import FluxMailException, GraphError

if TYPE_CHECKING:
    from .._ratelimit import RateLimiter
    from ..bulk import BulkSender
    from ..envelope import Composed
    from .graph import AsyncGraphTransport, GraphTransport, Outcome


def stops_batch(exc: FluxMailException) -> bool:
    """Errors that would fail every remaining message the same way."""
    return _is_fatal(exc) or (isinstance(exc, GraphError) and exc.status in (401, 403, 404))


def _record(tally: _Tally, index: int, outcome: Outcome) -> None:
    if isinstance(outcome, FluxMailException):
        tally.failure(index, outcome)
    else:
        tally.success(index, outcome)


def graph_batch(
    bulk: BulkSender,
    transport: GraphTransport,
    messages: Iterable[MessageSpec],
    tally: _Tally,
    limiter: RateLimiter,
) -> None:
    """The blocking loop: one message at a time, each retried within ``max_retries``."""
    taken: collections.deque[_Item] = collections.deque()

    def feed() -> Iterator[Composed]:
        for index, spec in enumerate(messages):
            item = bulk._prepare(index, spec, tally)
            if item is None:
                continue
            limiter.acquire_sync()
            bulk._started(tally, item)
            taken.append(item)
            yield item[1]

    for outcome in transport.send_many(feed()):
        index = taken.popleft()[0]
        if isinstance(outcome, FluxMailException) and stops_batch(outcome):
            raise tally.abort(outcome, index)
        _record(tally, index, outcome)


async def graph_batch_async(
    bulk: BulkSender,
    transport: AsyncGraphTransport,
    messages: Iterable[MessageSpec] | AsyncIterable[MessageSpec],
    tally: _Tally,
    limiter: RateLimiter,
    concurrency: int,
) -> None:
    """Up to ``concurrency`` requests in flight. When one error stops the batch, no new
    message starts; those already in flight finish and are recorded, then it is raised."""
    taken: collections.deque[_Item] = collections.deque()
    stop: list[tuple[int, FluxMailException]] = []

    async def feed() -> AsyncIterator[Composed]:
        index = 0
        async for spec in _each(messages):
            if stop:
                return
            item = bulk._prepare(index, spec, tally)
            index += 1
            if item is None:
                continue
            await limiter.acquire()
            bulk._started(tally, item)
            taken.append(item)
            yield item[1]

    # aclosing: if a callback raises, the requests in flight still finish before we leave
    async with contextlib.aclosing(transport.send_many(feed(), concurrency=concurrency)) as run:
        async for outcome in run:
            index = taken.popleft()[0]
            if isinstance(outcome, FluxMailException) and stops_batch(outcome) and not stop:
                stop.append((index, outcome))
                continue
            _record(tally, index, outcome)
    if stop:
        index, error = stop[0]
        raise tally.abort(error, index)
