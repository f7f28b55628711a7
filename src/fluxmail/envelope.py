"""What a transport sees: the SMTP envelope and the finished message bytes.

Every transport (SMTP sync and async, Outlook aside, memory, console, file) takes a
:class:`Composed`. Bcc recipients live in ``envelope.rcpt_to`` only, never in ``data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def frozen_from(cls: type[T], fields: dict[str, Any]) -> T:
    """An instance of the frozen dataclass ``cls`` (without slots) holding ``fields``,
    which must name every field: what ``cls(**fields)`` makes, in one step.

    The ``__init__`` of a frozen dataclass sets each field with ``object.__setattr__``,
    a slow call: for a Message of 17 fields it cost more than validating them (~29,000
    instructions), and a batch builds a Message, an Envelope, a Composed and a
    SendResult per message. Here the (new) dict becomes the instance's ``__dict__``.
    The instance is as frozen as any other (assigning a field raises); only code that
    builds every field itself calls this (tests compare it with ``cls(**fields)``)."""
    obj: T = object.__new__(cls)
    object.__setattr__(obj, "__dict__", fields)
    return obj


@dataclass(frozen=True)  # (no slots: the composer builds it with frozen_from)
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


@dataclass(frozen=True)  # (no slots: the composer builds it with frozen_from)
class Composed:
    """A message ready for the wire: what every transport receives.

    ``FluxMail.compose()`` returns one (DKIM-signed when the mailer signs), and so does
    the Django backend's ``compose_django_message()``.

    Attributes:
        envelope: the SMTP envelope (Bcc recipients are only here).
        data: the message bytes, CRLF line endings, *not* dot-stuffed (the SMTP engine
            does that).
        message_id: the Message-ID header's value, with the angle brackets.
        clean: true only for what fluxmail's own composer made, when it has checked that
            ``data`` is CRLF-only with no line over 998 octets: the SMTP engine then skips
            those two checks (never the dot-stuffing). It is not a constructor argument
            (``Composed(..., clean=True)`` is a TypeError), so bytes from anywhere else
            (``send_message()``, the Django backend, your own ``Composed``) always keep
            every check; ``dataclasses.replace()`` makes it false again.

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
    clean: bool = field(default=False, init=False)

    @classmethod
    def _checked(
        cls, envelope: Envelope, data: bytes, message_id: str, *, clean: bool
    ) -> Composed:
        """The composer's constructor (and the DKIM signer's, which keeps its verdict):
        the one way to a ``clean`` Composed. Private: only code that has made the checks
        ``clean`` stands for may call it."""
        fields = {"envelope": envelope, "data": data, "message_id": message_id, "clean": clean}
        return frozen_from(cls, fields)


def ascii_domain(name: str) -> str:
    """``name`` in the ASCII form the envelope and EHLO use: as it is when ASCII, else its
    IDNA 2008 form with UTS-46 mapping (``bücher.example`` -> ``xn--bcher-kva.example``).

    The one encoding rule for every domain fluxmail puts on the wire (addresses,
    Message-IDs, the EHLO name). Raises ``ValueError`` for a name IDNA refuses.
    """
    if name.isascii():
        return name
    import idna  # only for non-ASCII names: keeps ``import fluxmail`` light

    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(str(exc)) from exc
