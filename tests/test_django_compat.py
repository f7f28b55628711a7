"""What a Django user expects of an SMTP backend, beyond the contract in test_django_backend:
errors catchable as ``smtplib.SMTPException`` (and still fluxmail's), addresses without a
domain, Django's messages, the ``connection`` attribute. Real servers on 127.0.0.1."""

from __future__ import annotations

import pickle
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.mail import EmailMessage, get_connection, send_mail
from django.test.utils import override_settings

from django_helpers import email_settings
from fluxmail.backends._django_errors import as_django_error
from fluxmail.backends.django import FluxMailBackend, OpenConnection, django_envelope
from fluxmail.errors import (
    AuthenticationError,
    ConnectError,
    FluxMailException,
    HeaderInjectionError,
    InvalidAddressError,
    MessageRefusedError,
    MessageTooLargeError,
    OutcomeUnknownError,
    RecipientsRefusedError,
    SenderRefusedError,
    TLSRequiredError,
)
from helpers import closed_port
from servers import SMTPTestServer, TLSMaterial


def test_refused_recipient_is_an_smtp_exception(
    make_server: Callable[..., SMTPTestServer],
) -> None:
    server = make_server(reject_rcpt={"nobody@example.com": 550})
    with email_settings(server), pytest.raises(smtplib.SMTPException) as info:
        send_mail("S", "B", "from@example.com", ["nobody@example.com"])
    error = info.value
    assert isinstance(error, smtplib.SMTPRecipientsRefused)
    assert isinstance(error, RecipientsRefusedError)
    assert isinstance(error, FluxMailException)
    assert error.code == "recipients_refused"
    assert error.recipients["nobody@example.com"][0] == 550
    assert isinstance(error.recipients["nobody@example.com"][1], bytes)
    assert error.refused["nobody@example.com"][0] == 550
    assert server.messages == []


def test_failed_login_is_an_smtp_authentication_error(
    make_server: Callable[..., SMTPTestServer],
) -> None:
    server = make_server(tls="starttls", auth=True)
    with (
        email_settings(server, EMAIL_HOST_PASSWORD="wrong"),
        pytest.raises(smtplib.SMTPAuthenticationError) as info,
    ):
        send_mail("S", "B", "from@example.com", ["to@example.com"])
    assert isinstance(info.value, AuthenticationError)
    assert info.value.code == "authentication_failed"
    assert info.value.smtp_code == 535
    assert "wrong" not in str(info.value)
    assert server.messages == []


def test_refused_sender_and_message(make_server: Callable[..., SMTPTestServer]) -> None:
    sender = make_server(reject_mail=553)
    with email_settings(sender), pytest.raises(smtplib.SMTPSenderRefused) as info:
        send_mail("S", "B", "from@example.com", ["to@example.com"])
    assert isinstance(info.value, SenderRefusedError)
    assert info.value.smtp_code == 553
    dot = make_server(data_reply=554)
    with email_settings(dot), pytest.raises(smtplib.SMTPDataError) as data_info:
        send_mail("S", "B", "from@example.com", ["to@example.com"])
    assert isinstance(data_info.value, MessageRefusedError)
    assert data_info.value.code == "message_refused"


def test_unreachable_server_is_connection_error_and_smtp_exception() -> None:
    with (
        override_settings(EMAIL_HOST="127.0.0.1", EMAIL_PORT=closed_port()),
        pytest.raises(ConnectionError) as info,
    ):
        send_mail("S", "B", "from@example.com", ["to@example.com"])
    assert isinstance(info.value, smtplib.SMTPException)
    assert isinstance(info.value, ConnectError)
    assert info.value.code == "connection_failed"


