"""Message -> Composed: the MIME bytes and the SMTP envelope. Pure: no network, no clock
unless ``now`` is omitted, and files are read only for attachments.

The bytes are assembled directly (no ``email.message``), which keeps a small text message
in the tens of microseconds. Attachments are read and base64-encoded block by block
straight into the one buffer that becomes ``Composed.data``, so a 50 MB file costs about
one copy of the encoded message in memory, not several.

Output guarantees: CRLF line ends only, no line longer than 998 octets, headers folded
at 78 columns where possible, 7-bit clean except raw UTF-8 addresses when the message
needs SMTPUTF8 (RFC 6532). Bcc is not written (it lives in ``envelope.rcpt_to``), unless
the caller asks for ``bcc_header=True``: Microsoft Graph reads the recipients from the
headers and removes Bcc itself on delivery.

MIME structure, from the inside out::

    text/plain                      body (html_body=False)
    text/html                       body (html_body=True)
    multipart/related               text/html + inline images (Content-ID, inline)
    multipart/alternative           text/plain (plain_body) first, then the HTML part,
                                    then text/calendar (invite=; see _calendar.py)
    multipart/mixed                 all of the above, then each attachment (and invite.ics)
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import IO

from ..envelope import Composed, Envelope, frozen_from
from ..errors import (
    AttachmentNotFoundError,
    ConfigurationError,
    InvalidAddressError,
    InvalidMessageError,
)
from ..message import Address, Attachment, Message
from ..message._address import normalize_domain
from ..message._fields import check_msg_id, new_message_id
from ..message._invite import Invite
from ._calendar import ICS_FILENAME
from ._calendar import render as render_invite
from ._mime import (
    HARD_LIMIT,
    address_header,
    base64_body,
    boundary,
    date_header,
    fold,
    param_tokens,
    text_body,
    text_charset,
    unstructured,
)
from ._preview import preview
from ._reuse import SHARED
from ._reuse import base64_lines as _base64_lines

__all__ = ["compose", "preview"]

#: A MIME part: its headers (ending in CRLF) and its payload as pieces written in order;
#: an Attachment piece stands for its base64 lines, encoded only when the bytes are written.
_Piece = bytes | Attachment
_Part = tuple[bytes, list[_Piece]]
_BLOCK = 57 * 16384  # bytes read per step: whole 76-column base64 lines, about 1.2 MB out

_MIME_VERSION = b"MIME-Version: 1.0\r\n"
_PRIORITY_HEADERS = {
    "high": "X-Priority: 1 (Highest)\r\nX-MSMail-Priority: High\r\nImportance: high\r\n",
    "normal": "X-Priority: 3 (Normal)\r\nX-MSMail-Priority: Normal\r\nImportance: normal\r\n",
    "low": "X-Priority: 5 (Lowest)\r\nX-MSMail-Priority: Low\r\nImportance: low\r\n",
}


def compose(
    message: Message,
    *,
    domain: str | None = None,
    now: datetime | None = None,
    message_id: str | None = None,
    bcc_header: bool = False,
) -> Composed:
    """Build the wire form of ``message``.

    ``domain`` names the right side of a generated Message-ID (default: the sender's
    domain); ``now`` fixes the Date header (a naive value is local time; default: now);
    ``message_id`` (``<x@y>``) replaces the generated one; ``bcc_header`` writes a Bcc
    header (for a transport that takes its recipients from the headers, never SMTP).
    """
    utf8 = message.needs_smtputf8
    msg_id = _message_id(message, domain, message_id)
    if now is None:
        now, date = _clock()
    else:
        date = date_header(now)
    header = _message_headers(message, msg_id, date, bcc_header)
    mime_headers, pieces = _structure(message, now)
    # the header block in one piece: one copy of a few hundred bytes, one check
    top = b"".join((header.encode("utf-8" if utf8 else "ascii"), _MIME_VERSION, mime_headers))
    clean = _clean_now(top)
    out = _Output([top, b"\r\n"])
    for piece in pieces:
        if isinstance(piece, Attachment):  # base64 in 76-column CRLF lines: clean
            for lines in _base64_blocks(piece):
                out.add(lines)
        else:
            clean = clean and _clean(piece)
            out.add(piece)
    data = out.value()
    del out
    rcpt_to = tuple(address.addr_spec for address in message.envelope_recipients)
    fields = {"mail_from": message.sender.addr_spec, "rcpt_to": rcpt_to, "smtputf8": utf8}
    envelope = frozen_from(Envelope, fields)
    return Composed._checked(envelope, data, msg_id, clean=clean)


class _Output:
    """The message bytes: pieces joined once (one copy) while they are small; beyond
    ``_JOIN_LIMIT`` written on into one buffer, so that a large attachment is never held
    twice (its blocks and the message made of them)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces
        self._held = sum(map(len, pieces))
        self._buffer: io.BytesIO | None = None

    def add(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._held += len(piece)
        if self._held > _JOIN_LIMIT:
            self._flush()

    def _flush(self) -> None:
        if self._buffer is None:
            self._buffer = io.BytesIO()
        for piece in self._pieces:
            self._buffer.write(piece)
        self._pieces, self._held = [], 0

    def value(self) -> bytes:
        if self._buffer is None:
            return b"".join(self._pieces)
        self._flush()
        return self._buffer.getvalue()  # the buffer itself, not a copy


_JOIN_LIMIT = 4 << 20


def _clean(piece: bytes) -> bool:
    """CRLF-only, ends with CRLF (or is empty), no line over 998 octets: so the whole
    message is, when every piece is (see ``Composed.clean``)."""
    if len(piece) < 1024 or len(piece) > _REMEMBERED_TEXT:
        return _clean_now(piece)
    return _clean_remembered(piece)  # a body shared by a batch: checked once


_REMEMBERED_TEXT = 1 << 15  # bodies up to this size are encoded and checked once per batch


@lru_cache(maxsize=32)
def _clean_remembered(piece: bytes) -> bool:
    return _clean_now(piece)


def _clean_now(piece: bytes) -> bool:
    crlf = piece.count(b"\r\n")
    if piece.count(b"\r") != crlf or piece.count(b"\n") != crlf:
        return False
    if piece and not piece.endswith(b"\r\n"):
        return False
    return len(piece) <= HARD_LIMIT or max(map(len, piece.split(b"\r\n"))) <= HARD_LIMIT


# --- headers ------------------------------------------------------------------------------


def _message_id(message: Message, domain: str | None, given: str | None) -> str:
    if given is not None:
        return check_msg_id(given, "message_id")
    host = message.sender.domain if domain is None else _id_domain(domain)
    return new_message_id(host)


@lru_cache(maxsize=32)
def _id_domain(domain: str) -> str:
    try:
        return normalize_domain(domain, "domain")
    except InvalidAddressError as exc:
        raise ConfigurationError(f"domain: {exc.message}") from exc


def _pairs(addresses: tuple[Address, ...]) -> list[tuple[str, str]]:
    return [(address.display_name, address.addr_spec) for address in addresses]


_last_second: tuple[int, datetime, str] = (-1, datetime.min, "")


def _clock() -> tuple[datetime, str]:
    """Now (local time) and its Date header text, worked out once per second: a batch
    makes thousands of messages a second, all with the same Date."""
    global _last_second
    wall = time.time()
    second, moment, text = _last_second
    if second != int(wall):
        moment = datetime.fromtimestamp(wall).astimezone()
        text = date_header(moment)
        _last_second = (int(wall), moment, text)  # (one tuple: atomic for other threads)
    return moment, text


@lru_cache(maxsize=32)
def _from_header(display: str, spec: str) -> str:
    """The From line (pure): a batch has one sender, so it is folded once."""
    return address_header("From", [(display, spec)])


def _message_headers(message: Message, msg_id: str, date: str, bcc: bool = False) -> str:
    sender = message.sender
    lines = [f"Date: {date}\r\n", _from_header(sender.display_name, sender.addr_spec)]
    if message.reply_to:
        lines.append(address_header("Reply-To", _pairs(message.reply_to)))
    if message.recipients:
        lines.append(address_header("To", _pairs(message.recipients)))
    if message.cc:
        lines.append(address_header("Cc", _pairs(message.cc)))
    if bcc and message.bcc:
        lines.append(address_header("Bcc", _pairs(message.bcc)))
    lines.append(unstructured("Subject", message.subject))
    lines.append(f"Message-ID: {msg_id}\r\n")
    if message.in_reply_to:
        lines.append(f"In-Reply-To: {message.in_reply_to}\r\n")
    if message.references:
        lines.append(fold("References", message.references))
    if message.priority:
        lines.append(_PRIORITY_HEADERS[message.priority])
    if message.unsubscribe_url:
        lines.append(f"List-Unsubscribe: <{message.unsubscribe_url}>\r\n")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    for name, value in message.extra_headers:
        lines.append(unstructured(name, value, raw_ascii=True))
    return "".join(lines)


# --- body ---------------------------------------------------------------------------------


def _structure(message: Message, now: datetime) -> _Part:
    part = _text_part(message.body, "html" if message.html else "plain")
    if message.inline_images:
        images = [_file_part(image, "inline") for image in message.inline_images]
        part = _multipart("related", [part, *images], 'type="text/html";')
    alternatives = [part]
    if message.plain_body is not None:
        alternatives.insert(0, _text_part(message.plain_body, "plain"))
    attachments = message.attachments
    if message.invite is not None:
        calendar, ics = _invite_parts(message.invite, now)
        alternatives.append(calendar)
        attachments = (*attachments, ics)
    if len(alternatives) > 1:
        part = _multipart("alternative", alternatives)
    if attachments:
        files = [_file_part(attachment, "attachment") for attachment in attachments]
        part = _multipart("mixed", [part, *files])
    return part


def _invite_parts(invite: Invite, now: datetime) -> tuple[_Part, Attachment]:
    """The text/calendar alternative (its ``method`` equal to the METHOD inside) and the
    same calendar as an invite.ics file; why both: docs/guide.md, Calendar invites."""
    data = render_invite(invite, now)
    encoding, payload = ("7bit", data) if data.isascii() else ("base64", base64_body(data))
    headers = (
        f"Content-Type: text/calendar; method={invite.method}; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n"
    )
    ics = Attachment(ICS_FILENAME, "application/ics", len(data), data=data)
    return (headers.encode("ascii"), [payload]), ics


def _text_part(text: str, subtype: str) -> _Part:
    if len(text) <= _REMEMBERED_TEXT:
        encoding, payload = _text_body_remembered(text)
    else:
        encoding, payload = text_body(text)
    headers = (
        f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n"
    )
    return headers.encode("ascii"), [payload]


@lru_cache(maxsize=16)
def _text_body_remembered(text: str) -> tuple[str, bytes]:
    """:func:`text_body` (pure) of a body seen before: once per batch, not per message."""
    return text_body(text)


def _file_part(attachment: Attachment, disposition: str) -> _Part:
    lines = [
        fold(
            "Content-Type",
            [
                *_content_type(attachment),
                *param_tokens("name", attachment.filename),
            ],
        ),
        "Content-Transfer-Encoding: base64\r\n",
    ]
    if attachment.content_id:
        lines.append(f"Content-ID: <{attachment.content_id}>\r\n")
    lines.append(
        fold(
            "Content-Disposition",
            [f"{disposition};", *param_tokens("filename", attachment.filename)],
        )
    )
    return "".join(lines).encode("ascii"), [attachment]


def _content_type(attachment: Attachment) -> list[str]:
    """The type tokens; a text/* file gets its charset, or becomes octet-stream when its
    bytes are neither ASCII nor UTF-8 (the file is read once more for that)."""
    kind = attachment.content_type
    if not kind.startswith("text/"):
        return [f"{kind};"]
    charset = text_charset(_blocks(attachment))
    if charset is None:
        return ["application/octet-stream;"]
    return [f"{kind};", f"charset={charset};"]


def _blocks(attachment: Attachment) -> Iterator[bytes]:
    if attachment.data is not None:
        yield attachment.data
        return
    with _reading(attachment) as file:
        while block := file.read(_BLOCK):
            yield block


def _base64_blocks(attachment: Attachment) -> Iterator[bytes]:
    """The attachment as base64 in 76-column CRLF lines (RFC 2045 6.8), a block at a
    time; a file is re-opened as a regular file (never a FIFO or device swapped in after
    create()) and never held whole in memory."""
    data = attachment.data
    if data is not None:
        if type(data) is bytes and len(data) <= _BLOCK:  # (immutable: safe to remember)
            yield SHARED.lines(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), _BLOCK):
            yield _base64_lines(view[start : start + _BLOCK])
        return
    with _reading(attachment) as file:
        # sized by the file's size at create() (a read of _BLOCK would allocate ~1 MB)
        want = min(_BLOCK, max(attachment.size, 0) + 1)
        block = file.read(want)
        if len(block) < want:  # the whole file: one shared by a batch is encoded once
            if block:
                yield SHARED.lines(block)
            return
        if want < _BLOCK:  # it grew since: on in whole blocks (whole base64 lines)
            block += file.read(_BLOCK - want)
        while block:
            yield _base64_lines(block)
            block = file.read(_BLOCK)


