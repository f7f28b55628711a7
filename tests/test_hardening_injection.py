"""Rules 1, 2 and 4 of docs/security.md, end to end against real servers.

1. CR, LF and NUL are refused (never stripped) in every header name and value, address,
   display name, attachment file name, MIME type, Message-ID, References, unsubscribe
   URL, EHLO name, DKIM name and SMTP command argument, before any connection.
2. One mailbox per entry; the envelope address is exactly the parsed addr-spec; IDN
   domains go through UTS-46; SMTPUTF8 only when the server offers it.
4. Bcc never appears in the delivered bytes.

Through the API (sync and async), BulkSender, the CLI and the Django backend.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import EmailInstance, FluxMail
from fluxmail.config import SmtpConfig
from fluxmail.envelope import Composed, Envelope
from fluxmail.errors import (
    ConfigurationError,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidMessageError,
    SMTPUTF8UnsupportedError,
)
from fluxmail.message import Address
from fluxmail.smtp import AsyncSMTPConnection, SMTPConnection
from hardening import MODES, run_batch, send
from helpers import assert_one_line_error, plain_args
from helpers import run as run_cli
from servers import FaultServer, SMTPTestServer

MakeServer = Callable[..., SMTPTestServer]
MakeFault = Callable[..., FaultServer]
BAD = ["\r", "\n", "\0", "\r\n"]
BAD_IDS = ["CR", "LF", "NUL", "CRLF"]


def placements(bad: str) -> list[Callable[[str], str]]:
    """Put ``bad`` at the start, in the middle and at the end of a value."""
    return [
        lambda v: bad + v,
        lambda v: v[:1] + bad + v[1:],
        lambda v: v + bad,
    ]


# Every create() field that ends up in a header line, as (name, build kwargs from a
# poisoned string). ``poison`` puts the bad characters into a plausible value.
CREATE_FIELDS: dict[str, Callable[[Callable[[str], str]], dict[str, Any]]] = {
    "subject": lambda p: {"subject": p("Hello")},
    "recipient": lambda p: {"recipients": [p("to@example.com")]},
    "recipient display name": lambda p: {"recipients": [p("Ann") + " <to@example.com>"]},
    "recipient Address": lambda p: {"recipients": [Address("to", "example.com", p("Ann"))]},
    "cc": lambda p: {"cc": [p("cc@example.com")]},
    "bcc": lambda p: {"bcc": [p("bcc@example.com")]},
    "reply_to": lambda p: {"reply_to": [p("Desk <desk@example.com>")]},
    "sender": lambda p: {"sender": p("me@example.com")},
    "sender display name": lambda p: {"sender": p("Me") + " <me@example.com>"},
    "attachment name": lambda p: {"attachments": [(p("report.pdf"), b"x", "application/pdf")]},
    "attachment MIME type": lambda p: {"attachments": [("r.pdf", b"x", p("application/pdf"))]},
    "file object name": lambda p: {"attachments": [named_file(p("notes.txt"))]},
    "inline image cid": lambda p: {
        "html_body": True,
        "inline_images": {p("logo"): __file__},
    },
    "in_reply_to": lambda p: {"in_reply_to": p("<a@example.com>")},
    "references string": lambda p: {"references": p("<a@example.com> <b@example.com>")},
    "references list": lambda p: {"references": ["<a@example.com>", p("<b@example.com>")]},
    "priority": lambda p: {"priority": p("high")},
    "unsubscribe_url": lambda p: {"unsubscribe_url": p("https://example.com/u?t=1")},
    "header name": lambda p: {"headers": {p("X-Campaign"): "may"}},
    "header value": lambda p: {"headers": {"X-Campaign": p("may")}},
}


def named_file(name: str) -> io.BytesIO:
    file = io.BytesIO(b"data")
    file.name = name
    return file


def base_create(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "subject": "s",
        "recipients": ["to@example.com"],
        "body": "body",
        "sender": "me@example.com",
    }
    options.update(overrides)
    return options


@pytest.mark.parametrize("bad", BAD, ids=BAD_IDS)
@pytest.mark.parametrize("field", list(CREATE_FIELDS))
def test_create_refuses_cr_lf_nul_in_every_field(
    smtp_server: SMTPTestServer, field: str, bad: str
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs())
    for place in placements(bad):
        with pytest.raises(HeaderInjectionError) as info:
            mailer.create(**base_create(**CREATE_FIELDS[field](place)))
        assert info.value.code == "header_injection"
    assert smtp_server.connections == 0


def test_attachment_path_with_newline_in_its_name(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    path = tmp_path / "report\r\nContent-Type: text-html.pdf"
    path.write_bytes(b"%PDF")
    with pytest.raises(HeaderInjectionError):
        FluxMail(**smtp_server.fluxmail_kwargs()).create(**base_create(attachments=[path]))
    assert smtp_server.connections == 0


CONSTRUCTOR_FIELDS: dict[str, Callable[[Callable[[str], str]], dict[str, Any]]] = {
    "host": lambda p: {"host": p("smtp.example.com")},
    "EmailInstance relay": lambda p: {"host": EmailInstance(p("smtp.example.com"))},
    "EmailInstance domain": lambda p: {"host": EmailInstance("smtp.example.com", p("ex.com"))},
    "username": lambda p: {"username": p("me@example.com"), "password": "pw"},
    "password": lambda p: {"username": "me@example.com", "password": p("pw")},
    "sender": lambda p: {"sender": p("me@example.com")},
    "local_hostname (EHLO)": lambda p: {"local_hostname": p("client.example.com")},
}


@pytest.mark.parametrize("bad", BAD, ids=BAD_IDS)
@pytest.mark.parametrize("field", list(CONSTRUCTOR_FIELDS))
def test_constructor_refuses_cr_lf_nul(field: str, bad: str) -> None:
    for place in placements(bad):
        with pytest.raises(HeaderInjectionError) as info:
            FluxMail(**{"host": "smtp.example.com", **CONSTRUCTOR_FIELDS[field](place)})
        assert "pw" not in str(info.value)


@pytest.mark.parametrize("bad", BAD, ids=BAD_IDS)
@pytest.mark.parametrize(
    "variable", ["FLUXMAIL_HOST", "FLUXMAIL_SENDER", "FLUXMAIL_USERNAME", "FLUXMAIL_DOMAIN"]
)
def test_environment_refuses_cr_lf_nul(variable: str, bad: str) -> None:
    env = {"FLUXMAIL_HOST": "smtp.example.com", variable: f"value.example.com{bad}"}
    with pytest.raises(HeaderInjectionError, match=variable) as info:
        FluxMail.from_env(env)
    assert "value.example.com" not in str(info.value)


@pytest.mark.parametrize("bad", BAD, ids=BAD_IDS)
def test_dkim_names_refuse_cr_lf_nul(bad: str) -> None:
    from fluxmail import DKIM

    for options in ({"domain": f"example.com{bad}"}, {"selector": f"s1{bad}"}):
        with pytest.raises(HeaderInjectionError):
            DKIM(**{"domain": "example.com", "selector": "s1", "private_key": b"k", **options})


# --- SMTP command arguments, in the engine itself (any composer) --------------------------


def engine_send(config: SmtpConfig, composed: Composed, mode: str) -> Any:
    if mode == "sync":
        return SMTPConnection(config).send(composed)
    return asyncio.run(AsyncSMTPConnection(config).send(composed))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", BAD, ids=BAD_IDS)
def test_engine_refuses_envelope_injection_before_connecting(
    smtp_server: SMTPTestServer, mode: str, bad: str
) -> None:
    config = smtp_server.smtp_config()
    for sender, rcpt in [
        (f"a@example.com{bad}RCPT TO:<victim@example.com>", "b@example.com"),
        ("a@example.com", f"b@example.com{bad}DATA"),
    ]:
        composed = Composed(Envelope(sender, (rcpt,)), b"Subject: x\r\n\r\nx\r\n", "<i@x.org>")
        with pytest.raises(HeaderInjectionError):
            engine_send(config, composed, mode)
    assert smtp_server.connections == 0


def test_engine_refuses_injection_in_the_ehlo_name() -> None:
    for bad in BAD:
        with pytest.raises(HeaderInjectionError):
            SmtpConfig(host="smtp.example.com", local_hostname=f"client{bad}MAIL FROM:<x@y>")


# --- BulkSender, CLI, Django ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_bulk_injection_fails_that_message_only(smtp_server: SMTPTestServer, mode: str) -> None:
    messages = [base_create(subject=f"m{i}") for i in range(4)]
    messages[1]["subject"] = "hi\r\nBcc: victim@example.com"
    messages[2]["recipients"] = ["to@example.com\r\nRCPT TO:<victim@example.com>"]
    result = run_batch(FluxMail(**smtp_server.fluxmail_kwargs()), messages, mode)
    assert (result["sent"], result["failed"]) == (2, 2)
    assert sorted((i, e.code) for i, e in result["errors"]) == [
        (1, "header_injection"),
        (2, "header_injection"),
    ]
    assert all(m.rcpt_tos == ["to@example.com"] for m in smtp_server.messages)


@pytest.mark.parametrize(
    "flag",
    ["--subject", "--recipients", "--cc", "--bcc", "--reply-to", "--sender", "--host"],
)
def test_cli_refuses_cr_lf(smtp_server: SMTPTestServer, flag: str) -> None:
    options = {
        "--subject": "s",
        "--recipients": "to@example.com",
        "--sender": "me@example.com",
    }
    value = {"--host": "127.0.0.1"}.get(flag, options.get(flag, "x@example.com"))
    options[flag] = value + "\r\nRCPT TO:<victim@example.com>"
    args = plain_args(smtp_server, "--body", "b")
    if flag == "--host":
        args[args.index("--host") + 1] = options.pop("--host")
    for name, text in options.items():
        args += [name, text]
    line = assert_one_line_error(run_cli(*args), 2, "header_injection")
    assert "victim" not in line or flag in ("--subject",)
    assert smtp_server.connections == 0


def test_django_refuses_injection_before_connecting(smtp_server: SMTPTestServer) -> None:
    from django.core.mail import BadHeaderError, EmailMessage

    from fluxmail.backends.django import FluxMailBackend

    backend = FluxMailBackend(host=smtp_server.host, port=smtp_server.port)
    cases = [
        EmailMessage("s\r\nBcc: v@example.com", "b", "a@example.com", ["to@example.com"]),
        EmailMessage("s", "b", "a@example.com\r\nRCPT TO:<v@x.org>", ["to@example.com"]),
        EmailMessage("s", "b", "a@example.com", ["to@example.com\nDATA"]),
    ]
    attached = EmailMessage("s", "b", "a@example.com", ["to@example.com"])
    attached.attach("a\r\nb.txt", b"data", "text/plain")
    cases.append(attached)
    for message in cases:
        with pytest.raises((BadHeaderError, HeaderInjectionError, ValueError)):
            backend.send_messages([message])
    with pytest.raises(HeaderInjectionError):
        FluxMailBackend(host=smtp_server.host, local_hostname="client\r\nMAIL FROM:<x@y>")
    assert smtp_server.connections == 0


# --- rule 2: one mailbox per entry; the envelope is exactly the parsed addr-spec ----------

#: (what the user wrote, the envelope address, the display name a reader sees)
ACCEPTED = [
    ('"Doe, John" <john@example.com>', "john@example.com", "Doe, John"),
    ('"evil@attacker.test" <ann@example.com>', "ann@example.com", "evil@attacker.test"),
    ('"x <b@attacker.test>" <ann@example.com>', "ann@example.com", "x <b@attacker.test>"),
    ("Ann.Lee+tag@EXAMPLE.COM", "Ann.Lee+tag@example.com", ""),
    ("user@BÜCHER.example", "user@xn--bcher-kva.example", ""),
    ("user@ｂüｃｈｅｒ。example", "user@xn--bcher-kva.example", ""),  # UTS-46 mapping
    ("user@faß.de", "user@xn--fa-hia.de", ""),  # IDNA 2008, non-transitional
    ("<ann@example.com>", "ann@example.com", ""),
    ("ann@example.test\u200b", "ann@example.test", ""),  # UTS-46 drops the zero-width space
]

REFUSED = [
    '"a@x.test y"@internal.test',  # quoted local part hiding a domain
    "a@b@internal.test",
    "a@x.test (comment)@internal.test",
    "a@x.test(comment)",
    "a@x.test, b@internal.test",
    "a@x.test b@internal.test",
    "<a@x.test> <b@internal.test>",
    "Ann <a@x.test>, Bob <b@internal.test>",
    "team: a@x.test, b@internal.test;",
    "a@[127.0.0.1]",
    "a@127.0.0.1",
    "@relay.test:a@internal.test",
    "a@x..test",
    "a@-x.test",
    ".a@x.test",
    "a@",
    "",
]


@pytest.mark.parametrize("mode", MODES)
def test_envelope_is_exactly_the_parsed_addr_spec(smtp_server: SMTPTestServer, mode: str) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="Me <me@example.com>"))
    for written, envelope, display in ACCEPTED:
        send(mailer, mode, subject="s", recipients=[written], body="b")
        received = smtp_server.messages[-1]
        assert received.rcpt_tos == [envelope], written
        (to,) = received.message["To"].addresses
        assert (to.addr_spec, to.display_name) == (envelope, display)
    assert smtp_server.commands("MAIL") == ["MAIL me@example.com"] * len(ACCEPTED)


@pytest.mark.parametrize("written", REFUSED)
def test_tricky_addresses_are_refused_before_connecting(
    smtp_server: SMTPTestServer, written: str
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    for field in ("recipients", "cc", "bcc", "reply_to", "sender"):
        with pytest.raises(InvalidAddressError):
            mailer.create(**base_create(**{field: written if field == "sender" else [written]}))
    assert smtp_server.connections == 0


def test_bare_string_is_one_address_never_split(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    with pytest.raises(InvalidAddressError):
        mailer.create(**base_create(recipients="a@example.com, b@example.com"))


@pytest.mark.parametrize("mode", MODES)
def test_smtputf8_only_when_offered(make_server: MakeServer, mode: str) -> None:
    without = make_server(smtputf8=False)
    mailer = FluxMail(**without.fluxmail_kwargs(sender="me@example.com"))
    with pytest.raises(SMTPUTF8UnsupportedError):
        send(mailer, mode, subject="s", recipients=["用户@example.com"], body="b")
    assert without.commands("MAIL") == []
    send(mailer, mode, subject="s", recipients=["user@bücher.example"], body="b")
    assert without.messages[0].rcpt_tos == ["user@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in without.messages[0].mail_options
    with_utf8 = make_server(smtputf8=True)
    mailer = FluxMail(**with_utf8.fluxmail_kwargs(sender="me@example.com"))
    send(mailer, mode, subject="s", recipients=["用户@bücher.example"], body="b")
    assert with_utf8.messages[0].rcpt_tos == ["用户@xn--bcher-kva.example"]
    assert "SMTPUTF8" in with_utf8.messages[0].mail_options


def test_cli_and_django_refuse_the_quoted_local_part(smtp_server: SMTPTestServer) -> None:
    from django.core.mail import EmailMessage

    from fluxmail.backends.django import FluxMailBackend

    trick = '"a@x.test y"@internal.test'
    args = plain_args(smtp_server, "--sender", "me@example.com", "--subject", "s", "--body", "b")
    assert_one_line_error(run_cli(*args, "--recipients", trick), 2, "invalid_address")
    backend = FluxMailBackend(host=smtp_server.host, port=smtp_server.port)
    with pytest.raises(InvalidAddressError):
        backend.send_messages([EmailMessage("s", "b", "me@example.com", [trick])])
    assert smtp_server.connections == 0


# --- rule 4: Bcc never in the delivered bytes ---------------------------------------------


def assert_blind(server: SMTPTestServer, hidden: str) -> None:
    for received in server.messages:
        assert hidden in received.rcpt_tos
        assert hidden.encode() not in received.data
        assert received.message["Bcc"] is None


@pytest.mark.parametrize("mode", MODES)
def test_bcc_is_envelope_only_api_and_bulk(smtp_server: SMTPTestServer, mode: str) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    send(mailer, mode, **base_create(bcc=["hidden@example.com"]))
    send(mailer, mode, **base_create(recipients=None, bcc=["hidden@example.com"]))
    run_batch(mailer, [base_create(bcc=["hidden@example.com", "Other <o@example.com>"])], mode)
    assert len(smtp_server.messages) == 3
    assert_blind(smtp_server, "hidden@example.com")
    with pytest.raises(InvalidMessageError):
        mailer.create(**base_create(headers={"Bcc": "hidden@example.com"}))


def test_bcc_is_envelope_only_cli(smtp_server: SMTPTestServer) -> None:
    args = plain_args(smtp_server, "--sender", "me@example.com", "--subject", "s", "--body", "b")
    result = run_cli(*args, "--recipients", "to@example.com", "--bcc", "hidden@example.com")
    assert result.returncode == 0, result.stderr
    assert_blind(smtp_server, "hidden@example.com")


def test_bcc_is_envelope_only_django(smtp_server: SMTPTestServer) -> None:
    from django.core.mail import EmailMessage

    from fluxmail.backends.django import FluxMailBackend

    backend = FluxMailBackend(host=smtp_server.host, port=smtp_server.port)
    message = EmailMessage("s", "b", "me@example.com", ["to@example.com"])
    message.bcc = ["hidden@example.com"]
    assert backend.send_messages([message]) == 1
    assert_blind(smtp_server, "hidden@example.com")
    # Django copies headers={"Bcc": ...} into the message as is; fluxmail refuses it.
    leaky = EmailMessage(
        "s", "b", "me@example.com", ["to@example.com"], headers={"Bcc": "hidden@example.com"}
    )
    with pytest.raises(InvalidMessageError, match="Bcc"):
        backend.send_messages([leaky])
    assert len(smtp_server.messages) == 1


def test_configuration_error_names_are_not_values() -> None:
    with pytest.raises(ConfigurationError):
        FluxMail(host="smtp.example.com", port=0)
