"""What a transport sees: the SMTP envelope and the finished message bytes.

Every transport (SMTP sync and async, Outlook aside, memory, console, file) takes a
:class:`Composed`. Bcc recipients live in ``envelope.rcpt_to`` only, never in ``data``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope: reverse-path and forward-paths as bare addr-specs.

    Domains are already in their ASCII (punycode) form. ``smtputf8`` is true when an
    address keeps a non-ASCII local part, which only an SMTPUTF8 server can take.
    """

    mail_from: str
    rcpt_to: tuple[str, ...]
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class Composed:
    """A message ready for the wire.

    ``data`` uses CRLF line endings and is *not* dot-stuffed (the SMTP engine does that).
    ``message_id`` includes the angle brackets, as in the Message-ID header.
    ``clean`` is set by fluxmail's own composer only, when it has checked that ``data``
    is CRLF-only with no line over 998 octets: the SMTP engine then skips those two
    checks (never the dot-stuffing). Bytes from anywhere else keep the full checks.
    """

    envelope: Envelope
    data: bytes
    message_id: str
    clean: bool = False
