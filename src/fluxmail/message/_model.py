"""Message, Address and Attachment: frozen values that create() builds and validates.

Validation is strict and happens before any connection: a value that cannot be sent
exactly as given raises a FluxMailException subclass; nothing is silently stripped.
:func:`build_message` is the one entry point; :func:`parse_address` and
:func:`parse_addresses` check mailboxes (rules in :mod:`fluxmail.message._address`).
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import IO, Any, Literal, Union

from ..envelope import frozen_from
from ..errors import AttachmentNotFoundError, InvalidAddressError, InvalidMessageError
from ._address import Address, check_text, parse_address, parse_addresses
from ._fields import (
    check_body,
    check_cid,
    check_extra_headers,
    check_msg_id,
    check_priority,
    check_references,
    check_subject,
    check_unsubscribe_url,
)
from ._fields import inline_css as _inline_css
from ._invite import Invite

__all__ = [
    "Address",
    "Attachment",
    "AttachmentSource",
    "Message",
    "Priority",
    "build_message",
    "parse_address",
    "parse_addresses",
]

Priority = Literal["high", "normal", "low"]
#: What ``attachments=`` takes per entry: a path, ``(filename, data[, mime_type])`` or an
#: open binary file object (read at create() time).
AttachmentSource = Union[
    str, "PathLike[str]", tuple[str, bytes], tuple[str, bytes, "str | None"], IO[bytes]
]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file to attach, as ``create()`` checked it. Exactly one of ``path`` / ``data``
    is set.

    You rarely build one: ``create(attachments=...)`` makes them from paths,
    ``(filename, data, mime_type)`` tuples and open files; ``message.attachments`` holds
    them. ``content_id`` is set (without angle brackets) for inline images, which are
    sent with ``Content-Disposition: inline`` inside multipart/related.

    Attributes:
        filename: the name the recipient sees (no path, no CR/LF).
        content_type: the MIME type (given, or guessed from the name).
        size: the size in bytes when ``create()`` checked it.
        path: the file, read at compose time (``None`` for data given in memory).
        data: the bytes given in memory (``None`` for a file).
        content_id: the ``cid:`` name of an inline image.

    Example:
        ```python
        message = mailer.build_message(subject="s", recipients="a@example.org", body=".",
                                       attachments=[("notes.txt", b"hello")])
        [attachment] = message.attachments
        assert (attachment.filename, attachment.content_type) == ("notes.txt", "text/plain")
        assert attachment.read_bytes() == b"hello"
        ```
    """

    filename: str
    content_type: str
    size: int
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    content_id: str | None = None

    def read_bytes(self) -> bytes:
        """The attachment's content: ``data``, or the file's bytes read now.

        Returns:
            The bytes to attach.

        Raises:
            OSError: the file is gone (``FileNotFoundError``) or is no longer a regular
                file (see :meth:`open`).

        Example:
            ```python
            Path("report.txt").write_bytes(b"figures")
            message = mailer.build_message(subject="s", recipients="a@example.org", body=".",
                                           attachments=["report.txt"])
            assert message.attachments[0].read_bytes() == b"figures"
            ```
        """
        if self.data is not None:
            return self.data
        with self.open() as file:
            return file.read()

    def open(self) -> IO[bytes]:
        """Open the file for reading, refusing anything but a regular file.

        create() checked the path; this re-checks the file actually opened, so a FIFO or
        a device put in its place later can neither block the send nor feed it endless
        data. Raises OSError (FileNotFoundError when the file is gone).
        """
        if self.path is None:
            return io.BytesIO(self.data or b"")
        return open_regular_file(self.path)


