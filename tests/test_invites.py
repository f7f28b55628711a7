"""Calendar invites (create(invite=...)): every produced invite is parsed back with the
``icalendar`` package and Python's email parser (``policy.default``, no defects), after a
real local SMTP server received it or the capture kept it.

What is checked on every invite (``read_invite``): the text/calendar part sits inside
multipart/alternative next to the bodies, its ``method`` parameter equals METHOD, it is
UTF-8, every line ends with CRLF and is at most 75 octets, no line splits a UTF-8
character, and the invite.ics attachment carries the same calendar.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fluxmail.testing
from fluxmail import (
    Address,
    BulkSender,
    EmailInstance,
    EmailObject,
    FluxMail,
    FluxMailException,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidMessageError,
    Invite,
    MissingDependencyError,
    UnsupportedOperationError,
)
from fluxmail.compose._composer import compose
from fluxmail.message import build_message
from servers import SMTPTestServer

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
START = datetime(2027, 1, 15, 14, 0, tzinfo=BERLIN)
END = datetime(2027, 1, 15, 15, 0, tzinfo=BERLIN)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "guide.md"


def make_invite(**changes: Any) -> Invite:
    options: dict[str, Any] = {
        "summary": "Quarterly review",
        "start": START,
        "end": END,
        "organizer": "Alice <alice@example.com>",
    }
    options.update(changes)
    return Invite(**options)


# --- reading an invite back -----------------------------------------------------------------


@dataclasses.dataclass
class Received:
    message: EmailMessage
    raw: bytes  # the calendar as sent (decoded transfer encoding)
    calendar: icalendar.Calendar

    @property
    def event(self) -> icalendar.Event:
        (event,) = self.calendar.walk("VEVENT")
        return event


def assert_no_defects(message: EmailMessage) -> None:
    for part in message.walk():
        assert not part.defects, (part.get_content_type(), part.defects)


def calendar_parts(message: EmailMessage) -> list[tuple[EmailMessage, EmailMessage]]:
    """(parent, part) for every text/calendar part."""
    found = []
    for parent in message.walk():
        if parent.is_multipart():
            for child in parent.iter_parts():
                if child.get_content_type() == "text/calendar":
                    found.append((parent, child))
    return found


def assert_wire_lines(raw: bytes) -> None:
    """CRLF line ends, at most 75 octets a line, no UTF-8 character split by a fold."""
    assert raw.endswith(b"\r\n")
    lines = raw[:-2].split(b"\r\n")
    for line in lines:
        assert b"\r" not in line
        assert b"\n" not in line
        assert len(line) <= 75, line
        line.decode("utf-8")  # a split character would raise here


def read_invite(data: bytes) -> Received:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert_no_defects(message)
    ((parent, part),) = calendar_parts(message)
    assert parent.get_content_type() == "multipart/alternative"
    assert list(parent.iter_parts())[-1] is part  # the richest alternative comes last
    assert part.get_content_charset() == "utf-8"
    raw = part.get_payload(decode=True)
    assert isinstance(raw, bytes)
    assert_wire_lines(raw)
    calendar = icalendar.Calendar.from_ical(raw)
    assert part.get_param("method") == str(calendar["METHOD"])
    ics = [p for p in message.iter_attachments() if p.get_filename() == "invite.ics"]
    assert len(ics) == 1
    assert ics[0].get_content_type() == "application/ics"
    assert ics[0].get_payload(decode=True) == raw
    return Received(message, raw, calendar)


def utc(moment: Any) -> datetime:
    value = moment.dt if hasattr(moment, "dt") else moment
    assert isinstance(value, datetime)
    return value.astimezone(timezone.utc)


def mailto(value: Any) -> str:
    return str(value).removeprefix("mailto:")


# --- Invite: validated and immutable where it is built -----------------------------------------

REFUSALS: list[tuple[str, dict[str, Any], type[FluxMailException], str]] = [
    ("naive start", {"start": datetime(2027, 1, 15, 14)}, InvalidMessageError, "invalid_message"),
    ("naive end", {"end": datetime(2027, 1, 15, 15)}, InvalidMessageError, "invalid_message"),
    ("date, not datetime", {"start": START.date()}, InvalidMessageError, "invalid_message"),
    ("end == start", {"end": START}, InvalidMessageError, "invalid_message"),
    (
        "end before start",
        {"end": START - timedelta(minutes=1)},
        InvalidMessageError,
        "invalid_message",
    ),
    (
        "same instant, other zone",
        {"end": START.astimezone(NEW_YORK)},
        InvalidMessageError,
        "invalid_message",
    ),
    ("organizer", {"organizer": "not an address"}, InvalidAddressError, "invalid_address"),
    ("organizer list", {"organizer": ["a@example.com"]}, InvalidMessageError, "invalid_message"),
    (
        "attendee",
        {"attendees": ["bob@example.com", "bob@"]},
        InvalidAddressError,
        "invalid_address",
    ),
    (
        "attendee CRLF",
        {"attendees": ["b@x.com\r\nBcc: e@x.com"]},
        HeaderInjectionError,
        "header_injection",
    ),
    ("summary LF", {"summary": "Review\nEND:VEVENT"}, HeaderInjectionError, "header_injection"),
    ("summary CR", {"summary": "Review\r"}, HeaderInjectionError, "header_injection"),
    ("summary NUL", {"summary": "Re\x00view"}, HeaderInjectionError, "header_injection"),
    ("summary empty", {"summary": "  "}, InvalidMessageError, "invalid_message"),
    ("summary bytes", {"summary": b"Review"}, InvalidMessageError, "invalid_message"),
    ("location LF", {"location": "Room 4\nX-EVIL:1"}, HeaderInjectionError, "header_injection"),
    ("location NUL", {"location": "Room\x004"}, HeaderInjectionError, "header_injection"),
    ("description NUL", {"description": "a\nb\x00c"}, HeaderInjectionError, "header_injection"),
    ("description BEL", {"description": "ding\x07"}, InvalidMessageError, "invalid_message"),
    ("summary ESC", {"summary": "\x1b[31mred"}, InvalidMessageError, "invalid_message"),
    ("uid NUL", {"uid": "abc\x00"}, HeaderInjectionError, "header_injection"),
    ("uid LF", {"uid": "abc\ndef"}, HeaderInjectionError, "header_injection"),
    ("uid empty", {"uid": ""}, InvalidMessageError, "invalid_message"),
    ("uid too long", {"uid": "u" * 256}, InvalidMessageError, "invalid_message"),
    ("sequence negative", {"sequence": -1}, InvalidMessageError, "invalid_message"),
    ("sequence bool", {"sequence": True}, InvalidMessageError, "invalid_message"),
    ("sequence str", {"sequence": "1"}, InvalidMessageError, "invalid_message"),
    ("method", {"method": "PUBLISH"}, InvalidMessageError, "invalid_message"),
]


@pytest.mark.parametrize(
    ("changes", "error", "code"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_invite_refuses(changes: dict[str, Any], error: type[Exception], code: str) -> None:
    with pytest.raises(error) as info:
        make_invite(**changes)
    assert isinstance(info.value, FluxMailException)
    assert info.value.code == code
    assert str(info.value).startswith("invite.")


def test_a_refused_invite_never_connects(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="alice@example.com"))
    with pytest.raises(InvalidMessageError):
        mailer.create(subject="S", recipients="b@example.com", body="x", invite="BEGIN:VCALENDAR")
    with pytest.raises(InvalidMessageError, match="no attendees"):
        mailer.create(
            subject="S", bcc="b@example.com", body="x", recipients=[], invite=make_invite()
        )
    assert smtp_server.connections == 0
    assert smtp_server.messages == []


def test_a_time_in_the_spring_forward_gap_is_refused() -> None:
    # 02:30 on 28 March 2027 does not exist in Berlin: the clocks go from 02:00 to 03:00.
    with pytest.raises(InvalidMessageError, match="does not exist") as info:
        make_invite(start=datetime(2027, 3, 28, 2, 30, tzinfo=BERLIN))
    assert info.value.code == "invalid_message"


def test_end_after_start_is_judged_by_instant_not_by_wall_clock() -> None:
    # New York falls back on 7 Nov 2027: 01:30 happens twice (EDT, then EST an hour later).
    first = datetime(2027, 11, 7, 1, 30, tzinfo=NEW_YORK)  # fold=0: 05:30 UTC
    second = datetime(2027, 11, 7, 1, 15, fold=1, tzinfo=NEW_YORK)  # 06:15 UTC
    invite = make_invite(start=first, end=second)  # earlier on the wall, later in time
    assert invite.end.fold == 1
    with pytest.raises(InvalidMessageError, match="after"):
        make_invite(start=second, end=first.replace(hour=1, minute=45))  # 05:45 UTC


def test_invite_is_immutable_and_normalised() -> None:
    invite = make_invite(attendees="Bob <bob@example.com>", description="a\r\nb\rc\nd")
    with pytest.raises(dataclasses.FrozenInstanceError):
        invite.summary = "changed"  # type: ignore[misc]
    assert invite.organizer == Address("alice", "example.com", "Alice")
    assert invite.attendees == (Address("bob", "example.com", "Bob"),)
    assert invite.description == "a\nb\nc\nd"
    assert hash(invite) == hash(dataclasses.replace(invite))


def test_uid_is_generated_once_and_kept_by_updates_and_cancellation() -> None:
    invite = make_invite()
    assert invite.uid
    assert invite.uid.endswith("@fluxmail")
    assert make_invite().uid != invite.uid
    assert invite.sequence == 0
    assert invite.method == "REQUEST"
    assert invite.status == "CONFIRMED"
    later = invite.updated(start=START + timedelta(hours=1), end=END + timedelta(hours=1))
    assert (later.uid, later.sequence, later.method) == (invite.uid, 1, "REQUEST")
    assert later.start == START + timedelta(hours=1)
    assert invite.start == START  # the original is unchanged
    gone = later.cancelled()
    assert (gone.uid, gone.sequence, gone.method, gone.status) == (
        invite.uid,
        2,
        "CANCEL",
        "CANCELLED",
    )
    again = gone.updated()  # re-instated: a new REQUEST
    assert (again.sequence, again.method) == (3, "REQUEST")
    assert make_invite(uid="meeting-42@example.com").uid == "meeting-42@example.com"


@pytest.mark.parametrize("field", ["uid", "sequence", "method", "colour"])
def test_updated_refuses_identity_fields_and_unknown_ones(field: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        make_invite().updated(**{field: "x"})
    assert info.value.code == "invalid_message"


def test_updated_validates_the_new_values() -> None:
    with pytest.raises(InvalidMessageError, match="after"):
        make_invite().updated(end=START)
    with pytest.raises(HeaderInjectionError):
        make_invite().updated(location="a\r\nb")


# --- through a real SMTP server -----------------------------------------------------------------


def smtp_mailer(server: SMTPTestServer, **options: Any) -> FluxMail:
    return FluxMail(**server.fluxmail_kwargs(sender="Alice <alice@example.com>", **options))


def test_invite_through_smtp_has_every_property(smtp_server: SMTPTestServer) -> None:
    invite = make_invite(location="Room 4", description="Agenda: numbers; plans, risks")
    result = (
        smtp_mailer(smtp_server)
        .create(
            subject="Invitation: Quarterly review",
            recipients=["bob@example.com", "Carol <carol@example.com>"],
            cc=["Dave Dunn <dave@example.com>", "bob@example.com"],
            bcc=["secret@example.com"],
            body="You are invited.",
            invite=invite,
        )
        .send()
    )
    assert result == "Email sent successfully via SMTP."
    (received,) = smtp_server.messages
    assert received.rcpt_tos == [
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
        "secret@example.com",
    ]
    got = read_invite(received.data)
    assert got.message.get_body(("plain",)).get_content().strip() == "You are invited."  # type: ignore[union-attr]
    assert b"secret@example.com" not in received.data  # Bcc is no attendee
    calendar, event = got.calendar, got.event
    assert str(calendar["VERSION"]) == "2.0"
    assert "fluxmail" in str(calendar["PRODID"])
    assert str(calendar["METHOD"]) == "REQUEST"
    assert str(event["UID"]) == invite.uid
    assert int(event["SEQUENCE"]) == 0
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["SUMMARY"]) == "Quarterly review"
    assert str(event["LOCATION"]) == "Room 4"
    assert str(event["DESCRIPTION"]) == "Agenda: numbers; plans, risks"
    assert b"Agenda: numbers\\; plans\\, risks" in got.raw  # escaped on the wire
    assert utc(event["DTSTART"]) == datetime(2027, 1, 15, 13, 0, tzinfo=timezone.utc)
    assert utc(event["DTEND"]) == datetime(2027, 1, 15, 14, 0, tzinfo=timezone.utc)
    date = email.utils.parsedate_to_datetime(got.message["Date"])
    assert utc(event["DTSTAMP"]) == date.astimezone(timezone.utc)
    organizer = event["ORGANIZER"]
    assert mailto(organizer) == "alice@example.com"
    assert organizer.params["CN"] == "Alice"
    attendees = event["ATTENDEE"]
    assert [mailto(a) for a in attendees] == [
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    assert [a.params.get("CN") for a in attendees] == [None, "Carol", "Dave Dunn"]
    for attendee in attendees:
        assert attendee.params["RSVP"] == "TRUE"
        assert attendee.params["PARTSTAT"] == "NEEDS-ACTION"
        assert attendee.params["ROLE"] == "REQ-PARTICIPANT"
    assert not calendar.walk("VTIMEZONE")  # UTC instants: see _calendar.py


def test_explicit_attendees_replace_the_default(smtp_server: SMTPTestServer) -> None:
    invite = make_invite(attendees=["Room Booker <rooms@example.com>"])
    smtp_mailer(smtp_server).create(
        subject="S", recipients=["bob@example.com"], body="x", invite=invite
    ).send()
    event = read_invite(smtp_server.messages[0].data).event
    attendee = event["ATTENDEE"]
    assert mailto(attendee) == "rooms@example.com"
    assert attendee.params["CN"] == "Room Booker"


def test_update_and_cancellation_through_smtp(smtp_server: SMTPTestServer) -> None:
    invite = make_invite()
    later = invite.updated(location="Room 9")
    gone = later.cancelled()
    mailer = smtp_mailer(smtp_server)
    for subject, item in (("Invitation", invite), ("Updated", later), ("Cancelled", gone)):
        mailer.create(subject=subject, recipients="bob@example.com", body=subject, invite=item)
        mailer.send()
    events = [read_invite(m.data) for m in smtp_server.messages]
    assert {str(e.event["UID"]) for e in events} == {invite.uid}
    assert [int(e.event["SEQUENCE"]) for e in events] == [0, 1, 2]
    assert [str(e.calendar["METHOD"]) for e in events] == ["REQUEST", "REQUEST", "CANCEL"]
    assert [str(e.event["STATUS"]) for e in events] == ["CONFIRMED", "CONFIRMED", "CANCELLED"]
    assert "LOCATION" not in events[0].event
    assert str(events[2].event["LOCATION"]) == "Room 9"
    cancel_part = calendar_parts(events[2].message)[0][1]
    assert cancel_part.get_param("method") == "CANCEL"


ZONES = [
    ("Europe/Berlin winter", datetime(2027, 1, 15, 14, tzinfo=BERLIN), "2027-01-15 13:00"),
    ("Europe/Berlin summer", datetime(2027, 7, 15, 14, tzinfo=BERLIN), "2027-07-15 12:00"),
    ("America/New_York", datetime(2027, 1, 15, 9, tzinfo=NEW_YORK), "2027-01-15 14:00"),
    (
        "Asia/Kolkata",
        datetime(2027, 1, 15, 9, tzinfo=ZoneInfo("Asia/Kolkata")),
        "2027-01-15 03:30",
    ),
    (
        "fixed offset",
        datetime(2027, 1, 15, 9, tzinfo=timezone(timedelta(hours=-3))),
        "2027-01-15 12:00",
    ),
    ("UTC", datetime(2027, 1, 15, 9, tzinfo=timezone.utc), "2027-01-15 09:00"),
]


@pytest.mark.parametrize(("start", "expected"), [z[1:] for z in ZONES], ids=[z[0] for z in ZONES])
def test_time_zones_become_the_right_utc_instant(start: datetime, expected: str) -> None:
    invite = make_invite(start=start, end=start + timedelta(minutes=45))
    event = read_invite(composed_bytes(invite)).event
    assert f"{utc(event['DTSTART']):%Y-%m-%d %H:%M}" == expected
    assert utc(event["DTEND"]) - utc(event["DTSTART"]) == timedelta(minutes=45)


def test_a_meeting_across_the_spring_forward_change_keeps_its_real_length(
    smtp_server: SMTPTestServer,
) -> None:
    # 01:30 CET to 03:30 CEST on 28 March 2027: two hours on the wall clock, one in time.
    start = datetime(2027, 3, 28, 1, 30, tzinfo=BERLIN)
    end = datetime(2027, 3, 28, 3, 30, tzinfo=BERLIN)
    smtp_mailer(smtp_server).create(
        subject="Night shift",
        recipients="bob@example.com",
        body="x",
        invite=make_invite(start=start, end=end),
    ).send()
    event = read_invite(smtp_server.messages[0].data).event
    assert utc(event["DTSTART"]) == datetime(2027, 3, 28, 0, 30, tzinfo=timezone.utc)
    assert utc(event["DTEND"]) == datetime(2027, 3, 28, 1, 30, tzinfo=timezone.utc)
    assert utc(event["DTEND"]) - utc(event["DTSTART"]) == timedelta(hours=1)


def test_the_repeated_hour_of_fall_back_is_told_apart_by_fold() -> None:
    first = datetime(2027, 11, 7, 1, 30, tzinfo=NEW_YORK)  # EDT
    second = first.replace(fold=1)  # the same wall time an hour later, EST
    event = read_invite(composed_bytes(make_invite(start=first, end=second))).event
    assert utc(event["DTSTART"]) == datetime(2027, 11, 7, 5, 30, tzinfo=timezone.utc)
    assert utc(event["DTEND"]) == datetime(2027, 11, 7, 6, 30, tzinfo=timezone.utc)


# --- text: escaping, folding, hostile content --------------------------------------------------


def composed_bytes(invite: Invite, **options: Any) -> bytes:
    fields: dict[str, Any] = {
        "subject": "S",
        "recipients": ["bob@example.com"],
        "body": "x",
        "sender": "alice@example.com",
    }
    fields.update(options)
    return compose(build_message(**fields, invite=invite)).data


def test_long_non_ascii_description_folds_at_75_octets_between_characters(
    smtp_server: SMTPTestServer,
) -> None:
    # 1, 2, 3 and 4-octet characters, so folds fall at every offset inside a character.
    description = ("aé中😀" * 120) + "\n" + ("Grüße, 東京; \\ " * 40)
    summary = "Überprüfung — 四半期レビュー 😀"
    smtp_mailer(smtp_server).create(
        subject=summary,
        recipients="bob@example.com",
        body="x",
        invite=make_invite(summary=summary, description=description, location="Café Zürich"),
    ).send()
    got = read_invite(smtp_server.messages[0].data)
    folded = got.raw.count(b"\r\n ")
    assert folded > 25  # the description really was folded
    assert str(got.event["DESCRIPTION"]) == description
    assert str(got.event["SUMMARY"]) == summary
    assert str(got.event["LOCATION"]) == "Café Zürich"


def test_a_description_that_tries_to_end_the_event_stays_text() -> None:
    hostile = "Hi\nEND:VEVENT\nBEGIN:VEVENT\nUID:evil\nSUMMARY:Injected\nEND:VEVENT\r\nBye"
    got = read_invite(composed_bytes(make_invite(description=hostile)))
    assert len(got.calendar.walk("VEVENT")) == 1
    assert str(got.event["DESCRIPTION"]) == hostile.replace("\r\n", "\n")
    assert str(got.event["UID"]) != "evil"
    lines = got.raw.split(b"\r\n")
    assert lines.count(b"END:VEVENT") == 1
    assert lines.count(b"BEGIN:VEVENT") == 1


def test_special_characters_round_trip_exactly() -> None:
    text = 'a,b;c\\d:e "quoted" \\n not a newline, ^caret^'
    invite = make_invite(summary=text, location=text, description=text + "\n" + text)
    event = read_invite(composed_bytes(invite)).event
    assert str(event["SUMMARY"]) == text
    assert str(event["LOCATION"]) == text
    assert str(event["DESCRIPTION"]) == text + "\n" + text


@pytest.mark.parametrize(
    "name", ["Doe, J; x:y", 'Bob "The Builder"', "Zoë Ünal 東京", "O'Brien ^ caret"]
)
def test_display_names_round_trip_as_cn(name: str) -> None:
    invite = make_invite(
        organizer=Address("alice", "example.com", name),
        attendees=[Address("bob", "example.com", name)],
    )
    event = read_invite(composed_bytes(invite)).event
    assert event["ORGANIZER"].params["CN"] == name
    assert event["ATTENDEE"].params["CN"] == name


def test_uri_characters_in_a_local_part_are_escaped_in_mailto() -> None:
    invite = make_invite(attendees=["a?b%c#d/e@example.com"])
    got = read_invite(composed_bytes(invite))
    assert mailto(got.event["ATTENDEE"]) == "a%3Fb%25c%23d%2Fe@example.com"


_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"),
    min_size=1,
    max_size=200,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(summary=_TEXT.filter(str.strip), location=_TEXT, description=st.lists(_TEXT, max_size=4))
def test_any_text_round_trips(summary: str, location: str, description: list[str]) -> None:
    joined = "\n".join(description)
    invite = make_invite(summary=summary, location=location, description=joined)
    event = read_invite(composed_bytes(invite)).event
    assert str(event["SUMMARY"]) == summary
    assert str(event["LOCATION"]) == location
    assert str(event.get("DESCRIPTION", "")) == joined


# --- with every other create() option -----------------------------------------------------------


def test_invite_with_html_plain_attachments_inline_images_cc_bcc(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    from fluxmail.cli._demo import demo_png

    logo = tmp_path / "logo.png"
    logo.write_bytes(demo_png(8))
    smtp_mailer(smtp_server).create(
        subject="Invitation",
        recipients=["bob@example.com"],
        cc=["carol@example.com"],
        bcc=["hidden@example.com"],
        body='<p>You are <b>invited</b>.</p><img src="cid:logo">',
        html_body=True,
        plain_body="You are invited.",
        inline_images={"logo": logo},
        attachments=[("agenda.txt", b"1. numbers\n", "text/plain")],
        invite=make_invite(),
    ).send()
    (received,) = smtp_server.messages
    got = read_invite(received.data)
    message = got.message
    assert message.get_content_type() == "multipart/mixed"
    alternative, *files = message.iter_parts()
    assert [p.get_content_type() for p in alternative.iter_parts()] == [
        "text/plain",
        "multipart/related",
        "text/calendar",
    ]
    assert [f.get_filename() for f in files] == ["agenda.txt", "invite.ics"]
    assert message.get_body(("plain",)).get_content().strip() == "You are invited."  # type: ignore[union-attr]
    assert "invited" in message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert [mailto(a) for a in got.event["ATTENDEE"]] == ["bob@example.com", "carol@example.com"]
    assert "hidden@example.com" in received.rcpt_tos
    assert b"hidden@example.com" not in received.data


def test_html_only_invite_is_still_an_alternative(smtp_server: SMTPTestServer) -> None:
    smtp_mailer(smtp_server).create(
        subject="S",
        recipients="bob@example.com",
        body="<p>hi</p>",
        html_body=True,
        auto_text=False,
        invite=make_invite(),
    ).send()
    message = read_invite(smtp_server.messages[0].data).message
    alternative = next(message.iter_parts())
    assert [p.get_content_type() for p in alternative.iter_parts()] == [
        "text/html",
        "text/calendar",
    ]


def test_dkim_signed_invite_verifies(smtp_server: SMTPTestServer) -> None:
    import base64

    import dkim as dkimpy
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from fluxmail import DKIM

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)
    dkim = DKIM(domain="example.com", selector="s1", private_key=pem)
    smtp_mailer(smtp_server, dkim=dkim).create(
        subject="Signed invite",
        recipients="bob@example.com",
        body="x",
        invite=make_invite(description="Ünïcode " * 30),
    ).send()
    data = smtp_server.messages[0].data
    read_invite(data)
    assert data.startswith(b"DKIM-Signature:")
    assert dkimpy.verify(data, dnsfunc=lambda name, timeout=5: record)
    tampered = data.replace(b"QkVHSU46VkNBTEVOREFS", b"QkVHSU46VkNBTEVOREFT", 1)
    assert tampered != data
    assert not dkimpy.verify(tampered, dnsfunc=lambda n, timeout=5: record)


def test_bulk_sender_gives_each_message_its_own_attendees(smtp_server: SMTPTestServer) -> None:
    invite = make_invite()
    people = ["ann@example.com", "ben@example.com", "cat@example.com"]
    batch = [
        {"subject": "Invitation", "recipients": [person], "body": "x", "invite": invite}
        for person in people
    ]
    result = BulkSender(smtp_mailer(smtp_server)).send_batch(batch, progress=False)
    assert result["sent"] == 3
    events = sorted(
        (read_invite(m.data).event for m in smtp_server.messages),
        key=lambda e: mailto(e["ATTENDEE"]),
    )
    assert [mailto(e["ATTENDEE"]) for e in events] == people
    assert {str(e["UID"]) for e in events} == {invite.uid}


def test_send_async_sends_the_invite(smtp_server: SMTPTestServer) -> None:
    mailer = smtp_mailer(smtp_server)

    async def run() -> str:
        mailer.create(subject="S", recipients="bob@example.com", body="x", invite=make_invite())
        return await mailer.send_async()

    assert asyncio.run(run()) == "Email sent successfully via SMTP."
    assert str(read_invite(smtp_server.messages[0].data).calendar["METHOD"]) == "REQUEST"


def test_capture_keeps_the_invite() -> None:
    mailer = FluxMail(
        object_type="smtp", host="smtp.example.invalid", port=2525, sender="alice@example.com"
    )
    invite = make_invite().cancelled()
    with fluxmail.testing.capture() as outbox:
        mailer.create(subject="Cancelled", recipients="bob@example.com", body="x", invite=invite)
        mailer.send()
    (captured,) = outbox
    got = read_invite(captured.data)
    assert str(got.calendar["METHOD"]) == "CANCEL"
    assert str(got.event["STATUS"]) == "CANCELLED"
    assert captured.text is not None
    assert captured.text.strip() == "x"
    assert ("invite.ics", got.raw, "application/ics") in captured.attachments


def test_dry_run_shows_the_event_and_connects_nowhere(
    smtp_server: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    invite = make_invite(location="Room 4", description="Agenda\nsecond line").updated(
        start=datetime(2027, 3, 28, 1, 30, tzinfo=BERLIN),
        end=datetime(2027, 3, 28, 3, 30, tzinfo=BERLIN),
    )
    mailer = smtp_mailer(smtp_server)
    text = mailer.create(
        subject="S",
        recipients="Bob <bob@example.com>",
        bcc="hid@example.com",
        body="x",
        invite=invite,
    ).send(dry_run=True)
    assert smtp_server.connections == 0
    assert "--- text/calendar; method=REQUEST ---" in text
    assert "Event: Quarterly review" in text
    assert "Start: 2027-03-28 01:30+01:00 Europe/Berlin (2027-03-28 00:30 UTC)" in text
    assert "End: 2027-03-28 03:30+02:00 Europe/Berlin (2027-03-28 01:30 UTC)" in text
    assert "Location: Room 4" in text
    assert "Organizer: Alice <alice@example.com>" in text
    assert "Attendees: Bob <bob@example.com>\n" in text  # never the Bcc
    assert f"UID: {invite.uid}  Sequence: 1  Status: CONFIRMED" in text
    assert "Agenda\n" in text
    assert text in capsys.readouterr().out


# --- what cannot carry an invite, and a missing extra -------------------------------------------


def test_missing_calendar_extra_names_the_install(
    smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    invite = make_invite()  # building the value needs no icalendar
    monkeypatch.setitem(sys.modules, "icalendar", None)  # any import of icalendar now fails
    with pytest.raises(MissingDependencyError) as info:
        smtp_mailer(smtp_server).create(
            subject="S", recipients="bob@example.com", body="x", invite=invite
        )
    assert info.value.code == "missing_dependency"
    assert 'pip install -e ".[calendar]"' in str(info.value)
    assert "fluxmail[" not in str(info.value)  # never the package index's unrelated fluxmail
    assert smtp_server.connections == 0


class _NoOutlook:
    def CreateItem(self, kind: int) -> Any:
        raise AssertionError("an invite must be refused before Outlook is touched")


def test_outlook_refuses_an_invite() -> None:
    outlook = FluxMail(
        object_type=EmailObject.OUTLOOK,
        host=EmailInstance(relay=""),
        outlook_application=_NoOutlook(),
    )
    with pytest.raises(UnsupportedOperationError) as info:
        outlook.create(subject="S", recipients="bob@example.com", body="x", invite=make_invite())
    assert info.value.code == "unsupported_operation"
    assert "invite" in str(info.value)


# --- the guide's example, run as written against a local server ---------------------------------


def guide_example(title: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python example under '## {title}'"
    return match.group(1)


def test_guide_example_runs(smtp_server: SMTPTestServer) -> None:
    code = guide_example("Calendar invites")
    assert "port=1025" in code
    namespace: dict[str, Callable[..., Any] | Any] = {}
    exec(
        compile(code.replace("port=1025", f"port={smtp_server.port}"), "guide.md", "exec"),
        namespace,
    )
    assert len(smtp_server.messages) == 3
    events = [read_invite(m.data) for m in smtp_server.messages]
    assert [str(e.calendar["METHOD"]) for e in events] == ["REQUEST", "REQUEST", "CANCEL"]
    assert [int(e.event["SEQUENCE"]) for e in events] == [0, 1, 2]
    assert len({str(e.event["UID"]) for e in events}) == 1


# --- hostile input: CR, LF and NUL in every one-line field (docs/security.md, rule 1) ----------

BAD = {"CR": "\r", "LF": "\n", "NUL": "\0", "CRLF": "\r\n"}
Poison = Callable[[str], str]
INVITE_FIELDS: dict[str, Callable[[Poison], dict[str, Any]]] = {
    "summary": lambda p: {"summary": p("Review")},
    "location": lambda p: {"location": p("Room 4")},
    "uid": lambda p: {"uid": p("meeting-1@example.com")},
    "organizer": lambda p: {"organizer": p("alice@example.com")},
    "organizer name": lambda p: {"organizer": p("Alice") + " <alice@example.com>"},
    "attendee": lambda p: {"attendees": ["bob@example.com", p("carol@example.com")]},
    "attendee name": lambda p: {"attendees": [p("Carol") + " <carol@example.com>"]},
    "attendee Address": lambda p: {"attendees": [Address("carol", "example.com", p("Carol"))]},
}


def placements(bad: str) -> list[Poison]:
    return [lambda v: bad + v, lambda v: v[:1] + bad + v[1:], lambda v: v + bad]


@pytest.mark.parametrize("bad", list(BAD.values()), ids=list(BAD))
@pytest.mark.parametrize("field", list(INVITE_FIELDS))
def test_invite_refuses_cr_lf_nul_in_every_one_line_field(
    smtp_server: SMTPTestServer, field: str, bad: str
) -> None:
    mailer = smtp_mailer(smtp_server)
    for place in placements(bad):
        with pytest.raises(HeaderInjectionError) as info:
            mailer.create(
                subject="S",
                recipients="bob@example.com",
                body="x",
                invite=make_invite(**INVITE_FIELDS[field](place)),
            )
        assert info.value.code == "header_injection"
    assert smtp_server.connections == 0


@pytest.mark.parametrize("place", placements("\0"), ids=["start", "middle", "end"])
def test_description_refuses_nul_but_keeps_its_line_breaks(place: Poison) -> None:
    with pytest.raises(HeaderInjectionError):
        make_invite(description=place("Agenda\nitems"))
    for breaks in ("\r", "\n", "\r\n"):
        text = f"{breaks}Agenda{breaks}items{breaks}"
        event = read_invite(composed_bytes(make_invite(description=text))).event
        assert str(event["DESCRIPTION"]) == "\nAgenda\nitems\n"


def test_import_fluxmail_does_not_import_icalendar() -> None:
    import subprocess

    code = "import fluxmail, sys; assert 'icalendar' not in sys.modules, 'icalendar imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_invite_pickles_and_compares_by_value() -> None:
    import pickle

    invite = make_invite(attendees=["bob@example.com"], description="a\nb")
    copy = pickle.loads(pickle.dumps(invite))
    assert copy == invite
    assert copy.uid == invite.uid
    assert copy != invite.updated()


def test_dry_run_of_a_cancellation_says_so(smtp_server: SMTPTestServer) -> None:
    gone = make_invite().cancelled()
    text = (
        smtp_mailer(smtp_server)
        .create(subject="S", recipients="bob@example.com", body="x", invite=gone)
        .send(dry_run=True)
    )
    assert "--- text/calendar; method=CANCEL ---" in text
    assert "Event: Quarterly review (cancelled)" in text
    assert "Sequence: 1  Status: CANCELLED" in text
    assert smtp_server.connections == 0
