"""Load: 5,000 messages on one connection in bounded memory, 250 recipients against a
server that takes 100 per transaction, and a 50 MB attachment delivered intact (and
refused before MAIL when the server's SIZE is smaller).

Memory is measured in a child process (the client alone, the server stays here), from
``/proc/self/status`` (VmRSS now, VmHWM for the peak), never in this process where other
tests and the servers allocate too. The slow ones are marked ``slow``; CI runs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import BulkSender, FluxMail, MessageTooLargeError
from hardening import MODES, assert_nothing_lost, run_batch, send
from servers import FaultServer, SMTPTestServer

MakeFault = Callable[..., FaultServer]
MakeServer = Callable[..., SMTPTestServer]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_child(code: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


# --- 5,000 messages, one connection, bounded memory ------------------------------------

BULK_CHILD = r"""
import asyncio, json, sys
from fluxmail import BulkSender, FluxMail

def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

port, mode, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
mailer = FluxMail(host="127.0.0.1", port=port, sender="news@example.com", timeout=10)
marks = {}

def on_success(index, receipt):
    if index + 1 in (1000, total):
        marks[index + 1] = rss_kib()

messages = (
    {"subject": f"issue {i}", "recipients": [f"reader{i}@example.com"],
     "body": f"Hello reader {i},\n\nthe news of the day.\n" * 20}
    for i in range(total)
)
sender = BulkSender(mailer)
if mode == "sync":
    result = sender.send_batch(messages, on_success=on_success, progress=False)
else:
    result = asyncio.run(
        sender.send_batch_async(messages, on_success=on_success, progress=False)
    )
print(json.dumps({"sent": result["sent"], "failed": result["failed"], "marks": marks}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_5000_messages_on_one_connection_in_bounded_memory(
    make_fault_server: MakeFault, mode: str
) -> None:
    server = make_fault_server()
    total = 5000
    report = run_child(BULK_CHILD, str(server.port), mode, str(total))
    assert (report["sent"], report["failed"]) == (total, 0)
    assert len(server.sessions) == 1  # one connection for the whole batch
    assert len(set(server.message_ids())) == total
    growth_kib = report["marks"][str(total)] - report["marks"]["1000"]
    assert growth_kib < 4 * 1024, f"RSS grew by {growth_kib} KiB over 4,000 messages"


# --- 250 recipients, 100 per transaction ----------------------------------------------


def recipients(count: int) -> list[str]:
    return [f"member{i:03d}@example.com" for i in range(count)]


def assert_each_recipient_once(transactions: list[list[str]], expected: list[str]) -> None:
    assert [len(t) for t in transactions] == [100, 100, 50]
    flat = [r for t in transactions for r in t]
    assert sorted(flat) == sorted(expected)  # each recipient exactly once


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["aiosmtpd", "fault"])
def test_250_recipients_against_100_per_transaction(
    make_server: MakeServer, make_fault_server: MakeFault, mode: str, kind: str
) -> None:
    server: Any = (
        make_server(max_recipients=100)
        if kind == "aiosmtpd"
        else make_fault_server(max_recipients=100)
    )
    everyone = recipients(250)
    mailer = FluxMail(**server.fluxmail_kwargs(sender="list@example.com"))
    receipt: Any = send(mailer, mode, subject="all", recipients=everyone, body="hello")
    assert sorted(receipt.accepted) == sorted(everyone)
    assert receipt.refused == {}
    assert_each_recipient_once([m.rcpt_tos for m in server.messages], everyone)
    assert len(set(server.message_ids())) == 1  # one message, in three transactions


@pytest.mark.parametrize("mode", MODES)
def test_bulk_messages_with_250_recipients(make_server: MakeServer, mode: str) -> None:
    server = make_server(max_recipients=100)
    lists = [recipients(250), [f"solo{i}@example.com" for i in range(3)]]
    messages = [
        {"subject": f"m{i}", "recipients": rcpts, "body": "x", "sender": "l@example.com"}
        for i, rcpts in enumerate(lists)
    ]
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), messages, mode)
    assert_nothing_lost(result, set(server.message_ids()), 2)
    big = [m.rcpt_tos for m in server.messages if m.message["Subject"] == "m0"]
    assert_each_recipient_once(big, lists[0])


# --- a 50 MB attachment ----------------------------------------------------------------

BIG_CHILD = r"""
import asyncio, json, sys
from fluxmail import FluxMail

def peak_kib():
    # VmHWM, the peak RSS of this process image. (ru_maxrss would not do: after fork and
    # exec it still counts the parent's memory at the time of the fork.)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

port, path, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
mailer = FluxMail(host="127.0.0.1", port=port, sender="a@example.com", timeout=60)
base = peak_kib()
mailer.create(subject="big", recipients=["b@example.com"], body="attached",
              attachments=[path])
if mode == "sync":
    mailer.send()
else:
    asyncio.run(mailer.send_async())
print(json.dumps({"growth_kib": peak_kib() - base}))
"""
FIFTY_MB = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def fifty_mb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("load") / "archive.bin"
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(50):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            file.write(block)
    return path, digest.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_50_mb_attachment_arrives_intact_in_bounded_memory(
    make_server: MakeServer, fifty_mb: tuple[Path, str], mode: str
) -> None:
    path, sha256 = fifty_mb
    server = make_server(size_limit=100 * 1024 * 1024)
    report = run_child(BIG_CHILD, str(server.port), str(path), mode)
    (received,) = server.messages
    (attachment,) = received.message.iter_attachments()
    assert attachment.get_filename() == "archive.bin"
    assert hashlib.sha256(attachment.get_content()).hexdigest() == sha256
    encoded = len(received.data)  # about 68 MB of base64
    # One copy of the encoded message (plus slack), where composing and sending used to
    # hold five or six.
    assert report["growth_kib"] * 1024 < 1.5 * encoded, report


@pytest.mark.parametrize("mode", MODES)
def test_50_mb_attachment_refused_before_mail_when_size_is_smaller(
    make_fault_server: MakeFault, fifty_mb: tuple[Path, str], mode: str
) -> None:
    path, _ = fifty_mb
    server = make_fault_server(capabilities=("PIPELINING", "SIZE 10485760", "8BITMIME"))
    mailer = FluxMail(**server.fluxmail_kwargs(sender="a@example.com"))
    with pytest.raises(MessageTooLargeError) as info:
        send(
            mailer, mode, subject="big", recipients=["b@example.com"], body="x", attachments=[path]
        )
    assert info.value.smtp_code == 552
    assert "10485760" in str(info.value)
    assert "MAIL" not in server.verbs()
    # a batch reports it for that message only and goes on
    messages = [
        {"subject": "big", "recipients": ["b@example.com"], "body": "x", "attachments": [path]},
        {"subject": "small", "recipients": ["b@example.com"], "body": "x"},
    ]
    sender = BulkSender(FluxMail(**server.fluxmail_kwargs(sender="a@example.com")))
    if mode == "sync":
        result = sender.send_batch(messages, progress=False)
    else:
        result = asyncio.run(sender.send_batch_async(messages, progress=False))
    assert (result["sent"], result["failed"]) == (1, 1)
    assert result["errors"][0][1].code == "message_too_large"
    assert len(server.messages) == 1
