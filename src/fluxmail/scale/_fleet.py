"""The fleet: enqueue messages, read their results; shared by Celery and the in-process
fallback. What differs is only how a payload reaches :meth:`Courier.attempt`."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from ..errors import ConfigurationError, FluxMailException, OutcomeUnknownError
from ._chunk import pending
from ._courier import Courier
from ._decide import DeliveryResult, Policy, Record, Status, settled
from ._limiter import FleetLimiter, MemorySpacer, RedisSpacer
from ._memstore import MemoryStore
from ._payload import make_payload
from ._store import RedisStore

if TYPE_CHECKING:
    from ..mailer._facade import FluxMail
    from ._store import Store

log = logging.getLogger("fluxmail.scale")

#: ``mailer=``: a FluxMail, a function returning one, or ``"package.module:name"`` naming
#: either (``"fluxmail:FluxMail.from_env"`` works); None means ``FluxMail.from_env()``,
#: called once in each worker process.
MailerSource = Union["FluxMail", Callable[[], "FluxMail"], str, None]
OnEnqueueError = Callable[[int, FluxMailException], None]
#: How long an enqueue's note that it is publishing a message holds off other enqueues
#: of the same Message-ID before the publish is confirmed (an enqueuer that died in
#: between leaves the Message-ID free again after this).
PUBLISH_HOLD = 60.0


@dataclass(frozen=True)
class Settings:
    """The rules every worker of a fleet must share (pass the same to each)."""

    max_per_second: float = 0
    per_minute: int = 0
    per_hour: int = 0
    per_day: int = 0
    max_retries: int = 5
    retry_delay: float = 1.0
    resend_unknown: bool = False
    lease_seconds: float | None = None
    result_ttl: float = 7 * 86400.0
    key_prefix: str = "fluxmail"
    domain: str | None = None
    redis_wait: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_per_second", "retry_delay", "result_ttl", "redis_wait"):
            _check_number(name, getattr(self, name), minimum=0)
        for name in ("per_minute", "per_hour", "per_day", "max_retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.lease_seconds is not None:
            _check_number("lease_seconds", self.lease_seconds, minimum=0.1)
        if not self.key_prefix or any(c.isspace() for c in self.key_prefix):
            raise ConfigurationError("key_prefix must be a non-empty word")

    @classmethod
    def from_options(cls, where: str, options: dict[str, Any]) -> Settings:
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigurationError(f"{where}: unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**options)

    @property
    def policy(self) -> Policy:
        return Policy(self.max_retries, self.retry_delay, self.resend_unknown)


def _check_number(name: str, value: object, *, minimum: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ConfigurationError(f"{name} must be a number >= {minimum}, got {value!r}")


def resolve_mailer(source: MailerSource) -> Callable[[], FluxMail]:
    """A function that builds the mailer (called once per worker process)."""
    if source is None:
        from ..mailer._facade import FluxMail

        return FluxMail.from_env
    if isinstance(source, str):
        module_name, _, attr = source.partition(":")
        if not module_name or not attr:
            raise ConfigurationError("mailer= names 'package.module:attribute'")

        def load() -> FluxMail:
            from importlib import import_module

            found: Any = import_module(module_name)
            for part in attr.split("."):
                found = getattr(found, part)
            mailer: FluxMail = found if hasattr(found, "build_message") else found()
            return mailer

        return load
    if hasattr(source, "build_message"):
        return lambda: source  # type: ignore[return-value]
    if callable(source):
        return source
    raise ConfigurationError("mailer= takes a FluxMail, a function returning one, or a name")


class Fleet:
    """Enqueue messages and read back their results. See ``docs/scale.md``."""

    def __init__(
        self, *, mailer: MailerSource = None, redis_url: str | None = None, settings: Settings
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self._mailer = resolve_mailer(mailer)
        self._courier: Courier | None = None
        self._lock = threading.Lock()

    # --- enqueueing -----------------------------------------------------------------------

    def enqueue(
        self, message: Mapping[str, Any], *, message_id: str | None = None, **options: Any
    ) -> str:
        """Validate one message, fix its Message-ID and queue it (one task).

        Args:
            message: a dict of ``create()`` arguments (attachments as paths the workers
                can read, or ``(filename, bytes[, type])``; an ``invite=`` Invite).
            message_id: ``<x@y>`` makes enqueueing idempotent: a Message-ID already
                queued is not published again, one already delivered is never sent
                again (see ``docs/scale.md``, "Retries", for after a failure).
            **options: for Celery's ``apply_async`` (``countdown``, ``eta``, ``queue``).

        Returns:
            The Message-ID (with angle brackets).

        Raises:
            InvalidMessageError: (``invalid_message``, ``invalid_address``, ...) the
                message fails ``create()``'s checks; nothing is queued.
            ConfigurationError: (``configuration_error``) no domain for a new Message-ID
                (give a ``sender``, the fleet a ``domain=``, or set ``FLUXMAIL_DOMAIN``).
            ConnectError: (``redis_unavailable``, ``broker_unavailable``) Redis or the
                broker cannot be reached.
        """
        payload = make_payload(message, message_id=message_id, domain=self.settings.domain)
        self._queue([payload], options)
        return str(payload["id"])

    def enqueue_batch(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        message_ids: Iterable[str | None] | None = None,
        on_error: OnEnqueueError | None = None,
        chunk: int = 500,
        **options: Any,
    ) -> list[str | None]:
        """Validate many messages and queue them, ``chunk`` messages to a task.

        Args:
            messages: dicts of ``create()`` arguments (as for :meth:`enqueue`).
            message_ids: one per message (None: generate one): makes the batch
                idempotent, as ``enqueue(message_id=...)``; a Message-ID already queued
                (by this batch or another) is not published again.
            on_error: ``on_error(index, exc)`` hears about each message that failed
                validation (default: a warning on the ``fluxmail.scale`` logger).
            chunk: messages per task (500): a worker claims, sends and records a chunk
                with a few Redis round trips.
            **options: for Celery's ``apply_async``.

        Returns:
            One Message-ID per message, in order; None for a message that failed.

        Raises:
            ConfigurationError: (``configuration_error``) ``chunk`` below 1.
            ConnectError: (``redis_unavailable``, ``broker_unavailable``) Redis or the
                broker cannot be reached; the chunks before the failing one are queued.
        """
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ConfigurationError(f"chunk must be a whole number >= 1, got {chunk!r}")
        fixed = iter(message_ids) if message_ids is not None else None
        ids: list[str | None] = []
        payloads: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            try:
                mid = next(fixed, None) if fixed is not None else None
                payload = make_payload(message, message_id=mid, domain=self.settings.domain)
            except FluxMailException as exc:
                ids.append(None)
                self._enqueue_error(index, exc, on_error)
                continue
            ids.append(str(payload["id"]))
            payloads.append(payload)
            if len(payloads) >= chunk:
                self._queue(payloads, options)
                payloads = []
        if payloads:
            self._queue(payloads, options)
        return ids

    def _queue(self, payloads: list[dict[str, Any]], options: dict[str, Any]) -> None:
        """Publish the payloads whose Message-ID has nothing queued yet (so two enqueues
        of one Message-ID publish one task), noting them queued (so that results() can
        tell "not started" from "Redis has no trace of it")."""
        store = self.courier().store
        entries = [(str(p["id"]), str(p["enqueue"])) for p in payloads]
        noted = store.reserve_queued(entries, PUBLISH_HOLD)
        publish, taken_over, seen = [], [], set()
        for payload, (mid, enqueue_id), (fresh, holder, record) in zip(
            payloads, entries, noted, strict=True
        ):
            if mid in seen or settled(record, enqueue_id, self.settings.policy):
                continue  # twice in this batch; or sent already, nothing to do
            seen.add(mid)
            if not fresh:
                if record is None or not record.final or record.enqueue_id != holder:
                    continue  # another enqueue of it is queued or under way
                taken_over.append((mid, enqueue_id))  # that enqueue is over: try again
            publish.append(payload)
        store.take_queued(taken_over, PUBLISH_HOLD)
        if publish:
            self._submit(publish, options)
            store.confirm_queued([str(p["id"]) for p in publish])

    @staticmethod
    def _enqueue_error(
        index: int, exc: FluxMailException, on_error: OnEnqueueError | None
    ) -> None:
        if on_error is None:
            log.warning("message %d not enqueued (%s): %s", index, exc.code, exc)
        else:
            on_error(index, exc)

    def _submit(self, payloads: list[dict[str, Any]], options: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- results ------------------------------------------------------------------------

    def result(self, message_id: str) -> DeliveryResult | None:
        """The recorded outcome of one message.

        Args:
            message_id: as ``enqueue()`` returned it.

        Returns:
            Its result dict (``status``, ``final``, ``smtp_code``, ``reply``, ...), or
            None: not started, or no trace of it (:meth:`results` tells them apart).

        Raises:
            ConnectError: (``redis_unavailable``) Redis cannot be reached.
        """
        record = self.courier().store.get(message_id)
        return None if record is None else record.as_result(message_id)

    def results(self, message_ids: Iterable[str]) -> dict[str, DeliveryResult]:
        """One result per Message-ID, read in one step.

        Args:
            message_ids: as ``enqueue()`` / ``enqueue_batch()`` returned them.

        Returns:
            Message-ID -> result: its record; ``pending`` when it was enqueued and has
            not started; ``unknown`` (final, error_code ``outcome_unknown``) when Redis
            has no trace of it at all: expired after ``result_ttl``, lost by a Redis
            that restarted empty, or never enqueued by this fleet.

        Raises:
            ConnectError: (``redis_unavailable``) Redis cannot be reached.
        """
        ids = list(message_ids)
        store = self.courier().store
        records = store.get_many(ids)
        missing = [mid for mid, rec in zip(ids, records, strict=True) if rec is None]
        queued = dict(zip(missing, store.queued(missing), strict=True))
        found: dict[str, DeliveryResult] = {}
        for mid, rec in zip(ids, records, strict=True):
            if rec is not None:
                found[mid] = rec.as_result(mid)
            else:
                found[mid] = pending(mid) if queued[mid] else forgotten(mid)
        return found

    def wait(
        self, message_ids: Iterable[str], *, timeout: float, poll: float = 0.2
    ) -> dict[str, DeliveryResult]:
        """Poll :meth:`results` until every message has a final result.

        Args:
            message_ids: the messages to wait for.
            timeout: seconds to wait at most.
            poll: seconds between two reads.

        Returns:
            The results as they stand when all are final or ``timeout`` passed.

        Raises:
            ConnectError: (``redis_unavailable``) Redis cannot be reached.
        """
        ids = list(message_ids)
        deadline = time.monotonic() + timeout
        while True:
            found = self.results(ids)
            done = all(r["final"] for r in found.values())
            if done or time.monotonic() >= deadline:
                return found
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    # --- the process's runtime ----------------------------------------------------------

    def courier(self) -> Courier:
        """This process's courier (built after fork, on first use)."""
        courier = self._courier
        if courier is None or courier.pid != os.getpid():
            with self._lock:
                courier = self._courier
                if courier is None or courier.pid != os.getpid():
                    courier = self._courier = self._build_courier()
        return courier

    def _build_courier(self) -> Courier:
        s = self.settings
        url = self._redis_url()
        store: Store
        calls: Any = None
        if url:
            store = RedisStore.from_url(
                url, prefix=s.key_prefix, result_ttl=s.result_ttl, wait=s.redis_wait
            )
            calls = store.calls
            spacer: Any = RedisSpacer(store.client, f"{s.key_prefix}:rate:next")
            quota_storage = _redis_quotas(url, s.key_prefix)
        else:
            self._check_memory_allowed()
            store, spacer, quota_storage = MemoryStore(), MemorySpacer(), _memory_quotas
        limiter = FleetLimiter(
            calls=calls,
            max_per_second=s.max_per_second,
            spacer=spacer,
            quotas={"per_minute": s.per_minute, "per_hour": s.per_hour, "per_day": s.per_day},
            quota_storage=quota_storage,
            key=f"{s.key_prefix}:quota",
        )
        return Courier(
            mailer=self._mailer,
            store=store,
            limiter=limiter,
            policy=s.policy,
            lease_seconds=s.lease_seconds,
        )

    def _redis_url(self) -> str | None:
        return self.redis_url or os.environ.get("FLUXMAIL_REDIS_URL") or None

    def _check_memory_allowed(self) -> None:
        """Only one process may work without Redis."""

    def close(self) -> None:
        """Close this process's SMTP connections (QUIT) and its Redis clients.

        The fleet can still be used afterwards: they are opened again when needed.
        """
        with self._lock:
            courier, self._courier = self._courier, None
        if courier is not None and courier.pid == os.getpid():
            courier.close()


