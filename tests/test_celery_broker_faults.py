"""fluxmail.celery when Redis (the broker and the claim store) fails: a real redis-server
stopped by its PID under real Celery workers, then restarted with its data or empty."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest

from celery_app import make_app
from fluxmail import FluxMail
from fluxmail.errors import ConnectError, FluxMailException
from fluxmail.scale import LocalFleet
from helpers import batch, wait_until
from redis_fixture import RedisServer, StartWorkers
from servers import FaultServer, FaultSession, Reply, SMTPTestServer

MakeServer = Callable[..., SMTPTestServer]
MakeFault = Callable[..., FaultServer]
PERSISTENT = pytest.mark.parametrize("redis_server", [{"persist": True}], indirect=True)


#: One worker, and Redis killed while it is inside a task (the SMTP server holds a reply):
#: kombu's Redis transport moves a task from the queue to its "unacked" hash in two
#: commands, and a crash between the two loses that task whatever fluxmail does (see
#: docs/scale.md). A worker inside a task with acks_late and a prefetch of one is not
#: fetching, so the kill lands where fluxmail is answerable.


@pytest.mark.slow
@pytest.mark.timeout(240)
@PERSISTENT
def test_redis_killed_mid_batch_and_restarted_with_its_data_loses_nothing(
    celery_workers: StartWorkers, redis_server: RedisServer, make_fault_server: MakeFault
) -> None:
    """24 messages; Redis SIGKILLed by its PID while the server holds the reply to the
    7th message's final dot, which it then accepts (the worker must record that with
    Redis down); down for 1.5 s, restarted from its append-only file: every message
    reaches the server exactly once, and every result is accepted."""
    dots = itertools.count(1)
    holding, killed = threading.Event(), threading.Event()

    def at_dot(session: FaultSession) -> None:
        if next(dots) == 7:
            holding.set()
            killed.wait(10)

    server = make_fault_server({"DOT": at_dot})
    settings = {"retry_delay": 0.2}
    (worker,) = celery_workers(1, smtp_host=server.host, smtp_port=server.port, **settings)
    _, fleet = make_app(redis_server.url, **settings)
    ids = [i for i in fleet.enqueue_batch(batch(24)) if i]
    assert len(ids) == 24

    wait_until(holding.is_set, 60, "the 7th message")
    redis_server.kill()
    down_at = time.monotonic()
    killed.set()
    time.sleep(1.5)
    redis_server.restart()
    results = fleet.wait(ids, timeout=120)
    took = time.monotonic() - down_at

    logs = worker.log_tail(80)
    received = Counter(server.message_ids())
    assert sorted(received) == sorted(ids), f"not every message delivered:\n{logs}"
    assert set(received.values()) == {1}, f"sent twice: {received.most_common(3)}"
    assert Counter(r["status"] for r in results.values()) == {"accepted": 24}, logs
    assert "unreachable" in logs  # the worker did meet the outage mid-task
    print(f"all 24 delivered once, {took:.1f}s after Redis went down")  # -s / -rP
    assert took < 60


PASSWORD = "Sup3r/Redis+Pw="
SECRET_FORMS = (PASSWORD, quote(PASSWORD, safe=""), quote_plus(PASSWORD))


def assert_quick_connect_error(call: Callable[[], object], code: str, logs: str = "") -> None:
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        call()
    took = time.monotonic() - started
    error = caught.value
    assert (error.code, error.transient) == (code, True)
    assert isinstance(error, FluxMailException)
    assert error.__cause__ is not None  # the original, chained
    assert took < 3, f"{code} took {took:.1f}s"
    for form in SECRET_FORMS:
        assert form not in f"{error} {error!r} {logs}"


@pytest.mark.parametrize("redis_server", [{"password": PASSWORD}], indirect=True)
def test_while_redis_is_down_every_call_raises_a_quick_connect_error(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    _, fleet = make_app(redis_server.url)
    ids = [i for i in fleet.enqueue_batch(batch(2)) if i]
    assert [r["status"] for r in fleet.results(ids).values()] == ["pending", "pending"]
    redis_server.kill()

    unavailable = "redis_unavailable"
    assert_quick_connect_error(lambda: fleet.results(ids), unavailable, caplog.text)
    assert_quick_connect_error(lambda: fleet.result(ids[0]), unavailable, caplog.text)
    assert_quick_connect_error(lambda: fleet.wait(ids, timeout=10), unavailable, caplog.text)
    assert_quick_connect_error(lambda: fleet.enqueue(batch(1)[0]), unavailable, caplog.text)
    assert_quick_connect_error(lambda: fleet.enqueue_batch(batch(3)), unavailable, caplog.text)


@pytest.mark.parametrize("redis_server", [{"password": PASSWORD}], indirect=True)
def test_a_broker_that_is_down_raises_a_quick_connect_error(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The claims Redis is up, the broker (another Redis) is down."""
    broker = RedisServer(password=PASSWORD).start()
    try:
        _, fleet = make_app(broker.url, redis_url=redis_server.url)
        fleet.enqueue(batch(1)[0])
        broker.kill()
        down = "broker_unavailable"
        assert_quick_connect_error(lambda: fleet.enqueue(batch(1)[0]), down, caplog.text)
        assert_quick_connect_error(lambda: fleet.enqueue_batch(batch(3)), down, caplog.text)
    finally:
        broker.cleanup()


