"""fluxmail on Celery workers: exactly once per message, one rate limit for the whole fleet.

``pip install -e ".[celery]"``, then, in the module your workers import::

    from celery import Celery
    from fluxmail.celery import register

    app = Celery("myapp", broker="redis://127.0.0.1:6379/0")
    mail = register(app, max_per_second=20, per_day=10_000)  # mailer: FluxMail.from_env()

and anywhere in your application::

    message_id = mail.enqueue({"subject": "Hi", "recipients": ["a@example.com"], "body": "..."})
    mail.result(message_id)  # {"status": "accepted", "smtp_code": 250, "reply": ..., ...}

The task (``fluxmail.send``) is acknowledged late, claims the Message-ID in Redis before
it talks to the server, records the outcome after, retries only what is safe with
exponential backoff and jitter, and shares one rate limit (and per-minute/hour/day quotas)
across every worker. ``docs/scale.md`` explains the deployment and every crash window.
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
from .scale._payload import read_payload
from .scale._store import UNAVAILABLE

__all__ = ["TASK_NAME", "CeleryFleet", "register"]

TASK_NAME = "fluxmail.send"
#: What a task carries: one message's payload, or a chunk of them.
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
    """What :func:`register` returns: ``enqueue()``, ``enqueue_batch()``, ``result()``,
    ``results()``, ``wait()``, and ``task`` (the Celery task)."""

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
        """The body of the task: one try at its message (a payload) or chunk (a list of
        them), or the whole loop in eager mode. Messages not done yet are given back,
        together, for the shortest of their waits."""
        payloads = payload if isinstance(payload, list) else [payload]
        if task.request.is_eager:
            results = self.courier().run_many(payloads)
            return results if isinstance(payload, list) else results[0]
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
            return results if isinstance(payload, list) else results[0]
        self._check_give_backs(task, later[0][1].message_id)
        countdown = min(s.retry_in or 0.0 for _, s in later)
        rest: Payload = [p for p, _ in later] if isinstance(payload, list) else payload
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
        a chunk as a list, under a task ID of its own."""
        args: tuple[Any, ...] = (payloads[0],) if len(payloads) == 1 else (payloads,)
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

    ``mailer``: a FluxMail, a function returning one, or ``"pkg.module:name"``; default
    ``FluxMail.from_env()``, built once in each worker process. ``redis_url``: where
    claims, results and rate limits live; default ``$FLUXMAIL_REDIS_URL``, else the
    broker's URL if it is Redis. ``settings`` (the same on every worker):
    ``max_per_second``, ``per_minute``, ``per_hour``, ``per_day`` (0 = no limit),
    ``max_retries`` (5), ``retry_delay`` (1.0 s, doubling), ``resend_unknown`` (False),
    ``lease_seconds`` (60 + 10 x the mailer's timeout), ``result_ttl`` (7 days),
    ``key_prefix`` ("fluxmail"), ``domain`` (for Message-IDs; default the sender's),
    ``redis_wait`` (30 s: how long a worker waits for Redis or the broker to come back
    before it gives the message back).
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
