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

_JOIN_BELOW = 1 << 16  # TLS: a smaller message is joined to its tail, one record


def pause() -> None:
    """Nothing to wait for (the asyncio twin lets the event loop run once)."""


class SyncStream:
    """One blocking connection to an SMTP server, feeding ``parser``.

    A plain TCP socket is non-blocking and waited on with ``poll``: a write is one
    ``send`` when the kernel has room, a read one ``recv`` (and a ``poll`` when nothing
    has arrived yet), and no
    ``settimeout`` ioctl per call (a socket timeout costs one on every change, and a read
    before a deadline changes it each time). After STARTTLS (or with implicit TLS) the
    ``SSLSocket`` keeps its own timeout, since its reads may need writes and the reverse.
    """

    def __init__(self, sock: socket.socket, parser: ReplyParser) -> None:
        self._sock = sock
        self._parser = parser
        self._plain = True  # until the TLS handshake
        sock.setblocking(False)
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)
        self._writable = select.poll()
        self._writable.register(sock, select.POLLOUT)

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
        self._plain = False
        self._sock.settimeout(timeout)
        self._sock = context.wrap_socket(self._sock, server_hostname=server_hostname)

    def write(self, data: bytes | memoryview, timeout: float, tail: bytes = b"") -> None:
        """Write ``data`` then ``tail``, at most ``timeout`` seconds; when this returns,
        the kernel has every byte. A plain socket gathers both in one ``sendmsg`` (a
        message is not copied to append its final dot)."""
        sock = self._sock
        if not self._plain:
            sock.settimeout(timeout)
            if tail and len(data) <= _JOIN_BELOW:
                sock.sendall(b"".join((data, tail)))  # one TLS record
            else:
                sock.sendall(data)
                sock.sendall(tail)
            return
        try:
            sent = sock.sendmsg((data, tail)) if tail else sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data) + len(tail):
            return
        deadline = time.monotonic() + timeout  # (the kernel's buffer is full)
        if sent < len(data):
            self._send_all(memoryview(data)[sent:], deadline)
            sent = len(data)
        self._send_all(memoryview(tail)[sent - len(data) :], deadline)

    def _send_all(self, data: memoryview, deadline: float) -> None:
        sock = self._sock
        while data:
            self._wait(self._writable, deadline)
            with contextlib.suppress(BlockingIOError):
                data = data[sock.send(data) :]

    def receive(self, deadline: float) -> None:
        """Read more bytes for the parser until ``deadline`` (``time.monotonic()``);
        raises TimeoutError, ServerClosedError or the parser's ProtocolError."""
        sock = self._sock
        if self._plain:
            try:  # the replies are often in already (a batch composes while it waits)
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                self._wait(self._readable, deadline)
                try:
                    data = sock.recv(READ_SIZE)
                except BlockingIOError:  # woken for nothing: the caller reads again
                    return
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(remaining)
            data = sock.recv(READ_SIZE)
        if not data:
            raise ServerClosedError()
        self._parser.feed(data)

    @staticmethod
    def _wait(poller: select.poll, deadline: float) -> None:
        """Until ``poller`` reports the socket ready (or in error), or TimeoutError."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise TimeoutError("timed out")

    def take_input(self) -> bool:
        """Feed the parser whatever already arrived, without waiting; False once the
        server has closed (or reset) the connection. Raises the parser's ProtocolError."""
        if self._plain:
            if not self._readable.poll(0):
                return True
            return self._read_ready(self._sock)
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
            return self._read_ready(sock)
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)

    def _read_ready(self, sock: socket.socket) -> bool:
        """Read from non-blocking ``sock`` until it has nothing more; False at its end."""
        try:
            while True:
                data = sock.recv(READ_SIZE)
                if not data:
                    return False
                self._parser.feed(data)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except OSError:
            return False  # a reset

    def quiet(self) -> bool:
        """Nothing arrived and the server did not leave (a live idle session is silent)."""
        if self._plain:
            return not self._readable.poll(0)
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
