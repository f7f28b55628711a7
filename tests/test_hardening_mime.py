"""Rules 18 and 19 of docs/security.md: text attachments declare their charset (or are
sent as octet-stream), and attachment names are RFC 2231 parameters, never RFC 2047
inside quotes. Every message is also parsed with Python's ``email`` (policy.default)
and must have no defect."""

from __future__ import annotations

import email
import email.message
import email.policy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from hardening import MODES, run_batch, send
from helpers import plain_args
from helpers import run as run_cli
from servers import FaultServer

MakeFault = Callable[..., FaultServer]
UTF8_TEXT = "naïve café, déjà vu: ünïcödé ✓\n"
LATIN1 = "naïve café\n".encode("latin-1")


def message(**extra: Any) -> dict[str, Any]:
    return {
        "subject": "s",
        "recipients": ["to@example.com"],
        "body": "b",
        "sender": "me@x.org",
        **extra,
    }


def parsed(raw: bytes) -> email.message.EmailMessage:
    """The message as Python's parser reads it; no defect anywhere in it."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    for part in msg.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
        for name, value in part.items():
            assert not getattr(value, "defects", ()), (name, value.defects)
    return msg


def attachments(msg: email.message.EmailMessage) -> list[email.message.EmailMessage]:
    return [p for p in msg.iter_attachments() if isinstance(p, email.message.EmailMessage)]


# --- rule 18: the charset of text attachments ------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_text_attachments_declare_their_charset(
    make_fault_server: MakeFault, mode: str, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(UTF8_TEXT.encode())
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"a,b\r\n1,2\r\n")
    legacy = tmp_path / "legacy.txt"
    legacy.write_bytes(LATIN1)
    items = [
        str(notes),
        str(plain),
        str(legacy),
        ("memo.txt", UTF8_TEXT.encode(), "text/plain"),
        ("page.html", b"<p>\xff</p>", "text/html"),
        ("pic.png", b"\x89PNG\r\n", "image/png"),
    ]
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs())
    send(mailer, mode, **message(attachments=items))
    result = run_batch(mailer, [message(attachments=items)], mode)
    assert result["sent"] == 1
    for received in server.received:
        parts = attachments(parsed(received.data))
        kinds = [(p.get_content_type(), p.get_param("charset")) for p in parts]
        assert kinds == [
            ("text/plain", "utf-8"),
            ("text/csv", "us-ascii"),
            ("application/octet-stream", None),
            ("text/plain", "utf-8"),
            ("application/octet-stream", None),
            ("image/png", None),
        ]
        assert parts[0].get_content() == UTF8_TEXT  # the decoded text, exactly
        assert parts[3].get_content() == UTF8_TEXT
        assert parts[2].get_content() == LATIN1  # bytes kept as they are
        assert [p.get_filename() for p in parts][:3] == ["notes.txt", "plain.csv", "legacy.txt"]


def test_cli_text_attachment_declares_its_charset(
    make_fault_server: MakeFault, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(UTF8_TEXT.encode())
    server = make_fault_server()
    args = plain_args(server, "--sender", "me@x.org", "--subject", "s")  # type: ignore[arg-type]
    result = run_cli(
        *args, "--recipients", "to@example.com", "--body", "b", "--attachments", str(notes)
    )
    assert result.returncode == 0, result.stderr
    (part,) = attachments(parsed(server.received[0].data))
    assert part.get_param("charset") == "utf-8"
    assert part.get_content() == UTF8_TEXT


# --- rule 19: RFC 2231 names, never RFC 2047 inside quotes -----------------------------------

NAMES = ["Übersicht.pdf", "Relevé de compte — mai 2026.pdf", "日本語のファイル名" * 4 + ".txt"]


@pytest.mark.parametrize("mode", MODES)
def test_non_ascii_names_are_rfc2231_parameters(make_fault_server: MakeFault, mode: str) -> None:
    files = [(name, b"data %d" % i, "application/octet-stream") for i, name in enumerate(NAMES)]
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs())
    send(mailer, mode, **message(attachments=files))
    run_batch(mailer, [message(attachments=files)], mode)
    for received in server.received:
        head = received.data.decode("ascii")
        assert '="=?' not in head  # no encoded word inside a quoted parameter
        assert "name*=utf-8''%C3%9Cbersicht.pdf" in head
        assert "name*0*=utf-8''" in head  # the long one in RFC 2231 continuations
        parts = attachments(parsed(received.data))  # parsed() checks for defects
        assert [p.get_filename() for p in parts] == NAMES
        assert [p.get_param("name") for p in parts] == NAMES
        assert [p.get_content() for p in parts] == [data for _, data, _ in files]
