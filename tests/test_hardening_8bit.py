"""Rules 16 and 17 of docs/security.md: 8-bit data only to a server that takes it
(RFC 6152), and ``SIZE=`` without the transparency dots (RFC 1870)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from django_helpers import django_backend
from fluxmail import FluxMail
from fluxmail.errors import MessageRefusedError, MessageTooLargeError
from fluxmail.smtp import AsyncSMTPConnection, SMTPConnection
from hardening import MODES, run_batch, send
from helpers import plain_args
from helpers import run as run_cli
from servers import FaultServer

MakeFault = Callable[..., FaultServer]
SEVEN_BIT_CAPS = ("PIPELINING", "SIZE 10000000", "ENHANCEDSTATUSCODES")
TEXT = "naïve café, déjà vu\n"


def django_mail(body: str = TEXT) -> Any:
    from django.core.mail import EmailMessage

    return EmailMessage("s", body, "me@x.org", ["to@example.com"])


def message(**extra: Any) -> dict[str, Any]:
    return {
        "subject": "s",
        "recipients": ["to@example.com"],
        "body": TEXT,
        "sender": "me@x.org",
        **extra,
    }


# --- rule 16: 8BITMIME ----------------------------------------------------------------------


def test_django_8bit_body_is_refused_before_mail_without_8bitmime(
    make_fault_server: MakeFault,
) -> None:
    server = make_fault_server(capabilities=SEVEN_BIT_CAPS)
    backend = django_backend(host=server.host, port=server.port)
    assert b"Content-Transfer-Encoding: 8bit" in django_mail().message().as_bytes()
    with pytest.raises(MessageRefusedError) as info:
        backend.send_messages([django_mail("plain ascii\n"), django_mail()])
    assert info.value.code == "eightbitmime_unsupported"
    assert not info.value.transient
    assert "8BITMIME" in str(info.value)
    assert server.verbs().count("MAIL") == 1  # the ASCII one only
    assert all(received.raw.isascii() for received in server.received)
    assert (
        django_backend(host=server.host, port=server.port, fail_silently=True).send_messages(
            [django_mail()]
        )
        == 0
    )
    assert server.verbs().count("MAIL") == 1


def test_django_8bit_body_is_announced_with_8bitmime(make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    assert django_backend(host=server.host, port=server.port).send_messages([django_mail()]) == 1
    assert "BODY=8BITMIME" in server.received[0].mail_options
    assert server.received[0].message.get_content().replace("\r\n", "\n") == TEXT


@pytest.mark.parametrize("mode", MODES)
def test_engine_refuses_foreign_8bit_bytes_in_both_drivers(
    make_fault_server: MakeFault, mode: str
) -> None:
    from fluxmail.backends.django import compose_django_message

    server = make_fault_server(capabilities=SEVEN_BIT_CAPS)
    composed = compose_django_message(django_mail())
    config = server.smtp_config()

    async def send_async() -> None:
        async with AsyncSMTPConnection(config) as conn:
            await conn.send(composed)

    def send_sync() -> None:
        with SMTPConnection(config) as conn:
            conn.send(composed)

    with pytest.raises(MessageRefusedError, match="8BITMIME"):
        send_sync() if mode == "sync" else asyncio.run(send_async())
    assert "MAIL" not in server.verbs()


@pytest.mark.parametrize("mode", MODES)
def test_composer_bodies_are_7bit_for_a_7bit_server(
    make_fault_server: MakeFault, mode: str
) -> None:
    server = make_fault_server(capabilities=SEVEN_BIT_CAPS)
    mailer = FluxMail(**server.fluxmail_kwargs())
    send(mailer, mode, **message(html_body=True, body="<p>naïve café</p>"))
    result = run_batch(mailer, [message(), message()], mode)
    assert result["sent"] == 2
    for received in server.received:
        assert received.raw.isascii()
        assert not any(o.upper().startswith("BODY=") for o in received.mail_options)
    assert server.received[1].message.get_content().replace("\r\n", "\n") == TEXT


def test_smtputf8_server_without_8bitmime_takes_utf8(make_fault_server: MakeFault) -> None:
    server = make_fault_server(capabilities=(*SEVEN_BIT_CAPS, "SMTPUTF8"))
    mailer = FluxMail(**server.fluxmail_kwargs())
    send(mailer, "sync", **message(recipients=["jörg@example.com"]))
    assert server.received[0].mail_options == [f"SIZE={len(server.received[0].data)}", "SMTPUTF8"]


def test_cli_sends_7bit_to_a_7bit_server(make_fault_server: MakeFault) -> None:
    server = make_fault_server(capabilities=SEVEN_BIT_CAPS)
    args = plain_args(server, "--sender", "me@x.org", "--subject", "s")  # type: ignore[arg-type]
    result = run_cli(*args, "--recipients", "to@example.com", "--body", TEXT)
    assert result.returncode == 0, result.stderr
    assert server.received[0].raw.isascii()


# --- rule 17: SIZE counts the message, not the transparency dots -----------------------------

DOTTED = "".join(f".line {i}\n" for i in range(50))


def announced_size(options: list[str]) -> int:
    return int(next(o for o in options if o.upper().startswith("SIZE="))[5:])


def dotted_composed() -> Any:
    from fluxmail.envelope import Composed, Envelope

    data = b"Subject: dots\r\n\r\n" + DOTTED.replace("\n", "\r\n").encode() + b"x" * 500 + b"\r\n"
    envelope = Envelope(mail_from="me@x.org", rcpt_to=("to@example.com",))
    return Composed(envelope=envelope, data=data, message_id="<dots@x.org>")


@pytest.mark.parametrize("mode", MODES)
def test_size_excludes_the_stuffed_dots_at_the_exact_limit(
    make_fault_server: MakeFault, mode: str
) -> None:
    composed = dotted_composed()
    exact = len(composed.data)
    for limit, fits in ((exact, True), (exact - 1, False)):
        server = make_fault_server(capabilities=("PIPELINING", f"SIZE {limit}"))
        config = server.smtp_config()

        def send_one(config: Any = config) -> None:
            if mode == "sync":
                with SMTPConnection(config) as conn:
                    conn.send(composed)
                return

            async def send_async() -> None:
                async with AsyncSMTPConnection(config) as conn:
                    await conn.send(composed)

            asyncio.run(send_async())

        if fits:
            send_one()
            assert announced_size(server.received[0].mail_options) == exact
            assert len(server.received[0].raw) == exact + 50 + 3  # 50 dots added, ".\r\n"
        else:
            with pytest.raises(MessageTooLargeError):
                send_one()
            assert "MAIL" not in server.verbs()


@pytest.mark.parametrize("mode", MODES)
def test_size_is_exact_through_the_api_bulk_and_django(
    make_fault_server: MakeFault, mode: str
) -> None:
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs())
    send(mailer, mode, **message(body=DOTTED))
    run_batch(mailer, [message(body=DOTTED), message(body=DOTTED)], mode)
    assert (
        django_backend(host=server.host, port=server.port).send_messages(
            [django_mail("ascii\n" + DOTTED)]
        )
        == 1
    )
    assert len(server.received) == 4
    for received in server.received:
        assert received.raw.count(b"\r\n..line") == 50  # stuffed on the wire
        assert announced_size(received.mail_options) == len(received.data)
