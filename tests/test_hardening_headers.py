"""Rule 15 of docs/security.md: header lines are folded at any white space, never over
998 octets; what cannot be folded is refused by create(), before any connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from django_helpers import django_backend
from fluxmail import FluxMail
from fluxmail.compose._mime import fold_text
from fluxmail.errors import InvalidMessageError, MessageRefusedError, SMTPResponseError
from hardening import MODES, assert_clean_wire, run_batch, send
from servers import FaultServer

MakeFault = Callable[..., FaultServer]

FOLDABLE = {
    "tab between two long words": "a" * 600 + "\t" + "b" * 600,
    "a long run of spaces": "a" * 600 + " " * 600 + "b" * 600,
    "words joined by tabs": "\t".join(["word"] * 300),
    "tabs and spaces": " \t".join(["x" * 90] * 30),
    "a run of spaces split over two lines": "c" * 500 + " " * 900 + "d" * 500,
}
UNFOLDABLE = {
    "one word over 998": "a" * 1200,
    "a run of white space too long for one fold": "a" + " " * 2000 + "b",
    "long words around a long run": "c" * 900 + " " * 900 + "d" * 900,
}


def message(**extra: Any) -> dict[str, Any]:
    return {
        "subject": "s",
        "recipients": ["to@example.com"],
        "body": "b",
        "sender": "me@x.org",
        **extra,
    }


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def unfolded(raw: bytes, name: str) -> str:
    """The header ``name`` as written, with the folding CRLFs removed (RFC 5322 2.2.3)."""
    text = re.sub(r"\r\n(?=[ \t])", "", header_block(raw).decode("ascii"))
    line = next(line for line in text.split("\r\n") if line.startswith(f"{name}:"))
    return line[len(name) + 2 :]


@pytest.mark.parametrize("value", FOLDABLE.values(), ids=FOLDABLE.keys())
def test_fold_text_keeps_the_value_and_every_line_short(value: str) -> None:
    folded = fold_text("X-Long", value)
    lines = folded.split("\r\n")[:-1]
    assert all(len(line) <= 998 for line in lines)
    assert all(line[:1] in (" ", "\t") for line in lines[1:])  # only at white space
    assert all(line.strip(" \t") for line in lines)  # no line of white space only
    assert "".join(lines) == f"X-Long: {value}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", FOLDABLE.values(), ids=FOLDABLE.keys())
def test_long_headers_are_folded_on_the_wire(
    make_fault_server: MakeFault, mode: str, value: str
) -> None:
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs())
    send(mailer, mode, **message(headers={"X-Long": value}))
    raw = server.received[0].raw
    assert_clean_wire(raw)
    assert unfolded(server.received[0].data, "X-Long") == value
    assert not server.received[0].message.defects


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", UNFOLDABLE.values(), ids=UNFOLDABLE.keys())
def test_unfoldable_headers_are_refused_by_create(
    make_fault_server: MakeFault, mode: str, value: str
) -> None:
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs())
    with pytest.raises(InvalidMessageError, match=r"headers\['X-Long'\].*998"):
        mailer.create(**message(headers={"X-Long": value}))
    result = run_batch(mailer, [message(), message(headers={"X-Long": value}), message()], mode)
    assert result["sent"] == 2
    assert result["failed"] == 1
    assert isinstance(result["errors"][0][1], InvalidMessageError)
    assert len(server.received) == 2
    assert all(session.commands[0].startswith("EHLO") for session in server.sessions)


def test_django_long_headers_are_folded_or_refused_before_mail(
    make_fault_server: MakeFault,
) -> None:
    from django.core.mail import EmailMessage

    server = make_fault_server()
    backend = django_backend(host=server.host, port=server.port)
    value = FOLDABLE["tab between two long words"]
    mail = EmailMessage("s", "b", "me@x.org", ["to@example.com"], headers={"X-Long": value})
    assert backend.send_messages([mail]) == 1
    assert_clean_wire(server.received[0].raw)
    long = EmailMessage("s", "b", "me@x.org", ["to@example.com"], headers={"X-Long": "a" * 1200})
    with pytest.raises((InvalidMessageError, MessageRefusedError, SMTPResponseError)):
        backend.send_messages([long])
    assert [v for v in server.verbs() if v == "MAIL"] == ["MAIL"]
