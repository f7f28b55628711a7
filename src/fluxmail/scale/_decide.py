"""What a worker does with one message, given what the claim store says about it (pure).

No I/O and no clock here: the store, the limiter and the SMTP connection live in
``_courier``; this module only answers "send, skip, wait or recover?" and "what is the
record after this outcome, and is there a retry?". Every branch is unit-tested.

The record of a message (one per Message-ID) moves through these states::

    (none) ──claim──> sending ──reply 250──────────────> accepted   (final)
                        │     ──5xx / invalid input────> refused / failed (final)
                        │     ──4xx / dropped before .─> deferred   (retried with backoff)
                        │     ──lost after the final .─> unknown    (final unless resend_unknown)
                        └─ claimant vanished (lease expired) ──> unknown (as above)

``sending`` is written, for a whole chunk of messages at once, before the first MAIL
FROM. A claimant that dies *before* writing it leaves no trace, and the next delivery of
the task simply sends. Once the server has answered a message's envelope with 354, right
before its data is written (from then on its final '.' may be on the wire: the spine's
"dot written" state, the transport's ``dotting`` hook), its bit in the claimant's *dot
marks* is set (``Record.mark`` is its index there). A claimant that dies after
``sending`` may have sent the final '.' of a marked message, so the next one records
``unknown`` (:func:`recover`); an unmarked one never got that far (no byte of its data
was written: its envelope at most, its 354 perhaps awaited), and is simply sent again
(:func:`undotted`).
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, TypedDict

from ..delivery import policy as delivery
from ..delivery._retry import JITTER, MAX_DELAY
from ..errors import FluxMailException, OutcomeUnknownError, SMTPResponseError
from ..smtp import SendResult

_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_QUOTE = json.encoder.encode_basestring_ascii  # a JSON string as json writes it (C)


class Status(str, enum.Enum):
    SENDING = "sending"  # a worker may be talking to the server about it right now
    ACCEPTED = "accepted"  # the server answered the final '.' with 2xx
    REFUSED = "refused"  # the server refused it for good (5xx)
    DEFERRED = "deferred"  # a transient failure before the final '.' (4xx, dropped)
    UNKNOWN = "unknown"  # lost after the final '.', or its worker vanished mid-send
    FAILED = "failed"  # not delivered and will not be by trying again (invalid input, TLS)


class DeliveryResult(TypedDict):
    """What ``fleet.result(message_id)`` (and the Celery task) return."""

    message_id: str
    status: str
    final: bool
    smtp_code: int | None
    reply: str
    error_code: str | None
    error: str | None
    refused: dict[str, tuple[int, str]]
    attempts: int
    unknown: int
    updated_at: float


@dataclass(frozen=True)
class Record:
    """The claim store's record of one message (stored as JSON under its Message-ID)."""

    status: Status
    owner: str = ""  # the claim token of the worker that wrote it
    enqueue_id: str = ""  # which enqueue() call this record answers
    final: bool = False
    attempts: int = 0  # tries that got as far as opening a connection
    unknown: int = 0  # how many times its outcome was unknown
    smtp_code: int | None = None
    reply: str = ""
    error_code: str | None = None
    error: str | None = None
    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    retry_at: float | None = None  # a retry should not start before this (unix time)
    updated_at: float = 0.0
    mark: int = -1  # its bit in the owner's dot marks (-1: none; its dot may be written)

    def to_json(self) -> str:
        """The record as JSON (ASCII), each value as :mod:`json` writes it. The fields a
        worker always sets are always written; the others only when not at their
        default (:meth:`from_json` fills those in, as for the fields an older version
        did not know). Written out by hand: a worker encodes two records per message,
        and this is a few times cheaper than encoding the whole dict."""
        out = [
            '{"status":',
            _QUOTE(self.status.value),
            ',"owner":',
            _json_str(self.owner),
            ',"enqueue_id":',
            _json_str(self.enqueue_id),
            ',"attempts":',
            _json_number(self.attempts),
            ',"updated_at":',
            _json_number(self.updated_at),
            ',"mark":',
            _json_number(self.mark),
        ]
        if self.final is not False:
            out += ',"final":', _json_bool(self.final)
        if self.unknown != 0:
            out += ',"unknown":', _json_number(self.unknown)
        if self.smtp_code is not None:
            out += ',"smtp_code":', _json_number(self.smtp_code)
        if self.reply != "":
            out += ',"reply":', _json_str(self.reply)
        if self.error_code is not None:
            out += ',"error_code":', _json_str(self.error_code)
        if self.error is not None:
            out += ',"error":', _json_str(self.error)
        if self.refused:
            out += ',"refused":', _ENCODE({k: list(v) for k, v in self.refused.items()})
        if self.retry_at is not None:
            out += ',"retry_at":', _json_number(self.retry_at)
        out.append("}")
        return "".join(out)

    def evolve(self, **changes: Any) -> Record:
        """``dataclasses.replace`` without its cost (a worker makes two per message;
        Record has no ``__post_init__`` to skip)."""
        new = object.__new__(Record)
        fields = dict(self.__dict__)
        fields.update(changes)
        new.__dict__.update(fields)
        return new

    @classmethod
    def from_json(cls, text: str | bytes) -> Record:
        """The record :meth:`to_json` wrote (or an older version: a field it lacks takes
        its default, one it does not know is ignored)."""
        data: dict[str, Any] = json.loads(text)
        fields = dict(_DEFAULTS)
        fields.update((k, v) for k, v in data.items() if k in _DEFAULTS)
        fields["status"] = Status(data["status"])
        refused = data.get("refused")
        fields["refused"] = (
            {k: (int(v[0]), str(v[1])) for k, v in refused.items()} if refused else {}
        )
        new = object.__new__(cls)  # (as evolve(): the fields are all set here)
        new.__dict__.update(fields)
        return new

    def as_result(self, message_id: str) -> DeliveryResult:
        return {
            "message_id": message_id,
            "status": self.status.value,
            "final": self.final,
            "smtp_code": self.smtp_code,
            "reply": self.reply,
            "error_code": self.error_code,
            "error": self.error,
            "refused": dict(self.refused),
            "attempts": self.attempts,
            "unknown": self.unknown,
            "updated_at": self.updated_at,
        }


