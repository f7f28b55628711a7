"""OAuth2 from FLUXMAIL_OAUTH2_* variables: FluxMail.from_env() and the fluxmail command,
against the local token endpoint and the XOAUTH2 test server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fluxmail import ConfigurationError, FluxMail
from fluxmail.oauth import GoogleOAuth2, MicrosoftOAuth2, provider_from_env
from helpers import assert_one_line_error, run
from oauth_servers import (
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    OAuthSMTPServer,
    TokenEndpoint,
    ValidTokens,
)
from servers import USERNAME


@pytest.fixture
def tokens() -> ValidTokens:
    return ValidTokens()


@pytest.fixture
def endpoint(tokens: ValidTokens) -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint(tokens).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def server(tls_ca: Any, tokens: ValidTokens) -> Iterator[OAuthSMTPServer]:
    server = OAuthSMTPServer(tokens).start()
    yield server
    server.stop()


def google_env(endpoint: TokenEndpoint) -> dict[str, str]:
    return {
        "FLUXMAIL_OAUTH2_PROVIDER": "google",
        "FLUXMAIL_OAUTH2_CLIENT_ID": CLIENT_ID,
        "FLUXMAIL_OAUTH2_CLIENT_SECRET": CLIENT_SECRET,
        "FLUXMAIL_OAUTH2_REFRESH_TOKEN": REFRESH_TOKEN,
        "FLUXMAIL_OAUTH2_TOKEN_URL": endpoint.url(),
    }


def test_from_env_sends_with_xoauth2(
    server: OAuthSMTPServer, endpoint: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert server.ca_pem is not None
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_pem)
    env = {
        "FLUXMAIL_HOST": "localhost",
        "FLUXMAIL_PORT": str(server.port),
        "FLUXMAIL_TLS": "true",
        "FLUXMAIL_USERNAME": USERNAME,
        **google_env(endpoint),
    }
    mailer = FluxMail.from_env(env)
    mailer.create(subject="Hello", recipients=["to@example.com"], body="Hi").send()
    assert [a.mechanism for a in server.attempts] == ["XOAUTH2"]
    assert server.attempts[0].token == endpoint.issued[0]
    assert [m.auth_user for m in server.messages] == [USERNAME]


def test_the_command_reads_the_oauth2_variables(
    server: OAuthSMTPServer, endpoint: TokenEndpoint
) -> None:
    assert server.ca_pem is not None
    env = {"SSL_CERT_FILE": server.ca_pem, "FLUXMAIL_USERNAME": USERNAME, **google_env(endpoint)}
    args = ["--type", "smtp", "--host", "localhost", "--port", str(server.port), "--tls"]
    args += ["--subject", "Hi", "--recipients", "to@example.com", "--body", "Hello"]
    result = run(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert [a.mechanism for a in server.attempts] == ["XOAUTH2"]
    for secret in (CLIENT_SECRET, REFRESH_TOKEN, *endpoint.issued):
        assert secret not in result.stdout + result.stderr


def test_a_missing_variable_is_named_without_values(endpoint: TokenEndpoint) -> None:
    env = google_env(endpoint)
    del env["FLUXMAIL_OAUTH2_REFRESH_TOKEN"]
    with pytest.raises(ConfigurationError, match="FLUXMAIL_OAUTH2_REFRESH_TOKEN") as caught:
        provider_from_env(env)
    assert CLIENT_SECRET not in str(caught.value)
    result = run(
        "--type", "smtp", "--host", "localhost", "--subject", "s", "--recipients",
        "to@example.com", "--body", "b", env={**env, "FLUXMAIL_USERNAME": USERNAME},
    )  # fmt: skip
    assert_one_line_error(result, 2)
    assert "FLUXMAIL_OAUTH2_REFRESH_TOKEN" in result.stderr
    assert CLIENT_SECRET not in result.stderr


def test_provider_kinds() -> None:
    assert provider_from_env({}) is None
    google = provider_from_env(
        {
            "FLUXMAIL_OAUTH2_PROVIDER": "Google",
            "FLUXMAIL_OAUTH2_CLIENT_ID": "id",
            "FLUXMAIL_OAUTH2_CLIENT_SECRET": "secret",
            "FLUXMAIL_OAUTH2_REFRESH_TOKEN": "refresh",
        }
    )
    assert isinstance(google, GoogleOAuth2)
    microsoft = provider_from_env(
        {
            "FLUXMAIL_OAUTH2_PROVIDER": "microsoft",
            "FLUXMAIL_OAUTH2_TENANT": "contoso.onmicrosoft.com",
            "FLUXMAIL_OAUTH2_CLIENT_ID": "id",
            "FLUXMAIL_OAUTH2_CLIENT_SECRET": "secret",
        }
    )
    assert isinstance(microsoft, MicrosoftOAuth2)
    with pytest.raises(ConfigurationError, match="google' or 'microsoft"):
        provider_from_env({"FLUXMAIL_OAUTH2_PROVIDER": "yahoo"})


def test_django_backend_signs_in_with_oauth2(
    server: OAuthSMTPServer, endpoint: TokenEndpoint
) -> None:
    from django.core.mail import EmailMessage, get_connection

    provider = GoogleOAuth2(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, token_url=endpoint.url())
    connection = get_connection(
        "fluxmail.backends.django.FluxMailBackend",
        host="localhost",
        port=server.port,
        use_tls=True,
        username=USERNAME,
        password="",
        ssl_context=server.client_ssl_context,
        oauth2=provider,
    )
    message = EmailMessage("Hi", "Body", "from@example.com", ["to@example.com"])
    message.connection = connection
    sent = message.send()
    assert sent == 1
    assert [a.mechanism for a in server.attempts] == ["XOAUTH2"]
    assert [m.auth_user for m in server.messages] == [USERNAME]
