"""``fluxmail serve``: a local SMTP server that catches mail, for development.

Point your application at it (``FLUXMAIL_HOST=localhost FLUXMAIL_PORT=1025``, or Django's
``EMAIL_HOST``/``EMAIL_PORT``): every message is accepted, never relayed, and shown as one
line (``--details``: the whole account ``fluxmail demo`` prints); ``--dir`` also keeps each
one as an ``.eml`` file. Ctrl-C (or SIGTERM) stops it.

So that the API page's examples run unchanged except for host and port, it speaks what a
real provider speaks: STARTTLS on the main port (offered, not required), implicit TLS on a
second port, and AUTH that takes any username and password (or only the ones given).
The certificate comes from a throwaway CA written to a directory it prints, with the one
``export SSL_CERT_FILE=...`` line that makes Python's ``ssl.create_default_context()``
trust it; serve checks that line works before printing it.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from .._terminal import safe_text
from ..errors import ConfigurationError, MissingDependencyError
from .localserver import ANY_CREDENTIALS, LocalSMTPServer, ReceivedMessage

DEFAULT_PORT = 1025
DEFAULT_SSL_PORT = 1465


def _clean(text: str) -> str:
    return safe_text(text)


def summary(received: ReceivedMessage, now: datetime | None = None) -> str:
    """``12:00:01  a@b.example -> c@d.example, e@f.example  "Subject"  1,234 bytes``,
    then ``  TLS`` and ``  AUTH user`` when the session had them."""
    try:
        subject = str(received.message.get("Subject", ""))
    except Exception:  # a message the parser cannot read still gets its line
        subject = "?"
    stamp = (now or datetime.now()).strftime("%H:%M:%S")
    recipients = ", ".join(received.rcpt_tos)
    line = (
        f"{stamp}  {_clean(received.mail_from or '<>')} -> {_clean(recipients)}  "
        f'"{_clean(subject)}"  {len(received.data):,} bytes'
    )
    if received.tls:
        line += "  TLS"
    if received.auth_user:
        line += f"  AUTH {_clean(received.auth_user)}"
    return line


def _print(text: str) -> None:
    print(text, flush=True)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def default_cert_dir() -> Path:
    """Where the throwaway CA goes unless ``--cert-dir`` says otherwise: a fixed place, so
    the ``export SSL_CERT_FILE=...`` line stays the same from one run to the next."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fluxmail" / "serve"


def _new_ca() -> Any:
    try:
        import trustme
    except ImportError:
        raise MissingDependencyError("TLS on the local server", "server", "trustme") from None
    return trustme.CA()


def write_trust(ca: Any, directory: Path) -> Path:
    """Write ``ca.pem`` (the throwaway CA) and ``trust.pem`` (the system's CAs plus this
    one, so the same shell still reaches real TLS servers); returns ``trust.pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = ca.cert_pem.bytes()
    (directory / "ca.pem").write_bytes(ca_pem)
    system = ssl.get_default_verify_paths().cafile
    bundle = Path(system).read_bytes() if system and Path(system).is_file() else b""
    trust = directory / "trust.pem"
    trust.write_bytes(bundle + (b"\n" if bundle and not bundle.endswith(b"\n") else b"") + ca_pem)
    return trust


def trust_line(trust: Path) -> str:
    if sys.platform == "win32":
        return f'set "SSL_CERT_FILE={trust}"'
    return f"export SSL_CERT_FILE={trust}"


def env_trust_works(trust: Path, host: str, port: int) -> bool:
    """Does ``SSL_CERT_FILE=trust`` make ``ssl.create_default_context()`` verify the
    server on ``host:port``? Checked with a real handshake, as the user's code will do."""
    saved = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(trust)
    try:
        context = ssl.create_default_context()
    finally:
        if saved is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = saved
    target = "127.0.0.1" if host in ("", "0.0.0.0", "localhost") else host  # noqa: S104
    try:
        with (
            socket.create_connection((target, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost"),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def run_server(
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    ssl_port: int | None = None,
    tls: bool = True,
    auth: tuple[str, str] | Literal["any"] | None = ANY_CREDENTIALS,
    cert_dir: str | None = None,
    directory: str | None = None,
    details: bool = False,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Serve until interrupted; returns how many messages arrived.

    ``port=0`` picks a free port (the first line says which); ``ssl_port`` (implicit
    TLS) defaults to 1465, or to a free port when ``port`` is 0. ``tls=False`` serves
    plain SMTP only."""
    out = echo or _print

    def show(received: ReceivedMessage) -> None:
        out(summary(received))
        if details:
            from ._demo import describe

            out(describe(received) + "\n")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    ca = _new_ca() if tls else None
    common: dict[str, Any] = dict(host=host, auth=auth, strict=False, ca=ca, on_message=show)
    servers = [LocalSMTPServer(port=port, starttls=tls, save_dir=directory, **common)]
    if tls:
        wanted = ssl_port if ssl_port is not None else (0 if port == 0 else DEFAULT_SSL_PORT)
        servers.append(
            LocalSMTPServer(port=wanted, implicit_tls=True, save_dir=directory, **common)
        )
    try:
        for server in servers:
            _start(server)
        for line in _banner(servers, ca, auth, cert_dir, directory):
            out(line)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()
    count = sum(len(server.messages) for server in servers)
    out(f"fluxmail serve: stopped after {count} message{'' if count == 1 else 's'}")
    return count


def _start(server: LocalSMTPServer) -> None:
    try:
        _check_free(server.host, server.port)
        server.start()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}"
        ) from None


def _banner(
    servers: list[LocalSMTPServer],
    ca: Any,
    auth: tuple[str, str] | Literal["any"] | None,
    cert_dir: str | None,
    directory: str | None,
) -> list[str]:
    main = servers[0]
    if auth == ANY_CREDENTIALS:
        who = "AUTH with any username and password"
    elif auth is not None:
        who = f"AUTH as {auth[0]} only"
    else:
        who = "no AUTH"
    if len(servers) == 1:
        where = f"{main.host}:{main.port} (no TLS, {who})"
    else:
        where = (
            f"{main.host}:{main.port} (plain or STARTTLS) and {main.host}:{servers[1].port} "
            f"(implicit TLS); {who}"
        )
    saving = f"; saving .eml files to {Path(directory).resolve()}" if directory else ""
    lines = [f"fluxmail serve: listening on {where}{saving}"]
    if len(servers) > 1:
        folder = Path(cert_dir) if cert_dir else default_cert_dir()
        try:
            trust = write_trust(ca, folder.resolve())
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the CA to {folder}: {exc.strerror or exc}; choose --cert-dir"
            ) from None
        lines.append(f"  The certificate is from a throwaway CA written to {trust.parent}.")
        if env_trust_works(trust, main.host, servers[1].port):
            lines.append("  Make Python trust it, in the shell that runs your code:")
            lines.append(f"  {trust_line(trust)}")
        else:
            lines.append(
                "  This Python ignores SSL_CERT_FILE: pass "
                f"ssl_context=ssl.create_default_context(cafile={str(trust)!r})"
            )
        lines.append(
            f'  Then: host="localhost", port={main.port}, use_tls=True '
            f"(or port={servers[1].port}, use_ssl=True)."
        )
    lines.append("Every message is caught, none is relayed. Ctrl-C to stop.")
    return lines


def _check_free(host: str, port: int) -> None:
    """Fail at once on a port in use (aiosmtpd would only say so after its start-up
    timeout)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
        probe.bind(address)
