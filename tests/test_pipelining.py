"""BulkSender with PIPELINING: one round trip per message (RFC 2920).

Message N's data and final dot and message N+1's MAIL/RCPT/DATA go out in one write; the
FaultServer records the read each command (and each final dot) arrived in, so the tests
prove it on the wire, and that every guarantee holds around it: N unknown only when N's
reply was lost, N+1 never sent twice, RSET after a failed transaction, 421 handling, the
rate limiter and the journal.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import (
    BulkSender,
    FluxMail,
    FluxMailException,
    OutcomeUnknownError,
    RecipientsRefusedError,
)
from fluxmail.errors import ConnectError
from servers import DEFAULT_CAPS, Close, FaultServer, FaultSession, Reply

MakeFault = Callable[..., FaultServer]
MODES = ["sync", "async"]


def batch(count: int) -> list[dict[str, Any]]:
    return [
        {
            "subject": f"Hi {i}",
            "recipients": [f"user{i}@example.com"],
            "body": f"Hello {i}!",
            "sender": "noreply@myapp.com",
        }
        for i in range(count)
    ]


def run_batch(mailer: FluxMail, messages: Any, mode: str, **options: Any) -> Any:
    sender = BulkSender(mailer, **options.pop("sender_options", {}))
    if mode == "sync":
        return sender.send_batch(messages, progress=False, **options)
    return asyncio.run(sender.send_batch_async(messages, progress=False, **options))


def subjects(server: FaultServer, *, received: bool = False) -> list[int]:
    found = server.received if received else server.messages
    return [int(str(m.message["Subject"]).split()[-1]) for m in found]


@pytest.mark.parametrize("mode", MODES)
def test_next_envelope_rides_with_the_final_dot(make_fault_server: MakeFault, mode: str) -> None:
    server = make_fault_server()
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), batch(5), mode)
    assert result == {"sent": 5, "failed": 0, "total": 5, "errors": []}
    assert subjects(server) == [0, 1, 2, 3, 4]
    (session,) = server.sessions
    assert "RSET" not in session.verbs()
    for n in range(4):  # message n's final dot and message n+1's envelope: one read
        dot = session.dots[n]
        assert session.chunk_of("MAIL", n + 1) == dot
        assert session.chunk_of("RCPT", n + 1) == dot
        assert session.chunk_of("DATA", n + 1) == dot
    # the first envelope went alone, its data in the next write
    assert session.chunk_of("MAIL", 0) < session.dots[0]


@pytest.mark.parametrize("mode", MODES)
def test_no_pipelining_no_write_ahead(make_fault_server: MakeFault, mode: str) -> None:
    server = make_fault_server(capabilities=("SIZE 10000000", "8BITMIME"))
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), batch(3), mode)
    assert result["sent"] == 3
    (session,) = server.sessions
    assert all(session.chunk_of("MAIL", n + 1) > session.dots[n] for n in range(2))


@pytest.mark.parametrize("mode", MODES)
def test_drop_after_the_dot_with_the_next_envelope_in_flight(
    make_fault_server: MakeFault, mode: str
) -> None:
    """The server takes message 1's final dot and message 2's envelope, then drops: 1 is
    unknown (not resent), 2 never got its dot, so it is sent again, and arrives once."""

    def drop_after_second(session: FaultSession) -> Any:
        return Close() if session.number == 1 and session.messages == 1 else None

    server = make_fault_server({"DOT": drop_after_second})
    mailer = FluxMail(**server.fluxmail_kwargs(max_retries=0))
    result = run_batch(mailer, batch(4), mode)
    assert (result["sent"], result["failed"]) == (3, 1)
    ((index, exc),) = result["errors"]
    assert index == 1
    assert isinstance(exc, OutcomeUnknownError)
    assert subjects(server) == [0, 2, 3]
    assert sorted(subjects(server, received=True)) == [0, 1, 2, 3]  # each body once
    assert [m.session_id for m in server.messages] == [1, 2, 2]  # 2: on a new connection


@pytest.mark.parametrize("mode", MODES)
def test_drop_with_a_journal_records_unknown_then_accepted(
    make_fault_server: MakeFault, mode: str, tmp_path: Path
) -> None:
    def drop_after_second(session: FaultSession) -> Any:
        return Close() if session.number == 1 and session.messages == 1 else None

    server = make_fault_server({"DOT": drop_after_second})
    path = tmp_path / "run.jsonl"
    mailer = FluxMail(**server.fluxmail_kwargs(max_retries=0))
    result = run_batch(mailer, batch(4), mode, sender_options={"journal": path})
    assert (result["sent"], result["failed"]) == (3, 1)
    records = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    final = {r["i"]: r["s"] for r in records}
    assert final == {0: "accepted", 1: "unknown", 2: "accepted", 3: "accepted"}
    # message 2's "sending" precedes message 1's outcome: it was written before the
    # write that carried 1's final dot and 2's MAIL
    order = [(r["i"], r["s"]) for r in records]
    assert order.index((2, "sending")) < order.index((1, "unknown"))
    assert [s for i, s in order if i == 2] == ["sending", "accepted"]


@pytest.mark.parametrize("mode", MODES)
def test_5xx_to_the_next_rcpt_while_the_message_is_accepted(
    make_fault_server: MakeFault, mode: str
) -> None:
    def refuse_second_rcpt(session: FaultSession) -> Any:
        rcpts = [c for c in session.commands if c.upper().startswith("RCPT")]
        return Reply("550 5.1.1 No such user") if len(rcpts) == 2 else None

    server = make_fault_server({"RCPT": refuse_second_rcpt})
    result = run_batch(FluxMail(**server.fluxmail_kwargs(max_retries=3)), batch(3), mode)
    assert (result["sent"], result["failed"]) == (2, 1)
    ((index, exc),) = result["errors"]
    assert index == 1
    assert isinstance(exc, RecipientsRefusedError)
    assert exc.smtp_code == 550
    assert subjects(server) == [0, 2]
    assert subjects(server, received=True) == [0, 2]
    (session,) = server.sessions
    assert session.chunk_of("RCPT", 1) == session.dots[0]  # refused while 0 was accepted
    verbs = session.verbs()
    assert verbs.count("RSET") == 1  # the failed transaction was reset
    assert verbs.index("RSET") < [i for i, v in enumerate(verbs) if v == "MAIL"][2]


@pytest.mark.parametrize("mode", MODES)
def test_421_to_the_next_mail_reconnects_and_sends_it_once(
    make_fault_server: MakeFault, mode: str
) -> None:
    server = make_fault_server(close_after=2)
    result = run_batch(FluxMail(**server.fluxmail_kwargs(max_retries=0)), batch(5), mode)
    assert result == {"sent": 5, "failed": 0, "total": 5, "errors": []}
    assert subjects(server) == [0, 1, 2, 3, 4]
    assert sorted(subjects(server, received=True)) == [0, 1, 2, 3, 4]
    first = server.sessions[0]
    assert first.chunk_of("MAIL", 2) == first.dots[1]  # the 421'd MAIL rode with 1's dot
    assert len(server.sessions) == 3


@pytest.mark.parametrize("mode", MODES)
def test_not_written_ahead_before_its_rate_slot(make_fault_server: MakeFault, mode: str) -> None:
    server = make_fault_server()
    started = time.monotonic()
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), batch(3), mode, max_per_second=5)
    assert result["sent"] == 3
    assert time.monotonic() - started >= 2 * 1.05 / 5 - 0.01
    (session,) = server.sessions
    assert all(session.chunk_of("MAIL", n + 1) > session.dots[n] for n in range(2))


@pytest.mark.parametrize("mode", MODES)
def test_a_failing_final_dot_keeps_the_next_envelope(
    make_fault_server: MakeFault, mode: str
) -> None:
    """554 to message 0's final dot: message 1's envelope, already accepted behind it,
    goes on in the same session (no RSET could end it without sending it)."""

    def refuse_first(session: FaultSession) -> Any:
        return Reply("554 5.7.1 Rejected") if len(session.dots) == 1 else None

    server = make_fault_server({"DOT": refuse_first})
    result = run_batch(FluxMail(**server.fluxmail_kwargs(max_retries=3)), batch(3), mode)
    assert (result["sent"], result["failed"]) == (2, 1)
    assert result["errors"][0][0] == 0
    assert subjects(server) == [1, 2]
    assert len(server.sessions) == 1


# --- the dotting hook: after the 354, before the data ----------------------------------------


class DotHooks:
    """BatchHooks that write down what they hear; ``dotting`` notes when it was called
    and what the server had of the message's data by then, and raises ``error`` the
    ``nth`` time it is called for message ``fail_at``."""

    def __init__(
        self,
        server: FaultServer,
        fail_at: int | None = None,
        error: Exception | None = None,
        nth: int = 1,
    ) -> None:
        self.server, self.fail_at, self.error, self.nth = server, fail_at, error, nth
        self.events: list[tuple[str, int, str]] = []
        self.dots: list[tuple[float, int, int]] = []  # (when, DATAs opened, bytes of the last)

    def ready(self, key: int, composed: Any) -> bool:
        self.events.append(("ready", key, ""))
        return True

    def start(self, key: int, composed: Any) -> None:
        self.events.append(("start", key, ""))

    def dotting(self, key: int) -> None:
        when = time.monotonic()
        self.events.append(("dotting", key, ""))
        time.sleep(0.05)  # data written before this call would be at the server by now
        opened = self.server.transactions
        self.dots.append((when, len(opened), opened[-1].size if opened else -1))
        calls = self.events.count(("dotting", key, ""))
        if key == self.fail_at and calls == self.nth and self.error is not None:
            raise self.error

    def finished(self, key: int, outcome: Any) -> None:
        what = outcome.code if isinstance(outcome, FluxMailException) else "ok"
        self.events.append(("finished", key, what))

    def abandoned(self, key: int, error: BaseException) -> None:
        self.events.append(("abandoned", key, type(error).__name__))


class AsyncDotHooks(DotHooks):
    async def start(self, key: int, composed: Any) -> None:  # type: ignore[override]
        self.events.append(("start", key, ""))


def dot_hooks(mode: str, server: FaultServer, **options: Any) -> DotHooks:
    return (DotHooks if mode == "sync" else AsyncDotHooks)(server, **options)


def send_many(mode: str, mailer: FluxMail, messages: list[dict[str, Any]], hooks: Any) -> None:
    """The transport's ``send_many`` (or its async twin) with ``hooks``, no BulkSender."""
    items = [(i, mailer.compose(mailer.build_message(**m))) for i, m in enumerate(messages)]
    transport = mailer.transport
    assert transport is not None
    if mode == "sync":
        transport.send_many(iter(items), hooks)
        return
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in [*items, None]:
        queue.put_nowait(item)
    asyncio.run(transport.send_many_async(queue, hooks))