def open_regular_file(path: str | PathLike[str]) -> IO[bytes]:
    """``open(path, "rb")`` for a regular file only, without blocking on a FIFO."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a directory, device or pipe)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True)  # (no slots: build_message makes it with frozen_from)
class Message:
    """A validated email, independent of any transport: what ``create()`` holds.

    Frozen; built by ``FluxMail.build_message()`` / ``create()`` (or
    :func:`build_message`), which check every field, so a Message is always sendable
    as it is. ``mailer.message`` is the pending one; ``mailer.compose(message)`` turns
    it into bytes.

    Attributes:
        subject: the Subject.
        sender: the From mailbox.
        recipients: the To mailboxes.
        body: the text (or HTML, when ``html``).
        cc: the Cc mailboxes.
        bcc: the Bcc mailboxes (envelope only).
        reply_to: the Reply-To mailboxes.
        html: whether ``body`` is HTML.
        plain_body: the text alternative of an HTML message.
        attachments: the attachments.
        inline_images: the inline images (each with a ``content_id``).
        in_reply_to: the Message-ID answered.
        references: the thread's Message-IDs.
        priority: ``"high"``, ``"normal"``, ``"low"`` or None.
        unsubscribe_url: the one-click unsubscribe URL.
        extra_headers: the extra ``(name, value)`` headers.
        invite: the calendar invitation, attendees resolved (To + Cc by default).

    Example:
        ```python
        message = mailer.build_message(subject="Hi", recipients=["Ada <ada@example.org>"],
                                       bcc="audit@example.com", body="Hello")
        assert str(message.recipients[0]) == "Ada <ada@example.org>"
        assert [a.addr_spec for a in message.envelope_recipients] == [
            "ada@example.org", "audit@example.com"]
        ```
    """

    subject: str
    sender: Address
    recipients: tuple[Address, ...]
    body: str
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    html: bool = False
    plain_body: str | None = None
    attachments: tuple[Attachment, ...] = ()
    inline_images: tuple[Attachment, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    priority: Priority | None = None
    unsubscribe_url: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    invite: Invite | None = None  # attendees resolved (To + Cc by default)

    @property
    def envelope_recipients(self) -> tuple[Address, ...]:
        """To + Cc + Bcc, each mailbox once (first occurrence wins), in that order."""
        everyone = (*self.recipients, *self.cc, *self.bcc)
        if len(everyone) == 1:  # (most messages of a batch: nothing to compare)
            return everyone
        seen: set[str] = set()
        out: list[Address] = []
        for address in everyone:
            key = address.addr_spec.lower()
            if key not in seen:
                seen.add(key)
                out.append(address)
        return tuple(out)

    @property
    def needs_smtputf8(self) -> bool:
        """True when an address has a non-ASCII local part (RFC 6531/6532)."""
        for address in (self.sender, *self.recipients, *self.cc, *self.bcc, *self.reply_to):
            if address.needs_smtputf8:  # (a loop: no generator per message)
                return True
        return False


# --- validation ---------------------------------------------------------------------------


def build_message(
    *,
    subject: str,
    recipients: str | Sequence[str] | None,
    body: str,
    sender: str | Address,
    cc: str | Sequence[str] | None = None,
    bcc: str | Sequence[str] | None = None,
    reply_to: str | Sequence[str] | None = None,
    attachments: AttachmentSource | Iterable[AttachmentSource] | None = None,
    html_body: bool = False,
    plain_body: str | None = None,
    in_reply_to: str | None = None,
    references: str | Sequence[str] | None = None,
    priority: str | None = None,
    unsubscribe_url: str | None = None,
    inline_images: Mapping[str, str | PathLike[str]] | None = None,
    inline_css: bool = False,
    headers: Mapping[str, str] | None = None,
    auto_text: bool = True,
    invite: Invite | None = None,
) -> Message:
    """Validate everything ``create()`` receives and freeze it into a :class:`Message`.

    Nothing touches the network. Attachment files are checked now (they exist, are
    regular files and are readable) and read at compose time; file objects are read now.
    ``plain_body`` needs ``html_body=True``; ``inline_css`` is ignored without it. An HTML
    message without ``plain_body`` gets a text alternative made from the HTML unless
    ``auto_text=False``. Every error is a FluxMailException subclass whose message starts
    with the field name.
    """
    sender_address = parse_address(sender, field="sender")
    to = parse_addresses(recipients, field="recipients")
    copy = parse_addresses(cc, field="cc")
    blind = parse_addresses(bcc, field="bcc")
    if not (to or copy or blind):
        raise InvalidAddressError("recipients: at least one recipient is needed (to, cc or bcc)")
    html = _check_flag(html_body, "html_body")
    css = _check_flag(inline_css, "inline_css")  # checked even where unused: a typo shows
    auto = _check_flag(auto_text, "auto_text")
    text = check_body(body, "body")
    plain = None if plain_body is None else check_body(plain_body, "plain_body")
    if plain is not None and not html:
        raise InvalidMessageError("plain_body: only used together with html_body=True")
    if html and css:
        text = _inline_css(text)
    if html and plain is None and auto:
        from ._html2text import html_to_text

        plain = html_to_text(text) or None
    fields = {  # every field, by name: frozen_from (a Message() call costs more than this)
        "subject": check_subject(subject),
        "sender": sender_address,
        "recipients": to,
        "body": text,
        "cc": copy,
        "bcc": blind,
        "reply_to": parse_addresses(reply_to, field="reply_to"),
        "html": html,
        "plain_body": plain,
        "attachments": load_attachments(attachments),
        "inline_images": load_inline_images(inline_images, html=html),
        "in_reply_to": None if in_reply_to is None else check_msg_id(in_reply_to, "in_reply_to"),
        "references": check_references(references),
        "priority": check_priority(priority),
        "unsubscribe_url": check_unsubscribe_url(unsubscribe_url),
        "extra_headers": check_extra_headers(headers),
        "invite": _resolve_invite(invite, to + copy),
    }
    return frozen_from(Message, fields)


def _resolve_invite(invite: object, to_and_cc: tuple[Address, ...]) -> Invite | None:
    """``invite=``: an Invite, its attendees defaulting to To + Cc (Bcc stays private)."""
    if invite is None:
        return None
    if not isinstance(invite, Invite):
        raise InvalidMessageError(
            f"invite: expected a fluxmail.Invite, got {type(invite).__name__}"
        )
    from ..compose._calendar import load_icalendar

    load_icalendar()  # a missing [calendar] extra fails here, before any connection
    if invite.attendees is None:
        first: dict[str, Address] = {}
        for address in to_and_cc:  # each mailbox once, as in the envelope
            first.setdefault(address.addr_spec.lower(), address)
        invite = invite.with_attendees(first.values())
    if not invite.attendees:
        raise InvalidMessageError(
            "invite: no attendees; an invite needs at least one (they default to the "
            "To and Cc recipients, never Bcc): pass attendees= or add To/Cc recipients"
        )
    return invite


def _check_flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidMessageError(f"{field}: expected True or False, got {value!r}")
    return value


# --- attachments --------------------------------------------------------------------------

_COMPRESSED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}
_TOKEN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$&^_.+-")


def load_attachments(value: object) -> tuple[Attachment, ...]:
    """``attachments=``: one path, or a list of paths / (filename, data, type) / files."""
    if value is None:
        return ()
    if isinstance(value, (str, PathLike)):
        return (_load_one(value, "attachments[0]"),)
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise InvalidMessageError(
            f"attachments: expected a list of file paths, got {type(value).__name__}"
        )
    return tuple(_load_one(item, f"attachments[{i}]") for i, item in enumerate(value))


def load_inline_images(value: object, *, html: bool) -> tuple[Attachment, ...]:
    """``inline_images=``: ``{cid_name: path}``; needs an HTML body."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise InvalidMessageError(
            f"inline_images: expected a mapping of CID name to file path, "
            f"got {type(value).__name__}"
        )
    if value and not html:
        raise InvalidMessageError("inline_images: requires html_body=True")
    images = []
    for name, source in value.items():
        field = f"inline_images[{name!r}]"
        cid = check_cid(name, field)
        images.append(replace(_load_one(source, field), content_id=cid))
    return tuple(images)


