"""Rule 3 of docs/security.md: bodies are CRLF-normalised and dot-stuffed, no bare CR or
LF ever reaches the wire (no SMTP smuggling, whatever the body holds), and no line is
longer than 998 octets. The FaultServer records the DATA bytes exactly as received.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine_client import Connect
from fluxmail import FluxMail
from fluxmail.envelope import Composed, Envelope
from fluxmail.errors import InvalidMessageError
from fluxmail.smtp._data import MAX_LINE, check_line_length, prepare_data
from hardening import MODES, assert_clean_wire, run_batch, send
from helpers import crlf
from helpers import run as run_cli
from servers import FaultServer

MakeFault = Callable[..., FaultServer]

#: Bodies that try to end the DATA early and start a second, forged transaction with
#: every line-end variant receivers have been tricked by (SMTP smuggling, 2023).
SMUGGLING = [
    "hi\n.\nMAIL FROM:<evil@attacker.test>\nRCPT TO:<victim@example.com>\nDATA\nforged\n.\n",
    "hi\r.\rMAIL FROM:<evil@attacker.test>\r\n",
    "hi\r\n.\rMAIL FROM:<evil@attacker.test>\r\n",
    "hi\r.\r\nMAIL FROM:<evil@attacker.test>\r\n",
    "hi\n.\r\nMAIL FROM:<evil@attacker.test>\r\n",
    "hi\r\n.\nMAIL FROM:<evil@attacker.test>\r\n",
    "hi\r\n.\r\nMAIL FROM:<evil@attacker.test>\r\n",
    ".\r\n.\n.\r..\r\n",
    "\x00\r\n.\x00\r\n",
]


def normalised(body: str) -> str:
    """What a reader gets back (the body rule): each CRLF, CR or LF is one CRLF, and a
    final one is added."""
    return crlf(body)


def check_one_delivery(server: FaultServer, body: str) -> None:
    assert len(server.received) == 1
    assert server.verbs().count("MAIL") == 1  # no forged second transaction
    received = server.received[0]
    assert_clean_wire(received.raw)
    assert received.message.get_content() == normalised(body)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", SMUGGLING)
def test_api_never_smuggles(make_fault_server: MakeFault, mode: str, body: str) -> None:
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs(sender="a@example.com"))
    send(mailer, mode, subject="s", recipients=["b@example.com"], body=body)
    check_one_delivery(server, body)


@pytest.mark.parametrize("mode", MODES)
def test_bulk_never_smuggles(make_fault_server: MakeFault, mode: str) -> None:
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs(sender="a@example.com"))
    messages = [{"subject": "s", "recipients": ["b@example.com"], "body": b} for b in SMUGGLING]
    result = run_batch(mailer, messages, mode)
    assert result["sent"] == len(SMUGGLING)
    assert server.verbs().count("MAIL") == len(SMUGGLING)
    for received, body in zip(server.received, SMUGGLING, strict=True):
        assert_clean_wire(received.raw)
        assert received.message.get_content() == normalised(body)


def test_cli_never_smuggles(make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    body = SMUGGLING[0]
    args = ["--type", "smtp", "--host", server.host, "--port", str(server.port)]
    args += ["--sender", "a@example.com", "--recipients", "b@example.com", "--subject", "s"]
    result = run_cli(*args, "--body", body)
    assert result.returncode == 0, result.stderr
    check_one_delivery(server, body)


def test_django_never_smuggles(make_fault_server: MakeFault) -> None:
    pytest.importorskip("django")
    from django.core.mail import EmailMessage

    from fluxmail.backends.django import FluxMailBackend

    server = make_fault_server()
    backend = FluxMailBackend(host=server.host, port=server.port, username="", password="")
    message = EmailMessage("s", SMUGGLING[1], "a@example.com", ["b@example.com"])
    assert backend.send_messages([message]) == 1
    assert len(server.received) == 1
    assert server.verbs().count("MAIL") == 1
    assert_clean_wire(server.received[0].raw)


# --- the engine itself, whatever composer made the bytes -------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: x\n\nbare\nLF\n.\nMAIL FROM:<e@x>\n",
        b"Subject: x\r\rbare\rCR\r.\rMAIL FROM:<e@x>\r",
        b"Subject: x\r\n\r\nmixed\r\n.\rMAIL\n.\r\n.",
        b".leading dot\r\n..two\r\n.",
    ],
)
def test_engine_normalises_foreign_bytes(
    connect: Connect, make_fault_server: MakeFault, data: bytes
) -> None:
    server = make_fault_server()
    composed = Composed(Envelope("a@example.com", ("b@example.com",)), data, "<i@example.com>")
    connect(server.smtp_config()).send(composed)
    assert server.verbs().count("MAIL") == 1
    assert_clean_wire(server.received[0].raw)
    assert server.received[0].raw == prepare_data(data)


@pytest.mark.parametrize("length", [MAX_LINE, MAX_LINE + 1])
def test_engine_refuses_a_line_over_998_octets_before_mail(
    connect: Connect, make_fault_server: MakeFault, length: int
) -> None:
    server = make_fault_server()
    data = b"Subject: x\r\n\r\n" + b"." + b"y" * (length - 1) + b"\r\nend\r\n"
    composed = Composed(Envelope("a@example.com", ("b@example.com",)), data, "<i@example.com>")
    client = connect(server.smtp_config())
    if length > MAX_LINE:
        with pytest.raises(InvalidMessageError, match="longer than 998"):
            client.send(composed)
        assert "MAIL" not in server.verbs()
        return
    client.send(composed)  # 998 octets, then a stuffing dot on the wire: still fine
    assert_clean_wire(server.received[0].raw)


def test_line_length_check_edges() -> None:
    check_line_length(b"x" * MAX_LINE)
    check_line_length((b"x" * MAX_LINE + b"\r\n") * 3)
    check_line_length(b"a\r\n" + b"x" * MAX_LINE)
    for bad in (b"x" * 999, b"a\r\n" + b"x" * 999 + b"\r\n", b"a\r\n" * 500 + b"x" * 5000):
        with pytest.raises(InvalidMessageError):
            check_line_length(bad)


@pytest.mark.parametrize("mode", MODES)
def test_long_lines_are_encoded_and_come_back_exactly(
    make_fault_server: MakeFault, mode: str
) -> None:
    server = make_fault_server()
    body = "word " * 2000 + "\n" + "é" * 3000 + "\n" + "." * 1500
    mailer = FluxMail(**server.fluxmail_kwargs(sender="a@example.com"))
    send(mailer, mode, subject="s" * 2000, recipients=["b@example.com"], body=body)
    received = server.received[0]
    assert_clean_wire(received.raw)
    assert received.message.get_content() == normalised(body)
    assert received.message["Subject"] == "s" * 2000


def test_django_long_body_line(make_fault_server: MakeFault) -> None:
    pytest.importorskip("django")
    from django.core.mail import EmailMessage

    from fluxmail.backends.django import FluxMailBackend

    server = make_fault_server()
    backend = FluxMailBackend(host=server.host, port=server.port, username="", password="")
    message = EmailMessage("s", "z" * 5000, "a@example.com", ["b@example.com"])
    assert backend.send_messages([message]) == 1
    assert_clean_wire(server.received[0].raw)
    assert server.received[0].message.get_content().rstrip("\r\n") == "z" * 5000
