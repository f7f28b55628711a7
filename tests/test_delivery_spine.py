"""The delivery spine: one policy table, one transport interface, one path per message.

* every row of ``fluxmail.delivery.policy`` (unit tests, no I/O);
* the same real failure, from the scripted fault server, reads the same through
  ``send()``, ``send_async()``, BulkSender (its result and its journal) and the fleet;
* after the retries, the raised error keeps its cause (an ``OSError``, or the
  ``ServerReply`` for a reply) and its precise ``.code``;
* the interface: ``send_many`` on every transport, one factory, one capture lookup.
"""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    FluxMail,
    FluxMailException,
    InvalidAddressError,
    MessageRefusedError,
    MissingDependencyError,
    OutcomeUnknownError,
    ProtocolError,
    RecipientsRefusedError,
    SendTimeoutError,
    SMTPResponseError,
    SMTPUTF8UnsupportedError,
    TLSRequiredError,
    TLSVerifyError,
    UnsupportedOperationError,
)
from fluxmail.delivery import policy
from fluxmail.delivery.policy import Outcome
from fluxmail.errors import GraphError, GraphThrottledError, ServerReply
from fluxmail.scale import LocalFleet
from fluxmail.scale._decide import Policy, classify
from fluxmail.smtp._errors import early_reply_error
from fluxmail.smtp._replies import Reply as SMTPReply
from fluxmail.testing import capture
from fluxmail.transports.base import AsyncTransport, Transport
from fluxmail.transports.factory import Switch
from hardening import MODES, batch, run_batch
from servers import Close, FaultServer, Reply, Stall

MakeFault = Callable[..., FaultServer]
SRC = Path(__file__).resolve().parents[1] / "src" / "fluxmail"
D, F, R, U = Outcome.DEFERRED, Outcome.FAILED, Outcome.REFUSED, Outcome.UNKNOWN


def reply(code: int, cls: type[SMTPResponseError] = MessageRefusedError) -> SMTPResponseError:
    return cls(f"SMTP server h said {code}", smtp_code=code, server_message="no")


def greeting_refused(code: int) -> ConnectError:
    error = ConnectError(f"SMTP server h refused the session: {code}")
    error.transient = 400 <= code < 500  # as the engine sets it for a greeting reply
    return error


def token_endpoint(status: int) -> AuthenticationError:
    error = AuthenticationError(f"token endpoint answered HTTP {status}")
    error.transient = status >= 500 or status == 429  # as fluxmail.oauth sets it
    return error


# --- the table, row by row -------------------------------------------------------------------

# what the engine raises for a 250 in the middle of DATA (the dot was never written)
EARLY_250 = early_reply_error(SMTPReply(250, ("ok",)), host="h", cause=OSError("early"))

ROWS = [
    # (error, row, retry, free retry, outcome, stops a batch)
    (OutcomeUnknownError("lost after the dot"), "after_dot", False, False, U, False),
    (reply(421), "reply_421", True, True, D, False),
    (reply(451), "reply_4xx", True, False, D, False),
    (reply(452, RecipientsRefusedError), "reply_4xx", True, False, D, False),
    (reply(550, RecipientsRefusedError), "reply_5xx", False, False, R, False),
    (reply(554), "reply_5xx", False, False, R, False),
    (reply(354), "protocol", False, False, F, False),
    (ConnectError("reset before the dot"), "connection", True, True, D, False),
    (greeting_refused(421), "connection", True, True, D, False),
    (greeting_refused(554), "session_refused", False, False, F, False),
    (SendTimeoutError("no answer at MAIL"), "timeout", True, False, D, False),
    (TLSRequiredError("no STARTTLS"), "tls", False, False, F, True),
    (TLSVerifyError("bad certificate"), "tls_verify", False, False, F, True),
    (ProtocolError("garbage before the dot"), "protocol", False, False, F, False),
    (
        early_reply_error(SMTPReply(250, ("ok",)), host="h", cause=OSError("early")),
        "early_reply",
        True,
        False,
        D,
        False,
    ),
    (AuthenticationError("454 later", smtp_code=454), "auth_later", True, False, D, False),
    (token_endpoint(503), "auth_later", True, False, D, False),
    (token_endpoint(400), "auth_refused", False, False, F, True),
    (AuthenticationError("535 no", smtp_code=535), "auth_refused", False, False, F, True),
    (InvalidAddressError("bad address"), "invalid", False, False, F, False),
    (ConfigurationError("bad option"), "configuration", False, False, F, True),
    (
        MissingDependencyError("DKIM", "dkim", "cryptography"),
        "configuration",
        False,
        False,
        F,
        True,
    ),
    (UnsupportedOperationError("no"), "other", False, False, F, False),
    (
        GraphThrottledError("429", status=429, retry_after=3),
        "graph_throttled",
        True,
        False,
        D,
        False,
    ),
    (GraphThrottledError("503", status=503), "graph_throttled", True, False, D, False),
    (
        GraphError("400 bad recipient", status=400),
        "graph_refused",
        False,
        False,
        R,
        False,
    ),
    (GraphError("403 ErrorAccessDenied", status=403), "graph_mailbox", False, False, F, True),
    (GraphError("404 ErrorInvalidUser", status=404), "graph_mailbox", False, False, F, True),
]


