"""FluxMail facade behaviour, end to end against real SMTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fluxmail
from fluxmail import (
    AttachmentNotFoundError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    EmailInstance,
    EmailObject,
    FluxMail,
    FluxMailException,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidMessageError,
    MessageRefusedError,
    NoMessageError,
    OutcomeUnknownError,
    RecipientsRefusedError,
    SendReceipt,
    SendTimeoutError,
    SMTPResponseError,
    TLSRequiredError,
    TLSVerifyError,
)
from servers import PASSWORD, USERNAME, Close, FaultServer, Reply, SMTPTestServer, Stall

SUCCESS = "Email sent successfully via SMTP."
MakeServer = Callable[..., SMTPTestServer]
MakeFault = Callable[..., FaultServer]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def secret_forms(password: str, username: str = USERNAME) -> list[str]:
    """The password and the encodings AUTH would put it in."""
    plain = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
    return [password, base64.b64encode(password.encode()).decode(), plain]


def error_texts(exc: BaseException) -> str:
    """str() and repr() of an error and of everything chained to it."""
    texts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def assert_no_secret(text: str, password: str, username: str = USERNAME) -> None:
    for form in secret_forms(password, username):
        assert form not in text


def message(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "subject": "Hello",
        "recipients": ["friend@example.com"],
        "body": "Hi there!",
    }
    options.update(overrides)
    return options


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("FLUXMAIL_"):
            monkeypatch.delenv(name)
    return monkeypatch


# --- the public surface ---------------------------------------------------------------------

EXPECTED_ALL = [
    "Address",
    "Attachment",
    "AttachmentNotFoundError",
    "AuthenticationError",
    "BulkResult",
    "BulkSender",
    "Composed",
    "ConfigurationError",
    "ConnectError",
    "DKIM",
    "EmailInstance",
    "EmailObject",
    "EmailTemplate",
    "Envelope",
    "FluxMail",
    "FluxMailException",
    "HeaderInjectionError",
    "InvalidAddressError",
    "InvalidMessageError",
    "Invite",
    "Message",
    "MessageRefusedError",
    "MessageTooLargeError",
    "MissingDependencyError",
    "NoMessageError",
    "OutcomeUnknownError",
    "OutlookUnavailableError",
    "ProtocolError",
    "RecipientsRefusedError",
    "SMTPResponseError",
    "SMTPUTF8UnsupportedError",
    "SendReceipt",
    "SendTimeoutError",
    "SenderRefusedError",
    "TLSRequiredError",
    "TLSVerifyError",
    "TemplateError",
    "UnsupportedOperationError",
    "__version__",
]


def test_all_is_pinned() -> None:
    assert sorted(fluxmail.__all__) == EXPECTED_ALL
    assert len(set(fluxmail.__all__)) == len(fluxmail.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_public_name_imports(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from fluxmail import {name}", namespace)
    assert namespace[name] is getattr(fluxmail, name)


def test_every_error_is_a_fluxmail_exception_with_a_code() -> None:
    for name in EXPECTED_ALL:
        obj = getattr(fluxmail, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, FluxMailException), name
            assert obj.code, name
            assert obj.code == obj.code.lower(), name


# --- configuration ---------------------------------------------------------------------------


def test_email_object_is_a_string_enum() -> None:
    assert EmailObject("smtp") == EmailObject.SMTP
    assert EmailObject("outlook") == EmailObject.OUTLOOK
    assert EmailObject.SMTP == "smtp"
    assert FluxMail(object_type=EmailObject.SMTP, host="h").object_type is EmailObject.SMTP
    assert FluxMail(object_type="smtp", host="h").object_type is EmailObject.SMTP


def test_email_instance_is_immutable() -> None:
    relay = EmailInstance(relay="smtp.myrelay.net", domain="mycompany.com")
    assert relay.relay == "smtp.myrelay.net"
    assert relay.domain == "mycompany.com"
    assert EmailInstance("x").domain is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        relay.relay = "evil.example"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        relay.domain = "evil.example"  # type: ignore[misc]
    assert relay == EmailInstance("smtp.myrelay.net", "mycompany.com")
    assert hash(relay) == hash(EmailInstance("smtp.myrelay.net", "mycompany.com"))


def test_email_instance_domain_names_message_id_not_sender(
    smtp_server: SMTPTestServer,
) -> None:
    mailer = FluxMail(
        object_type="smtp",
        host=EmailInstance(relay="127.0.0.1", domain="mycompany.com"),
        port=smtp_server.port,
    )
    with pytest.raises(InvalidAddressError):
        mailer.create(**message())  # the domain never invents a sender
    receipt = mailer.create(**message(sender="me@elsewhere.example")).send()
    msg = smtp_server.messages[0].message
    assert msg["Message-ID"].endswith("@mycompany.com>")
    assert isinstance(receipt, SendReceipt)
    assert receipt.message_id == msg["Message-ID"]
    assert smtp_server.messages[0].mail_from == "me@elsewhere.example"


def test_use_tls_and_use_ssl_together_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail(object_type="smtp", host="smtp.example.com", use_tls=True, use_ssl=True)
    assert info.value.code == "invalid_option"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("object_type", ["fax", "", "SMTPS", 3, None])
def test_unknown_object_type_is_a_configuration_error(object_type: Any) -> None:
    with pytest.raises(ConfigurationError):
        FluxMail(object_type=object_type, host="smtp.example.com")


def test_repr_never_shows_the_password() -> None:
    mailer = FluxMail(
        object_type="smtp", host="smtp.example.com", username="me@example.com", password="pw-x9"
    )
    assert "pw-x9" not in repr(mailer)
    assert "pw-x9" not in repr(mailer.config)
    assert "pw-x9" not in str(mailer)


# --- sender resolution -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctor", "create", "expected"),
    [
        (
            {"username": "user@example.com", "sender": "ctor@example.com"},
            {"sender": "create@example.com"},
            "create@example.com",
        ),
        ({"username": "user@example.com", "sender": "ctor@example.com"}, {}, "ctor@example.com"),
        ({"username": "user@example.com"}, {}, "user@example.com"),
        ({"username": "apikey", "sender": "ctor@example.com"}, {}, "ctor@example.com"),
        ({"username": "apikey"}, {"sender": "Me <create@example.com>"}, "create@example.com"),
    ],
)
def test_sender_resolution_order(
    smtp_server: SMTPTestServer, ctor: dict[str, str], create: dict[str, str], expected: str
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(**ctor))
    mailer.create(**message(**create)).send()
    received = smtp_server.messages[0]
    assert received.mail_from == expected
    assert expected in received.message["From"]


@pytest.mark.parametrize("ctor", [{}, {"username": "apikey"}, {"username": "not-an-address@"}])
def test_no_sender_is_an_error_before_any_connection(
    smtp_server: SMTPTestServer, ctor: dict[str, str]
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(**ctor))
    with pytest.raises(InvalidAddressError) as info:
        mailer.create(**message())
    assert "sender" in str(info.value)
    with pytest.raises(NoMessageError):
        mailer.send()
    assert smtp_server.connections == 0


# --- create() --------------------------------------------------------------------------------


def test_create_returns_self(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    assert mailer.create(**message()) is mailer


def _png(tmp_path: Path) -> str:
    from fluxmail.cli._demo import demo_png

    path = tmp_path / "logo.png"
    path.write_bytes(demo_png(4))
    return str(path)


INVALID_CREATE: list[tuple[str, dict[str, Any], type[FluxMailException], str]] = [
    ("bad recipient", {"recipients": ["not an address"]}, InvalidAddressError, "invalid_address"),
    (
        "two in one entry",
        {"recipients": "a@example.com, b@example.com"},
        InvalidAddressError,
        "invalid_address",
    ),
    ("bad cc", {"cc": ["nobody"]}, InvalidAddressError, "invalid_address"),
    ("bad bcc", {"bcc": ["x@"]}, InvalidAddressError, "invalid_address"),
    ("bad reply_to", {"reply_to": ["@example.com"]}, InvalidAddressError, "invalid_address"),
    ("bad sender", {"sender": "me at example.com"}, InvalidAddressError, "invalid_address"),
    ("no recipients", {"recipients": []}, InvalidAddressError, "invalid_address"),
    (
        "CRLF subject",
        {"subject": "Hi\r\nBcc: evil@example.com"},
        HeaderInjectionError,
        "header_injection",
    ),
    ("LF subject", {"subject": "Hi\nX: y"}, HeaderInjectionError, "header_injection"),
    (
        "CRLF recipient",
        {"recipients": ["a@example.com\r\nRCPT TO:<evil@example.com>"]},
        HeaderInjectionError,
        "header_injection",
    ),
    ("CRLF sender", {"sender": "a@example.com\r\nX: y"}, HeaderInjectionError, "header_injection"),
    ("unknown priority", {"priority": "urgent"}, InvalidMessageError, "invalid_message"),
    (
        "missing attachment",
        {"attachments": ["/no/such/dir/report.pdf"]},
        AttachmentNotFoundError,
        "attachment_not_found",
    ),
    (
        "http unsubscribe",
        {"unsubscribe_url": "http://myapp.com/unsubscribe"},
        InvalidMessageError,
        "invalid_message",
    ),
    (
        "CRLF in_reply_to",
        {"in_reply_to": "<a@b>\r\nBcc: x@y"},
        HeaderInjectionError,
        "header_injection",
    ),
]


@pytest.mark.parametrize(
    ("options", "error", "code"),
    [pytest.param(o, e, c, id=i) for i, o, e, c in INVALID_CREATE],
)
def test_create_validates_before_any_connection(
    smtp_server: SMTPTestServer,
    options: dict[str, Any],
    error: type[FluxMailException],
    code: str,
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    with pytest.raises(error) as info:
        mailer.create(**message(**options))
    assert info.value.code == code
    with pytest.raises(NoMessageError):
        mailer.send()
    assert smtp_server.connections == 0


def test_inline_images_need_html_body(smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    with pytest.raises(InvalidMessageError) as info:
        mailer.create(**message(inline_images={"logo": _png(tmp_path)}))
    assert "html_body" in str(info.value)
    assert smtp_server.connections == 0


def test_missing_attachment_is_also_file_not_found(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    with pytest.raises(FileNotFoundError):
        mailer.create(**message(attachments=["/no/such/file.txt"]))


def test_invalid_create_keeps_the_previous_message(smtp_server: SMTPTestServer) -> None:
    """A failed create() does not leave a half-built message behind."""
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(**message(subject="first"))
    with pytest.raises(InvalidAddressError):
        mailer.create(**message(subject="second", recipients=["bad"]))
    mailer.send()
    assert [m.message["Subject"] for m in smtp_server.messages] == ["first"]


# --- send() and the pending message -------------------------------------------------------------


def test_send_before_create(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    with pytest.raises(NoMessageError) as info:
        mailer.send()
    assert info.value.code == "no_message"
    with pytest.raises(NoMessageError):
        mailer.display()
    with pytest.raises(NoMessageError):
        mailer.send(dry_run=True)
    assert smtp_server.connections == 0


def test_send_returns_the_receipt_and_consumes_the_message(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    result = mailer.create(**message(cc=["cc@example.com"])).send()
    assert result == SUCCESS
    assert isinstance(result, str)
    assert isinstance(result, SendReceipt)
    assert set(result.accepted) == {"friend@example.com", "cc@example.com"}
    assert result.refused == {}
    assert result.message_id == smtp_server.messages[0].message["Message-ID"]
    with pytest.raises(NoMessageError):
        mailer.send()
    assert len(smtp_server.messages) == 1


def test_failed_send_keeps_the_message(make_server: MakeServer) -> None:
    server = make_server(data_reply="554 5.6.0 Message refused")
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(**message(subject="keep me"))
    with pytest.raises(MessageRefusedError) as info:
        mailer.send()
    assert info.value.smtp_code == 554
    server.data_reply = None
    assert mailer.send() == SUCCESS
    assert [m.message["Subject"] for m in server.messages] == ["keep me"]
    with pytest.raises(NoMessageError):
        mailer.send()


def test_dry_run_prints_and_returns_the_preview_without_connecting(
    starttls_server: SMTPTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.csv"
    report.write_text("a,b\n1,2\n")
    mailer = FluxMail(**starttls_server.fluxmail_kwargs())
    mailer.create(
        **message(
            subject="Preview me",
            cc=["cc@example.com"],
            bcc=["hidden@example.com"],
            attachments=[str(report)],
        )
    )
    preview = mailer.send(dry_run=True)
    out = capsys.readouterr().out
    assert preview.strip() in out
    for expected in (
        "Preview me",
        "friend@example.com",
        "cc@example.com",
        "Hi there!",
        "report.csv",
        USERNAME,
    ):
        assert expected in preview
    assert_no_secret(preview + out, PASSWORD)
    assert starttls_server.connections == 0
    # Not consumed: the real send still goes.
    assert mailer.send() == SUCCESS
    assert starttls_server.messages[0].message["Subject"] == "Preview me"


def test_display_on_smtp_prints_the_preview(
    smtp_server: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(**message(subject="Shown"))
    shown = mailer.display()  # printed and returned (fluxmail 0.3.3 returned it)
    out = capsys.readouterr().out
    assert out == shown + "\n"
    assert "Shown" in out
    assert "friend@example.com" in out
    assert "Hi there!" in out
    assert smtp_server.connections == 0


# --- TLS, AUTH and their failures ---------------------------------------------------------------


def test_starttls_and_auth(starttls_server: SMTPTestServer) -> None:
    FluxMail(**starttls_server.fluxmail_kwargs()).create(**message()).send()
    received = starttls_server.messages[0]
    assert received.tls
    assert received.auth_user == USERNAME
    assert received.mail_from == USERNAME


def test_implicit_tls(ssl_server: SMTPTestServer) -> None:
    FluxMail(**ssl_server.fluxmail_kwargs()).create(**message()).send()
    assert ssl_server.messages[0].tls
    assert ssl_server.messages[0].auth_user == USERNAME


def test_wrong_password_is_not_retried(starttls_server: SMTPTestServer) -> None:
    mailer = FluxMail(
        **starttls_server.fluxmail_kwargs(
            password="wrong-pa55word", max_retries=3, retry_delay=0.01
        )
    )
    with pytest.raises(AuthenticationError) as info:
        mailer.create(**message()).send()
    assert info.value.code == "authentication_failed"
    assert info.value.smtp_code == 535
    assert len(starttls_server.commands("AUTH")) == 1
    assert len(starttls_server.commands("EHLO")) == 2  # one session: EHLO, STARTTLS, EHLO
    assert starttls_server.commands("MAIL") == []
    assert_no_secret(error_texts(info.value), "wrong-pa55word")


def test_untrusted_certificate(untrusted_server: SMTPTestServer) -> None:
    mailer = FluxMail(**untrusted_server.fluxmail_kwargs(sender="me@example.com", max_retries=2))
    with pytest.raises(TLSVerifyError) as info:
        mailer.create(**message()).send()
    assert info.value.code == "tls_verify_failed"
    assert info.value.__cause__ is not None
    assert untrusted_server.commands("MAIL") == []
    assert untrusted_server.connections == 1  # not retried


def test_untrusted_certificate_with_default_context(
    untrusted_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ssl_context: the system's default trust store does not know the test CAs."""
    assert untrusted_server.ca_pem is not None
    monkeypatch.setenv("SSL_CERT_FILE", untrusted_server.ca_pem)  # not the CA it uses
    mailer = FluxMail(
        object_type="smtp",
        host="localhost",
        port=untrusted_server.port,
        use_tls=True,
        sender="me@example.com",
    )
    with pytest.raises(TLSVerifyError):
        mailer.create(**message()).send()