def _json_str(value: Any) -> str:
    return _QUOTE(value) if type(value) is str else _ENCODE(value)


def _json_number(value: Any) -> str:
    kind = type(value)
    if kind is int or (kind is float and value - value == 0.0):  # finite: JSON's repr
        return repr(value)
    return _ENCODE(value)  # None, NaN, an int or float subclass: as json writes it


def _json_bool(value: Any) -> str:
    return "true" if value is True else "false" if value is False else _ENCODE(value)


#: What :meth:`Record.from_json` takes for a field the JSON lacks.
_DEFAULTS: dict[str, Any] = {
    name: f.default_factory() if f.default_factory is not MISSING else f.default
    for name, f in Record.__dataclass_fields__.items()
    if name != "status"
}

_FIRST = Record(Status.SENDING)  # what a message's first ``sending`` starts from


@dataclass(frozen=True)
class Policy:
    """The fleet's retry rules (the same for every worker)."""

    max_retries: int = 5
    retry_delay: float = 1.0
    resend_unknown: bool = False


class Action(enum.Enum):
    SEND = "send"
    DONE = "done"  # nothing to do: return the record
    WAIT = "wait"  # not yet: try again in ``Start.wait`` seconds
    RECOVER = "recover"  # its last claimant vanished mid-send: record unknown first


@dataclass(frozen=True)
class Start:
    action: Action
    wait: float = 0.0


def settled(record: Record | None, enqueue_id: str, policy: Policy) -> bool:
    """True when this delivery has nothing left to do.

    Accepted is final for every enqueue of that Message-ID. Refused, failed, exhausted
    retries and unknown are final for the enqueue that produced them (a redelivered task
    must not try again); enqueueing the same Message-ID again tries again, except after an
    unknown outcome (the server may have it) unless ``resend_unknown``."""
    if record is None:
        return False
    if record.status is Status.ACCEPTED:
        return True
    if not record.final:
        return False
    if record.enqueue_id == enqueue_id:
        return True
    return record.status is Status.UNKNOWN and not policy.resend_unknown


def on_claim(record: Record | None, enqueue_id: str, policy: Policy, now: float) -> Start:
    """What to do once this worker holds the claim on the message."""
    if settled(record, enqueue_id, policy):
        return Start(Action.DONE)
    if record is None:
        return Start(Action.SEND)
    if record.status is Status.SENDING:
        return Start(Action.RECOVER)
    if record.retry_at is not None and record.enqueue_id == enqueue_id and now < record.retry_at:
        return Start(Action.WAIT, record.retry_at - now)
    return Start(Action.SEND)


