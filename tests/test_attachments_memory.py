"""Attachments from memory, end to end: ``(filename, bytes, mime_type)`` tuples and open
binary files, with non-ASCII names (RFC 2231), through a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import os
import re
from pathlib import Path
from typing import Any

import pytest

from fluxmail import BulkSender, FluxMail, InvalidMessageError
from servers import SMTPTestServer

NAMES = [
    "Relevé de compte — mai 2026.pdf",
    "日本語のファイル名.txt",
    "Grüße aus Köln 🎉.png",
    'a "quoted" name; with=specials.txt',
    "ein sehr langer Dateiname mit Umlauten äöü, der weit über eine Zeile hinausgeht.csv",
]


def mailer(server: SMTPTestServer) -> FluxMail:
    return FluxMail(**server.fluxmail_kwargs(sender="App <app@example.com>"))


def attachments_of(server: SMTPTestServer, index: int = 0) -> list[tuple[str, bytes, str]]:
    msg = server.messages[index].message
    return [
        (part.get_filename() or "", part.get_payload(decode=True), part.get_content_type())
        for part in msg.iter_attachments()
    ]


def raw_headers(server: SMTPTestServer, index: int = 0) -> str:
    return server.messages[index].data.decode("ascii")


def test_non_ascii_names_round_trip_through_a_server(smtp_server: SMTPTestServer) -> None:
    files = [
        (name, os.urandom(300 + i), "application/octet-stream") for i, name in enumerate(NAMES)
    ]
    mailer(smtp_server).create(
        subject="Files", recipients=["ada@example.org"], body="See attached.", attachments=files
    ).send()
    assert attachments_of(smtp_server) == files
    raw = raw_headers(smtp_server)  # 7-bit on the wire: names are encoded
    assert "filename*=utf-8''Relev%C3%A9%20de%20compte%20%E2%80%94%20mai%202026.pdf" in raw
    assert re.search(r"filename\*0\*=utf-8''ein%20sehr", raw)  # RFC 2231 continuations
    assert "name*=utf-8''Relev%C3%A9" in raw  # name= in RFC 2231 form too
    assert 'name="=?utf-8?' not in raw  # never RFC 2047 inside quotes (RFC 2047 5)
    assert all(len(line) <= 998 for line in raw.split("\r\n"))


def test_types_given_or_guessed(smtp_server: SMTPTestServer) -> None:
    mailer(smtp_server).create(
        subject="Types",
        recipients=["ada@example.org"],
        body="x",
        attachments=[
            ("données.csv", b"a;b\r\n1;2\r\n", "text/csv"),
            ("photo.JPG", b"\xff\xd8\xff\xe0fake"),  # (filename, data): type from the name
            ("archive.tar.gz", b"\x1f\x8b\x08"),
            ("no-extension", b"\x00\x01"),
            ("Report.PDF", bytearray(b"%PDF-1.7"), "Application/PDF"),
            ("view.bin", memoryview(b"view bytes")),
        ],
    ).send()
    assert attachments_of(smtp_server) == [
        ("données.csv", b"a;b\r\n1;2\r\n", "text/csv"),
        ("photo.JPG", b"\xff\xd8\xff\xe0fake", "image/jpeg"),
        ("archive.tar.gz", b"\x1f\x8b\x08", "application/gzip"),
        ("no-extension", b"\x00\x01", "application/octet-stream"),
        ("Report.PDF", b"%PDF-1.7", "application/pdf"),
        ("view.bin", b"view bytes", "application/octet-stream"),
    ]


def test_open_binary_files(smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    on_disk = tmp_path / "Übersicht 2026.xlsx"
    on_disk.write_bytes(b"PK\x03\x04 spreadsheet")
    in_memory = io.BytesIO(bytes(range(256)) * 4)
    in_memory.name = "tous les octets — été.bin"
    sender = mailer(smtp_server)
    with on_disk.open("rb") as handle:
        sender.create(
            subject="Files",
            recipients=["ada@example.org"],
            body="x",
            attachments=[handle, in_memory],
        )
    in_memory.close()  # read at create(): closing afterwards is fine
    sender.send()
    assert attachments_of(smtp_server) == [
        (
            "Übersicht 2026.xlsx",
            b"PK\x03\x04 spreadsheet",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        ("tous les octets — été.bin", bytes(range(256)) * 4, "application/octet-stream"),
    ]


def test_large_and_empty(smtp_server: SMTPTestServer) -> None:
    big = os.urandom(1_500_000)
    mailer(smtp_server).create(
        subject="Big",
        recipients=["ada@example.org"],
        body="x",
        attachments=[("big.bin", big, None), ("empty.txt", b"", "text/plain")],
    ).send()
    (name, data, _), (empty_name, empty, kind) = attachments_of(smtp_server)
    assert (name, data) == ("big.bin", big)
    assert (empty_name, empty, kind) == ("empty.txt", b"", "text/plain")
    assert max(len(line) for line in smtp_server.messages[0].data.split(b"\r\n")) <= 78


def test_async_and_bulk(smtp_server: SMTPTestServer) -> None:
    sender = mailer(smtp_server)
    spec: dict[str, Any] = {
        "subject": "Bulk",
        "recipients": ["ada@example.org"],
        "body": "x",
        "attachments": [("facture n°1.pdf", b"%PDF", "application/pdf")],
    }

    async def run() -> None:
        sender.create(**spec)
        await sender.send_async()
        await BulkSender(sender).send_batch_async([spec], progress=False)

    asyncio.run(run())
    BulkSender(sender).send_batch([spec, spec], progress=False)
    assert len(smtp_server.messages) == 4
    for index in range(4):
        assert attachments_of(smtp_server, index) == [
            ("facture n°1.pdf", b"%PDF", "application/pdf")
        ]


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (("notes.txt", "text, not bytes", "text/plain"), "must be bytes"),
        (("../etc/passwd", b"x", "text/plain"), "not a file name"),
        (("a\r\nBcc: evil@example.org", b"x", "text/plain"), "file name"),
        (("file.txt", b"x", "not a type"), "MIME type"),
        (io.BytesIO(b"no name"), "no file name"),
    ],
)
def test_bad_items_fail_at_create(smtp_server: SMTPTestServer, item: object, match: str) -> None:
    with pytest.raises(InvalidMessageError, match=match):
        mailer(smtp_server).create(
            subject="x", recipients=["ada@example.org"], body="x", attachments=[item]
        )
    assert smtp_server.connections == 0


def test_text_mode_file_is_refused(smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with path.open() as handle, pytest.raises(InvalidMessageError, match="binary mode"):
        mailer(smtp_server).create(
            subject="x", recipients=["ada@example.org"], body="x", attachments=[handle]
        )