PIPELINING = {"pipelining": DEFAULT_CAPS, "stepwise": ("SIZE 10000000", "8BITMIME")}


@pytest.mark.parametrize("caps", PIPELINING)
@pytest.mark.parametrize("mode", MODES)
def test_dotting_comes_after_the_354_and_before_the_data(
    make_fault_server: MakeFault, mode: str, caps: str
) -> None:
    """Message 1 has two recipients and the server takes one per transaction (452 to the
    second): a follow-up transaction. Message 2's first DATA gets 451: retried. Each
    transaction's dotting comes after its 354 (the server's clock, before it wrote it)
    and before any byte of its data; a DATA refused gets none."""
    go_aheads: list[float] = []  # when the server was about to write each 354

    def data(session: FaultSession) -> Any:
        if len([v for v in session.verbs() if v == "DATA"]) == 4:  # message 2, first try
            return Reply("451 4.3.0 Try again later")
        go_aheads.append(time.monotonic())
        return None

    server = make_fault_server({"DATA": data}, max_recipients=1, capabilities=PIPELINING[caps])
    mailer = FluxMail(**server.fluxmail_kwargs(max_retries=2, retry_delay=0.01))
    messages = batch(3)
    messages[1]["recipients"] = ["a@example.com", "b@example.com"]
    hooks = dot_hooks(mode, server)
    send_many(mode, mailer, messages, hooks)

    assert [k for e, k, _ in hooks.events if e == "dotting"] == [0, 1, 1, 2]
    assert [(k, w) for e, k, w in hooks.events if e == "finished"] == [
        (0, "ok"),
        (1, "ok"),
        (2, "ok"),
    ]
    assert len(go_aheads) == len(hooks.dots) == 4  # one dotting per 354, none for the 451
    for n, (when, opened, size) in enumerate(hooks.dots):
        assert go_aheads[n] < when  # after its 354 ...
        assert n + 1 == len(go_aheads) or when < go_aheads[n + 1]  # ... not the next one's
        assert (opened, size) == (n + 1, 0)  # its DATA open, none of its data there
    assert server.completed() == [True] * 4
    assert subjects(server) == [0, 1, 1, 2]  # (message 1 once per transaction)
    assert len(server.sessions) == 1


