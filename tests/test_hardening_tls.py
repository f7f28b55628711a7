"""Rules 5 and 6 of docs/security.md, end to end.

5. TLS verifies the certificate and the host name by default; TLS that was asked for but
   cannot happen is an error (no plaintext fallback); after STARTTLS, buffered bytes and
   the old capabilities are dropped and EHLO is sent again; turning verification off is
   explicit and logged.
6. AUTH never over plaintext unless explicitly allowed; the password (and its base64)
   appears in no repr/str, exception, log (the debug transcript redacts AUTH), dry-run
   output, CLI output or journal.

API (sync and async), BulkSender, the CLI and the Django backend, against real servers.
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from django_helpers import django_backend, django_message
from fluxmail import BulkSender, FluxMail
from fluxmail.errors import (
    AuthenticationError,
    FluxMailException,
    TLSRequiredError,
    TLSVerifyError,
)
from fluxmail.smtp import AsyncSMTPConnection, SMTPConnection
from hardening import MODES, everything_about, run_batch, send
from helpers import assert_one_line_error, plain_args
from helpers import run as run_cli
from servers import (
    USERNAME,
    FaultServer,
    FaultSession,
    Reply,
    SMTPTestServer,
    StartTLS,
    tls_material,
)

MakeServer = Callable[..., SMTPTestServer]
MakeFault = Callable[..., FaultServer]
SECRET = "Tr0ub4dor&3-n0t-the-test-one"


def message(**extra: Any) -> dict[str, Any]:
    return {"subject": "s", "recipients": ["to@example.com"], "body": "b", **extra}


# --- rule 5: verification on by default -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("problem", ["unknown CA", "wrong host name"])
def test_certificate_and_host_name_are_verified(
    make_server: MakeServer, mode: str, problem: str
) -> None:
    if problem == "unknown CA":
        server = make_server(tls="starttls", untrusted=True)
    else:  # a valid certificate of the trusted CA, for another name
        server = make_server(tls="starttls", cert_for=("mail.other.test",))
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com"))
    with pytest.raises(TLSVerifyError) as info:
        send(mailer, mode, **message())
    assert info.value.code == "tls_verify_failed"
    assert not info.value.transient
    assert server.commands("MAIL") == []
    with pytest.raises(TLSVerifyError) as stopped:  # a batch stops: every message would fail
        run_batch(mailer, [message(), message()], mode)
    assert stopped.value.batch_result["sent"] == 0
    with pytest.raises(TLSVerifyError):
        django_backend(
            host=server.host,
            port=server.port,
            use_tls=True,
            ssl_context=tls_material().client_context(),
        ).send_messages([django_message()])
    assert server.commands("MAIL") == []


def test_default_context_verifies_against_the_system_store(make_server: MakeServer) -> None:
    # (a CA no store trusts: each config builds its default context from SSL_CERT_FILE
    # or the system store, and neither holds the untrusted test CA)
    server = make_server(tls="ssl", untrusted=True)
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com", ssl_context=None))
    with pytest.raises(TLSVerifyError):
        send(mailer, "sync", **message())
    args = plain_args(server, "--ssl", "--sender", "me@example.com", "--subject", "s")
    result = run_cli(*args, "--recipients", "to@example.com", "--body", "b")
    assert_one_line_error(result, 1, "tls_verify_failed")
    assert server.messages == []


@pytest.mark.parametrize("mode", MODES)
def test_turning_verification_off_is_explicit_and_logged(
    make_server: MakeServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(tls="starttls", untrusted=True)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    caplog.set_level(logging.WARNING, logger="fluxmail")
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com", ssl_context=context))
    send(mailer, mode, **message())
    assert "does not verify certificates" in caplog.text
    assert len(server.messages) == 1
    assert server.messages[0].tls


# --- rule 5: asked-for TLS that cannot happen is an error ----------------------------------


def tls_impossible_servers(make_server: MakeServer) -> list[SMTPTestServer]:
    return [
        make_server(tls="starttls", auth=True, strip_starttls=True),  # a downgrading middlebox
        make_server(tls="starttls", auth=True, fail={"STARTTLS": "454 4.7.0 TLS not available"}),
    ]


@pytest.mark.parametrize("mode", MODES)
def test_no_plaintext_fallback(make_server: MakeServer, mode: str) -> None:
    for server in tls_impossible_servers(make_server):
        mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com"))
        with pytest.raises(TLSRequiredError) as info:
            send(mailer, mode, **message())
        assert not info.value.transient
        with pytest.raises(TLSRequiredError):
            run_batch(mailer, [message()], mode)
        with pytest.raises(TLSRequiredError):
            mailer.test_connection()
        assert server.commands("AUTH") == []  # no credentials went out in plaintext
        assert server.commands("MAIL") == []


def test_no_plaintext_fallback_cli_and_django(make_server: MakeServer) -> None:
    for server in tls_impossible_servers(make_server):
        args = plain_args(server, "--tls", "--sender", "me@example.com", "--subject", "s")
        result = run_cli(
            *args,
            "--recipients",
            "to@example.com",
            "--body",
            "b",
            env={"FLUXMAIL_USERNAME": USERNAME, "FLUXMAIL_PASSWORD": SECRET},
        )
        assert_one_line_error(result, 1, "tls_required")
        backend = django_backend(
            host=server.host,
            port=server.port,
            use_tls=True,
            username=USERNAME,
            password=SECRET,
            ssl_context=tls_material().client_context(),
        )
        with pytest.raises(TLSRequiredError):
            backend.send_messages([django_message()])
        assert server.commands("AUTH") == []
        assert server.commands("MAIL") == []


# --- rule 5: STARTTLS drops what came before ------------------------------------------------


def post_tls_ehlo(session: FaultSession) -> Reply | None:
    """After TLS, advertise AUTH LOGIN only and no PIPELINING (before: both mechanisms,
    pipelining, a small SIZE)."""
    if session.tls:
        return Reply("250-fault.test.invalid\r\n250 AUTH LOGIN")
    return None


@pytest.mark.parametrize("mode", MODES)
def test_starttls_forgets_bytes_and_capabilities(make_fault_server: MakeFault, mode: str) -> None:
    injected = b"250-PIPELINING\r\n250 AUTH PLAIN\r\n"  # sent right after the 220, unasked
    server = make_fault_server(
        {"STARTTLS": StartTLS(inject=injected), "EHLO": post_tls_ehlo},
        capabilities=("PIPELINING", "SIZE 1000000", "8BITMIME"),
        tls=True,
        auth_mechanisms=("PLAIN", "LOGIN"),
    )
    mailer = FluxMail(
        **server.fluxmail_kwargs(username=USERNAME, password="s3cret-pa55", sender="me@x.org")
    )
    send(mailer, mode, **message())
    (session,) = server.sessions
    assert session.verbs()[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]
    assert session.commands[3] == "AUTH LOGIN"  # the post-TLS list, not the injected one
    assert session.chunk_of("MAIL") != session.chunk_of("RCPT")  # no pipelining any more
    assert not any("SIZE=" in c for c in session.commands)  # SIZE was not re-advertised
    assert len(server.messages) == 1


# --- rule 6: no AUTH over plaintext ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_auth_never_over_plaintext_unless_allowed(make_server: MakeServer, mode: str) -> None:
    server = make_server(auth=True)  # offers AUTH without TLS
    kwargs = server.fluxmail_kwargs(sender="me@example.com")
    with pytest.raises(TLSRequiredError, match="without TLS"):
        send(FluxMail(**kwargs), mode, **message())
    with pytest.raises(TLSRequiredError):
        run_batch(FluxMail(**kwargs), [message()], mode)
    with pytest.raises(TLSRequiredError):
        django_backend(
            host=server.host, port=server.port, username=USERNAME, password=server.password
        ).send_messages([django_message()])
    assert server.commands("AUTH") == []
    send(FluxMail(**kwargs, allow_insecure_auth=True), mode, **message())
    assert server.commands("AUTH") == ["AUTH PLAIN ok"]
    assert server.messages[0].auth_user == USERNAME


def test_cli_never_authenticates_over_plaintext(make_server: MakeServer) -> None:
    server = make_server(auth=True)
    args = plain_args(server, "--sender", "me@example.com", "--subject", "s", "--body", "b")
    result = run_cli(
        *args,
        "--recipients",
        "to@example.com",
        env={"FLUXMAIL_USERNAME": USERNAME, "FLUXMAIL_PASSWORD": SECRET},
    )
    assert_one_line_error(result, 1, "tls_required")
    assert server.commands("AUTH") == []


# --- rule 6: the password is nowhere --------------------------------------------------------


def secret_forms(username: str, password: str) -> list[str]:
    plain = b"\0" + username.encode() + b"\0" + password.encode()
    return [
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(plain).decode(),
    ]


def assert_secret_free(text: str, username: str = USERNAME, password: str = SECRET) -> None:
    for form in secret_forms(username, password):
        assert form not in text, f"found {form!r}"


def echoing(session: FaultSession) -> Reply:
    """A server that quotes the client's AUTH line back in its refusal."""
    return Reply(f"535 5.7.8 Bad credentials: {session.commands[-1]}")


