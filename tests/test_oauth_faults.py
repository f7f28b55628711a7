"""The OAuth2 providers against a token endpoint that misbehaves (a real local HTTP server):
it echoes the request form, trickles its answer, floods an endless token."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from fluxmail.errors import AuthenticationError
from fluxmail.oauth import GoogleOAuth2, MicrosoftOAuth2
from fluxmail.smtp._redact import Secrets, redact
from oauth_servers import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, TokenEndpoint

#: Secrets with the characters URL-encoding changes (Google refresh tokens have "/").
SECRET = "cs-Sup3r/Secret+Key=="
REFRESH = "1//0gRefresh/Tok+en="


@pytest.fixture
def make_endpoint() -> Iterator[Callable[..., TokenEndpoint]]:
    started: list[TokenEndpoint] = []

    def factory(**options: Any) -> TokenEndpoint:
        endpoint = TokenEndpoint(**options).start()
        started.append(endpoint)
        return endpoint

    yield factory
    for endpoint in started:
        endpoint.stop()


def every_form(secret: str) -> list[str]:
    data = secret.encode()
    b64 = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode()
    quoted = quote(secret, safe="")
    return [secret, quoted, quoted.lower(), quote_plus(secret), b64, b64.rstrip("="), urlsafe]


def fetch(provider: GoogleOAuth2, mode: str) -> str:
    return provider.token() if mode == "sync" else asyncio.run(provider.atoken())


def test_redact_takes_out_every_encoding() -> None:
    secrets = Secrets([SECRET, REFRESH, None, ""])
    for form in every_form(SECRET) + every_form(REFRESH):
        assert redact(f"<{form}>", secrets) == "<[redacted]>", form
    assert redact("nothing secret", Secrets([])) == "nothing secret"
    assert SECRET not in repr(secrets)


@pytest.mark.parametrize("echo", ["form", "values", "base64"])
@pytest.mark.parametrize("kind", ["google", "microsoft"])
def test_an_endpoint_echoing_the_form_leaks_no_encoding_of_a_secret(
    make_endpoint: Callable[..., TokenEndpoint],
    caplog: pytest.LogCaptureFixture,
    echo: str,
    kind: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = make_endpoint(echo=echo)
    url = endpoint.url()
    provider: GoogleOAuth2 | MicrosoftOAuth2 = (
        GoogleOAuth2(CLIENT_ID, SECRET, REFRESH, token_url=url)
        if kind == "google"
        else MicrosoftOAuth2("contoso", CLIENT_ID, SECRET, REFRESH, token_url=url)
    )
    with pytest.raises(AuthenticationError, match="HTTP 400") as info:
        provider.token()
    text = f"{info.value} {info.value!r} {caplog.text}"
    assert "[redacted]" in text
    assert CLIENT_ID in text or echo == "base64"  # the echo did reach the error
    for form in every_form(SECRET) + every_form(REFRESH):
        assert form not in text, form


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_trickling_endpoint_fails_within_the_timeout(
    make_endpoint: Callable[..., TokenEndpoint], mode: str
) -> None:
    """One byte every 0.3 s never trips a per-read timeout; the deadline is overall."""
    endpoint = make_endpoint(trickle=0.3, trickle_for=8.0)
    url = endpoint.url()
    provider = GoogleOAuth2(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, token_url=url, timeout=1)
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match=r"no answer within 1 s") as info:
        fetch(provider, mode)
    took = time.monotonic() - started
    assert info.value.transient
    assert 0.9 < took < 2.0, f"took {took:.2f}s"
    assert endpoint.sent >= 1  # it was trickling, not silent