def test_starttls_missing_is_tls_required(make_fault_server: MakeFault) -> None:
    server = make_fault_server(auth_mechanisms=("PLAIN", "LOGIN"))  # no STARTTLS offered
    mailer = FluxMail(
        **server.fluxmail_kwargs(
            use_tls=True, username=USERNAME, password=PASSWORD, max_retries=2, retry_delay=0.01
        )
    )
    with pytest.raises(TLSRequiredError) as info:
        mailer.create(**message()).send()
    assert info.value.code == "tls_required"
    verbs = server.verbs()
    assert "AUTH" not in verbs
    assert "MAIL" not in verbs
    assert "RCPT" not in verbs
    assert len(server.sessions) == 1
    assert_no_secret(error_texts(info.value) + "\n".join(server.commands), PASSWORD)


def test_starttls_refused_is_tls_required(make_fault_server: MakeFault) -> None:
    server = make_fault_server(
        {"STARTTLS": Reply("454 4.7.0 TLS not available")},
        capabilities=("PIPELINING", "STARTTLS", "AUTH PLAIN"),
    )
    mailer = FluxMail(**server.fluxmail_kwargs(use_tls=True, username=USERNAME, password=PASSWORD))
    with pytest.raises(TLSRequiredError):
        mailer.create(**message()).send()
    assert "AUTH" not in server.verbs()
    assert "MAIL" not in server.verbs()


