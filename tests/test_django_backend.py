"""FluxMailBackend with real Django and real SMTP servers (tests/servers.py).

Django is configured once per process (conftest.py, from ``tests/django_settings.py``);
each test points
the EMAIL_* settings at its own server with ``override_settings`` or passes arguments to
``get_connection()``, so the file is safe under ``pytest -n 2``.
"""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import Callable, Iterator
from email.message import EmailMessage as StdEmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from django.conf import settings
from django.core import mail
from django.core.mail import (
    BadHeaderError,
    EmailMessage,
    EmailMultiAlternatives,
    get_connection,
    send_mail,
    send_mass_mail,
)
from django.test.utils import override_settings

from django_helpers import BACKEND, email_settings
from fluxmail.backends.django import FluxMailBackend, compose_django_message, django_envelope
from fluxmail.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    InvalidAddressError,
    RecipientsRefusedError,
    SMTPResponseError,
    SMTPUTF8UnsupportedError,
)
from helpers import closed_port
from servers import HOST, PASSWORD, USERNAME, FaultServer, FaultSession, Reply, SMTPTestServer

# --- helpers ------------------------------------------------------------------------------


def message(n: int = 1, **kwargs: Any) -> EmailMessage:
    kwargs.setdefault("to", [f"to{n}@example.com"])
    return EmailMessage(f"Message {n}", f"Body {n}", "from@example.com", **kwargs)


