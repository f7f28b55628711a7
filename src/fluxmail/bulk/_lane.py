"""The async pool's input: one bounded line of composed messages between the task that
composes them and the connections' tasks that send them.

It is the transport's ``Source`` (``get`` / ``get_nowait``) and does what an
``asyncio.Queue`` with a watchdog did, with fewer wake-ups per message:

- the producer puts at once while there is room (no task, no wait); when the line is
  full it sleeps until the connections have taken half of it, then composes that half in
  one go, instead of waking for each message taken;
- a connection's task that ends (an error that stops the batch, a cancellation, the end
  of the input) wakes a waiting producer at once; the producer then raises that task's
  error rather than wait for room no task will make (the job of a task per put and an
  ``asyncio.wait`` over every connection before);
- a connection waits for an item on one future of its own, woken in turn.

Nothing here decides anything about a message: what is started, journaled, retried or
abandoned stays with the hooks and the transport.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from ..transports.base import Item


class Lane:
    """A FIFO of at most ``size`` items (``None`` ends one connection's run)."""

    def __init__(self, size: int) -> None:
        self._items: deque[Item | None] = deque()
        self._size = size
        self._low = size // 2  # a waiting producer is woken once the line is this short
        self._loop = asyncio.get_running_loop()
        self._takers: deque[asyncio.Future[None]] = deque()
        self._room: asyncio.Future[None] | None = None  # the waiting producer's
        self._workers: list[asyncio.Task[None]] = []
        self.running = True  # False once any connection's task has ended

    def serve(self, workers: Iterable[asyncio.Task[None]]) -> None:
        """The tasks taking from this line; the first to end turns ``running`` off."""
        for task in workers:
            self._workers.append(task)
            task.add_done_callback(self._ended)

    def _ended(self, _: asyncio.Task[None]) -> None:
        self.running = False
        self._wake_producer()

    # --- the producer's side ------------------------------------------------------------

    def push(self, item: Item | None) -> bool:
        """Put ``item`` at once if there is room and every connection runs; False if not
        (then ``await put(item)``)."""
        if not self.running or len(self._items) >= self._size:
            return False
        self._append(item)
        return True

    async def put(self, item: Item | None) -> None:
        """Put ``item``, waiting for room; raises the error of a connection's task that
        stopped the batch (or RuntimeError if none is left to take it)."""
        while True:
            if not self.running:
                self._check_workers()
            if len(self._items) < self._size:
                break
            room = self._room = self._loop.create_future()
            try:
                await room
            finally:
                self._room = None
        self._append(item)

    def _check_workers(self) -> None:
        for task in self._workers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if all(task.done() for task in self._workers):
            raise RuntimeError("every BulkSender worker has stopped")

    def _append(self, item: Item | None) -> None:
        self._items.append(item)
        self._wake_taker()

    def _wake_taker(self) -> None:
        takers = self._takers
        while takers:
            taker = takers.popleft()
            if not taker.done():
                taker.set_result(None)
                break

    def _wake_producer(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    # --- the connections' side (the transport's Source) ---------------------------------

    def get_nowait(self) -> Item | None:
        """The next item; raises ``asyncio.QueueEmpty`` if none is waiting."""
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if self._room is not None and len(items) <= self._low:
            self._wake_producer()
        return item

    async def get(self) -> Item | None:
        """The next item, waiting for one."""
        while not self._items:
            taker = self._loop.create_future()
            self._takers.append(taker)
            try:
                await taker
            except BaseException:
                if not taker.cancel():  # woken, then cancelled: the next one's turn
                    if self._items:
                        self._wake_taker()
                elif taker in self._takers:
                    self._takers.remove(taker)
                raise
        return self.get_nowait()
