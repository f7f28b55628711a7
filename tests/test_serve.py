"""``fluxmail serve``: the installed command in a subprocess, fed by a real FluxMail."""

from __future__ import annotations

import email
import email.policy
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluxmail import BulkSender, FluxMail
from fluxmail.cli._serve import summary
from fluxmail.cli.localserver import ReceivedMessage

FLUXMAIL = Path(sys.executable).parent / ("fluxmail.exe" if os.name == "nt" else "fluxmail")


class Served:
    """A running ``fluxmail serve`` whose stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [str(FLUXMAIL), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        self._pump_thread = threading.Thread(
            target=self._pump, args=(self.process.stdout,), daemon=True
        )
        self._pump_thread.start()
        self._pushed: list[str] = []
        try:
            self._read_banner()
        except BaseException:
            self.close()
            raise

    def _read_banner(self) -> None:
        first = self.line()
        assert first.startswith("fluxmail serve: listening on 127.0.0.1:"), first
        self.port = int(first.split("127.0.0.1:", 1)[1].split(" ", 1)[0])
        self.first = first
        # The indented lines after the first are the TLS set-up (where the CA is, the
        # export line); the banner ends with the "Ctrl-C" line, left for the test to read.
        self.banner = [first]
        while True:
            line = self.line()
            self.banner.append(line)
            if not line.startswith("  "):
                self._pushed.append(line)
                break
        tls_port = first.split(" and 127.0.0.1:")[1:]
        self.ssl_port = int(tls_port[0].split(" ")[0]) if tls_port else 0
        exports = [line.strip() for line in self.banner if "SSL_CERT_FILE=" in line]
        self.cert_file = exports[0].split("=", 1)[1] if exports else ""

    def _pump(self, stream: Iterator[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 10) -> str:
        if self._pushed:
            return self._pushed.pop()
        return self.lines.get(timeout=timeout)

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        status = self.process.wait(timeout=10)
        assert self.process.stderr is not None
        stderr = self.process.stderr.read()
        self.close()
        return status, stderr

    def close(self) -> None:
        """Kill the server if it still runs, wait for it and close both pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._pump_thread.join(timeout=10)  # it ends at EOF; then its pipe can be closed
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served("--dir", str(tmp_path / "mail"), "--cert-dir", str(tmp_path / "ca"))
    yield server
    server.close()


