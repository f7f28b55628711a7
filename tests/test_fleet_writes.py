"""The fleet's writes without compare-and-set, in both claim stores (memory, a real Redis)
and in a chunk against a real SMTP server: a ``sending`` record written ``SET NX`` where
the record was absent, plain writes while the claims are certainly the writer's, and
compare-and-set for everything else (a record another claimant wrote, claims that may
have run out). An outlived claimant's late write is never overwritten."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.scale import LocalFleet
from fluxmail.scale._chunk import Chunk
from fluxmail.scale._decide import Record, Status, sending
from fluxmail.scale._memstore import MemoryStore
from fluxmail.scale._payload import make_payload
from fluxmail.scale._store import RedisStore, Store, Write
from redis_fixture import RedisServer
from servers import SMTPTestServer

LATE = Record(Status.ACCEPTED, owner="outlived", final=True, smtp_code=250, reply="ok")


def message(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "subject": f"Hi {i}",
        "recipients": [f"user{i}@example.com"],
        "body": f"Hello {i}!",
        "sender": "noreply@myapp.com",
        **extra,
    }


@pytest.fixture(params=["memory", "redis"])
def where(request: pytest.FixtureRequest) -> str | None:
    """None: a MemoryStore; else the URL of a real Redis."""
    if request.param == "memory":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def store(where: str | None) -> Iterator[Store]:
    made: Store = MemoryStore() if where is None else RedisStore.from_url(where, result_ttl=60)
    yield made
    made.close()


# --- the stores -----------------------------------------------------------------------------


def test_a_sure_write_over_an_absent_record_is_set_only_if_still_absent(store: Store) -> None:
    for mid in ("<a@x>", "<b@x>"):
        assert store.claim(mid, "t", lease=5)[0]
    assert store.finish("<b@x>", "outlived", None, LATE)  # it appeared after the claim
    attempts = [sending(None, "t", "e", 1.0).evolve(mark=i) for i in range(2)]
    writes = [
        Write(mid, None, attempt, renew=False, sure=True)
        for mid, attempt in zip(("<a@x>", "<b@x>"), attempts, strict=True)
    ]
    assert all(w.unchecked("t") for w in writes)
    assert store.write_many("t", writes, 5) == [True, False]
    assert store.get_many(["<a@x>", "<b@x>"]) == [attempts[0], LATE]  # the late one stands
    assert store.claim("<a@x>", "u", lease=5)[0] is False  # still t's


def test_a_sure_write_over_another_claimants_record_is_compare_and_set(store: Store) -> None:
    """The record an outlived claimant wrote (``sending``) is what this claimant saw at
    its claim; the outlived one records its late outcome before this one writes: this
    one's write is refused, the late outcome stands."""
    old = sending(None, "outlived", "e", 1.0)
    assert store.claim("<m@x>", "outlived", lease=0.1)[0]
    assert store.update("<m@x>", "outlived", None, old, lease=0.1)
    time.sleep(0.2)  # its claim expired
    taken, seen = store.claim("<m@x>", "t", lease=5)
    assert (taken, seen) == (True, old)
    assert store.finish("<m@x>", "outlived", old, LATE)  # late, nobody wrote since
    mine = sending(old, "t", "e", 2.0)
    write = Write("<m@x>", seen, mine, renew=False, sure=True)
    assert not write.unchecked("t")
    assert store.write_many("t", [write], 5) == [False]
    assert store.get("<m@x>") == LATE


def test_sure_writes_of_a_claimants_own_records_and_releases_are_plain(store: Store) -> None:
    mine = sending(None, "t", "e", 1.0)
    for mid in ("<a@x>", "<b@x>", "<c@x>"):
        store.claim(mid, "t", lease=5)
    assert store.write_many("t", [Write(m, None, mine) for m in ("<a@x>", "<b@x>")], 5) == [
        True,
        True,
    ]
    done = Record(Status.ACCEPTED, owner="t", final=True)
    writes = [
        Write("<a@x>", mine, done, owned=False, release=True, sure=True),
        Write("<b@x>", mine, None, owned=False, release=True, sure=True),  # put back
        Write("<c@x>", None, None, change=False, release=True, sure=True),
    ]
    assert all(w.unchecked("t") for w in writes)
    assert store.write_many("t", writes, 5) == [True, True, True]
    assert store.get_many(["<a@x>", "<b@x>", "<c@x>"]) == [done, None, None]
    assert all(store.claim(m, "u", lease=5)[0] for m in ("<a@x>", "<b@x>", "<c@x>"))
    failed = Record(Status.FAILED, owner="t", final=True)
    unsure = Write("<a@x>", mine, failed, owned=False)  # (not sure: compare-and-set)
    assert not unsure.unchecked("t")
    assert store.write_many("t", [unsure], 5) == [False]  # mine is no longer there