def _load_one(item: object, field: str) -> Attachment:
    if isinstance(item, (str, PathLike)):
        return _from_path(item, field)
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return _from_data(item, field)
    if hasattr(item, "read"):
        return _from_file_object(item, field)
    raise InvalidMessageError(
        f"{field}: expected a file path, (filename, bytes, mime_type) or a binary file "
        f"object, got {type(item).__name__}"
    )


def _from_path(item: str | PathLike[Any], field: str) -> Attachment:
    text = os.fsdecode(item)
    if not text or "\x00" in text:
        raise InvalidMessageError(f"{field}: invalid file path {text!r}")
    filename = _check_filename(os.path.basename(text), field)
    try:
        info = os.stat(text)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise AttachmentNotFoundError(f"{field}: no such file: {text!r}") from exc
    except OSError as exc:
        raise InvalidMessageError(f"{field}: cannot read {text!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise InvalidMessageError(
            f"{field}: {text!r} is not a regular file (a directory, device or pipe)"
        )
    if not os.access(text, os.R_OK):
        raise InvalidMessageError(f"{field}: {text!r} is not readable (permission denied)")
    return Attachment(
        filename=filename,
        content_type=_guess_type(filename),
        size=info.st_size,
        path=Path(os.path.abspath(text)),
    )


