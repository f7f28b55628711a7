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
from typing import Any

from .errors import ConfigurationError, FluxMailException
from .scale._decide import DeliveryResult, backoff, worker_fault
from .scale._fleet import Fleet, MailerSource, Settings
from .scale._payload import read_payload

__all__ = ["TASK_NAME", "CeleryFleet", "register"]

TASK_NAME = "fluxmail.send"
#: Give-backs one task may take (retries, waits for a claim or the rate limit).
MAX_GIVE_BACKS = 1000
#: The longest countdown of one give-back: a spent per-day quota is looked at again every
#: 5 minutes rather than parked for hours (keep the broker's visibility_timeout above it).
MAX_COUNTDOWN = 300.0

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
            **(task_options or {}),
        }
        fleet = self

        @app.task(name=name, bind=True, **options)  # type: ignore[untyped-decorator]
        def send_message(task: Any, payload: dict[str, Any]) -> DeliveryResult:
            return fleet.execute(task, payload)

        self.task: Any = send_message

    def execute(self, task: Any, payload: dict[str, Any]) -> DeliveryResult:
        """The body of the task: one try, or the whole loop in eager mode."""
        if task.request.is_eager:
            return self.courier().run(payload)
        try:
            courier = self.courier()
            courier.mailer  # noqa: B018 - a worker that cannot build it must not eat the queue
            step = courier.attempt(payload)
        except Exception as exc:
            if not self._give_back_on(exc):
                raise
            log.error("fluxmail.send: giving the message back (%s: %s)", type(exc).__name__, exc)
            self._check_give_backs(task, read_payload(payload)[0])
            countdown = backoff(task.request.retries + 1, self.settings.retry_delay)
            raise task.retry(countdown=countdown, max_retries=None, exc=exc) from exc
        if step.retry_in is None:
            return step.result()
        self._check_give_backs(task, step.message_id)
        raise task.retry(countdown=min(step.retry_in, MAX_COUNTDOWN), max_retries=None)

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
            return worker_fault(exc)
        if self._redis_url():
            from .scale._deps import redis_module

            return isinstance(exc, redis_module().RedisError)
        return False

    def _submit(self, payloads: list[dict[str, Any]], options: dict[str, Any]) -> None:
        if self.app.conf.task_always_eager:
            for payload in payloads:
                self.task.apply_async(args=(payload,), task_id=payload["id"], **options)
            return
        with self.app.producer_or_acquire() as producer:
            for payload in payloads:
                self.task.apply_async(
                    args=(payload,), task_id=payload["id"], producer=producer, **options
                )

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
    ``key_prefix`` ("fluxmail"), ``domain`` (for Message-IDs; default the sender's).
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
