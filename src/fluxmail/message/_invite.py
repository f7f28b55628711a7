"""Invite: a meeting invitation that create(invite=...) sends as an iTIP REQUEST or CANCEL.

An Invite is a frozen value, checked where it is built, before any connection: aware
datetimes only (a naive one has no instant), ``start < end`` as instants (so a DST change
between them counts), valid mailboxes for the organizer and attendees, no CR/LF in the
summary or location (one-line texts) and no NUL or other control character anywhere but
the line breaks of a description.

The calendar itself is written by :mod:`fluxmail.compose._calendar` when the message is composed
(DTSTAMP is the message's Date); it needs the ``icalendar`` package (the ``[calendar]``
extra). ``updated()`` and ``cancelled()`` return new Invites with the same ``uid`` and the
next ``sequence``, which is how calendars recognise a change to the same meeting
(RFC 5546 2.1.4).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any, Literal, Union

from ..errors import InvalidMessageError
from ._address import Address, check_text, parse_address, parse_addresses

__all__ = ["Attendees", "Invite", "InviteMethod"]

InviteMethod = Literal["REQUEST", "CANCEL"]
#: What ``attendees=`` takes: None (the message's To + Cc), one mailbox or a list of them.
Attendees = Union[str, "Address", Iterable[Union[str, "Address"]], None]
_METHODS = ("REQUEST", "CANCEL")
_MAX_UID = 255  # RFC 5545 sets no limit; Outlook and CalDAV servers handle this length
_MAX_SEQUENCE = 2**31 - 1  # RFC 5545 INTEGER range


@dataclass(frozen=True, slots=True)
class Invite:
    """One event to invite people to (one VEVENT, no recurrence).

    ``attendees`` defaults to the message's To and Cc recipients (never Bcc) when the
    Invite is given to ``create()``; ``uid`` is generated when omitted and stays the
    same across :meth:`updated` and :meth:`cancelled`.
    """

    summary: str
    start: datetime
    end: datetime
    organizer: str | Address  # an Address once built
    attendees: Attendees = None  # None: To + Cc; once built, None or a tuple of Address
    location: str | None = None
    description: str | None = None
    uid: str | None = None
    sequence: int = 0
    method: InviteMethod = "REQUEST"

    def __post_init__(self) -> None:
        _set(self, "summary", _one_line(self.summary, "invite.summary", required=True))
        _set(self, "start", _instant(self.start, "invite.start"))
        _set(self, "end", _instant(self.end, "invite.end"))
        if self.end.astimezone(timezone.utc) <= self.start.astimezone(timezone.utc):
            raise InvalidMessageError(
                f"invite.end: must be after invite.start ({self.start.isoformat()}), "
                f"got {self.end.isoformat()}"
            )
        _set(self, "organizer", parse_address(self.organizer, field="invite.organizer"))
        if self.attendees is not None:
            _set(self, "attendees", parse_addresses(self.attendees, field="invite.attendees"))
        if self.location is not None:
            _set(self, "location", _one_line(self.location, "invite.location"))
        if self.description is not None:
            _set(self, "description", _multi_line(self.description, "invite.description"))
        _set(self, "uid", _generated_uid() if self.uid is None else _check_uid(self.uid))
        _set(self, "sequence", _check_sequence(self.sequence))
        if self.method not in _METHODS:
            raise InvalidMessageError(
                f"invite.method: expected 'REQUEST' or 'CANCEL', got {self.method!r}"
            )

    @property
    def status(self) -> str:
        """The VEVENT STATUS: ``CONFIRMED``, or ``CANCELLED`` for a cancellation."""
        return "CANCELLED" if self.method == "CANCEL" else "CONFIRMED"

    def updated(self, **changes: Any) -> Invite:
        """A changed copy (new times, place, text, people): same uid, sequence + 1,
        method REQUEST. ``uid``, ``sequence`` and ``method`` cannot be changed here."""
        fixed = {"uid", "sequence", "method"} & set(changes)
        if fixed:
            raise InvalidMessageError(
                f"invite.updated(): {', '.join(sorted(fixed))} cannot be changed; the "
                f"uid identifies the meeting and the sequence counts its versions"
            )
        known = {item.name for item in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise InvalidMessageError(
                f"invite.updated(): unknown field(s): {', '.join(sorted(unknown))}"
            )
        return replace(self, **changes, sequence=self._next_sequence(), method="REQUEST")

    def cancelled(self) -> Invite:
        """The cancellation of this meeting: same uid, sequence + 1, method CANCEL."""
        return replace(self, sequence=self._next_sequence(), method="CANCEL")

    def with_attendees(self, attendees: Iterable[str | Address]) -> Invite:
        """This invite with ``attendees`` set (create() uses it for the To + Cc default)."""
        return replace(self, attendees=tuple(attendees))

    def _next_sequence(self) -> int:
        if self.sequence >= _MAX_SEQUENCE:
            raise InvalidMessageError("invite.sequence: at its maximum; use a new uid")
        return self.sequence + 1


def _set(invite: Invite, name: str, value: object) -> None:
    object.__setattr__(invite, name, value)  # frozen: normalise once, while building


def _one_line(value: object, field: str, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidMessageError(f"{field}: expected a string, got {type(value).__name__}")
    check_text(value, field)  # CR, LF, NUL: HeaderInjectionError; other controls refused
    if required and not value.strip():
        raise InvalidMessageError(f"{field}: must not be empty")
    return value


def _multi_line(value: object, field: str) -> str:
    """Line breaks become LF (written as ``\\n``, RFC 5545 3.3.11); nothing else is
    changed, and NUL or other control characters are refused."""
    if not isinstance(value, str):
        raise InvalidMessageError(f"{field}: expected a string, got {type(value).__name__}")
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    for line in text.split("\n"):
        check_text(line, field)
    return text


def _instant(value: object, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidMessageError(
            f"{field}: expected a datetime with a time zone, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidMessageError(
            f"{field}: {value.isoformat()} has no time zone; pass tzinfo= "
            f"(for example ZoneInfo('Europe/Berlin') or timezone.utc)"
        )
    # A wall time inside a DST gap (02:30 on a spring-forward night) names no instant;
    # the round trip through UTC moves it, so it is refused rather than guessed.
    back = value.astimezone(timezone.utc).astimezone(value.tzinfo)
    if back.replace(tzinfo=None, fold=0) != value.replace(tzinfo=None, fold=0):
        raise InvalidMessageError(
            f"{field}: {value.replace(tzinfo=None).isoformat()} does not exist in "
            f"{value.tzinfo} (the clocks skip it when daylight saving time starts)"
        )
    return value


def _generated_uid() -> str:
    return f"{uuid.uuid4()}@fluxmail"  # RFC 7986 5.3: a UUID keeps no host or personal data


def _check_uid(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidMessageError(f"invite.uid: expected a string, got {type(value).__name__}")
    check_text(value, "invite.uid", allow_tab=False)
    if not value.strip() or len(value) > _MAX_UID:
        raise InvalidMessageError(f"invite.uid: expected 1 to {_MAX_UID} characters")
    return value


def _check_sequence(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessageError(
            f"invite.sequence: expected an integer, got {type(value).__name__}"
        )
    if not 0 <= value <= _MAX_SEQUENCE:
        raise InvalidMessageError(f"invite.sequence: expected 0 to {_MAX_SEQUENCE}, got {value}")
    return value
