"""A failed login's traceback, read as an error reporter with local-variable capture
reads it (Sentry's default): every local of every frame, containers walked item by item,
anything else by ``repr``. Neither the password nor its AUTH token may show."""

from __future__ import annotations

import base64
import os
from types import TracebackType
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.errors import AuthenticationError
from servers import SMTPTestServer

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
