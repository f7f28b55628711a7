"""BulkSender against real servers, sync and async: nothing lost, nothing sent twice."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fluxmail import (
    AuthenticationError,
    BulkSender,
    ConnectError,
    FluxMail,
    InvalidAddressError,
    OutcomeUnknownError,
    RecipientsRefusedError,
)
from fluxmail.delivery._ratelimit import WINDOW, RateLimiter
from helpers import max_in_any_window
from servers import Close, DropMidData, FaultServer, FaultSession, Reply, SMTPTestServer

MakeFault = Callable[..., FaultServer]
MakeServer = Callable[..., SMTPTestServer]


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


def message_ids(messages: list[Any]) -> list[str]:
    return [str(m.message["Message-ID"]) for m in messages]


def run_batch(mailer: FluxMail, messages: Any, mode: str, **options: Any) -> Any:
    sender = BulkSender(mailer)
    if mode == "sync":
        return sender.send_batch(messages, progress=False, **options)
    return asyncio.run(sender.send_batch_async(messages, progress=False, **options))


MODES = ["sync", "async"]


@pytest.mark.parametrize("mode", MODES)
def test_batch_sends_everything_over_one_connection(
    smtp_server: SMTPTestServer, mode: str
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs())
    successes: list[tuple[int, str]] = []
    result = run_batch(mailer, batch(5), mode, on_success=lambda i, r: successes.append((i, r)))
    assert result == {"sent": 5, "failed": 0, "total": 5, "errors": []}
    assert sorted(successes) == [(i, "Email sent successfully via SMTP.") for i in range(5)]
    assert smtp_server.connections == 1
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(
        f"user{i}@example.com" for i in range(5)
    )
    assert len(set(message_ids(smtp_server.messages))) == 5


@pytest.mark.parametrize("mode", MODES)
def test_a_bad_message_fails_alone(smtp_server: SMTPTestServer, mode: str, tmp_path: Any) -> None:
    messages = batch(4)
    messages[1]["recipients"] = ["not an address"]
    messages[2]["attachments"] = [str(tmp_path / "missing.pdf")]
    errors: list[tuple[int, str]] = []
    result = run_batch(
        FluxMail(**smtp_server.fluxmail_kwargs()),
        messages,
        mode,
        on_error=lambda i, e: errors.append((i, e.code)),
    )
    assert (result["sent"], result["failed"], result["total"]) == (2, 2, 4)
    assert sorted(errors) == [(1, "invalid_address"), (2, "attachment_not_found")]
    assert isinstance(dict(result["errors"])[1], InvalidAddressError)
    assert len(smtp_server.messages) == 2


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_recipient_fails_that_message_only(make_server: MakeServer, mode: str) -> None:
    server = make_server(reject_rcpt={"user2@example.com": 550})
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), batch(5), mode)
    assert (result["sent"], result["failed"]) == (4, 1)
    index, exc = result["errors"][0]
    assert index == 2
    assert isinstance(exc, RecipientsRefusedError)
    assert exc.smtp_code == 550
    assert len(server.messages) == 4


def close_after(count: int) -> Callable[[FaultSession], Any]:
    """421-and-close at the MAIL of message ``count + 1`` in the first session only."""

    def action(session: FaultSession) -> Any:
        if session.number == 1 and session.messages == count:
            return Reply("421 4.3.2 Service shutting down", close=True)
        return None

    return action


@pytest.mark.parametrize("mode", MODES)
def test_421_mid_batch_reconnects_and_sends_each_message_once(
    make_fault_server: MakeFault, mode: str
) -> None:
    server = make_fault_server({"MAIL": close_after(7)})
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), batch(20), mode)
    assert result == {"sent": 20, "failed": 0, "total": 20, "errors": []}
    ids = message_ids(server.messages)
    assert len(ids) == 20
    assert len(set(ids)) == 20
    assert len(server.sessions) == 2


@pytest.mark.parametrize("mode", MODES)
def test_drop_mid_data_is_retried_without_duplicates(
    make_fault_server: MakeFault, mode: str
) -> None:
    def drop_once(session: FaultSession) -> Any:
        return DropMidData(after=10) if session.number == 1 and session.messages == 3 else None

    server = make_fault_server({"DATA": drop_once})
    messages = batch(10)
    # Big enough that the drop happens while the body is still being written (before the
    # final dot); a small body would be all written already, which is outcome_unknown.
    messages[3]["body"] = "x" * 76 + "\n" * 1 + ("y" * 76 + "\n") * 120_000
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), messages, mode)
    assert result["sent"] == 10
    assert len(set(message_ids(server.received))) == len(server.received) == 10


@pytest.mark.parametrize("mode", MODES)
def test_drop_after_final_dot_is_unknown_and_not_resent(
    make_fault_server: MakeFault, mode: str
) -> None:
    def drop_after_dot(session: FaultSession) -> Any:
        return Close() if session.number == 1 and session.messages == 4 else None

    server = make_fault_server({"DOT": drop_after_dot})
    result = run_batch(FluxMail(**server.fluxmail_kwargs(max_retries=3)), batch(10), mode)
    assert (result["sent"], result["failed"]) == (9, 1)
    _, exc = result["errors"][0]
    assert isinstance(exc, OutcomeUnknownError)
    assert exc.code == "outcome_unknown"
    # the server has all ten bodies, each exactly once: the unknown one was not resent
    ids = message_ids(server.received)
    assert len(ids) == len(set(ids)) == 10
    assert len(server.messages) == 9


@pytest.mark.parametrize("mode", MODES)
def test_451_is_retried_with_backoff(make_fault_server: MakeFault, mode: str) -> None:
    refusals = iter([Reply("451 4.3.0 try again later")])

    def first_dot(session: FaultSession) -> Any:
        return next(refusals, None)

    server = make_fault_server({"DOT": first_dot})
    mailer = FluxMail(**server.fluxmail_kwargs(max_retries=2, retry_delay=0.01))
    result = run_batch(mailer, batch(3), mode)
    assert result["sent"] == 3
    assert len(server.messages) == 3
    assert len(set(message_ids(server.messages))) == 3


@pytest.mark.parametrize("mode", MODES)
def test_5xx_is_never_retried(make_fault_server: MakeFault, mode: str) -> None:
    refusals = iter([Reply("554 5.7.1 rejected")])
    server = make_fault_server({"DOT": lambda s: next(refusals, None)})
    mailer = FluxMail(**server.fluxmail_kwargs(max_retries=3, retry_delay=0.01))
    result = run_batch(mailer, batch(3), mode)
    assert (result["sent"], result["failed"]) == (2, 1)
    assert len(server.received) == 3  # the refused one was sent once, not retried


@pytest.mark.parametrize("mode", MODES)
def test_bad_credentials_stop_the_batch(starttls_server: SMTPTestServer, mode: str) -> None:
    mailer = FluxMail(**starttls_server.fluxmail_kwargs(password="wrong", max_retries=3))
    with pytest.raises(AuthenticationError) as caught:
        run_batch(mailer, batch(50), mode)
    assert caught.value.batch_result["sent"] == 0
    assert len(starttls_server.commands("AUTH")) == 1
    assert "wrong" not in str(caught.value)


@pytest.mark.parametrize("mode", MODES)
def test_unreachable_server_stops_the_batch(mode: str) -> None:
    from fluxmail.cli.localserver import free_port

    mailer = FluxMail(object_type="smtp", host="127.0.0.1", port=free_port(), timeout=2)
    with pytest.raises(ConnectError) as caught:
        run_batch(mailer, batch(5), mode)
    assert caught.value.code == "connection_failed"


def test_generator_input_and_async_pool(smtp_server: SMTPTestServer) -> None:
    def generate() -> Iterator[dict[str, Any]]:
        yield from batch(40)

    mailer = FluxMail(**smtp_server.fluxmail_kwargs())
    result = asyncio.run(
        BulkSender(mailer, connections=4).send_batch_async(generate(), progress=False)
    )
    assert result["sent"] == 40
    assert smtp_server.connections == 4
    assert len(set(message_ids(smtp_server.messages))) == 40


def test_sync_generator_input(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs())
    result = BulkSender(mailer).send_batch((m for m in batch(30)), progress=False)
    assert result["total"] == result["sent"] == 30


def test_async_iterable_input(smtp_server: SMTPTestServer) -> None:
    async def generate() -> Any:
        for message in batch(6):
            await asyncio.sleep(0)
            yield message

    mailer = FluxMail(**smtp_server.fluxmail_kwargs())
    result = asyncio.run(BulkSender(mailer).send_batch_async(generate(), progress=False))
    assert result["sent"] == 6


@pytest.mark.slow
def test_rate_limit_holds_in_every_second_on_the_server(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs())
    result = asyncio.run(
        BulkSender(mailer, connections=3).send_batch_async(
            batch(50), max_per_second=10, progress=False
        )
    )
    assert result["sent"] == 50
    times = [m.received_at for m in smtp_server.messages]
    assert max_in_any_window(times) <= 10
    assert times[-1] - times[0] >= 4.0  # 50 messages at 10/s take at least ~4.9 s


def test_rate_limiter_arithmetic() -> None:
    limiter = RateLimiter(10)
    clock = 0.0
    starts = []
    for _ in range(30):
        clock += limiter.wait(clock)
        limiter.take(clock)
        starts.append(clock)
    assert starts[0] == 0.0
    assert all(b - a == pytest.approx(WINDOW / 10) for a, b in itertools.pairwise(starts))
    assert max_in_any_window(starts) <= 10
    assert RateLimiter(0).wait(5.0) == 0.0
    with pytest.raises(ValueError, match="max_per_second"):
        RateLimiter(-1)


def test_a_late_send_pushes_the_next_ones_back() -> None:
    limiter = RateLimiter(10)
    limiter.take(0.0)
    limiter.take(0.5)  # planned for 0.105, but the process was busy
    assert limiter.wait(0.5) == pytest.approx(WINDOW / 10)


def test_messages_must_be_dicts(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs())
    result = BulkSender(mailer).send_batch(["not a dict"], progress=False)  # type: ignore[list-item]
    assert result["failed"] == 1
    assert result["errors"][0][1].code == "invalid_option"


def test_progress_stays_quiet_without_a_terminal(
    smtp_server: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs())
    BulkSender(mailer).send_batch(batch(3), progress=True)
    BulkSender(mailer).send_batch(batch(3))
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


@pytest.mark.parametrize("mode", MODES)
def test_server_gone_mid_batch_stops_it_without_hanging(
    make_fault_server: MakeFault, mode: str
) -> None:
    """After three messages the server closes (421) and refuses every new session: the
    batch stops with that error instead of waiting forever (the async producer used to
    block on a full queue that no worker would empty)."""

    def greeting(session: FaultSession) -> Any:
        return Reply("554 5.3.2 Go away", close=True) if session.number > 1 else None

    server = make_fault_server({"greeting": greeting}, close_after=3)
    with pytest.raises(ConnectError) as info:
        run_batch(FluxMail(**server.fluxmail_kwargs()), batch(20), mode)
    assert info.value.code == "connection_failed"
    assert info.value.batch_result["sent"] == 3
    assert len(server.messages) == 3
