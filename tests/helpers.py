"""Helpers shared by several test modules (a test module never imports another one).

* parsing composed mail back (``parse``, ``check_wire``, ``filename_param``, ``crlf``);
* the Hypothesis text strategy that exercises encoders (``TEXT``);
* running the installed ``fluxmail`` command (``run``, ``plain_args``,
  ``assert_one_line_error``);
* configuring Django once per process (``configure_django``, called from conftest.py);
* a function a worker process runs (``raise_refusal``).
"""

from __future__ import annotations

import binascii
import email
import email.policy
import functools
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event
from hypothesis import strategies as st

from fluxmail.envelope import Composed
from fluxmail.errors import MessageRefusedError
from server_base import assert_no_defects
from servers import SMTPTestServer

# --- composed mail, parsed back ---------------------------------------------------------


def check_wire(composed: Composed) -> None:
    """CRLF only, no line over 998 octets, 7-bit unless SMTPUTF8."""
    data = composed.data
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert max(map(len, lines)) <= 998
    if not composed.envelope.smtputf8:
        assert data.isascii()
    header = data.split(b"\r\n\r\n", 1)[0]
    assert max(map(len, header.split(b"\r\n"))) <= 78 or composed.envelope.smtputf8


_ENCODED_WORD = r"=\?utf-8\?([bq])\?([^?\s]*)\?="
_ENCODED_RUN = re.compile(_ENCODED_WORD + r"(?:(?:\r\n)?[ \t]+" + _ENCODED_WORD + r")*", re.I)
_FIELD = re.compile(r"(?m)^(?:from|to|cc|reply-to):[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", re.I)


def _decode_run(match: re.Match[str]) -> str:
    """A run of encoded words in a phrase -> the RFC 6532 quoted-string of its text."""
    octets = b""
    for kind, text in re.findall(_ENCODED_WORD, match.group(), re.I):
        if kind.lower() == "b":
            octets += binascii.a2b_base64(text)
        else:
            octets += binascii.a2b_qp(text, header=True)
    text = octets.decode("utf-8")
    # quoted-pairs for '\\', '"' and '=' (so that Python sees no "=?" to decode again)
    return '"' + re.sub(r'([\\"=])', r"\\\1", text) + '"'


