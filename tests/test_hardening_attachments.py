"""Rule 7 of docs/security.md: an attachment is the exact path given, a regular file only
(no directory, device or FIFO, not even one swapped in after create()), nothing is ever
fetched from a URL, and the header carries the base name only. Large files are encoded
block by block (memory: tests/test_load.py). API sync and async, BulkSender and the CLI.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fluxmail import FluxMail
from fluxmail.errors import AttachmentNotFoundError, InvalidMessageError
from hardening import MODES, run_batch, send, send_created
from helpers import assert_one_line_error, plain_args
from helpers import run as run_cli
from servers import SMTPTestServer

MakeServer = Callable[..., SMTPTestServer]
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def mailer_for(server: SMTPTestServer) -> FluxMail:
    return FluxMail(**server.fluxmail_kwargs(sender="a@example.com"))


def create(mailer: FluxMail, attachment: object) -> FluxMail:
    return mailer.create(
        subject="s", recipients=["b@example.com"], body="see attached", attachments=[attachment]
    )


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every request it gets."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"%PDF-1.4 fetched")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


# --- refused at create(), before any connection ----------------------------------------


def test_directory_device_and_missing_file_are_refused(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    mailer = mailer_for(smtp_server)
    with pytest.raises(InvalidMessageError, match="not a regular file"):
        create(mailer, tmp_path)
    with pytest.raises(InvalidMessageError, match="not a regular file"):
        create(mailer, os.devnull)
    with pytest.raises(AttachmentNotFoundError):
        create(mailer, tmp_path / "missing.pdf")
    assert smtp_server.connections == 0


@needs_fifo
def test_fifo_is_refused_without_blocking(smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(InvalidMessageError, match="not a regular file"):
        create(mailer_for(smtp_server), fifo)
    assert time.monotonic() - started < 1
    assert smtp_server.connections == 0


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_urls_are_never_fetched(
    smtp_server: SMTPTestServer, web: tuple[str, list[str]], tmp_path: Path, scheme: str
) -> None:
    base, requests = web
    real = tmp_path / "report.pdf"
    real.write_bytes(b"%PDF-1.4 local")
    url = f"{base}/report.pdf" if scheme == "http" else real.as_uri()
    with pytest.raises(AttachmentNotFoundError):
        create(mailer_for(smtp_server), url)
    assert requests == []
    assert smtp_server.connections == 0


def test_home_and_variables_are_not_expanded(
    smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("x")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DIR", str(tmp_path))
    for path in ("~/secret.txt", "$DIR/secret.txt", f"{tmp_path}/*.txt"):
        with pytest.raises(AttachmentNotFoundError):
            create(mailer_for(smtp_server), path)


# --- what is sent: the base name only ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_header_carries_the_base_name_only(
    smtp_server: SMTPTestServer, tmp_path: Path, mode: str
) -> None:
    folder = tmp_path / "private" / "customers"
    folder.mkdir(parents=True)
    (folder / "invoice.pdf").write_bytes(b"%PDF-1.4")
    path = str(folder / ".." / "customers" / "invoice.pdf")
    send(
        mailer_for(smtp_server),
        mode,
        subject="s",
        recipients=["b@example.com"],
        body="x",
        attachments=[path],
    )
    data = smtp_server.messages[0].data
    assert b"private" not in data
    assert b"customers" not in data
    (attachment,) = smtp_server.messages[0].message.iter_attachments()
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content() == b"%PDF-1.4"


# --- swapped after create(): re-checked when the file is read -----------------------------


def swap_for_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def swap_for_device(path: Path) -> None:
    path.unlink()
    path.symlink_to(os.devnull)


def swap_for_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


@needs_fifo
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("swap", [swap_for_fifo, swap_for_device, swap_for_directory])
def test_file_swapped_after_create_is_refused_before_connecting(
    smtp_server: SMTPTestServer, tmp_path: Path, mode: str, swap: Callable[[Path], None]
) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4")
    mailer = create(mailer_for(smtp_server), path)
    swap(path)
    started = time.monotonic()
    with pytest.raises(InvalidMessageError, match="not a regular file"):
        send_created(mailer, mode)
    assert time.monotonic() - started < 1  # a FIFO never blocks the send
    assert smtp_server.connections == 0


@needs_fifo
@pytest.mark.parametrize("mode", MODES)
def test_bulk_message_with_a_fifo_fails_alone(
    smtp_server: SMTPTestServer, tmp_path: Path, mode: str
) -> None:
    fifo = tmp_path / "pipe.bin"
    os.mkfifo(fifo)
    messages = [
        {"subject": f"m{i}", "recipients": ["b@example.com"], "body": "x", "sender": "a@x.org"}
        for i in range(3)
    ]
    messages[1]["attachments"] = [str(fifo)]
    result = run_batch(FluxMail(**smtp_server.fluxmail_kwargs()), messages, mode)
    assert (result["sent"], result["failed"]) == (2, 1)
    assert result["errors"][0][0] == 1
    assert len(smtp_server.messages) == 2


# --- the CLI ------------------------------------------------------------------------------


@needs_fifo
def test_cli_refuses_directories_and_fifos(smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        args = plain_args(smtp_server, "--sender", "a@example.com", "--subject", "s")
        result = run_cli(
            *args, "--recipients", "b@example.com", "--body", "x", "--attachments", str(path)
        )
        assert "not a regular file" in assert_one_line_error(result, 2, "invalid_message")
    assert smtp_server.connections == 0
