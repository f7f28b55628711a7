"""The OAuth2 providers against a token endpoint that misbehaves (a real local HTTP server):
it echoes the request form, trickles its answer, floods an endless token."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import tracemalloc
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest

from fluxmail.errors import AuthenticationError
from fluxmail.oauth import MAX_RESPONSE, MAX_TOKEN, GoogleOAuth2, MicrosoftOAuth2
from fluxmail.smtp._redact import Secrets
from oauth_servers import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, TokenEndpoint

#: Secrets with the characters URL-encoding changes (Google refresh tokens have "/").
SECRET = "cs-Sup3r/Secret+Key=="
REFRESH = "1//0gRefresh/Tok+en="


def every_form(secret: str) -> list[str]:
    data = secret.encode()
    b64 = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode()
    quoted = quote(secret, safe="")
    return [secret, quoted, quoted.lower(), quote_plus(secret), b64, b64.rstrip("="), urlsafe]


def fetch(provider: GoogleOAuth2, mode: str) -> str:
    return provider.token() if mode == "sync" else asyncio.run(provider.atoken())


def test_redact_takes_out_every_encoding() -> None:
    secrets = Secrets.of(SECRET, REFRESH, None, "")
    for form in every_form(SECRET) + every_form(REFRESH):
        assert secrets.redact(f"<{form}>") == "<[redacted]>", form
    assert Secrets.of().redact("nothing secret") == "nothing secret"
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
def test_a_flooding_endpoint_is_cut_off_at_the_cap(
    make_endpoint: Callable[..., TokenEndpoint], mode: str
) -> None:
    """A 64 MiB access token: reading stops at 64 KiB, memory stays bounded."""
    endpoint = make_endpoint(flood=64 * 1024 * 1024)
    provider = GoogleOAuth2(CLIENT_ID, SECRET, REFRESH, token_url=endpoint.url(), timeout=10)
    tracemalloc.start()
    try:
        with pytest.raises(AuthenticationError, match=f"larger than {MAX_RESPONSE} bytes"):
            fetch(provider, mode)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    time.sleep(0.3)  # the endpoint notices the closed connection
    print(f"peak {peak} bytes traced, {endpoint.sent} bytes sent")  # -s / -rP
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"
    assert endpoint.sent < 16 * 1024 * 1024, f"{endpoint.sent} bytes went out"


def test_a_token_too_long_or_with_line_breaks_is_refused(
    make_endpoint: Callable[..., TokenEndpoint],
) -> None:
    endpoint = make_endpoint(token_size=MAX_TOKEN + 1)
    provider = GoogleOAuth2(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, token_url=endpoint.url())
    with pytest.raises(AuthenticationError, match=f"longer than {MAX_TOKEN} characters"):
        provider.token()
    endpoint.failures.append(
        (200, b'{"access_token": "ya29.a\\r\\nQUIT", "token_type": "Bearer"}')
    )
    with pytest.raises(AuthenticationError, match="characters a token cannot have"):
        provider.token()


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
