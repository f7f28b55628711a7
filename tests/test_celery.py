"""fluxmail.scale and fluxmail.celery in one process: claim stores (memory and a real
Redis), the fleet-wide limiter, the broker payload, the in-process fallback and Celery's
eager mode, against real SMTP servers."""

from __future__ import annotations

import base64
import io
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from fluxmail import FluxMail
from fluxmail.celery import register
from fluxmail.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidAddressError,
    InvalidMessageError,
)
from fluxmail.scale import LocalFleet
from fluxmail.scale._decide import Record, Status, sending
from fluxmail.scale._limiter import FleetLimiter, MemorySpacer, RedisSpacer
from fluxmail.scale._memstore import MemoryStore
from fluxmail.scale._payload import make_payload, read_payload
from fluxmail.scale._store import RedisStore, Store
from helpers import max_in_any_window
from redis_fixture import RedisServer
from servers import Close, FaultServer, SMTPTestServer

MakeServer = Callable[..., SMTPTestServer]
MakeFault = Callable[..., FaultServer]


def message(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "subject": f"Hi {i}",
        "recipients": [f"user{i}@example.com"],
        "body": f"Hello {i}!",
        "sender": "noreply@myapp.com",
        **extra,
    }


def received_ids(server: SMTPTestServer | FaultServer) -> list[str]:
    return [str(m.message["Message-ID"]) for m in server.messages]


# --- claim stores ---------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis_store = RedisStore.from_url(server.url, result_ttl=60)
    yield redis_store
    redis_store.client.close()


def test_store_claim_is_exclusive_until_released_or_expired(store: Store) -> None:
    taken, record = store.claim("<m@x>", "a", lease=0.3)
    assert (taken, record) == (True, None)
    assert store.claim("<m@x>", "b", lease=0.3)[0] is False
    assert 0 < store.lease_left("<m@x>") <= 0.3
    store.release("<m@x>", "b")  # not b's: nothing happens
    assert store.claim("<m@x>", "b", lease=0.3)[0] is False
    store.release("<m@x>", "a")
    assert store.claim("<m@x>", "b", lease=0.2)[0] is True
    time.sleep(0.3)  # b vanished: its claim expires on its own
    assert store.claim("<m@x>", "c", lease=5)[0] is True


def test_store_writes_are_compare_and_set(store: Store) -> None:
    store.claim("<m@x>", "a", lease=5)
    first = sending(None, "a", "e", now=1.0)
    assert store.update("<m@x>", "b", None, first, lease=5) is False  # not b's claim
    assert store.update("<m@x>", "a", None, first, lease=5) is True
    assert store.update("<m@x>", "a", None, first, lease=5) is False  # not what a last saw
    assert store.get("<m@x>") == first
    final = Record(Status.ACCEPTED, owner="a", final=True, smtp_code=250)
    assert store.finish("<m@x>", "a", first, final) is True
    assert store.get_many(["<m@x>", "<other@x>"]) == [final, None]
    assert store.claim("<m@x>", "b", lease=5) == (True, final)  # finish released a's claim


def test_store_lets_a_late_worker_record_unless_someone_took_over(store: Store) -> None:
    store.claim("<m@x>", "a", lease=0.1)
    attempt = sending(None, "a", "e", now=1.0)
    store.update("<m@x>", "a", None, attempt, lease=0.1)
    time.sleep(0.2)  # a's claim expired mid-send, nobody took over: a still records
    accepted = Record(Status.ACCEPTED, owner="a", final=True)
    assert store.finish("<m@x>", "a", attempt, accepted) is True

    store.claim("<n@x>", "a", lease=0.1)
    store.update("<n@x>", "a", None, attempt, lease=0.1)
    time.sleep(0.2)
    assert store.claim("<n@x>", "b", lease=5)[0] is True
    unknown = Record(Status.UNKNOWN, owner="b", final=True)
    assert store.update("<n@x>", "b", attempt, unknown, lease=5) is True
    assert store.finish("<n@x>", "a", attempt, accepted) is False  # b's record stands
    assert store.get("<n@x>") == unknown


# --- the fleet-wide limiter -----------------------------------------------------------------


