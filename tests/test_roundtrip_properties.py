"""Hypothesis through a real server: every generated address, header value, file name and
body either raises a FluxMailException before anything is sent, or is delivered and
decodes back to exactly what was given (after the documented normalisations: the body
line-end rule, ASCII lowercasing and UTS-46 for domains, surrounding blanks of extra
header values). The wire form is checked too: CRLF only, no line over 998 octets.

One FaultServer for the module (it records the DATA bytes as they arrive); every example
is a fresh send, so "before anything is sent" means: no new connection was made.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import idna
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fluxmail import FluxMail
from fluxmail.envelope import Composed, Envelope
from fluxmail.errors import FluxMailException
from hardening import assert_clean_wire
from helpers import TEXT, crlf, filename_param, must_accept, parse, refused
from servers import FaultServer, ReceivedMessage

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def attempt(server: FaultServer, **create: Any) -> ReceivedMessage | None:
    """Send one message; None when fluxmail refused it (and then nothing was sent)."""
    options: dict[str, Any] = {
        "subject": "s",
        "recipients": ["to@example.com"],
        "body": "b",
        "sender": "me@example.com",
    }
    options.update(create)
    sessions = len(server.sessions)
    mailer = FluxMail(**server.fluxmail_kwargs(timeout=5))
    try:
        mailer.create(**options).send()
    except FluxMailException as exc:
        assert len(server.sessions) == sessions, "refused, but after connecting"
        refused(exc)
        return None
    event("delivered")
    received = server.received[-1]
    assert_clean_wire(received.raw)
    return received


def parsed(received: ReceivedMessage) -> Any:
    envelope = Envelope(received.mail_from, tuple(received.rcpt_tos), smtputf8=True)
    return parse(Composed(envelope, received.data, "<x@y>"))


# --- addresses -----------------------------------------------------------------------------

LOCAL = st.lists(
    st.sampled_from([*"abcXYZ09.!#$%&'*+-/=?^_`{|}~", "é", "用", "ß", "\u200b", " ", '"', "@"]),
    min_size=1,
    max_size=12,
).map("".join)
LABEL = st.lists(
    st.sampled_from([*"abcXYZ09-", "ü", "日", "ｂ", "\u200b", "_", " ", "."]),
    min_size=1,
    max_size=10,
).map("".join)
DOMAIN = st.lists(LABEL, min_size=1, max_size=3).map(".".join).map(lambda d: d + ".example")


def ascii_domain(domain: str) -> str:
    """What the domain must become, computed with the idna package directly (UTS-46)."""
    if domain.isascii():
        return domain.lower()
    return idna.encode(domain, uts46=True).decode("ascii")


@must_accept(0.05)
@SETTINGS
@given(LOCAL, DOMAIN, st.one_of(st.none(), TEXT))
def test_address_round_trip(server: FaultServer, local: str, domain: str, name: Any) -> None:
    spec = f"{local}@{domain}"
    if name is None:
        written = spec
    else:
        written = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{spec}>'
    received = attempt(server, recipients=[written])
    if received is None:
        return
    # Blanks around a bare mailbox are folding white space, not part of it (RFC 5322).
    given_local = local.lstrip(" \t") if name is None else local
    expected = f"{given_local}@{ascii_domain(domain)}"
    assert received.rcpt_tos == [expected]  # the envelope: exactly the parsed addr-spec
    (to,) = parsed(received)["To"].addresses
    assert to.addr_spec == expected  # what a reader sees is where it went
    assert to.display_name == (name or "")


# --- header values -------------------------------------------------------------------------


@must_accept(0.05)
@SETTINGS
@given(TEXT)
def test_subject_round_trip(server: FaultServer, subject: str) -> None:
    received = attempt(server, subject=subject)
    if received is not None:
        assert parsed(received)["Subject"] == subject


@must_accept(0.05)
@SETTINGS
@given(TEXT, TEXT)
def test_display_names_round_trip(server: FaultServer, sender: str, reply: str) -> None:
    def mailbox(name: str, address: str) -> str:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'

    received = attempt(
        server,
        sender=mailbox(sender, "me@example.com"),
        reply_to=[mailbox(reply, "desk@example.com")],
    )
    if received is None:
        return
    message = parsed(received)
    assert message["From"].addresses[0].display_name == sender
    assert message["Reply-To"].addresses[0].display_name == reply
    assert received.mail_from == "me@example.com"


def unfolded(data: bytes, name: str) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    match = re.search(rf"(?mi)^{re.escape(name)}:((?:[^\r\n]*)(?:\r\n[ \t][^\r\n]*)*)", head)
    assert match is not None
    return match.group(1).replace("\r\n", "")[1:]  # one space after the colon


@must_accept(0.05)
@SETTINGS
@given(TEXT)
def test_extra_header_value_round_trip(server: FaultServer, value: str) -> None:
    received = attempt(server, headers={"X-Note": value})
    if received is None:
        return
    expected = value.strip(" \t")  # surrounding blanks are insignificant in headers
    if expected.isascii():  # written as given (it may be a structured value)
        assert unfolded(received.data, "X-Note") == expected
    else:  # RFC 2047 encoded words
        assert parsed(received)["X-Note"] == expected


# --- file names and data -------------------------------------------------------------------


@must_accept(0.05)
@SETTINGS
@given(TEXT, st.binary(max_size=2000))
def test_attachment_round_trip(server: FaultServer, filename: str, data: bytes) -> None:
    received = attempt(server, attachments=[(filename, data, "application/octet-stream")])
    if received is None:
        return
    _, attachment = parsed(received).iter_parts()
    assert filename_param(attachment) == filename
    assert attachment.get_content() == data


# --- bodies --------------------------------------------------------------------------------

SMUGGLE = st.sampled_from(["\r\n.\r\n", "\n.\n", "\r.\r", ".", "..", "\x00", "\r", "\n"])
BODY = st.lists(st.one_of(TEXT, SMUGGLE, st.just("x" * 1200)), max_size=6).map("".join)


@must_accept(0.5)
@SETTINGS
@given(BODY, st.booleans())
def test_body_round_trip(server: FaultServer, body: str, html: bool) -> None:
    received = attempt(server, body=body, html_body=html, auto_text=False)
    if received is None:
        return
    assert server.verbs().count("MAIL") == len(server.received)  # nothing smuggled
    assert parsed(received).get_content() == crlf(body)
