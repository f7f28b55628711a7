"""OAuth2 SMTP AUTH (XOAUTH2, OAUTHBEARER) end to end: FluxMail, send_async, BulkSender and
test_connection against an aiosmtpd server that checks tokens issued by a real (fake)
token endpoint on 127.0.0.1. Plus the pure mechanisms, driven by canned replies."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fluxmail import BulkSender, FluxMail
from fluxmail.config import SmtpConfig
from fluxmail.errors import (
    AuthenticationError,
    ConfigurationError,
    TLSRequiredError,
    UnsupportedOperationError,
)
from fluxmail.oauth import GoogleOAuth2, MicrosoftOAuth2
from fluxmail.smtp._actions import Conversation, Exchange
from fluxmail.smtp._auth import (
    Credentials,
    auth_oauthbearer,
    auth_xoauth2,
    oauthbearer_response,
    xoauth2_response,
)
from fluxmail.smtp._replies import Reply
from oauth_servers import (
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    OAuthSMTPServer,
    TokenEndpoint,
    ValidTokens,
)
from servers import USERNAME, FaultServer
from servers import Reply as ServerReply

SECRETS = (CLIENT_SECRET, REFRESH_TOKEN)


@pytest.fixture
def tokens() -> ValidTokens:
    return ValidTokens()


@pytest.fixture
def endpoint(tokens: ValidTokens) -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint(tokens).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def make_oauth_server(
    tls_ca: Any, tokens: ValidTokens
) -> Iterator[Callable[..., OAuthSMTPServer]]:
    started: list[OAuthSMTPServer] = []

    def factory(**options: Any) -> OAuthSMTPServer:
        server = OAuthSMTPServer(tokens, **options).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def server(make_oauth_server: Callable[..., OAuthSMTPServer]) -> OAuthSMTPServer:
    return make_oauth_server()


@pytest.fixture
def google(endpoint: TokenEndpoint) -> GoogleOAuth2:
    return GoogleOAuth2(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, token_url=endpoint.url())


def mail(mailer: FluxMail, subject: str = "Hello") -> FluxMail:
    return mailer.create(subject=subject, recipients=["to@example.com"], body="Hi")


def specs(n: int) -> list[dict[str, Any]]:
    return [{"subject": f"m{i}", "recipients": ["to@example.com"], "body": "x"} for i in range(n)]


# --- sending -----------------------------------------------------------------------------------


def test_send_with_google_provider_uses_xoauth2(
    server: OAuthSMTPServer, endpoint: TokenEndpoint, google: GoogleOAuth2
) -> None:
    mailer = FluxMail(**server.kwargs(google))
    assert mail(mailer).send() == "Email sent successfully via SMTP."
    assert mail(mailer, "again").send()
    assert [m.auth_user for m in server.messages] == [USERNAME, USERNAME]
    assert [a.mechanism for a in server.attempts] == ["XOAUTH2", "XOAUTH2"]
    assert all(a.ok for a in server.attempts)
    assert server.attempts[0].token == endpoint.issued[0]
    assert endpoint.count == 1  # cached between connections
    assert not [e for e in server.events if e.startswith(("AUTH PLAIN", "AUTH LOGIN"))]


def test_send_async_with_async_and_sync_callables(server: OAuthSMTPServer) -> None:
    server.tokens.add("async-token")
    server.tokens.add("sync-token")

    async def async_provider() -> str:
        await asyncio.sleep(0)
        return "async-token"

    async def main() -> None:
        mailer = FluxMail(**server.kwargs(async_provider))
        await mail(mailer).send_async()
        sync_mailer = FluxMail(**server.kwargs(lambda: "sync-token"))
        await mail(sync_mailer).send_async()

    asyncio.run(main())
    assert [a.token for a in server.attempts] == ["async-token", "sync-token"]
    assert len(server.messages) == 2


def test_send_async_with_google_provider(
    server: OAuthSMTPServer, endpoint: TokenEndpoint, google: GoogleOAuth2
) -> None:
    async def main() -> None:
        mailer = FluxMail(**server.kwargs(google))
        await asyncio.gather(*(mail(mailer, f"m{i}").send_async() for i in range(5)))

    asyncio.run(main())
    assert len(server.messages) == 5
    assert endpoint.count == 1  # five connections, one token request


def test_oauthbearer_when_it_is_the_only_one_offered(
    make_oauth_server: Callable[..., OAuthSMTPServer], google: GoogleOAuth2
) -> None:
    server = make_oauth_server(mechanisms=("OAUTHBEARER",), user="o,dd=user@example.com")
    mailer = FluxMail(**server.kwargs(google, username="o,dd=user@example.com"))
    info = mailer.test_connection()
    assert info["authenticated"]
    assert info["auth_mechanism"] == "OAUTHBEARER"
    attempt = server.attempts[0]
    assert attempt.ok
    assert attempt.user == "o,dd=user@example.com"  # escaped as =2C / =3D on the wire
    assert attempt.fields["host"] == "127.0.0.1"
    assert attempt.fields["port"] == str(server.port)


def test_test_connection_reports_xoauth2(server: OAuthSMTPServer, google: GoogleOAuth2) -> None:
    info = FluxMail(**server.kwargs(google)).test_connection()
    assert info["ok"]
    assert info["authenticated"]
    assert info["auth_mechanism"] == "XOAUTH2"
    assert info["tls"]


def test_bulk_sender_sync_and_async(
    server: OAuthSMTPServer, endpoint: TokenEndpoint, google: GoogleOAuth2
) -> None:
    mailer = FluxMail(**server.kwargs(google))
    result = BulkSender(mailer).send_batch(specs(3), progress=False)
    assert result["sent"] == 3
    assert server.connections == 1
    pooled = BulkSender(mailer, connections=2).send_batch_async(specs(4), progress=False)
    assert asyncio.run(pooled)["sent"] == 4
    assert len(server.messages) == 7
    assert endpoint.count == 1
    assert server.connections in (2, 3)  # the pool opens a connection per busy worker
    assert len(server.attempts) == server.connections


# --- refresh and retry -----------------------------------------------------------------------


def test_expired_token_is_refreshed_once_and_the_send_succeeds(
    server: OAuthSMTPServer, endpoint: TokenEndpoint, google: GoogleOAuth2
) -> None:
    mailer = FluxMail(**server.kwargs(google))
    mail(mailer).send()
    server.tokens.expire(endpoint.issued[0])  # the server now refuses the cached token
    mail(mailer, "after expiry").send()
    assert endpoint.count == 2
    assert [(a.token, a.ok) for a in server.attempts] == [
        (endpoint.issued[0], True),
        (endpoint.issued[0], False),
        (endpoint.issued[1], True),
    ]
    assert server.attempts[1].ack == b""  # XOAUTH2: an empty line after the error challenge
    assert server.connections == 3  # the retry uses a new connection
    assert [m.message["Subject"] for m in server.messages] == ["Hello", "after expiry"]


def test_expired_token_async_and_bulk(
    server: OAuthSMTPServer, endpoint: TokenEndpoint, google: GoogleOAuth2
) -> None:
    mailer = FluxMail(**server.kwargs(google))
    google.token()
    server.tokens.expire()
    asyncio.run(mail(mailer).send_async())
    server.tokens.expire()
    assert BulkSender(mailer).send_batch(specs(2), progress=False)["sent"] == 2
    assert endpoint.count == 3
    assert [a.ok for a in server.attempts] == [False, True, False, True]


def test_oauthbearer_refresh_acknowledges_with_x01(
    make_oauth_server: Callable[..., OAuthSMTPServer],
    endpoint: TokenEndpoint,
    google: GoogleOAuth2,
) -> None:
    server = make_oauth_server(mechanisms=("OAUTHBEARER",))
    google.token()
    server.tokens.expire()
    mail(FluxMail(**server.kwargs(google))).send()
    assert [a.ok for a in server.attempts] == [False, True]
    assert server.attempts[0].ack == b"\x01"
    assert endpoint.count == 2


def test_a_token_that_never_works_fails_after_one_retry(server: OAuthSMTPServer) -> None:
    calls: list[int] = []

    def provider() -> str:
        calls.append(1)
        return "bad-token"

    with pytest.raises(AuthenticationError) as info:
        mail(FluxMail(**server.kwargs(provider))).send()
    error = info.value
    assert error.code == "authentication_failed"
    assert error.smtp_code == 535
    assert "OAuth2 error status: 401" in str(error)
    assert "bad-token" not in str(error)
    assert len(calls) == 2
    assert len(server.attempts) == server.connections == 2
    assert not server.messages


def test_bad_token_from_the_endpoint_async_and_bulk(
    server: OAuthSMTPServer, endpoint: TokenEndpoint, google: GoogleOAuth2
) -> None:
    server.tokens = ValidTokens()  # knows none of the endpoint's tokens
    mailer = FluxMail(**server.kwargs(google))
    with pytest.raises(AuthenticationError, match="refused authentication"):
        asyncio.run(mail(mailer).send_async())
    assert endpoint.count == 2
    with pytest.raises(AuthenticationError) as info:
        BulkSender(mailer).send_batch(specs(3), progress=False)
    assert info.value.batch_result["sent"] == 0
    assert endpoint.count == 3  # the cached second token, then one more
    assert len(server.attempts) == 4


def test_token_endpoint_failure_is_an_authentication_error(
    server: OAuthSMTPServer, endpoint: TokenEndpoint, google: GoogleOAuth2
) -> None:
    endpoint.failures.append((400, b'{"error": "invalid_grant"}'))
    with pytest.raises(AuthenticationError, match="invalid_grant") as info:
        FluxMail(**server.kwargs(google)).test_connection()
    assert not info.value.transient
    assert server.connections == 0  # the token comes before the connection


# --- providers and settings ------------------------------------------------------------------


def test_async_only_provider_with_sync_send_is_a_configuration_error(
    server: OAuthSMTPServer,
) -> None:
    async def provider() -> str:
        return "token"

    class AsyncOnly:
        async def atoken(self) -> str:
            return "token"

    for source in (provider, AsyncOnly()):
        mailer = FluxMail(**server.kwargs(source))
        with pytest.raises(ConfigurationError, match="async-only") as info:
            mail(mailer).send()
        assert "send_async()" in str(info.value)
        with pytest.raises(ConfigurationError, match="async-only"):
            mailer.test_connection()
        with pytest.raises(ConfigurationError, match="async-only"):
            BulkSender(mailer).send_batch(specs(1), progress=False)
    assert server.connections == 0


def test_provider_object_without_invalidate_and_a_failing_provider(
    server: OAuthSMTPServer,
) -> None:
    server.tokens.add("object-token")

    class Provider:
        def token(self) -> str:
            return "object-token"

    mail(FluxMail(**server.kwargs(Provider()))).send()

    def broken() -> str:
        raise RuntimeError("vault unreachable")

    with pytest.raises(AuthenticationError, match="token provider failed") as info:
        mail(FluxMail(**server.kwargs(broken))).send()
    assert isinstance(info.value.__cause__, RuntimeError)

    for bad in (lambda: None, lambda: "", lambda: "two words"):
        with pytest.raises(ConfigurationError, match="token provider returned"):
            mail(FluxMail(**server.kwargs(bad))).send()


def test_no_fallback_to_password_mechanisms(
    make_oauth_server: Callable[..., OAuthSMTPServer], google: GoogleOAuth2
) -> None:
    server = make_oauth_server(mechanisms=())  # PLAIN and LOGIN only
    with pytest.raises(AuthenticationError, match="XOAUTH2, OAUTHBEARER with an OAuth2 token"):
        mail(FluxMail(**server.kwargs(google))).send()
    assert not server.commands("AUTH")
    assert server.connections == 1  # no retry: nothing was refused


def test_never_over_plaintext_unless_allowed(
    make_oauth_server: Callable[..., OAuthSMTPServer], google: GoogleOAuth2
) -> None:
    server = make_oauth_server(tls="none")
    with pytest.raises(TLSRequiredError):
        mail(FluxMail(**server.kwargs(google))).send()
    assert not server.attempts
    mail(FluxMail(**server.kwargs(google, allow_insecure_auth=True))).send()
    assert [a.ok for a in server.attempts] == [True]


def test_settings_are_checked_when_the_mailer_is_made(google: GoogleOAuth2) -> None:
    base = {"host": "smtp.example.com", "port": 587, "use_tls": True}
    with pytest.raises(ConfigurationError, match="either password or oauth2"):
        FluxMail(**base, username=USERNAME, password="pw", oauth2=google)
    with pytest.raises(ConfigurationError, match="needs username"):
        FluxMail(**base, oauth2=google)
    with pytest.raises(ConfigurationError, match="oauth2 must be"):
        FluxMail(**base, username=USERNAME, oauth2="ya29.a-token-string")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedOperationError, match="oauth2"):
        FluxMail("outlook", oauth2=google)
    config = SmtpConfig(host="smtp.example.com", username=USERNAME, oauth2=google)
    assert config.wants_auth
    assert "oauth2" not in repr(config)
    assert "GoogleOAuth2" not in repr(FluxMail(**base, username=USERNAME, oauth2=google))


def test_microsoft_client_credentials_with_a_long_token(
    make_fault_server: Callable[..., FaultServer], tokens: ValidTokens
) -> None:
    """Microsoft's tokens are JWTs of 2 KB and more: the AUTH line is long (RFC 4954
    allows 12288 octets; aiosmtpd does not, so the scripted server checks this one)."""
    endpoint = TokenEndpoint(tokens, grant="client_credentials", token_size=2500).start()
    try:
        provider = MicrosoftOAuth2(
            "contoso.com", CLIENT_ID, CLIENT_SECRET, token_url=endpoint.url()
        )

        def check(session: Any) -> ServerReply:
            _, mechanism, blob = session.commands[-1].split(" ")
            expected = f"user={USERNAME}\x01auth=Bearer {endpoint.issued[-1]}\x01\x01"
            ok = mechanism == "XOAUTH2" and base64.b64decode(blob).decode() == expected
            return ServerReply("235 2.7.0 Accepted" if ok else "535 5.7.8 Not accepted")

        fault = make_fault_server({"AUTH": check}, tls=True, auth_mechanisms=("XOAUTH2",))
        mailer = FluxMail(
            host=fault.host,
            port=fault.port,
            use_tls=True,
            ssl_context=fault.client_ssl_context,
            username=USERNAME,
            oauth2=provider,
        )
        assert mail(mailer).send()
        assert len(fault.messages) == 1
        assert len(endpoint.issued[0]) == 2500
        assert endpoint.requests[0].form["grant_type"] == "client_credentials"
    finally:
        endpoint.stop()


# --- secrets ------------------------------------------------------------------------


def test_no_secret_in_logs_or_errors(
    caplog: pytest.LogCaptureFixture,
    server: OAuthSMTPServer,
    endpoint: TokenEndpoint,
    google: GoogleOAuth2,
) -> None:
    caplog.set_level(logging.DEBUG)
    mailer = FluxMail(**server.kwargs(google))
    mail(mailer).send()
    server.tokens.expire()
    mail(mailer).send()  # refused token, refresh, retry
    server.tokens = ValidTokens()
    with pytest.raises(AuthenticationError) as info:
        asyncio.run(mail(mailer).send_async())
    seen = caplog.text + str(info.value) + repr(info.value) + repr(mailer) + repr(google)
    for secret in (*SECRETS, *endpoint.issued):
        assert secret not in seen
        assert base64.b64encode(secret.encode()).decode() not in seen
    for token in endpoint.issued:
        assert xoauth2_response(USERNAME, token).decode() not in seen
    assert "C: AUTH XOAUTH2 [redacted]" in caplog.text
    assert "refused the OAuth2 token" in caplog.text


def test_a_server_echoing_the_token_is_scrubbed(
    make_fault_server: Callable[..., FaultServer], caplog: pytest.LogCaptureFixture
) -> None:
    token = "ya29.secret-token-echoed"

    def echo(session: Any) -> ServerReply:
        return ServerReply(f"535 5.7.8 refused {session.commands[-1]} for {token}")

    fault = make_fault_server({"AUTH": echo}, tls=True, auth_mechanisms=("OAUTHBEARER",))
    caplog.set_level(logging.DEBUG, logger="fluxmail")
    mailer = FluxMail(
        host=fault.host,
        port=fault.port,
        use_tls=True,
        ssl_context=fault.client_ssl_context,
        username=USERNAME,
        oauth2=lambda: token,
    )
    with pytest.raises(AuthenticationError) as info:
        mail(mailer).send()
    response = oauthbearer_response(USERNAME, token, fault.host, fault.port).decode()
    for text in (str(info.value), caplog.text):
        assert token not in text
        assert response not in text
        assert "[redacted]" in text
    assert len(fault.sessions) == 2  # refused, so one retry


# --- the pure mechanisms ------------------------------------------------------------


def run(conversation: Conversation[Reply], *answers: Reply) -> tuple[Reply, list[Exchange]]:
    written: list[Exchange] = []
    queue = list(answers)
    try:
        action = next(conversation)
        while True:
            assert isinstance(action, Exchange)
            written.append(action)
            action = conversation.send([queue.pop(0)])
    except StopIteration as stop:
        assert not queue
        return stop.value, written


CREDS = Credentials("me@example.com", "tok-123", oauth=True, host="mx.example.com", port=587)


def test_initial_responses_are_exact() -> None:
    assert base64.b64decode(xoauth2_response("me@example.com", "tok")) == (
        b"user=me@example.com\x01auth=Bearer tok\x01\x01"
    )
    assert base64.b64decode(oauthbearer_response("a,b=c@x", "tok", "mx", 587)) == (
        b"n,a=a=2Cb=3Dc@x,\x01host=mx\x01port=587\x01auth=Bearer tok\x01\x01"
    )


def test_xoauth2_success_failure_and_late_response() -> None:
    reply, written = run(auth_xoauth2(ask, CREDS), Reply(235, ("2.7.0 Accepted",)))
    assert reply.code == 235
    assert written[0].log == "AUTH XOAUTH2 [redacted]"
    assert (
        written[0].data
        == b"AUTH XOAUTH2 " + xoauth2_response("me@example.com", "tok-123") + b"\r\n"
    )

    challenge = base64.b64encode(b'{"status":"400","schemes":"Bearer"}').decode()
    reply, written = run(
        auth_xoauth2(ask, CREDS), Reply(334, (challenge,)), Reply(535, ("5.7.8 No",))
    )
    assert [w.data for w in written[1:]] == [b"\r\n"]
    assert reply.lines == ("5.7.8 No", "(OAuth2 error status: 400)")
    assert reply.enhanced_code == "5.7.8"

    # a server that wants the response on its own line (an empty 334 first)
    reply, written = run(auth_xoauth2(ask, CREDS), Reply(334, ("",)), Reply(235, ("ok",)))
    assert reply.code == 235
    assert written[1].log == "[redacted]"
    assert written[1].data == xoauth2_response("me@example.com", "tok-123") + b"\r\n"


def test_oauthbearer_error_challenge_gets_x01_and_odd_json_is_not_echoed() -> None:
    odd = base64.b64encode(b'{"status":"<script>alert(1)</script>"}').decode()
    reply, written = run(
        auth_oauthbearer(ask, CREDS), Reply(334, (odd,)), Reply(535, ("5.7.8 No",))
    )
    assert written[1].data == b"AQ==\r\n"
    assert reply.lines == ("5.7.8 No",)
    reply, _ = run(auth_oauthbearer(ask, CREDS), Reply(334, ("not base64!",)), Reply(535, ("x",)))
    assert reply.code == 535


def test_credentials_know_every_form_of_the_token() -> None:
    assert "tok-123" in CREDS.secrets
    assert xoauth2_response("me@example.com", "tok-123").decode() in CREDS.secrets
    assert "tok-123" not in repr(CREDS)
    assert CREDS.mechanisms == ("XOAUTH2", "OAUTHBEARER")


def ask(exchange: Exchange) -> Conversation[list[Reply]]:
    replies = yield exchange
    return replies
