"""Development transports: ``FluxMail(object_type="console")`` and ``object_type="file"``.

Both take the exact bytes an SMTP send would put on the wire (validated, composed, DKIM
signed when configured) and, instead of connecting anywhere, show them:

* **console** writes each message to standard output between two rules;
* **file** writes one ``.eml`` file per message into a directory (``host=``), created if
  needed; files appear whole (written under a temporary name, then renamed).

Both put the two delivery headers a receiving server would add in front of the message,
``Return-Path`` (MAIL FROM) and ``Envelope-To`` (every RCPT TO, Bcc included), so the
envelope stays visible. Neither ever sees a password.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .._terminal import safe_text
from ..compose._mime import fold
from ..errors import ConfigurationError
from .base import SinkTransport
from .sink import accepted

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..smtp import SendResult

__all__ = ["ConsoleTransport", "FileTransport", "delivery_bytes"]

RULE = "-" * 79


def delivery_bytes(composed: Composed) -> bytes:
    """``Return-Path`` and ``Envelope-To`` headers, then the message exactly as sent."""
    envelope = composed.envelope
    recipients = [f"{address}," for address in envelope.rcpt_to]
    recipients[-1] = recipients[-1][:-1]
    head = f"Return-Path: <{envelope.mail_from}>\r\n" + fold("Envelope-To", recipients)
    return head.encode("utf-8") + composed.data


class ConsoleTransport(SinkTransport):
    """Print each message to ``sys.stdout`` (looked up at each send, so redirection and
    pytest's capsys work). Control characters (and bidi overrides) are shown escaped,
    never sent to the terminal: :func:`fluxmail._terminal.safe_text`, the one rule."""

    name = "console"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def deliver(self, composed: Composed) -> SendResult:
        text = delivery_bytes(composed).decode("utf-8", "replace").replace("\r\n", "\n")
        text = safe_text(text, lines=True).rstrip("\n")
        with self._lock:
            sys.stdout.write(f"{RULE}\n{text}\n{RULE}\n")
            sys.stdout.flush()
        return accepted(composed, "2.0.0 printed to the console")


class FileTransport(SinkTransport):
    """Write each message to ``<directory>/<timestamp>-<random>.eml``."""

    name = "file"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"file transport: cannot create the directory {str(directory)!r}: {exc.strerror}"
            ) from None
        if not os.access(self.directory, os.W_OK):
            raise ConfigurationError(
                f"file transport: the directory {str(directory)!r} is not writable"
            )

    def deliver(self, composed: Composed) -> SendResult:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        path = self.directory / f"{stamp}-{secrets.token_hex(4)}.eml"
        partial = path.with_suffix(".eml.part")
        try:
            partial.write_bytes(delivery_bytes(composed))
            os.replace(partial, path)
        except OSError as exc:
            raise ConfigurationError(
                f"file transport: cannot write {str(path)!r}: {exc.strerror}"
            ) from None
        return accepted(composed, f"2.0.0 written to {path.name}")