@pytest.mark.parametrize(
    "error",
    [RuntimeError("claim store down"), ConnectError("claim store down")],
    ids=["RuntimeError", "FluxMailException"],
)
@pytest.mark.parametrize("mode", MODES)
def test_a_dotting_that_raises_abandons_the_message_without_its_data(
    make_fault_server: MakeFault, mode: str, error: Exception
) -> None:
    """Message 1's dotting raises (its envelope went out behind message 0's dot, the 354
    read): the batch stops with that error, not one byte of message 1's data is written,
    and it is abandoned (deferred), as is message 2, started behind it. Never retried."""
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs(max_retries=3, retry_delay=0.01))
    hooks = dot_hooks(mode, server, fail_at=1, error=error)
    with pytest.raises(type(error)) as info:
        send_many(mode, mailer, batch(3), hooks)
    assert info.value is error
    assert hooks.events == [
        ("start", 0, ""),
        ("ready", 1, ""),  # behind message 0's dot
        ("dotting", 0, ""),
        ("finished", 0, "ok"),
        ("ready", 2, ""),  # behind message 1's dot, which was never written
        ("dotting", 1, ""),
        ("abandoned", 1, type(error).__name__),
        ("abandoned", 2, type(error).__name__),
    ]
    server.wait_closed()
    assert server.completed() == [True, False]  # message 1's DATA open, never ended
    assert server.transactions[1].size == 0
    assert subjects(server, received=True) == [0]
    assert len(server.sessions) == 1  # not retried


