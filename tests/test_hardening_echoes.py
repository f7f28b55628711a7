"""Rule 12 of docs/security.md: a server echoing a secret after the login gets it redacted.

The scripted server accepts the login, then answers MAIL, RCPT, DATA or the final dot
with every form of the secret (raw, base64 with and without padding, the AUTH PLAIN
token, the XOAUTH2 / OAUTHBEARER responses, URL-encoded). Nothing of it may reach an
exception (with its causes), ``.server_message``, ``refused``, the DEBUG log, a batch
result, the CLI's output or a Django error.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from django_helpers import django_backend, django_message
from fluxmail import FluxMail
from fluxmail.errors import ProtocolError, SMTPResponseError
from fluxmail.smtp._redact import Secrets, oauthbearer_text, xoauth2_text
from hardening import MODES, everything_about, run_batch, send
from helpers import plain_args
from helpers import run as run_cli
from servers import PASSWORD, USERNAME, FaultServer, Reply

MakeFault = Callable[..., FaultServer]
TOKEN = "ya29.a0-Tok/en+with=odd&chars"
STAGES = ["MAIL", "RCPT", "DATA", "DOT"]
MECHANISMS = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"]


def _b64(text: str) -> list[str]:
    padded = base64.b64encode(text.encode()).decode()
    return [padded, padded.rstrip("="), base64.urlsafe_b64encode(text.encode()).decode()]


def forms(mechanism: str, port: int) -> list[str]:
    """Every form of the secret that the login with ``mechanism`` put on the wire."""
    if mechanism in ("PLAIN", "LOGIN"):
        secret, wire = PASSWORD, [f"\0{USERNAME}\0{PASSWORD}"]
    else:
        secret = TOKEN
        wire = [
            xoauth2_text(USERNAME, TOKEN),
            oauthbearer_text(USERNAME, TOKEN, "127.0.0.1", port),
        ]
    out = [secret, quote(secret, safe=""), quote_plus(secret), *_b64(secret)]
    for text in wire:
        out += _b64(text)
    return out


def assert_free(text: str, mechanism: str, port: int) -> None:
    for form in forms(mechanism, port):
        assert form not in text, f"found {form!r} in {text[:300]!r}"


def server_for(make_fault_server: MakeFault, mechanism: str, stage: str) -> FaultServer:
    holder: list[FaultServer] = []

    def echo(_: Any) -> Reply:
        said = " ".join(forms(mechanism, holder[0].port))
        return Reply(f"550 5.7.1 you said {said}")

    script: dict[str, Any] = {stage: echo}
    if mechanism in ("XOAUTH2", "OAUTHBEARER"):
        script["AUTH"] = Reply("235 2.7.0 Accepted")
    server = make_fault_server(script, tls=True, auth_mechanisms=(mechanism,))
    holder.append(server)
    return server


def credentials(mechanism: str) -> dict[str, Any]:
    if mechanism in ("PLAIN", "LOGIN"):
        return {"username": USERNAME, "password": PASSWORD}
    return {"username": USERNAME, "oauth2": lambda: TOKEN}


def message() -> dict[str, Any]:
    return {"subject": "s", "recipients": ["to@example.com"], "body": "b", "sender": "me@x.org"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_echoed_secrets_are_redacted_api_and_bulk(
    make_fault_server: MakeFault,
    mode: str,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for stage in STAGES:
        server = server_for(make_fault_server, mechanism, stage)
        mailer = FluxMail(**server.fluxmail_kwargs(**credentials(mechanism)))
        with pytest.raises(SMTPResponseError) as info:
            send(mailer, mode, **message())
        exc = info.value
        assert exc.smtp_code == 550
        assert "[redacted]" in exc.server_message  # the reply did arrive, redacted
        texts = [everything_about(exc), exc.server_message, repr(exc.refused)]
        result = run_batch(mailer, [message(), message()], mode)
        assert result["failed"] == 2
        texts += [repr(result), *(everything_about(e) for _, e in result["errors"])]
        assert "S: 550 5.7.1 you said [redacted]" in caplog.text
        texts.append(caplog.text)
        assert server.sessions[0].commands[0].startswith("EHLO")
        assert any(c.startswith("AUTH") for c in server.commands)
        for text in texts:
            assert_free(text, mechanism, server.port)
        caplog.clear()


@pytest.mark.parametrize("stage", STAGES)
def test_echoed_password_is_redacted_in_the_cli(make_fault_server: MakeFault, stage: str) -> None:
    server = server_for(make_fault_server, "PLAIN", stage)
    args = plain_args(server, "--tls", "--sender", "me@x.org", "--subject", "s")  # type: ignore[arg-type]
    env = {
        "SSL_CERT_FILE": server.ca_pem or "",
        "FLUXMAIL_USERNAME": USERNAME,
        "FLUXMAIL_PASSWORD": PASSWORD,
    }
    result = run_cli(*args, "--recipients", "to@example.com", "--body", "b", env=env)
    assert result.returncode == 1, result.stderr
    assert "[redacted]" in result.stderr
    assert_free(result.stdout + result.stderr, "PLAIN", server.port)


@pytest.mark.parametrize("stage", STAGES)
def test_echoed_password_is_redacted_in_django_errors(
    make_fault_server: MakeFault, stage: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = server_for(make_fault_server, "LOGIN", stage)
    backend = django_backend(
        host=server.host,
        port=server.port,
        use_tls=True,
        username=USERNAME,
        password=PASSWORD,
        ssl_context=server.client_ssl_context,
    )
    with pytest.raises(SMTPResponseError) as info:
        backend.send_messages([django_message()])
    assert "[redacted]" in info.value.server_message
    for text in (everything_about(info.value), info.value.server_message, caplog.text):
        assert_free(text, "LOGIN", server.port)


def test_secrets_know_every_form() -> None:
    password = Secrets.password(USERNAME, PASSWORD)
    for form in forms("PLAIN", 0):
        assert password.redact(f"<{form}>") == "<[redacted]>"
    bearer = Secrets.bearer(USERNAME, TOKEN, host="127.0.0.1", port=587)
    for form in forms("XOAUTH2", 587):
        assert bearer.redact(f"x {form} y") == "x [redacted] y"
    assert bearer.redact(quote(TOKEN, safe="").lower()) == "[redacted]"  # %2f for %2F
    assert TOKEN not in repr(bearer)
    assert Secrets().redact("s3cret") == "s3cret"
    assert Secrets.of(None, "").redact("anything") == "anything"
    assert TOKEN in bearer
    assert not Secrets()
    assert Secrets.of("abc").redact("xabcabcx") == "x[redacted][redacted]x"


@pytest.mark.parametrize("mode", MODES)
def test_a_garbage_line_quoting_the_password_is_redacted(
    make_fault_server: MakeFault, mode: str
) -> None:
    server = make_fault_server(
        {"MAIL": Reply(f"oops {PASSWORD} {_b64(PASSWORD)[0]}")},
        tls=True,
        auth_mechanisms=("PLAIN",),
    )
    mailer = FluxMail(**server.fluxmail_kwargs(**credentials("PLAIN")))
    with pytest.raises(ProtocolError) as info:
        send(mailer, mode, **message())
    assert "oops [redacted] [redacted]" in str(info.value)
    assert_free(everything_about(info.value), "PLAIN", server.port)