@contextmanager
def _reading(attachment: Attachment) -> Iterator[IO[bytes]]:
    """The attachment's file, open; its OS errors as the errors ``create()`` would give."""
    try:
        with attachment.open() as file:
            yield file
    except FileNotFoundError as exc:
        raise AttachmentNotFoundError(
            f"attachments: {str(attachment.path)!r} disappeared before sending"
        ) from exc
    except OSError as exc:
        raise InvalidMessageError(
            f"attachments: cannot read {str(attachment.path)!r}: {exc.strerror}"
        ) from exc


def _multipart(subtype: str, parts: list[_Part], params: str = "") -> _Part:
    # Only literal bytes can contain the boundary: base64 has no '_' (see boundary()).
    literal = [piece for headers, pieces in parts for piece in (headers, *pieces)]
    marker = boundary([piece for piece in literal if isinstance(piece, bytes)])
    tokens = [f"multipart/{subtype};", *([params] if params else []), f'boundary="{marker}"']
    delimiter = b"--" + marker.encode("ascii")
    out: list[_Piece] = []
    for headers, pieces in parts:
        out += (delimiter + b"\r\n" + headers + b"\r\n", *pieces, b"\r\n")
    out.append(delimiter + b"--\r\n")
    return fold("Content-Type", tokens).encode("ascii"), out
