"""Where the final dot is: the session's state, against the scripted FaultServer.

* A reply that arrives in the middle of DATA (before the final dot was written) aborts
  the transaction: the dot is never written, the connection is dropped, the server never
  completes the message (``FaultServer.completed()``), and the error is a failure before
  the dot (retrying cannot duplicate anything).
* Once the final dot may have reached the server, every failure is ``outcome_unknown``:
  a garbage or oversized reply too, not only a timeout or a lost connection.
* The next message to write ahead is asked for with a yielded action, outside the
  conversation; if the caller's ``upcoming()`` raises, the open DATA is never ended.

Sync and async, through the engine, ``FluxMail.send()`` (with retries) and BulkSender.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine_client import Connect, msg, timed
from fluxmail import FluxMail
from fluxmail.envelope import Composed, Envelope
from fluxmail.errors import (
    MessageRefusedError,
    MessageTooLargeError,
    OutcomeUnknownError,
    ProtocolError,
)
from fluxmail.smtp import AsyncSMTPConnection, SendResult, SMTPConnection
from fluxmail.smtp._actions import Exchange, NextMessage
from fluxmail.smtp._protocol import Session
from fluxmail.smtp._replies import Reply as R
from fluxmail.smtp._transfer import Phase
from hardening import MODES, run_batch, send, send_created
from servers import Close, EarlyReply, FaultServer, FaultSession, Garbage, Reply

MakeFault = Callable[..., FaultServer]
#: 8.9 MB (under the SIZE limit): many 1 MiB slices, so that an early reply arrives
#: well before the last one
BIG = b"Subject: big\r\n\r\n" + (b"0123456789abcdef" * 4 + b"\r\n") * 135_000
BIG_BODY = ("x" * 75 + "\n") * 120_000  # 9 MB through create()
EARLY_250 = EarlyReply("250 2.0.0 OK, already")
EARLY_452 = EarlyReply("452 4.3.1 Insufficient system storage")
EARLY_554 = EarlyReply("554 5.7.1 Not from you")


def big_message(server: FaultServer) -> FluxMail:
    mailer = FluxMail(**server.fluxmail_kwargs(sender="a@example.com", max_retries=2))
    mailer.retry_delay = 0.01
    return mailer


# --- replies before the final dot: abort, never write the dot --------------------------


@pytest.mark.parametrize(
    ("early", "cls", "code", "transient"),
    [
        (EARLY_250, ProtocolError, "protocol_error", True),
        (EARLY_452, MessageRefusedError, "message_refused", True),
        (EARLY_554, MessageRefusedError, "message_refused", False),
        (
            EarlyReply("552 5.3.4 Too big", after=1024),
            MessageTooLargeError,
            "message_too_large",
            False,
        ),
        (EarlyReply(b"what is this\r\n"), ProtocolError, "protocol_error", True),
    ],
    ids=["250", "452", "554", "552", "garbage"],
)
def test_early_reply_aborts_without_the_dot(
    connect: Connect,
    make_fault_server: MakeFault,
    early: EarlyReply,
    cls: type[Exception],
    code: str,
    transient: bool,
) -> None:
    server = make_fault_server({"DATA": early, "DOT": Reply("554 5.7.1 the real answer")})
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(msg(data=BIG)), cls)
    assert exc.code == code
    assert exc.transient is transient
    assert not isinstance(exc, OutcomeUnknownError)
    assert not client.is_open
    server.wait_closed()
    assert server.completed() == [False]  # the server never got the final dot
    assert server.received == []
    assert server.transactions[0].size < len(BIG)


def test_early_reply_with_the_354_stops_a_small_message(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    """The reply comes in the same read as the 354: not one byte of the data goes out."""
    server = make_fault_server({"DATA": EarlyReply("554 5.7.1 no", after=0)})
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(msg()), MessageRefusedError)
    assert exc.smtp_code == 554
    server.wait_closed()
    assert server.completed() == [False]
    assert server.transactions[0].size == 0


@pytest.mark.parametrize("mode", MODES)
def test_early_250_then_554_is_never_reported_sent(
    make_fault_server: MakeFault, mode: str
) -> None:
    """The issue's case: an early 250, then the real 554 at the dot. Reported as a
    failure (retried by send(): nothing was delivered), never as sent; no copy
    completed."""
    server = make_fault_server({"DATA": EARLY_250, "DOT": Reply("554 5.7.1 rejected")})
    mailer = big_message(server)
    with pytest.raises(ProtocolError) as info:
        send(mailer, mode, subject="s", recipients=["b@example.com"], body=BIG_BODY)
    assert info.value.transient
    server.wait_closed()
    tries = 3 if mode == "sync" else 1  # max_retries=2; send_async() does not retry
    assert server.completed() == [False] * tries
    assert server.received == []


@pytest.mark.parametrize("mode", MODES)
def test_early_452_then_250_delivers_exactly_once(make_fault_server: MakeFault, mode: str) -> None:
    """The issue's other case: an early 452 (first session only), then 250 at the dot.
    The aborted attempt left nothing on the server; the retry delivered one copy."""

    def first_only(session: FaultSession) -> Any:
        return EARLY_452 if session.number == 1 else None

    server = make_fault_server({"DATA": first_only})
    mailer = big_message(server)
    mailer.create(subject="s", recipients=["b@example.com"], body=BIG_BODY)
    if mode == "sync":
        send_created(mailer, mode)
        server.wait_closed()
        assert server.completed() == [False, True]
        assert len(server.received) == 1
        return
    with pytest.raises(MessageRefusedError) as info:  # send_async() does not retry
        send_created(mailer, mode)
    assert info.value.smtp_code == 452
    assert info.value.transient
    server.wait_closed()
    assert server.completed() == [False]


def test_early_452_every_time_leaves_no_copy(make_fault_server: MakeFault) -> None:
    server = make_fault_server({"DATA": EARLY_452})
    mailer = big_message(server)
    with pytest.raises(MessageRefusedError) as info:
        send(mailer, "sync", subject="s", recipients=["b@example.com"], body=BIG_BODY)
    assert info.value.smtp_code == 452
    server.wait_closed()
    assert server.completed() == [False, False, False]
    assert server.received == []


@pytest.mark.parametrize("mode", MODES)
def test_bulk_early_reply_to_one_message(make_fault_server: MakeFault, mode: str) -> None:
    """BulkSender (pipelined): the big message is refused early on every try, without a
    single completed copy; the small ones around it are delivered once each."""
    server = make_fault_server({"DATA": EARLY_452})
    mailer = big_message(server)
    messages = [
        {"subject": f"m{i}", "recipients": ["b@example.com"], "body": body}
        for i, body in enumerate(["small 0", BIG_BODY, "small 2"])
    ]
    result = run_batch(mailer, messages, mode)
    assert (result["sent"], result["failed"]) == (2, 1)
    ((index, exc),) = result["errors"]
    assert index == 1
    assert isinstance(exc, MessageRefusedError)
    assert exc.smtp_code == 452
    server.wait_closed()
    big = [t.completed for t in server.transactions if t.size > 100_000]
    assert big == [False, False, False]
    assert sorted(str(m.message["Subject"]) for m in server.received) == ["m0", "m2"]


# --- after the final dot: every failure is unknown --------------------------------------


@pytest.mark.parametrize("oversized", [False, True], ids=["garbage", "oversized"])
def test_unusable_reply_to_the_dot_is_unknown(
    connect: Connect, make_fault_server: MakeFault, oversized: bool
) -> None:
    server = make_fault_server({"DOT": Garbage(oversized=oversized)})
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(msg()), OutcomeUnknownError)
    assert exc.code == "outcome_unknown"
    assert exc.message_id == "<t1@example.com>"
    assert not exc.transient
    assert isinstance(exc.__cause__, ProtocolError)
    assert not client.is_open
    assert server.completed() == [True]


@pytest.mark.parametrize("mode", MODES)
def test_garbage_after_the_dot_is_never_resent(make_fault_server: MakeFault, mode: str) -> None:
    server = make_fault_server({"DOT": Garbage()})
    mailer = big_message(server)
    with pytest.raises(OutcomeUnknownError) as info:
        send(mailer, mode, subject="s", recipients=["b@example.com"], body="hi")
    assert isinstance(info.value.__cause__, ProtocolError)
    assert len(server.received) == 1  # max_retries=2, and still one copy


@pytest.mark.parametrize("mode", MODES)
def test_bulk_journal_records_garbage_after_the_dot_as_unknown(
    make_fault_server: MakeFault, mode: str, tmp_path: Path
) -> None:
    def garbage_to_second(session: FaultSession) -> Any:
        return Garbage() if len(session.dots) == 2 and session.number == 1 else None

    server = make_fault_server({"DOT": garbage_to_second})
    path = tmp_path / "run.jsonl"
    mailer = big_message(server)
    messages = [
        {"subject": f"m{i}", "recipients": ["b@example.com"], "body": "x"} for i in range(4)
    ]
    result = run_batch(mailer, messages, mode, journal=path)
    assert (result["sent"], result["failed"]) == (3, 1)
    ((index, exc),) = result["errors"]
    assert (index, type(exc)) == (1, OutcomeUnknownError)
    records = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    final = {r["i"]: r["s"] for r in records}
    assert final == {0: "accepted", 1: "unknown", 2: "accepted", 3: "accepted"}
    subjects = [str(m.message["Subject"]) for m in server.received]
    assert sorted(subjects) == ["m0", "m1", "m2", "m3"]  # m1 once: not resent


# --- the next message is a yielded action --------------------------------------------


def _opened_session() -> Session:
    from fluxmail.config import SmtpConfig

    session = Session(SmtpConfig(host="mx.example.com", local_hostname="c.example.com"))
    conversation = session.handshake()
    assert next(conversation).stage == "greeting"  # type: ignore[union-attr]
    conversation.send([R(220, ("hi",))])
    with pytest.raises(StopIteration):
        conversation.send([R(250, ("mx", "PIPELINING"))])
    return session


def _composed(n: int) -> Composed:
    data = f"Subject: {n}\r\n\r\nhi\r\n".encode()
    return Composed(Envelope("a@example.com", ("b@example.com",)), data, f"<{n}@example.com>")


def test_the_session_asks_for_the_next_message_with_an_action() -> None:
    session = _opened_session()
    first, second = _composed(1), _composed(2)
    conversation = session.send_message(first, pipeline=True)
    envelope = next(conversation)
    assert isinstance(envelope, Exchange)
    assert session.phase is Phase.IDLE
    ask = conversation.send([R(250, ("ok",)), R(250, ("ok",)), R(354, ("go",))])
    assert isinstance(ask, NextMessage)  # the driver calls upcoming(), not the session
    dot = conversation.send(second)
    assert isinstance(dot, Exchange)
    assert dot.message_id == "<1@example.com>"
    assert dot.guarded
    assert dot.tail.endswith(b"RCPT TO:<b@example.com>\r\nDATA\r\n")
    assert session.phase is Phase.DATA
    with pytest.raises(StopIteration) as stop:
        conversation.send([R(250, ("queued",)), R(250, ("ok",)), R(250, ("ok",)), R(354, ("go",))])
    assert isinstance(stop.value.value, SendResult)
    assert session.ahead is not None
    assert session.ahead.composed is second


class Conn:
    """SMTPConnection or AsyncSMTPConnection with send_pipelined, one calling style."""

    def __init__(self, mode: str, server: FaultServer, loop: asyncio.AbstractEventLoop) -> None:
        self.mode, self.loop = mode, loop
        config = server.smtp_config()
        self.conn = SMTPConnection(config) if mode == "sync" else AsyncSMTPConnection(config)

    def call(self, value: Any) -> Any:
        return self.loop.run_until_complete(value) if self.mode == "async" else value

    def send_pipelined(self, composed: Composed, upcoming: Any) -> SendResult:
        result: SendResult = self.call(self.conn.send_pipelined(composed, upcoming))
        return result


@pytest.fixture(params=MODES)
def conn_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[FaultServer], Conn]]:
    loop = asyncio.new_event_loop()
    made: list[Conn] = []

    def make(server: FaultServer) -> Conn:
        made.append(Conn(request.param, server, loop))
        return made[-1]

    yield make
    for conn in made:
        conn.call(conn.conn.close())
    loop.close()


@pytest.mark.parametrize("error", [RuntimeError("journal disk full"), KeyboardInterrupt()])
def test_upcoming_that_raises_never_ends_the_open_data(
    conn_factory: Callable[[FaultServer], Conn],
    make_fault_server: MakeFault,
    error: BaseException,
) -> None:
    server = make_fault_server()
    conn = conn_factory(server)

    def upcoming() -> Composed | None:
        raise error

    with pytest.raises(type(error)):
        conn.send_pipelined(_composed(1), upcoming)
    assert not conn.conn.is_open
    server.wait_closed()
    assert server.completed() == [False]  # DATA was open; its dot was never written
    conn.send_pipelined(_composed(1), lambda: None)  # a fresh connection
    assert server.completed() == [False, True]
    assert len(server.sessions) == 2


def test_upcoming_is_asked_once_per_message(
    conn_factory: Callable[[FaultServer], Conn], make_fault_server: MakeFault
) -> None:
    server = make_fault_server()
    conn = conn_factory(server)
    queue = [_composed(2), _composed(3)]
    asked: list[int] = []

    def upcoming() -> Composed | None:
        asked.append(len(queue))
        return queue.pop(0) if queue else None

    current = _composed(1)
    for nxt in [*queue, None]:
        conn.send_pipelined(current, upcoming)
        if nxt is not None:
            current = nxt
    assert asked == [2, 1, 0]
    assert [m.session_id for m in server.received] == [1, 1, 1]
    (session,) = server.sessions
    assert session.chunk_of("MAIL", 1) == session.dots[0]  # written ahead


# --- asyncio over TLS: no stray warning when the server closes -------------------------


def test_no_eof_received_warning_over_tls(
    make_fault_server: MakeFault, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_fault_server({"DOT": Close()}, tls=True)
    caplog.set_level(logging.WARNING, logger="asyncio")

    async def scenario() -> None:
        conn = AsyncSMTPConnection(server.smtp_config())
        with pytest.raises(OutcomeUnknownError):
            await conn.send(msg())
        await conn.close()
        server.close_sessions(farewell=b"")
        other = AsyncSMTPConnection(server.smtp_config())
        await other.open()
        server.close_sessions()  # an idle TLS session closed by the server
        await asyncio.sleep(0.2)
        await other.close()

    asyncio.run(scenario())
    assert "eof_received" not in caplog.text
