"""Message, Address and Attachment: frozen values that create() builds and validates.

Validation is strict and happens before any connection: a value that cannot be sent
exactly as given raises a FluxMailException subclass; nothing is silently stripped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Priority = Literal["high", "normal", "low"]


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox. ``domain`` is kept in ASCII (IDNA/punycode) form; ``local`` as given."""

    local: str
    domain: str
    display_name: str = ""

    @property
    def addr_spec(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def needs_smtputf8(self) -> bool:
        return not self.local.isascii()

    def __str__(self) -> str:
        if self.display_name:
            return f"{self.display_name} <{self.addr_spec}>"
        return self.addr_spec


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file to attach. Exactly one of ``path`` / ``data`` is set.

    ``content_id`` is set (without angle brackets) for inline images, which are sent
    with ``Content-Disposition: inline`` inside multipart/related.
    """

    filename: str
    content_type: str
    size: int
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    content_id: str | None = None

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


@dataclass(frozen=True, slots=True)
class Message:
    """A validated email, independent of any transport."""

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

    @property
    def envelope_recipients(self) -> tuple[Address, ...]:
        """To + Cc + Bcc, each mailbox once (first occurrence wins), in that order."""
        seen: set[str] = set()
        out: list[Address] = []
        for address in (*self.recipients, *self.cc, *self.bcc):
            key = address.addr_spec.lower()
            if key not in seen:
                seen.add(key)
                out.append(address)
        return tuple(out)