@pytest.mark.parametrize("mode", MODES)
def test_a_dotting_that_raises_before_a_follow_up_leaves_the_message_unknown(
    make_fault_server: MakeFault, mode: str
) -> None:
    """Message 0's first transaction delivered it to one recipient; its dotting raises
    before the follow-up for the other (452): the batch stops, and message 0 gets
    neither an outcome nor "abandoned" (it was delivered, in part: unknown)."""
    server = make_fault_server(max_recipients=1)
    mailer = FluxMail(**server.fluxmail_kwargs(max_retries=3, retry_delay=0.01))
    messages = batch(2)
    messages[0]["recipients"] = ["a@example.com", "b@example.com"]
    error = RuntimeError("claim store down")
    hooks = dot_hooks(mode, server, fail_at=0, error=error, nth=2)
    with pytest.raises(RuntimeError):
        send_many(mode, mailer, messages, hooks)
    assert hooks.events == [
        ("start", 0, ""),
        ("dotting", 0, ""),
        ("ready", 1, ""),  # behind the follow-up's dot, which was never written
        ("dotting", 0, ""),
        ("abandoned", 1, "RuntimeError"),
    ]
    server.wait_closed()
    assert server.completed() == [True, False]  # the follow-up's DATA open, never ended
    assert server.transactions[1].size == 0
