"""The fleet's batched tasks: a chunk of messages per task, against a real Redis and real
SMTP servers (real Celery workers for the crash and rate tests).

What is checked: one task per Message-ID however often it is enqueued; a chunk costs a
few Redis round trips, not a few per message; a worker SIGKILLed in the middle of a chunk
leaves unknown only the message whose final dot was on the wire (its other messages are
sent by the next worker, once); 1,000 messages through two workers, one SIGKILLed, each
delivered at most once and every accepted one exactly once, with never more than the
fleet's limit in any one-second window while the machine's CPUs are kept busy.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celery_app import QUEUE, make_app
from fluxmail import FluxMail, Invite
from fluxmail.errors import InvalidMessageError
from fluxmail.scale import LocalFleet
from fluxmail.scale._decide import sending
from fluxmail.scale._payload import make_payload, pack_chunk, read_chunk
from fluxmail.scale._store import Write
from helpers import batch, max_in_any_window, wait_until
from redis_fixture import RedisServer, StartWorkers
from servers import DEFAULT_CAPS, FaultServer, FaultSession, SMTPTestServer, Stall

MakeServer = Callable[..., SMTPTestServer]
MakeFault = Callable[..., FaultServer]


def fixed_ids(count: int, tag: str = "m") -> list[str | None]:
    return [f"<{tag}{i}@myapp.com>" for i in range(count)]


# --- enqueueing -----------------------------------------------------------------------------


def test_one_message_id_is_published_once_however_often_it_is_enqueued(
    redis_server: RedisServer,
) -> None:
    _, fleet = make_app(redis_server.url)
    client = redis_server.client()
    try:
        ids = fleet.enqueue_batch(batch(5), message_ids=fixed_ids(5))
        assert ids == fixed_ids(5)
        assert client.llen(QUEUE) == 1  # one task for the chunk of 5
        assert fleet.enqueue_batch(batch(5), message_ids=fixed_ids(5)) == ids
        assert fleet.enqueue(batch(1)[0], message_id="<m0@myapp.com>") == "<m0@myapp.com>"
        assert client.llen(QUEUE) == 1  # queued already: nothing published again

        twice = fleet.enqueue_batch(batch(2), message_ids=["<d@myapp.com>", "<d@myapp.com>"])
        assert twice == ["<d@myapp.com>", "<d@myapp.com>"]
        fleet.enqueue(batch(1)[0], message_id="<d@myapp.com>")
        assert client.llen(QUEUE) == 2  # one more task, carrying <d@myapp.com> once
        results = fleet.results([*ids, "<d@myapp.com>"])
        assert {r["status"] for r in results.values()} == {"pending"}

        with pytest.raises(InvalidMessageError):  # a fixed Message-ID is checked
            fleet.enqueue_batch(batch(1), message_ids=["no-angle-brackets"], on_error=_raise)
    finally:
        client.close()
        fleet.close()


def test_a_chunk_travels_packed_in_one_string_and_a_list_is_read_too(
    redis_server: RedisServer, smtp_server: SMTPTestServer
) -> None:
    kwargs = smtp_server.fluxmail_kwargs()
    app, fleet = make_app(redis_server.url, mailer=lambda: FluxMail(**kwargs))
    client = redis_server.client()
    try:
        ids = fleet.enqueue_batch(batch(3), message_ids=fixed_ids(3, "p"))
        (raw,) = client.lrange(QUEUE, 0, -1)
        envelope = json.loads(raw)
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        assert len(args) == 1
        assert set(args[0]) == {"v", "chunk"}
        assert isinstance(args[0]["chunk"], str)  # one string, not a dict per message
        assert [p["id"] for p in read_chunk(args[0])] == ids

        def run(argument: object) -> Any:  # the task body, in this process
            return app.tasks["fluxmail.send"].apply(args=(argument,)).get()

        packed = pack_chunk([make_payload(m) for m in batch(2)])
        assert [r["status"] for r in run(packed)] == ["accepted", "accepted"]
        as_list = [make_payload(m) for m in batch(2)]  # as an older publisher sent it
        assert [r["status"] for r in run(as_list)] == ["accepted", "accepted"]
        assert len(smtp_server.messages) == 4
        for bad in ({"v": 1, "chunk": "[{"}, {"v": 1, "chunk": "{}"}, {"v": 2, "chunk": "[]"}):
            with pytest.raises(InvalidMessageError) as caught:
                run(bad)
            assert caught.value.code == "invalid_message"
        assert len(smtp_server.messages) == 4
    finally:
        client.close()
        fleet.close()


def _raise(index: int, exc: Exception) -> None:
    raise exc


def test_a_batch_with_fixed_ids_is_sent_once_and_again_only_after_a_refusal(
    smtp_server: SMTPTestServer,
) -> None:
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()))
    ids = fleet.enqueue_batch(batch(4), message_ids=fixed_ids(4))
    assert fleet.enqueue_batch(batch(4), message_ids=fixed_ids(4)) == ids
    received = [str(m.message["Message-ID"]) for m in smtp_server.messages]
    assert received == ids  # each once, over one connection
    assert smtp_server.connections == 1
    assert {r["status"] for r in fleet.results([i for i in ids if i]).values()} == {"accepted"}
    fleet.close()


def test_an_invite_travels_through_the_queue(smtp_server: SMTPTestServer) -> None:
    start = datetime(2027, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    invite = Invite(
        summary="Planning",
        start=start,
        end=start + timedelta(minutes=30),
        organizer="Boss <boss@myapp.com>",
        location="Room 4",
    )
    message = {**batch(1)[0], "invite": invite}
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()))
    (message_id,) = fleet.enqueue_batch([message])
    fleet.close()

    assert message_id is not None
    (received,) = smtp_server.messages
    raw = received.message.as_string()
    assert "BEGIN:VCALENDAR" in raw
    assert f"UID:{invite.uid}" in raw  # the uid fixed at enqueue, not a new one
    assert "DTSTART:20270301T080000Z" in raw
    assert "Room 4" in raw


# --- Redis round trips -------------------------------------------------------------------------


def test_a_chunk_costs_a_few_round_trips_not_a_few_per_message(
    redis_server: RedisServer, smtp_server: SMTPTestServer
) -> None:
    """100 messages in one chunk: one claim step, one compare-and-set before sending and
    one after, a dot mark and a record per message sent without waiting."""
    client = redis_server.client()
    client.config_resetstat()
    fleet = LocalFleet(
        lambda: FluxMail(**smtp_server.fluxmail_kwargs()), redis_url=redis_server.url
    )
    try:
        ids = fleet.enqueue_batch(batch(100), chunk=100)
        stats = client.info("commandstats")
    finally:
        fleet.close()
        client.close()
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    assert len(smtp_server.messages) == 100
    assert {r["status"] for r in fleet.results([i for i in ids if i]).values()} == {"accepted"}
    assert calls.get("exec", 0) <= 3  # the claim, "sending" for the chunk, the outcomes
    assert calls.get("watch", 0) <= 2
    assert calls["setbit"] == 100  # a dot mark per message...
    assert calls["set"] >= 100 + 100  # ...its record, and its claim


# --- real workers ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_killed_mid_chunk_leaves_only_the_message_at_the_dot_unknown(
    celery_workers: StartWorkers, redis_server: RedisServer, make_fault_server: MakeFault
) -> None:
    """The whole chunk is ``sending`` while its worker works on it; a SIGKILL while the
    server holds the 5th message's final dot unanswered leaves that one unknown, and the
    15 messages after it, whose dot was never written, are sent by the next worker."""
    dots: list[int] = []
    stalled = threading.Event()

    def at_dot(session: FaultSession) -> Stall | None:
        dots.append(1)
        if len(dots) == 5 and not stalled.is_set():
            stalled.set()
            return Stall()
        return None

    server = make_fault_server({"DOT": at_dot})
    settings = {"lease_seconds": 2}
    host, port = server.host, server.port
    (first,) = celery_workers(1, smtp_host=host, smtp_port=port, timeout=30, **settings)
    _, fleet = make_app(redis_server.url, **settings)
    ids = [i for i in fleet.enqueue_batch(batch(20)) if i]
    wait_until(stalled.is_set, 30, "the 5th final dot")
    before = fleet.results(ids)
    assert [before[i]["status"] for i in ids[3:]] == ["accepted"] + ["sending"] * 16
    first.kill()

    celery_workers(1, smtp_host=host, smtp_port=port, **settings)
    results = fleet.wait(ids, timeout=60)
    fleet.close()

    statuses = [results[i]["status"] for i in ids]
    assert statuses == ["accepted"] * 4 + ["unknown"] + ["accepted"] * 15
    assert results[ids[4]]["error_code"] == "outcome_unknown"
    assert all(results[i]["unknown"] == 0 for i in ids if i != ids[4])
    received = Counter(server.message_ids(received=True))
    assert received == Counter(ids)  # each once (the 5th too: the server had it)


#: (capabilities, which DATA of the first session stalls, the messages unknown after it)
STALLS = {
    # no PIPELINING: the 5th message waits for its 354 alone
    "stepwise": (("SIZE 10000000", "8BITMIME"), 5, []),
    # the chunk's first message: its envelope went out alone
    "pipelined-first": (DEFAULT_CAPS, 1, []),
    # the 5th's envelope rode with the 4th's final dot: the 4th's reply is read with the
    # 5th's envelope replies, so the 4th (its dot written, its outcome not read) is unknown
    "pipelined-ahead": (DEFAULT_CAPS, 5, [3]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", STALLS)
def test_a_worker_killed_while_the_server_holds_the_354_leaves_that_message_unsent(
    celery_workers: StartWorkers,
    redis_server: RedisServer,
    make_fault_server: MakeFault,
    case: str,
) -> None:
    """The dot mark is set after the 354, right before the data: a SIGKILL while the
    server holds a message's 354 leaves it unmarked (its data never left), so the next
    worker sends it as if that try had not begun: once, never unknown."""
    capabilities, stall_at, unknown = STALLS[case]
    stalled = threading.Event()

    def at_data(session: FaultSession) -> Stall | None:
        if session.number == 1 and session.verbs().count("DATA") == stall_at:
            stalled.set()
            return Stall()
        return None

    server = make_fault_server({"DATA": at_data}, capabilities=capabilities)
    settings = {"lease_seconds": 2}
    host, port = server.host, server.port
    (first,) = celery_workers(1, smtp_host=host, smtp_port=port, timeout=30, **settings)
    _, fleet = make_app(redis_server.url, **settings)
    ids = [i for i in fleet.enqueue_batch(batch(20)) if i]
    wait_until(stalled.is_set, 30, f"the {stall_at}th DATA")
    time.sleep(0.2)  # (the worker waits for the 354: nothing it could still do counts)
    held = stall_at - 1  # the stalled message's index
    assert fleet.results([ids[held]])[ids[held]]["status"] == "sending"
    first.kill()

    celery_workers(1, smtp_host=host, smtp_port=port, **settings)
    results = fleet.wait(ids, timeout=60)
    fleet.close()

    statuses = [results[i]["status"] for i in ids]
    expected = ["unknown" if n in unknown else "accepted" for n in range(20)]
    assert statuses == expected
    stalled_one = results[ids[held]]
    assert (stalled_one["unknown"], stalled_one["attempts"]) == (0, 1)  # the try not counted
    assert Counter(server.message_ids(received=True)) == Counter(ids)  # each once


@pytest.fixture
def busy_cpus() -> Iterator[None]:
    """A busy loop per CPU, for the length of the test: workers get descheduled."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_1000_messages_two_workers_one_killed_each_delivered_once_under_cpu_load(
    celery_workers: StartWorkers,
    redis_server: RedisServer,
    make_server: MakeServer,
    busy_cpus: None,
) -> None:
    server = make_server()
    settings: dict[str, Any] = {"max_per_second": 40, "lease_seconds": 3}
    workers = celery_workers(2, smtp_host=server.host, smtp_port=server.port, **settings)
    _, fleet = make_app(redis_server.url, **settings)
    ids = [i for i in fleet.enqueue_batch(batch(1000), chunk=250) if i]
    assert len(ids) == 1000

    wait_until(lambda: len(server.messages) >= 300, 90, "300 messages")
    assert len({m.session_id for m in server.messages}) == 2  # both workers were sending
    workers[0].kill()  # mid-chunk
    results = fleet.wait(ids, timeout=180)
    fleet.close()

    statuses = Counter(r["status"] for r in results.values())
    assert set(statuses) <= {"accepted", "unknown"}, statuses
    assert statuses["unknown"] <= 1  # at most the one at its final dot when killed
    received = Counter(str(m.message["Message-ID"]) for m in server.messages)
    assert max(received.values()) == 1  # nothing twice
    accepted = {mid for mid, r in results.items() if r["status"] == "accepted"}
    assert accepted <= set(received)  # every accepted one reached the server, once
    assert set(received) <= set(ids)
    times = [m.received_at for m in server.messages]
    print(  # shown with -s / -rP: what the run looked like
        f"received {len(times)} in {max(times) - min(times):.1f}s, busiest second "
        f"{max_in_any_window(times)}, statuses {dict(statuses)}"
    )
    assert max_in_any_window(times) <= 40


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_recovery_reads_the_dot_marks_of_the_claimant_that_vanished(
    where: str, request: pytest.FixtureRequest, smtp_server: SMTPTestServer
) -> None:
    """A claimant wrote ``sending`` for three messages and marked only the second one's
    dot before it vanished: the second is unknown, the other two are simply sent."""
    url = request.getfixturevalue("redis_server").url if where == "redis" else None
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()), redis_url=url)
    store = fleet.courier().store
    payloads = [make_payload(m) for m in batch(3)]
    ids = [str(p["id"]) for p in payloads]
    assert all(taken for taken, _, _ in store.claim_many(ids, "dead", 0.05))
    attempts = [
        Write(mid, None, sending(None, "dead", str(p["enqueue"]), 1.0).evolve(mark=i))
        for i, (mid, p) in enumerate(zip(ids, payloads, strict=True))
    ]
    assert store.write_many("dead", attempts, 0.05) == [True] * 3
    scribe = store.scribe("dead")
    scribe.mark(1)
    scribe.close()
    time.sleep(0.1)  # the claims expire

    results = fleet.courier().run_many(payloads)
    fleet.close()

    assert [r["status"] for r in results] == ["accepted", "unknown", "accepted"]
    assert [r["attempts"] for r in results] == [1, 1, 1]  # the vanished tries do not count
    assert results[1]["error_code"] == "outcome_unknown"
    assert [str(m.message["Message-ID"]) for m in smtp_server.messages] == [ids[0], ids[2]]
