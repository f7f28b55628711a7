"""The installed ``fluxmail`` command, run in a subprocess against real local SMTP servers."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import fluxmail
from helpers import FLUXMAIL, assert_one_line_error, closed_port, plain_args, run
from servers import PASSWORD, USERNAME, SMTPTestServer

SUCCESS = "Email sent successfully via SMTP."
MakeServer = Callable[..., SMTPTestServer]


def assert_no_password(result: subprocess.CompletedProcess[str], *passwords: str) -> None:
    for password in passwords:
        assert password not in result.stdout
        assert password not in result.stderr


@pytest.fixture
def tls_env(starttls_server: SMTPTestServer) -> dict[str, str]:
    """Trust the test CA in the subprocess (the CLI has no ssl_context option)."""
    assert starttls_server.ca_pem is not None
    return {"SSL_CERT_FILE": starttls_server.ca_pem}


# --- sending ----------------------------------------------------------------------------------


def test_cli_md_example(smtp_server: SMTPTestServer) -> None:
    """The cli.md example with --host/--port pointed at a plain server. It names no
    sender, so (as cli.md says) the address in $FLUXMAIL_USERNAME is the From."""
    result = run(
        "--type",
        "smtp",
        "--host",
        "127.0.0.1",
        "--port",
        str(smtp_server.port),
        "--subject",
        "Hello",
        "--recipients",
        "friend@example.com",
        "--body",
        "Hi from the CLI!",
        env={"FLUXMAIL_USERNAME": "me@example.com"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == SUCCESS
    assert result.stderr == ""
    received = smtp_server.messages[0]
    assert received.mail_from == "me@example.com"
    assert received.rcpt_tos == ["friend@example.com"]
    msg = received.message
    assert msg["Subject"] == "Hello"
    assert msg.get_content().strip() == "Hi from the CLI!"


def test_cli_md_example_without_any_sender_is_a_usage_error(smtp_server: SMTPTestServer) -> None:
    result = run(
        *plain_args(smtp_server),
        "--subject",
        "Hello",
        "--recipients",
        "friend@example.com",
        "--body",
        "Hi from the CLI!",
    )
    line = assert_one_line_error(result, 2, "invalid_address")
    assert "sender" in line
    assert smtp_server.connections == 0


def test_tls_with_credentials_from_the_environment(
    starttls_server: SMTPTestServer, tls_env: dict[str, str]
) -> None:
    result = run(
        "--type",
        "smtp",
        "--host",
        "localhost",
        "--port",
        str(starttls_server.port),
        "--tls",
        "--subject",
        "Hello",
        "--recipients",
        "friend@example.com",
        "--body",
        "Hi from the CLI!",
        env={**tls_env, "FLUXMAIL_USERNAME": USERNAME, "FLUXMAIL_PASSWORD": PASSWORD},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == SUCCESS
    assert_no_password(result, PASSWORD)
    received = starttls_server.messages[0]
    assert received.tls is True
    assert received.auth_user == USERNAME
    assert received.mail_from == USERNAME  # the username doubles as the sender


def test_ssl_flag(make_server: MakeServer) -> None:
    server = make_server(tls="ssl", auth=True)
    assert server.ca_pem is not None
    result = run(
        "--type",
        "smtp",
        "--host",
        "localhost",
        "--port",
        str(server.port),
        "--ssl",
        "--username",
        USERNAME,
        "--subject",
        "S",
        "--recipients",
        "a@example.com",
        "--body",
        "b",
        env={"SSL_CERT_FILE": server.ca_pem, "FLUXMAIL_PASSWORD": PASSWORD},
    )
    assert result.returncode == 0, result.stderr
    assert server.messages[0].tls
    assert server.messages[0].auth_user == USERNAME


def test_body_file(smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("Grüße aus der Datei ✉\nline two\n", encoding="utf-8")
    result = run(
        *plain_args(smtp_server),
        "--sender",
        "me@example.com",
        "--subject",
        "File",
        "--recipients",
        "a@example.com",
        "--body-file",
        str(body),
    )
    assert result.returncode == 0, result.stderr
    content = smtp_server.messages[0].message.get_content().replace("\r\n", "\n")
    assert content == "Grüße aus der Datei ✉\nline two\n"


def test_html(smtp_server: SMTPTestServer) -> None:
    result = run(
        *plain_args(smtp_server),
        "--sender",
        "me@example.com",
        "--subject",
        "H",
        "--recipients",
        "a@example.com",
        "--body",
        "<h1>Hi</h1>",
        "--html",
    )
    assert result.returncode == 0, result.stderr
    msg = smtp_server.messages[0].message
    html = msg.get_body(preferencelist=("html",))
    assert html is not None
    assert "<h1>Hi</h1>" in html.get_content()
    plain = msg.get_body(preferencelist=("plain",))  # the automatic text part
    assert plain is not None
    assert "Hi" in plain.get_content()


def test_attachments(smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    first = tmp_path / "report.csv"
    first.write_text("a,b\n1,2\n")
    second = tmp_path / "notes.txt"
    second.write_text("notes\n")
    result = run(
        *plain_args(smtp_server),
        "--sender",
        "me@example.com",
        "--subject",
        "A",
        "--recipients",
        "a@example.com",
        "--body",
        "see attached",
        "--attachments",
        str(first),
        "--attachments",
        str(second),
    )
    assert result.returncode == 0, result.stderr
    msg = smtp_server.messages[0].message
    attached = {a.get_filename(): a.get_content() for a in msg.iter_attachments()}
    assert set(attached) == {"report.csv", "notes.txt"}
    assert attached["notes.txt"].replace("\r\n", "\n") == "notes\n"


def test_cc_bcc_reply_to_and_several_recipients(smtp_server: SMTPTestServer) -> None:
    result = run(
        *plain_args(smtp_server),
        "--sender",
        "me@example.com",
        "--subject",
        "Copies",
        "--recipients",
        "a@example.com",
        "--recipients",
        "B <b@example.com>",
        "--cc",
        "c@example.com",
        "--cc",
        "d@example.com",
        "--bcc",
        "hidden@example.com",
        "--reply-to",
        "replies@example.com",
        "--body",
        "x",
    )
    assert result.returncode == 0, result.stderr
    received = smtp_server.messages[0]
    assert sorted(received.rcpt_tos) == sorted(
        ["a@example.com", "b@example.com", "c@example.com", "d@example.com", "hidden@example.com"]
    )
    msg = received.message
    assert msg["To"] == "a@example.com, B <b@example.com>"
    assert msg["Cc"] == "c@example.com, d@example.com"
    assert msg["Reply-To"] == "replies@example.com"
    assert "Bcc" not in msg
    assert b"hidden@example.com" not in received.data


def test_host_with_domain(smtp_server: SMTPTestServer) -> None:
    result = run(
        "--type",
        "smtp",
        "--host",
        "127.0.0.1:mycompany.com",
        "--port",
        str(smtp_server.port),
        "--sender",
        "me@example.com",
        "--subject",
        "D",
        "--recipients",
        "a@example.com",
        "--body",
        "x",
    )
    assert result.returncode == 0, result.stderr
    assert smtp_server.messages[0].message["Message-ID"].endswith("@mycompany.com>")


def test_settings_from_the_environment(smtp_server: SMTPTestServer) -> None:
    result = run(
        "--subject",
        "Env",
        "--recipients",
        "a@example.com",
        "--body",
        "x",
        env={
            "FLUXMAIL_TYPE": "smtp",
            "FLUXMAIL_HOST": "127.0.0.1",
            "FLUXMAIL_PORT": str(smtp_server.port),
            "FLUXMAIL_SENDER": "env@example.com",
        },
    )
    assert result.returncode == 0, result.stderr
    assert smtp_server.messages[0].mail_from == "env@example.com"


# --- dry run, version, help -----------------------------------------------------------------


@pytest.mark.parametrize("via", ["flag", "env", "both"])
def test_dry_run(starttls_server: SMTPTestServer, via: str) -> None:
    password = "Dry-run-pa55-Qx"
    args = [
        "--type",
        "smtp",
        "--host",
        "localhost",
        "--port",
        str(starttls_server.port),
        "--tls",
        "--username",
        USERNAME,
        "--subject",
        "Preview",
        "--recipients",
        "friend@example.com",
        "--bcc",
        "hidden@example.com",
        "--body",
        "Hi!",
        "--dry-run",
    ]
    env = {}
    if via in ("flag", "both"):
        args += ["--password", password]
    if via in ("env", "both"):
        env["FLUXMAIL_PASSWORD"] = password if via == "env" else "Env-pa55-Other"
    result = run(*args, env=env)
    assert_no_password(result, "Env-pa55-Other")
    assert result.returncode == 0, result.stderr
    assert "Preview" in result.stdout
    assert "friend@example.com" in result.stdout
    assert "Hi!" in result.stdout
    assert "Traceback" not in result.stderr
    assert_no_password(result, password)
    assert starttls_server.connections == 0


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert fluxmail.__version__ in result.stdout
    assert result.stdout.startswith("fluxmail")


def test_help_is_fast_and_complete() -> None:
    run("--help")  # warm the file cache
    # CPU time of the child, not wall time: other test workers share the machine.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = run("--help")
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert result.returncode == 0
    for flag in (
        "--type", "--host", "--port", "--tls", "--ssl", "--username", "--password",
        "--subject", "--recipients", "--cc", "--bcc", "--reply-to", "--sender", "--body",
        "--body-file", "--html", "--attachments", "--dry-run", "--timeout", "--max-retries",
        "--retry-delay", "--version", "demo",
    ):  # fmt: skip
        assert flag in result.stdout, flag
    assert cpu < 0.5, f"fluxmail --help used {cpu:.2f} s of CPU"
    assert elapsed < 5, f"fluxmail --help took {elapsed:.2f} s"


def test_help_never_shows_the_password_from_the_environment() -> None:
    result = run("--help", env={"FLUXMAIL_PASSWORD": "Help-leak-pa55"})
    assert result.returncode == 0
    assert_no_password(result, "Help-leak-pa55")


# --- bad usage: exit 2, one line, nothing sent -------------------------------------------------


USAGE_ERRORS: list[tuple[str, list[str]]] = [
    ("no body", []),
    ("both bodies", ["--body", "x", "--body-file", "{file}"]),
    ("tls and ssl", ["--body", "x", "--tls", "--ssl"]),
    ("malformed recipient", ["--body", "x", "--recipients", "not an address"]),
    ("malformed cc", ["--body", "x", "--cc", "nobody"]),
    ("CRLF in subject", ["--body", "x", "--subject", "Hi\r\nBcc: evil@example.com"]),
    ("LF in subject", ["--body", "x", "--subject", "Hi\nX-Evil: 1"]),
    ("missing attachment", ["--body", "x", "--attachments", "/no/such/file.pdf"]),
    ("missing body file", ["--body-file", "/no/such/body.txt"]),
    ("unknown flag", ["--body", "x", "--frobnicate"]),
    ("bad port", ["--body", "x", "--port", "abc"]),
    ("bad type", ["--body", "x", "--type", "fax"]),
    ("negative retries", ["--body", "x", "--max-retries", "-1"]),
]


@pytest.mark.parametrize(("extra"), [pytest.param(e, id=i) for i, e in USAGE_ERRORS])
def test_bad_usage(smtp_server: SMTPTestServer, tmp_path: Path, extra: list[str]) -> None:
    body_file = tmp_path / "body.txt"
    body_file.write_text("x")
    args = plain_args(
        smtp_server,
        "--sender",
        "me@example.com",
        "--subject",
        "S",
        "--recipients",
        "a@example.com",
    )
    args += [a.replace("{file}", str(body_file)) for a in extra]
    result = run(*args, env={"FLUXMAIL_PASSWORD": "never-shown-pw"})
    assert_one_line_error(result, 2)
    assert_no_password(result, "never-shown-pw")
    assert smtp_server.connections == 0
    assert result.stdout == ""


@pytest.mark.parametrize("missing", ["--type", "--host", "--subject", "--recipients"])
def test_missing_required_option(smtp_server: SMTPTestServer, missing: str) -> None:
    options = {
        "--type": "smtp",
        "--host": "127.0.0.1",
        "--subject": "S",
        "--recipients": "a@example.com",
    }
    del options[missing]
    args = [x for pair in options.items() for x in pair]
    result = run(
        *args, "--port", str(smtp_server.port), "--sender", "me@example.com", "--body", "x"
    )
    line = assert_one_line_error(result, 2)
    assert missing in line
    assert smtp_server.connections == 0


def test_no_arguments_at_all() -> None:
    result = run()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


# --- delivery failures: exit 1, one line -----------------------------------------------------


def test_closed_port() -> None:
    result = run(
        "--type",
        "smtp",
        "--host",
        "127.0.0.1",
        "--port",
        str(closed_port()),
        "--sender",
        "me@example.com",
        "--subject",
        "S",
        "--recipients",
        "a@example.com",
        "--body",
        "x",
        "--timeout",
        "5",
    )
    assert_one_line_error(result, 1, "connection_failed")


def test_wrong_password(starttls_server: SMTPTestServer, tls_env: dict[str, str]) -> None:
    wrong = "Wrong-pa55-Zk8"
    result = run(
        "--type",
        "smtp",
        "--host",
        "localhost",
        "--port",
        str(starttls_server.port),
        "--tls",
        "--username",
        USERNAME,
        "--subject",
        "S",
        "--recipients",
        "a@example.com",
        "--body",
        "x",
        env={**tls_env, "FLUXMAIL_PASSWORD": wrong},
    )
    assert_one_line_error(result, 1, "authentication_failed")
    assert_no_password(result, wrong, PASSWORD)
    assert starttls_server.messages == []


def test_wrong_password_given_as_flag(
    starttls_server: SMTPTestServer, tls_env: dict[str, str]
) -> None:
    wrong = "Flag-pa55-Mm3"
    result = run(
        "--type",
        "smtp",
        "--host",
        "localhost",
        "--port",
        str(starttls_server.port),
        "--tls",
        "--username",
        USERNAME,
        "--password",
        wrong,
        "--subject",
        "S",
        "--recipients",
        "a@example.com",
        "--body",
        "x",
        env=tls_env,
    )
    assert_one_line_error(result, 1, "authentication_failed")
    assert_no_password(result, wrong)


def test_untrusted_certificate(untrusted_server: SMTPTestServer) -> None:
    assert untrusted_server.ca_pem is not None
    result = run(
        "--type",
        "smtp",
        "--host",
        "localhost",
        "--port",
        str(untrusted_server.port),
        "--tls",
        "--sender",
        "me@example.com",
        "--subject",
        "S",
        "--recipients",
        "a@example.com",
        "--body",
        "x",
        env={"SSL_CERT_FILE": untrusted_server.ca_pem},
    )
    assert_one_line_error(result, 1, "tls_verify_failed")
    assert untrusted_server.messages == []


def test_tls_not_offered(smtp_server: SMTPTestServer) -> None:
    result = run(
        *plain_args(smtp_server),
        "--tls",
        "--sender",
        "me@example.com",
        "--subject",
        "S",
        "--recipients",
        "a@example.com",
        "--body",
        "x",
    )
    assert_one_line_error(result, 1, "tls_required")
    assert smtp_server.messages == []


def test_refused_recipient(make_server: MakeServer) -> None:
    server = make_server(reject_rcpt={"gone@example.com": 550})
    result = run(
        *plain_args(server),
        "--sender",
        "me@example.com",
        "--subject",
        "S",
        "--recipients",
        "gone@example.com",
        "--body",
        "x",
    )
    line = assert_one_line_error(result, 1, "recipients_refused")
    assert "gone@example.com" in line
    assert server.messages == []


def test_outlook_on_linux(tmp_path: Path) -> None:
    if sys.platform == "win32":
        pytest.skip("Outlook may exist on Windows")
    result = run(
        "--type", "outlook", "--subject", "S", "--recipients", "a@example.com", "--body", "x"
    )
    line = assert_one_line_error(result, 1, "outlook_unavailable")
    assert "Windows" in line


# --- the CLI speaks in flags ----------------------------------------------------------------

API_ARGUMENTS = ("use_tls", "use_ssl", "allow_insecure_auth", "object_type", "sender=", "create(")
MESSAGE = ("--subject", "S", "--recipients", "a@example.com", "--body", "x")


def assert_in_flags(line: str) -> None:
    for word in API_ARGUMENTS:
        assert word not in line, line


def test_debug_prints_the_transcript_with_auth_redacted(
    starttls_server: SMTPTestServer, tls_env: dict[str, str]
) -> None:
    result = run(
        "--debug", "--type", "smtp", "--host", "localhost", "--port", str(starttls_server.port),
        "--tls", "--username", USERNAME, *MESSAGE,
        env={**tls_env, "FLUXMAIL_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == SUCCESS
    lines = result.stderr.splitlines()
    assert "fluxmail: C: STARTTLS" in lines
    assert any(line.startswith("fluxmail: S: 220") for line in lines)
    auth = [line for line in lines if "C: AUTH" in line]
    assert auth, result.stderr
    assert all("[redacted]" in line for line in auth)
    assert any(line.startswith("fluxmail: C: MAIL FROM:<") for line in lines)
    assert_no_password(result, PASSWORD)
    import base64

    for secret in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in result.stderr
    assert len(starttls_server.messages) == 1


def test_without_debug_nothing_on_stderr(smtp_server: SMTPTestServer) -> None:
    result = run(*plain_args(smtp_server), "--sender", "me@example.com", *MESSAGE)
    assert result.returncode == 0
    assert result.stderr == ""


def test_body_file_dash_reads_stdin(smtp_server: SMTPTestServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXMAIL_")}
    done = subprocess.run(
        [str(FLUXMAIL), *plain_args(smtp_server), "--sender", "me@example.com",
         "--subject", "S", "--recipients", "a@example.com", "--body-file", "-"],
        input="Körper aus stdin\n".encode(),
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = smtp_server.messages[0].message.get_content()
    assert body.strip() == "Körper aus stdin"


def test_allow_insecure_auth_flag(make_server: MakeServer) -> None:
    server = make_server(auth=True)
    args = [*plain_args(server), "--username", USERNAME, *MESSAGE]
    refused = run(*args, env={"FLUXMAIL_PASSWORD": PASSWORD})
    line = assert_one_line_error(refused, 1, "tls_required")
    assert "--allow-insecure-auth only for a trusted local relay" in line
    assert "use --tls (STARTTLS, port 587) or --ssl (implicit TLS, port 465)" in line
    assert_in_flags(line)
    assert server.messages == []
    sent = run(*args, "--allow-insecure-auth", env={"FLUXMAIL_PASSWORD": PASSWORD})
    assert sent.returncode == 0, sent.stderr
    assert len(server.messages) == 1
    assert_no_password(sent, PASSWORD)


def test_after_n_attempts_when_retries_ran() -> None:
    args = ["--type", "smtp", "--host", "127.0.0.1", "--port", str(closed_port()),
            "--sender", "me@example.com", *MESSAGE, "--retry-delay", "0.01"]  # fmt: skip
    line = assert_one_line_error(run(*args, "--max-retries", "2"), 1, "connection_failed")
    assert line.endswith("(after 3 attempts) [connection_failed]")
    once = assert_one_line_error(run(*args), 1, "connection_failed")
    assert "attempts" not in once


def test_no_sender_names_flags(smtp_server: SMTPTestServer) -> None:
    line = assert_one_line_error(run(*plain_args(smtp_server), *MESSAGE), 2, "invalid_address")
    assert "pass --sender, or use an email address as --username" in line
    assert_in_flags(line)


def test_tls_not_offered_names_flags(smtp_server: SMTPTestServer) -> None:
    result = run(*plain_args(smtp_server), "--tls", "--sender", "me@example.com", *MESSAGE)
    line = assert_one_line_error(result, 1, "tls_required")
    assert "--tls asks for STARTTLS" in line
    assert "use --ssl" in line
    assert_in_flags(line)


def test_outlook_messages_name_flags() -> None:
    if sys.platform == "win32":
        pytest.skip("Outlook may exist on Windows")
    line = assert_one_line_error(run("--type", "outlook", *MESSAGE), 1, "outlook_unavailable")
    assert "use --type smtp" in line
    assert_in_flags(line)


def test_a_password_without_username_names_the_flags(smtp_server: SMTPTestServer) -> None:
    result = run(
        *plain_args(smtp_server), "--sender", "me@example.com", *MESSAGE,
        env={"FLUXMAIL_PASSWORD": "Pw-0nly-Zq9"},
    )  # fmt: skip
    line = assert_one_line_error(result, 2, "invalid_option")
    assert "(--password or FLUXMAIL_PASSWORD) was given without --username" in line
    assert_no_password(result, "Pw-0nly-Zq9")
