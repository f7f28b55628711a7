"""A human-readable dry run of a message: decoded headers, bodies, an invite, files.

The preview is built from the validated :class:`~fluxmail.message.Message` (plus the
Date and Message-ID of a :class:`~fluxmail.envelope.Composed` when given), so it shows
what a person reads, not the encoded wire form. A message holds no credentials, so none
can appear here. Control characters in bodies are shown escaped so that a dry run cannot
drive the terminal.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .._terminal import safe_text

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..message import Address, Attachment, Message
    from ..message._invite import Invite

__all__ = ["human_size", "preview"]

_NEEDS_QUOTES = re.compile(r'[()<>\[\]:;@\\,."]')


def preview(message: Message, composed: Composed | None = None) -> str:
    """Headers as a person reads them, then the bodies, then attachments and images.

    Bcc is listed with a note: it is envelope-only and never in the sent bytes (except
    for Microsoft Graph, which takes it from the header and removes it on delivery).
    """
    lines = _header_lines(message, composed)
    lines.append("")
    if message.plain_body is not None:
        lines += ["--- text/plain ---", _show_body(message.plain_body)]
    subtype = "html" if message.html else "plain"
    lines += [f"--- text/{subtype} ---", _show_body(message.body)]
    if message.invite is not None:
        lines += [f"--- text/calendar; method={message.invite.method} ---"]
        lines += _invite_lines(message.invite)
    if message.attachments:
        lines += ["", "Attachments:"]
        lines += [f"  {_describe(item)}" for item in message.attachments]
    if message.inline_images:
        lines += ["", "Inline images:"]
        lines += [f"  cid:{item.content_id} {_describe(item)}" for item in message.inline_images]
    return "\n".join(lines) + "\n"


def _invite_lines(invite: Invite) -> list[str]:
    """The event as a person reads it: times in the zone given and in UTC."""
    from ._calendar import attendees_of, organizer_of

    cancelled = " (cancelled)" if invite.method == "CANCEL" else ""
    lines = [
        f"Event: {_show_body(invite.summary)}{cancelled}",
        f"Start: {_moment(invite.start)}",
        f"End: {_moment(invite.end)}",
    ]
    if invite.location is not None:
        lines.append(f"Location: {_show_body(invite.location)}")
    lines.append(f"Organizer: {_mailbox(organizer_of(invite))}")
    lines.append(f"Attendees: {_mailboxes(attendees_of(invite))}")
    lines.append(f"UID: {invite.uid}  Sequence: {invite.sequence}  Status: {invite.status}")
    if invite.description is not None:
        lines += ["Description:", _show_body(invite.description)]
    return lines


def _moment(moment: datetime) -> str:
    utc = moment.astimezone(timezone.utc)
    zone = getattr(moment.tzinfo, "key", None) or moment.tzname() or ""
    local = moment.isoformat(sep=" ", timespec="minutes")
    return f"{local} {zone} ({utc:%Y-%m-%d %H:%M} UTC)".replace("  ", " ")


def _header_lines(message: Message, composed: Composed | None) -> list[str]:
    lines: list[str] = []
    date = _wire_header(composed.data, b"Date") if composed is not None else None
    if date:
        lines.append(f"Date: {date}")
    lines.append(f"From: {_mailbox(message.sender)}")
    for name, group in (("Reply-To", message.reply_to), ("To", message.recipients)):
        if group:
            lines.append(f"{name}: {_mailboxes(group)}")
    if message.cc:
        lines.append(f"Cc: {_mailboxes(message.cc)}")
    if message.bcc:
        in_header = composed is not None and _wire_header(composed.data, b"Bcc") is not None
        note = (
            "in the header for Microsoft Graph, which removes it on delivery"
            if in_header
            else "envelope only, not in the message"
        )
        lines.append(f"Bcc: {_mailboxes(message.bcc)}  ({note})")
    lines.append(f"Subject: {message.subject}")
    if composed is not None:
        lines.append(f"Message-ID: {composed.message_id}")
    if message.in_reply_to:
        lines.append(f"In-Reply-To: {message.in_reply_to}")
    if message.references:
        lines.append(f"References: {' '.join(message.references)}")
    if message.priority:
        lines.append(f"Priority: {message.priority}")
    if message.unsubscribe_url:
        lines.append(f"List-Unsubscribe: <{message.unsubscribe_url}> (one-click)")
    lines += [f"{name}: {value}" for name, value in message.extra_headers]
    if message.needs_smtputf8:
        lines.append("(needs a server with SMTPUTF8: an address has a non-ASCII local part)")
    return [safe_text(line, lines=True) for line in lines]


def _wire_header(data: bytes, name: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line[: len(name) + 1].lower() == name.lower() + b":":
            return line[len(name) + 1 :].strip().decode("ascii", "replace")
    return None


def _mailbox(address: Address) -> str:
    name = address.display_name
    if not name:
        return address.addr_spec
    if _NEEDS_QUOTES.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address.addr_spec}>"


def _mailboxes(addresses: tuple[Address, ...]) -> str:
    return ", ".join(_mailbox(address) for address in addresses)


def _show_body(text: str) -> str:
    return safe_text(text.replace("\r\n", "\n").replace("\r", "\n"), lines=True)


def _describe(item: Attachment) -> str:
    return f"{item.filename} ({item.content_type}, {human_size(item.size)})"


def human_size(size: int) -> str:
    """``512 B``, ``12.3 KiB``, ``4.0 MiB``..."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    units = ["KiB", "MiB", "GiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"