def test_auth_without_tls_is_refused_unless_allowed(make_server: MakeServer) -> None:
    server = make_server(auth=True)  # plain SMTP that wants AUTH
    mailer = FluxMail(**server.fluxmail_kwargs())
    with pytest.raises(TLSRequiredError):
        mailer.create(**message()).send()
    assert server.commands("AUTH") == []
    insecure = FluxMail(**server.fluxmail_kwargs(allow_insecure_auth=True))
    insecure.create(**message()).send()
    assert server.messages[0].auth_user == USERNAME


# --- retries -------------------------------------------------------------------------------------


def test_451_at_data_is_retried_and_delivered_once(make_fault_server: MakeFault) -> None:
    attempts = itertools.count(1)
    server = make_fault_server(
        {"DATA": lambda s: Reply("451 4.3.0 Try again later") if next(attempts) <= 2 else None}
    )
    mailer = FluxMail(
        **server.fluxmail_kwargs(sender="me@example.com", max_retries=3, retry_delay=0.01)
    )
    assert mailer.create(**message(subject="once")).send() == SUCCESS
    assert [m.message["Subject"] for m in server.messages] == ["once"]
    assert server.verbs().count("DATA") == 3
    assert len(server.received) == 1


def test_550_is_not_retried(make_server: MakeServer) -> None:
    server = make_server(data_reply="550 5.7.1 No thanks")
    mailer = FluxMail(
        **server.fluxmail_kwargs(sender="me@example.com", max_retries=3, retry_delay=0.01)
    )
    with pytest.raises(MessageRefusedError) as info:
        mailer.create(**message()).send()
    assert info.value.smtp_code == 550
    assert info.value.enhanced_code == "5.7.1"
    assert info.value.transient is False
    assert len(server.refused_data) == 1
    assert server.connections == 1


