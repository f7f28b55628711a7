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

from fluxmail import BulkSender, FluxMail, OutcomeUnknownError, RecipientsRefusedError
from servers import Close, FaultServer, FaultSession, Reply

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
