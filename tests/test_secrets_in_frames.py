"""A failed login's traceback, read as an error reporter with local-variable capture
reads it (Sentry's default): every local of every frame, containers walked item by item,
anything else by ``repr``. Neither the password nor its AUTH token may show."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.errors import AuthenticationError, FluxMailException
from fluxmail.smtp._sync import SMTPConnection
from servers import PASSWORD, USERNAME, FaultServer, Reply, SMTPTestServer

SECRET = "S3cret-Passw0rd-for-frames"


def _reported(value: Any, depth: int = 0) -> str:
    if depth > 4:
        return ""
    if isinstance(value, (list, tuple, set, frozenset)):
        return " ".join(_reported(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return " ".join(_reported(item, depth + 1) for item in value.values())
    try:
        return repr(value)
    except Exception:  # a reporter skips what cannot be shown
        return ""


def _frames_text(tb: TracebackType | None) -> str:
    parts = []
    while tb is not None:  # fluxmail's frames (the test's own holds the password)
        if f"{os.sep}fluxmail{os.sep}" in tb.tb_frame.f_code.co_filename:
            parts += [_reported(v) for v in tb.tb_frame.f_locals.values()]
        tb = tb.tb_next
    return "\n".join(parts)


def test_a_failed_login_shows_no_secret_in_any_frame(starttls_server: SMTPTestServer) -> None:
    kwargs = starttls_server.fluxmail_kwargs(password=SECRET)
    mailer = FluxMail(**kwargs)
    mailer.create(subject="x", recipients=["b@example.org"], body=".", sender="a@example.org")
    with pytest.raises(AuthenticationError) as caught:
        mailer.send()
    token = base64.b64encode(f"\0{kwargs['username']}\0{SECRET}".encode()).decode()
    text = _frames_text(caught.value.__traceback__)
    cause = caught.value.__cause__ or caught.value.__context__
    while cause is not None:
        text += _frames_text(cause.__traceback__)
        cause = cause.__cause__ or cause.__context__
    assert text  # the frames were read
    for secret in (SECRET, token, base64.b64encode(SECRET.encode()).decode()):
        assert secret not in text


def _chain_frames_text(exc: BaseException) -> str:
    text, seen = "", set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # (a chain may loop)
        seen.add(id(current))
        text += _frames_text(current.__traceback__)
        current = current.__cause__ or current.__context__
    return text


def test_a_reply_echoing_the_login_does_not_outlive_its_exchange(
    make_fault_server: Callable[..., FaultServer],
) -> None:
    """The server echoes the AUTH token in its refusal of message 1's MAIL, then sends
    garbage to message 2's: the second failure's frames, and the connection after it,
    hold no form of the token (the parser remembers only 250 and 354 replies)."""
    token = base64.b64encode(f"\0{USERNAME}\0{PASSWORD}".encode()).decode()
    mails = []

    def mail(_: Any) -> Reply:
        mails.append(1)
        return Reply(f"250 2.1.0 you said {token}" if len(mails) == 1 else "xyz garbage")

    def rcpt(_: Any) -> Reply:
        return Reply(f"550 5.7.1 you said {token}")

    server = make_fault_server({"MAIL": mail, "RCPT": rcpt}, tls=True, auth_mechanisms=("PLAIN",))
    mailer = FluxMail(**server.fluxmail_kwargs(username=USERNAME, password=PASSWORD))
    conn = SMTPConnection(server.smtp_config(username=USERNAME, password=PASSWORD))
    errors: list[FluxMailException] = []
    for _ in range(2):
        message = mailer.build_message(
            subject="x", recipients=["b@example.org"], body=".", sender="a@example.org"
        )
        with pytest.raises(FluxMailException) as caught:
            conn.send(mailer.compose(message))
        errors.append(caught.value)
    assert [e.code for e in errors] == ["recipients_refused", "protocol_error"]
    for error in errors:
        assert token not in str(error)
        assert token not in _chain_frames_text(error)
    conn.close()
    assert not conn._parser._seen  # a dropped connection remembers no reply