def test_550_recipient_is_not_retried(make_server: MakeServer) -> None:
    server = make_server(reject_rcpt={"friend@example.com": 550})
    mailer = FluxMail(
        **server.fluxmail_kwargs(sender="me@example.com", max_retries=3, retry_delay=0.01)
    )
    with pytest.raises(RecipientsRefusedError) as info:
        mailer.create(**message()).send()
    assert set(info.value.refused) == {"friend@example.com"}
    assert info.value.refused["friend@example.com"][0] == 550
    assert len(server.commands("RCPT")) == 1
    assert server.messages == []


def test_exhausted_retries_raise_the_last_error(make_fault_server: MakeFault) -> None:
    attempts = itertools.count(1)
    codes = {1: 451, 2: 452, 3: 450}

    def data(session: Any) -> Reply:
        n = next(attempts)
        return Reply(f"{codes[n]} 4.3.0 attempt {n}")

    server = make_fault_server({"DATA": data})
    mailer = FluxMail(
        **server.fluxmail_kwargs(sender="me@example.com", max_retries=2, retry_delay=0.01)
    )
    with pytest.raises(SMTPResponseError) as info:
        mailer.create(**message()).send()
    assert info.value.smtp_code == 450
    assert "attempt 3" in str(info.value)
    assert info.value.transient
    assert len(server.sessions) == 3
    assert server.received == []
    assert mailer.message is not None  # kept for another try


