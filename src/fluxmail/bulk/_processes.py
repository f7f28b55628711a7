"""Composing a batch in worker processes, for ``BulkSender(..., compose_processes=N)``.

Validation and composition (``build_message`` + ``compose``, DKIM signing included) are
pure functions of a message's ``create()`` arguments: they are the one part of a batch that
can leave the event loop's process without moving any rule that keeps delivery exactly
once. So only they move. The event loop keeps everything else: the journal (each message's
``sending`` record before its envelope may be written, each outcome), the rate limit, the
callbacks, the connections and the policy. A worker process never talks to a server, so
an interrupted or cancelled batch leaves nothing half-sent in a worker: at worst a chunk
of composed messages that were never started, which the next run sends.

What a worker sends back, per message, is either the :class:`~fluxmail.envelope.Composed`
message or the exception composing it raised (fluxmail's errors pickle with every
attribute, ``.code`` included): the parent then treats it exactly as if it had composed
the message itself (:meth:`BulkSender._refuse`). When a chunk cannot make the trip at all
(an argument that does not pickle, such as an open file; a worker that died), the parent
composes that chunk itself: nothing is lost, and every message is still composed once.

The workers hold a copy of the mailer without its connection settings (no password or
token crosses to them) and without its transport.
"""

from __future__ import annotations

import asyncio
import copy
import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import TYPE_CHECKING, Union

from ..envelope import Composed
from ..errors import ConfigurationError
from ._state import MessageSpec

if TYPE_CHECKING:
    from ..mailer._facade import FluxMail

#: messages per trip to a worker: big enough that a trip's fixed cost (two pickles, a
#: pipe write, a wake-up) is a small share of composing them, small enough that the first
#: messages reach the connections quickly
CHUNK = 32

Order = tuple[int, str, MessageSpec, "str | None"]  # index, journal key, spec, Message-ID
# what composing one message gave (Union: the alias is evaluated at run time, on 3.10 too)
Made = Union[Composed, Exception]  # noqa: UP007

_worker_mailer: FluxMail | None = None  # in a worker: the portable copy of the mailer


def portable(mailer: FluxMail) -> FluxMail:
    """A copy of ``mailer`` that composes as it does and pickles: no transport, no pending
    message, no connection settings (the password and the token stay in this process)."""
    clone = copy.copy(mailer)
    clone.__dict__.update(transport=None, _pending=None, config=None)
    return clone


def compose_one(mailer: FluxMail, spec: MessageSpec, message_id: str | None) -> Composed:
    """The one way BulkSender composes a message, in this process or in a worker."""
    if not isinstance(spec, Mapping):
        raise ConfigurationError("each message must be a dict of create() arguments")
    return mailer.compose(mailer.build_message(**spec), message_id=message_id)


def _start_worker(mailer: FluxMail) -> None:
    global _worker_mailer
    _worker_mailer = mailer
    # Ctrl-C is the parent's to handle (it stops the batch); a worker that died of it
    # would only print a traceback per process
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _compose_chunk(orders: Sequence[tuple[MessageSpec, str | None]]) -> list[Made]:
    """In a worker: each message composed, or the exception that composing it raised."""
    mailer = _worker_mailer
    assert mailer is not None
    made: list[Made] = []
    for spec, message_id in orders:
        try:
            made.append(compose_one(mailer, spec, message_id))
        except Exception as exc:  # given back in order: the parent decides what it means
            made.append(exc)
    return made


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` where there is one (POSIX), else ``spawn`` (Windows).

    Workers forked from this process would copy its threads mid-flight (an HTTP server, a
    thread pool); the fork server is a clean process. Unless something started it
    already, it preloads this module, so that each worker starts with fluxmail imported.
    (Each worker still imports the main module, as with ``spawn``: a script keeps its
    batch under ``if __name__ == "__main__":``.)"""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # (no effect once the server runs)
    return context


class ComposePool:
    """Worker processes composing chunks of a batch, a bounded number of chunks ahead.

    One task reads the input and ``submit()``s chunks (waiting in ``room()`` while
    ``depth`` chunks are out); another takes them back with ``next()``, in submission
    order, as soon as each is back, whatever the reader is waiting for (a slow input
    does not hold back what is already composed). ``end()`` says no more chunks will
    come. ``local`` composes one message in this process (the fallback).
    """

    def __init__(
        self,
        mailer: FluxMail,
        processes: int,
        local: Callable[[MessageSpec, str | None], Composed],
    ) -> None:
        self._local = local
        self._executor: Executor = ProcessPoolExecutor(
            processes,
            mp_context=_context(),
            initializer=_start_worker,
            initargs=(portable(mailer),),
        )
        self._ahead: deque[tuple[list[Order], asyncio.Future[list[Made]]]] = deque()
        self._changed = asyncio.Event()  # a chunk was submitted or taken back, or end()
        self._ended = False
        self.processes = processes
        self.depth = 2 * processes  # chunks out: every worker has its next one

    @property
    def idle(self) -> bool:
        """Some worker has nothing to do: a chunk should go now, however small."""
        return len(self._ahead) < self.processes

    async def room(self) -> None:
        """Wait until fewer than ``depth`` chunks are out."""
        while len(self._ahead) >= self.depth:
            self._changed.clear()
            await self._changed.wait()

    def submit(self, orders: list[Order]) -> None:
        loop = asyncio.get_running_loop()
        work = [(spec, message_id) for _, _, spec, message_id in orders]
        try:
            future = loop.run_in_executor(self._executor, _compose_chunk, work)
        except RuntimeError as exc:  # the pool broke: compose here from now on
            future = loop.create_future()
            future.set_exception(exc)
        self._ahead.append((orders, future))
        self._changed.set()

    def end(self) -> None:
        self._ended = True
        self._changed.set()

    async def next(self) -> list[tuple[Order, Made]] | None:
        """The oldest chunk's orders with what composing each gave; None after ``end()``
        once every chunk was taken back."""
        while not self._ahead:
            if self._ended:
                return None
            self._changed.clear()
            await self._changed.wait()
        orders, future = self._ahead[0]
        try:
            made = await future
        except asyncio.CancelledError:
            raise
        except Exception:  # the chunk did not make the trip: compose it here
            made = [self._made_here(spec, message_id) for _, _, spec, message_id in orders]
        self._ahead.popleft()
        self._changed.set()
        return list(zip(orders, made, strict=True))

    def _made_here(self, spec: MessageSpec, message_id: str | None) -> Made:
        try:
            return self._local(spec, message_id)
        except Exception as exc:
            return exc

    def close(self) -> None:
        """Stop the workers; chunks not started are dropped (their messages were never
        started either: nothing about them was journaled)."""
        for _, future in self._ahead:
            future.cancel()
        self._ahead.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)
