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
  outcome a crash left unknown is reported and not resent unless ``resend_unknown=True``;
- a batch stopped in the process (KeyboardInterrupt, an exception from ``messages``,
  asyncio cancellation) journals the message written ahead behind the previous final dot
  as deferred (none of its data left), so the next run sends it.

What is retried, what stops a batch and what the journal records is the delivery policy's
table (:mod:`fluxmail.delivery.policy`); the delivery loop is the mailer's transport's
``send_many`` (pipelined over SMTP), fed with hooks from ``_bulk_state``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncIterable,
    Iterable,
    Mapping,
)
from typing import TYPE_CHECKING

from ..delivery._journal import DONE, UNKNOWN, Journal, JournalMismatchError, message_key
from ..delivery._ratelimit import RateLimiter
from ..envelope import Composed
from ..errors import (
    ConfigurationError,
    FluxMailException,
    MissingDependencyError,
    UnsupportedOperationError,
)
from ._lane import Lane
from ._processes import CHUNK, ComposePool, Made, Order, compose_one
from ._progress import make_progress
from ._source import StagedSpecs
from ._state import (
    BulkResult,
    MessageSpec,
    OnError,
    OnSuccess,
    _AsyncHooks,
    _each,
    _Hooks,
    _Item,
    _Tally,
    _total,
)

