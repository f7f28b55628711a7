"""fluxmail on Celery workers: exactly once per message, one rate limit for the whole fleet.

``pip install -e ".[celery]"``, then :func:`register` fluxmail's task on your Celery app in
the module your workers import, and enqueue from anywhere in your application. A task
carries a chunk of messages (``enqueue_batch``: 500 by default) or one (``enqueue``); a
worker claims a chunk in Redis in one round trip, sends it pipelined over its held SMTP
connection, records each outcome, retries only what is safe with exponential backoff
and jitter, and shares one rate limit (and per-minute/hour/day quotas) with every other
worker. The task is acknowledged late. ``docs/scale.md`` explains the deployment, the
Redis round trips and every crash window.

Example (eager mode: the task runs in the calling process, no broker or worker needed,
as in your tests; in production give Celery a ``redis://`` broker and start workers):

```python
from celery import Celery

from fluxmail import FluxMail
from fluxmail.celery import register

app = Celery("example", set_as_current=False)
app.conf.task_always_eager = True
mail = register(app, mailer=lambda: FluxMail(host="127.0.0.1", port=1025), domain="example.com")
message = {"subject": "Hi", "recipients": ["ada@example.org"], "body": "Hello"}
message_id = mail.enqueue({**message, "sender": "app@example.com"})
assert mail.result(message_id)["status"] == "accepted"
mail.close()
```
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, NoReturn
from urllib.parse import urlsplit

from .errors import ConfigurationError, ConnectError, FluxMailException
from .scale._decide import DeliveryResult, backoff, worker_fault
from .scale._fleet import Fleet, MailerSource, Settings
from .scale._payload import is_chunk, pack_chunk, read_chunk, read_payload
from .scale._store import UNAVAILABLE

__all__ = ["TASK_NAME", "CeleryFleet", "register"]

TASK_NAME = "fluxmail.send"
#: What a task carries: one message's payload, or a chunk of them (packed in one string,
#: see :func:`~fluxmail.scale._payload.pack_chunk`, or as a list).
Payload = dict[str, Any] | list[dict[str, Any]]
#: Give-backs one task may take (retries, waits for a claim or the rate limit).
MAX_GIVE_BACKS = 1000
#: The longest countdown of one give-back: a spent per-day quota is looked at again every
#: 5 minutes rather than parked for hours (keep the broker's visibility_timeout above it).
MAX_COUNTDOWN = 300.0
#: The longest pause between two tries to publish a give-back to a broker that is down.
_LONGEST_PAUSE = 2.0
BROKER_UNAVAILABLE = "broker_unavailable"

log = logging.getLogger("fluxmail.scale")


class CeleryFleet(Fleet):
    """The fleet handle :func:`register` returns: enqueue messages, read their results.

    ``enqueue()``, ``enqueue_batch()``, ``result()``, ``results()``, ``wait()`` and
    ``close()`` are :class:`fluxmail.scale.Fleet`'s (their Args, Returns and Raises are
    there); ``task`` is the Celery task (``fluxmail.send``), whose argument is one
    message's payload or a chunk (a list) of them. Build it with :func:`register`, which
    also closes each worker process's connections when the worker stops.

    Raises:
        ConfigurationError: (``configuration_error``) when a worker has no Redis for its
            claims: the broker is not ``redis://`` and neither ``redis_url=`` nor
            ``FLUXMAIL_REDIS_URL`` is given (only eager mode may keep claims in memory).
        ConnectError: (``broker_unavailable``) from ``enqueue()``/``enqueue_batch()`` when
            the broker cannot take a task; (``redis_unavailable``) from every call when
            the claim store cannot be reached.

    Example:
        ```python
        from celery import Celery

        from fluxmail import FluxMail
        from fluxmail.celery import register

        app = Celery("example-fleet", set_as_current=False)
        app.conf.task_always_eager = True  # the task runs here (tests, one machine)
        fleet = register(app, mailer=lambda: FluxMail(host="127.0.0.1", port=1025))
        messages = [
            {"subject": f"Hi {n}", "recipients": [f"user{n}@example.org"], "body": "...",
             "sender": "app@example.com"}
            for n in range(3)
        ]
        fixed = [f"<order-{n}@example.com>" for n in range(3)]
        ids = fleet.enqueue_batch(messages, message_ids=fixed)
        assert ids == ["<order-0@example.com>", "<order-1@example.com>", "<order-2@example.com>"]
        assert fleet.enqueue_batch(messages, message_ids=ids) == ids  # sent once, not twice
        assert {r["status"] for r in fleet.results(ids).values()} == {"accepted"}
        fleet.close()
        ```
    """

    def __init__(
        self,
        app: Any,
        *,
        name: str = TASK_NAME,
        mailer: MailerSource = None,
        redis_url: str | None = None,
        settings: Settings,
        task_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(mailer=mailer, redis_url=redis_url, settings=settings)
        self.app = app
        options: dict[str, Any] = {
            "acks_late": True,  # a worker that dies mid-task leaves it to be redelivered
            "reject_on_worker_lost": True,
            "max_retries": None,  # fluxmail counts tries itself (settings.max_retries)
            # This app's task only: a shared task is added to every app created later,
            # where a second fleet's task of the same name then collides with it.
            "shared": False,
            **(task_options or {}),
        }
        fleet = self

        @app.task(name=name, bind=True, **options)  # type: ignore[untyped-decorator]
        def send_message(task: Any, payload: Payload) -> DeliveryResult | list[DeliveryResult]:
            return fleet.execute(task, payload)

        self.task: Any = send_message

    def execute(self, task: Any, payload: Payload) -> DeliveryResult | list[DeliveryResult]:
        """The body of the task: one try at its message or chunk, or, in eager mode, every
        try until each message is done.

        Args:
            task: the bound Celery task (``self`` of the task).
            payload: one message's payload, or a chunk of them (packed, or a list), as
                published by ``enqueue()`` / ``enqueue_batch()``.

        Returns:
            The message's result (a :class:`~fluxmail.scale.DeliveryResult` dict), or
            one per message of a chunk, in order, once none is left to try.

        Raises:
            celery.exceptions.Retry: the messages not done yet are given back, together,
                for the shortest of their waits (``task.retry``).
            celery.exceptions.Reject: (``requeue=True``) the broker could not take a
                give-back for ``redis_wait`` seconds: the task stays unacknowledged.
            InvalidMessageError: (``invalid_message``) the payload is not fluxmail's.
            RuntimeError: a task given back more than 1,000 times.
        """
        chunk = is_chunk(payload)
        payloads = read_chunk(payload)
        if task.request.is_eager:
            results = self.courier().run_many(payloads)
            return results if chunk else results[0]
        try:
            courier = self.courier()
            courier.mailer  # noqa: B018 - a worker that cannot build it must not eat the queue
            steps = courier.attempt_many(payloads)
        except Exception as exc:
            if not self._give_back_on(exc):
                raise
            log.error("fluxmail.send: giving the message back (%s: %s)", type(exc).__name__, exc)
            self._check_give_backs(task, read_payload(payloads[0])[0])
            countdown = backoff(task.request.retries + 1, self.settings.retry_delay)
            self._give_back(task, countdown, exc)
        later = [(p, s) for p, s in zip(payloads, steps, strict=True) if s.retry_in is not None]
        if not later:
            results = [s.result() for s in steps]
            return results if chunk else results[0]
        self._check_give_backs(task, later[0][1].message_id)
        countdown = min(s.retry_in or 0.0 for _, s in later)
        rest: Payload = pack_chunk([p for p, _ in later]) if chunk else payload
        self._give_back(task, min(countdown, MAX_COUNTDOWN), args=(rest,))

    def _give_back(
        self,
        task: Any,
        countdown: float,
        exc: Exception | None = None,
        args: tuple[Any, ...] | None = None,
    ) -> NoReturn:
        """Publish the message again for ``countdown`` seconds (``task.retry``).

        Celery answers a retry it cannot publish (the broker is down) with
        ``Reject(requeue=False)``, which acknowledges the message away: it would be lost.
        So a failed publish is tried again with a backoff for up to ``redis_wait``
        seconds (a broker restart); if the broker is still down, the task raises
        ``Reject(requeue=True)``: requeued if the broker is back by then, else left
        unacknowledged in the broker (the Redis transport's ``unacked`` hash), which
        delivers it again after its ``visibility_timeout``. Either way a copy that runs
        twice is harmless: the claim and the record decide."""
        reject = _celery_reject()
        deadline = time.monotonic() + self.settings.redis_wait
        pause = 0.1
        while True:
            try:
                raise task.retry(
                    args=args, countdown=countdown, max_retries=None, exc=exc
                ) from exc
            except reject as refused:
                if refused.requeue:
                    raise
                failure = refused.reason
            if time.monotonic() + pause > deadline:
                break
            log.warning("fluxmail.send: the broker cannot take the give-back; trying again")
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
        log.error(
            "fluxmail.send: the broker is unreachable; the message stays unacknowledged "
            "and comes back after the broker's visibility_timeout"
        )
        raise reject(failure, requeue=True)

    @staticmethod
    def _check_give_backs(task: Any, message_id: str) -> None:
        if task.request.retries >= MAX_GIVE_BACKS:
            log.error("message %s: gave up after %d give-backs", message_id, MAX_GIVE_BACKS)
            raise RuntimeError(f"fluxmail.send: message {message_id} given back too often")

    def _give_back_on(self, exc: Exception) -> bool:
        """Failures of this worker, not of the message: its mailer cannot be built, the
        server refuses its credentials or TLS, Redis is unreachable. The message goes back
        to the queue (another worker, or this one later, takes it); nothing was sent, or
        the claim makes the next try safe."""
        if isinstance(exc, FluxMailException):
            return worker_fault(exc) or exc.code == UNAVAILABLE
        if self._redis_url():
            from .scale._deps import redis_module

            return isinstance(exc, redis_module().RedisError)
        return False

    def _submit(self, payloads: list[dict[str, Any]], options: dict[str, Any]) -> None:
        """Publish; a broker that cannot be reached raises ConnectError
        (``broker_unavailable``, chained, without the broker URL's password). Messages of
        an ``enqueue_batch()`` chunk published before the failure are queued."""
        from .scale._deps import celery_module

        kombu_errors = celery_module("exceptions").OperationalError
        try:
            self._publish(payloads, options)
        except kombu_errors as exc:
            raise ConnectError(
                f"the Celery broker at {self._broker_host()} cannot be reached: "
                f"{type(exc).__name__}",
                code=BROKER_UNAVAILABLE,
            ) from exc

    def _broker_host(self) -> str:
        try:
            parts = urlsplit(str(self.app.conf.broker_url or ""))
            return f"{parts.hostname}:{parts.port}" if parts.hostname else "(default)"
        except ValueError:
            return "(unparsable URL)"

    def _publish(self, payloads: list[dict[str, Any]], options: dict[str, Any]) -> None:
        """One task: a single message travels alone under its Message-ID as the task ID;
        a chunk packed in one string, under a task ID of its own."""
        args = (payloads[0],) if len(payloads) == 1 else (pack_chunk(payloads),)
        task_id = str(payloads[0]["id"]) if len(payloads) == 1 else f"fluxmail-{uuid.uuid4()}"
        if self.app.conf.task_always_eager:
            self.task.apply_async(args=args, task_id=task_id, **options)
            return
        with self.app.producer_or_acquire() as producer:
            self.task.apply_async(args=args, task_id=task_id, producer=producer, **options)

    def _redis_url(self) -> str | None:
        url = super()._redis_url()
        if url:
            return url
        broker = self.app.conf.broker_url or ""
        return broker if broker.startswith(("redis://", "rediss://")) else None

    def _check_memory_allowed(self) -> None:
        if not self.app.conf.task_always_eager:
            raise ConfigurationError(
                "fluxmail.celery needs Redis to claim messages across workers: use a "
                "redis:// broker, pass redis_url= or set FLUXMAIL_REDIS_URL "
                "(without Redis, only task_always_eager=True is allowed)"
            )


def _celery_reject() -> Any:
    from .scale._deps import celery_module

    return celery_module("exceptions").Reject


def register(
    app: Any,
    *,
    mailer: MailerSource = None,
    redis_url: str | None = None,
    name: str = TASK_NAME,
    task_options: dict[str, Any] | None = None,
    **settings: Any,
) -> CeleryFleet:
    """Register fluxmail's task on your Celery ``app``; returns the fleet handle.

    Call it with the same settings in every process (import one module): the workers
    apply the rate limit and the retry rules, the enqueueing side reads the same keys.

    Args:
        app: your ``celery.Celery`` application.
        mailer: a FluxMail, a function returning one, or ``"pkg.module:name"`` naming
            either; default ``FluxMail.from_env()``. Built once in each worker process;
            it must send over SMTP.
        redis_url: where claims, results and rate limits live; default
            ``$FLUXMAIL_REDIS_URL``, else the broker's URL if it is Redis.
        name: the task's name (``"fluxmail.send"``).
        task_options: more ``app.task()`` options (``queue``, ``time_limit``, ...).
        **settings: ``max_per_second``, ``per_minute``, ``per_hour``, ``per_day`` (0 = no
            limit), ``max_retries`` (5), ``retry_delay`` (1.0 s, doubling),
            ``resend_unknown`` (False), ``lease_seconds`` (60 + 10 x the mailer's
            timeout), ``result_ttl`` (7 days), ``key_prefix`` ("fluxmail"), ``domain``
            (for Message-IDs; default the sender's), ``redis_wait`` (30 s: how long a
            worker waits for Redis or the broker to come back before it gives the
            message back). See ``docs/scale.md``.

    Returns:
        The :class:`CeleryFleet` (``enqueue``, ``enqueue_batch``, ``result``,
        ``results``, ``wait``, ``close``, ``task``).

    Raises:
        ConfigurationError: (``configuration_error``) an unknown setting or a value out of
            range (``max_per_second=-1``, ``key_prefix=""``).
        MissingDependencyError: (``missing_dependency``) Celery is not installed
            (``pip install -e ".[celery]"`` in a checkout).

    Example:
        ```python
        from celery import Celery

        from fluxmail import FluxMail
        from fluxmail.celery import register

        app = Celery("example-register", set_as_current=False)
        app.conf.task_always_eager = True
        mail = register(
            app,
            mailer=lambda: FluxMail(host="127.0.0.1", port=1025),
            max_per_second=20,
            domain="example.com",
        )
        message_id = mail.enqueue(
            {"subject": "Hi", "recipients": ["ada@example.org"], "body": "Hello",
             "sender": "app@example.com"}
        )
        assert message_id.endswith("@example.com>")
        assert mail.wait([message_id], timeout=10)[message_id]["smtp_code"] == 250
        mail.close()
        ```
    """
    config = Settings.from_options("register()", settings)
    from .scale._deps import celery_module

    signals = celery_module("signals")
    fleet = CeleryFleet(
        app,
        name=name,
        mailer=mailer,
        redis_url=redis_url,
        settings=config,
        task_options=task_options,
    )

    def close_connections(**_: Any) -> None:
        fleet.close()

    signals.worker_process_shutdown.connect(close_connections, weak=False)
    signals.worker_shutdown.connect(close_connections, weak=False)
    return fleet