def _from_data(item: tuple[Any, ...] | list[Any], field: str) -> Attachment:
    filename, data = item[0], item[1]
    mime_type = item[2] if len(item) == 3 else None
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidMessageError(f"{field}: the data must be bytes, got {type(data).__name__}")
    name = _check_filename(filename, field)
    return Attachment(
        filename=name,
        content_type=_guess_type(name) if mime_type is None else _check_type(mime_type, field),
        size=len(data),
        data=bytes(data),
    )


def _from_file_object(item: Any, field: str) -> Attachment:
    raw_name = getattr(item, "name", None)
    if not isinstance(raw_name, (str, bytes)) or not os.path.basename(os.fsdecode(raw_name)):
        raise InvalidMessageError(
            f"{field}: this file object has no file name; pass (filename, data, mime_type)"
        )
    name = _check_filename(os.path.basename(os.fsdecode(raw_name)), field)
    try:
        data = item.read()
    except (OSError, ValueError) as exc:
        raise InvalidMessageError(f"{field}: cannot read the file object: {exc}") from exc
    if not isinstance(data, bytes):
        raise InvalidMessageError(f"{field}: open the file in binary mode ('rb')")
    return Attachment(filename=name, content_type=_guess_type(name), size=len(data), data=data)


def _check_filename(name: object, field: str) -> str:
    if not isinstance(name, str):
        raise InvalidMessageError(f"{field}: the file name must be a string")
    check_text(name, f"{field} (file name)")
    if not name.strip() or name in (".", "..") or "/" in name or "\\" in name:
        raise InvalidMessageError(
            f"{field}: {name!r} is not a file name (no directories, not empty)"
        )
    if name != name.strip():
        raise InvalidMessageError(
            f"{field}: the file name {name!r} starts or ends with whitespace, which mail "
            f"clients drop; rename it or pass (filename, data, mime_type)"
        )
    return name


def _check_type(mime_type: object, field: str) -> str:
    if isinstance(mime_type, str):
        check_text(mime_type, f"{field} (MIME type)")  # CR, LF, NUL: refused, not stripped
    text = mime_type.strip().lower() if isinstance(mime_type, str) else ""
    main, _, sub = text.partition("/")
    if not (0 < len(main) <= 127 and 0 < len(sub) <= 127 and _TOKEN.issuperset(main + sub)):
        raise InvalidMessageError(
            f"{field}: expected a MIME type like 'application/pdf', got {mime_type!r}"
        )
    return text


def _guess_type(filename: str) -> str:
    import mimetypes  # first use reads the system tables; keep it out of import time

    guessed, encoding = mimetypes.guess_type(filename, strict=False)
    if encoding is not None:
        return _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    return guessed or "application/octet-stream"
