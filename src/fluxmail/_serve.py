"""``fluxmail serve``: a local SMTP server that catches mail, for development.

Point your application at it (``FLUXMAIL_HOST=127.0.0.1 FLUXMAIL_PORT=1025``, or Django's
``EMAIL_HOST``/``EMAIL_PORT``): every message is accepted, never relayed, and shown as one
line; ``--dir`` also keeps each one as an ``.eml`` file. Ctrl-C (or SIGTERM) stops it.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType

from ._terminal import safe_text
from .errors import ConfigurationError
from .localserver import LocalSMTPServer, ReceivedMessage


def _clean(text: str) -> str:
    return safe_text(text)


def summary(received: ReceivedMessage, now: datetime | None = None) -> str:
    """``12:00:01  a@b.example -> c@d.example, e@f.example  "Subject"  1,234 bytes``."""
    try:
        subject = str(received.message.get("Subject", ""))
    except Exception:  # a message the parser cannot read still gets its line
        subject = "?"
    stamp = (now or datetime.now()).strftime("%H:%M:%S")
    recipients = ", ".join(received.rcpt_tos)
    return (
        f"{stamp}  {_clean(received.mail_from or '<>')} -> {_clean(recipients)}  "
        f'"{_clean(subject)}"  {len(received.data):,} bytes'
    )


def _print(text: str) -> None:
    print(text, flush=True)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_server(
    *,
    host: str = "127.0.0.1",
    port: int = 1025,
    directory: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Serve until interrupted; returns how many messages arrived.

    ``port=0`` picks a free port (the first line says which)."""
    echo = echo or _print
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    server = LocalSMTPServer(
        host=host,
        port=port,
        on_message=lambda received: echo(summary(received)),
        save_dir=directory,
    )
    try:
        _check_free(host, server.port)
        server.start()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot listen on {host}:{server.port}: {exc.strerror or exc}"
        ) from None
    try:
        saving = f"; saving .eml files to {Path(directory).resolve()}" if directory else ""
        echo(f"fluxmail serve: listening on {host}:{server.port} (no TLS, no AUTH){saving}")
        echo("Every message is caught, none is relayed. Ctrl-C to stop.")
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    count = len(server.messages)
    echo(f"fluxmail serve: stopped after {count} message{'' if count == 1 else 's'}")
    return count


def _check_free(host: str, port: int) -> None:
    """Fail at once on a port in use (aiosmtpd would only say so after its start-up
    timeout)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
        probe.bind(address)