@pytest.mark.parametrize(("error", "row", "retry", "free", "outcome", "stops"), ROWS)
def test_every_row_of_the_table(
    error: FluxMailException, row: str, retry: bool, free: bool, outcome: Outcome, stops: bool
) -> None:
    assert policy.row_of(error) == row
    assert policy.rule_for(error) == policy.Rule(retry, free, outcome, stops)
    assert policy.retryable(error) is retry
    assert policy.outcome_of(error) is outcome
    assert policy.stops_batch(error) is stops
    assert policy.stops_batch(error, connected=False) is True
    # the free retry needs a reused connection that the failure closed
    assert policy.free_retry(error, reused=True, still_open=False) is free
    assert policy.free_retry(error, reused=False, still_open=False) is False
    assert policy.free_retry(error, reused=True, still_open=True) is False


def test_the_tests_cover_every_row_and_the_docstring_lists_them() -> None:
    assert {row for _, row, *_ in ROWS} == set(policy.RULES)
    doc = policy.__doc__ or ""
    for raised in ("OutcomeUnknownError", "SendTimeoutError", "TLSVerifyError", "ProtocolError"):
        assert raised in doc


def test_non_fluxmail_errors_are_never_retried() -> None:
    assert policy.rule_for(OSError("raw")) == policy.RULES["other"]
    assert not policy.retryable(KeyboardInterrupt())


def test_the_journal_and_the_fleet_read_the_table() -> None:
    from fluxmail.delivery._journal import STATES, outcome_of
    from fluxmail.scale._decide import Status, free_retry, worker_fault

    resend = Policy(resend_unknown=True)
    for error, _, retry, free, outcome, stops in ROWS:
        assert outcome_of(error) == outcome.value
        assert outcome.value in STATES
        status, retried = classify(error, Policy())
        assert status is Status(outcome.value)
        assert retried is retry
        assert classify(error, resend)[1] is (retry or outcome is U)
        assert worker_fault(error) is stops
        assert free_retry(error, reused=True, still_open=False) is free


def test_attempts_give_one_free_retry_then_the_budget() -> None:
    attempts = policy.Attempts(max_retries=1, retry_delay=0.0)
    assert attempts.after(reply(421), reused=True, still_open=False) == 0.0  # free
    assert attempts.after(reply(421), reused=True, still_open=False) == 0.0  # the budget
    assert attempts.after(reply(421), reused=True, still_open=False) is None
    timeout = policy.Attempts(max_retries=0, retry_delay=0.0)
    assert timeout.after(SendTimeoutError("slow"), reused=True, still_open=False) is None
    assert policy.Attempts(3, 0.0).after(reply(550), reused=False, still_open=False) is None


# --- the same failure reads the same on every path ---------------------------------------------

FAULTS = [
    pytest.param({"DOT": Reply("451 4.3.0 Later")}, "message_refused", D, id="451-at-dot"),
    pytest.param({"DOT": Reply("554 5.7.1 No")}, "message_refused", R, id="554-at-dot"),
    pytest.param({"MAIL": Reply("452 4.3.1 Full")}, "sender_refused", D, id="452-at-mail"),
    pytest.param({"RCPT": Reply("550 5.1.1 Nobody")}, "recipients_refused", R, id="550-at-rcpt"),
    pytest.param({"DOT": Close()}, "outcome_unknown", U, id="lost-after-dot"),
    pytest.param({"DATA": Stall()}, "timeout", D, id="timeout-before-dot"),
]


def _journal_state(path: Path, index: int) -> str:
    lines = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    return [r["s"] for r in lines if r["i"] == index][-1]


