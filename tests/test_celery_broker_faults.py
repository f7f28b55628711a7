"""fluxmail.celery when Redis (the broker and the claim store) fails: a real redis-server
stopped by its PID under real Celery workers, then restarted with its data or empty."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from celery_app import make_app
from redis_fixture import RedisServer, StartWorkers
from servers import SMTPTestServer
from test_celery_workers import batch, wait_until

MakeServer = Callable[..., SMTPTestServer]
PERSISTENT = pytest.mark.parametrize("redis_server", [{"persist": True}], indirect=True)


@pytest.mark.slow
@pytest.mark.timeout(240)
@PERSISTENT
def test_redis_killed_mid_batch_and_restarted_with_its_data_loses_nothing(
    celery_workers: StartWorkers, redis_server: RedisServer, make_server: MakeServer
) -> None:
    """24 messages; Redis SIGKILLed by PID after the first few were sent, down for 3 s,
    restarted from its append-only file: every message reaches the server exactly once."""
    server = make_server()
    settings = {"max_per_second": 6, "lease_seconds": 3, "retry_delay": 0.2}
    workers = celery_workers(2, smtp_host=server.host, smtp_port=server.port, **settings)
    _, fleet = make_app(redis_server.url, **settings)
    ids = [i for i in fleet.enqueue_batch(batch(24)) if i]
    assert len(ids) == 24

    wait_until(lambda: len(server.messages) >= 6, 60, "the first 6 messages")
    redis_server.kill()
    down_at = time.monotonic()
    time.sleep(1.5)
    redis_server.restart()
    results = fleet.wait(ids, timeout=120)
    took = time.monotonic() - down_at

    received = Counter(str(m.message["Message-ID"]) for m in server.messages)
    logs = "\n".join(w.log_tail(60) for w in workers)
    assert sorted(received) == sorted(ids), f"not every message delivered:\n{logs}"
    assert set(received.values()) == {1}, f"sent twice: {received.most_common(3)}"
    assert Counter(r["status"] for r in results.values()) == {"accepted": 24}
    print(f"all 24 delivered once, {took:.1f}s after Redis went down")  # -s / -rP
    assert took < 90