def test_tls_failures(
    make_server: Callable[..., SMTPTestServer],
    tls_ca: TLSMaterial,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # These connections use the engine's default context, built once per process: build
    # it trusting the test CA, as every test that may build it does (test_hardening_tls).
    monkeypatch.setenv("SSL_CERT_FILE", tls_ca.ca_pem)
    plain = make_server()
    with email_settings(plain, EMAIL_USE_SSL=True):  # implicit TLS on a plaintext port
        backend = get_connection()
        with pytest.raises(ssl.SSLError) as handshake:
            backend.open()
        assert backend.connection is None
    assert isinstance(handshake.value, smtplib.SMTPException)
    assert handshake.value.code == "tls_required"
    no_starttls = email_settings(plain, EMAIL_USE_TLS=True)
    with no_starttls, pytest.raises(smtplib.SMTPNotSupportedError) as starttls:
        get_connection().open()
    assert str(starttls.value).startswith("STARTTLS extension not supported by server.")
    assert isinstance(starttls.value, TLSRequiredError)
    untrusted = make_server(tls="starttls", untrusted=True)
    with (
        email_settings(untrusted, EMAIL_FLUXMAIL_SSL_CONTEXT=None),
        pytest.raises(ssl.SSLCertVerificationError) as verify,
    ):
        get_connection().open()
    assert verify.value.code == "tls_verify_failed"
    assert isinstance(verify.value, smtplib.SMTPException)


@pytest.mark.parametrize(
    "error",
    [
        RecipientsRefusedError("refused", smtp_code=550, refused={"a@x.test": (550, "no")}),
        SenderRefusedError("refused", smtp_code=553, server_message="5.1.8 bad sender"),
        MessageTooLargeError("too large", smtp_code=552),
        AuthenticationError("refused", smtp_code=535),
        ConnectError("refused"),
        OutcomeUnknownError("lost after the dot", message_id="<1@x.test>"),
        TLSRequiredError("no STARTTLS"),
    ],
)
def test_django_errors_pickle_and_keep_everything(error: FluxMailException) -> None:
    twin = as_django_error(error)
    assert isinstance(twin, smtplib.SMTPException)
    assert isinstance(twin, type(error))
    copy = pickle.loads(pickle.dumps(twin))
    assert type(copy) is type(twin)
    assert copy.code == error.code
    assert str(copy) == str(error)
    assert copy.__dict__ == twin.__dict__
    assert as_django_error(twin) is twin


def test_library_errors_are_untouched() -> None:
    plain = InvalidAddressError("bad")
    assert as_django_error(plain) is plain
    assert not isinstance(RecipientsRefusedError("x", smtp_code=550), smtplib.SMTPException)


def test_address_without_domain(make_server: Callable[..., SMTPTestServer]) -> None:
    server = make_server()
    with email_settings(server):
        assert send_mail("S", "B", "tester", ["django", "Ann <ann>"]) == 1
    [received] = server.messages
    assert received.mail_from == "tester"
    assert received.rcpt_tos == ["django", "ann"]
    # Django accepts addresses without a domain (Django #15042): the parser notes it
    no_domain = "addr-spec local part with no domain"
    message = received.parsed(allowed={("From", no_domain), ("To", no_domain)})
    assert message["To"] == "django, Ann <ann>"


@pytest.mark.parametrize(
    "address",
    ["a b", '"quoted"', "tést", "a..b", ".a", "x" * 65, "<>", "a,b", "to@", "@x.test"],
)
def test_invalid_addresses_are_refused_in_djangos_words(address: str) -> None:
    with pytest.raises(ValueError, match=r"^Invalid address") as info:
        django_envelope("from@example.com", [address])
    assert isinstance(info.value, InvalidAddressError)


def test_newline_in_an_address_stays_header_injection() -> None:
    for address in ("to\nevil@example.com", "tester\r\n"):
        with pytest.raises(HeaderInjectionError, match=r"^Invalid address"):
            django_envelope("from@example.com", [address])


def test_invalid_address_fails_before_connecting() -> None:
    with (
        override_settings(EMAIL_HOST="127.0.0.1", EMAIL_PORT=closed_port()),
        pytest.raises(ValueError, match="Invalid address"),
    ):
        get_connection().send_messages([EmailMessage(bcc=["to@other.com@example.com"])])


def test_mutually_exclusive_message_is_djangos() -> None:
    django_words = (
        "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set one of those "
        "settings to True."
    )
    with pytest.raises(ValueError, match="^" + django_words.replace(".", r"\.")):
        FluxMailBackend(use_tls=True, use_ssl=True)


def test_connection_attribute(make_server: Callable[..., SMTPTestServer]) -> None:
    server = make_server()
    with email_settings(server, EMAIL_TIMEOUT=7):
        backend = get_connection()
    assert backend.connection is None
    assert backend.open() is True
    assert backend.connection == OpenConnection(server.host, server.port, 7)
    assert backend.open() is False
    backend.close()
    assert backend.connection is None
    assert server.connections == 1


def test_certificate_files_are_read_when_the_connection_opens(tmp_path: Path) -> None:
    missing = str(tmp_path / "not-yet.pem")
    backend = FluxMailBackend(host="127.0.0.1", port=closed_port(), ssl_certfile=missing)
    assert backend.ssl_certfile == missing
    with pytest.raises(ValueError, match="cannot load the client certificate"):
        backend.open()
    assert backend.connection is None
