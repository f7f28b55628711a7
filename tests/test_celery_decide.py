"""The pure decisions of fluxmail.scale: claim states, outcomes, retries (no I/O)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxmail.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    InvalidAddressError,
    MessageRefusedError,
    OutcomeUnknownError,
    RecipientsRefusedError,
    SendTimeoutError,
    TLSRequiredError,
    TLSVerifyError,
)
from fluxmail.scale._decide import (
    Action,
    Policy,
    Record,
    Status,
    backoff,
    classify,
    free_retry,
    on_claim,
    outcome,
    recover,
    sending,
    settled,
    undotted,
    worker_fault,
)
from fluxmail.smtp import SendResult

DEFAULT = Policy(max_retries=2, retry_delay=1.0)
RESEND = Policy(max_retries=2, retry_delay=1.0, resend_unknown=True)
OK = SendResult("<a@b>", ("x@example.com",), {}, 250, "2.0.0 OK queued")


def rec(status: Status, *, final: bool = True, enqueue: str = "e1", **kw: object) -> Record:
    return Record(status, owner="t0", enqueue_id=enqueue, final=final, **kw)  # type: ignore[arg-type]


def smtp_error(code: int) -> MessageRefusedError:
    return MessageRefusedError(f"{code} no", smtp_code=code, server_message=f"{code} text")


# --- before and after claiming -------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "enqueue", "policy", "expected"),
    [
        (None, "e1", DEFAULT, Action.SEND),
        (rec(Status.ACCEPTED), "e1", DEFAULT, Action.DONE),
        (rec(Status.ACCEPTED), "e2", RESEND, Action.DONE),  # accepted: final for any enqueue
        (rec(Status.SENDING, final=False), "e1", DEFAULT, Action.RECOVER),
        (rec(Status.SENDING, final=False), "e2", DEFAULT, Action.RECOVER),
        (rec(Status.REFUSED), "e1", DEFAULT, Action.DONE),  # a redelivered task
        (rec(Status.REFUSED), "e2", DEFAULT, Action.SEND),  # enqueued again: try again
        (rec(Status.FAILED), "e2", DEFAULT, Action.SEND),
        (rec(Status.DEFERRED), "e1", DEFAULT, Action.DONE),  # retries exhausted
        (rec(Status.DEFERRED, final=False), "e1", DEFAULT, Action.SEND),
        (rec(Status.UNKNOWN), "e1", RESEND, Action.DONE),
        (rec(Status.UNKNOWN), "e2", DEFAULT, Action.DONE),  # never resent by default
        (rec(Status.UNKNOWN), "e2", RESEND, Action.SEND),
        (rec(Status.UNKNOWN, final=False), "e1", RESEND, Action.SEND),
    ],
)
def test_on_claim(record: Record | None, enqueue: str, policy: Policy, expected: Action) -> None:
    assert on_claim(record, enqueue, policy, now=100.0).action is expected
    assert settled(record, enqueue, policy) is (expected is Action.DONE)


def test_a_retry_that_comes_early_waits_for_its_backoff() -> None:
    deferred = rec(Status.DEFERRED, final=False, retry_at=105.0)
    start = on_claim(deferred, "e1", DEFAULT, now=100.0)
    assert (start.action, start.wait) == (Action.WAIT, 5.0)
    assert on_claim(deferred, "e1", DEFAULT, now=105.0).action is Action.SEND
    assert on_claim(deferred, "e2", DEFAULT, now=100.0).action is Action.SEND  # a new enqueue


def test_sending_counts_an_attempt_and_takes_ownership() -> None:
    first = sending(None, "tok", "e1", now=1.0)
    assert (first.status, first.owner, first.attempts, first.final) == (
        Status.SENDING,
        "tok",
        1,
        False,
    )
    second = sending(replace(first, status=Status.DEFERRED, unknown=1), "tok2", "e1", now=2.0)
    assert (second.attempts, second.unknown, second.owner) == (2, 1, "tok2")


def test_recover_marks_unknown_final_unless_resend_unknown() -> None:
    stale = sending(None, "dead", "e1", now=1.0)
    gone = recover(stale, "tok", DEFAULT, now=2.0)
    assert (gone.status, gone.final, gone.unknown, gone.error_code) == (
        Status.UNKNOWN,
        True,
        1,
        "outcome_unknown",
    )
    assert on_claim(gone, "e1", DEFAULT, now=3.0).action is Action.DONE
    again = recover(stale, "tok", RESEND, now=2.0)
    assert not again.final
    assert on_claim(again, "e1", RESEND, now=3.0).action is Action.SEND
    exhausted = replace(stale, attempts=3)  # max_retries=2: three tries were the budget
    assert recover(exhausted, "tok", RESEND, now=2.0).final


def test_a_try_whose_dot_was_never_written_does_not_count() -> None:
    stale = sending(None, "dead", "e1", now=1.0).evolve(mark=7)
    back = undotted(stale, "tok", now=2.0)
    assert (back.status, back.final, back.attempts, back.unknown, back.mark) == (
        Status.DEFERRED,
        False,
        0,
        0,
        -1,
    )
    assert on_claim(back, "e1", DEFAULT, now=3.0).action is Action.SEND
    assert sending(back, "tok", "e1", now=3.0).attempts == 1


def test_evolve_is_replace() -> None:
    record = sending(None, "tok", "e1", now=1.0)
    assert record.evolve(mark=3, error="x") == replace(record, mark=3, error="x")
    assert record.mark == -1  # unchanged


# --- outcomes ------------------------------------------------------------------------------


def test_accepted_keeps_the_reply_and_the_unknown_count() -> None:
    attempt = replace(sending(None, "tok", "e1", now=1.0), unknown=1)
    result = SendResult("<a@b>", ("x@example.com",), {"y@example.com": (550, "no")}, 250, "OK")
    new, retry = outcome(attempt, result, DEFAULT, now=2.0)
    assert retry is None
    assert (new.status, new.final, new.smtp_code, new.reply, new.unknown) == (
        Status.ACCEPTED,
        True,
        250,
        "OK",
        1,
    )
    assert dict(new.refused) == {"y@example.com": (550, "no")}


@pytest.mark.parametrize(
    ("error", "status", "retried"),
    [
        (smtp_error(451), Status.DEFERRED, True),
        (smtp_error(421), Status.DEFERRED, True),
        (ConnectError("dropped before the dot"), Status.DEFERRED, True),
        (SendTimeoutError("no answer at MAIL"), Status.DEFERRED, True),
        (smtp_error(550), Status.REFUSED, False),
        (RecipientsRefusedError("all refused", smtp_code=550), Status.REFUSED, False),
        (InvalidAddressError("bad"), Status.FAILED, False),
        (TLSVerifyError("bad certificate"), Status.FAILED, False),
        (OutcomeUnknownError("lost after the dot"), Status.UNKNOWN, False),
    ],
)
def test_outcome_of_a_failure(error: Exception, status: Status, retried: bool) -> None:
    attempt = sending(None, "tok", "e1", now=10.0)
    new, retry = outcome(attempt, error, DEFAULT, now=10.0, rand=lambda: 0.5)  # type: ignore[arg-type]
    assert new.status is status
    assert (retry is not None) is retried
    assert new.final is not retried
    assert new.error_code == error.code  # type: ignore[attr-defined]
    if retried:
        assert retry == 1.0
        assert new.retry_at == 11.0
    if isinstance(error, MessageRefusedError):
        assert (new.smtp_code, new.reply) == (error.smtp_code, error.server_message)


def test_unknown_is_retried_only_with_resend_unknown() -> None:
    attempt = sending(None, "tok", "e1", now=0.0)
    new, retry = outcome(attempt, OutcomeUnknownError("lost"), RESEND, now=0.0)
    assert (new.status, new.unknown, new.final) == (Status.UNKNOWN, 1, False)
    assert retry is not None
    assert classify(OutcomeUnknownError("lost"), DEFAULT) == (Status.UNKNOWN, False)


def test_retries_stop_after_max_retries() -> None:
    record = None
    retries = []
    for _ in range(5):
        attempt = sending(record, "tok", "e1", now=0.0)
        record, retry = outcome(attempt, smtp_error(451), DEFAULT, now=0.0, rand=lambda: 0.5)
        retries.append(retry)
        if retry is None:
            break
    assert retries == [1.0, 2.0, None]  # max_retries=2: three tries in all
    assert record is not None
    assert (record.status, record.final, record.attempts) == (Status.DEFERRED, True, 3)


def test_backoff_doubles_caps_and_jitters() -> None:
    assert [backoff(n, 1.0, rand=lambda: 0.5) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(20, 1.0, rand=lambda: 0.5) == 60.0
    assert backoff(1, 10.0, rand=lambda: 0.0) == pytest.approx(9.0)
    assert backoff(1, 10.0, rand=lambda: 1.0) == pytest.approx(11.0)


@pytest.mark.parametrize(
    ("error", "reused", "still_open", "free"),
    [
        (smtp_error(421), True, False, True),
        (ConnectError("reset"), True, False, True),
        (ConnectError("reset"), False, False, False),  # a fresh connection: no free retry
        (ConnectError("reset"), True, True, False),
        (smtp_error(451), True, False, False),
        (TLSVerifyError("bad"), True, False, False),
    ],
)
def test_free_retry(error: Exception, reused: bool, still_open: bool, free: bool) -> None:
    assert free_retry(error, reused=reused, still_open=still_open) is free  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (AuthenticationError("535 bad credentials", smtp_code=535), True),
        (AuthenticationError("454 try later", smtp_code=454), False),
        (TLSVerifyError("bad certificate"), True),
        (TLSRequiredError("no STARTTLS"), True),
        (ConfigurationError("FLUXMAIL_HOST is not set"), True),
        (ConnectError("refused"), False),
        (smtp_error(550), False),
    ],
)
def test_worker_faults(error: Exception, fault: bool) -> None:
    assert worker_fault(error) is fault  # type: ignore[arg-type]


def test_record_round_trips_through_json() -> None:
    record = Record(
        Status.REFUSED,
        owner="tok",
        enqueue_id="e",
        final=True,
        attempts=2,
        unknown=1,
        smtp_code=550,
        reply="5.7.1 no",
        error_code="message_refused",
        error="refused",
        refused={"a@example.com": (550, "no")},
        retry_at=None,
        updated_at=1.5,
    )
    assert Record.from_json(record.to_json()) == record
    assert record.as_result("<m@x>")["refused"] == {"a@example.com": (550, "no")}


# --- the record's JSON ---------------------------------------------------------------------

ODD_TEXT = st.text(
    st.characters(codec=None, exclude_categories=()), max_size=30
) | st.sampled_from(['"', "\\", '\\"', "\x00\x1f\x7f", "\u2028\u2029", "\ud800", "é€😀", "}{", ""])
NUMBER = st.integers(-(2**70), 2**70)
TIME = st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 2**40)
RECORDS = st.builds(
    Record,
    status=st.sampled_from(list(Status)),
    owner=ODD_TEXT,
    enqueue_id=ODD_TEXT,
    final=st.booleans(),
    attempts=NUMBER,
    unknown=NUMBER,
    smtp_code=st.none() | NUMBER,
    reply=ODD_TEXT,
    error_code=st.none() | ODD_TEXT,
    error=st.none() | ODD_TEXT,
    refused=st.dictionaries(ODD_TEXT, st.tuples(st.integers(0, 999), ODD_TEXT), max_size=3),
    retry_at=st.none() | TIME,
    updated_at=TIME,
    mark=st.integers(-1, 10_000),
)


def _json_of_every_field(record: Record) -> str:
    """What to_json wrote before it left defaults out: the whole dict, json's encoder."""
    data = dict(record.__dict__)
    data["status"] = record.status.value
    data["refused"] = {k: list(v) for k, v in record.refused.items()}
    return json.dumps(data, separators=(",", ":"))


