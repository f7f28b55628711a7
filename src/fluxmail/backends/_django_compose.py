"""A Django ``EmailMessage`` -> :class:`~fluxmail.envelope.Composed` (pure: no network).

Django builds the MIME message (attachments, alternatives, encodings stay Django's); this
module computes the SMTP envelope under fluxmail's address rules and takes Django's bytes
with CRLF line endings. The backend (:mod:`fluxmail.backends.django`) sends the result.
"""

from __future__ import annotations

import email.policy
import inspect
import re
from collections.abc import Iterable
from email.utils import make_msgid, parseaddr
from typing import Any

from ..envelope import Composed, Envelope
from ..errors import HeaderInjectionError, InvalidAddressError, InvalidMessageError
from ..message import parse_address

__all__ = ["compose_django_message", "django_envelope"]


# RFC 5322 dot-atom of ASCII atext: what a bare local part may be, at most 64 octets.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _bare_local_part(text: str) -> str | None:
    """``"tester"`` or ``"Name <tester>"``: an address without a domain, which Django
    accepts (Django #15042) and a local relay completes with its own domain. Only a plain
    ASCII dot-atom qualifies, so nothing but that word reaches MAIL FROM / RCPT TO."""
    if "@" in text or any(ch in text for ch in "\r\n\0"):
        return None
    _name, addr = parseaddr(text)
    whole = text.strip() == addr or text.rstrip().endswith(f"<{addr}>")  # not '"q"' -> q
    if whole and len(addr) <= 64 and _LOCAL_PART.fullmatch(addr):
        return addr
    return None


def _envelope_address(value: object, field: str) -> tuple[str, bool]:
    """The bare addr-spec of one Django address, and whether it needs SMTPUTF8.

    Django accepts ``"Name <a@b>"`` strings (and, in older versions, ``(name, addr)``
    pairs). fluxmail's strict mailbox rules apply: the domain is lowercased and
    IDNA-encoded, a non-ASCII local part is kept and needs SMTPUTF8, and quoted local
    parts or comments raise :class:`~fluxmail.errors.InvalidAddressError` (a
    ``ValueError`` whose message starts with ``Invalid address``, as Django's does). An
    address without a domain (``"tester"``) is sent as it is, as Django's backend does.
    """
    if isinstance(value, tuple) and len(value) == 2:
        value = value[1]
    text = value if isinstance(value, str) else str(value)  # lazy translation strings
    local = _bare_local_part(text)
    if local is not None:
        return local, False
    try:
        address = parse_address(text, field=field)
    except InvalidMessageError as exc:
        kind = HeaderInjectionError if isinstance(exc, HeaderInjectionError) else None
        raise (kind or InvalidAddressError)(f"Invalid address {text!r}: {exc}") from exc
    return address.addr_spec, address.needs_smtputf8


def django_envelope(from_email: object, recipients: Iterable[object]) -> Envelope:
    """The SMTP envelope of a Django message: ``from_email`` and To + Cc + Bcc.

    A recipient listed twice gets one RCPT TO.

    Args:
        from_email: Django's ``from_email`` (``"Name <a@b>"``, an address, a lazy string).
        recipients: ``message.recipients()``.

    Returns:
        The envelope, domains in punycode, with ``smtputf8`` set when an address needs it.

    Raises:
        InvalidAddressError: an address fluxmail refuses (code ``invalid_address``; the
            message starts with ``Invalid address``, as Django's does).
        HeaderInjectionError: CR, LF or NUL in an address (code ``header_injection``).

    Example:
        ```python
        envelope = django_envelope("Shop <shop@example.com>", ["ada@bücher.example", "tester"])
        assert envelope.mail_from == "shop@example.com"
        assert envelope.rcpt_to == ("ada@xn--bcher-kva.example", "tester")
        ```
    """
    mail_from, utf8 = _envelope_address(from_email, "from_email")
    rcpt_to: dict[str, None] = {}
    for recipient in recipients:
        address, needs_utf8 = _envelope_address(recipient, "recipient")
        rcpt_to[address] = None
        utf8 = utf8 or needs_utf8
    return Envelope(mail_from=mail_from, rcpt_to=tuple(rcpt_to), smtputf8=utf8)


def _accepts_policy(method: Any) -> bool:
    try:
        return "policy" in inspect.signature(method).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def _mime_bytes(message: Any) -> tuple[bytes, str]:
    """Let Django build the MIME message; return its CRLF bytes and its Message-ID.

    Django <= 5.2: ``message()`` returns a compat32 message, serialised with
    ``as_bytes(linesep="\\r\\n")`` as Django's SMTP backend does. Django >= 6.0:
    ``message(policy=email.policy.SMTP)``, whose ``as_bytes()`` already uses CRLF.
    """
    modern = _accepts_policy(message.message)
    mime = message.message(policy=email.policy.SMTP) if modern else message.message()
    if "Bcc" in mime:
        # Django copies headers={"Bcc": ...} into the message as is: every recipient would
        # read those addresses, and they are not even in the envelope.
        raise InvalidMessageError(
            "headers: a Bcc header would be shown to every recipient; use bcc=[...] "
            "(fluxmail never sends a Bcc header)"
        )
    message_id = str(mime.get("Message-ID") or "").strip()
    if not message_id:
        # Django always sets one; a custom EmailMessage subclass might not.
        message_id = make_msgid()
        mime["Message-ID"] = message_id
    data: bytes = mime.as_bytes() if modern else mime.as_bytes(linesep="\r\n")
    return data, message_id


def compose_django_message(message: Any) -> Composed:
    """Turn a Django ``EmailMessage`` into what a fluxmail transport sends.

    Args:
        message: a Django ``EmailMessage`` (or subclass); Django builds the MIME.

    Returns:
        The envelope (from ``from_email`` and ``recipients()``), Django's bytes with CRLF
        line endings, and the Message-ID.

    Raises:
        InvalidAddressError: an envelope address fluxmail refuses (``invalid_address``).
        InvalidMessageError: a ``Bcc`` header in ``headers=`` (``invalid_message``): it
            would be shown to every recipient.

    Django's own errors (``BadHeaderError`` for CR/LF in a header, ``ValueError`` for an
    address it cannot parse) propagate unchanged.
    """
    envelope = django_envelope(message.from_email, message.recipients())
    data, message_id = _mime_bytes(message)
    return Composed(envelope=envelope, data=data, message_id=message_id)
