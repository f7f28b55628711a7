"""Test what your code sends, without a mail server.

```python
import fluxmail.testing
from fluxmail import FluxMail

with fluxmail.testing.capture() as outbox:  # your code sends, as it would in production
    FluxMail(host="smtp.example.com", sender="app@example.com").create(
        subject="Welcome, Ada", recipients=["ada@example.com"], body="Hello Ada"
    ).send()
assert outbox.subjects == ["Welcome, Ada"]
assert outbox.to("ada@example.com")[0].text == "Hello Ada\\n"
```

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
        """The Subject header, decoded (``""`` when there is none)."""
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
        """The addresses of the Cc header."""
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
    """The messages sent during a `capture()`, oldest first. Thread-safe.

    A sequence of `CapturedMessage` (`len(outbox)`, `outbox[0]`, iteration), with helpers
    to find messages and to make the next sends fail. It is a transport (``send``,
    ``send_many``, their async twins) like any other.

    Example:
        ```python
        with fluxmail.testing.capture() as outbox:
            mailer.create(subject="Hi", recipients=["ada@example.org"], body="...").send()
        assert outbox.subjects == ["Hi"]
        assert outbox.to("Ada <ADA@example.org>")[0].text == "...\\n"
        ```
    """

    name = "capture"

    def __init__(self) -> None:
        self._messages: list[CapturedMessage] = []
        self._failures: list[FluxMailException] = []
        self._lock = threading.Lock()

    # the transport
    def deliver(self, composed: Composed) -> SendResult:
        """Record one composed message (what every send calls inside `capture()`).

        Args:
            composed: the message as it would go on the wire.

        Returns:
            A result that says the message was accepted by every recipient.

        Raises:
            FluxMailException: the next error queued by `fail_next()`, if any (the
                message is then not recorded).
        """
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
        """The decoded subject of each message, oldest first."""
        return [message.subject for message in self]

    @property
    def message_ids(self) -> list[str]:
        """The Message-ID of each message (with angle brackets), oldest first."""
        return [message.message_id for message in self]

    def to(self, address: str) -> list[CapturedMessage]:
        """The messages whose envelope includes ``address`` (To, Cc or Bcc).

        Args:
            address: an address, bare or as ``Name <a@b.c>``; compared without regard
                to case.

        Returns:
            The matching messages, oldest first (an empty list when there is none).

        Raises:
            InvalidAddressError: ``address`` is not a valid address (code
                ``invalid_address``).
        """
        from .message import parse_address

        wanted = parse_address(address, field="address").addr_spec.lower()
        return [
            message
            for message in self
            if any(rcpt.lower() == wanted for rcpt in message.recipients)
        ]

    def clear(self) -> None:
        """Forget every captured message (queued failures stay)."""
        with self._lock:
            self._messages.clear()

    def fail_next(self, error: FluxMailException, *, times: int = 1) -> None:
        """Make the next ``times`` sends raise ``error`` instead of being captured.

        For testing how your code handles a failure.

        Args:
            error: the exception to raise, for example
                ``RecipientsRefusedError("550 no such user", smtp_code=550)``.
            times: how many of the next sends fail.

        Example:
            ```python
            with fluxmail.testing.capture() as outbox:
                outbox.fail_next(ConnectError("server down"), times=2)
                for _ in range(2):
                    try:
                        mailer.create(subject="Hi", recipients=["a@example.org"], body=".").send()
                    except ConnectError as exc:
                        assert exc.code == "connection_failed"
            assert len(outbox) == 0
            ```
        """
        with self._lock:
            self._failures.extend([error] * times)


@contextmanager
def capture() -> Iterator[Outbox]:
    """Capture every FluxMail send in the process until the block ends.

    ``send()``, ``send_async()``, ``BulkSender``, the Django backend and ``fluxmail.scale``
    couriers, from any thread, validate and compose as usual and then land in the outbox
    instead of the network; nothing connects. Captures nest: the innermost one gets the
    messages. The ``fluxmail_outbox`` pytest fixture does the same for one test.

    Yields:
        The `Outbox` that receives the messages.

    Example:
        ```python
        with fluxmail.testing.capture() as outbox:
            mailer.create(subject="Welcome, Ada", recipients=["ada@example.org"], body="Hi")
            mailer.send()  # captured: nothing connects
        assert outbox.subjects == ["Welcome, Ada"]
        ```
    """
    outbox = Outbox()
    start_capture(outbox)
    try:
        yield outbox
    finally:
        stop_capture(outbox)
