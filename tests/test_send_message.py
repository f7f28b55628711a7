"""``FluxMail.send_message()``: a message you built, through the same checks, transports,
retries and capture as create() + send(), against real servers."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Callable
from email.message import EmailMessage

import pytest

import fluxmail.testing
from fluxmail import FluxMail
from fluxmail.errors import (
    FluxMailException,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidMessageError,
    RecipientsRefusedError,
)
from servers import FaultServer, FaultSession, Reply, SMTPTestServer

SUCCESS = "Email sent successfully via SMTP."


def built() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Ada Lovelace <ada@example.com>"
    msg["To"] = "Bob <bob@example.org>, carol@example.org"
    msg["Cc"] = "dave@example.org"
    msg["Bcc"] = "audit@example.org"
    msg["Subject"] = "Grüße from a prebuilt message"
    msg.set_content("Hello from email.message\n")
    msg.add_alternative("<p>Hello from <b>email.message</b></p>", subtype="html")
    return msg


def mailer_for(server: SMTPTestServer | FaultServer, **options: object) -> FluxMail:
    return FluxMail(object_type="smtp", host="127.0.0.1", port=server.port, **options)  # type: ignore[arg-type]


def test_an_email_message_goes_out_with_its_envelope_and_no_bcc(
    smtp_server: SMTPTestServer,
) -> None:
    receipt = mailer_for(smtp_server).send_message(built())
    assert receipt == SUCCESS
    [received] = smtp_server.messages
    assert received.mail_from == "ada@example.com"
    assert received.rcpt_tos == [
        "bob@example.org",
        "carol@example.org",
        "dave@example.org",
        "audit@example.org",
    ]
    assert b"audit@example.org" not in received.data
    assert b"\nBcc:" not in received.data
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"] == "Grüße from a prebuilt message"
    assert parsed["Message-ID"] == receipt.message_id  # type: ignore[attr-defined]
    assert parsed["Date"]
    assert parsed.get_body(("html",)).get_content().strip().startswith("<p>Hello")  # type: ignore[union-attr]


def test_raw_bytes_with_an_explicit_envelope(smtp_server: SMTPTestServer) -> None:
    raw = (
        b"From: list@example.com\nTo: undisclosed-recipients:;\nSubject: raw\n"
        b"Message-ID: <given@example.com>\n\nbody line\n.leading dot\n"
    )
    receipt = mailer_for(smtp_server).send_message(
        raw, mail_from="bounces@example.com", recipients=["x@example.org", "y@example.org"]
    )
    assert receipt.message_id == "<given@example.com>"  # type: ignore[attr-defined]
    [received] = smtp_server.messages
    assert received.mail_from == "bounces@example.com"
    assert received.rcpt_tos == ["x@example.org", "y@example.org"]
    assert b"\r\n" in received.data
    assert received.data.endswith(b"body line\r\n.leading dot\r\n")  # dot-stuffed on the wire


def test_sender_header_is_the_reverse_path(smtp_server: SMTPTestServer) -> None:
    msg = built()
    msg["Sender"] = "secretary@example.com"
    mailer_for(smtp_server).send_message(msg)
    assert smtp_server.messages[0].mail_from == "secretary@example.com"


def test_capture_catches_it_like_any_send(smtp_server: SMTPTestServer) -> None:
    with fluxmail.testing.capture() as outbox:
        mailer_for(smtp_server).send_message(built())
    assert smtp_server.messages == []
    [captured] = outbox
    assert captured.envelope.rcpt_to[-1] == "audit@example.org"
    assert "Bcc" not in captured.message


def test_retries_apply() -> None:
    seen = {"MAIL": 0}

    def first_mail_deferred(session: FaultSession) -> Reply | None:
        seen["MAIL"] += 1
        return Reply("421 4.3.2 try again later", close=True) if seen["MAIL"] == 1 else None

    server = FaultServer({"MAIL": first_mail_deferred}).start()
    try:
        mailer = mailer_for(server, max_retries=2, retry_delay=0.01)
        assert mailer.send_message(built()) == SUCCESS
        assert seen["MAIL"] == 2
        assert len(server.messages) == 1
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("raw", "error", "words"),
    [
        (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\n\r\n" + b"y" * 2000,
         InvalidMessageError, "over the 998 allowed"),
        (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\rBcc: c@example.org\r\n\r\nz",
         InvalidMessageError, "bare CR"),
        (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\nnot a header\r\n\r\nz",
         HeaderInjectionError, "not a header line"),
        (b"From: a@example.com\r\nTo: b@example.org\r\n\r\nnul \0 byte",
         InvalidMessageError, "NUL"),
        (b"From: a@example.com\r\nSubject: nobody\r\n\r\nz", InvalidAddressError, "no recipients"),
        (b"To: b@example.org\r\n\r\nz", InvalidAddressError, "no From"),
        (b"From: a@example.com\r\nTo: b@exa mple.org\r\n\r\nz", InvalidAddressError, "To"),
        (b"From: a@example.com, b@example.com\r\nTo: c@example.org\r\n\r\nz",
         InvalidAddressError, "several mailboxes"),
    ],
)  # fmt: skip
def test_bad_messages_are_refused_before_any_connection(
    smtp_server: SMTPTestServer, raw: bytes, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as info:
        mailer_for(smtp_server).send_message(raw)
    assert words in str(info.value)
    assert smtp_server.connections == 0


def test_envelope_addresses_are_checked_like_create(smtp_server: SMTPTestServer) -> None:
    with pytest.raises(HeaderInjectionError):
        mailer_for(smtp_server).send_message(built(), mail_from="a@b.example\r\nRCPT TO:<x@y>")
    with pytest.raises(InvalidAddressError):
        mailer_for(smtp_server).send_message(built(), recipients=["not an address"])
    assert smtp_server.connections == 0


def test_not_a_message() -> None:
    with pytest.raises(InvalidMessageError):
        FluxMail(object_type="smtp", host="127.0.0.1").send_message("From: a@b.c")  # type: ignore[arg-type]


def test_a_folded_bcc_is_removed_whole(smtp_server: SMTPTestServer) -> None:
    raw = (
        b"From: a@example.com\r\nBcc: one@example.org,\r\n two@example.org\r\n"
        b"To: b@example.org\r\nSubject: fold\r\n\r\nbody\r\n"
    )
    mailer_for(smtp_server).send_message(raw)
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["b@example.org", "one@example.org", "two@example.org"]
    assert b"example.org\r\nTo:" not in received.data
    assert b"two@" not in received.data
    assert b"one@" not in received.data


# --- send_message_async: the asyncio twin ------------------------------------------------


def test_async_sends_with_the_same_envelope_and_no_bcc(smtp_server: SMTPTestServer) -> None:
    receipt = asyncio.run(mailer_for(smtp_server).send_message_async(built()))
    assert receipt == SUCCESS
    [received] = smtp_server.messages
    assert received.mail_from == "ada@example.com"
    assert received.rcpt_tos[-1] == "audit@example.org"
    assert b"audit@example.org" not in received.data
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Message-ID"] == receipt.message_id  # type: ignore[attr-defined]


def test_async_capture_catches_it(smtp_server: SMTPTestServer) -> None:
    with fluxmail.testing.capture() as outbox:
        asyncio.run(mailer_for(smtp_server).send_message_async(built(), recipients=["x@ex.org"]))
    assert smtp_server.messages == []
    [captured] = outbox
    assert captured.envelope.rcpt_to == ("x@ex.org",)


def test_async_a_refused_recipient_is_reported_and_the_rest_get_it(
    make_server: Callable[..., SMTPTestServer],
) -> None:
    server = make_server(reject_rcpt={"carol@example.org": 550})
    receipt = asyncio.run(mailer_for(server).send_message_async(built()))
    assert receipt.refused["carol@example.org"][0] == 550  # type: ignore[attr-defined]
    [received] = server.messages
    assert "carol@example.org" not in received.rcpt_tos
    assert "bob@example.org" in received.rcpt_tos


def test_async_every_recipient_refused_raises(make_server: Callable[..., SMTPTestServer]) -> None:
    server = make_server(reject_rcpt={"b@example.org": 550})
    raw = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\n\r\nz\r\n"
    with pytest.raises(RecipientsRefusedError) as info:
        asyncio.run(mailer_for(server).send_message_async(raw))
    assert info.value.code == "recipients_refused"
    assert server.messages == []


def test_async_bad_messages_are_refused_before_any_connection(
    smtp_server: SMTPTestServer,
) -> None:
    raw = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\nnot a header\r\n\r\nz"
    with pytest.raises(HeaderInjectionError):
        asyncio.run(mailer_for(smtp_server).send_message_async(raw))
    assert smtp_server.connections == 0


def test_async_is_not_retried_as_the_api_page_says() -> None:
    seen = {"MAIL": 0}

    def first_mail_deferred(session: FaultSession) -> Reply | None:
        seen["MAIL"] += 1
        return Reply("421 4.3.2 try again later", close=True) if seen["MAIL"] == 1 else None

    server = FaultServer({"MAIL": first_mail_deferred}).start()
    try:
        mailer = mailer_for(server, max_retries=2, retry_delay=0.01)
        with pytest.raises(FluxMailException) as info:
            asyncio.run(mailer.send_message_async(built()))
        assert info.value.transient
        assert seen["MAIL"] == 1
        assert asyncio.run(mailer.send_message_async(built())) == SUCCESS  # the caller retries
    finally:
        server.stop()


def test_async_held_connection_sends_several(smtp_server: SMTPTestServer) -> None:
    mailer = mailer_for(smtp_server)

    async def two() -> None:
        async with mailer:
            await mailer.send_message_async(built())
            await mailer.send_message_async(built())

    asyncio.run(two())
    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 1