@pytest.mark.parametrize("mode", MODES)
def test_password_is_nowhere(
    make_server: MakeServer,
    make_fault_server: MakeFault,
    mode: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # the whole transcript, every logger
    texts: list[str] = []
    good = make_server(tls="starttls", auth=True)
    echo = make_fault_server({"AUTH": echoing}, tls=True, auth_mechanisms=("PLAIN",))
    for server in (good, echo):
        mailer = FluxMail(
            **server.fluxmail_kwargs(username=USERNAME, password=SECRET, sender="me@x.org")
        )
        texts += [repr(mailer), str(mailer), repr(mailer.config), str(mailer.config)]
        texts.append(mailer.create(**message()).send(dry_run=True))
        with pytest.raises(AuthenticationError) as info:
            send(mailer, mode, **message())
        texts.append(everything_about(info.value))
        journal = tmp_path / f"run-{server.port}.jsonl"
        sender = BulkSender(mailer, journal=journal)
        texts.append(repr(sender))
        with pytest.raises(AuthenticationError) as stopped:
            run_batch(mailer, [message(), message()], mode, journal=journal)
        texts += [everything_about(stopped.value), repr(stopped.value.batch_result)]
        texts.append(journal.read_text())
        with pytest.raises(AuthenticationError) as probe:
            mailer.test_connection()
        texts.append(everything_about(probe.value))
        backend = django_backend(
            host=server.host,
            port=server.port,
            use_tls=True,
            username=USERNAME,
            password=SECRET,
            ssl_context=server.client_ssl_context,
            fail_silently=True,
        )
        texts += [repr(backend), repr(backend.config)]
        assert backend.send_messages([django_message()]) == 0
        connection = SMTPConnection(mailer.config)
        texts.append(repr(connection))
        texts.append(repr(AsyncSMTPConnection(mailer.config)))
    assert "AUTH PLAIN [redacted]" in caplog.text
    texts += [caplog.text, capsys.readouterr().out]
    for text in texts:
        assert_secret_free(text)


def test_successful_login_transcript_is_redacted(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(tls="starttls", auth=True)
    caplog.set_level(logging.DEBUG, logger="fluxmail")
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com"))
    assert server.password is not None
    info = mailer.test_connection()
    assert info["authenticated"]
    send(mailer, "sync", **message())
    assert "[redacted]" in caplog.text
    assert_secret_free(caplog.text, USERNAME, server.password)
    assert_secret_free(repr(info), USERNAME, server.password)


def test_login_mechanism_transcript_is_redacted(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(tls="starttls", auth=True, exclude_auth=("PLAIN",))
    caplog.set_level(logging.DEBUG, logger="fluxmail")
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com"))
    assert server.password is not None
    send(mailer, "sync", **message())
    assert server.messages[0].auth_user == USERNAME
    assert caplog.text.count("C: [redacted]") == 2
    assert_secret_free(caplog.text, USERNAME, server.password)


def test_cli_never_prints_the_password(starttls_server: SMTPTestServer, tmp_path: Path) -> None:
    env_ok = {
        "SSL_CERT_FILE": starttls_server.ca_pem or "",
        "FLUXMAIL_USERNAME": USERNAME,
        "FLUXMAIL_PASSWORD": SECRET,
    }
    args = plain_args(starttls_server, "--tls", "--sender", "me@example.com", "--subject", "s")
    args += ["--recipients", "to@example.com", "--body", "b"]
    outputs = [
        run_cli(*args, env=env_ok),  # wrong password (from the environment)
        run_cli(
            *args,
            "--username",
            USERNAME,
            "--password",
            SECRET,
            env={"SSL_CERT_FILE": env_ok["SSL_CERT_FILE"]},
        ),
        run_cli(*args, "--dry-run", env=env_ok),
        run_cli(*args, "--dry-run", "--username", USERNAME, "--password", SECRET),
    ]
    assert [r.returncode for r in outputs] == [1, 1, 0, 0]
    for result in outputs:
        assert_secret_free(result.stdout + result.stderr)


def test_errors_are_fluxmail_exceptions_with_causes(make_server: MakeServer) -> None:
    server = make_server(tls="starttls", untrusted=True)
    mailer = FluxMail(**server.fluxmail_kwargs(sender="me@example.com"))
    with pytest.raises(TLSVerifyError) as info:
        send(mailer, "sync", **message())
    assert isinstance(info.value, FluxMailException)
    assert info.value.code == "tls_verify_failed"
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