def test_exhausted_retries_keep_the_low_level_cause() -> None:
    mailer = FluxMail(
        object_type="smtp",
        host="127.0.0.1",
        port=closed_port(),
        sender="me@example.com",
        max_retries=2,
        retry_delay=0.01,
    )
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        mailer.create(**message()).send()
    assert time.monotonic() - started < 5
    assert info.value.code == "connection_failed"
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, OSError)


def test_retry_delay_is_respected(make_fault_server: MakeFault) -> None:
    attempts = itertools.count(1)
    server = make_fault_server(
        {"DATA": lambda s: Reply("451 4.3.0 later") if next(attempts) <= 2 else None}
    )
    mailer = FluxMail(
        **server.fluxmail_kwargs(sender="me@example.com", max_retries=2, retry_delay=0.2)
    )
    started = time.monotonic()
    mailer.create(**message()).send()
    # 0.2 s then 0.4 s (±10 % jitter)
    assert time.monotonic() - started >= 0.5


# --- timeouts, stalls, unknown outcomes ---------------------------------------------------------


@pytest.mark.parametrize("stage", ["greeting", "EHLO", "MAIL", "DATA"])
def test_stalled_server_times_out(make_fault_server: MakeFault, stage: str) -> None:
    server = make_fault_server({stage: Stall()})
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com", timeout=1))
    mailer.create(**message())
    started = time.monotonic()
    with pytest.raises(SendTimeoutError) as info:
        mailer.send()
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, elapsed
    assert info.value.code == "timeout"
    assert isinstance(info.value, TimeoutError)
    assert server.received == []


def test_trickling_server_times_out(make_fault_server: MakeFault) -> None:
    from servers import Trickle

    server = make_fault_server({"greeting": Trickle(b"220 " + b"x" * 100 + b"\r\n", 0.1)})
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com", timeout=1))
    mailer.create(**message())
    started = time.monotonic()
    with pytest.raises(SendTimeoutError):
        mailer.send()
    assert time.monotonic() - started < 2.5


def test_stall_after_final_dot_is_outcome_unknown(make_fault_server: MakeFault) -> None:
    server = make_fault_server({"DOT": Stall()})
    mailer = FluxMail(
        **server.fluxmail_kwargs(
            sender="me@example.com", timeout=1, max_retries=3, retry_delay=0.01
        )
    )
    with pytest.raises(OutcomeUnknownError) as info:
        mailer.create(**message()).send()
    assert info.value.code == "outcome_unknown"
    assert len(server.received) == 1  # not resent
    assert len(server.sessions) == 1


def test_drop_after_final_dot_is_outcome_unknown(make_fault_server: MakeFault) -> None:
    server = make_fault_server({"DOT": Close()})
    mailer = FluxMail(
        **server.fluxmail_kwargs(sender="me@example.com", max_retries=3, retry_delay=0.01)
    )
    with pytest.raises(OutcomeUnknownError):
        mailer.create(**message()).send()
    assert len(server.received) == 1


# --- connection reuse ------------------------------------------------------------------------


def test_with_block_uses_one_session_and_quits(make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    with FluxMail(**server.fluxmail_kwargs(sender="me@example.com")) as mailer:
        for i in range(3):
            mailer.create(**message(subject=f"msg {i}")).send()
        assert "QUIT" not in server.verbs()
    assert len(server.sessions) == 1
    assert [m.message["Subject"] for m in server.messages] == ["msg 0", "msg 1", "msg 2"]
    deadline = time.monotonic() + 2
    while "QUIT" not in server.verbs() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.verbs()[-1] == "QUIT"


@pytest.mark.parametrize(
    "script",
    [
        pytest.param({"DOT": Reply("250 2.0.0 OK queued", close=True)}, id="closed-after-250"),
        pytest.param(
            {
                "MAIL": lambda s: (
                    Reply("421 4.4.2 Idle timeout", close=True) if s.messages else None
                )
            },
            id="421-on-next-mail",
        ),
        pytest.param({"MAIL": lambda s: Close(reset=True) if s.messages else None}, id="reset"),
    ],
)
def test_with_block_reconnects_when_the_server_closed_the_idle_connection(
    make_fault_server: MakeFault, script: dict[str, Any]
) -> None:
    server = make_fault_server(script)
    with FluxMail(**server.fluxmail_kwargs(sender="me@example.com", timeout=5)) as mailer:
        for i in range(3):
            assert mailer.create(**message(subject=f"msg {i}")).send() == SUCCESS
    subjects = [m.message["Subject"] for m in server.received]
    assert subjects == ["msg 0", "msg 1", "msg 2"]
    assert len(server.sessions) >= 3


@pytest.mark.parametrize(
    "script",
    [
        pytest.param({"DOT": Reply("250 2.0.0 OK queued", close=True)}, id="closed-after-250"),
        pytest.param(
            {"MAIL": lambda s: Reply("421 4.4.2 Idle", close=True) if s.messages else None},
            id="421-on-next-mail",
        ),
    ],
)
def test_async_with_block_reconnects_when_the_server_closed_the_idle_connection(
    make_fault_server: MakeFault, script: dict[str, Any]
) -> None:
    server = make_fault_server(script)

    async def main() -> None:
        async with FluxMail(**server.fluxmail_kwargs(sender="me@example.com", timeout=5)) as m:
            for i in range(3):
                m.create(**message(subject=f"msg {i}"))
                assert await m.send_async() == SUCCESS

    asyncio.run(main())
    assert [m.message["Subject"] for m in server.received] == ["msg 0", "msg 1", "msg 2"]


def test_with_block_does_not_resend_on_a_fresh_421(make_fault_server: MakeFault) -> None:
    """Reconnecting is only for a *reused* connection; a 421 on a fresh one is an error."""
    server = make_fault_server({"MAIL": Reply("421 4.3.2 Go away", close=True)})
    with (
        FluxMail(**server.fluxmail_kwargs(sender="me@example.com")) as mailer,
        pytest.raises(SMTPResponseError) as info,
    ):
        mailer.create(**message()).send()
    assert info.value.smtp_code == 421
    assert len(server.sessions) == 1


def test_with_block_after_server_stop() -> None:
    """The held connection dies with its server: reconnecting fails cleanly."""
    server = SMTPTestServer().start()
    running = True
    try:
        with FluxMail(**server.fluxmail_kwargs(sender="me@example.com", timeout=2)) as mailer:
            mailer.create(**message()).send()
            server.stop()  # not idempotent: stop it once only
            running = False
            with pytest.raises(ConnectError):
                mailer.create(**message(subject="second")).send()
            assert mailer.message is not None  # kept for a later try
    finally:
        if running:
            server.stop()
    assert len(server.messages) == 1


def test_async_with_block_shares_one_connection(smtp_server: SMTPTestServer) -> None:
    async def main() -> list[str]:
        mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))

        async def one(i: int) -> str:
            mailer.create(**message(subject=f"msg {i}", recipients=[f"u{i}@example.com"]))
            return await mailer.send_async()

        async with mailer:
            return await asyncio.gather(*(one(i) for i in range(20)))

    results = asyncio.run(main())
    assert results == [SUCCESS] * 20
    assert smtp_server.connections == 1
    got = {m.rcpt_tos[0]: m.message["Subject"] for m in smtp_server.messages}
    assert got == {f"u{i}@example.com": f"msg {i}" for i in range(20)}


