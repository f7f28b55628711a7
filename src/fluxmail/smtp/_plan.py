"""A message checked against the server's capabilities and turned into bytes (pure).

:func:`plan_message` makes the :class:`Plan` of a transaction: the MAIL and RCPT
commands (every argument checked for CR, LF and NUL), the dot-stuffed payload and its
tail, the RFC 1870 size; it raises before anything is sent (SMTPUTF8 needed but not
offered, SIZE exceeded, 8-bit data the server cannot take, no recipients).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from ..envelope import Composed
from ..errors import (
    HeaderInjectionError,
    InvalidAddressError,
    InvalidMessageError,
    MessageRefusedError,
    MessageTooLargeError,
    SMTPUTF8UnsupportedError,
)
from ._actions import CRLF
from ._data import check_line_length, normalize_newlines, stuff
from ._replies import Capabilities


def check_argument(value: str, what: str = "SMTP command argument") -> str:
    """Refuse CR, LF and NUL: they would end the command and start another one."""
    if "\r" in value or "\n" in value or "\0" in value:
        raise HeaderInjectionError(f"{what} contains CR, LF or NUL")
    return value


def command(verb: str, *args: str) -> bytes:
    """``verb arg ...`` + CRLF, UTF-8 encoded; every argument is checked."""
    for arg in args:
        check_argument(arg)
    return " ".join((verb, *args)).encode("utf-8") + CRLF


@lru_cache(maxsize=4096)  # a batch's recipients seen again: the command is pure
def _rcpt_command(address: str) -> bytes:
    return command(f"RCPT TO:{_path(address)}")


@lru_cache(maxsize=4096)  # a batch's sender, every message: the check is pure
def _path(address: str) -> str:
    check_argument(address, "envelope address")
    if "<" in address or ">" in address or address != address.strip():
        raise InvalidAddressError(f"envelope address {address!r} is not a bare addr-spec")
    return f"<{address}>"


@dataclass(slots=True)  # (not frozen: its __init__ would pay a setattr call per field)
class Plan:
    """One message, checked and turned into bytes, ready for a transaction.

    The DATA bytes are ``payload`` followed by ``tail`` (see :func:`stuff`). ``size`` is
    the message's size as RFC 1870 counts it: CRLF line ends, not the dots added for
    transparency nor the terminating ``.`` CRLF. Not a tuple, so that nothing shows the
    payload (see :class:`~._actions.Exchange`)."""

    message_id: str
    mail: bytes
    rcpts: tuple[tuple[str, bytes], ...]
    payload: bytes = field(repr=False)
    tail: bytes = b".\r\n"
    size: int = 0

    def envelope(self, rcpts: tuple[tuple[str, bytes], ...]) -> bytes:
        """MAIL + RCPTs + DATA in one piece (a pipelined envelope)."""
        return self.mail + b"".join(cmd for _, cmd in rcpts) + b"DATA\r\n"


def check_envelope(composed: Composed) -> None:
    """The checks that need no server, done before connecting: recipients present, each
    address a bare addr-spec without CR, LF or NUL."""
    env = composed.envelope
    if not env.rcpt_to:
        raise InvalidMessageError("the envelope has no recipients")
    for address in (env.mail_from, *env.rcpt_to):
        if address:
            _path(address)


def plan_message(caps: Capabilities, composed: Composed, *, host: str) -> Plan:
    """Check ``composed`` against the server's capabilities and build its bytes.

    Raises before anything is sent: SMTPUTF8 needed but not offered, SIZE exceeded,
    CR/LF/NUL in an address, no recipients.
    """
    env = composed.envelope
    if not env.rcpt_to:
        raise InvalidMessageError("the envelope has no recipients")
    mail_from = env.mail_from
    mail_path = _path(mail_from) if mail_from else "<>"
    rcpts = tuple([(address, _rcpt_command(address)) for address in env.rcpt_to])
    utf8 = env.smtputf8 or not "".join((mail_from, *env.rcpt_to)).isascii()
    if utf8 and not caps.smtputf8:
        raise SMTPUTF8UnsupportedError(
            f"an address needs SMTPUTF8 (non-ASCII local part) and {host} does not offer "
            "it; nothing was sent",
            smtp_code=553,
            enhanced_code="5.6.7",
        )
    # our composer's bytes are CRLF-only with short lines (checked as it built them)
    normalized = composed.data if composed.clean else normalize_newlines(composed.data)
    payload, tail = stuff(normalized)
    size = len(normalized) + len(tail) - 3  # RFC 1870: the stuffed dots do not count
    params = []
    if caps.size:
        params.append(f"SIZE={size}")
        limit = caps.max_size
        if limit is not None and size > limit:
            raise MessageTooLargeError(
                f"the message is {size} bytes and {host} accepts at most "
                f"{limit}; nothing was sent",
                smtp_code=552,
                enhanced_code="5.3.4",
            )
    if not composed.clean:
        check_line_length(normalized)
    del normalized
    if not payload.isascii():
        params += _eight_bit(caps, utf8, host)
    if utf8:
        params.append("SMTPUTF8")
    mail = command(f"MAIL FROM:{mail_path}", *params)
    # (positional: binding six keywords costs as much as building the Plan)
    return Plan(composed.message_id, mail, rcpts, payload, tail, size)


def _eight_bit(caps: Capabilities, utf8: bool, host: str) -> list[str]:
    """The MAIL parameter that announces 8-bit data (RFC 6152), or the refusal when the
    server cannot take it. Only foreign bytes (Django's ``8bit`` parts) get here without
    SMTPUTF8: fluxmail's composer writes 7-bit bodies. They are not re-encoded (that
    would change bytes the caller, or a DKIM signature, fixed): see docs/security.md."""
    if caps.eightbitmime:
        return ["BODY=8BITMIME"]
    if utf8 and caps.smtputf8:  # RFC 6531 3.3: an SMTPUTF8 server takes 8-bit data
        return []
    raise MessageRefusedError(
        f"the message has 8-bit data (non-ASCII bytes, such as a Content-Transfer-Encoding: "
        f"8bit part) and {host} does not offer 8BITMIME (RFC 6152); encode those parts as "
        "quoted-printable or base64; nothing was sent",
        smtp_code=554,
        enhanced_code="5.6.3",
        code="eightbitmime_unsupported",
    )
