"""The transport interface: where a composed message goes.

Every way fluxmail delivers a message is a :class:`Transport` (blocking) and an
:class:`AsyncTransport` (asyncio): SMTP (:mod:`.smtp`), the test capture
(:func:`fluxmail.testing.capture`), the console and file development transports
(:mod:`.dev`). The interface speaks only fluxmail's own types, a
:class:`~fluxmail.envelope.Composed` message in and a :class:`~fluxmail.smtp.SendResult`
or a :class:`~fluxmail.errors.FluxMailException` out, so an HTTP transport (Microsoft
Graph, say) can implement it without knowing about SMTP.

* ``send(composed)`` delivers one message (an SMTP transport retries what the delivery
  policy says may be retried, up to its ``max_retries``);
* ``send_many(items, hooks)`` delivers a stream of messages, in order, one outcome per
  message. An SMTP transport pipelines it: the next message's envelope goes out behind
  the current message's final dot, one round trip per message. ``hooks`` hear about each
  message at the two moments a journal and a rate limit need (see :class:`BatchHooks`);
* ``hold()`` / ``release()`` (async: ``hold_async()`` / ``release_async()``) keep one
  session open across sends; ``open()`` opens it now (so a wrong password shows up
  there); ``close()`` ends it; ``probe()`` opens a fresh session and closes it
  (``FluxMail.test_connection()``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..delivery import policy
from ..errors import FluxMailException, UnsupportedOperationError

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..smtp import SendResult

__all__ = [
    "AsyncBatchHooks",
    "AsyncTransport",
    "BatchHooks",
    "Item",
    "OwnItems",
    "Preparable",
    "SinkTransport",
    "Source",
    "Transport",
    "dotting",
]

#: One message of a batch: the caller's number for it and the message.
Item = tuple[int, "Composed"]


class Preparable(Protocol):
    """Items of a blocking batch that may be made ahead while a final dot is answered.

    A blocking ``send_many`` takes each item (``next()``) only at a safe point: no final
    dot on the wire without its reply read, every outcome so far recorded, so the
    caller's code it runs (an input iterator, a callback) can block, raise or see the
    process killed without leaving a message half known. ``prepare()`` is called while a
    final dot's replies are awaited: it makes the next item ready (composes it) running
    fluxmail's own code only, and keeps any error of that item for ``next()``. A plain
    iterable is never touched in the wait.
    """

    def __iter__(self) -> Iterator[Item]: ...

    def __next__(self) -> Item: ...

    def prepare(self) -> None: ...


class OwnItems:
    """:class:`Preparable` over an iterator that runs fluxmail's own code only (the
    fleet's chunk composing its claimed messages)."""

    def __init__(self, items: Iterator[Item]) -> None:
        self._items = items
        self._ready: Item | None = None
        self._ended = False

    def __iter__(self) -> OwnItems:
        return self

    def __next__(self) -> Item:
        if self._ready is not None:
            item, self._ready = self._ready, None
            return item
        return next(self._items)

    def prepare(self) -> None:
        if self._ready is None and not self._ended:
            self._ready = next(self._items, None)
            self._ended = self._ready is None


class BatchHooks(Protocol):
    """What a caller of :meth:`Transport.send_many` hears about each message.

    ``ready`` or ``start`` is called once per message, right before its envelope may be
    written (take its rate-limit slot, record it durably as being sent); ``finished``
    once, with its outcome after its retries, before anything is said about the next
    message; ``abandoned`` instead of ``finished`` when the batch stops (an error that
    stops it, KeyboardInterrupt, an exception from the input, cancellation) after the
    message was started but before its final dot could have been written: nothing of it
    was delivered, so it is deferred. A message whose final dot may have been written
    when the batch was interrupted gets neither: its outcome is unknown.

    Optionally, ``dotting(key)``: called right before the first byte of the message's
    data is written, so right before its final dot may be: over SMTP once the server
    accepted its envelope (its ``354`` read), before each try and before each follow-up
    transaction for recipients deferred with 452; a transport without SMTP transactions
    calls it right before handing the message over. It is for a caller that notes
    durably which messages may have reached the server (the Celery fleet): a message
    whose ``dotting`` was never called cannot have been delivered, wherever the process
    stopped. Every ``send_many`` calls it when present (:func:`dotting`). An exception
    from it stops the batch before any byte of the data is written (an open DATA cannot
    be ended without its dot: the connection is dropped) and the message is abandoned
    (unknown instead if it raises before a 452 follow-up: the first transaction may
    have delivered it).
    """

    def ready(self, key: int, composed: Composed) -> bool:
        """Without waiting: may the message go out now, behind the previous message's
        final dot? True: it was started. False: its turn is not due; it waits.

        Args:
            key: the caller's number for the message (from its :data:`Item`).
            composed: the message.

        Returns:
            Whether the message was started (as :meth:`start` would have).
        """
        ...

    def start(self, key: int, composed: Composed) -> None:
        """Wait for the message's turn (its rate-limit slot), then start it.

        Called right before the message's envelope may be written; a journal records
        it as being sent here, durably, before any byte of it leaves.

        Args:
            key: the caller's number for the message.
            composed: the message.
        """
        ...

    def finished(self, key: int, outcome: SendResult | FluxMailException) -> None:
        """The message's outcome, after its retries (once per message, in order).

        Args:
            key: the caller's number for the message.
            outcome: the server's acceptance, or the error that failed it (the delivery
                policy says whether that is refused, deferred or unknown).
        """
        ...

    def abandoned(self, key: int, error: BaseException) -> None:
        """The batch stopped after the message was started but before its final dot
        could have been written: nothing of it was delivered (it is deferred).

        Args:
            key: the caller's number for the message.
            error: what stopped the batch (a FluxMailException, KeyboardInterrupt, ...).
        """
        ...


