"""A message you built yourself, made ready for the wire: ``FluxMail.send_message()``.

Takes an :class:`email.message.EmailMessage` (any ``email.message.Message``) or the raw
bytes of one, and returns the same :class:`~fluxmail.envelope.Composed` that ``create()``
messages become, so it goes through the same transports, retries, capture, DKIM and SMTP
checks. What is decided here:

- **Envelope.** Given ``mail_from=`` / ``recipients=``, those; else from the headers:
  the reverse-path is ``Sender`` if present, else the one ``From`` mailbox; the
  recipients are ``To``, ``Cc`` and ``Bcc`` (each address once, in that order). Every
  address is checked as ``create()`` checks it (one mailbox, IDN domains to punycode,
  no CR/LF/NUL).
- **Bcc** is taken out of the bytes (header and its folded lines), never sent.
- **Message-ID and Date** are added when missing (what ``create()`` would add).
- **The bytes** must be a message: a header block, CRLF line ends (bare LF is converted,
  bare CR and NUL are refused), no line over 998 octets (RFC 5322), at most
  :data:`MAX_SIZE`. A header line that does not look like ``Name: value`` is refused:
  that is where an injected CR/LF would show.
"""

from __future__ import annotations

import email.errors
import email.policy
import email.utils
import re
from collections.abc import Iterable
from email.message import Message as StdlibMessage

from ..envelope import Composed, Envelope
from ..errors import HeaderInjectionError, InvalidAddressError, InvalidMessageError
from ..message import Address, parse_address
from ..message._address import normalize_domain
from ..message._fields import new_message_id

MAX_LINE = 998
MAX_SIZE = 100 * 1024 * 1024  # far above any server's SIZE; a guard against a wrong file
_HEADER = re.compile(rb"[!-9;-~]+:")  # a field name: printable ASCII but ':' (RFC 5322)


def prebuilt(
    message: StdlibMessage | bytes,
    *,
    mail_from: str | None = None,
    recipients: Iterable[str] | None = None,
    domain: str | None = None,
) -> Composed:
    """``message`` as a :class:`Composed`; raises InvalidMessageError and its subclasses."""
    data = _bytes_of(message)
    header, body = _split(data)
    fields = _fields(header)
    sender = _reverse_path(fields, mail_from)
    rcpts = _forward_paths(fields, recipients)
    header = _without(header, b"bcc")
    msg_id = _first(fields, "message-id")
    extra = b""
    if not msg_id:
        host = normalize_domain(domain, "domain") if domain else sender.domain
        msg_id = new_message_id(host)
        extra += f"Message-ID: {msg_id}\r\n".encode()
    if not _first(fields, "date"):
        extra += f"Date: {email.utils.formatdate(localtime=True)}\r\n".encode()
    envelope = Envelope(
        mail_from=sender.addr_spec,
        rcpt_to=tuple(address.addr_spec for address in rcpts),
        smtputf8=any(address.needs_smtputf8 for address in (sender, *rcpts)),
    )
    composed = extra + header + b"\r\n" + body
    # clean=False: the engine re-checks CRLF and line lengths, as for any outside bytes.
    return Composed(envelope=envelope, data=composed, message_id=msg_id.strip())


def _bytes_of(message: StdlibMessage | bytes) -> bytes:
    if isinstance(message, (bytes, bytearray, memoryview)):
        data = bytes(message)
    elif isinstance(message, StdlibMessage):
        policy = email.policy.SMTPUTF8 if _needs_utf8(message) else email.policy.SMTP
        try:
            data = message.as_bytes(policy=policy)
        except (ValueError, TypeError, UnicodeError) as exc:  # e.g. a header with CR/LF
            raise HeaderInjectionError(f"the message cannot be serialised: {exc}") from exc
    else:
        raise InvalidMessageError(
            "send_message() takes an email.message.EmailMessage or bytes, "
            f"got {type(message).__name__}"
        )
    if len(data) > MAX_SIZE:
        raise InvalidMessageError(f"the message is {len(data):,} bytes, over {MAX_SIZE:,}")
    if b"\0" in data:
        raise InvalidMessageError("the message contains a NUL byte")
    data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    if re.search(rb"\r(?!\n)", data):
        raise InvalidMessageError("the message contains a bare CR (not followed by LF)")
    for number, line in enumerate(data.split(b"\r\n"), 1):
        if len(line) > MAX_LINE:
            raise InvalidMessageError(
                f"line {number} of the message is {len(line):,} octets, over the "
                f"{MAX_LINE} allowed (RFC 5322): encode the body (quoted-printable/base64)"
            )
    return data


