"""A lean pipelining SMTP client: a same-run reference for a Python client with no rules.

A benchmark reference only (``bench.py``'s ``lean-pipelining`` row); nothing in ``src/``
imports it. It sends the bench's small and rich messages over one connection the fastest
way we know in pure Python, and skips everything a library must do:

- MIME from a template: the headers and parts are f-strings around the fixed test content
  (a fresh Date, Message-ID and boundary per message), no header folding, no encoding
  decisions, no address parsing or validation of any kind;
- the PDF is read from disk per message, as every contender does; its base64 is reused
  when the bytes are those of the previous message (compared in full);
- one write per message: message N's data and final dot go out together with message
  N+1's MAIL/RCPT/DATA (RFC 2920), then the 4 replies are read in one go. Dot-stuffing is
  done (a line starting with '.' would end the message) with one ``bytes.replace``;
- a reply is only checked for its first digit; any failure raises. No retries, no journal,
  no timeouts beyond the socket's.

If fluxmail comes close to this row, what is left is the price of its rules.
"""

from __future__ import annotations

import binascii
import os
import socket
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

CRLF = b"\r\n"


_last: list[bytes] = [b"", b""]  # the last file's bytes and their base64 lines


def _b64_lines(data: bytes) -> bytes:
    """Base64 in 76-column lines; the same bytes as last time reuse last time's lines."""
    if data == _last[0]:
        return _last[1]
    encoded = binascii.b2a_base64(data, newline=False)
    _last[:] = data, CRLF.join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + CRLF
    return _last[1]


def _text(body: str) -> bytes:
    return body.replace("\n", "\r\n").encode("ascii")


class LeanClient:
    """One connection; :meth:`send_all` pipelines a whole batch, one write per message."""

    def __init__(self, host: str, port: int, sender: str, rcpt: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
        self.replies(1)  # the greeting
        self.sock.sendall(b"EHLO lean.example\r\n")
        self.replies(1)

    def replies(self, count: int) -> None:
        """Read ``count`` replies (multi-line ones included); raise on anything not 2xx/3xx."""
        while True:
            lines = self.buf.split(CRLF)
            done = [line for line in lines[:-1] if line[3:4] != b"-"]
            if len(done) >= count:
                break
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.buf += data
        seen = 0
        for index, line in enumerate(lines[:-1]):
            if line[:1] not in b"23":
                raise RuntimeError(f"server said {line!r}")
            if line[3:4] != b"-":
                seen += 1
                if seen == count:
                    self.buf = CRLF.join(lines[index + 1 :])
                    return

    def send_all(self, messages: Iterator[bytes]) -> int:
        """Each message is built right before the previous one's final dot is written."""
        data = next(messages, None)
        if data is None:
            return 0
        self.sock.sendall(self.envelope)
        self.replies(3)
        sent = 0
        while data is not None:
            following = next(messages, None)
            if data.startswith(b"."):
                data = b"." + data
            data = data.replace(b"\r\n.", b"\r\n..") + b".\r\n"
            if following is not None:
                self.sock.sendall(data + self.envelope)
                self.replies(4)
            else:
                self.sock.sendall(data)
                self.replies(1)
            sent += 1
            data = following
        return sent

    def quit(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.replies(1)
        finally:
            self.sock.close()


def message(
    i: int, kind: str, sender: str, rcpt: str, texts: dict[str, str], pdf: Path | None
) -> bytes:
    """The bench's message ``i`` of ``kind``, from a template."""
    msgid = f"<{time.time_ns():x}.{os.urandom(6).hex()}@example.com>"
    head = (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: Benchmark message {i}\r\n"
        f"Date: {formatdate(localtime=True)}\r\nMessage-ID: {msgid}\r\nMIME-Version: 1.0\r\n"
    )
    if kind == "small":
        head += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n"
        return head.encode("ascii") + CRLF + _text(texts["small"])
    assert pdf is not None
    mixed, alt = "=_m" + os.urandom(8).hex(), "=_a" + os.urandom(8).hex()
    parts = [
        f'{head}Content-Type: multipart/mixed; boundary="{mixed}"\r\n\r\n'
        f'--{mixed}\r\nContent-Type: multipart/alternative; boundary="{alt}"\r\n\r\n'
        f"--{alt}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n".encode("ascii"),
        _text(texts["plain"]),
        f"\r\n--{alt}\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n".encode("ascii"),
        _text(texts["html"]),
        f"\r\n--{alt}--\r\n\r\n--{mixed}\r\n"
        f'Content-Type: application/pdf; name="{pdf.name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="{pdf.name}"\r\n\r\n'.encode("ascii"),
        _b64_lines(pdf.read_bytes()),
        f"\r\n--{mixed}--\r\n".encode("ascii"),
    ]
    return b"".join(parts)


def run(
    host: str,
    port: int,
    kind: str,
    count: int,
    *,
    sender: str,
    rcpt: str,
    texts: dict[str, str],
    pdf: Path | None,
) -> int:
    """Build ``count`` messages and send them over one connection; messages taken."""
    client = LeanClient(host, port, sender.rpartition("<")[2].rstrip(">"), rcpt)
    try:
        return client.send_all(message(i, kind, sender, rcpt, texts, pdf) for i in range(count))
    finally:
        client.quit()
