"""The message a caller describes, checked where it is built (before any connection).

:class:`Message` (``_model``) holds the subject, people, bodies, attachments and options;
``_address`` is the one address rule (RFC 5322 mailboxes, IDNA domains, SMTPUTF8),
``_invite`` the meeting invitation, ``_fields`` the header-field rules (no CR/LF,
folding-safe text), ``_html2text`` the plain text made from an HTML body.
"""

from ._invite import Invite
from ._model import (
    Address,
    Attachment,
    AttachmentSource,
    Message,
    Priority,
    build_message,
    parse_address,
    parse_addresses,
)

__all__ = [
    "Address",
    "Attachment",
    "AttachmentSource",
    "Invite",
    "Message",
    "Priority",
    "build_message",
    "parse_address",
    "parse_addresses",
]
