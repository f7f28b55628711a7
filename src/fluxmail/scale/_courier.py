"""A worker process's side: its mailer, its SMTP connection, and the tries at messages.

:meth:`Courier.attempt_many` does one try at a chunk of messages (:mod:`._chunk`) and
says what happened to each (:class:`Step`): done (with the record) or "give the message
back for N seconds" (a retry, a claim held elsewhere, the rate limit). Celery turns
the latter into ``task.retry(countdown=N)``; eager mode and the in-process fallback
(:meth:`Courier.run_many`) sleep and try again.

Per process (and per thread, for Celery's thread pools) one transport, built by the
mailer's factory, keeps its SMTP connection open and reused, reopened when the server
closed it while idle. Workers never pay a TLS handshake per message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ._chunk import Chunk, Step, pending
from ._decide import DeliveryResult, Policy, Record

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..mailer._facade import FluxMail
    from ..transports.factory import Switch
    from ._limiter import FleetLimiter
    from ._store import Store

log = logging.getLogger("fluxmail.scale")

#: Give-backs (retries, waits) one message may take in :meth:`Courier.run`.
MAX_STEPS = 1000


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
        """One try at one message (:meth:`attempt_many` of one)."""
        return self.attempt_many([payload])[0]

    def attempt_many(self, payloads: Sequence[Mapping[str, Any]]) -> list[Step]:
        """One try at a chunk of messages (see :mod:`._chunk`), one step per payload."""
        if not payloads:
            return []
        return Chunk(self, payloads).run()

    @staticmethod
    def step(message_id: str, record: Record | None, retry_in: float | None) -> Step:
        return Step(message_id, record, retry_in)

    def compose(self, message_id: str, options: dict[str, Any]) -> Composed:
        """The message as every other path composes it (``FluxMail.compose``: the
        composer, then DKIM when configured), with the Message-ID fixed at enqueue."""
        mailer = self.mailer
        return mailer.compose(mailer.build_message(**options), message_id=message_id)

    # --- connections --------------------------------------------------------------------

    def transport(self) -> Switch:
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
        """Say QUIT on every connection this process opened; close its Redis clients."""
        with self._lock:
            transports, self._transports = self._transports, []
        self._local = threading.local()
        try:
            for transport in transports:
                transport.release()
        finally:
            self.limiter.close()
            self.store.close()

    # --- the in-process loop ------------------------------------------------------------

    def run(
        self, payload: Mapping[str, Any], *, sleep: Callable[[float], None] = time.sleep
    ) -> DeliveryResult:
        """Try until done, sleeping between tries (eager mode, the in-process fallback)."""
        return self.run_many([payload], sleep=sleep)[0]

    def run_many(
        self, payloads: Sequence[Mapping[str, Any]], *, sleep: Callable[[float], None] = time.sleep
    ) -> list[DeliveryResult]:
        """:meth:`run` for a chunk: each try takes every message not done yet."""
        steps: list[Step | None] = [None] * len(payloads)
        todo = list(range(len(payloads)))
        for _ in range(MAX_STEPS):
            for i, step in zip(todo, self.attempt_many([payloads[i] for i in todo]), strict=True):
                steps[i] = step
            todo = [i for i in todo if (s := steps[i]) is not None and s.retry_in is not None]
            if not todo:
                break
            sleep(min(s.retry_in or 0.0 for i in todo if (s := steps[i]) is not None))
        return [s.result() if s is not None else pending("") for s in steps]
