"""fluxmail.celery with real Celery worker processes, a real Redis and real SMTP servers.

Workers run ``celery -A celery_app worker`` (prefork, one pool process each) in their own
process groups; they build their mailer with ``FluxMail.from_env()`` from the FLUXMAIL_*
variables that point at the SMTP server running in this test process.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest

from celery_app import make_app
from helpers import batch, max_in_any_window, wait_until
from redis_fixture import RedisServer, StartWorkers
from servers import PASSWORD, USERNAME, FaultServer, FaultSession, Reply, SMTPTestServer, Stall

MakeServer = Callable[..., SMTPTestServer]
MakeFault = Callable[..., FaultServer]


def test_workers_deliver_retry_refuse_and_reuse_one_connection(
    celery_workers: StartWorkers, redis_server: RedisServer, make_fault_server: MakeFault
) -> None:
    deferred_once = threading.Event()

    def at_dot(session: FaultSession) -> Reply | None:
        if "retry@example.com" in session.rcpt_tos and not deferred_once.is_set():
            deferred_once.set()
            return Reply("451 4.3.0 Try again later")
        if "refused@example.com" in session.rcpt_tos:
            return Reply("550 5.7.1 Refused by policy")
        return None

    server = make_fault_server({"DOT": at_dot})
    settings = {"retry_delay": 0.2, "max_retries": 3}
    celery_workers(1, smtp_host=server.host, smtp_port=server.port, **settings)
    _, fleet = make_app(redis_server.url, **settings)
    messages = batch(10)
    messages[3]["recipients"] = ["retry@example.com"]
    messages[6]["recipients"] = ["refused@example.com"]
    ids = fleet.enqueue_batch(messages)
    assert all(ids)
    results = fleet.wait([i for i in ids if i], timeout=60)

    statuses = [results[i]["status"] for i in ids if i]
    assert statuses == ["accepted"] * 6 + ["refused"] + ["accepted"] * 3
    retried = results[ids[3] or ""]
    assert retried["attempts"] == 2
    assert retried["smtp_code"] == 250
    refused = results[ids[6] or ""]
    assert (refused["smtp_code"], refused["attempts"]) == (550, 1)
    assert "Refused by policy" in refused["reply"]
    assert refused["final"]
    accepted = sorted(server.message_ids())
    assert accepted == sorted(i for n, i in enumerate(ids) if n != 6 and i)
    assert len(server.sessions) == 1  # one connection for the worker's pool process


@pytest.mark.slow
def test_a_misconfigured_worker_gives_messages_back(
    celery_workers: StartWorkers, redis_server: RedisServer, make_server: MakeServer
) -> None:
    """Wrong credentials are the worker's fault, not the message's: the message goes back
    to the queue untouched and a correctly configured worker sends it (STARTTLS + AUTH,
    everything from FLUXMAIL_* variables)."""
    server = make_server(tls="starttls", auth=True)
    env = {
        "FLUXMAIL_TLS": "true",
        "FLUXMAIL_USERNAME": USERNAME,
        "SSL_CERT_FILE": server.ca_pem or "",  # the default context trusts the test CA
    }
    settings = {"retry_delay": 0.05}  # give-backs back off from 50 ms
    host, port = server.host, server.port
    bad = {**env, "FLUXMAIL_PASSWORD": "wrong"}
    misconfigured = celery_workers(1, smtp_host=host, smtp_port=port, env=bad, **settings)
    _, fleet = make_app(redis_server.url, **settings)
    message_id = fleet.enqueue(batch(1)[0])
    wait_until(lambda: len(server.commands("AUTH")) >= 2, 30, "two refused logins")

    # The operator fixes the password and restarts the workers. (Left running, the
    # misconfigured worker may hold the given-back task, due again in a moment, for longer
    # than this test waits.) A warm shutdown lets the try in progress give the message back:
    # while a try runs, the chunk's record says "sending".
    for worker in misconfigured:
        worker.stop()
    assert fleet.result(message_id) is None  # given back, nothing recorded
    good = {**env, "FLUXMAIL_PASSWORD": PASSWORD}
    celery_workers(1, smtp_host=host, smtp_port=port, env=good, **settings)
    result = fleet.wait([message_id], timeout=60)[message_id]
    assert (result["status"], result["attempts"]) == ("accepted", 1)
    assert [str(m.message["Message-ID"]) for m in server.messages] == [message_id]
    assert server.messages[0].tls


@pytest.mark.slow
@pytest.mark.parametrize("resend_unknown", [False, True])
def test_worker_killed_after_the_final_dot_is_recorded_unknown(
    celery_workers: StartWorkers,
    redis_server: RedisServer,
    make_fault_server: MakeFault,
    resend_unknown: bool,
) -> None:
    stalled = threading.Event()

    def at_dot(session: FaultSession) -> Stall | None:
        if stalled.is_set():
            return None
        stalled.set()
        return Stall()  # the message is in, the reply never comes: the worker waits

    server = make_fault_server({"DOT": at_dot})
    settings = {"lease_seconds": 2, "resend_unknown": resend_unknown}
    (first,) = celery_workers(
        1, smtp_host=server.host, smtp_port=server.port, timeout=30, **settings
    )
    _, fleet = make_app(redis_server.url, **settings)
    message_id = fleet.enqueue(batch(1)[0])
    wait_until(stalled.is_set, 30, "the final dot")
    assert (fleet.result(message_id) or {}).get("status") == "sending"
    first.kill()

    celery_workers(1, smtp_host=server.host, smtp_port=server.port, **settings)
    result = fleet.wait([message_id], timeout=60)[message_id]

    assert result["final"]
    assert result["unknown"] == 1
    if resend_unknown:  # opted in: sent again, and the duplicate is on record as unknown
        assert result["status"] == "accepted"
        assert server.message_ids(received=True) == [message_id, message_id]
    else:
        assert result["status"] == "unknown"
        assert result["error_code"] == "outcome_unknown"
        assert server.message_ids(received=True) == [message_id]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_1000_messages_two_workers_one_killed_20_per_second(
    celery_workers: StartWorkers, redis_server: RedisServer, make_server: MakeServer
) -> None:
    server = make_server()
    settings = {"max_per_second": 20, "resend_unknown": True, "lease_seconds": 3}
    workers = celery_workers(2, smtp_host=server.host, smtp_port=server.port, **settings)
    _, fleet = make_app(redis_server.url, **settings)
    ids = [i for i in fleet.enqueue_batch(batch(1000)) if i]
    assert len(ids) == 1000

    wait_until(lambda: len(server.messages) >= 300, 60, "300 messages")
    assert len({m.session_id for m in server.messages}) == 2  # both workers were sending
    workers[0].kill()
    results = fleet.wait(ids, timeout=180)

    assert Counter(r["status"] for r in results.values()) == {"accepted": 1000}
    received = Counter(str(m.message["Message-ID"]) for m in server.messages)
    assert set(received) == set(ids)  # all delivered
    duplicates = {mid for mid, count in received.items() if count > 1}
    assert all(results[mid]["unknown"] >= 1 for mid in duplicates)
    times = [m.received_at for m in server.messages]
    unknown = sum(1 for r in results.values() if r["unknown"])
    print(  # shown with -s / -rP: what the run looked like
        f"received {len(times)} in {max(times) - min(times):.1f}s, busiest second "
        f"{max_in_any_window(times)}, unknown {unknown}, duplicates {len(duplicates)}"
    )
    assert max_in_any_window(times) <= 20
