"""The built-in OAuth2 token providers against a real (fake) token endpoint on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from fluxmail.errors import AuthenticationError, ConfigurationError, MissingDependencyError
from fluxmail.oauth import (
    MICROSOFT_APP_SCOPE,
    MICROSOFT_DELEGATED_SCOPE,
    GoogleOAuth2,
    MicrosoftOAuth2,
)
from oauth_servers import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, TokenEndpoint

SECRETS = (CLIENT_SECRET, REFRESH_TOKEN)


@pytest.fixture
def endpoint(make_endpoint: Callable[..., TokenEndpoint]) -> TokenEndpoint:
    return make_endpoint()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def google(endpoint: TokenEndpoint, **kwargs: Any) -> GoogleOAuth2:
    return GoogleOAuth2(
        CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, token_url=endpoint.url(), **kwargs
    )


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# --- Google --------------------------------------------------------------------------------


def test_google_refresh_grant_and_cache_until_shortly_before_expiry(
    endpoint: TokenEndpoint,
) -> None:
    clock = Clock()
    provider = google(endpoint, clock=clock)
    first = provider.token()
    assert first == endpoint.issued[0]
    request = endpoint.requests[0]
    assert request.form == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
    }
    assert request.content_type == "application/x-www-form-urlencoded"
    assert request.accept == "application/json"
    assert provider.token() == first
    clock.now += 3600 - 61  # a minute before expiry: still cached
    assert provider.token() == first
    assert endpoint.count == 1
    clock.now += 2  # within the last minute: replaced
    second = provider.token()
    assert second != first
    assert endpoint.count == 2


def test_short_lived_tokens_are_cached_for_half_their_life(
    make_endpoint: Callable[..., TokenEndpoint],
) -> None:
    endpoint = make_endpoint(expires_in=4)
    clock = Clock()
    provider = google(endpoint, clock=clock)
    provider.token()
    clock.now += 1.9
    provider.token()
    assert endpoint.count == 1
    clock.now += 0.2
    provider.token()
    assert endpoint.count == 2


def test_no_expires_in_means_five_minutes(make_endpoint: Callable[..., TokenEndpoint]) -> None:
    endpoint = make_endpoint(expires_in=None)
    clock = Clock()
    provider = google(endpoint, clock=clock)
    provider.token()
    clock.now += 239
    provider.token()
    assert endpoint.count == 1
    clock.now += 2
    provider.token()
    assert endpoint.count == 2


def test_invalidate_forces_a_new_token(endpoint: TokenEndpoint) -> None:
    provider = google(endpoint)
    first = provider.token()
    provider.invalidate()
    assert provider.token() != first
    assert endpoint.count == 2


def test_async_token_shares_the_cache(endpoint: TokenEndpoint) -> None:
    provider = google(endpoint)

    async def main() -> list[str]:
        return list(await asyncio.gather(*(provider.atoken() for _ in range(20))))

    tokens = asyncio.run(main())
    assert set(tokens) == {endpoint.issued[0]}
    assert endpoint.count == 1
    assert provider.token() == tokens[0]  # the sync side sees the same cache
    provider.invalidate()
    assert asyncio.run(provider.atoken()) != tokens[0]  # another event loop: fine
    assert endpoint.count == 2


def test_concurrent_threads_share_one_request(make_endpoint: Callable[..., TokenEndpoint]) -> None:
    endpoint = make_endpoint(delay=0.2)
    provider = google(endpoint)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(provider.token())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert set(results) == {endpoint.issued[0]}
    assert endpoint.count == 1


def test_repr_and_vars_shown_hide_secrets(endpoint: TokenEndpoint) -> None:
    provider = google(endpoint)
    token = provider.token()
    for text in (repr(provider), str(provider)):
        assert_no_secret(text)
        assert token not in text
    assert repr(provider) == f"GoogleOAuth2(client_id={CLIENT_ID!r})"


# --- Microsoft -----------------------------------------------------------------------------


def test_microsoft_refresh_token_with_rotation(
    make_endpoint: Callable[..., TokenEndpoint],
) -> None:
    endpoint = make_endpoint(rotate=True, secret_required=False, scope=MICROSOFT_DELEGATED_SCOPE)
    provider = MicrosoftOAuth2(
        "contoso.onmicrosoft.com", CLIENT_ID, refresh_token=REFRESH_TOKEN, token_url=endpoint.url()
    )
    assert provider.grant == "refresh_token"
    provider.token()
    assert endpoint.requests[0].form == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "scope": MICROSOFT_DELEGATED_SCOPE,
        "refresh_token": REFRESH_TOKEN,
    }
    assert provider.refresh_token_rotated
    rotated = provider.refresh_token
    assert rotated == endpoint.refresh_token != REFRESH_TOKEN
    provider.invalidate()
    provider.token()  # the endpoint now only accepts the rotated refresh token
    assert endpoint.requests[1].form["refresh_token"] == rotated
    assert endpoint.count == 2
    assert len(endpoint.issued) == 2
    assert "rotated" not in repr(provider)


def test_microsoft_client_credentials(make_endpoint: Callable[..., TokenEndpoint]) -> None:
    endpoint = make_endpoint(grant="client_credentials", scope=MICROSOFT_APP_SCOPE)
    provider = MicrosoftOAuth2(
        "00000000-1111-2222-3333-444444444444",
        CLIENT_ID,
        CLIENT_SECRET,
        token_url=endpoint.url("/tenant/oauth2/v2.0/token"),
    )
    assert provider.grant == "client_credentials"
    assert asyncio.run(provider.atoken()) == endpoint.issued[0]
    assert endpoint.requests[0].path == "/tenant/oauth2/v2.0/token"
    assert endpoint.requests[0].form == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": MICROSOFT_APP_SCOPE,
    }
    assert_no_secret(repr(provider))


def test_microsoft_defaults_and_bad_settings() -> None:
    provider = MicrosoftOAuth2("contoso.com", CLIENT_ID, CLIENT_SECRET, scope="custom/.default")
    assert provider.token_url == "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
    assert provider.scope == "custom/.default"
    with pytest.raises(ConfigurationError, match=r"refresh_token .* or client_secret"):
        MicrosoftOAuth2("contoso.com", CLIENT_ID)
    with pytest.raises(ConfigurationError, match="tenant"):
        MicrosoftOAuth2("contoso.com/evil?x=", CLIENT_ID, CLIENT_SECRET)


@pytest.mark.parametrize(
    "url",
    ["http://oauth2.example.com/token", "ftp://127.0.0.1/token", "token", "https:///token"],
)
def test_token_url_must_be_https_except_on_loopback(url: str) -> None:
    with pytest.raises(ConfigurationError, match="https://"):
        GoogleOAuth2(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, token_url=url)
    GoogleOAuth2(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, token_url="http://localhost:9/token")


@pytest.mark.parametrize("field", ["client_id", "client_secret", "refresh_token"])
def test_empty_credentials_are_refused_without_echoing_them(field: str) -> None:
    args = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}
    args[field] = " "
    with pytest.raises(ConfigurationError, match=field) as info:
        GoogleOAuth2(**args)
    assert_no_secret(str(info.value))


def test_missing_httpx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingDependencyError, match=r"fluxmail\[oauth\]") as info:
        GoogleOAuth2(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)
    assert info.value.code == "missing_dependency"


# --- failures --------------------------------------------------------------------------------


def test_invalid_grant_is_a_clear_authentication_error(endpoint: TokenEndpoint) -> None:
    provider = GoogleOAuth2(CLIENT_ID, CLIENT_SECRET, "revoked-token", token_url=endpoint.url())
    with pytest.raises(AuthenticationError) as info:
        provider.token()
    error = info.value
    assert error.code == "authentication_failed"
    assert not error.transient
    assert "HTTP 400" in str(error)
    assert "invalid_grant" in str(error)
    assert "expired or revoked" in str(error)
    assert "revoked-token" not in str(error)
    assert_no_secret(str(error) + repr(error))


def test_an_endpoint_echoing_a_secret_is_redacted(endpoint: TokenEndpoint) -> None:
    body = f'{{"error": "invalid_client", "error_description": "bad {CLIENT_SECRET}"}}'
    endpoint.failures.append((401, body.encode()))
    with pytest.raises(AuthenticationError, match=r"invalid_client: bad \[redacted\]") as info:
        google(endpoint).token()
    assert_no_secret(str(info.value))


@pytest.mark.parametrize(
    ("status", "body", "expected", "transient"),
    [
        (500, b'{"error": "server_error"}', "HTTP 500 (server_error)", True),
        (503, b"<html>Service Unavailable</html>", "HTTP 503 (the answer is not a JSON", True),
        (429, b'{"error": "slow_down"}', "HTTP 429 (slow_down)", True),
        (200, b'{"token_type": "Bearer"}', "no access_token", False),
        (200, b'{"access_token": "x", "token_type": "MAC"}', "not a Bearer token", False),
        (200, b"[]", "not a JSON object", False),
    ],
)
def test_bad_answers(
    endpoint: TokenEndpoint, status: int, body: bytes, expected: str, transient: bool
) -> None:
    endpoint.failures.append((status, body))
    with pytest.raises(AuthenticationError, match=re.escape(expected)) as info:
        google(endpoint).token()
    assert info.value.transient is transient
    assert endpoint.count == 1


def test_timeout_sync_and_async(make_endpoint: Callable[..., TokenEndpoint]) -> None:
    endpoint = make_endpoint(delay=1.0)
    provider = google(endpoint, timeout=0.2)
    with pytest.raises(AuthenticationError, match=r"no answer within 0\.2 s") as info:
        provider.token()
    assert info.value.transient
    with pytest.raises(AuthenticationError, match=r"no answer within 0\.2 s"):
        asyncio.run(provider.atoken())


def test_unreachable_endpoint(endpoint: TokenEndpoint) -> None:
    url = endpoint.url()
    endpoint.stop()
    provider = GoogleOAuth2(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, token_url=url)
    with pytest.raises(AuthenticationError, match="request failed") as info:
        provider.token()
    assert info.value.transient
    assert info.value.__cause__ is not None
