"""A worker process's side: its mailer, its SMTP connection, and the steps for one message.

:meth:`Courier.attempt` does one try and says what happened (:class:`Step`): done (with
the record) or "give the message back for N seconds" (a retry, a claim held elsewhere, the
rate limit). Celery turns the latter into ``task.retry(countdown=N)``; eager mode and the
in-process fallback (:meth:`Courier.run`) sleep and try again.

Per process (and per thread, for Celery's thread pools) one transport, built by the
mailer's factory, keeps its SMTP connection open and reused, reopened when the server
closed it while idle. Workers never pay a TLS handshake per message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, FluxMailException
from ..smtp import SendResult
from ._decide import (
    Action,
    DeliveryResult,
    Policy,
    Record,
    Status,
    lease_wait,
    on_claim,
    outcome,
    recover,
    sending,
    settled,
    worker_fault,
)
from ._payload import read_payload

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..mailer._facade import FluxMail
    from ..transports.factory import Switch
    from ._limiter import FleetLimiter
    from ._store import Store

log = logging.getLogger("fluxmail.scale")

#: Give-backs (retries, waits) one message may take in :meth:`Courier.run`.
MAX_STEPS = 1000
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


@dataclass
class _Claim:
    message_id: str
    enqueue_id: str
    token: str
    held: bool = True


class Courier:
    """Delivers messages for one process. Build one per process (after fork)."""

    def __init__(
        self,
        *,
        mailer: Callable[[], FluxMail],
        store: Store,
        limiter: FleetLimiter,
        policy: Policy,
        lease_seconds: float | None = None,
    ) -> None:
        self._make_mailer = mailer
        self._mailer: FluxMail | None = None
        self.store = store
        self.limiter = limiter
        self.policy = policy
        self._lease = lease_seconds
        self._local = threading.local()
        self._transports: list[Switch] = []
        self._lock = threading.Lock()
        self.pid = os.getpid()

    @property
    def mailer(self) -> FluxMail:
        if self._mailer is None:
            mailer = self._make_mailer()
            if getattr(mailer, "object_type", None) is None or mailer.object_type.value != "smtp":
                raise ConfigurationError("the fleet's mailer must be an SMTP FluxMail")
            self._mailer = mailer
        return self._mailer

    @property
    def lease(self) -> float:
        """How long a claim lasts without renewal: longer than any send can take."""
        return self._lease or 60.0 + 10 * self.mailer.config.timeout

    # --- one try ------------------------------------------------------------------------

    def attempt(self, payload: Mapping[str, Any]) -> Step:
        message_id, enqueue_id, options = read_payload(payload)
        claim = _Claim(message_id, enqueue_id, uuid.uuid4().hex)
        taken, current = self.store.claim(message_id, claim.token, self.lease)
        if not taken:
            if settled(current, enqueue_id, self.policy):
                return Step(message_id, current)
            return Step(message_id, current, lease_wait(self.store.lease_left(message_id)))
        try:
            return self._claimed(claim, options, current)
        finally:
            if claim.held:
                self.store.release(message_id, claim.token)

    def _claimed(self, claim: _Claim, options: dict[str, Any], current: Record | None) -> Step:
        start = on_claim(current, claim.enqueue_id, self.policy, time.time())
        if start.action is Action.DONE:
            return Step(claim.message_id, current)
        if start.action is Action.WAIT:
            return Step(claim.message_id, current, start.wait)
        if start.action is Action.RECOVER:
            assert current is not None
            recovered = recover(current, claim.token, self.policy, time.time())
            if not self.store.update(
                claim.message_id, claim.token, current, recovered, self.lease
            ):
                return self._changed(claim)
            log.warning("message %s: outcome unknown (%s)", claim.message_id, recovered.error)
            current = recovered
            if recovered.final:
                return Step(claim.message_id, recovered)
        try:
            composed = self._compose(claim.message_id, options)
        except FluxMailException as exc:
            return self._record(claim, current, self._sending(claim, current), exc)
        wait = self.limiter.acquire(max_wait=min(10.0, self.lease / 4))
        if wait > 0:
            return Step(claim.message_id, current, wait)
        return self._send(claim, current, composed)

    def _send(self, claim: _Claim, current: Record | None, composed: Composed) -> Step:
        transport = self._transport()
        attempt = self._sending(claim, current)
        try:
            transport.open()  # (nothing to open under fluxmail.testing.capture())
        except FluxMailException as exc:
            if worker_fault(exc):
                log.error("cannot send (%s): %s", exc.code, exc)
                raise  # this worker is misconfigured: the message stays as it was
            return self._record(claim, current, attempt, exc)
        if not self.store.update(claim.message_id, claim.token, current, attempt, self.lease):
            return self._changed(claim)
        # From here until the outcome is recorded, a crash leaves "sending" behind.
        result: SendResult | FluxMailException
        try:
            result = transport.send(composed)  # (one free retry if the server had closed it)
        except FluxMailException as exc:
            result = exc
        except BaseException:
            interrupted = recover(attempt, claim.token, self.policy, time.time())
            self._finish(claim, attempt, replace(interrupted, error=INTERRUPTED))
            raise
        return self._record(claim, attempt, attempt, result)

    def _sending(self, claim: _Claim, current: Record | None) -> Record:
        return sending(current, claim.token, claim.enqueue_id, time.time())

    def _record(
        self,
        claim: _Claim,
        expected: Record | None,
        attempt: Record,
        result: SendResult | FluxMailException,
    ) -> Step:
        new, retry_in = outcome(attempt, result, self.policy, time.time())
        if new.status is Status.UNKNOWN:
            log.warning("message %s: outcome unknown (%s)", claim.message_id, new.error)
        if not self._finish(claim, expected, new):
            return Step(claim.message_id, self.store.get(claim.message_id))
        return Step(claim.message_id, new, retry_in)

    def _finish(self, claim: _Claim, expected: Record | None, new: Record) -> bool:
        claim.held = False
        if self.store.finish(claim.message_id, claim.token, expected, new):
            return True
        log.warning(
            "message %s: %s, but another worker took it over first (this one outlived "
            "its claim); its record stands",
            claim.message_id,
            new.status.value,
        )
        return False

    def _changed(self, claim: _Claim) -> Step:
        """The record changed under us (another worker outlived its claim and wrote):
        look again shortly."""
        return Step(claim.message_id, self.store.get(claim.message_id), 0.05)

    def _compose(self, message_id: str, options: dict[str, Any]) -> Composed:
        """The message as every other path composes it (``FluxMail.compose``: the
        composer, then DKIM when configured), with the Message-ID fixed at enqueue."""
        mailer = self.mailer
        return mailer.compose(mailer.build_message(**options), message_id=message_id)

    # --- connections --------------------------------------------------------------------

    def _transport(self) -> Switch:
        """This thread's transport (the fleet retries by itself: none of its own), with
        its connection held open between messages."""
        transport: Switch | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = self.mailer.new_transport(max_retries=0)
            transport.hold()
            self._local.transport = transport
            with self._lock:
                self._transports.append(transport)
        return transport

    def close(self) -> None:
        """Say QUIT on every connection this process opened."""
        with self._lock:
            transports, self._transports = self._transports, []
        self._local = threading.local()
        for transport in transports:
            transport.release()

    # --- the in-process loop ------------------------------------------------------------

    def run(
        self, payload: Mapping[str, Any], *, sleep: Callable[[float], None] = time.sleep
    ) -> DeliveryResult:
        """Try until done, sleeping between tries (eager mode, the in-process fallback)."""
        step = self.attempt(payload)
        for _ in range(MAX_STEPS):
            if step.retry_in is None:
                break
            sleep(step.retry_in)
            step = self.attempt(payload)
        return step.result()