def _needs_utf8(message: StdlibMessage) -> bool:
    return any(not str(value).isascii() for value in message.values())


def _split(data: bytes) -> tuple[bytes, bytes]:
    """The header block (each line with its CRLF) and the body."""
    if data.startswith(b"\r\n"):
        raise InvalidMessageError("the message has no headers")
    header, blank, body = data.partition(b"\r\n\r\n")
    if not blank:
        header, body = data if data.endswith(b"\r\n") else data + b"\r\n", b""
        return header, body
    return header + b"\r\n", body


def _fields(header: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) for each header field; refuses junk lines."""
    fields: list[tuple[str, str]] = []
    for line in header.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip().decode("utf-8", "replace"))
            continue
        match = _HEADER.match(line)
        if match is None:
            raise HeaderInjectionError(
                f"not a header line: {line[:60]!r} (a CR or LF inside a header value?)"
            )
        name = match.group()[:-1].decode().lower()
        fields.append((name, line[match.end() :].strip().decode("utf-8", "replace")))
    return fields


def _first(fields: list[tuple[str, str]], name: str) -> str:
    return next((value for key, value in fields if key == name), "")


def _mailboxes(fields: list[tuple[str, str]], name: str) -> list[Address]:
    """The mailboxes of every ``name`` header, parsed by the stdlib's RFC 5322 parser and
    then checked as ``create()`` checks addresses. A header the parser finds defects in
    is refused (``b@exa mple.org`` would otherwise quietly become ``b@exa``)."""
    found: list[Address] = []
    for key, value in fields:
        if key != name:
            continue
        try:
            header = email.policy.default.header_factory(name, value)
        except ValueError as exc:  # CR/LF inside an address
            raise HeaderInjectionError(f"{name.capitalize()}: {exc}") from None
        broken = [d for d in header.defects if isinstance(d, email.errors.InvalidHeaderDefect)]
        if broken:
            raise InvalidAddressError(f"{name.capitalize()}: cannot read {value!r} ({broken[0]})")
        for mailbox in getattr(header, "addresses", ()):
            found.append(
                parse_address(
                    Address(mailbox.username, mailbox.domain, mailbox.display_name),
                    field=name.capitalize(),
                )
            )
    return found


def _reverse_path(fields: list[tuple[str, str]], mail_from: str | None) -> Address:
    if mail_from is not None:
        return parse_address(mail_from, field="mail_from")
    for name in ("sender", "from"):
        found = _mailboxes(fields, name)
        if len(found) > 1 and name == "from":
            raise InvalidAddressError("From has several mailboxes: give a Sender header")
        if found:
            return found[0]
    raise InvalidAddressError("no sender: the message has no From header (or pass mail_from=)")


def _forward_paths(
    fields: list[tuple[str, str]], recipients: Iterable[str] | None
) -> list[Address]:
    if recipients is not None:
        if isinstance(recipients, str):
            recipients = [recipients]
        given = [parse_address(r, field=f"recipients[{i}]") for i, r in enumerate(recipients)]
    else:
        given = [mailbox for name in ("to", "cc", "bcc") for mailbox in _mailboxes(fields, name)]
    seen: dict[str, Address] = {}
    for address in given:  # each address once, first mention wins
        seen.setdefault(address.addr_spec.lower(), address)
    unique = list(seen.values())
    if not unique:
        raise InvalidAddressError("no recipients: the message has no To, Cc or Bcc")
    return unique


def _without(header: bytes, name: bytes) -> bytes:
    """``header`` without the field ``name`` and its folded continuation lines."""
    kept: list[bytes] = []
    dropping = False
    for line in header.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() == name
        if not dropping:
            kept.append(line)
    return b"".join(line + b"\r\n" for line in kept)