@pytest.mark.parametrize(("script", "code", "outcome"), FAULTS)
def test_send_bulk_journal_and_fleet_agree(
    make_fault_server: MakeFault,
    tmp_path: Path,
    script: dict[str, Any],
    code: str,
    outcome: Outcome,
) -> None:
    message = batch(1)[0]

    def mailer() -> FluxMail:
        server = make_fault_server(script)
        return FluxMail(**server.fluxmail_kwargs(timeout=1))

    errors: list[FluxMailException] = []
    for mode in MODES:  # send() and send_async()
        m = mailer().create(**message)
        with pytest.raises(FluxMailException) as info:
            m.send() if mode == "sync" else asyncio.run(m.send_async())
        errors.append(info.value)
    for mode in MODES:  # BulkSender, its result and its journal
        path = tmp_path / f"{mode}.jsonl"
        result = run_batch(mailer(), [message], mode, journal=path)
        assert (result["sent"], result["failed"]) == (0, 1)
        errors.append(result["errors"][0][1])
        assert _journal_state(path, 0) == outcome.value
    fleet = LocalFleet(mailer, max_retries=0)  # the fleet, one try
    try:
        record = fleet.results([fleet.enqueue(message)])
    finally:
        fleet.close()
    (result,) = record.values()
    assert result is not None
    assert (result["status"], result["error_code"]) == (outcome.value, code)
    assert [e.code for e in errors] == [code] * 4
    assert {policy.outcome_of(e) for e in errors} == {outcome}


# --- retries keep the cause ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_reply_failure_keeps_the_reply_as_its_cause(
    make_fault_server: MakeFault, mode: str
) -> None:
    server = make_fault_server({"DOT": Reply("451 4.3.0 Try later")})
    mailer = FluxMail(**server.fluxmail_kwargs(max_retries=2, retry_delay=0.01))
    mailer.create(**batch(1)[0])
    with pytest.raises(MessageRefusedError) as info:
        mailer.send() if mode == "sync" else asyncio.run(mailer.send_async())
    error = info.value
    assert (error.code, error.smtp_code, error.enhanced_code) == ("message_refused", 451, "4.3.0")
    cause = error.__cause__
    assert isinstance(cause, ServerReply)
    assert (cause.smtp_code, cause.enhanced_code, cause.text) == (451, "4.3.0", "4.3.0 Try later")
    assert str(cause) == "451 4.3.0 Try later"
    tries = 3 if mode == "sync" else 1  # send_async() does not retry
    assert len(server.received) == tries


def test_batch_errors_and_auth_failures_keep_their_cause(make_fault_server: MakeFault) -> None:
    server = make_fault_server({"RCPT": Reply("550 5.1.1 Nobody here")})
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), batch(1), "sync")
    error = result["errors"][0][1]
    assert isinstance(error.__cause__, ServerReply)
    assert error.__cause__.smtp_code == 550


def test_a_local_refusal_is_its_own_origin(make_fault_server: MakeFault) -> None:
    """Errors fluxmail finds before sending (here: SMTPUTF8 needed, not offered) have
    nothing to chain."""
    server = make_fault_server(capabilities=("PIPELINING",))
    mailer = FluxMail(**server.fluxmail_kwargs(max_retries=1, retry_delay=0.01))
    with pytest.raises(SMTPUTF8UnsupportedError) as info:
        mailer.create(**{**batch(1)[0], "recipients": ["jürgen@example.com"]}).send()
    assert info.value.__cause__ is None
    assert server.messages == []


# --- the interface -------------------------------------------------------------------------------