@settings(max_examples=500, deadline=None)
@given(RECORDS)
def test_record_json_round_trips_and_says_what_json_says(record: Record) -> None:
    text = record.to_json()
    assert text.isascii()
    assert Record.from_json(text) == record
    assert Record.from_json(text.encode()) == record
    whole = json.loads(_json_of_every_field(record))
    assert {**whole, **json.loads(text)} == whole  # each value written is json's
    assert Record.from_json(_json_of_every_field(record)) == record  # older records read


def test_record_json_leaves_out_what_is_at_its_default() -> None:
    record = Record(Status.SENDING, owner="t", enqueue_id="e", attempts=1, updated_at=2.5, mark=3)
    assert json.loads(record.to_json()) == {
        "status": "sending",
        "owner": "t",
        "enqueue_id": "e",
        "attempts": 1,
        "updated_at": 2.5,
        "mark": 3,
    }
    assert Record.from_json('{"status":"accepted"}') == Record(Status.ACCEPTED)
    newer = '{"status":"deferred","attempts":2,"from_a_newer_version":[1]}'
    assert Record.from_json(newer) == Record(Status.DEFERRED, attempts=2)  # unknown: ignored
    odd = Record(Status.FAILED, updated_at=float("inf"), retry_at=float("nan"))
    assert json.loads(odd.to_json())["updated_at"] == float("inf")  # json's Infinity
