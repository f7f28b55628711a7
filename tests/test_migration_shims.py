"""The shims for code written against fluxmail 0.3.3 (docs/migrating.md), each against a
real local server where a connection is involved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fluxmail
import fluxmail.backends
from fluxmail import EmailInstance, EmailObject, FluxMail
from outlook_fake import FakeOutlookApplication
from servers import SMTPTestServer


def test_backends_package_exports_the_django_backend() -> None:
    from fluxmail.backends.django import FluxMailBackend

    assert fluxmail.backends.FluxMailBackend is FluxMailBackend
    assert "FluxMailBackend" in fluxmail.backends.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = fluxmail.backends.Nope  # type: ignore[attr-defined]


def test_importing_fluxmail_backends_does_not_import_django() -> None:
    code = "import sys, fluxmail.backends; print('django' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_display_returns_what_it_prints(
    smtp_server: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="me@example.com"))
    mailer.create(subject="Shown", recipients=["friend@example.com"], body="Hi there!")
    shown = mailer.display()
    assert isinstance(shown, str)
    assert "Shown" in shown
    assert "Hi there!" in shown
    assert capsys.readouterr().out == shown + "\n"

    def stable(preview: str) -> list[str]:  # Date and Message-ID change at each compose
        return [line for line in preview.splitlines() if not line.startswith(("Date", "Mess"))]

    assert stable(shown) == stable(mailer.send(dry_run=True))  # the same as a dry run
    assert mailer.send() == "Email sent successfully via SMTP."  # display() did not consume
    assert smtp_server.messages[0].message["Subject"] == "Shown"


def test_display_on_outlook_returns_a_line() -> None:
    app = FakeOutlookApplication()
    mailer = FluxMail(object_type=EmailObject.OUTLOOK, host="", outlook_application=app)
    mailer.create(subject="S", recipients=["a@example.com"], body="B")
    assert mailer.display() == "Outlook compose window opened."
    assert len(app.items) == 1


def test_read_only_settings(smtp_server: SMTPTestServer) -> None:
    mailer = FluxMail(
        object_type="smtp",
        host=EmailInstance(smtp_server.host, "example.com"),
        port=smtp_server.port,
        timeout=12,
        username="me@example.com",
    )
    assert mailer.host == EmailInstance(smtp_server.host, "example.com")
    assert mailer.host.relay == smtp_server.host  # 0.3.3 code reads host.relay
    assert (mailer.port, mailer.timeout, mailer.use_tls, mailer.use_ssl) == (
        smtp_server.port,
        12,
        False,
        False,
    )
    for name in ("host", "port", "timeout", "use_tls", "use_ssl"):
        with pytest.raises(AttributeError):
            setattr(mailer, name, None)
    mailer.create(subject="S", recipients=["a@example.com"], body="B").send()
    assert smtp_server.messages[0].rcpt_tos == ["a@example.com"]


def test_read_only_tls_flags() -> None:
    assert FluxMail(host="smtp.example.com", port=587, use_tls=True).use_tls is True
    implicit = FluxMail(host="smtp.example.com", port=465, use_ssl=True)
    assert (implicit.use_ssl, implicit.use_tls, implicit.port) == (True, False, 465)
    assert FluxMail(host="smtp.example.com").host == EmailInstance("smtp.example.com")


def test_settings_of_a_mailer_without_smtp(tmp_path: Path) -> None:
    files = FluxMail(object_type="file", host=str(tmp_path))
    assert (files.port, files.timeout, files.use_tls, files.use_ssl) == (None, None, False, False)
    assert files.host.relay == str(tmp_path)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXMAIL_")}
    return subprocess.run(
        [sys.executable, "-m", "fluxmail", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_python_dash_m_fluxmail_help() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "--recipients" in result.stdout
    version = _run("--version")
    assert version.returncode == 0
    assert fluxmail.__version__ in version.stdout


def test_python_dash_m_fluxmail_sends(smtp_server: SMTPTestServer) -> None:
    result = _run(
        "--type", "smtp", "--host", smtp_server.host, "--port", str(smtp_server.port),
        "--sender", "me@example.com", "--subject", "From -m",
        "--recipients", "a@example.com", "--body", "Hi",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert smtp_server.messages[0].message["Subject"] == "From -m"


def test_python_dash_m_fluxmail_exit_status_on_bad_usage() -> None:
    result = _run("--type", "smtp")
    assert result.returncode == 2
    assert result.stderr.startswith("fluxmail: error:")


def test_django_backend_by_the_short_path(smtp_server: SMTPTestServer) -> None:
    from django.core.mail import get_connection, send_mail

    connection = get_connection(
        "fluxmail.backends.FluxMailBackend", host=smtp_server.host, port=smtp_server.port
    )
    assert send_mail("S", "B", "from@example.com", ["to@example.com"], connection=connection)
    assert smtp_server.messages[0].rcpt_tos == ["to@example.com"]
