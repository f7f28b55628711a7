"""The usual mistakes, against real servers: each raises with advice in API words, and the
``fluxmail`` command prints the same advice in flags (``_hints.py`` holds the one table)."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import pytest

from fluxmail import FluxMail
from fluxmail.cli.localserver import LocalSMTPServer
from fluxmail.errors import (
    AuthenticationError,
    ConfigurationError,
    SenderRefusedError,
    SendTimeoutError,
    TLSRequiredError,
)
from fluxmail.smtp._hints import API_WORDS, HINTS, host_hint
from helpers import assert_one_line_error, run
from servers import PASSWORD, USERNAME, FaultServer, Reply, SMTPTestServer, Stall

MESSAGE = ("--subject", "S", "--recipients", "a@example.com", "--body", "x")
API_ARGUMENTS = ("use_tls", "use_ssl", "allow_insecure_auth", "object_type", "sender=", "=True")


def send(**options: object) -> None:
    FluxMail(object_type="smtp", sender="me@example.com", **options).create(  # type: ignore[arg-type]
        subject="S", recipients=["a@example.com"], body="x"
    ).send()


def cli_line(*args: str, status: int = 1, code: str | None = None) -> str:
    line = assert_one_line_error(run(*args), status, code)
    for word in API_ARGUMENTS:
        assert word not in line, line
    return line


def test_every_hint_has_both_wordings_and_the_cli_one_names_no_api_argument() -> None:
    for key, (api, cli) in HINTS.items():
        assert api != cli, key
        for word in ("use_tls=", "use_ssl=", "allow_insecure_auth", "sender=", "oauth2="):
            assert word not in cli, (key, word)
    assert all(api != flag for api, flag in API_WORDS)


# --- port 465 with STARTTLS: a TLS server sends nothing ------------------------------------


@pytest.fixture
def tls_on_465() -> Iterator[LocalSMTPServer]:
    """A real implicit-TLS SMTP server on port 465, on a loopback address of its own."""
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    try:
        with socket.socket() as probe:
            probe.bind((host, 465))
    except PermissionError:
        pytest.skip("binding port 465 needs root or CAP_NET_BIND_SERVICE")
    with LocalSMTPServer(host=host, port=465, implicit_tls=True) as server:
        yield server


def test_port_465_with_starttls_is_recognised_fast(tls_on_465: LocalSMTPServer) -> None:
    started = time.monotonic()
    with pytest.raises(SendTimeoutError) as info:
        send(host=tls_on_465.host, port=465, use_tls=True, timeout=30)
    elapsed = time.monotonic() - started
    assert elapsed < 6, f"waited {elapsed:.1f} s, not the 30 s timeout"
    assert "use use_ssl=True (not use_tls=True) for port 465" in str(info.value)
    assert info.value.hint.key == "implicit_tls_port"
    # ...and use_ssl=True, as the hint says, does work against the same server.
    send(host=tls_on_465.host, port=465, use_ssl=True, ssl_context=tls_on_465.client_ssl_context())
    assert len(tls_on_465.messages) == 1


def test_port_465_with_starttls_in_the_cli(tls_on_465: LocalSMTPServer) -> None:
    started = time.monotonic()
    line = cli_line(
        "--type", "smtp", "--host", tls_on_465.host, "--port", "465", "--tls",
        "--sender", "me@example.com", *MESSAGE, code="timeout",
    )  # fmt: skip
    assert time.monotonic() - started < 8
    assert "use --ssl (not --tls) with --port 465" in line


def test_other_ports_keep_the_whole_timeout() -> None:
    server = FaultServer({"greeting": Stall()}).start()
    try:
        started = time.monotonic()
        with pytest.raises(SendTimeoutError) as info:
            send(host=server.host, port=server.port, timeout=1.5)
        assert time.monotonic() - started >= 1.4
        assert info.value.hint is None
    finally:
        server.stop()


# --- implicit TLS on a STARTTLS port --------------------------------------------------------


def test_implicit_tls_on_a_starttls_port(starttls_server: SMTPTestServer) -> None:
    with pytest.raises(TLSRequiredError) as info:
        send(  # a context of its own: the default one is built once per process
            host="localhost",
            port=starttls_server.port,
            use_ssl=True,
            timeout=5,
            ssl_context=starttls_server.client_ssl_context,
        )
    text = str(info.value)
    assert "the server answered in plaintext" in text
    assert "use use_tls=True (STARTTLS) instead of use_ssl=True here" in text


def test_implicit_tls_on_a_starttls_port_in_the_cli(starttls_server: SMTPTestServer) -> None:
    line = cli_line(
        "--type", "smtp", "--host", "localhost", "--port", str(starttls_server.port), "--ssl",
        "--sender", "me@example.com", *MESSAGE, code="tls_required",
    )  # fmt: skip
    assert "use --tls (STARTTLS) instead of --ssl here" in line


# --- a port or a URL in the host ------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "advice"),
    [
        ("smtp.example.com:2525", "host='smtp.example.com', port=2525"),
        ("[2001:db8::1]:587", "host='[2001:db8::1]', port=587"),
        ("smtp://smtp.example.com:587", "host='smtp.example.com'"),
        ("smtps://user@smtp.example.com", "host='smtp.example.com'"),
    ],
)
def test_a_host_that_is_not_a_hostname(host: str, advice: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail(object_type="smtp", host=host)
    assert advice in str(info.value)


@pytest.mark.parametrize("host", ["smtp.example.com", "::1", "[::1]", "2001:db8::1", "relay"])
def test_real_hostnames_are_not_mistaken(host: str) -> None:
    assert host_hint(host) is None
    FluxMail(object_type="smtp", host=host)


def test_a_host_with_a_port_in_the_cli(smtp_server: SMTPTestServer) -> None:
    line = cli_line(
        "--type", "smtp", "--host", f"127.0.0.1:{smtp_server.port}", "--sender", "me@example.com",
        *MESSAGE, status=2,
    )  # fmt: skip
    assert f"--host 127.0.0.1 --port {smtp_server.port}" in line
    assert smtp_server.messages == []
    url = cli_line("--type", "smtp", "--host", "smtp://relay.example.com", *MESSAGE, status=2)
    assert "--host takes a hostname, not a URL: --host relay.example.com" in url


def test_host_colon_domain_still_works_in_the_cli(smtp_server: SMTPTestServer) -> None:
    result = run(
        "--type", "smtp", "--host", "127.0.0.1:corp.example", "--port", str(smtp_server.port),
        "--sender", "me@example.com", *MESSAGE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert smtp_server.messages[0].message["Message-ID"].endswith("@corp.example>")


# --- replies that mean a usual mistake (the fault server answers them) -----------------------


def fault(script: dict[str, object]) -> FaultServer:
    return FaultServer(script, auth_mechanisms=("PLAIN", "LOGIN")).start()  # type: ignore[arg-type]


REPLIES = [
    ("MAIL", "530 5.7.0 Authentication Required", "auth_required", "pass username= and password="),
    ("MAIL", "530 5.7.0 Must issue a STARTTLS command first.", "starttls_first", "use_tls=True"),
    (
        "AUTH",
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.",
        "microsoft_basic_auth",
        "oauth2=MicrosoftOAuth2(...)",
    ),
    (
        "MAIL",
        "550 5.7.30 Basic authentication is not supported for Client Submission.",
        "microsoft_basic_auth",
        "oauth2=MicrosoftOAuth2(...)",
    ),
    (
        "AUTH",
        "534-5.7.9 Application-specific password required. Learn more at\r\n"
        "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor",
        "gmail_app_password",
        "app password",
    ),
]


@pytest.mark.parametrize(("stage", "reply", "key", "advice"), REPLIES)
def test_replies_that_mean_a_usual_mistake(stage: str, reply: str, key: str, advice: str) -> None:
    server = fault({stage: Reply(reply)})
    try:
        login = {} if key in ("auth_required", "starttls_first") else {
            "username": USERNAME, "password": PASSWORD, "allow_insecure_auth": True,
        }  # fmt: skip
        with pytest.raises((SenderRefusedError, AuthenticationError)) as info:
            send(host=server.host, port=server.port, timeout=5, **login)
        assert info.value.hint is not None
        assert info.value.hint.key == key
        assert advice in str(info.value)
        assert reply.splitlines()[0][4:].strip() in str(info.value)  # what the server said
    finally:
        server.stop()


@pytest.mark.parametrize(("stage", "reply", "key", "advice"), REPLIES)
def test_the_same_replies_in_the_cli(stage: str, reply: str, key: str, advice: str) -> None:
    server = fault({stage: Reply(reply)})
    try:
        login: tuple[str, ...] = ()
        if key not in ("auth_required", "starttls_first"):
            login = ("--username", USERNAME, "--allow-insecure-auth")
        result = run(
            "--type", "smtp", "--host", server.host, "--port", str(server.port),
            "--sender", "me@example.com", *login, *MESSAGE,
            env={"FLUXMAIL_PASSWORD": PASSWORD} if login else {},
        )  # fmt: skip
        line = assert_one_line_error(result, 1)
        assert PASSWORD not in result.stdout + result.stderr
        assert HINTS[key][1].split(":")[0] in line
        for word in API_ARGUMENTS:
            assert word not in line, line
    finally:
        server.stop()


def test_a_plain_refusal_gets_no_hint() -> None:
    server = fault({"MAIL": Reply("550 5.1.0 Sender rejected")})
    try:
        with pytest.raises(SenderRefusedError) as info:
            send(host=server.host, port=server.port, timeout=5)
        assert info.value.hint is None
        assert str(info.value).endswith("550 5.1.0 Sender rejected")
    finally:
        server.stop()


def test_the_hint_survives_pickling() -> None:
    import pickle

    with pytest.raises(ConfigurationError) as info:
        FluxMail(object_type="smtp", host="relay.example.com:25")
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert copy.hint == info.value.hint
