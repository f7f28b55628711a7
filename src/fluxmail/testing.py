"""Test what your code sends, without a mail server.

>>> import fluxmail.testing
>>> with fluxmail.testing.capture() as outbox:  # doctest: +SKIP
...     signup("ada@example.com")        # your code, which sends with FluxMail
>>> outbox.subjects                       # doctest: +SKIP
['Welcome, Ada']
>>> outbox.to("ada@example.com")[0].text  # doctest: +SKIP
'Hello Ada, ...'

Inside ``capture()``, every FluxMail send in the process — ``send()``, ``send_async()``,
``BulkSender.send_batch()`` / ``send_batch_async()``, ``fluxmail.scale`` couriers and the
Django backend — goes through the same validation and composition as a real send (bad
input still raises; DKIM signs when configured; Bcc is in the envelope only) and then
lands in the outbox instead of the network. ``send()`` still returns
``"Email sent successfully via SMTP."``. With pytest, the ``fluxmail_outbox`` fixture does
the same for one test (the plugin is registered when fluxmail is installed).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, overload

from .errors import FluxMailException
from .transports.base import SinkTransport
from .transports.sink import accepted, start_capture, stop_capture

if TYPE_CHECKING:
    from email.message import EmailMessage

    from .envelope import Composed, Envelope
    from .smtp import SendResult

__all__ = ["CapturedMessage", "Outbox", "capture"]


@dataclass(frozen=True)
class CapturedMessage:
    """One message as it would have gone on the wire.

    ``envelope`` (MAIL FROM and every RCPT TO, Bcc included), ``data`` (the exact bytes),
    ``message_id``; ``message`` is ``data`` parsed with ``email.policy.default``.
    """

    envelope: Envelope
    data: bytes = field(repr=False)
    message_id: str

    @cached_property
    def message(self) -> EmailMessage:
        import email
        import email.policy
        from email.message import EmailMessage

        if self.envelope.smtputf8:  # raw UTF-8 headers (RFC 6532): parse them as text
            text = self.data.decode("utf-8", "surrogateescape")
            parsed = email.message_from_string(text, policy=email.policy.default)
        else:
            parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def sender(self) -> str:
        """The From header (decoded)."""
        return str(self.message.get("From", ""))

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient: To, Cc and Bcc."""
        return self.envelope.rcpt_to

    @property
    def to(self) -> list[str]:
        """The addresses of the To header."""
        return self._addresses("To")

    @property
    def cc(self) -> list[str]:
        return self._addresses("Cc")

    @property
    def bcc(self) -> list[str]:
        """Envelope recipients that no header names: the Bcc recipients."""
        shown = {address.lower() for address in (*self.to, *self.cc)}
        return [address for address in self.recipients if address.lower() not in shown]

    @property
    def text(self) -> str | None:
        """The text/plain body, if any (with ``\\n`` line ends)."""
        return self._body("plain")

    @property
    def html(self) -> str | None:
        """The text/html body, if any."""
        return self._body("html")

    @property
    def attachments(self) -> list[tuple[str, bytes, str]]:
        """``(filename, data, content_type)`` of each attachment (not inline images)."""
        found = []
        for part in self.message.iter_attachments():
            if part.get_content_disposition() == "inline":
                continue
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            found.append((part.get_filename() or "", data, part.get_content_type()))
        return found

    def _addresses(self, name: str) -> list[str]:
        header = self.message.get(name)
        if header is None:
            return []
        return [address.addr_spec for address in header.addresses]

    def _body(self, subtype: str) -> str | None:
        part = self.message.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_type() != f"text/{subtype}":
            return None
        content: str = part.get_content()
        return content.replace("\r\n", "\n")


class Outbox(Sequence[CapturedMessage], SinkTransport):
    """The messages sent during a :func:`capture`, oldest first. Thread-safe. It is a
    transport (``send``, ``send_many``, their async twins) like any other."""

    name = "capture"

    def __init__(self) -> None:
        self._messages: list[CapturedMessage] = []
        self._failures: list[FluxMailException] = []
        self._lock = threading.Lock()

    # the transport
    def deliver(self, composed: Composed) -> SendResult:
        with self._lock:
            if self._failures:
                raise self._failures.pop(0)
            self._messages.append(
                CapturedMessage(composed.envelope, composed.data, composed.message_id)
            )
        return accepted(composed, "2.0.0 captured by fluxmail.testing")

    # the sequence
    @overload
    def __getitem__(self, index: int) -> CapturedMessage: ...

    @overload
    def __getitem__(self, index: slice) -> list[CapturedMessage]: ...

    def __getitem__(self, index: int | slice) -> CapturedMessage | list[CapturedMessage]:
        with self._lock:
            return self._messages[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    def __iter__(self) -> Iterator[CapturedMessage]:
        with self._lock:
            return iter(list(self._messages))

    def __repr__(self) -> str:
        return f"<Outbox: {len(self)} message(s) {self.subjects!r}>"

    # helpers
    @property
    def subjects(self) -> list[str]:
        return [message.subject for message in self]

    @property
    def message_ids(self) -> list[str]:
        return [message.message_id for message in self]

    def to(self, address: str) -> list[CapturedMessage]:
        """The messages whose envelope includes ``address`` (To, Cc or Bcc).

        ``Name <a@b.c>`` works too; addresses are compared without regard to case."""
        from .message import parse_address

        wanted = parse_address(address, field="address").addr_spec.lower()
        return [
            message
            for message in self
            if any(rcpt.lower() == wanted for rcpt in message.recipients)
        ]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def fail_next(self, error: FluxMailException, *, times: int = 1) -> None:
        """Make the next ``times`` sends raise ``error`` instead of being captured, to
        test how your code handles a failure (for example a ``RecipientsRefusedError``)."""
        with self._lock:
            self._failures.extend([error] * times)


@contextmanager
def capture() -> Iterator[Outbox]:
    """``with capture() as outbox:`` -- every FluxMail send in the process lands in
    ``outbox`` until the block ends. Captures nest: the innermost one gets the messages."""
    outbox = Outbox()
    start_capture(outbox)
    try:
        yield outbox
    finally:
        stop_capture(outbox)