if TYPE_CHECKING:
    from ..config import SmtpConfig
    from ..mailer._facade import FluxMail
    from ..transports.factory import Switch


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

    Args:
        mailer: the FluxMail whose settings, transport, sender and DKIM key are used
            (SMTP, Graph, console or file; not Outlook).
        connections: the size of ``send_batch_async``'s connection pool.
        journal: a file that makes the batch resumable.
        resend_unknown: with a journal, resend messages whose outcome is unknown.
        journal_fsync: fsync the journal after each record.
        compose_processes: ``send_batch_async`` only: validate and compose the messages
            in that many worker processes while the event loop only sends (see
            ``docs/bulk.md``); 0, the default, composes in the event loop.

    Raises:
        UnsupportedOperationError: ``unsupported_operation``: an Outlook mailer.
        ConfigurationError: ``invalid_option``: a bad ``connections``, ``journal`` or flag.

    Example:
        ```python
        messages = [{"subject": f"Report {n}", "recipients": [f"user{n}@example.org"],
                     "body": "..."} for n in range(3)]
        result = BulkSender(mailer).send_batch(messages, progress=False)
        assert (result["sent"], result["failed"], result["total"]) == (3, 0, 3)
        ```
    """

    def __init__(
        self,
        mailer: FluxMail,
        *,
        connections: int = 1,
        journal: str | os.PathLike[str] | None = None,
        resend_unknown: bool = False,
        journal_fsync: bool = True,
        compose_processes: int = 0,
    ) -> None:
        if mailer.object_type.value == "outlook":
            raise UnsupportedOperationError("BulkSender needs an SMTP (or console/file) mailer")
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
            raise ConfigurationError("connections must be a whole number >= 1")
        if (
            isinstance(compose_processes, bool)
            or not isinstance(compose_processes, int)
            or compose_processes < 0
        ):
            raise ConfigurationError("compose_processes must be a whole number >= 0")
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
        self.compose_processes = compose_processes
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
        return compose_one(self.mailer, spec, message_id)

    def _prepare(self, index: int, spec: MessageSpec, tally: _Tally) -> _Item | None:
        """The message ready to send, or None when it failed validation or the journal
        says an earlier run finished it (or left its outcome unknown)."""
        try:
            admitted = self._admit(index, spec, tally)
            if admitted is None:
                return None
            key, message_id = admitted
            return index, self._compose(spec, message_id), key
        except FluxMailException as exc:
            self._refuse(index, exc, tally)
            return None

    def _admit(
        self, index: int, spec: MessageSpec, tally: _Tally
    ) -> tuple[str, str | None] | None:
        """Count the message and ask the journal: its key and the Message-ID to compose it
        with, or None when an earlier run finished it (or left its outcome unknown)."""
        tally.result["total"] += 1
        journal, key, message_id = tally.journal, "", None
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
        return key, message_id

    @staticmethod
    def _refuse(index: int, exc: FluxMailException, tally: _Tally) -> None:
        """A message that could not be prepared fails alone, unless the error stops the
        batch (a missing dependency, a journal of other messages)."""
        if isinstance(exc, (MissingDependencyError, JournalMismatchError)):
            raise tally.abort(exc) from None
        tally.failure(index, exc)

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
        """Send every message over one held connection, pipelined; see the module docstring.

        Args:
            messages: dicts of ``create()`` arguments (a list, or any iterable: a
                generator runs in constant memory).
            on_success: called as ``on_success(index, receipt)`` after each accepted
                message (``receipt`` is a ``SendReceipt``).
            on_error: called as ``on_error(index, exc)`` after each failed message.
            progress: a progress bar on stderr: ``None`` (default) only on a terminal
                with Rich installed, ``True`` always (needs Rich), ``False`` never.
            max_per_second: at most this many messages per second (0: no limit).

        Returns:
            ``{"sent": n, "failed": n, "total": n, "errors": [(index, exc), ...]}``, plus
            ``"skipped"`` with a journal.

        Raises:
            FluxMailException: the error that stops the batch (``authentication_failed``,
                ``tls_required``, ``tls_verify_failed``, ``connection_failed``, ...), with
                ``.batch_result`` holding the counts so far. A single message's failure
                (``invalid_address``, ``recipients_refused``, ``outcome_unknown``, ...) does
                not raise: it is in ``errors``.
            JournalMismatchError: the journal belongs to other messages.
            MissingDependencyError: ``missing_dependency``: ``progress=True`` without Rich.

        Example:
            ```python
            failed = []
            result = BulkSender(mailer).send_batch(
                [{"subject": "Hi", "recipients": ["ada@example.org"], "body": "."},
                 {"subject": "Hi", "recipients": ["not an address"], "body": "."}],
                on_error=lambda index, exc: failed.append((index, exc.code)),
                progress=False,
            )
            assert result["sent"] == 1 and failed == [(1, "invalid_address")]
            ```
        """
        transport = self._transport()
        journal = self._open_journal()
        try:
            with make_progress(progress, _total(messages)) as bar:
                tally = _Tally(on_success, on_error, bar, journal, _total(messages))
                hooks = _Hooks(tally, RateLimiter(max_per_second))
                try:
                    specs = StagedSpecs(
                        messages,
                        admit=lambda index, spec: self._admit(index, spec, tally),
                        compose=self._compose,
                        refuse=lambda index, exc: self._refuse(index, exc, tally),
                        hooks=hooks,
                    )
                    transport.send_many(specs, hooks)
                except FluxMailException as exc:
                    raise tally.abort(exc) from exc.__cause__
            return tally.result
        finally:
            if journal is not None:
                journal.close()

    def _transport(self) -> Switch:
        transport = self.mailer.transport
        assert transport is not None  # (Outlook was refused in __init__)
        return transport

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

        ``max_per_second`` holds across all connections of the pool. Unlike
        ``send_async()``, a batch retries as ``send_batch`` does (the mailer's
        ``max_retries``).

        Args:
            messages: dicts of ``create()`` arguments, from an iterable or an async
                iterable.
            max_per_second: at most this many messages per second, over the whole pool.
            progress: as for :meth:`send_batch`.
            on_success: called as ``on_success(index, receipt)``.
            on_error: called as ``on_error(index, exc)``.
            connections: the pool size for this batch (default: the sender's).

        Returns:
            The same result dict as :meth:`send_batch`.

        Raises:
            FluxMailException: the error that stops the batch, with ``.batch_result``.
            JournalMismatchError: the journal belongs to other messages.

        Example:
            ```python
            import asyncio

            messages = [{"subject": "Hi", "recipients": [f"u{n}@example.org"], "body": "."}
                        for n in range(4)]
            result = asyncio.run(BulkSender(mailer).send_batch_async(messages, connections=2))
            assert result["sent"] == 4
            ```
        """
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
        transport = self._transport()
        lane = Lane(2 * pool)
        with make_progress(progress, _total(messages)) as bar:
            tally = _Tally(on_success, on_error, bar, journal, _total(messages))
            hooks = _AsyncHooks(tally, RateLimiter(max_per_second))
            workers = [
                asyncio.create_task(transport.send_many_async(lane, hooks)) for _ in range(pool)
            ]
            lane.serve(workers)
            produce = self._produce_composed if self.compose_processes else self._produce
            try:
                try:
                    await produce(messages, lane, tally, hooks)
                except Exception:
                    # the input failed: what was taken from it still goes out, then the
                    # error is raised (a batch stopped between two messages)
                    await self._finish(lane, workers)
                    raise
                await self._finish(lane, workers)
            except FluxMailException as exc:
                raise tally.abort(exc) from exc.__cause__
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        return tally.result

    @staticmethod
    async def _finish(lane: Lane, workers: list[asyncio.Task[None]]) -> None:
        for _ in workers:  # (a worker that stopped the batch raises here)
            await lane.put(None)
        await asyncio.gather(*workers)

    async def _produce(
        self,
        messages: Iterable[MessageSpec] | AsyncIterable[MessageSpec],
        lane: Lane,
        tally: _Tally,
        hooks: _Hooks,
    ) -> None:
        if isinstance(messages, AsyncIterable):
            index = 0
            async for spec in messages:
                await self._produce_one(index, spec, lane, tally, hooks)
                index += 1
            return
        # a plain iterable is read here, without an async generator step per message
        for index, spec in enumerate(messages):
            await self._produce_one(index, spec, lane, tally, hooks)

    async def _produce_one(
        self, index: int, spec: MessageSpec, lane: Lane, tally: _Tally, hooks: _Hooks
    ) -> None:
        """One message onto the lane (at once while it has room); nothing of it is kept
        here while the next one is composed."""
        item = self._prepare(index, spec, tally)
        if item is not None:
            ready = hooks.item(item)
            if not lane.push(ready):
                await lane.put(ready)

    async def _produce_composed(
        self,
        messages: Iterable[MessageSpec] | AsyncIterable[MessageSpec],
        lane: Lane,
        tally: _Tally,
        hooks: _Hooks,
    ) -> None:
        """``_produce`` with the composing done in worker processes, a few chunks ahead:
        a reader task asks the journal and sends chunks out; here they are taken back, in
        input order, and fed to the connections. An error of the input is raised once
        what was taken from it went out."""
        pool = ComposePool(self.mailer, self.compose_processes, self._compose)
        reader = asyncio.ensure_future(self._order(messages, tally, pool))
        try:
            while (made := await pool.next()) is not None:
                await self._offer_made(made, lane, tally, hooks)
            await reader
        finally:
            # no await from here on: a cancelled or stopped batch must reach the
            # connections' tasks before any of them writes another message
            reader.cancel()
            reader.add_done_callback(_retrieved)
            pool.close()

    async def _order(
        self,
        messages: Iterable[MessageSpec] | AsyncIterable[MessageSpec],
        tally: _Tally,
        pool: ComposePool,
    ) -> None:
        try:
            orders: list[Order] = []
            index = 0
            async for spec in _each(messages):
                try:
                    admitted = self._admit(index, spec, tally)
                except FluxMailException as exc:
                    self._refuse(index, exc, tally)
                    admitted = None
                if admitted is not None:
                    orders.append((index, admitted[0], spec, admitted[1]))
                index += 1
                # a full chunk, or any chunk while a worker idles (a slow input, the start)
                if orders and (len(orders) >= CHUNK or pool.idle):
                    await pool.room()
                    pool.submit(orders)
                    orders = []
            if orders:
                await pool.room()
                pool.submit(orders)
        finally:
            pool.end()

    async def _offer_made(
        self,
        made: list[tuple[Order, Made]],
        lane: Lane,
        tally: _Tally,
        hooks: _Hooks,
    ) -> None:
        """Composed messages to the queue; what failed to compose fails (or stops the
        batch) as it would have here."""
        for (index, key, _, _), result in made:
            if isinstance(result, FluxMailException):
                self._refuse(index, result, tally)
            elif isinstance(result, Exception):
                raise result  # (as composing it here would have raised)
            else:
                ready = hooks.item((index, result, key))
                if not lane.push(ready):
                    await lane.put(ready)


def _retrieved(task: asyncio.Future[None]) -> None:
    """(The reader's error, if any, was raised already or is beside the point now.)"""
    if not task.cancelled():
        task.exception()


__all__ = ["BulkResult", "BulkSender"]
