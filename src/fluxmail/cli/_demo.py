"""``fluxmail demo``: the whole stack against a server fluxmail starts itself.

A local SMTP server comes up on 127.0.0.1 with STARTTLS (a throwaway certificate) and
AUTH; a rich message (HTML + text, an inline image, an attachment, Cc, Bcc, non-ASCII)
goes through create() -> composer -> our SMTP engine; then the demo prints what the
server received.
"""

from __future__ import annotations

import secrets
import struct
import tempfile
import zlib
from email.message import MIMEPart
from pathlib import Path
from typing import TypedDict

from ..mailer._facade import FluxMail
from .localserver import LocalSMTPServer, ReceivedMessage

DEMO_USER = "demo@fluxmail.test"


class Login(TypedDict):
    """The local server's one-time credential, passed as ``**login`` so that the code the
    demo prints (and runs) never spells the secret or its name out."""

    password: str


HTML = """\
<h1><img src="cid:logo" alt="" width="32" height="32"> Welcome to fluxmail</h1>
<p>This message went through <strong>STARTTLS</strong>, <strong>AUTH</strong> and a
pipelined SMTP transaction to a server on your own machine.</p>
<ul><li>HTML with a plain-text alternative</li><li>an inline image</li>
<li>a CSV attachment</li></ul>
<p><a href="https://example.com/docs">Read the docs</a></p>
"""

PLAIN = """\
Welcome to fluxmail

This message went through STARTTLS, AUTH and a pipelined SMTP transaction to a
server on your own machine.
"""


def demo_png(size: int = 32) -> bytes:
    """A small gradient PNG, made here so the demo needs no image files."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + b"".join(bytes((37 + 6 * x, 99 + 3 * y, 235)) for x in range(size))
        for y in range(size)
    )
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def describe(received: ReceivedMessage) -> str:
    """A readable account of one received message: envelope, headers, MIME tree."""
    msg = received.message
    lines = [
        "The server received:",
        f"  envelope from: {received.mail_from}",
        f"  envelope to:   {', '.join(received.rcpt_tos)}",
        f"  over TLS:      {'yes' if received.tls else 'no'}",
        f"  authenticated: {received.auth_user or 'no'}",
        f"  size:          {len(received.data):,} bytes",
        "  headers:",
    ]
    lines += [f"    {name}: {value}" for name, value in msg.items()]
    lines.append("  MIME structure:")
    for part in msg.walk():
        depth = _depth(msg, part)
        name = part.get_filename()
        extra = f"  ({name})" if name else ""
        cid = part.get("Content-ID")
        extra += f"  Content-ID {cid}" if cid else ""
        lines.append(f"    {'  ' * depth}{part.get_content_type()}{extra}")
    bcc_leaked = "bcc" in {key.lower() for key in msg}
    lines.append(f"  Bcc in headers: {'YES (bug!)' if bcc_leaked else 'no (envelope only)'}")
    return "\n".join(lines)


def _depth(root: MIMEPart, part: MIMEPart) -> int:
    def walk(node: MIMEPart, level: int) -> int | None:
        if node is part:
            return level
        if node.is_multipart():
            for child in node.iter_parts():
                found = walk(child, level + 1)
                if found is not None:
                    return found
        return None

    return walk(root, 0) or 0


# What run_demo() runs, shown to the user after the account of what arrived. It is the
# same call as below, kept side by side; tests/test_demo.py runs the printed text.
CODE = """\
from fluxmail import FluxMail

mailer = FluxMail(
    object_type="smtp",
    host="localhost",
    port={port},
    use_tls=True,  # STARTTLS
    username="{user}",  # doubles as the From address
    **login,  # the local server's one-time secret (never printed)
    ssl_context=server.client_ssl_context(),  # trusts the throwaway CA
)
print(mailer.test_connection())
mailer.create(
    subject="Welcome to fluxmail ✉ — démo",
    recipients=["Ada Lovelace <ada@example.com>"],
    cc=["team@example.com"],
    bcc=["audit@example.com"],  # envelope only
    body=HTML,
    html_body=True,
    plain_body=PLAIN,
    inline_images={{"logo": folder / "logo.png"}},  # <img src="cid:logo">
    attachments=[folder / "report-2026.csv"],
    priority="high",
    unsubscribe_url="https://example.com/unsubscribe?token=demo",
).send()
"""

NEXT = """\
Try next:
  fluxmail demo --raw     the same, plus the raw message as the server received it
  fluxmail serve          a local server for your own code: STARTTLS on 1025, implicit TLS
                          on 1465, AUTH; it prints the export line that makes Python trust it
  fluxmail --help         send one email from the shell (--debug shows the SMTP transcript)
  README.md "A short tour", docs/guide.md (the API), docs/troubleshooting.md (the usual
  mistakes: port 465, Microsoft 365 and Gmail refusals)"""


def run_demo(*, raw: bool = False) -> ReceivedMessage:
    secret = secrets.token_urlsafe(12)
    login: Login = {"password": secret}
    with (
        LocalSMTPServer(starttls=True, auth=(DEMO_USER, secret)) as server,
        tempfile.TemporaryDirectory(prefix="fluxmail-demo-") as tmp,
    ):
        folder = Path(tmp)
        (folder / "logo.png").write_bytes(demo_png())
        (folder / "report-2026.csv").write_text("month,sent\nMay,4821\nJune,5120\n")
        print(f"Local SMTP server on 127.0.0.1:{server.port} (STARTTLS, AUTH).")
        mailer = FluxMail(
            object_type="smtp",
            host="localhost",
            port=server.port,
            use_tls=True,
            username=DEMO_USER,
            **login,
            ssl_context=server.client_ssl_context(),
        )
        print(f"test_connection(): {mailer.test_connection()}")
        result = mailer.create(
            subject="Welcome to fluxmail ✉ — démo",
            recipients=["Ada Lovelace <ada@example.com>"],
            cc=["team@example.com"],
            bcc=["audit@example.com"],
            body=HTML,
            html_body=True,
            plain_body=PLAIN,
            inline_images={"logo": folder / "logo.png"},
            attachments=[folder / "report-2026.csv"],
            priority="high",
            unsubscribe_url="https://example.com/unsubscribe?token=demo",
        ).send()
        print(f"send(): {result}\n")
        received = server.messages[-1]
        print(describe(received))
        if raw:
            print("\n" + received.data.decode("utf-8", "replace"))
        print("\nThe code that ran (HTML and PLAIN are the texts above):\n")
        print(_indent(CODE.format(port=server.port, user=DEMO_USER)))
        print(NEXT)
        return received


def _indent(code: str) -> str:
    return "".join(f"    {line}" if line.strip() else line for line in code.splitlines(True))