FORGOTTEN = (
    "Redis has no record of this Message-ID: it expired after result_ttl, Redis lost its "
    "data (restarted without persistence), or it was never enqueued by this fleet; the "
    "server may or may not have the message"
)


def forgotten(message_id: str) -> DeliveryResult:
    """The result of a Message-ID the claim store has no trace of."""
    record = Record(
        Status.UNKNOWN, final=True, error_code=OutcomeUnknownError.code, error=FORGOTTEN
    )
    return record.as_result(message_id)


def _redis_quotas(url: str, prefix: str) -> Callable[[], Any]:
    def make() -> Any:
        from ._deps import limits_module

        return limits_module("storage").RedisStorage(url, key_prefix=f"{prefix}:limits")

    return make


def _memory_quotas() -> Any:
    from ._deps import limits_module

    return limits_module("storage").MemoryStorage()


class LocalFleet(Fleet):
    """The in-process fallback: the same checks, claims, retries and limits, without a
    broker. ``enqueue()`` delivers before it returns (retries sleep in the caller). With
    ``redis_url`` it shares claims and rate limits with a Celery fleet; without, it keeps
    them in memory (one process)."""

    def __init__(
        self, mailer: MailerSource = None, *, redis_url: str | None = None, **settings: Any
    ) -> None:
        config = Settings.from_options("LocalFleet()", settings)
        super().__init__(mailer=mailer, redis_url=redis_url, settings=config)

    def _submit(self, payloads: list[dict[str, Any]], options: dict[str, Any]) -> None:
        if options:
            raise ConfigurationError(f"unknown option(s): {', '.join(sorted(options))}")
        self.courier().run_many(payloads)
