"""One contract for every transport: memory capture, console, file, SMTP sync, SMTP async.

Each test sends the same messages through every transport and checks what came out the
other end (the envelope, the parsed headers and the MIME parts): the outbox of a capture,
the console output, the ``.eml`` files, or what a real SMTP server on 127.0.0.1 received.
``test_every_transport_produces_the_same_message`` compares them with each other.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fluxmail import DKIM, BulkSender, FluxMail, InvalidAddressError
from fluxmail.testing import Outbox, capture
from fluxmail.transports.dev import RULE
from servers import SMTPTestServer

TRANSPORTS = ["memory", "console", "file", "smtp", "smtp-async"]
SUCCESS = "Email sent successfully via SMTP."
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@dataclass
class Delivered:
    """What one transport produced for one message."""

    mail_from: str
    rcpt_to: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def split_delivery(raw: bytes) -> Delivered:
    """Undo the Return-Path / Envelope-To lines the console and file transports add."""
    lines = raw.split(b"\r\n")
    assert lines[0].startswith(b"Return-Path: <"), lines[0]
    mail_from = lines[0][len(b"Return-Path: <") : -1].decode()
    assert lines[1].startswith(b"Envelope-To: ")
    envelope_to = lines[1][len(b"Envelope-To: ") :]
    index = 2
    while lines[index].startswith(b" "):
        envelope_to += lines[index]
        index += 1
    rcpt = [address.strip() for address in envelope_to.decode().split(",")]
    return Delivered(mail_from, rcpt, b"\r\n".join(lines[index:]))


class Harness:
    """Build a mailer for one transport, send through it, collect what it produced."""

    def __init__(
        self, kind: str, server: SMTPTestServer, folder: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.kind = kind
        self.server = server
        self.folder = folder
        self.capsys = capsys
        capsys.readouterr()

    def mailer(self, **options: Any) -> FluxMail:
        options = {"sender": "App <app@example.com>", **options}
        if self.kind == "console":
            return FluxMail(object_type="console", **options)
        if self.kind == "file":
            return FluxMail(object_type="file", host=self.folder, **options)
        return FluxMail(**self.server.fluxmail_kwargs(**options))

    def send(
        self, specs: list[dict[str, Any]], *, bulk: bool = False, **options: Any
    ) -> tuple[list[str], list[Delivered]]:
        mailer = self.mailer(**options)
        receipts: list[str] = []
        capturing: AbstractContextManager[Outbox | None] = (
            capture() if self.kind == "memory" else nullcontext()
        )
        with capturing as outbox:
            if bulk and self.kind == "smtp-async":
                asyncio.run(BulkSender(mailer).send_batch_async(specs, progress=False))
            elif bulk:
                BulkSender(mailer).send_batch(specs, progress=False)
            for spec in [] if bulk else specs:
                mailer.create(**spec)
                if self.kind == "smtp-async":
                    receipts.append(asyncio.run(mailer.send_async()))
                else:
                    receipts.append(mailer.send())
        return receipts, self.collect(outbox)

    def collect(self, outbox: Outbox | None) -> list[Delivered]:
        if outbox is not None:
            assert self.server.connections == 0  # a capture never touches the network
            return [Delivered(m.envelope.mail_from, list(m.recipients), m.data) for m in outbox]
        if self.kind == "console":
            return self._from_console(self.capsys.readouterr().out)
        if self.kind == "file":
            files = sorted(self.folder.glob("*.eml"))
            assert not list(self.folder.glob("*.part"))
            return [split_delivery(path.read_bytes()) for path in files]
        return [Delivered(r.mail_from, r.rcpt_tos, r.data) for r in self.server.messages]

    @staticmethod
    def _from_console(out: str) -> list[Delivered]:
        found: list[Delivered] = []
        block: list[str] | None = None
        for line in out.split("\n"):
            if line == RULE:
                if block is None:
                    block = []
                else:
                    raw = ("\r\n".join(block) + "\r\n").encode("utf-8")
                    found.append(split_delivery(raw))
                    block = None
            elif block is not None:
                block.append(line)
        return found


@pytest.fixture(params=TRANSPORTS)
def harness(
    request: pytest.FixtureRequest,
    smtp_server: SMTPTestServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Harness:
    return Harness(request.param, smtp_server, tmp_path / "eml", capsys)


def normalized(delivered: Delivered) -> dict[str, Any]:
    """Everything but what is random per send (Date, Message-ID, boundaries, signature)."""
    msg = delivered.message
    headers = [
        (name, re.sub(r'boundary="[^"]*"', 'boundary="*"', str(value)))
        for name, value in msg.items()
        if name not in ("Date", "Message-ID", "DKIM-Signature")
    ]
    parts = []
    for part in msg.walk():
        content = None if part.is_multipart() else part.get_content()
        parts.append((part.get_content_type(), part.get_filename(), part["Content-ID"], content))
    return {
        "mail_from": delivered.mail_from,
        "rcpt_to": sorted(delivered.rcpt_to),
        "headers": headers,
        "parts": parts,
    }


RICH: dict[str, Any] = {
    "subject": "Relevé mensuel — mai ✉",
    "recipients": ["Ada Lovelace <ada@example.org>", "Bob <bob@bücher.example>"],
    "cc": ["manager@example.org"],
    "bcc": ["archive@example.org"],
    "reply_to": ["Support <support@example.com>"],
    "body": '<h1><img src="cid:logo" alt="logo"> Report</h1><p>Numbers attached.</p>',
    "html_body": True,
    "attachments": [
        ("données été.csv", b"month,sent\r\nmai,4821\r\n", "text/csv"),
        ("report.bin", bytes(range(256)), "application/octet-stream"),
    ],
    "priority": "high",
    "in_reply_to": "<prev@example.com>",
    "references": ["<first@example.com>", "<prev@example.com>"],
    "unsubscribe_url": "https://example.com/unsubscribe?token=abc",
    "headers": {"X-Campaign": "may"},
}
PLAIN: dict[str, Any] = {
    "subject": "Hello",
    "recipients": ["friend@example.org"],
    "body": "Hi there!\nSecond line.",
}


class TestTransportContract:
    """Every transport: the same validation, the same bytes, the same envelope."""

    def test_plain_message(self, harness: Harness) -> None:
        receipts, (delivered,) = harness.send([PLAIN])
        assert receipts == [SUCCESS]
        assert delivered.mail_from == "app@example.com"
        assert delivered.rcpt_to == ["friend@example.org"]
        msg = delivered.message
        assert msg["From"] == "App <app@example.com>"
        assert msg["To"] == "friend@example.org"
        assert msg["Subject"] == "Hello"
        assert msg["Date"]
        assert receipts[0].message_id == msg["Message-ID"]  # type: ignore[attr-defined]
        assert msg.get_content_type() == "text/plain"
        assert msg.get_content().replace("\r\n", "\n") == "Hi there!\nSecond line.\n"

    def test_rich_message(self, harness: Harness, tmp_path: Path) -> None:
        logo = tmp_path / "logo.png"
        logo.write_bytes(PNG)
        _, (delivered,) = harness.send([{**RICH, "inline_images": {"logo": logo}}])
        assert delivered.mail_from == "app@example.com"
        assert sorted(delivered.rcpt_to) == sorted(
            [
                "ada@example.org",
                "bob@xn--bcher-kva.example",
                "manager@example.org",
                "archive@example.org",
            ]
        )
        msg = delivered.message
        assert "archive" not in delivered.data.decode("utf-8", "replace")
        assert msg["Bcc"] is None
        assert msg["Subject"] == "Relevé mensuel — mai ✉"
        assert msg["Reply-To"] == "Support <support@example.com>"
        assert msg["X-Priority"] == "1 (Highest)"
        assert msg["List-Unsubscribe"] == "<https://example.com/unsubscribe?token=abc>"
        assert msg["X-Campaign"] == "may"
        assert [p.get_content_type() for p in msg.walk()] == [
            "multipart/mixed",
            "multipart/alternative",
            "text/plain",
            "multipart/related",
            "text/html",
            "image/png",
            "text/csv",
            "application/octet-stream",
        ]
        image, csv, binary = list(msg.walk())[5:]
        assert image["Content-ID"] == "<logo>"
        assert image.get_content() == PNG
        assert csv.get_filename() == "données été.csv"
        assert csv.get_payload(decode=True) == b"month,sent\r\nmai,4821\r\n"
        assert binary.get_payload(decode=True) == bytes(range(256))

    def test_smtputf8_addresses(self, harness: Harness) -> None:
        _, (delivered,) = harness.send(
            [{"subject": "Grüße", "recipients": ["Jörg <jörg@example.org>"], "body": "Hallo"}]
        )
        assert delivered.rcpt_to == ["jörg@example.org"]
        assert "<jörg@example.org>\r\n".encode() in delivered.data

    def test_bad_input_raises_before_anything_is_produced(self, harness: Harness) -> None:
        mailer = harness.mailer()
        with pytest.raises(InvalidAddressError):
            mailer.create(**{**PLAIN, "bcc": ["not an address"]})
        assert harness.collect(None if harness.kind != "memory" else Outbox()) == []

    def test_bulk(self, harness: Harness) -> None:
        specs = [{**PLAIN, "subject": f"bulk {i}", "bcc": ["audit@example.org"]} for i in range(3)]
        _, delivered = harness.send(specs, bulk=True)
        assert sorted(str(d.message["Subject"]) for d in delivered) == [
            "bulk 0",
            "bulk 1",
            "bulk 2",
        ]
        for item in delivered:
            assert item.rcpt_to == ["friend@example.org", "audit@example.org"]
            assert b"audit" not in item.data

    def test_dkim_signature_survives_every_transport(self, harness: Harness) -> None:
        private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        dkim = DKIM(domain="example.com", selector="s1", private_key=pem)
        record = dkim.txt_record().encode()
        _, delivered = harness.send([RICH, PLAIN], dkim=dkim)
        for item in delivered:
            assert dkimpy.verify(item.data, dnsfunc=lambda name, timeout=5: record)

    def test_every_transport_produces_the_same_message(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        logo = tmp_path / "logo.png"
        logo.write_bytes(PNG)
        specs = [PLAIN, {**RICH, "inline_images": {"logo": logo}}]
        with capture() as reference:
            mailer = FluxMail(host="127.0.0.1", port=9, sender="App <app@example.com>")
            for spec in specs:
                mailer.create(**spec).send()
        expected = [
            normalized(Delivered(m.envelope.mail_from, list(m.recipients), m.data))
            for m in reference
        ]
        _, delivered = harness.send(specs)
        assert [normalized(item) for item in delivered] == expected
