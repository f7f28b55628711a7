"""``fluxmail demo``: the whole stack against the built-in local server, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FLUXMAIL = Path(sys.executable).parent / ("fluxmail.exe" if os.name == "nt" else "fluxmail")
SUCCESS = "Email sent successfully via SMTP."


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    if not FLUXMAIL.exists():
        pytest.fail(f"{FLUXMAIL} is missing: pip install -e .")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLUXMAIL_") and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")
    }
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(
        [str(FLUXMAIL), "demo", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    return run_demo()


def test_demo_exits_zero_quietly(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stderr == ""  # no tracebacks, no stray library warnings


def test_demo_pipelines(demo: subprocess.CompletedProcess[str]) -> None:
    assert "'pipelining': True" in demo.stdout


def test_demo_sends_over_tls_with_auth(demo: subprocess.CompletedProcess[str]) -> None:
    out = demo.stdout
    assert "Local SMTP server on 127.0.0.1:" in out
    assert "test_connection(): {'ok': True" in out
    assert f"send(): {SUCCESS}" in out
    assert "over TLS:      yes" in out
    assert "authenticated: demo@fluxmail.test" in out


def test_demo_envelope_and_headers(demo: subprocess.CompletedProcess[str]) -> None:
    out = demo.stdout
    assert "envelope from: demo@fluxmail.test" in out
    envelope_to = next(line for line in out.splitlines() if "envelope to:" in line)
    for rcpt in ("ada@example.com", "team@example.com", "audit@example.com"):
        assert rcpt in envelope_to
    assert "Subject: Welcome to fluxmail ✉ — démo" in out
    assert "List-Unsubscribe: <https://example.com/unsubscribe?token=demo>" in out
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out


def test_demo_mime_structure(demo: subprocess.CompletedProcess[str]) -> None:
    out = demo.stdout
    assert "multipart/related" in out
    assert "multipart/alternative" in out
    assert "image/png" in out
    assert "Content-ID <logo>" in out
    assert "text/csv  (report-2026.csv)" in out


def test_demo_keeps_bcc_out_of_the_headers(demo: subprocess.CompletedProcess[str]) -> None:
    out = demo.stdout
    assert "Bcc in headers: no (envelope only)" in out
    headers = out.split("  headers:", 1)[1].split("  MIME structure:", 1)[0]
    assert "audit@example.com" not in headers
    assert "Bcc:" not in headers


def test_demo_never_prints_the_password(demo: subprocess.CompletedProcess[str]) -> None:
    # The password is random; AUTH PLAIN would show as base64 of "\0demo@fluxmail.test\0".
    assert "AGRlbW9AZmx1eG1haWwudGVzdA" not in demo.stdout + demo.stderr
    assert "password" not in demo.stdout.lower()


def test_demo_raw() -> None:
    result = run_demo("--raw")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MIME-Version: 1.0" in result.stdout
    assert "Content-Type: multipart/mixed" in result.stdout


def test_demo_shows_the_code_it_ran_and_what_to_try_next(
    demo: subprocess.CompletedProcess[str],
) -> None:
    out = demo.stdout
    assert "The code that ran" in out
    port = out.split("Local SMTP server on 127.0.0.1:", 1)[1].split(" ", 1)[0]
    code = out.split("The code that ran (HTML and PLAIN are the texts above):\n\n", 1)[1]
    code = code.split("Try next:", 1)[0]
    assert f"port={port}," in code
    assert "use_tls=True" in code
    assert "Try next:" in out
    assert "fluxmail serve" in out.split("Try next:", 1)[1]


def test_the_printed_code_runs(demo: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    """Run the code the demo printed, against a fresh server of the same kind: it is the
    code the demo ran, not a paraphrase of it."""
    import textwrap

    from fluxmail.cli._demo import HTML, PLAIN, demo_png
    from fluxmail.cli.localserver import LocalSMTPServer

    printed = demo.stdout.split("(HTML and PLAIN are the texts above):\n\n", 1)[1]
    code = textwrap.dedent(printed.split("Try next:", 1)[0])
    (tmp_path / "logo.png").write_bytes(demo_png())
    (tmp_path / "report-2026.csv").write_text("month,sent\nMay,1\n")
    with LocalSMTPServer(starttls=True, auth=("demo@fluxmail.test", "s3cret")) as server:
        port = code.split("port=", 1)[1].split(",", 1)[0]
        code = code.replace(f"port={port},", f"port={server.port},")
        namespace = {
            "server": server,
            "login": {"password": "s3cret"},
            "folder": tmp_path,
            "HTML": HTML,
            "PLAIN": PLAIN,
        }
        exec(compile(code, "<demo code>", "exec"), namespace)
        [received] = server.messages
    assert received.auth_user == "demo@fluxmail.test"
    assert received.tls
    assert "audit@example.com" in received.rcpt_tos
