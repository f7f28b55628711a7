"""BulkSender's progress bar as a person sees it: a child Python process whose stderr is a
real pseudo-terminal (``pty``), sending through a real local SMTP server; the test reads
the terminal's output from the master side."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest

from servers import SMTPTestServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")

COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # styling: dropped
MOVES = re.compile(r"\x1b\[[0-9;?]*[A-Za-ln-z]|\x1b\][^\x07]*\x07|\r")  # redraws: line breaks

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    {block_rich}
    from fluxmail import FluxMail
    from fluxmail.bulk import BulkSender

    port, mode, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    progress = {{"default": None, "true": True}}[sys.argv[4]]
    mailer = FluxMail(object_type="smtp", host="127.0.0.1", port=port,
                      sender="me@example.com")
    def specs():
        for n in range(count):
            yield {{"subject": f"n{{n}}", "recipients": ["a@example.com"], "body": "hi"}}
    messages = list(specs()) if mode != "generator" else specs()
    bulk = BulkSender(mailer)
    if mode == "async":
        result = asyncio.run(bulk.send_batch_async(messages, progress=progress,
                                                   max_per_second=25))
    else:
        result = bulk.send_batch(messages, progress=progress, max_per_second=25)
    print("RESULT", result["sent"], result["failed"], flush=True)
    """
)


def run_child(
    port: int,
    mode: str,
    count: int,
    *,
    tty: bool = True,
    progress: str = "default",
    without_rich: bool = False,
) -> tuple[int, str, str]:
    """Run the child; returns (status, stdout, what the terminal showed, ANSI stripped)."""
    block = "sys.modules['rich'] = None  # as if fluxmail[progress] were not installed"
    code = CHILD.format(block_rich=block if without_rich else "")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="160", LINES="40")
    args = [sys.executable, "-c", code, str(port), mode, str(count), progress]
    if not tty:
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, env=env, text=True) as child:
        os.close(slave)
        try:
            screen = read_terminal(master, child)
        except BaseException:
            child.kill()  # so leaving the with-block does not wait on a stuck child
            raise
        finally:
            os.close(master)
        assert child.stdout is not None
        stdout = child.stdout.read()
        status = child.wait(timeout=30)
    return status, stdout, MOVES.sub("\n", COLOURS.sub("", screen.decode("utf-8", "replace")))


def read_terminal(master: int, child: subprocess.Popen[str]) -> bytearray:
    """Everything the child draws on the terminal, until it closes it or exits."""
    screen = bytearray()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the child closed its end
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            screen += chunk
        elif child.poll() is not None:
            break
    return screen


def last_line_with(screen: str, needle: str) -> str:
    lines = [line for line in screen.splitlines() if needle in line]
    assert lines, f"{needle!r} never drawn; the terminal showed:\n{screen}"
    return lines[-1]


def rate_of(line: str) -> float:
    match = re.search(r"([0-9.]+) msg/s", line)
    assert match, f"no rate in {line!r}"
    return float(match.group(1))


@pytest.mark.parametrize("mode", ["list", "async"])
def test_bar_with_a_known_total_shows_count_rate_and_eta(
    smtp_server: SMTPTestServer, mode: str
) -> None:
    status, stdout, screen = run_child(smtp_server.port, mode, 12)
    assert status == 0, screen
    assert "Traceback" not in screen
    assert "Error" not in screen
    assert stdout.strip() == "RESULT 12 0"
    final = last_line_with(screen, "12/12")
    assert "12 sent" in final
    assert "0 failed" in final
    assert "ETA" in final
    assert re.search(r"\d+:\d\d:\d\d", final)
    # max_per_second=25: the rate the bar shows is that of a paced run, not nonsense.
    assert 5 <= rate_of(final) <= 40, final
    assert len(smtp_server.messages) == 12


def test_bar_for_a_generator_shows_count_and_rate(smtp_server: SMTPTestServer) -> None:
    status, stdout, screen = run_child(smtp_server.port, "generator", 9)
    assert status == 0, screen
    assert "Traceback" not in screen
    assert stdout.strip() == "RESULT 9 0"
    final = last_line_with(screen, "9 done")
    assert "9 sent" in final
    assert "0 failed" in final
    assert 5 <= rate_of(final) <= 40, final
    assert "ETA" not in final  # no total, so no honest ETA


def test_progress_true_draws_on_a_terminal(smtp_server: SMTPTestServer) -> None:
    status, _, screen = run_child(smtp_server.port, "list", 3, progress="true")
    assert status == 0, screen
    assert "3 sent" in last_line_with(screen, "3/3")


@pytest.mark.parametrize("progress", ["default", "true"])
def test_nothing_drawn_when_stderr_is_not_a_terminal(
    smtp_server: SMTPTestServer, progress: str
) -> None:
    status, stdout, stderr = run_child(smtp_server.port, "list", 4, tty=False, progress=progress)
    assert status == 0, stderr
    assert stdout.strip() == "RESULT 4 0"
    assert stderr == ""
    assert len(smtp_server.messages) == 4


@pytest.mark.parametrize("tty", [True, False])
def test_progress_true_without_rich_raises_on_every_stream(
    smtp_server: SMTPTestServer, tty: bool
) -> None:
    status, stdout, output = run_child(
        smtp_server.port, "list", 2, tty=tty, progress="true", without_rich=True
    )
    assert status == 1
    assert "MissingDependencyError" in output
    assert "rich" in output
    assert "RESULT" not in stdout
    assert smtp_server.messages == []


def test_default_without_rich_sends_quietly_on_a_terminal(smtp_server: SMTPTestServer) -> None:
    status, stdout, screen = run_child(smtp_server.port, "list", 2, without_rich=True)
    assert status == 0, screen
    assert stdout.strip() == "RESULT 2 0"
    assert "sending" not in screen