def test_serve_catches_prints_saves_and_stops_cleanly(served: Served, tmp_path: Path) -> None:
    assert str(tmp_path / "mail") in served.first
    assert "Ctrl-C" in served.line()
    mailer = FluxMail(host="127.0.0.1", port=served.port, sender="App <app@example.com>")
    mailer.create(
        subject="Grüße",
        recipients=["ada@example.org"],
        bcc=["audit@example.org"],
        body="Hello",
    ).send()
    line = served.line()
    assert "app@example.com -> ada@example.org, audit@example.org" in line
    assert '"Grüße"' in line
    assert line.endswith(" bytes")
    BulkSender(mailer).send_batch(
        [{"subject": f"bulk {i}", "recipients": ["b@example.org"], "body": "x"} for i in range(2)],
        progress=False,
    )
    assert '"bulk 0"' in served.line()
    assert '"bulk 1"' in served.line()
    status, stderr = served.stop()
    assert status == 0
    assert "Traceback" not in stderr
    assert served.line() == "fluxmail serve: stopped after 3 messages"
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 3
    subjects = {
        str(email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Subject"])
        for f in files
    }
    assert subjects == {"Grüße", "bulk 0", "bulk 1"}


def test_sigterm_stops_it_too(served: Served) -> None:
    status, _ = served.stop(signal.SIGTERM)
    assert status == 0


def test_a_busy_port_is_a_one_line_error(served: Served) -> None:
    result = subprocess.run(
        [str(FLUXMAIL), "serve", "--port", str(served.port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("fluxmail: error: cannot listen on 127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_summary_line() -> None:
    received = ReceivedMessage(
        mail_from="a@example.com",
        rcpt_tos=["b@example.org"],
        data=b"Subject: Hi \x1b[2J\r\n\r\nbody\r\n",
        tls=False,
        auth_user=None,
        received_at=time.monotonic(),
    )
    now = __import__("datetime").datetime(2026, 5, 1, 12, 0, 1)
    line = summary(received, now)
    assert line == '12:00:01  a@example.com -> b@example.org  "Hi \\x1b[2J"  26 bytes'


# --- TLS and AUTH: the API page's examples, unchanged but for host and port ----------------

# Copied from the API page as they are; only host/port are pointed at the local server.
API_PAGE_EXAMPLES = """
from fluxmail import FluxMail
email = FluxMail(
    object_type="smtp",
    host="smtp.gmail.com",
    port=587,
    use_tls=True,
    username="me@gmail.com",
    password="secret",
)
email.create(
    subject="Hello",
    recipients=["friend@example.com"],
    body="Hi there!",
).send()

email = FluxMail(
    object_type="smtp",
    host="smtp.sendgrid.net",
    port=587,
    use_tls=True,
    username="apikey",
    password="SG.xxxx",
)
email.create(
    subject="Hello",
    recipients=["user@example.com"],
    body="Hi!",
    sender="noreply@myapp.com",
).send()

FluxMail(object_type="smtp", host="smtp.gmail.com", port=587, use_tls=True,
    username="me@gmail.com", password="secret").create(
    subject="Quick Note",
    recipients=["friend@example.com"],
    body="Hi",
).send()

with FluxMail(object_type="smtp", host="smtp.gmail.com", port=587, use_tls=True,
    username="me@gmail.com", password="secret") as mailer:
    for user in ["a@example.com", "b@example.com"]:
        mailer.create(subject="Hi", recipients=[user], body="Hello").send()

FluxMail(
    object_type="smtp",
    host="smtp.example.com",
    port=465,
    use_ssl=True,
    username="me@example.com",
    password="secret",
).create(subject="Implicit", recipients=["x@example.com"], body="Hi").send()
print("ALL SENT")
"""


def pointed_at(served: Served) -> str:
    code = re.sub(r'host="smtp\.[a-z.]+"', 'host="localhost"', API_PAGE_EXAMPLES)
    return code.replace("port=587", f"port={served.port}").replace(
        "port=465", f"port={served.ssl_port}"
    )


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


@pytest.fixture
def tls_served(tmp_path: Path) -> Iterator[Served]:
    server = Served("--cert-dir", str(tmp_path / "ca"))
    yield server
    server.close()


def test_the_api_pages_tls_examples_run_with_the_printed_line(
    tls_served: Served, tmp_path: Path
) -> None:
    export = next(line.strip() for line in tls_served.banner if "SSL_CERT_FILE=" in line)
    assert export == f"export SSL_CERT_FILE={tmp_path / 'ca' / 'trust.pem'}"
    assert "Ctrl-C" in tls_served.line()
    result = run_python(pointed_at(tls_served), {"SSL_CERT_FILE": tls_served.cert_file})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ALL SENT"
    lines = [tls_served.line() for _ in range(6)]
    assert all(line.endswith("TLS  AUTH " + line.rsplit(" ", 1)[-1]) for line in lines), lines
    assert "AUTH me@gmail.com" in lines[0]
    assert "noreply@myapp.com -> user@example.com" in lines[1]
    assert "AUTH apikey" in lines[1]
    assert '"Implicit"' in lines[5]
    assert "AUTH me@example.com" in lines[5]


def test_without_the_line_the_certificate_does_not_verify(tls_served: Served) -> None:
    result = run_python(pointed_at(tls_served), {})
    assert result.returncode == 1
    assert "TLSVerifyError" in result.stderr
    assert "ALL SENT" not in result.stdout


def test_the_trust_bundle_keeps_the_system_cas(tls_served: Served) -> None:
    bundle = Path(tls_served.cert_file).read_text()
    ca = (Path(tls_served.cert_file).parent / "ca.pem").read_text()
    assert bundle.endswith(ca)
    system = ssl.get_default_verify_paths().cafile
    if system and Path(system).is_file():
        assert bundle.count("BEGIN CERTIFICATE") > ca.count("BEGIN CERTIFICATE")


def test_given_credentials_only(tmp_path: Path) -> None:
    served = Served("--cert-dir", str(tmp_path / "ca"), "--auth", "me@gmail.com:right")
    try:
        assert "AUTH as me@gmail.com only" in served.first
        assert "right" not in " ".join(served.banner)
        assert "Ctrl-C" in served.line()
        env = {"SSL_CERT_FILE": served.cert_file}
        send = (
            "from fluxmail import FluxMail\n"
            f"FluxMail(host='localhost', port={served.port}, use_tls=True,"
            " username='me@gmail.com', password={pw!r}).create(subject='s',"
            " recipients=['a@example.com'], body='b').send()"
        )
        wrong = run_python(send.format(pw="wrong"), env)
        assert wrong.returncode == 1
        assert "AuthenticationError" in wrong.stderr
        assert run_python(send.format(pw="right"), env).returncode == 0
        assert "AUTH me@gmail.com" in served.line()
    finally:
        served.stop()


def test_no_tls_and_details(tmp_path: Path) -> None:
    served = Served("--no-tls", "--details")
    try:
        assert "(no TLS, AUTH with any username and password)" in served.first
        assert not served.cert_file
        assert "Ctrl-C" in served.line()
        FluxMail(host="127.0.0.1", port=served.port, sender="a@example.com").create(
            subject="Détails", recipients=["b@example.com"], bcc=["c@example.com"], body="x"
        ).send()
        assert '"Détails"' in served.line()
        account = [served.line() for _ in range(3)]
        assert account[0] == "The server received:"
        assert account[1] == "  envelope from: a@example.com"
        assert account[2] == "  envelope to:   b@example.com, c@example.com"
    finally:
        served.stop()


def test_an_unwritable_cert_dir_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        [str(FLUXMAIL), "serve", "--port", "0", "--cert-dir", str(blocker / "ca")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("fluxmail: error: cannot write the CA to ")
    assert "--cert-dir" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
