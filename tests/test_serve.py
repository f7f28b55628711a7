"""``fluxmail serve``: the installed command in a subprocess, fed by a real FluxMail."""

from __future__ import annotations

import email
import email.policy
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluxmail import BulkSender, FluxMail
from fluxmail._serve import summary
from fluxmail.localserver import ReceivedMessage

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
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True).start()
        first = self.line()
        assert first.startswith("fluxmail serve: listening on 127.0.0.1:"), first
        self.port = int(first.split("127.0.0.1:", 1)[1].split(" ", 1)[0])
        self.first = first

    def _pump(self, stream: Iterator[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 10) -> str:
        return self.lines.get(timeout=timeout)

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        status = self.process.wait(timeout=10)
        assert self.process.stderr is not None
        return status, self.process.stderr.read()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served("--dir", str(tmp_path / "mail"))
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(timeout=10)
    for pipe in (server.process.stdout, server.process.stderr):
        if pipe is not None:
            pipe.close()


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
