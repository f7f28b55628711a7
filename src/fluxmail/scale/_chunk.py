"""One try at a chunk of messages: a few claim-store calls per chunk, not per message.

1. :meth:`Chunk.claim` claims every message and reads its record (one round trip);
2. :meth:`Chunk.prepare` writes ``sending`` for those to send (and what is already
   decided: a recovered unknown, the release of claims with nothing to do): one round
   trip of ``SET NX`` where the record was absent, compare-and-set where another
   claimant's record is there;
3. :meth:`Chunk.send` hands them to the transport's pipelined ``send_many`` on the
   worker's connection, each composed as the transport takes it (one that cannot be
   composed fails alone, recorded in step 4); its hooks take each rate-limit slot right
   before the message's envelope is written, set its dot mark once the server said 354,
   right before its data is written (the transport's ``dotting`` hook: from then on its
   final dot may be on the wire), and pass each outcome to the scribe as the server
   gives it (no round trip waited for, see :mod:`._scribe`);
4. :meth:`Chunk.settle` reads the scribe's replies and writes what the scribe could not
   (a message that failed to compose, its claims nearly expired, Redis refused), puts
   back the messages whose dot was never written (nothing of them left the process) and
   releases the claims: one round trip of plain writes while the claims are certainly
   this try's and the scribe lost nothing, else compare-and-set. Only then is the task
   acknowledged.

"Certainly this try's": before :data:`SAFE_PART` of the lease, counted from before the
claim (or its last renewal). Then nobody else writes the records this try wrote under
its token (a worker that outlived its claims compares with its own records, and writes
without comparing only while its own claims are certain), which is what lets the
scribe, prepare's ``SET NX`` and settle skip ``WATCH`` (:meth:`~._store.Write.unchecked`).

Every decision is :mod:`._decide`'s, which reads the delivery policy.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import FluxMailException
from ..transports.base import OwnItems
from ._decide import (
    Action,
    DeliveryResult,
    Record,
    Status,
    lease_wait,
    on_claim,
    outcome,
    recover,
    sending,
    settled,
    undotted,
    worker_fault,
)
from ._payload import read_payload
from ._store import Write

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..smtp import SendResult
    from ..transports.base import Item, Transport
    from ._decide import Policy
    from ._limiter import FleetLimiter
    from ._store import Store

log = logging.getLogger("fluxmail.scale")

#: Writes that need no compare-and-set stop this far into the claims' lease...
SAFE_PART = 0.8
#: ... and the claims are renewed (one round trip) once this far into it.
RENEW_PART = 0.5
#: How soon a message whose record changed under us (or whose claims ran out) is looked
#: at again.
LOOK_AGAIN = 0.05
INTERRUPTED = (
    "the send was interrupted (time limit, shutdown) after the SMTP transaction began; "
    "the server may or may not have the message"
)


@dataclass(frozen=True)
class Step:
    """The state of one message after a try: ``retry_in`` None means done."""

    message_id: str
    record: Record | None
    retry_in: float | None = None

    def result(self) -> DeliveryResult:
        if self.record is None:
            return pending(self.message_id)
        return self.record.as_result(self.message_id)


def pending(message_id: str) -> DeliveryResult:
    return {
        "message_id": message_id,
        "status": "pending",
        "final": False,
        "smtp_code": None,
        "reply": "",
        "error_code": None,
        "error": None,
        "refused": {},
        "attempts": 0,
        "unknown": 0,
        "updated_at": 0.0,
    }


class Owner(Protocol):
    """What a chunk uses of its :class:`~._courier.Courier` (which imports this module)."""

    store: Store
    limiter: FleetLimiter
    policy: Policy

    @property
    def lease(self) -> float: ...

    def compose(self, message_id: str, options: dict[str, Any]) -> Composed: ...

    def transport(self) -> Transport: ...

    def step(self, message_id: str, record: Record | None, retry_in: float | None) -> Step: ...


class GiveBack(Exception):
    """Raised by the hooks to stop the batch: the messages not yet begun wait ``wait``
    seconds (a rate-limit slot or a quota far ahead, claims about to expire)."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


