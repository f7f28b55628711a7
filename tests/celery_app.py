"""The Celery app the test workers run (``celery -A celery_app worker``, cwd tests/).

Its settings come from the environment the ``celery_workers`` fixture sets: the broker
and claim store in FLUXMAIL_TEST_REDIS_URL, the fleet settings as JSON in
FLUXMAIL_TEST_SETTINGS, and the SMTP server in the FLUXMAIL_* variables that
``FluxMail.from_env()`` reads (the workers' default mailer). The test process builds the
same app with :func:`make_app` to enqueue and read results.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from fluxmail.celery import CeleryFleet, register

QUEUE = "fluxmail-tests"
#: Short, so that a killed worker's unacknowledged task comes back within seconds.
VISIBILITY_TIMEOUT = 4


def make_app(broker_url: str, **settings: Any) -> tuple[Celery, CeleryFleet]:
    app = Celery("fluxmail_tests", broker=broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_ignore_result=True,
    )
    return app, register(app, **settings)


if os.environ.get("FLUXMAIL_TEST_REDIS_URL"):
    _url = os.environ["FLUXMAIL_TEST_REDIS_URL"]
    app, fleet = make_app(_url, **json.loads(os.environ.get("FLUXMAIL_TEST_SETTINGS", "{}")))

    @worker_ready.connect
    def _announce(sender: Any = None, **_: Any) -> None:
        import redis

        client = redis.Redis.from_url(_url)
        client.set(f"fluxmail-tests:ready:{sender.hostname}", "1", ex=600)
        client.close()