# --- recipients partly refused -----------------------------------------------------------------


def test_partly_refused_recipients(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(reject_rcpt={"bad@example.com": 550})
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(**message(recipients=["good@example.com", "bad@example.com"]))
    with caplog.at_level(logging.WARNING, logger="fluxmail"):
        receipt = mailer.send()
    assert receipt == SUCCESS
    assert isinstance(receipt, SendReceipt)
    assert set(receipt.refused) == {"bad@example.com"}
    assert receipt.refused["bad@example.com"][0] == 550
    assert "good@example.com" in receipt.accepted
    assert server.messages[0].rcpt_tos == ["good@example.com"]
    assert "bad@example.com" in caplog.text


# --- concurrency -----------------------------------------------------------------------------


def test_200_concurrent_send_async_on_one_mailer(smtp_server: SMTPTestServer) -> None:
    count = 200

    async def main() -> list[str]:
        mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com", timeout=20))

        async def notify(i: int) -> str:
            mailer.create(
                subject=f"subject {i}", recipients=[f"user{i}@example.com"], body=f"body {i}"
            )
            return await mailer.send_async()

        return await asyncio.gather(*(notify(i) for i in range(count)))

    receipts = asyncio.run(main())
    assert receipts == [SUCCESS] * count
    messages = smtp_server.messages
    assert len(messages) == count
    ids = {m.message["Message-ID"] for m in messages}
    assert len(ids) == count
    assert {r.message_id for r in receipts if isinstance(r, SendReceipt)} == ids
    for m in messages:
        (rcpt,) = m.rcpt_tos
        i = rcpt.removeprefix("user").removesuffix("@example.com")
        assert m.message["Subject"] == f"subject {i}"
        assert m.message["To"] == rcpt
        assert m.message.get_content().strip() == f"body {i}"


def test_threads_share_one_mailer(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            mailer.create(subject=f"t{i}", recipients=[f"t{i}@example.com"], body="x").send()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    got = {m.rcpt_tos[0]: m.message["Subject"] for m in smtp_server.messages}
    assert got == {f"t{i}@example.com": f"t{i}" for i in range(16)}


# --- from_env -----------------------------------------------------------------------------------


def test_from_env_defaults_and_overrides(
    clean_env: pytest.MonkeyPatch, smtp_server: SMTPTestServer
) -> None:
    clean_env.setenv("FLUXMAIL_HOST", "127.0.0.1")
    clean_env.setenv("FLUXMAIL_PORT", str(smtp_server.port))
    clean_env.setenv("FLUXMAIL_SENDER", "env@example.com")
    clean_env.setenv("FLUXMAIL_TIMEOUT", "7.5")
    mailer = FluxMail.from_env(max_retries=2)
    assert mailer.config.timeout == 7.5
    assert mailer.max_retries == 2
    assert mailer.config.use_tls is False
    assert mailer.config.use_ssl is False
    mailer.create(**message()).send()
    assert smtp_server.messages[0].mail_from == "env@example.com"


def test_from_env_default_port(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLUXMAIL_HOST", "smtp.example.com")
    mailer = FluxMail.from_env()
    assert mailer.config.port == 25
    assert mailer.config.timeout == 30
    assert mailer.max_retries == 0
    assert mailer.retry_delay == 1.0


@pytest.mark.parametrize("value", ["true", "1", "yes", "YES", "On", " True "])
def test_from_env_true_values(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("FLUXMAIL_HOST", "smtp.example.com")
    clean_env.setenv("FLUXMAIL_TLS", value)
    assert FluxMail.from_env().config.use_tls is True


def test_from_env_missing_host(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail.from_env()
    assert "FLUXMAIL_HOST" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLUXMAIL_PORT", "abc"),
        ("FLUXMAIL_TLS", "maybe"),
        ("FLUXMAIL_SSL", "sometimes"),
        ("FLUXMAIL_TIMEOUT", "soon"),
        ("FLUXMAIL_MAX_RETRIES", "many"),
        ("FLUXMAIL_RETRY_DELAY", "1s"),
    ],
)
def test_from_env_unparsable_value_names_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv("FLUXMAIL_HOST", "smtp.example.com")
    clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        FluxMail.from_env()
    assert name in str(info.value)
    assert value not in str(info.value)


@pytest.mark.parametrize("password", ["hunter2\r\nMAIL FROM:<x@y>", "nul\0pass-w0rd"])
def test_from_env_bad_password_is_never_echoed(
    clean_env: pytest.MonkeyPatch, password: str
) -> None:
    clean_env.setenv("FLUXMAIL_HOST", "smtp.example.com")
    clean_env.setenv("FLUXMAIL_USERNAME", "me@example.com")
    if "\0" in password:  # the environment cannot hold NUL; use the mapping form
        with pytest.raises(HeaderInjectionError) as info:
            FluxMail.from_env(
                {
                    "FLUXMAIL_HOST": "smtp.example.com",
                    "FLUXMAIL_USERNAME": "me@example.com",
                    "FLUXMAIL_PASSWORD": password,
                }
            )
    else:
        clean_env.setenv("FLUXMAIL_PASSWORD", password)
        with pytest.raises(HeaderInjectionError) as info:
            FluxMail.from_env()
    assert info.value.code == "header_injection"
    text = error_texts(info.value)
    for fragment in ("hunter2", "pass-w0rd"):
        assert fragment not in text


def test_from_env_password_without_username_is_not_echoed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLUXMAIL_HOST", "smtp.example.com")
    clean_env.setenv("FLUXMAIL_PASSWORD", "only-the-pa55")
    with pytest.raises(ConfigurationError) as info:
        FluxMail.from_env()
    assert "only-the-pa55" not in error_texts(info.value)


def test_from_env_unknown_type(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLUXMAIL_TYPE", "carrier-pigeon")
    clean_env.setenv("FLUXMAIL_HOST", "smtp.example.com")
    with pytest.raises(ConfigurationError):
        FluxMail.from_env()


# --- secrets never leak ---------------------------------------------------------------------


@pytest.fixture
def failures(
    make_server: MakeServer, make_fault_server: MakeFault
) -> Iterator[Callable[[str], list[FluxMailException]]]:
    """Provoke one error of each kind with a given password."""

    def provoke(password: str) -> list[FluxMailException]:
        caught: list[FluxMailException] = []
        tls = make_server(tls="starttls", auth=True)
        untrusted = make_server(tls="starttls", untrusted=True)
        plain = make_fault_server(auth_mechanisms=("PLAIN",))
        stall = make_fault_server({"greeting": Stall()})
        attempts: list[dict[str, Any]] = [
            tls.fluxmail_kwargs(password=password),
            untrusted.fluxmail_kwargs(username=USERNAME, password=password),
            plain.fluxmail_kwargs(use_tls=True, username=USERNAME, password=password),
            plain.fluxmail_kwargs(username=USERNAME, password=password),  # AUTH needs TLS
            stall.fluxmail_kwargs(username=USERNAME, password=password, timeout=0.5),
            {
                "object_type": "smtp",
                "host": "127.0.0.1",
                "port": closed_port(),
                "username": USERNAME,
                "password": password,
            },
        ]
        for kwargs in attempts:
            try:
                FluxMail(**kwargs).create(**message()).send()
            except FluxMailException as exc:
                caught.append(exc)
        try:
            FluxMail(
                object_type="smtp",
                host="h",
                username="u@x.example",
                password=password,
                use_tls=True,
                use_ssl=True,
            )
        except FluxMailException as exc:
            caught.append(exc)
        return caught

    return provoke


def test_errors_never_contain_the_password(
    failures: Callable[[str], list[FluxMailException]],
) -> None:
    password = "Zq9-very-secret-Xy7"
    caught = failures(password)
    codes = {exc.code for exc in caught}
    assert {
        "authentication_failed",
        "tls_verify_failed",
        "tls_required",
        "timeout",
        "connection_failed",
        "invalid_option",
    } <= codes
    for exc in caught:
        assert_no_secret(error_texts(exc), password)


# --- option values that cannot work --------------------------------------------------------


@pytest.mark.parametrize("timeout", [float("inf"), 1e12, float("nan"), 0, -1, "30", True])
def test_unusable_timeout_is_a_configuration_error(timeout: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail(object_type="smtp", host="smtp.example.com", timeout=timeout)
    assert "timeout" in str(info.value)


def test_large_but_sane_timeout_sends(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com", timeout=86400))
    assert mailer.create(**message()).send() == SUCCESS


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("retry_delay", float("nan")),
        ("retry_delay", float("inf")),
        ("retry_delay", -1),
        ("retry_delay", "1"),
        ("max_retries", -1),
        ("max_retries", 1.5),
        ("max_retries", True),
    ],
)
def test_unusable_retry_option_is_a_configuration_error(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail(object_type="smtp", host="smtp.example.com", **{option: value})
    assert option in str(info.value)


def test_async_dry_run_does_not_consume_the_message(
    smtp_server: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(**message(subject="async preview"))

    async def main() -> tuple[str, str]:
        preview = await mailer.send_async(dry_run=True)
        return preview, await mailer.send_async()

    preview, result = asyncio.run(main())
    assert "async preview" in preview
    assert "async preview" in capsys.readouterr().out
    assert result == SUCCESS
    assert [m.message["Subject"] for m in smtp_server.messages] == ["async preview"]
    with pytest.raises(NoMessageError):
        mailer.send_async()


# --- hostile or unusual servers seen through the facade -------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_a_server_echoing_the_credentials_does_not_leak_them(
    make_fault_server: MakeFault, mechanism: str
) -> None:
    """Errors carry the server's reply; a reply that repeats what we sent must not put
    the password (or its base64) into the error."""

    def echo(session: Any) -> Reply:
        return Reply(f"535 5.7.8 rejected: {session.commands[-1]}")

    script = {"AUTH": echo} if mechanism == "PLAIN" else {}
    server = make_fault_server(script, tls=True, auth_mechanisms=(mechanism,))
    password = "Echo-pa55-Xq"
    mailer = FluxMail(**server.fluxmail_kwargs(username=USERNAME, password=password))
    with pytest.raises(AuthenticationError) as info:
        mailer.create(**message()).send()
    assert_no_secret(error_texts(info.value), password)


def test_test_connection_failures(
    starttls_server: SMTPTestServer,
    untrusted_server: SMTPTestServer,
    make_fault_server: MakeFault,
) -> None:
    codes = []
    stalled = make_fault_server({"greeting": Stall()})
    for kwargs in (
        starttls_server.fluxmail_kwargs(password="not-the-pa55"),
        untrusted_server.fluxmail_kwargs(),
        stalled.fluxmail_kwargs(timeout=1),
    ):
        with pytest.raises(FluxMailException) as info:
            FluxMail(**kwargs).test_connection()
        codes.append(info.value.code)
        assert_no_secret(error_texts(info.value), "not-the-pa55")
    assert codes == ["authentication_failed", "tls_verify_failed", "timeout"]
    assert starttls_server.commands("MAIL") == []


def test_too_many_recipients_are_sent_in_another_transaction(make_server: MakeServer) -> None:
    """A 452 4.5.3 for the recipients over the server's limit is not a refusal."""
    server = make_server(max_recipients=2)
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com"))
    rcpts = [f"r{i}@example.com" for i in range(5)]
    receipt = mailer.create(**message(recipients=rcpts)).send()
    assert receipt == SUCCESS
    assert isinstance(receipt, SendReceipt)
    assert receipt.refused == {}
    delivered = sorted(r for m in server.messages for r in m.rcpt_tos)
    assert delivered == rcpts
    assert len({m.message["Message-ID"] for m in server.messages}) == 1  # one message


def test_duplicate_recipients_get_one_copy(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(
        **message(
            recipients=["a@example.com", "A@example.com"],
            cc=["a@example.com"],
            bcc=["a@example.com"],
        )
    ).send()
    assert len(smtp_server.messages[0].rcpt_tos) == 1


def test_bcc_only_message(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(**message(recipients=[], bcc=["hidden@example.com"])).send()
    received = smtp_server.messages[0]
    assert received.rcpt_tos == ["hidden@example.com"]
    assert b"hidden@example.com" not in received.data
    assert "Bcc" not in received.message


# --- the automatic text part ------------------------------------------------------------------


def test_html_gets_an_automatic_text_alternative(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    html = '<h1>Report</h1><p>See <a href="https://example.com/r">the report</a>.</p>'
    mailer.create(**message(body=html, html_body=True)).send()
    msg = smtp_server.messages[0].message
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    plain = msg.get_body(preferencelist=("plain",))
    assert plain is not None
    text = plain.get_content()
    assert "Report" in text
    assert "https://example.com/r" in text
    assert "<h1>" not in text


def test_auto_text_false_sends_html_alone(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(**message(body="<p>only html</p>", html_body=True, auto_text=False)).send()
    msg = smtp_server.messages[0].message
    assert msg.get_content_type() == "text/html"


def test_explicit_plain_body_wins_over_auto_text(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(**message(body="<p>html</p>", html_body=True, plain_body="mine")).send()
    plain = smtp_server.messages[0].message.get_body(preferencelist=("plain",))
    assert plain is not None
    assert plain.get_content().strip() == "mine"
