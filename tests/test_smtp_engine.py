"""The SMTP engine against real servers on 127.0.0.1, sync and async.

Every behaviour runs twice through the ``connect`` fixture: once with
:class:`SMTPConnection` and once with :class:`AsyncSMTPConnection` (on its own event
loop). Servers come from ``tests/servers.py``: aiosmtpd for correct servers, the scripted
:class:`FaultServer` for misbehaving ones.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest

from engine_client import BAD, GOOD, OTHER, Connect, msg, timed
from fluxmail.errors import (
    AuthenticationError,
    ConnectError,
    HeaderInjectionError,
    MessageRefusedError,
    MessageTooLargeError,
    OutcomeUnknownError,
    ProtocolError,
    RecipientsRefusedError,
    SenderRefusedError,
    SendTimeoutError,
    SMTPUTF8UnsupportedError,
    TLSRequiredError,
    TLSVerifyError,
)
from fluxmail.smtp import AsyncSMTPConnection, SendResult
from servers import (
    PASSWORD,
    USERNAME,
    Close,
    DropMidData,
    Endless,
    FaultServer,
    FaultSession,
    Reply,
    SMTPTestServer,
    Stall,
    StartTLS,
    Trickle,
    tls_material,
)

MakeServer = Callable[..., SMTPTestServer]
MakeFault = Callable[..., FaultServer]


# --- successful sessions ---------------------------------------------------------------


def test_plain_send(connect: Connect, smtp_server: SMTPTestServer) -> None:
    client = connect(smtp_server.smtp_config())
    result = client.send(msg(GOOD, OTHER))
    assert result.accepted == (GOOD, OTHER)
    assert result.refused == {}
    assert result.smtp_code == 250
    assert result.message_id == "<t1@example.com>"
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(SendResult)}
    assert set(vars(result)) == set(fields)
    assert result == SendResult(**fields)
    [received] = smtp_server.messages
    assert received.mail_from == "sender@example.com"
    assert received.rcpt_tos == [GOOD, OTHER]
    assert received.data == b"Subject: test\r\n\r\nHello\r\n"
    assert received.mail_options == [f"SIZE={len(received.data)}"]
    info = client.conn.info
    assert info is not None
    assert info.esmtp
    assert info.pipelining
    assert info.tls_version is None
    assert not info.authenticated
    assert info.max_size == 33554432
    assert info.connect_ms > 0


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_and_auth(connect: Connect, make_server: MakeServer, mechanism: str) -> None:
    other = "LOGIN" if mechanism == "PLAIN" else "PLAIN"
    server = make_server(tls="starttls", auth=True, exclude_auth=(other,))
    client = connect(server.smtp_config())
    info = client.open()
    assert info.tls_version in ("TLSv1.2", "TLSv1.3")
    assert info.cipher
    assert info.authenticated
    assert info.auth_mechanism == mechanism
    assert "STARTTLS" not in info.capabilities  # the capabilities are from after TLS
    client.send(msg())
    [received] = server.messages
    assert received.tls
    assert received.auth_user == USERNAME


def test_implicit_tls(connect: Connect, ssl_server: SMTPTestServer) -> None:
    client = connect(ssl_server.smtp_config())
    client.send(msg())
    assert client.conn.info is not None
    assert client.conn.info.tls_version is not None
    assert client.conn.info.authenticated
    assert ssl_server.messages[0].tls


def test_connection_reuse(connect: Connect, smtp_server: SMTPTestServer) -> None:
    client = connect(smtp_server.smtp_config())
    client.send(msg(GOOD))
    client.send(msg(OTHER))
    assert client.is_open
    assert smtp_server.connections == 1
    assert [m.session_id for m in smtp_server.messages] == [1, 1]


def test_close_says_quit_and_is_idempotent(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    client = connect(server.smtp_config())
    client.send(msg())
    client.close()
    client.close()
    assert not client.is_open
    assert server.verbs()[-1] == "QUIT"


def test_ehlo_refused_falls_back_to_helo(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server({"EHLO": Reply("502 5.5.2 EHLO not supported")})
    client = connect(server.smtp_config())
    info = client.open()
    assert not info.esmtp
    assert not info.pipelining
    client.send(msg())
    assert server.verbs()[:3] == ["EHLO", "HELO", "MAIL"]
    assert server.messages[0].mail_options == []


# --- TLS and AUTH failures -------------------------------------------------------------


def test_untrusted_certificate(connect: Connect, untrusted_server: SMTPTestServer) -> None:
    for context in (tls_material().client_context(), None):
        client = connect(untrusted_server.smtp_config(ssl_context=context))
        exc, _ = timed(client.open, TLSVerifyError)
        assert exc.code == "tls_verify_failed"
        assert isinstance(exc.__cause__, ssl.SSLCertVerificationError)
        assert not client.is_open
    assert untrusted_server.commands("MAIL") == []


def test_starttls_not_offered(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server(auth_mechanisms=("PLAIN", "LOGIN"))
    config = server.smtp_config(use_tls=True, username=USERNAME, password=PASSWORD)
    client = connect(config)
    exc, _ = timed(lambda: client.send(msg()), TLSRequiredError)
    assert exc.code == "tls_required"
    assert server.verbs() == ["EHLO", "QUIT"]  # no AUTH, no MAIL, ever


def test_starttls_refused_454(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server({"STARTTLS": Reply("454 4.7.0 TLS not available")}, tls=True)
    client = connect(server.smtp_config(username=USERNAME, password=PASSWORD))
    timed(lambda: client.send(msg()), TLSRequiredError)
    assert "AUTH" not in server.verbs()
    assert "MAIL" not in server.verbs()


def test_starttls_response_injection_is_ignored(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    injected = b"250-INJECTED\r\n250 PIPELINING\r\n"
    server = make_fault_server(
        {"STARTTLS": StartTLS(inject=injected)}, tls=True, capabilities=("SIZE 1000000",)
    )
    client = connect(server.smtp_config())
    info = client.open()
    assert "INJECTED" not in info.capabilities
    assert not info.pipelining
    assert info.max_size == 1000000
    client.send(msg())
    session = server.sessions[0]
    assert session.verbs()[:3] == ["EHLO", "STARTTLS", "EHLO"]
    assert session.tls
    assert len(server.messages) == 1


def test_wrong_password_is_never_shown(
    connect: Connect, starttls_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wr0ng-s3cret-value"
    caplog.set_level(logging.DEBUG, logger="fluxmail.smtp")
    client = connect(starttls_server.smtp_config(password=secret))
    exc, _ = timed(client.open, AuthenticationError)
    assert exc.code == "authentication_failed"
    assert exc.smtp_code == 535
    assert exc.enhanced_code == "5.7.8"
    assert not exc.transient
    token = base64.b64encode(f"\0{USERNAME}\0{secret}".encode()).decode()
    for text in (str(exc), repr(exc), caplog.text, repr(client.conn.config)):
        assert secret not in text
        assert token not in text
    assert "AUTH PLAIN [redacted]" in caplog.text
    assert starttls_server.commands("MAIL") == []


def test_server_echoing_the_credentials_is_scrubbed(
    connect: Connect, make_fault_server: MakeFault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxmail.smtp")
    token = base64.b64encode(f"\0{USERNAME}\0{PASSWORD}".encode()).decode()
    echo = Reply(f"535 5.7.8 refused {token} ({PASSWORD})")
    server = make_fault_server({"AUTH": echo}, auth_mechanisms=("PLAIN",))
    config = server.smtp_config(username=USERNAME, password=PASSWORD, allow_insecure_auth=True)
    exc, _ = timed(connect(config).open, AuthenticationError)
    for text in (str(exc), caplog.text):
        assert token not in text
        assert PASSWORD not in text
    assert "535 5.7.8 refused [redacted] ([redacted])" in caplog.text


def test_auth_login_password_not_logged(
    connect: Connect, make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxmail.smtp")
    server = make_server(tls="starttls", auth=True, exclude_auth=("PLAIN",))
    connect(server.smtp_config()).open()
    assert base64.b64encode(PASSWORD.encode()).decode() not in caplog.text
    assert PASSWORD not in caplog.text
    assert "C: [redacted]" in caplog.text


def test_auth_without_tls_is_refused_unless_allowed(
    connect: Connect, make_server: MakeServer
) -> None:
    server = make_server(auth=True)  # plain connection, AUTH offered anyway
    exc, _ = timed(connect(server.smtp_config()).open, TLSRequiredError)
    assert "use_tls" in str(exc)
    assert "use_ssl" in str(exc)
    assert server.commands("AUTH") == []
    client = connect(server.smtp_config(allow_insecure_auth=True))
    client.send(msg())
    assert server.messages[0].auth_user == USERNAME


def test_no_supported_auth_mechanism(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server(auth_mechanisms=("CRAM-MD5",))
    config = server.smtp_config(username=USERNAME, password=PASSWORD, allow_insecure_auth=True)
    exc, _ = timed(connect(config).open, AuthenticationError)
    assert "CRAM-MD5" in str(exc)


def test_cert_none_context_logs_a_warning(
    connect: Connect, ssl_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connect(ssl_server.smtp_config(ssl_context=context)).open()
    assert any(r.levelno == logging.WARNING and r.name == "fluxmail.smtp" for r in caplog.records)


# --- pipelining ------------------------------------------------------------------------


def test_pipelining_used_when_offered(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    connect(server.smtp_config()).send(msg(GOOD, OTHER))
    session = server.sessions[0]
    together = {session.chunk_of(v) for v in ("MAIL", "DATA")}
    together |= {session.chunk_of("RCPT", 0), session.chunk_of("RCPT", 1)}
    assert len(together) == 1
    assert session.chunk_of("EHLO") not in together


def test_no_pipelining_when_not_offered(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server(capabilities=("8BITMIME",))
    connect(server.smtp_config()).send(msg(GOOD, OTHER))
    session: FaultSession = server.sessions[0]
    reads = [session.chunk_of("MAIL"), session.chunk_of("RCPT", 0)]
    reads += [session.chunk_of("RCPT", 1), session.chunk_of("DATA")]
    assert len(set(reads)) == 4
    assert len(server.messages) == 1


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
def test_one_recipient_refused(
    connect: Connect, make_server: MakeServer, pipelining: bool
) -> None:
    server = make_server(reject_rcpt={BAD: 550}, pipelining=pipelining)
    result = connect(server.smtp_config()).send(msg(BAD, GOOD))
    assert result.accepted == (GOOD,)
    assert result.refused == {BAD: (550, f"5.1.1 <{BAD}>: refused")}
    assert [m.rcpt_tos for m in server.messages] == [[GOOD]]


@pytest.mark.parametrize("pipelining", [True, False])
def test_all_refused_then_rset_and_reuse(
    connect: Connect, make_server: MakeServer, pipelining: bool
) -> None:
    server = make_server(reject_rcpt={BAD: 550, OTHER: 551}, pipelining=pipelining)
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(msg(BAD, OTHER)), RecipientsRefusedError)
    assert exc.code == "recipients_refused"
    assert set(exc.refused) == {BAD, OTHER}
    assert exc.smtp_code in (550, 551)
    assert not exc.transient
    assert server.messages == []
    assert client.is_open
    assert server.commands("RSET")
    client.send(msg(GOOD))
    assert [m.rcpt_tos for m in server.messages] == [[GOOD]]
    assert server.connections == 1


def test_sender_refused(connect: Connect, make_server: MakeServer) -> None:
    server = make_server(reject_mail="553 5.7.1 Sender not allowed")
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(msg()), SenderRefusedError)
    assert exc.smtp_code == 553
    assert exc.enhanced_code == "5.7.1"
    assert client.is_open


@pytest.mark.parametrize(
    ("code", "cls", "transient"),
    [(451, MessageRefusedError, True), (552, MessageTooLargeError, False),
     (554, MessageRefusedError, False)],
)  # fmt: skip
def test_refused_at_end_of_data(
    connect: Connect, make_server: MakeServer, code: int, cls: type[Exception], transient: bool
) -> None:
    server = make_server(data_reply=f"{code} {code // 100}.6.0 not today")
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(msg()), cls)
    assert exc.smtp_code == code
    assert exc.enhanced_code == f"{code // 100}.6.0"
    assert exc.transient is transient
    assert client.is_open  # RSET, the connection can be reused
    assert server.commands("RSET")


def test_size_exceeded_before_mail(connect: Connect, make_server: MakeServer) -> None:
    server = make_server(size_limit=1000)
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(msg(data=b"x" * 2000)), MessageTooLargeError)
    assert exc.smtp_code == 552
    assert server.commands("MAIL") == []
    assert client.is_open


def test_smtputf8(connect: Connect, make_server: MakeServer) -> None:
    utf8 = msg(sender="jos\u00e9@example.com", smtputf8=True)
    server = make_server(smtputf8=False)
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(utf8), SMTPUTF8UnsupportedError)
    assert "SMTPUTF8" in str(exc)
    assert server.commands("MAIL") == []
    capable = make_server()
    connect(capable.smtp_config()).send(utf8)
    assert capable.messages[0].mail_from == "jos\u00e9@example.com"
    assert "SMTPUTF8" in capable.messages[0].mail_options


def test_header_injection_in_envelope(connect: Connect, smtp_server: SMTPTestServer) -> None:
    client = connect(smtp_server.smtp_config())
    timed(lambda: client.send(msg("a@example.com\r\nRCPT TO:<x@evil.test>")), HeaderInjectionError)
    client.send(msg())
    assert [m.rcpt_tos for m in smtp_server.messages] == [[GOOD]]


@pytest.mark.parametrize("pipelining", [True, False])
def test_452_too_many_recipients_follow_up(
    connect: Connect, make_server: MakeServer, pipelining: bool
) -> None:
    server = make_server(max_recipients=2, pipelining=pipelining)
    rcpts = tuple(f"r{i}@example.com" for i in range(5))
    result = connect(server.smtp_config()).send(msg(*rcpts))
    assert sorted(result.accepted) == sorted(rcpts)
    assert result.refused == {}
    delivered = [r for m in server.messages for r in m.rcpt_tos]
    assert sorted(delivered) == sorted(rcpts)  # each recipient exactly once
    assert len(server.messages) == 3


# --- DATA transparency -----------------------------------------------------------------


def test_dot_stuffing_and_line_ends(connect: Connect, smtp_server: SMTPTestServer) -> None:
    data = (
        b"Subject: dots\r\n\r\n.\r\n..x\r\nbare\nlf\rcr\r\n.\r\n"
        b"after\n.\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\n"
        b"DATA\r\n\r\nsmuggled\r\n.\r\nend"
    )
    connect(smtp_server.smtp_config()).send(msg(data=data))
    [received] = smtp_server.messages  # no second, smuggled message
    assert received.data == (
        b"Subject: dots\r\n\r\n.\r\n..x\r\nbare\r\nlf\r\ncr\r\n.\r\n"
        b"after\r\n.\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\n"
        b"DATA\r\n\r\nsmuggled\r\n.\r\nend\r\n"
    )
    assert smtp_server.commands("MAIL") == ["MAIL sender@example.com"]


def test_eight_bit_body(connect: Connect, smtp_server: SMTPTestServer) -> None:
    data = "Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncaf\u00e9\r\n".encode()
    connect(smtp_server.smtp_config()).send(msg(data=data))
    assert "BODY=8BITMIME" in smtp_server.messages[0].mail_options
    assert smtp_server.messages[0].data == data


# --- hostile servers -------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["greeting", "EHLO", "MAIL", "DATA"])
def test_stall_before_the_dot_times_out(
    connect: Connect, make_fault_server: MakeFault, stage: str
) -> None:
    server = make_fault_server({stage: Stall()})
    client = connect(server.smtp_config(timeout=1))
    exc, elapsed = timed(lambda: client.send(msg()), SendTimeoutError)
    assert exc.code == "timeout"
    assert exc.transient
    assert elapsed < 2.2
    assert not client.is_open


def test_stalled_tls_handshake_times_out(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server({"STARTTLS": Reply("220 2.0.0 go ahead", stall=True)}, tls=True)
    client = connect(server.smtp_config(timeout=1))
    _, elapsed = timed(client.open, SendTimeoutError)
    assert elapsed < 2.2
    assert not client.is_open


def test_implicit_tls_against_a_plain_server(
    connect: Connect, smtp_server: SMTPTestServer
) -> None:
    config = smtp_server.smtp_config(use_ssl=True, ssl_context=tls_material().client_context())
    exc, _ = timed(connect(config).open, ConnectError)
    assert isinstance(exc.__cause__, ssl.SSLError)
    assert smtp_server.commands("EHLO") == []


def test_trickling_server_cannot_extend_the_deadline(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    server = make_fault_server({"greeting": Trickle(b"220 " + b"x" * 200 + b"\r\n", 0.02)})
    client = connect(server.smtp_config(timeout=1))
    _, elapsed = timed(client.open, SendTimeoutError)
    assert elapsed < 2.2


def test_stall_after_the_dot_is_outcome_unknown(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    server = make_fault_server({"DOT": Stall()})
    client = connect(server.smtp_config(timeout=1))
    exc, elapsed = timed(lambda: client.send(msg()), OutcomeUnknownError)
    assert exc.code == "outcome_unknown"
    assert exc.message_id == "<t1@example.com>"
    assert elapsed < 2.2
    assert not client.is_open


def test_drop_after_the_dot_is_outcome_unknown(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    server = make_fault_server({"DOT": Close()})
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(msg()), OutcomeUnknownError)
    assert exc.message_id == "<t1@example.com>"
    assert isinstance(exc.__cause__, OSError)
    assert len(server.received) == 1
    assert not client.is_open


def test_drop_mid_data_is_a_connection_error(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    server = make_fault_server({"DATA": DropMidData(after=1024)}, capabilities=("PIPELINING",))
    client = connect(server.smtp_config())
    big = b"Subject: big\r\n\r\n" + (b"0123456789abcdef" * 4 + b"\r\n") * (12 * 16384)  # 13 MB
    exc, _ = timed(lambda: client.send(msg(data=big)), ConnectError)
    assert type(exc) is ConnectError
    assert exc.code == "connection_failed"
    assert exc.transient
    assert not client.is_open


def test_drop_during_envelope_is_a_connection_error(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    server = make_fault_server({"MAIL": Close()})
    client = connect(server.smtp_config())
    exc, _ = timed(lambda: client.send(msg()), ConnectError)
    assert type(exc) is ConnectError
    assert exc.__cause__ is not None


@pytest.mark.parametrize(
    "script",
    [
        {"greeting": Reply("HELLO, this is not SMTP")},
        {"EHLO": Reply(b"250-ok\r\n250 ok\r\n250 surplus reply\r\n")},
        {"EHLO": Endless()},
        {"MAIL": Reply(b"25x what\r\n")},
    ],
    ids=["greeting", "surplus", "endless", "mail"],
)
def test_garbage_is_a_protocol_error(
    connect: Connect, make_fault_server: MakeFault, script: dict[str, Any]
) -> None:
    server = make_fault_server(script)
    client = connect(server.smtp_config())
    exc, elapsed = timed(lambda: client.send(msg()), ProtocolError)
    assert exc.code == "protocol_error"
    assert elapsed < 2
    assert not client.is_open


def test_surplus_reply_after_success_retires_the_connection(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    server = make_fault_server({"DOT": Reply("250 2.0.0 queued\r\n421 4.4.2 idle timeout")})
    client = connect(server.smtp_config())
    result = client.send(msg())  # the message was accepted: report it
    assert result.smtp_code == 250
    assert not client.is_open  # but the out-of-step connection is not reused
    client.send(msg())
    assert len(server.sessions) == 2
    assert len(server.received) == 2


def test_server_gone_while_idle_means_a_fresh_connection(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    server = make_fault_server()
    client = connect(server.smtp_config())
    client.send(msg())
    server.close_sessions()  # the server ends the idle session: 421, then close
    client.send(msg())
    assert len(server.sessions) == 2
    assert [m.session_id for m in server.messages] == [1, 2]


def test_greeting_554(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server({"greeting": Reply("554 5.3.2 No service for you")})
    exc, _ = timed(connect(server.smtp_config()).open, ConnectError)
    assert type(exc) is ConnectError
    assert "554" in str(exc)
    assert "No service for you" in str(exc)
    assert not exc.transient


def test_421_closes_and_next_send_reconnects(
    connect: Connect, make_fault_server: MakeFault
) -> None:
    def after_one(session: FaultSession) -> Reply | None:
        return Reply("421 4.3.2 Shutting down", close=True) if session.messages else None

    server = make_fault_server({"MAIL": after_one})
    client = connect(server.smtp_config())
    client.send(msg())
    exc, _ = timed(lambda: client.send(msg()), SenderRefusedError)
    assert exc.smtp_code == 421
    assert exc.transient
    assert not client.is_open
    client.send(msg())  # send() opens a new connection
    assert len(server.messages) == 2
    assert len(server.sessions) == 2


def test_connection_refused(connect: Connect, make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    config = server.smtp_config()
    server.stop()
    exc, _ = timed(connect(config).open, ConnectError)
    assert type(exc) is ConnectError
    assert isinstance(exc.__cause__, OSError)


def test_transcript_is_logged_without_the_body(
    connect: Connect, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxmail.smtp")
    connect(smtp_server.smtp_config()).send(msg(data=b"Subject: x\r\n\r\nvery-private-body\r\n"))
    assert "C: MAIL FROM:<sender@example.com>" in caplog.text
    assert "S: 250 2.0.0 OK queued" in caplog.text
    assert "<message data: 33 bytes>" in caplog.text
    assert "very-private-body" not in caplog.text


# --- asyncio specifics -----------------------------------------------------------------


def test_async_cancellation_closes_the_transport(make_fault_server: MakeFault) -> None:
    server = make_fault_server({"DATA": Stall()})

    async def scenario() -> AsyncSMTPConnection:
        conn = AsyncSMTPConnection(server.smtp_config(timeout=10))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(conn.send(msg()), 0.5)
        assert not conn.is_open
        await conn.close()
        return conn

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 2
    while not server.sessions[0].closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.sessions[0].closed  # the transport was closed, not left dangling
    assert server.received == []