def parse(composed: Composed) -> EmailMessage:
    """Parse with Python's email package (policy.default), after checking the wire form.

    Python's parser decodes RFC 2047 words inside display names loosely: it keeps the
    whitespace between adjacent encoded words (RFC 2047 6.2 says to drop it; CPython
    gh-128110) and collapses whitespace runs inside them. So in address headers each run
    of encoded words is first decoded here, strictly per RFC 2047, into the equivalent
    RFC 6532 quoted-string; everything else is Python's own parsing.
    """
    check_wire(composed)
    head = composed.data.partition(b"\r\n\r\n")[0]
    text = _FIELD.sub(lambda m: _ENCODED_RUN.sub(_decode_run, m.group()), head.decode())
    parsed = email.message_from_string(text + "\r\n\r\n", policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    raw = email.message_from_bytes(composed.data, policy=email.policy.default)
    assert isinstance(raw, EmailMessage)
    assert_no_defects(raw)  # every part, with the defects Python's parser reports
    for name in ("From", "To", "Cc", "Reply-To"):  # the decoded headers replace the raw ones
        if name in raw:
            del raw[name]
            raw[name] = parsed[name]
    return raw


def filename_param(part: Any) -> str:
    """The decoded filename parameter. (``get_filename()`` also strips whitespace and one
    pair of surrounding quotes or angle brackets, so it cannot return ``"x"`` as such.)"""
    value = part["Content-Disposition"].params["filename"]
    assert isinstance(value, str)
    return value


def crlf(text: str) -> str:
    """The body normalisation rule: CRLF, CR and LF become CRLF; a non-empty body that
    does not end with a line break gets one."""
    text = re.sub(r"\r\n|\r|\n", "\r\n", text)
    return text if not text or text.endswith("\r\n") else text + "\r\n"


# --- Hypothesis -------------------------------------------------------------------------

# Text that exercises encoders: ASCII specials, whitespace and controls, Latin, RTL,
# CJK, emoji and combining marks, plus anything Unicode offers.
TRICKY = st.sampled_from(
    [*' \t\r\n\x00\x01\x7f"\\()<>,;:@=?_.%*\'-/', "é", "ß", "ש", "ع", "日", "😀", "👍🏽",
     "\u0301", "\u200b", "\u2028", "\x85", "\ufeff", "=?", "?=", "=?utf-8?q?x?="]
)  # fmt: skip
TEXT = st.lists(st.characters() | TRICKY, max_size=80).map("".join) | st.text(max_size=300)


def refused(exc: BaseException) -> None:
    """A property refused its generated input (inside a :func:`must_accept` test)."""
    code = getattr(exc, "code", type(exc).__name__)
    event(f"refused: {code}")
    assert _TALLIES, "refused() belongs in a test decorated with @must_accept(...)"
    _TALLIES[-1].refused += 1


@dataclass
class _Tally:
    runs: int = 0
    refused: int = 0


_TALLIES: list[_Tally] = []


def must_accept(share: float) -> Callable[[Any], Any]:
    """Fail a Hypothesis test unless at least ``share`` of its generated inputs were
    accepted (not passed to :func:`refused`): a property that refuses everything checks
    nothing, and would pass however broken the round trip is."""

    def decorate(test: Any) -> Any:
        inner = test.hypothesis.inner_test

        @functools.wraps(inner)
        def counted(*args: Any, **kwargs: Any) -> None:
            _TALLIES[-1].runs += 1
            inner(*args, **kwargs)

        test.hypothesis.inner_test = counted  # Hypothesis calls this once per example

        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> None:
            _TALLIES.append(_Tally())
            try:
                test(*args, **kwargs)
            finally:
                tally = _TALLIES.pop()
            accepted = tally.runs - tally.refused
            assert tally.runs > 0, "Hypothesis ran no example"
            assert accepted >= share * tally.runs, (
                f"only {accepted} of {tally.runs} generated inputs were accepted "
                f"(at least {share:.0%} must be): the strategy or the validation is off"
            )

        return run

    return decorate


# --- the fluxmail command ---------------------------------------------------------------

FLUXMAIL = Path(sys.executable).parent / ("fluxmail.exe" if os.name == "nt" else "fluxmail")


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the real command with a clean FLUXMAIL_* environment plus ``env``."""
    if not FLUXMAIL.exists():
        pytest.fail(f"{FLUXMAIL} is missing: pip install -e .")
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLUXMAIL_") and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")
    }
    base.update(env or {})
    return subprocess.run(
        [str(FLUXMAIL), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=base,
        timeout=timeout,
        check=False,
    )


def plain_args(server: SMTPTestServer, *extra: str) -> list[str]:
    return ["--type", "smtp", "--host", "127.0.0.1", "--port", str(server.port), *extra]


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], status: int, code: str | None = None
) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    assert "Traceback" not in output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fluxmail: error: "), lines[0]
    if code is not None:
        assert lines[0].endswith(f"[{code}]"), lines[0]
    return lines[0]


# --- Django -----------------------------------------------------------------------------


def configure_django() -> None:
    """Configure Django from tests/django_settings.py, once per process."""
    import django
    from django.conf import settings

    import django_settings

    if not settings.configured:
        values = {name: getattr(django_settings, name) for name in dir(django_settings)}
        settings.configure(**{name: v for name, v in values.items() if name.isupper()})
        django.setup()


# --- Celery ------------------------------------------------------------------------------


def batch(count: int, tag: str = "Hi") -> list[dict[str, Any]]:
    return [
        {
            "subject": f"{tag} {i}",
            "recipients": [f"user{i}@example.com"],
            "body": f"Hello {i}!",
            "sender": "noreply@myapp.com",
        }
        for i in range(count)
    ]


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.05)


# --- in a worker process ----------------------------------------------------------------


def raise_refusal(smtp_code: int, enhanced_code: str) -> None:
    """Raise a refusal as the engine would (run in a process pool by test_errors_travel)."""
    raise MessageRefusedError(
        f"SMTP server 127.0.0.1 refused the message at the end of DATA: {smtp_code}",
        smtp_code=smtp_code,
        enhanced_code=enhanced_code,
        server_message="mailbox full",
    )


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most of ``times`` in any half-open window of ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best