@pytest.fixture
def plain(smtp_server: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """The plain server, with Django's settings pointing at it."""
    with email_settings(smtp_server):
        yield smtp_server


# --- sending through Django's API ------------------------------------------------------------


def test_send_mail_plain_server(plain: SMTPTestServer) -> None:
    assert send_mail("Hello", "Plain body", "from@example.com", ["to@example.com"]) == 1
    [received] = plain.messages
    assert received.mail_from == "from@example.com"
    assert received.rcpt_tos == ["to@example.com"]
    assert received.message["Subject"] == "Hello"
    assert received.message.get_content().strip() == "Plain body"
    assert plain.commands("EHLO") == ["EHLO client.test.invalid"]  # EMAIL_FLUXMAIL_LOCAL_...
    assert b"\r\n" in received.data
    assert b"\n" not in received.data.replace(b"\r\n", b"")


def test_spec_examples_as_written(plain: SMTPTestServer) -> None:
    send_mail("Subject", "Body", "from@example.com", ["to@example.com"])

    msg = EmailMultiAlternatives(
        subject="Newsletter",
        body="Plain text version",
        from_email="news@example.com",
        to=["user@example.com"],
    )
    msg.attach_alternative("<h1>HTML version</h1>", "text/html")
    msg.send()

    first, newsletter = plain.messages
    assert (first.mail_from, first.rcpt_tos) == ("from@example.com", ["to@example.com"])
    assert first.message["Subject"] == "Subject"
    assert newsletter.rcpt_tos == ["user@example.com"]
    body = newsletter.message
    assert body.get_content_type() == "multipart/alternative"
    assert body.get_body(("html",)).get_content().strip() == "<h1>HTML version</h1>"  # type: ignore[union-attr]
    assert body.get_body(("plain",)).get_content().strip() == "Plain text version"  # type: ignore[union-attr]


def test_starttls_and_auth_from_settings(starttls_server: SMTPTestServer) -> None:
    with email_settings(starttls_server):
        assert send_mail("Secure", "Body", "from@example.com", ["to@example.com"]) == 1
    [received] = starttls_server.messages
    assert received.tls
    assert received.auth_user == USERNAME


def test_implicit_tls_from_settings(ssl_server: SMTPTestServer) -> None:
    with email_settings(ssl_server):
        assert settings.EMAIL_USE_SSL
        assert send_mail("Implicit", "Body", "from@example.com", ["to@example.com"]) == 1
    [received] = ssl_server.messages
    assert received.tls
    assert received.auth_user == USERNAME


def test_send_mass_mail_uses_one_connection(plain: SMTPTestServer) -> None:
    datatuple = [
        (f"Subject {n}", f"Body {n}", "from@example.com", [f"r{n}@example.com"]) for n in range(3)
    ]
    assert send_mass_mail(datatuple) == 3
    assert [m.rcpt_tos for m in plain.messages] == [[f"r{n}@example.com"] for n in range(3)]
    assert plain.connections == 1
    assert len(plain.commands("EHLO")) == 1
    assert len({m.session_id for m in plain.messages}) == 1


def test_open_connection_is_reused_across_calls(plain: SMTPTestServer) -> None:
    with get_connection() as connection:
        assert connection.send_messages([message(1)]) == 1
        assert connection.send_messages([message(2), message(3)]) == 2
        assert message(4, connection=connection).send() == 1
    assert len(plain.messages) == 4
    assert plain.connections == 1


def test_alternatives_and_attachment(plain: SMTPTestServer) -> None:
    msg = EmailMultiAlternatives("Report", "See attached.", "from@example.com", ["to@example.com"])
    msg.attach_alternative("<p>See <b>attached</b>.</p>", "text/html")
    msg.attach("report.csv", "a,b\r\n1,2\r\n", "text/csv")
    msg.attach("logo.bin", bytes(range(256)), "application/octet-stream")
    assert msg.send() == 1

    received = plain.messages[0].message
    assert received.get_content_type() == "multipart/mixed"
    alternative, csv_part, binary = list(received.iter_parts())
    assert isinstance(alternative, StdEmailMessage)
    assert alternative.get_content_type() == "multipart/alternative"
    html = received.get_body(("html",))
    assert html is not None
    assert "<b>attached</b>" in html.get_content()
    assert csv_part.get_filename() == "report.csv"
    assert csv_part.get_content_type() == "text/csv"
    assert binary.get_filename() == "logo.bin"
    assert binary.get_content() == bytes(range(256))


def test_bcc_in_envelope_only(plain: SMTPTestServer) -> None:
    msg = EmailMessage(
        "Hi",
        "Body",
        "from@example.com",
        to=["to@example.com"],
        cc=["cc@example.com"],
        bcc=["secret@example.com"],
    )
    assert msg.send() == 1
    [received] = plain.messages
    assert received.rcpt_tos == ["to@example.com", "cc@example.com", "secret@example.com"]
    assert "Bcc" not in received.message
    assert b"secret@example.com" not in received.data
    assert received.message["Cc"] == "cc@example.com"


def test_non_ascii_subject_body_and_sender_name(plain: SMTPTestServer) -> None:
    subject = "Grüße aus Köln ✉"
    body = "Hallo Jörg — ünïcödé ✓\n"
    sender = "Jörg Müller <joerg@example.com>"
    assert send_mail(subject, body, sender, ["to@example.com"]) == 1
    [received] = plain.messages
    assert received.mail_from == "joerg@example.com"
    assert "SMTPUTF8" not in received.mail_options
    headers, _, raw_body = received.data.partition(b"\r\n\r\n")
    assert headers.isascii()  # Django RFC 2047-encodes the headers
    assert not raw_body.isascii()  # and sends a UTF-8 body as 8bit ...
    assert "BODY=8BITMIME" in received.mail_options  # ... which the engine declares
    parsed = received.message
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == "Jörg Müller"
    assert parsed.get_content().replace("\r\n", "\n") == body


def test_idn_domain_is_punycoded_without_smtputf8(plain: SMTPTestServer) -> None:
    assert send_mail("IDN", "Body", "from@bücher.example", ["user@exämple.test"]) == 1
    [received] = plain.messages
    assert received.mail_from == "from@xn--bcher-kva.example"
    assert received.rcpt_tos == ["user@xn--exmple-cua.test"]
    assert "SMTPUTF8" not in received.mail_options


def test_non_ascii_local_part_uses_smtputf8(plain: SMTPTestServer) -> None:
    assert send_mail("UTF8", "Body", "from@example.com", ["jörg@example.com"]) == 1
    [received] = plain.messages
    assert received.rcpt_tos == ["jörg@example.com"]
    assert "SMTPUTF8" in received.mail_options


def test_message_without_recipients_is_skipped(plain: SMTPTestServer) -> None:
    with get_connection() as connection:
        sent = connection.send_messages([message(1, to=[]), message(2)])
    assert sent == 1
    assert len(plain.messages) == 1
    assert FluxMailBackend().send_messages([message(3, to=[])]) == 0
    assert plain.connections == 1  # nothing connected for the message without recipients


# --- failures -----------------------------------------------------------------------------


def test_wrong_password_raises(starttls_server: SMTPTestServer) -> None:
    with (
        email_settings(starttls_server, EMAIL_HOST_PASSWORD="wrong"),
        pytest.raises(AuthenticationError) as info,
    ):
        send_mail("Hi", "Body", "from@example.com", ["to@example.com"])
    assert info.value.code == "authentication_failed"
    assert "wrong" not in str(info.value)
    assert starttls_server.messages == []


def test_wrong_password_fail_silently(
    starttls_server: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with email_settings(starttls_server, EMAIL_HOST_PASSWORD="wrong"):
        sent = send_mail("Hi", "Body", "from@example.com", ["to@example.com"], fail_silently=True)
        assert get_connection(fail_silently=True).open() is None
    assert sent == 0
    assert starttls_server.messages == []
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_server_down() -> None:
    with override_settings(EMAIL_HOST=HOST, EMAIL_PORT=closed_port()):
        with pytest.raises(ConnectError) as info:
            send_mail("Hi", "Body", "from@example.com", ["to@example.com"])
        assert info.value.code == "connection_failed"
        assert (
            send_mail("Hi", "Body", "from@example.com", ["a@example.com"], fail_silently=True) == 0
        )
        with pytest.raises(ConnectError), get_connection():
            pass  # the with block opens the connection


def test_header_injection_reaches_nothing(plain: SMTPTestServer) -> None:
    with pytest.raises(BadHeaderError):
        send_mail(
            "Hello\r\nBcc: victim@example.com", "Body", "from@example.com", ["to@example.com"]
        )
    with pytest.raises(BadHeaderError):
        send_mail(
            "Hello\nX: y", "Body", "from@example.com", ["to@example.com"], fail_silently=True
        )
    assert plain.messages == []
    assert plain.connections == 0


def test_refused_messages_are_skipped_with_fail_silently(make_server: Callable[..., Any]) -> None:
    server: SMTPTestServer = make_server(reject_rcpt={"bad@example.com": 550})
    batch = [message(1), message(2, to=["bad@example.com"]), message(3)]
    with email_settings(server):
        assert get_connection(fail_silently=True).send_messages(batch) == 2
        with pytest.raises(RecipientsRefusedError) as info:
            get_connection().send_messages(batch)
    assert info.value.refused["bad@example.com"][0] == 550
    # Without fail_silently the batch stops at the first failure, as in Django.
    assert [m.rcpt_tos for m in server.messages] == [
        ["to1@example.com"],
        ["to3@example.com"],
        ["to1@example.com"],
    ]


def test_partial_refusal_counts_as_sent(make_server: Callable[..., Any]) -> None:
    server: SMTPTestServer = make_server(reject_rcpt={"bad@example.com": 550})
    with email_settings(server):
        sent = send_mail("Hi", "Body", "from@example.com", ["good@example.com", "bad@example.com"])
    assert sent == 1
    assert [m.rcpt_tos for m in server.messages] == [["good@example.com"]]


def test_transient_451_is_retried_once(make_fault_server: Callable[..., FaultServer]) -> None:
    answers = iter([Reply("451 4.3.0 Try again later")])

    def first_dot_fails(session: FaultSession) -> Reply | None:
        return next(answers, None)

    server = make_fault_server({"DOT": first_dot_fails})
    with email_settings(server, EMAIL_FLUXMAIL_MAX_RETRIES=2, EMAIL_FLUXMAIL_RETRY_DELAY=0.01):
        assert send_mail("Retry", "Body", "from@example.com", ["to@example.com"]) == 1
    assert len(server.received) == 2  # the refused attempt and the retry
    assert len(server.messages) == 1  # delivered exactly once


def test_transient_451_without_retries_raises(
    make_fault_server: Callable[..., FaultServer],
) -> None:
    server = make_fault_server({"DOT": Reply("451 4.3.0 Try again later")})
    with email_settings(server), pytest.raises(SMTPResponseError) as info:
        send_mail("Retry", "Body", "from@example.com", ["to@example.com"])
    assert info.value.smtp_code == 451
    assert server.messages == []


def test_open_retries_a_busy_greeting(make_fault_server: Callable[..., FaultServer]) -> None:
    def busy_first(session: FaultSession) -> Reply | None:
        return Reply("421 4.3.2 Too busy, try later", close=True) if session.number == 1 else None

    server = make_fault_server({"greeting": busy_first})
    with email_settings(server, EMAIL_FLUXMAIL_MAX_RETRIES=1, EMAIL_FLUXMAIL_RETRY_DELAY=0.01):
        assert send_mail("Busy", "Body", "from@example.com", ["to@example.com"]) == 1
    assert len(server.sessions) == 2
    assert len(server.messages) == 1


def test_open_connection_dropped_by_the_server_is_reopened(
    make_fault_server: Callable[..., FaultServer],
) -> None:
    def idle_timeout(session: FaultSession) -> Reply | None:
        if session.number == 1 and session.messages >= 1:
            return Reply("421 4.4.2 Idle timeout, closing", close=True)
        return None

    server = make_fault_server({"MAIL": idle_timeout})
    with email_settings(server), get_connection() as connection:
        assert connection.send_messages([message(1)]) == 1
        assert connection.send_messages([message(2)]) == 1  # transparent reconnect
    assert [m.rcpt_tos for m in server.messages] == [["to1@example.com"], ["to2@example.com"]]
    assert len(server.sessions) == 2


def test_non_ascii_local_part_needs_an_smtputf8_server(make_server: Callable[..., Any]) -> None:
    server: SMTPTestServer = make_server(smtputf8=False)
    with email_settings(server), pytest.raises(SMTPUTF8UnsupportedError):
        send_mail("UTF8", "Body", "from@example.com", ["jörg@example.com"])
    assert server.messages == []


# --- configuration ------------------------------------------------------------------------


def test_use_tls_and_use_ssl_are_exclusive() -> None:
    with pytest.raises(ConfigurationError) as info:
        get_connection(use_tls=True, use_ssl=True)
    assert isinstance(info.value, ValueError)
    with override_settings(EMAIL_USE_TLS=True, EMAIL_USE_SSL=True), pytest.raises(ValueError):
        get_connection()


def test_arguments_override_settings(smtp_server: SMTPTestServer) -> None:
    with override_settings(EMAIL_HOST="192.0.2.1", EMAIL_PORT=closed_port(), EMAIL_TIMEOUT=None):
        backend = get_connection(host=smtp_server.host, port=smtp_server.port, timeout=3)
        assert backend.send_messages([message()]) == 1
        assert backend.config.timeout == 3
        assert FluxMailBackend().config.timeout == 30.0  # EMAIL_TIMEOUT None: the default
    assert len(smtp_server.messages) == 1


def test_password_never_in_repr(starttls_server: SMTPTestServer) -> None:
    with email_settings(starttls_server):
        backend = get_connection()
    assert PASSWORD not in repr(backend.config)
    assert backend.config.username == USERNAME


def test_retry_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        get_connection(max_retries=-1)
    with override_settings(EMAIL_FLUXMAIL_RETRY_DELAY="soon"), pytest.raises(ConfigurationError):
        get_connection()


def _client_cert(tmp_path: Path, *, split: bool) -> tuple[str, str | None]:
    leaf = trustme.CA().issue_cert("client.test.invalid")
    certfile = tmp_path / "client.pem"
    if not split:
        leaf.private_key_and_cert_chain_pem.write_to_path(str(certfile))
        return str(certfile), None
    keyfile = tmp_path / "client.key"
    leaf.cert_chain_pems[0].write_to_path(str(certfile))
    leaf.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile)


def test_client_certificate_over_starttls(
    starttls_server: SMTPTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The context made from EMAIL_SSL_CERTFILE trusts the system CAs; SSL_CERT_FILE makes
    # OpenSSL's default store the test CA for this process.
    assert starttls_server.ca_pem is not None
    monkeypatch.setenv("SSL_CERT_FILE", starttls_server.ca_pem)
    certfile, keyfile = _client_cert(tmp_path, split=True)
    with email_settings(
        starttls_server,
        EMAIL_FLUXMAIL_SSL_CONTEXT=None,
        EMAIL_SSL_CERTFILE=certfile,
        EMAIL_SSL_KEYFILE=keyfile,
    ):
        backend = get_connection()
        assert backend.config.ssl_context is None  # loaded when the connection opens
        assert backend.send_messages([message()]) == 1
        assert isinstance(backend.config.ssl_context, ssl.SSLContext)
    assert starttls_server.messages[0].tls


def test_client_certificate_errors(tmp_path: Path, smtp_server: SMTPTestServer) -> None:
    # As Django's backend: the files are read when the connection opens, not before.
    certfile, _ = _client_cert(tmp_path, split=False)
    where = {"host": smtp_server.host, "port": smtp_server.port}
    backend = get_connection(ssl_certfile=certfile, **where)
    assert backend.open() is True
    assert isinstance(backend.config.ssl_context, ssl.SSLContext)
    backend.close()
    missing = get_connection(ssl_certfile=str(tmp_path / "missing.pem"), **where)
    with pytest.raises(ConfigurationError, match="cannot load"):
        missing.open()
    keyfile_only = get_connection(ssl_keyfile=certfile, **where)
    with pytest.raises(ConfigurationError, match="needs EMAIL_SSL_CERTFILE"):
        keyfile_only.open()
    assert smtp_server.messages == []
    with pytest.raises(ConfigurationError, match="cannot be combined"):
        get_connection(ssl_certfile=certfile, ssl_context=ssl.create_default_context())
    with pytest.raises(ConfigurationError, match=r"ssl\.SSLContext"):
        get_connection(ssl_context="not a context")


# --- composition (no network) -------------------------------------------------------------


def test_compose_uses_djangos_bytes_and_message_id() -> None:
    msg = EmailMessage(
        "Hi", "Line 1\nLine 2\n", "Ann <ann@example.com>", ["b@example.com"], bcc=["c@x.test"]
    )
    composed = compose_django_message(msg)
    assert composed.envelope.mail_from == "ann@example.com"
    assert composed.envelope.rcpt_to == ("b@example.com", "c@x.test")
    assert not composed.envelope.smtputf8
    assert b"Line 1\r\nLine 2\r\n" in composed.data
    assert b"c@x.test" not in composed.data
    headers = composed.data.split(b"\r\n\r\n", 1)[0].decode()
    assert f"Message-ID: {composed.message_id}" in headers
    assert composed.message_id.startswith("<")
    assert composed.message_id.endswith(">")


class ModernEmailMessage(EmailMessage):
    """Django 6 style: ``message(policy=...)`` returns a modern ``email`` message."""

    def message(self, *, policy: email.policy.Policy = email.policy.default) -> Any:
        legacy = super().message()
        modern = email.message_from_bytes(legacy.as_bytes(), policy=policy)
        del modern["Message-ID"]  # and no Message-ID: the backend must add one
        return modern


def test_compose_handles_policy_messages_without_message_id() -> None:
    composed = compose_django_message(ModernEmailMessage("Hi", "a\nb\n", "f@x.test", ["t@x.test"]))
    assert b"a\r\nb\r\n" in composed.data
    assert b"\n" not in composed.data.replace(b"\r\n", b"")
    assert composed.data.count(b"Message-ID:") == 1
    assert f"Message-ID: {composed.message_id}\r\n".encode() in composed.data


def test_envelope_addresses() -> None:
    envelope = django_envelope(
        '"Doe, John" <John@Bücher.Example>',
        ["a@example.com", "Ann <a@example.com>", ("Bo", "bo@example.com"), "日本@例え.テスト"],
    )
    assert envelope.mail_from == "John@xn--bcher-kva.example"
    assert envelope.rcpt_to == ("a@example.com", "bo@example.com", "日本@xn--r8jz45g.xn--zckzah")
    assert envelope.smtputf8
    with pytest.raises(InvalidAddressError):
        django_envelope('"a b"@example.com', ["to@example.com"])


# --- the contract every Django email backend keeps -----------------------------------------


class BackendContract:
    """What Django expects of any email backend. Subclass it as ``Test...`` and provide
    ``make_backend`` and ``delivered``. Backends that can fail add :class:`FailureContract`."""

    opens_connections = True  # open() reports True/False like Django's SMTP backend

    def make_backend(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def delivered(self) -> int:
        raise NotImplementedError

    def test_send_messages_returns_the_count(self) -> None:
        assert self.make_backend().send_messages([message(1), message(2)]) == 2
        assert self.delivered() == 2

    def test_empty_list_sends_nothing(self) -> None:
        assert self.make_backend().send_messages([]) == 0
        assert self.delivered() == 0

    def test_open_and_close_are_idempotent(self) -> None:
        backend = self.make_backend()
        backend.close()  # nothing open: no error
        first, second = backend.open(), backend.open()
        if self.opens_connections:
            assert (first, second) == (True, False)
        assert backend.send_messages([message()]) == 1
        backend.close()
        backend.close()
        assert backend.send_messages([message(2)]) == 1  # reopens on demand
        assert self.delivered() == 2

    def test_context_manager_returns_the_backend(self) -> None:
        backend = self.make_backend()
        with backend as entered:
            assert entered is backend
            assert entered.send_messages([message(1)]) == 1
            assert (
                EmailMessage(
                    "S", "B", "f@example.com", ["t@example.com"], connection=entered
                ).send()
                == 1
            )
        assert self.delivered() == 2


class FailureContract:
    """For backends that can fail (a network backend): errors raise unless fail_silently."""

    #: What the failing backend raises: each backend names its own class and code.
    failure: tuple[type[Exception], str]

    def make_failing_backend(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def test_fail_silently_returns_zero(self) -> None:
        backend = self.make_failing_backend(fail_silently=True)
        assert backend.send_messages([message(1), message(2)]) == 0
        with backend:
            pass

    def test_failure_raises_without_fail_silently(self) -> None:
        backend = self.make_failing_backend()
        error, code = self.failure
        with pytest.raises(error) as info:
            backend.send_messages([message()])
        assert getattr(info.value, "code", None) == code


class TestFluxMailBackendContract(BackendContract, FailureContract):
    failure = (ConnectError, "connection_failed")

    @pytest.fixture(autouse=True)
    def _server(self, smtp_server: SMTPTestServer) -> None:
        self.server = smtp_server

    def make_backend(self, **kwargs: Any) -> Any:
        return get_connection(BACKEND, host=self.server.host, port=self.server.port, **kwargs)

    def make_failing_backend(self, **kwargs: Any) -> Any:
        return get_connection(BACKEND, host=HOST, port=closed_port(), **kwargs)

    def delivered(self) -> int:
        return len(self.server.messages)


class TestLocmemBackendContract(BackendContract):
    """Django's own memory backend keeps the same contract (the class is reusable)."""

    opens_connections = False

    @pytest.fixture(autouse=True)
    def _outbox(self) -> None:
        mail.outbox = []

    def make_backend(self, **kwargs: Any) -> Any:
        return get_connection("django.core.mail.backends.locmem.EmailBackend", **kwargs)

    def delivered(self) -> int:
        return len(mail.outbox)


def test_exhausted_retries_raise_what_send_raises(
    make_fault_server: Callable[..., FaultServer],
) -> None:
    """The backend delivers through the same transport as FluxMail.send(): the same
    retries, the same error, the same cause (the server's reply), the same policy row."""
    from fluxmail.delivery import policy
    from fluxmail.errors import MessageRefusedError, ServerReply

    server = make_fault_server({"DOT": Reply("451 4.3.0 Try again later")})
    with (
        email_settings(server, EMAIL_FLUXMAIL_MAX_RETRIES=1, EMAIL_FLUXMAIL_RETRY_DELAY=0.01),
        pytest.raises(MessageRefusedError) as info,
    ):
        send_mail("Retry", "Body", "from@example.com", ["to@example.com"])
    assert (info.value.code, info.value.smtp_code) == ("message_refused", 451)
    assert isinstance(info.value.__cause__, ServerReply)
    assert info.value.__cause__.smtp_code == 451
    assert policy.outcome_of(info.value) is policy.Outcome.DEFERRED
    assert len(server.received) == 2  # the first try and one retry
    assert server.messages == []
