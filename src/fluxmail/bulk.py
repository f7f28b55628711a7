"""BulkSender: many messages over one (or a few) held SMTP connections.

Each message is a dict of ``create()`` arguments. Messages are validated and composed one
at a time, so a generator of 100,000 messages runs in constant memory. The rules:

- a bad message (invalid address, missing attachment) fails alone; the batch goes on;
- a 5xx reply fails that message only; a 4xx reply or a dropped connection before the end
  of DATA is retried (reconnecting if needed) up to the mailer's ``max_retries``;
- a connection lost after the final '.' leaves that message's outcome unknown: it is
  reported with code ``outcome_unknown`` and *not* resent; the batch reconnects and goes on;
- a configuration problem (bad credentials, TLS refused or unverifiable, the server
  unreachable) stops the batch: the error is raised with ``.batch_result`` holding the
  counts so far, instead of failing every remaining message one by one;
- with ``journal="run.jsonl"`` every message's progress is recorded (see ``_journal``), and
  a run started again with the same journal and the same messages (after a crash, a kill,
  a stopped batch) sends exactly the rest: done messages are skipped, and one whose
  outcome a crash left unknown is reported and not resent unless ``resend_unknown=True``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import (
    AsyncIterable,
    Iterable,
    Iterator,
    Mapping,
)
from typing import TYPE_CHECKING, TypeVar

from ._bulk_state import (
    BulkResult,
    MessageSpec,
    OnError,
    OnSuccess,
    _Ahead,
    _Attempts,
    _each,
    _is_fatal,
    _Item,
    _offer,
    _Tally,
    _total,
)
from ._journal import DONE, UNKNOWN, Journal, JournalMismatchError, message_key
from ._progress import make_progress
from ._ratelimit import RateLimiter
from .envelope import Composed
from .errors import (
    ConfigurationError,
    FluxMailException,
    MissingDependencyError,
    UnsupportedOperationError,
)
from .smtp import AsyncSMTPConnection, SMTPConnection

if TYPE_CHECKING:
    from ._facade import FluxMail
    from .config import SmtpConfig
    from .smtp._protocol import Upcoming
    from .transports.sink import Sink

_Conn = TypeVar("_Conn", SMTPConnection, AsyncSMTPConnection)
_T = TypeVar("_T")


class BulkSender:
    """``BulkSender(mailer).send_batch(messages)`` -> ``{"sent", "failed", "total", "errors"}``.

    ``connections`` (async only) opens a pool of that many connections; the default is
    one persistent connection, as the API page describes.

    ``journal`` (a file path) makes a batch resumable: run it again with the same journal
    and the same messages and only the rest is sent (the result then also has
    ``"skipped"``). ``resend_unknown=True`` also resends, with their original Message-ID,
    the messages whose outcome is unknown (a crash or a lost connection after the final
    dot). ``journal_fsync=False`` saves one fsync per message at the price of durability
    across a power loss (see ``docs/guide.md``).
    """

    def __init__(
        self,
        mailer: FluxMail,
        *,
        connections: int = 1,
        journal: str | os.PathLike[str] | None = None,
        resend_unknown: bool = False,
        journal_fsync: bool = True,
    ) -> None:
        if mailer.object_type.value == "outlook":
            raise UnsupportedOperationError("BulkSender needs an SMTP (or console/file) mailer")
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
            raise ConfigurationError("connections must be a whole number >= 1")
        if journal is not None and not isinstance(journal, (str, os.PathLike)):
            raise ConfigurationError("journal must be a file path")
        for name, flag in (("resend_unknown", resend_unknown), ("journal_fsync", journal_fsync)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False")
        self.mailer = mailer
        self.connections = connections
        self.journal = journal
        self.resend_unknown = resend_unknown
        self.journal_fsync = journal_fsync
        self._config: SmtpConfig | None = getattr(mailer, "config", None)

    @property
    def config(self) -> SmtpConfig:
        """The SMTP settings of the mailer (console/file mailers have none)."""
        if self._config is None:
            kind = self.mailer.object_type.value
            raise UnsupportedOperationError(f"a {kind} mailer has no SMTP connection")
        return self._config

    def _open_journal(self) -> Journal | None:
        if self.journal is None:
            return None
        return Journal(self.journal, fsync=self.journal_fsync)

    def _compose(self, spec: MessageSpec, message_id: str | None = None) -> Composed:
        if not isinstance(spec, Mapping):
            raise ConfigurationError("each message must be a dict of create() arguments")
        return self.mailer.compose(self.mailer.build_message(**spec), message_id=message_id)

    def _to_sink(self, sink: Sink, index: int, spec: MessageSpec, tally: _Tally) -> None:
        """One message to a capture or a console/file transport: no connection, no retry
        and no rate limit, but the same validation, composition and reporting."""
        item = self._prepare(index, spec, tally)
        if item is None:
            return
        self._started(tally, item)
        try:
            result = sink.deliver(item[1])
        except FluxMailException as exc:
            tally.failure(index, exc)
            return
        tally.success(index, result)

    def _prepare(self, index: int, spec: MessageSpec, tally: _Tally) -> _Item | None:
        """The message ready to send, or None when it failed validation or the journal
        says an earlier run finished it (or left its outcome unknown)."""
        tally.result["total"] += 1
        journal, key, message_id = tally.journal, "", None
        try:
            if journal is not None:
                key = message_key(spec) if isinstance(spec, Mapping) else ""
                entry = journal.check(index, key)
                if entry is not None:
                    if entry.state in DONE:
                        tally.skip()
                        return None
                    if entry.state in UNKNOWN and not self.resend_unknown:
                        tally.failure(index, entry.unknown_error(index))
                        return None
                    message_id = entry.message_id
            return index, self._compose(spec, message_id), key
        except FluxMailException as exc:
            if isinstance(exc, (MissingDependencyError, JournalMismatchError)):
                raise tally.abort(exc) from None
            tally.failure(index, exc)
            return None

    @staticmethod
    def _started(tally: _Tally, item: _Item) -> None:
        """Record, durably, that the message may reach the server from now on."""
        if tally.journal is not None:
            index, composed, key = item
            tally.journal.sending(index, key, composed.message_id)

    # --- sync -------------------------------------------------------------------------

    def send_batch(
        self,
        messages: Iterable[MessageSpec],
        on_success: OnSuccess | None = None,
        on_error: OnError | None = None,
        progress: bool | None = None,
        *,
        max_per_second: float = 0,
    ) -> BulkResult:
        """Send every message over one held connection; see the module docstring."""
        limiter = RateLimiter(max_per_second)
        sink = self.mailer._sink_for_send()
        journal = self._open_journal()
        try:
            with make_progress(progress, _total(messages)) as bar:
                tally = _Tally(on_success, on_error, bar, journal)
                if sink is not None:
                    for index, spec in enumerate(messages):
                        self._to_sink(sink, index, spec, tally)
                    return tally.result
                graph = getattr(self.mailer, "_graph", None)
                if graph is not None:  # Microsoft Graph: its own loop (transports/_graph_bulk)
                    from .transports._graph_bulk import graph_batch

                    graph_batch(self, graph, messages, tally, limiter)
                    return tally.result
                conn = SMTPConnection(self.config)
                try:
                    items = self._items(messages, tally)
                    ahead = _Ahead(self, tally, limiter)
                    item = next(items, None)
                    while item is not None:
                        ahead.item = next(items, None)  # prepared before the dot of item
                        if not ahead.started(item):
                            limiter.acquire_sync()
                            self._started(tally, item)
                        try:
                            conn = self._deliver(conn, item[0], item[1], tally, ahead.upcoming)
                        except FluxMailException as exc:
                            ahead.release(exc)
                            raise
                        item = ahead.item
                finally:
                    conn.close()
            return tally.result
        finally:
            if journal is not None:
                journal.close()

    def _items(self, messages: Iterable[MessageSpec], tally: _Tally) -> Iterator[_Item]:
        for index, spec in enumerate(messages):
            item = self._prepare(index, spec, tally)
            if item is not None:
                yield item

    def _deliver(
        self,
        conn: SMTPConnection,
        index: int,
        composed: Composed,
        tally: _Tally,
        upcoming: Upcoming | None = None,
    ) -> SMTPConnection:
        attempts = _Attempts(self.mailer.max_retries, self.mailer.retry_delay)
        lost = conn.lost_ahead(composed)  # its envelope went out ahead, then the connection
        while True:
            reused = conn.is_open or lost is not None
            opened = reused
            try:
                if lost is not None:
                    error, lost = lost, None
                    raise error
                if not reused:
                    conn = SMTPConnection(self.config)
                    conn.open()
                    opened = True
                tally.success(index, conn.send_pipelined(composed, upcoming))
                return conn
            except FluxMailException as exc:
                error = exc
            wait = attempts.after(error, reused=reused, still_open=conn.is_open)
            if wait is None:
                return self._give_up(conn, index, error, tally, opened)
            time.sleep(wait)

    @staticmethod
    def _give_up(
        conn: _Conn, index: int, error: FluxMailException, tally: _Tally, opened: bool
    ) -> _Conn:
        if _is_fatal(error) or not opened:
            raise tally.abort(error, index)
        tally.failure(index, error)
        return conn

    # --- async ------------------------------------------------------------------------

    async def send_batch_async(
        self,
        messages: Iterable[MessageSpec] | AsyncIterable[MessageSpec],
        max_per_second: float = 0,
        progress: bool | None = None,
        on_success: OnSuccess | None = None,
        on_error: OnError | None = None,
        *,
        connections: int | None = None,
    ) -> BulkResult:
        """The asyncio twin of :meth:`send_batch`, with an optional pool of connections.

        ``max_per_second`` holds across all connections of the pool."""
        journal = self._open_journal()
        try:
            return await self._batch_async(
                messages, max_per_second, progress, on_success, on_error, connections, journal
            )
        finally:
            if journal is not None:
                journal.close()

    async def _batch_async(
        self,
        messages: Iterable[MessageSpec] | AsyncIterable[MessageSpec],
        max_per_second: float,
        progress: bool | None,
        on_success: OnSuccess | None,
        on_error: OnError | None,
        connections: int | None,
        journal: Journal | None,
    ) -> BulkResult:
        pool = connections or self.connections
        limiter = RateLimiter(max_per_second)
        sink = self.mailer._sink_for_send()
        if sink is not None:
            with make_progress(progress, _total(messages)) as bar:
                tally = _Tally(on_success, on_error, bar, journal)
                index = 0
                async for spec in _each(messages):
                    self._to_sink(sink, index, spec, tally)
                    index += 1
            return tally.result
        graph = getattr(self.mailer, "_async_graph", None)
        if graph is not None:  # Microsoft Graph: its own loop (transports/_graph_bulk)
            from .transports._graph_bulk import graph_batch_async

            with make_progress(progress, _total(messages)) as bar:
                tally = _Tally(on_success, on_error, bar, journal)
                await graph_batch_async(self, graph, messages, tally, limiter, pool)
            return tally.result
        queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=2 * pool)
        with make_progress(progress, _total(messages)) as bar:
            tally = _Tally(on_success, on_error, bar, journal)
            workers = [
                asyncio.create_task(self._worker(queue, limiter, tally)) for _ in range(pool)
            ]
            try:
                await self._produce(messages, queue, tally, workers)
                for _ in workers:  # (a worker that stopped the batch raises here)
                    await _offer(queue, None, workers)
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        return tally.result

    async def _produce(
        self,
        messages: Iterable[MessageSpec] | AsyncIterable[MessageSpec],
        queue: asyncio.Queue[_Item | None],
        tally: _Tally,
        workers: list[asyncio.Task[None]],
    ) -> None:
        async def put(index: int, spec: MessageSpec) -> None:
            item = self._prepare(index, spec, tally)
            if item is None:
                return
            await _offer(queue, item, workers)

        if isinstance(messages, AsyncIterable):
            index = 0
            async for spec in messages:
                await put(index, spec)
                index += 1
        else:
            for index, spec in enumerate(messages):
                await put(index, spec)

    async def _worker(
        self,
        queue: asyncio.Queue[_Item | None],
        limiter: RateLimiter,
        tally: _Tally,
    ) -> None:
        conn = AsyncSMTPConnection(self.config)
        ahead = _Ahead(self, tally, limiter, queue)
        try:
            while True:
                item, ahead.item = ahead.item, None
                if item is None and not ahead.finished:
                    item = await queue.get()
                if item is None:
                    break
                index, composed, _ = item
                if not ahead.started(item):
                    await limiter.acquire()
                    self._started(tally, item)
                try:
                    conn = await self._deliver_async(conn, index, composed, tally, ahead.upcoming)
                except FluxMailException as exc:
                    ahead.release(exc)
                    raise
        finally:
            await conn.close()

    async def _deliver_async(
        self,
        conn: AsyncSMTPConnection,
        index: int,
        composed: Composed,
        tally: _Tally,
        upcoming: Upcoming | None = None,
    ) -> AsyncSMTPConnection:
        attempts = _Attempts(self.mailer.max_retries, self.mailer.retry_delay)
        lost = conn.lost_ahead(composed)  # its envelope went out ahead, then the connection
        while True:
            reused = conn.is_open or lost is not None
            opened = reused
            try:
                if lost is not None:
                    error, lost = lost, None
                    raise error
                if not reused:
                    conn = AsyncSMTPConnection(self.config)
                    await conn.open()
                    opened = True
                tally.success(index, await conn.send_pipelined(composed, upcoming))
                return conn
            except FluxMailException as exc:
                error = exc
            wait = attempts.after(error, reused=reused, still_open=conn.is_open)
            if wait is None:
                return self._give_up(conn, index, error, tally, opened)
            await asyncio.sleep(wait)


__all__ = ["BulkResult", "BulkSender"]