# --- chunks ---------------------------------------------------------------------------------


def test_a_record_that_appears_between_claim_and_prepare_is_not_overwritten(
    where: str | None, smtp_server: SMTPTestServer
) -> None:
    """The second message's outlived claimant records its outcome after this chunk's
    claim and before its ``sending``: that message is let go, not sent, its record
    stands; the others are sent once."""
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()), redis_url=where)
    courier = fleet.courier()
    payloads = [make_payload(message(i)) for i in range(3)]
    ids = [str(p["id"]) for p in payloads]
    chunk = Chunk(courier, payloads)
    chunk.claim()
    assert courier.store.finish(ids[1], "outlived", None, LATE)
    chunk.prepare()
    chunk.send()
    steps = chunk.settle()
    fleet.close()

    assert [s.retry_in is None for s in steps] == [True, False, True]  # looked at again
    assert [str(m.message["Message-ID"]) for m in smtp_server.messages] == [ids[0], ids[2]]
    assert courier.store.get(ids[1]) == LATE
    assert courier.store.claim(ids[1], "next", lease=5)[0]  # its claim was let go


def test_settle_after_the_claims_safe_time_is_compare_and_set(
    where: str | None, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    """A chunk outlives its claims (a stopped process): a successor took the message
    that failed to compose and recorded it; the outlived chunk's settle, past its safe
    time, compares and leaves the successor's record, and the sent message's record
    (written while the claims were certain) is kept."""
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF")
    fleet = LocalFleet(
        lambda: FluxMail(**smtp_server.fluxmail_kwargs()), redis_url=where, lease_seconds=0.5
    )
    courier = fleet.courier()
    payloads = [make_payload(message(0)), make_payload(message(1, attachments=[str(path)]))]
    path.unlink()
    ids = [str(p["id"]) for p in payloads]
    chunk = Chunk(courier, payloads)
    chunk.claim()
    chunk.prepare()
    chunk.send()  # the first accepted (given to the scribe), the second failed to compose
    time.sleep(0.6)  # the claims ran out
    store = courier.store
    taken, seen = store.claim(ids[1], "successor", lease=5)
    assert taken
    assert seen is not None
    assert seen.status is Status.SENDING
    theirs = Record(Status.UNKNOWN, owner="successor", final=True)
    assert store.update(ids[1], "successor", seen, theirs, lease=5)
    steps = chunk.settle()
    fleet.close()

    assert store.get(ids[1]) == theirs  # not overwritten by the late "failed"
    assert steps[1].record == theirs
    assert steps[0].record is not None
    assert steps[0].record.status is Status.ACCEPTED
    assert store.get(ids[0]) == steps[0].record
    assert [str(m.message["Message-ID"]) for m in smtp_server.messages] == [ids[0]]


def test_a_chunk_costs_one_round_trip_to_prepare_and_one_to_settle(
    redis_server: RedisServer, smtp_server: SMTPTestServer
) -> None:
    """Fresh messages: ``sending`` with ``SET NX``, the claims released with one ``DEL``,
    no ``WATCH`` nor ``MULTI`` but the claim's."""
    client = redis_server.client()
    fleet = LocalFleet(
        lambda: FluxMail(**smtp_server.fluxmail_kwargs()), redis_url=redis_server.url
    )
    payloads = [make_payload(message(i)) for i in range(50)]
    fleet.courier()  # (its set-up is not counted)
    client.config_resetstat()
    results = fleet.courier().run_many(payloads)
    stats = client.info("commandstats")
    fleet.close()
    client.close()

    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    assert {r["status"] for r in results} == {"accepted"}
    assert calls.get("watch", 0) == 0
    assert calls["multi"] == 1  # the claim
    assert calls["del"] == 1  # every claim released at once
    assert calls["set"] == 50 * 3  # the claim, "sending" (NX), the outcome
    assert calls["setbit"] == 50