class Recorder:
    """BatchHooks that write down what they hear."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []

    def ready(self, key: int, composed: Any) -> bool:
        self.events.append(("ready", key, ""))
        return True

    def start(self, key: int, composed: Any) -> None:
        self.events.append(("start", key, ""))

    def finished(self, key: int, outcome: Any) -> None:
        what = outcome.code if isinstance(outcome, FluxMailException) else "ok"
        self.events.append(("finished", key, what))

    def abandoned(self, key: int, error: BaseException) -> None:
        self.events.append(("abandoned", key, type(error).__name__))


class AsyncRecorder(Recorder):
    async def start(self, key: int, composed: Any) -> None:  # type: ignore[override]
        self.events.append(("start", key, ""))


@pytest.mark.parametrize("kind", ["capture", "console", "file"])
def test_send_many_on_every_sink(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = {"capture": "127.0.0.1", "console": None, "file": str(tmp_path)}[kind]
    mailer = FluxMail(object_type="smtp" if kind == "capture" else kind, host=host)
    items = [(i, mailer.compose(mailer.build_message(**m))) for i, m in enumerate(batch(3))]
    assert isinstance(mailer.transport, Switch)
    with capture() if kind == "capture" else _nothing() as outbox:
        if outbox is not None:
            outbox.fail_next(RecipientsRefusedError("no", smtp_code=550))
        hooks = Recorder()
        mailer.transport.send_many(iter(items), hooks)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for item in [*items, None]:
            queue.put_nowait(item)
        async_hooks = AsyncRecorder()
        asyncio.run(mailer.transport.send_many_async(queue, async_hooks))
    expected = [e for i in (0, 1, 2) for e in (("start", i, ""), ("finished", i, "ok"))]
    assert async_hooks.events == expected
    if kind == "capture":  # the refusal went to the first message of the sync batch
        expected[1] = ("finished", 0, "recipients_refused")
    assert hooks.events == expected
    if kind == "capture":
        assert outbox is not None
        assert len(outbox) == 5
    elif kind == "file":
        assert len(list(tmp_path.glob("*.eml"))) == 6
    else:
        assert capsys.readouterr().out.count("Subject: message 1") == 2


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_stopping_error_abandons_the_message(tmp_path: Path) -> None:
    with capture() as outbox:
        mailer = FluxMail(object_type="smtp", host="127.0.0.1")
        items = [(i, mailer.compose(mailer.build_message(**m))) for i, m in enumerate(batch(2))]
        outbox.fail_next(AuthenticationError("535 no", smtp_code=535))
        hooks = Recorder()
        assert mailer.transport is not None
        with pytest.raises(AuthenticationError):
            mailer.transport.send_many(items, hooks)
    assert hooks.events == [("start", 0, ""), ("abandoned", 0, "AuthenticationError")]


def test_every_transport_implements_both_interfaces(tmp_path: Path) -> None:
    from fluxmail.testing import Outbox
    from fluxmail.transports.dev import ConsoleTransport, FileTransport
    from fluxmail.transports.smtp import SMTPTransport

    for cls in (Outbox, ConsoleTransport, FileTransport, SMTPTransport, Switch):
        assert issubclass(cls, Transport), cls
        assert issubclass(cls, AsyncTransport), cls
    sink = FluxMail(object_type="file", host=str(tmp_path)).transport
    assert sink is not None
    with pytest.raises(UnsupportedOperationError):
        sink.probe()


def _python_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_the_capture_is_looked_up_in_one_place() -> None:
    users = [
        path.relative_to(SRC).as_posix()
        for path in _python_files()
        if "active_capture(" in path.read_text()
    ]
    assert users == ["transports/factory.py", "transports/sink.py"]  # the lookup, its definition


def test_only_the_transports_drive_the_engine() -> None:
    users = {
        path.relative_to(SRC).as_posix()
        for path in _python_files()
        if "SMTPConnection" in path.read_text() and "smtp/" not in path.relative_to(SRC).as_posix()
    }
    assert users == {"transports/smtp.py", "transports/_pipeline.py"}


def test_only_the_policy_reads_transient() -> None:
    """``.transient`` is set where a failure is raised; only the policy reads it."""
    readers = set()
    for path in _python_files():
        tree = ast.parse(path.read_text())
        stored = {
            id(target)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        }
        for node in ast.walk(tree):
            read = isinstance(node, ast.Attribute) and id(node) not in stored
            if read and node.attr == "transient":  # type: ignore[attr-defined]
                readers.add(path.relative_to(SRC).as_posix())
    assert readers == {"delivery/policy.py"}


# --- a held async mailer in a second event loop (#12 item 10) -----------------------------------


def test_a_held_async_mailer_works_in_a_second_event_loop(make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs())

    async def run(round_: int) -> list[str]:
        async with mailer:
            sends = []
            for i in range(3):  # concurrent sends contend for the held connection's lock
                mailer.create(**{**batch(1)[0], "subject": f"round {round_} message {i}"})
                sends.append(mailer.send_async())
            return list(await asyncio.gather(*sends))

    for round_ in range(2):
        assert asyncio.run(run(round_)) == ["Email sent successfully via SMTP."] * 3
    assert len(server.messages) == 6
    assert len(server.sessions) == 2  # one held connection per `async with`
