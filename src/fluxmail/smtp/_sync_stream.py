"""The blocking stream under the driver: connect, write, receive, TLS, close.

:class:`SyncStream` has the same methods as ``AsyncStream`` (``_async_stream``), over a
plain socket, so that the one driver (``_async``, from which ``_sync`` is generated)
runs on both. A ``sendall`` that returns has handed every byte to the kernel: that is
what "the final dot was sent" means here.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

from ._common import READ_SIZE, log
from ._errors import ServerClosedError
from ._replies import ReplyParser


def pause() -> None:
    """Nothing to wait for (the asyncio twin lets the event loop run once)."""


class SyncStream:
    """One blocking connection to an SMTP server, feeding ``parser``."""

    def __init__(self, sock: socket.socket, parser: ReplyParser) -> None:
        self._sock = sock
        self._parser = parser

    @classmethod
    def connect(cls, host: str, port: int, timeout: float, parser: ReplyParser) -> SyncStream:
        """Open a TCP connection; raises OSError (TimeoutError included)."""
        return cls(socket.create_connection((host, port), timeout), parser)

    @property
    def eof(self) -> bool:
        """Not known without reading: a blocking socket learns it when it reads."""
        return False

    def start_tls(self, context: ssl.SSLContext, server_hostname: str, timeout: float) -> None:
        """The TLS handshake; raises OSError (ssl.SSLError, TimeoutError)."""
        self._sock.settimeout(timeout)
        self._sock = context.wrap_socket(self._sock, server_hostname=server_hostname)

    def write(self, data: bytes | memoryview, timeout: float) -> None:
        """Write ``data``, at most ``timeout`` seconds; when this returns, the kernel has
        every byte."""
        self._sock.settimeout(timeout)
        self._sock.sendall(data)

    def receive(self, deadline: float) -> None:
        """Read more bytes for the parser until ``deadline`` (``time.monotonic()``);
        raises TimeoutError, ServerClosedError or the parser's ProtocolError."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(remaining)
        data = self._sock.recv(READ_SIZE)
        if not data:
            raise ServerClosedError()
        self._parser.feed(data)

    def take_input(self) -> bool:
        """Feed the parser whatever already arrived, without waiting; False once the
        server has closed (or reset) the connection. Raises the parser's ProtocolError."""
        sock = self._sock
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            try:
                readable, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):
                return True
            if not readable:
                return True
        timeout = sock.gettimeout()
        try:
            sock.setblocking(False)
            while True:
                data = sock.recv(READ_SIZE)
                if not data:
                    return False
                self._parser.feed(data)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except OSError:
            return False  # a reset
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)

    def quiet(self) -> bool:
        """Nothing arrived and the server did not leave (a live idle session is silent)."""
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def tls_details(self) -> ssl.SSLSocket | None:
        return self._sock if isinstance(self._sock, ssl.SSLSocket) else None

    def abort(self) -> None:
        """Close the socket at once, without a word."""
        try:
            self._sock.close()
        except OSError:  # pragma: no cover - close() on a dead socket
            log.debug("error closing the socket", exc_info=True)