@PERSISTENT
def test_ids_an_empty_redis_forgot_are_reported_unknown(
    redis_server: RedisServer, smtp_server: SMTPTestServer
) -> None:
    """Restarted without its data, Redis has no trace of a delivered message nor of a
    queued one: results() says unknown (final), not None; new messages are pending."""
    sent = LocalFleet(
        lambda: FluxMail(host=smtp_server.host, port=smtp_server.port),
        redis_url=redis_server.url,
    )
    (delivered,) = sent.enqueue_batch(batch(1))
    _, fleet = make_app(redis_server.url)
    queued = [i for i in fleet.enqueue_batch(batch(3)) if i]
    assert delivered is not None
    assert fleet.results([delivered])[delivered]["status"] == "accepted"

    redis_server.kill()
    redis_server.restart(empty=True)
    fresh = fleet.enqueue(batch(1)[0])
    started = time.monotonic()
    results = fleet.wait([delivered, *queued, fresh], timeout=0.5)
    assert time.monotonic() - started < 1

    for mid in (delivered, *queued):
        result = results[mid]
        assert (result["status"], result["final"]) == ("unknown", True)
        assert result["error_code"] == "outcome_unknown"
        assert "no record" in (result["error"] or "")
    assert (results[fresh]["status"], results[fresh]["final"]) == ("pending", False)
    assert fleet.result(delivered) is None
    sent.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
@PERSISTENT
def test_a_give_back_the_broker_cannot_take_is_not_dropped(
    celery_workers: StartWorkers, redis_server: RedisServer, make_fault_server: MakeFault
) -> None:
    """Every message is deferred once (451), so every task gives its message back through
    task.retry(). The broker (its own Redis; the claims live in another) is SIGKILLed
    while the server holds one 451: that give-back cannot be published. Celery alone
    would drop the message (Reject(requeue=False)); it must be sent once all the same."""
    claims = RedisServer().start()
    deferred: set[str] = set()
    holding, killed = threading.Event(), threading.Event()

    def at_dot(session: FaultSession) -> Reply | None:
        (rcpt,) = session.rcpt_tos
        if rcpt in deferred:
            return None
        deferred.add(rcpt)
        if len(deferred) == 5:  # hold this 451 until the broker is gone
            holding.set()
            killed.wait(10)
        return Reply("451 4.3.0 Try again later")

    try:
        server = make_fault_server({"DOT": at_dot})
        settings = {"retry_delay": 0.2, "max_retries": 3}
        env = {"FLUXMAIL_REDIS_URL": claims.url}
        workers = celery_workers(
            1, smtp_host=server.host, smtp_port=server.port, env=env, **settings
        )
        _, fleet = make_app(redis_server.url, redis_url=claims.url, **settings)
        ids = [i for i in fleet.enqueue_batch(batch(12)) if i]
        wait_until(holding.is_set, 60, "the held 451")
        redis_server.kill()
        killed.set()
        time.sleep(1.5)
        redis_server.restart()
        results = fleet.wait(ids, timeout=90)
        logs = "\n".join(w.log_tail(200) for w in workers)
    finally:
        claims.cleanup()

    assert "the broker cannot take the give-back" in logs  # the path under test ran
    assert Counter(r["status"] for r in results.values()) == {"accepted": 12}, logs[-3000:]
    assert all(results[i]["attempts"] == 2 for i in ids)
    received = Counter(server.message_ids())
    assert sorted(received) == sorted(ids)
    assert set(received.values()) == {1}
