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

    Attributes:
        mail_from: the MAIL FROM address (the sender).
        rcpt_to: every RCPT TO address, To, Cc and Bcc, each once.
        smtputf8: whether the message must be sent with the SMTPUTF8 extension.

    Example:
        ```python
        envelope = Envelope("app@example.com", ("ada@example.org", "audit@example.com"))
        assert not envelope.smtputf8
        ```
    """

    mail_from: str
    rcpt_to: tuple[str, ...]
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class Composed:
    """A message ready for the wire: what every transport receives.

    ``FluxMail.compose()`` returns one (DKIM-signed when the mailer signs), and so does
    the Django backend's ``compose_django_message()``.

    Attributes:
        envelope: the SMTP envelope (Bcc recipients are only here).
        data: the message bytes, CRLF line endings, *not* dot-stuffed (the SMTP engine
            does that).
        message_id: the Message-ID header's value, with the angle brackets.
        clean: set by fluxmail's own composer only, when it has checked that ``data`` is
            CRLF-only with no line over 998 octets: the SMTP engine then skips those two
            checks (never the dot-stuffing). Bytes from anywhere else keep every check.

    Example:
        ```python
        message = mailer.build_message(subject="Hi", recipients=["ada@example.org"], body=".")
        composed = mailer.compose(message)
        assert composed.envelope.rcpt_to == ("ada@example.org",)
        assert composed.data.endswith(b"\\r\\n")
        ```
    """

    envelope: Envelope
    data: bytes
    message_id: str
    clean: bool = False
