"""Microsoft Graph on the delivery spine: one :class:`~.base.Transport` and
:class:`~.base.AsyncTransport` over the two Graph transports of ``graph.py``, sharing one
throttle, built by the factory (which applies the test capture).

``send_many`` is the interface's one-at-a-time loop over ``send()`` (which retries within
``max_retries`` and waits out Graph's throttling); ``send_many_async`` does the same with
the async transport's retrying send, so BulkSender's pool of ``connections`` workers is
the number of requests in flight. The delivery policy decides what is retried, what is
recorded and what stops a batch (its ``graph_*`` rows).

A worker cancelled while its request is in flight (a batch stopped by another worker's
error, KeyboardInterrupt, asyncio cancellation) lets that request finish, reports its
outcome, then stops: cancelling an HTTP request half-way would leave its outcome unknown
(the journal could never resend it) and, cancelled while connecting, leaves the new
connection's socket unclosed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..delivery import policy
from ..errors import FluxMailException
from ._graph_wire import GraphConfig, Throttle
from .base import AsyncBatchHooks, AsyncTransport, Source, Transport
from .graph import AsyncGraphTransport, GraphTransport, uninterrupted

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..smtp import SendResult

__all__ = ["GraphPair"]


class GraphPair(Transport, AsyncTransport):
    """What a ``FluxMail(object_type="graph")`` holds (inside the factory's Switch)."""

    name = "Microsoft Graph"

    def __init__(self, config: GraphConfig, *, max_retries: int = 0, retry_delay: float = 1.0):
        throttle = Throttle()  # one per mailer: sync and async requests wait alike
        options: dict[str, Any] = {
            "max_retries": max_retries,
            "retry_delay": retry_delay,
            "throttle": throttle,
        }
        self.config = config
        self.sync = GraphTransport(config, **options)
        self.aio = AsyncGraphTransport(config, **options)
        self._holding = 0

    def __repr__(self) -> str:
        return f"<GraphPair {self.config.graph_url} {self.config.username!r}>"

    # --- Transport -----------------------------------------------------------------------

    def send(self, composed: Composed) -> SendResult:
        return self.sync.send(composed)

    def create_draft(self, composed: Composed) -> tuple[str, str]:
        return self.sync.create_draft(composed)

    def probe(self) -> dict[str, Any]:
        return self.sync.probe()

    def hold(self) -> None:
        self._holding += 1

    def release(self) -> None:
        """The pool stays open between sends; the end of the last ``with`` closes it."""
        self._holding = max(0, self._holding - 1)
        if self._holding == 0:
            self.sync.close()

    def close(self) -> None:
        self.sync.close()

    # --- AsyncTransport ------------------------------------------------------------------

    async def send_async(self, composed: Composed) -> SendResult:
        return await self.aio.send(composed)

    async def send_many_async(self, source: Source, hooks: AsyncBatchHooks) -> None:
        self.aio.hold()  # one pool for the batch, shared by its workers
        try:
            while (item := await source.get()) is not None:
                key, composed = item
                await hooks.start(key, composed)
                outcome, cancelled = await _in_flight(self.aio.send_retrying(composed))
                if isinstance(outcome, FluxMailException) and policy.stops_batch(outcome):
                    hooks.abandoned(key, outcome)
                    if not cancelled:
                        raise outcome
                else:
                    hooks.finished(key, outcome)
                if cancelled:
                    raise asyncio.CancelledError
        finally:
            await self.aio.release()

    def hold_async(self) -> None:
        self.aio.hold()

    async def release_async(self) -> None:
        await self.aio.release()

    async def close_async(self) -> None:
        await self.aio.aclose()


async def _in_flight(
    send: Awaitable[SendResult],
) -> tuple[SendResult | FluxMailException, bool]:
    """What ``send`` ended with, and whether the caller was cancelled while it ran (a
    cancellation waits for it instead of interrupting it; see the module docstring)."""
    task, cancelled = await uninterrupted(send)
    try:
        return task.result(), cancelled
    except FluxMailException as exc:
        return exc, cancelled