def take_slots(limiter: FleetLimiter, count: int, out: list[float]) -> None:
    for _ in range(count):
        assert limiter.acquire(max_wait=5.0) == 0.0
        out.append(time.monotonic())


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_limiter_spaces_sends_across_limiters(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Two limiters (two workers) sharing one spacer: 40 sends at 50/s, fleet wide."""
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        spacers: list[Any] = [RedisSpacer(server.client(), "t:rate") for _ in range(2)]
    else:
        shared = MemorySpacer()
        spacers = [shared, shared]
    limiters = [FleetLimiter(max_per_second=50, spacer=s) for s in spacers]
    starts: list[float] = []
    threads = [threading.Thread(target=take_slots, args=(lim, 20, starts)) for lim in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    starts.sort()
    assert len(starts) == 40
    interval = 1.05 / 50
    # measured in the clients, after the slot was granted: allow a few ms of thread jitter
    spans = [starts[i + 5] - starts[i] for i in range(len(starts) - 5)]
    assert min(spans) >= 5 * interval - 0.01
    assert starts[-1] - starts[0] >= 39 * interval - 0.01
    assert max_in_any_window(starts) <= 50


def test_limiter_quotas_use_limits_moving_windows(redis_server: RedisServer) -> None:
    from limits.storage import RedisStorage

    limiter = FleetLimiter(
        max_per_second=0,
        spacer=MemorySpacer(),
        quotas={"per_minute": 3, "per_day": 100},
        quota_storage=lambda: RedisStorage(redis_server.url, key_prefix="t:limits"),
        key="t:quota",
    )
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.try_acquire()
    assert 55 < wait <= 60  # the minute's quota is spent: back when the first one ages out
    assert limiter.acquire(max_wait=0.1) == pytest.approx(wait, abs=1)  # gives it back


def test_limiter_off_by_default() -> None:
    limiter = FleetLimiter(max_per_second=0, spacer=MemorySpacer())
    assert not limiter.enabled
    assert limiter.acquire(max_wait=0) == 0.0


# --- the payload ----------------------------------------------------------------------------


def test_payload_fixes_the_message_id_and_round_trips_attachments(tmp_path: Path) -> None:
    report = tmp_path / "report.txt"
    report.write_text("numbers")
    spec = message(
        attachments=[str(report), ("data.bin", b"\x00\x01", "application/x-test")],
        html_body=True,
        body='<p><img src="cid:logo"></p>',
        inline_images={"logo": ("logo.png", b"\x89PNG")},
        headers={"X-Campaign": "spring"},
        cc=("cc@example.com",),
    )
    spec["attachments"].append(io.BytesIO(b"file object"))
    spec["attachments"][-1].name = "upload.txt"
    payload = make_payload(spec)
    assert payload["id"].startswith("<")
    assert payload["id"].endswith("@myapp.com>")
    encoded = payload["message"]["attachments"]
    assert encoded[0] == str(report)
    assert base64.b64decode(encoded[1]["b64"]) == b"\x00\x01"
    mid, enqueue, options = read_payload(payload)
    assert (mid, enqueue) == (payload["id"], payload["enqueue"])
    assert options["attachments"][1:] == [
        ("data.bin", b"\x00\x01", "application/x-test"),
        ("upload.txt", b"file object"),
    ]
    assert options["inline_images"] == {"logo": ("logo.png", b"\x89PNG")}
    assert options["cc"] == ["cc@example.com"]


def test_payload_fails_early_on_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidAddressError):
        make_payload(message(recipients=["not an address"]))
    with pytest.raises(InvalidMessageError, match="unknown create"):
        make_payload(message(colour="red"))
    with pytest.raises(InvalidMessageError, match="cannot be sent through the queue"):
        make_payload(message(headers={"X-Obj": object()}))
    with pytest.raises(InvalidMessageError, match="attachments"):
        make_payload(message(attachments=[str(tmp_path / "missing.pdf")]))
    with pytest.raises(ConfigurationError, match="Message-ID"):
        make_payload({"subject": "s", "recipients": ["a@example.com"], "body": "b"}, environ={})
    with pytest.raises(InvalidMessageError):
        make_payload(message(), message_id="no-angle-brackets")
    given = make_payload(message(), message_id="<order-42@myapp.com>")
    assert given["id"] == "<order-42@myapp.com>"
    no_sender = {"subject": "s", "recipients": ["a@example.com"], "body": "b"}
    assert make_payload(no_sender, domain="mail.example.org")["id"].endswith("@mail.example.org>")


# --- the in-process fallback ----------------------------------------------------------------


def test_local_fleet_delivers_once_over_one_connection(smtp_server: SMTPTestServer) -> None:
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()))
    errors: list[tuple[int, str]] = []
    batch = [message(i) for i in range(5)]
    batch[2]["recipients"] = ["bad address"]
    ids = fleet.enqueue_batch(batch, on_error=lambda i, e: errors.append((i, e.code)))
    assert ids[2] is None
    assert errors == [(2, "invalid_address")]
    sent = [i for i in ids if i]
    assert received_ids(smtp_server) == sent
    assert smtp_server.connections == 1
    result = fleet.result(sent[0])
    assert result is not None
    assert (result["status"], result["smtp_code"], result["reply"]) == (
        "accepted",
        250,
        "2.0.0 OK queued",
    )

    again = fleet.enqueue(message(0), message_id=sent[0])  # idempotent by Message-ID
    assert again == sent[0]
    assert len(smtp_server.messages) == 4
    fleet.close()


def test_local_fleet_retries_and_refuses(make_fault_server: MakeFault) -> None:
    from servers import FaultSession, Reply

    seen: list[str] = []

    def at_dot(session: FaultSession) -> Reply | None:
        seen.append(session.rcpt_tos[0])
        if session.rcpt_tos == ["user1@example.com"] and seen.count("user1@example.com") == 1:
            return Reply("451 4.3.0 Try later")
        if session.rcpt_tos == ["user2@example.com"]:
            return Reply("554 5.7.1 No thanks")
        return None

    server = make_fault_server({"DOT": at_dot})
    fleet = LocalFleet(lambda: FluxMail(**server.fluxmail_kwargs()), retry_delay=0.05)
    ids = [fleet.enqueue(message(i)) for i in range(3)]
    results = fleet.results(ids)
    assert [r["status"] for r in results.values() if r] == ["accepted", "accepted", "refused"]
    assert [r["attempts"] for r in results.values() if r] == [1, 2, 1]
    refused = results[ids[2]]
    assert refused is not None
    assert (refused["smtp_code"], refused["reply"]) == (554, "5.7.1 No thanks")
    assert seen.count("user2@example.com") == 1  # 5xx: never retried
    fleet.close()


@pytest.mark.parametrize("resend_unknown", [False, True])
def test_lost_after_the_final_dot_is_unknown(
    make_fault_server: MakeFault, resend_unknown: bool
) -> None:
    drops: list[int] = []

    def at_dot(session: Any) -> Close | None:
        if drops:
            return None
        drops.append(1)
        return Close()

    server = make_fault_server({"DOT": at_dot})
    fleet = LocalFleet(
        lambda: FluxMail(**server.fluxmail_kwargs()),
        retry_delay=0.05,
        resend_unknown=resend_unknown,
    )
    mid = fleet.enqueue(message())
    result = fleet.result(mid)
    assert result is not None
    assert result["unknown"] == 1
    if resend_unknown:
        assert result["status"] == "accepted"
        assert server.message_ids(received=True) == [mid, mid]
    else:
        assert (result["status"], result["final"]) == ("unknown", True)
        assert server.message_ids(received=True) == [mid]
    fleet.close()


def test_a_worker_that_died_mid_send_leaves_unknown(smtp_server: SMTPTestServer) -> None:
    """The record says "sending", nobody holds the claim: its worker vanished."""
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()))
    payload = make_payload(message())
    store = fleet.courier().store
    store.claim(payload["id"], "dead", lease=0.01)
    store.update(payload["id"], "dead", None, sending(None, "dead", payload["enqueue"], 1.0), 0.01)
    time.sleep(0.02)
    result = fleet.courier().run(payload)
    assert (result["status"], result["unknown"], result["final"]) == ("unknown", 1, True)
    assert smtp_server.messages == []
    fleet.close()


def test_a_worker_that_died_before_sending_is_simply_retried(
    smtp_server: SMTPTestServer,
) -> None:
    """A claim that expired without a "sending" record: nothing reached the server."""
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()))
    payload = make_payload(message())
    fleet.courier().store.claim(payload["id"], "dead", lease=0.05)
    result = fleet.courier().run(payload)  # waits for the claim to expire, then sends
    assert (result["status"], result["unknown"]) == ("accepted", 0)
    assert received_ids(smtp_server) == [payload["id"]]
    fleet.close()


def test_a_connection_the_server_closed_is_reopened(make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    fleet = LocalFleet(lambda: FluxMail(**server.fluxmail_kwargs()))
    first = fleet.enqueue(message(1))
    server.close_sessions()  # idle timeout: 421 and close
    second = fleet.enqueue(message(2))
    assert server.message_ids() == [first, second]
    assert len(server.sessions) == 2
    fleet.close()


def test_bad_credentials_raise_and_leave_the_message_untouched(
    starttls_server: SMTPTestServer,
) -> None:
    kwargs = starttls_server.fluxmail_kwargs(password="wrong")
    fleet = LocalFleet(lambda: FluxMail(**kwargs))
    with pytest.raises(AuthenticationError):
        fleet.enqueue(message(), message_id="<bad-login@myapp.com>")
    assert fleet.result("<bad-login@myapp.com>") is None
    assert starttls_server.messages == []
    fleet.close()


def test_attachment_gone_before_the_worker_ran_fails_that_message(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF")
    payload = make_payload(message(attachments=[str(path)]))
    path.unlink()
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()))
    result = fleet.courier().run(payload)
    assert (result["status"], result["error_code"]) == ("failed", "attachment_not_found")
    fleet.close()


def test_a_chunk_composes_each_message_as_it_is_sent_and_one_gone_fails_alone(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    """A chunk writes ``sending`` for all, then composes each message when the transport
    takes it: one whose attachment vanished fails alone (attachment_not_found, nothing
    of it sent), the others are delivered once, in order."""
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF")
    payloads = [
        make_payload(message(0)),
        make_payload(message(1, attachments=[str(path)])),
        make_payload(message(2)),
    ]
    path.unlink()
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()))
    results = fleet.courier().run_many(payloads)
    assert [r["status"] for r in results] == ["accepted", "failed", "accepted"]
    assert results[1]["error_code"] == "attachment_not_found"
    assert [m.message["Subject"] for m in smtp_server.messages] == [
        message(0)["subject"],
        message(2)["subject"],
    ]
    assert fleet.result(results[1]["message_id"])["status"] == "failed"
    fleet.close()


def test_local_fleet_rate_limit_holds_on_the_server(smtp_server: SMTPTestServer) -> None:
    fleet = LocalFleet(lambda: FluxMail(**smtp_server.fluxmail_kwargs()), max_per_second=20)
    fleet.enqueue_batch([message(i) for i in range(25)])
    times = [m.received_at for m in smtp_server.messages]
    assert len(times) == 25
    assert max_in_any_window(times) <= 20
    assert times[-1] - times[0] >= 24 * 1.05 / 20 - 0.01
    fleet.close()


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        LocalFleet(max_per_second=-1)
    with pytest.raises(ConfigurationError):
        LocalFleet(per_day=1.5)
    with pytest.raises(ConfigurationError, match="max_per_hour"):
        LocalFleet(max_per_hour=3)


# --- Celery eager mode ----------------------------------------------------------------------


def eager_app(**conf: Any) -> Celery:
    app = Celery("fluxmail_eager", set_as_current=False, broker="memory://")
    app.conf.update(task_always_eager=True, **conf)
    return app


def test_celery_eager_mode_runs_the_same_code_in_memory(smtp_server: SMTPTestServer) -> None:
    app = eager_app()
    fleet = register(app, mailer=lambda: FluxMail(**smtp_server.fluxmail_kwargs()))
    assert app.tasks["fluxmail.send"].acks_late is True
    mid = fleet.enqueue(message())
    result = fleet.result(mid)
    assert result is not None
    assert result["status"] == "accepted"
    assert received_ids(smtp_server) == [mid]
    fleet.enqueue(message(), message_id=mid)
    assert len(smtp_server.messages) == 1
    direct = fleet.task.apply(args=(make_payload(message(1)),)).get()  # the task's return
    assert (direct["status"], direct["smtp_code"]) == ("accepted", 250)


def test_celery_eager_mode_with_redis_and_the_mailer_by_name(
    smtp_server: SMTPTestServer, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "FLUXMAIL_HOST": smtp_server.host,
        "FLUXMAIL_PORT": smtp_server.port,
    }.items():
        monkeypatch.setenv(name, str(value))
    app = eager_app()
    fleet = register(
        app, mailer="fluxmail:FluxMail.from_env", redis_url=redis_server.url, retry_delay=0.1
    )
    ids = fleet.enqueue_batch([message(i) for i in range(3)])
    assert [r["status"] for r in fleet.wait([i for i in ids if i], timeout=5).values()] == [
        "accepted"
    ] * 3
    keys = sorted(k.decode() for k in redis_server.client().keys("fluxmail:msg:*"))
    assert keys == sorted(f"fluxmail:msg:{i}" for i in ids if i)


def test_celery_without_redis_is_refused_outside_eager_mode() -> None:
    app = Celery("fluxmail_no_redis", set_as_current=False, broker="memory://")
    fleet = register(app, mailer=lambda: FluxMail(host="127.0.0.1"))
    with pytest.raises(ConfigurationError, match="needs Redis"):
        fleet.result("<a@b>")
    with pytest.raises(ConfigurationError, match="register"):
        register(app, max_per_minute=3)


def test_apps_in_one_process_each_run_their_own_fleet(smtp_server: SMTPTestServer) -> None:
    """Celery adds a shared task to every app: without shared=False the second app's
    fluxmail.send is the first app's task (Celery warns, DuplicateTaskNameWarning),
    which runs the first app's fleet and mailer."""
    first = Celery("fluxmail_first", set_as_current=False, broker="memory://")
    register(first, mailer="nowhere:mailer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = eager_app()
        fleet = register(second, mailer=lambda: FluxMail(**smtp_server.fluxmail_kwargs()))
        own = second.tasks["fluxmail.send"]
    assert own is not first.tasks["fluxmail.send"]
    mid = fleet.enqueue(message())
    assert received_ids(smtp_server) == [mid]
