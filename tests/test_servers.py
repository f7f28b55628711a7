"""The test servers themselves: what the hardening tests rely on them to do and record."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest

from fluxmail import FluxMail
from fluxmail.errors import ConnectError, RecipientsRefusedError, TLSRequiredError
from hardening import send
from servers import FaultServer, SlowRead, SMTPTestServer

MakeServer = Callable[..., SMTPTestServer]
MakeFault = Callable[..., FaultServer]


def one(mailer: FluxMail, **extra: object) -> str:
    return send(mailer, "sync", subject="s", recipients=["b@example.com"], body="b", **extra)


def test_a_starttls_session_is_one_connection(make_server: MakeServer) -> None:
    server = make_server(tls="starttls", auth=True)
    one(FluxMail(**server.fluxmail_kwargs(sender="a@example.com")))
    assert server.connections == 1
    (session,) = server.sessions
    assert [c.split()[0] for c in session.commands][:3] == ["EHLO", "STARTTLS", "EHLO"]
    assert session.messages == 1


def test_stop_is_idempotent() -> None:
    for server in (SMTPTestServer().start(), FaultServer().start()):
        server.stop()
        server.stop()
        with pytest.raises(ConnectionRefusedError):  # stopped: nothing listens any more
            socket.create_connection((server.host, server.port), timeout=5).close()


def test_fail_close_after_and_strip_starttls(make_server: MakeServer) -> None:
    failing = make_server(fail={"RCPT": lambda s: 451 if s.messages == 0 else None})
    mailer = FluxMail(**failing.fluxmail_kwargs(sender="a@example.com"))
    with pytest.raises(RecipientsRefusedError) as info:
        one(mailer)
    assert info.value.smtp_code == 451
    closing = make_server(fail={"EHLO": "421 4.3.2 Not now"})
    with pytest.raises(ConnectError, match="421"):
        one(FluxMail(**closing.fluxmail_kwargs(sender="a@example.com")))
    limited = make_server(close_after=2)
    mailer = FluxMail(**limited.fluxmail_kwargs(sender="a@example.com"))
    with mailer:
        for _ in range(5):
            one(mailer)
    assert [s.messages for s in limited.sessions] == [2, 2, 1]
    stripped = make_server(tls="starttls", strip_starttls=True)
    with pytest.raises(TLSRequiredError):
        one(FluxMail(**stripped.fluxmail_kwargs(sender="a@example.com")))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_slow_but_steady_reader_is_not_cut_off(make_fault_server: MakeFault, mode: str) -> None:
    """Each 1 MiB slice of the data has its own deadline: a reader slower than the
    timeout over the whole message, but steady, still gets all of it. (The reply to the
    final dot must come within the timeout of the last byte entering the kernel's send
    buffer, at most a few MB ahead of the reader: hence 8 MB/s here.)"""
    server = make_fault_server(
        {"DATA": SlowRead(rate=8_000_000, chunk=65536)},
        capabilities=("PIPELINING", "SIZE 30000000"),
        rcvbuf=65536,
    )
    mailer = FluxMail(**server.fluxmail_kwargs(sender="a@example.com", timeout=1))
    body = ("y" * 75 + "\n") * 160_000  # 12 MB: 1.5 s at 8 MB/s
    started = time.monotonic()
    mailer.create(subject="s", recipients=["b@example.com"], body=body)
    if mode == "sync":
        mailer.send()
    else:
        asyncio.run(mailer.send_async())
    assert time.monotonic() - started > 1  # longer than the timeout, and yet delivered
    assert server.messages[0].message.get_content() == body.replace("\n", "\r\n")
