"""What every test server shares: the address, the test credentials, trustme
certificates and the record of a received message."""

from __future__ import annotations

import email
import email.errors
import email.message
import email.policy
import os
import ssl
import tempfile
import threading
from collections.abc import Collection
from dataclasses import dataclass

import trustme

HOST = "127.0.0.1"
USERNAME = "user@example.com"
PASSWORD = "s3cret-pa55"


# --- certificates ----------------------------------------------------------------------


class TLSMaterial:
    """A trusted and an untrusted trustme CA, with server contexts for localhost."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        self._dir = tempfile.mkdtemp(prefix="fluxmail-tests-")
        self.ca_pem = os.path.join(self._dir, "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_pem)
        self._cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self._other_cert = self.other_ca.issue_cert("localhost", "127.0.0.1")

    def server_context(
        self, *, untrusted: bool = False, hostnames: tuple[str, ...] | None = None
    ) -> ssl.SSLContext:
        """A server context; ``hostnames``: a certificate of the trusted CA for those
        names only (to test host name checking)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if hostnames:
            self.ca.issue_cert(*hostnames).configure_cert(ctx)
        else:
            (self._other_cert if untrusted else self._cert).configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the test CA (TLS >= 1.2)."""
        ctx = ssl.create_default_context(cafile=self.ca_pem)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


_TLS: TLSMaterial | None = None
_TLS_LOCK = threading.Lock()


def tls_material() -> TLSMaterial:
    """The process-wide test CA (created on first use; cheap afterwards)."""
    global _TLS
    with _TLS_LOCK:
        if _TLS is None:
            _TLS = TLSMaterial()
        return _TLS


# --- what servers record ---------------------------------------------------------------


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # raw bytes as received, dot-unstuffed
    mail_options: list[str]
    tls: bool
    auth_user: str | None
    received_at: float  # time.monotonic()
    session_id: int = 0
    raw: bytes = b""  # FaultServer only: the DATA bytes exactly as on the wire, final dot included

    @property
    def message(self) -> email.message.EmailMessage:
        """The message as Python's parser (policy.default) reads it, checked to have no
        defect in any part or header."""
        return self.parsed()

    def parsed(self, *, allowed: Collection[tuple[str, str]] = ()) -> email.message.EmailMessage:
        """:attr:`message`, tolerating the header defects named in ``allowed`` as
        ``(header name, defect text)`` pairs: for a test whose message has one on purpose."""
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        assert_no_defects(msg, allowed=allowed)
        return msg

    @property
    def message_id(self) -> str:
        """The Message-ID header as written (empty when there is none)."""
        head = self.data.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            if line[:11].lower() == b"message-id:":
                return line[11:].strip().decode("ascii", "replace")
        return ""


def assert_no_defects(
    msg: email.message.Message, *, allowed: Collection[tuple[str, str]] = ()
) -> None:
    """No part and no header of ``msg`` has a defect by Python's parser: what a strict
    reader would complain about (such as RFC 2047 words inside a quoted parameter).
    Raw UTF-8 in headers is what an SMTPUTF8 message (RFC 6532) means to have; the
    parser still notes it, so those two notes are not defects here. ``allowed``: header
    defects a test expects, as ``(header name, defect text)`` pairs (exact match)."""
    for part in msg.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
        for name, value in part.items():
            found = [
                d
                for d in getattr(value, "defects", ())
                if not isinstance(d, _UTF8_NOTES) and (name, str(d)) not in allowed
            ]
            assert not found, (name, found)


_UTF8_NOTES = (
    email.errors.NonASCIILocalPartDefect,
    email.errors.UndecodableBytesDefect,
)


def message_ids(messages: list[ReceivedMessage]) -> list[str]:
    """The Message-ID of each message, in order (to count distinct deliveries)."""
    return [m.message_id for m in messages]