@dataclass(eq=False)
class Entry:
    index: int  # its place in the chunk, and its dot mark
    message_id: str
    enqueue_id: str
    options: dict[str, Any]
    current: Record | None = None  # the stored record, as far as this worker knows
    before: Record | None = None  # what to put back if its try never begins
    attempt: Record | None = None  # its ``sending`` record, once written
    marked: bool = False  # its dot mark was sent: its data, and dot, may be written
    abandoned: bool = False  # the batch stopped before its dot was written
    result: Record | None = None  # its new record, once decided
    retry_in: float | None = None
    stored: bool = False  # ``result`` went to the scribe
    step: Step | None = None


class Chunk:
    """One try at ``payloads`` by ``courier`` (build one per try): :meth:`run`."""

    def __init__(self, courier: Owner, payloads: Sequence[Mapping[str, Any]]) -> None:
        self.courier = courier
        self.token = uuid.uuid4().hex
        self.entries = [Entry(i, *read_payload(p)) for i, p in enumerate(payloads)]
        self.held: list[Entry] = []  # claimed by this try
        self.to_send: list[Entry] = []
        self.deadline = 0.0  # monotonic: until then the claims are certainly ours
        self.renew_at = 0.0
        self.wait: float = LOOK_AGAIN  # for messages put back untouched
        self.prepared = False  # the ``sending`` records of to_send are written
        self.scribe = courier.store.scribe(self.token)

    def run(self) -> list[Step]:
        """claim, prepare, send, settle; the steps in the order of the payloads. Settles
        whatever happened (an interruption, a worker fault: then it raises after)."""
        self.claim()
        try:
            self.prepare()
            self.send()
        finally:
            steps = self.settle()
        return steps

    # --- 1. claim -------------------------------------------------------------------------

    def claim(self) -> None:
        c, now = self.courier, time.time()
        began = time.monotonic()
        claimed = c.store.claim_many([e.message_id for e in self.entries], self.token, c.lease)
        self._lease_from(began)
        recovering: list[Entry] = []
        for e, (taken, current, left) in zip(self.entries, claimed, strict=True):
            e.current = e.before = current
            if not taken:
                done = settled(current, e.enqueue_id, c.policy)
                e.step = c.step(e.message_id, current, None if done else lease_wait(left))
                continue
            self.held.append(e)
            start = on_claim(current, e.enqueue_id, c.policy, now)
            if start.action in (Action.DONE, Action.WAIT):
                wait = start.wait if start.action is Action.WAIT else None
                e.step = c.step(e.message_id, current, wait)
            elif start.action is Action.RECOVER:
                recovering.append(e)
            else:
                self.to_send.append(e)
        if recovering:
            self._recover(recovering, now)

    def _recover(self, entries: list[Entry], now: float) -> None:
        """``sending`` records whose claimant vanished: unknown if its dot may have been
        written (its mark is set, or it kept none), else as if never tried."""
        c = self.courier
        marks = [(e.current.owner, e.current.mark) for e in entries if e.current is not None]
        for e, dotted in zip(entries, c.store.dotted_many(marks), strict=True):
            assert e.current is not None
            if dotted:
                e.before = recover(e.current, self.token, c.policy, now)
                log.warning("message %s: outcome unknown (%s)", e.message_id, e.before.error)
            else:
                e.before = undotted(e.current, self.token, now)
            if e.before.final:
                e.result = e.before
            else:
                self.to_send.append(e)

    def _lease_from(self, began: float) -> None:
        lease = self.courier.lease
        self.deadline = began + lease * SAFE_PART
        self.renew_at = began + lease * RENEW_PART

    def renew(self) -> None:
        """Extend the claims of the messages being sent (a chunk can take longer than a
        lease under a rate limit); if one was lost (this worker outlived it), no more
        writes without compare-and-set."""
        began = time.monotonic()
        ids = [e.message_id for e in self.to_send]
        if self.scribe.renew(ids, self.token, self.courier.lease):
            self._lease_from(began)
        else:
            self.deadline = 0.0

    # --- 2. prepare -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Write ``sending`` for the messages to send, and what is already decided. The
        claims were just taken: while they are certainly this try's, a message whose
        record was absent is written ``SET NX`` (without ``WATCH``); one whose record
        exists (recovered, retried: its outlived claimant may still finish it) is
        compare-and-set (:meth:`~._store.Write.unchecked`)."""
        c, now = self.courier, time.time()
        sure = time.monotonic() < self.deadline
        writes: list[Write] = []
        ready: list[Entry] = []
        for e in self.held:
            if e.step is not None:  # nothing to do: let the claim go
                writes.append(
                    Write(e.message_id, None, None, change=False, release=True, sure=sure)
                )
            elif e.result is not None:  # recovered, final
                writes.append(Write(e.message_id, e.current, e.result, release=True, sure=sure))
        for e in self.to_send:
            e.attempt = sending(e.before, self.token, e.enqueue_id, now).evolve(mark=e.index)
            writes.append(Write(e.message_id, e.current, e.attempt, renew=False, sure=sure))
            ready.append(e)
        done = c.store.write_many(self.token, writes, c.lease)
        written = {w.message_id for w, ok in zip(writes, done, strict=True) if ok}
        changed = [e for e in self.held if e.step is None and e.message_id not in written]
        for e in changed:  # another worker wrote meanwhile: let go, look again shortly
            e.attempt = e.result = None
            e.step = c.step(e.message_id, None, LOOK_AGAIN)
        self.to_send = [e for e in ready if e.step is None]
        self.prepared = True  # every ``attempt`` of to_send is stored
        sure = time.monotonic() < self.deadline
        c.store.write_many(
            self.token,
            [
                Write(e.message_id, None, None, change=False, release=True, sure=sure)
                for e in changed
            ],
            c.lease,
        )

    # --- 3. send --------------------------------------------------------------------------

    def send(self) -> None:
        if not self.to_send:
            return
        transport = self.courier.transport()
        hooks = _Hooks(self)
        try:
            transport.send_many(OwnItems(self._composed()), hooks)
        except GiveBack as stop:
            self.wait = stop.wait
        except FluxMailException as exc:
            if worker_fault(exc):  # this worker is misconfigured: put everything back
                log.error("cannot send (%s): %s", exc.code, exc)
                raise
            # the server could not be reached at all: each unsent message was tried
            now, policy = time.time(), self.courier.policy
            for e in self.to_send:
                if e.result is None and e.attempt is not None and not self._dotted(e):
                    e.result, e.retry_in = outcome(e.attempt, exc, policy, now)

    def _composed(self) -> Iterator[Item]:
        """Each message composed when the transport takes it: a blocking batch takes the
        next ones while it waits for the server's replies, so composing overlaps the
        wire (and a chunk never holds all its composed messages). One that cannot be
        composed fails alone: settle() replaces its ``sending`` record with the outcome
        (nothing of it was written)."""
        c = self.courier
        for e in self.to_send:
            try:
                composed = c.compose(e.message_id, e.options)
            except FluxMailException as exc:
                assert e.attempt is not None
                e.result, e.retry_in = outcome(e.attempt, exc, c.policy, time.time())
                continue
            yield e.index, composed
            del composed

    @staticmethod
    def _dotted(e: Entry) -> bool:
        return e.marked and not e.abandoned

    # --- 4. settle ------------------------------------------------------------------------

    def settle(self) -> list[Step]:
        """Record what is left to record, release the claims; one step per message."""
        c = self.courier
        try:
            self.scribe.close()
        except FluxMailException as exc:
            log.warning("claim store: %s; recording the chunk again", exc)
        if not self.scribe.intact:  # write them again, compare-and-set
            for e in self.to_send:
                e.stored = False
        writes: list[Write] = []
        outcomes: list[tuple[Entry, Record | None, float | None]] = []
        record: Record | None
        now = time.time()
        # Every ``sending`` record is stored and the scribe lost nothing: while the claims
        # are certainly ours, only this try writes those records (no compare-and-set).
        sure = self.prepared and self.scribe.intact and time.monotonic() < self.deadline
        for e in self.to_send:
            assert e.attempt is not None
            if e.result is None and self._dotted(e):  # interrupted (time limit, shutdown)
                gone = recover(e.attempt, self.token, c.policy, now)
                e.result = gone.evolve(error=INTERRUPTED)
            if e.result is not None:
                record, retry_in = e.result, e.retry_in
            else:  # its dot was never written: put it back untouched
                record, retry_in = e.before, self.wait
            change = not (e.stored and record is e.result)
            writes.append(
                Write(
                    e.message_id,
                    e.attempt,
                    record,
                    owned=False,
                    release=True,
                    change=change,
                    sure=sure,
                )
            )
            outcomes.append((e, record, retry_in))
        done = c.store.write_many(self.token, writes, c.lease)
        for (e, record, retry_in), ok in zip(outcomes, done, strict=True):
            if record is not None and record.status is Status.UNKNOWN and e.result is record:
                log.warning("message %s: outcome unknown (%s)", e.message_id, record.error)
            e.step = c.step(e.message_id, record, retry_in) if ok else self._outlived(e)
        for e in self.held:
            if e.step is None and e.result is not None:  # decided before sending
                e.step = c.step(e.message_id, e.result, e.retry_in)
        steps = [e.step for e in self.entries]
        assert all(s is not None for s in steps)
        return [s for s in steps if s is not None]

    def _outlived(self, e: Entry) -> Step:
        log.warning(
            "message %s: another worker took it over first (this one outlived its "
            "claim); its record stands",
            e.message_id,
        )
        return self.courier.step(e.message_id, self.courier.store.get(e.message_id), None)


class _Hooks:
    """The chunk's :class:`~fluxmail.transports.base.BatchHooks`."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.entries = {e.index: e for e in chunk.to_send}
        self.limiter = chunk.courier.limiter

    def ready(self, key: int, composed: Composed) -> bool:
        """Its rate-limit slot, taken right before its envelope is written, if free."""
        try:
            return not self.limiter.enabled or self.limiter.try_acquire() <= 0
        except FluxMailException:
            return False  # start() tries again, and raises

    def start(self, key: int, composed: Composed) -> None:
        """Wait for its slot; one far ahead (a spent quota) gives the rest back."""
        with contextlib.suppress(FluxMailException):  # else settle() writes them
            self.chunk.scribe.flush()  # the outcomes so far, before any wait
        wait = self.limiter.acquire(max_wait=min(10.0, self.chunk.courier.lease / 4))
        if wait > 0:
            raise GiveBack(wait)

    def dotting(self, key: int) -> None:
        """Its data is about to be written (the server said 354), so its final dot may
        be from now on: set its dot mark (sent before this returns, its reply read
        later), unless the claims may be running out (then it raises: nothing of its data
        is written, it is given back)."""
        chunk, e = self.chunk, self.entries[key]
        try:
            now = time.monotonic()
            if now >= chunk.renew_at and now < chunk.deadline:
                chunk.renew()
                now = time.monotonic()
            if now >= chunk.deadline:
                raise GiveBack(LOOK_AGAIN)
            chunk.scribe.mark(e.index)
        except FluxMailException as exc:  # Redis: do not send what cannot be marked
            log.warning("claim store: %s; giving the rest of the chunk back", exc)
            raise GiveBack(LOOK_AGAIN) from exc
        e.marked = True

    def finished(self, key: int, result: SendResult | FluxMailException) -> None:
        e = self.entries[key]
        assert e.attempt is not None
        e.result, e.retry_in = outcome(e.attempt, result, self.chunk.courier.policy, time.time())
        if time.monotonic() < self.chunk.deadline:
            try:
                self.chunk.scribe.record(e.message_id, e.result)
                e.stored = True
            except FluxMailException:
                pass  # settle() writes it, compare-and-set

    def abandoned(self, key: int, error: BaseException) -> None:
        self.entries[key].abandoned = True