def dotting(hooks: object, key: int) -> None:
    """Call the hooks' optional ``dotting(key)`` (see :class:`BatchHooks`)."""
    note = getattr(hooks, "dotting", None)
    if note is not None:
        note(key)


def _dotting_or_abandon(hooks: BatchHooks | AsyncBatchHooks, key: int) -> None:
    """:func:`dotting` before a message is handed over; what it raises stops the batch,
    the message abandoned (nothing of it was handed over)."""
    try:
        dotting(hooks, key)
    except BaseException as exc:
        hooks.abandoned(key, exc)
        raise


class AsyncBatchHooks(Protocol):
    """:class:`BatchHooks` for :meth:`AsyncTransport.send_many_async` (``start`` may
    await; ``ready`` is called from inside the send, so it never waits)."""

    def ready(self, key: int, composed: Composed) -> bool:
        """As :meth:`BatchHooks.ready` (never waits)."""
        ...

    async def start(self, key: int, composed: Composed) -> None:
        """As :meth:`BatchHooks.start`, awaiting the rate-limit slot."""
        ...

    def finished(self, key: int, outcome: SendResult | FluxMailException) -> None:
        """As :meth:`BatchHooks.finished`."""
        ...

    def abandoned(self, key: int, error: BaseException) -> None:
        """As :meth:`BatchHooks.abandoned`."""
        ...


class Source(Protocol):
    """The input of an async batch (an ``asyncio.Queue`` fits): ``None`` ends it."""

    async def get(self) -> Item | None:
        """The next item, waiting for one; ``None`` ends the batch."""
        ...

    def get_nowait(self) -> Item | None:
        """The next item if one is waiting; raises ``asyncio.QueueEmpty`` if not."""
        ...


class Transport(ABC):
    """Blocking delivery of composed messages."""

    name: str = "transport"

    @abstractmethod
    def send(self, composed: Composed) -> SendResult:
        """Deliver one message; raises a FluxMailException when it was not accepted."""

    def send_many(self, items: Iterable[Item], hooks: BatchHooks) -> None:
        """Deliver every item in order (see :class:`BatchHooks`); raises the error that
        stops the batch (the delivery policy's "stops" rows). This default sends one
        message at a time with :meth:`send`."""
        for key, composed in items:
            hooks.start(key, composed)
            _dotting_or_abandon(hooks, key)
            try:
                result = self.send(composed)
            except FluxMailException as exc:
                if policy.stops_batch(exc):
                    hooks.abandoned(key, exc)
                    raise
                hooks.finished(key, exc)
            else:
                hooks.finished(key, result)

    def hold(self) -> None:
        """Keep one session open across sends until :meth:`release`."""
        return None  # (no session to keep by default)

    def release(self) -> None:
        """End one :meth:`hold`; the session closes when none is left."""
        return None  # (no session to keep by default)

    def open(self) -> None:
        """Open the held session now (connect, TLS, AUTH); a no-op without sessions."""
        return None  # (no session to keep by default)

    def close(self) -> None:
        """Close the open session, if any."""
        return None  # (no session to keep by default)

    def probe(self) -> dict[str, Any]:
        """Open a fresh session and close it; return what it learned (diagnostics)."""
        raise UnsupportedOperationError(f"the {self.name} transport has no connection to test")


class AsyncTransport(ABC):
    """asyncio delivery of composed messages (the twin of :class:`Transport`)."""

    name: str = "transport"

    @abstractmethod
    async def send_async(self, composed: Composed) -> SendResult:
        """Deliver one message (no retries: the API page says so for send_async)."""

    async def send_many_async(self, source: Source, hooks: AsyncBatchHooks) -> None:
        """Deliver items from ``source`` until it gives ``None``; see :meth:`Transport.
        send_many` (this one retries as the sync one does)."""
        while (item := await source.get()) is not None:
            key, composed = item
            await hooks.start(key, composed)
            _dotting_or_abandon(hooks, key)
            try:
                result = await self.send_async(composed)
            except FluxMailException as exc:
                if policy.stops_batch(exc):
                    hooks.abandoned(key, exc)
                    raise
                hooks.finished(key, exc)
            else:
                hooks.finished(key, result)

    def hold_async(self) -> None:
        """Keep one session open across async sends until :meth:`release_async`."""
        return None  # (no session to keep by default)

    async def release_async(self) -> None:
        """End one :meth:`hold`; the session closes when none is left."""
        return None  # (no session to keep by default)

    async def close_async(self) -> None:
        """Close the open session, if any."""
        return None  # (no session to keep by default)


class SinkTransport(Transport, AsyncTransport):
    """A transport without a connection (capture, console, file): ``deliver`` takes the
    message and returns what a server that accepted it would say."""

    @abstractmethod
    def deliver(self, composed: Composed) -> SendResult: ...

    def send(self, composed: Composed) -> SendResult:
        return self.deliver(composed)

    async def send_async(self, composed: Composed) -> SendResult:
        return self.deliver(composed)