def backoff(attempt: int, base: float, rand: Callable[[], float] = random.random) -> float:
    """The wait before retry number ``attempt`` (1-based): ``base`` doubling each time,
    capped at 60 s, spread by up to ±10 % so that workers do not retry in lockstep
    (the rule of :mod:`fluxmail.delivery._retry`)."""
    delay = min(base * 2.0 ** max(0, attempt - 1), MAX_DELAY)
    return max(0.0, delay * (1 + JITTER * (2 * rand() - 1)))


def lease_wait(lease_left: float, rand: Callable[[], float] = random.random) -> float:
    """How long a delivery waits when another worker holds the claim."""
    return max(0.05, lease_left) * (1 + 0.2 * rand())


def sending(record: Record | None, token: str, enqueue_id: str, now: float) -> Record:
    """The record written just before MAIL FROM (or kept in memory for a try that fails
    while connecting): one more attempt, owned by ``token``."""
    base = record if record is not None else _FIRST
    return base.evolve(
        status=Status.SENDING,
        owner=token,
        enqueue_id=enqueue_id,
        final=False,
        attempts=base.attempts + 1,
        retry_at=None,
        updated_at=now,
    )


VANISHED = (
    "the worker sending this message stopped (killed, lost its claim) after it began the "
    "SMTP transaction and before it recorded the outcome; the server may or may not have "
    "the message"
)


def recover(record: Record, token: str, policy: Policy, now: float) -> Record:
    """A ``sending`` record whose claimant vanished becomes ``unknown``. It stays final
    unless the fleet resends unknown outcomes and has retries left."""
    retry = policy.resend_unknown and record.attempts <= policy.max_retries
    return record.evolve(
        status=Status.UNKNOWN,
        owner=token,
        final=not retry,
        unknown=record.unknown + 1,
        error_code=OutcomeUnknownError.code,
        error=VANISHED,
        retry_at=None,
        updated_at=now,
    )


def undotted(record: Record, token: str, now: float) -> Record:
    """A ``sending`` record whose claimant vanished before the message's dot could be
    written (its dot mark was never set): nothing left the process, so the attempt does
    not count and the message is sent as if that try had not begun."""
    return record.evolve(
        status=Status.DEFERRED,
        owner=token,
        final=False,
        attempts=max(0, record.attempts - 1),
        retry_at=None,
        mark=-1,
        updated_at=now,
    )


def outcome(
    record: Record,
    result: SendResult | FluxMailException,
    policy: Policy,
    now: float,
    rand: Callable[[], float] = random.random,
) -> tuple[Record, float | None]:
    """The record after one try, and the seconds until the next try (None: no retry).

    ``record`` is the ``sending`` record of this try (its ``attempts`` counts it)."""
    if isinstance(result, SendResult):
        return record.evolve(
            status=Status.ACCEPTED,
            final=True,
            smtp_code=result.smtp_code,
            reply=result.server_message,
            error_code=None,
            error=None,
            refused=dict(result.refused),
            updated_at=now,
        ), None
    status, retryable = classify(result, policy)
    retry_in = backoff(record.attempts, policy.retry_delay, rand)
    retry = retryable and record.attempts <= policy.max_retries
    smtp_code = result.smtp_code if isinstance(result, SMTPResponseError) else None
    new = record.evolve(
        status=status,
        final=not retry,
        unknown=record.unknown + (status is Status.UNKNOWN),
        smtp_code=smtp_code,
        reply=result.server_message if isinstance(result, SMTPResponseError) else "",
        error_code=result.code,
        error=result.message,
        refused=dict(result.refused) if isinstance(result, SMTPResponseError) else {},
        retry_at=now + retry_in if retry else None,
        updated_at=now,
    )
    return new, retry_in if retry else None


def classify(error: FluxMailException, policy: Policy) -> tuple[Status, bool]:
    """(status, worth retrying) for a failed try: the delivery policy's outcome and
    retry rule (:mod:`fluxmail.delivery.policy`); an unknown outcome is retried only
    with ``resend_unknown``."""
    outcome = delivery.outcome_of(error)
    if outcome is delivery.Outcome.UNKNOWN:
        return Status.UNKNOWN, policy.resend_unknown
    return Status(outcome.value), delivery.retryable(error)


def worker_fault(error: FluxMailException) -> bool:
    """True when ``error`` (raised while connecting) is the worker's, not the message's
    (the policy's "stops a batch" rows): the message goes back to the queue untouched
    instead of failing for good."""
    return delivery.stops_batch(error)


#: A reused connection that the server had closed (idle timeout, 421) fails before the
#: final '.'; one immediate try on a fresh connection is free of the retry budget.
free_retry = delivery.free_retry
