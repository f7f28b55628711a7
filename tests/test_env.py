"""FLUXMAIL_* variables: ``FluxMail.from_env()`` and the ``fluxmail`` command, one table.

Each case runs both ways against the same real server and must end the same way: sent,
or the same error code. (``FLUXMAIL_TLS=y`` used to work in the command and fail in
``from_env()``: two parsers.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest

from fluxmail import EmailInstance, FluxMail
from fluxmail._env import FALSE_WORDS, TRUE_WORDS, VARIABLES, settings_from_env
from fluxmail.errors import ConfigurationError, FluxMailException, HeaderInjectionError
from helpers import run
from servers import PASSWORD, USERNAME, SMTPTestServer

MakeServer = Callable[..., SMTPTestServer]
MESSAGE = ("--subject", "Hello", "--recipients", "friend@example.com", "--body", "Hi!")
SECRETISH = "hunter2-Pa55"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("FLUXMAIL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def by_from_env(env: dict[str, str]) -> str:
    """'sent', or the code of the error (FluxMail.from_env() + create() + send())."""
    try:
        mailer = FluxMail.from_env(env)
        mailer.create(subject="Hello", recipients=["friend@example.com"], body="Hi!").send()
    except FluxMailException as exc:
        return exc.code
    return "sent"


def by_command(env: dict[str, str], *args: str) -> str:
    """'sent', or the code of the error (the installed command, in a subprocess)."""
    result = run(*args, *MESSAGE, env=env)
    if result.returncode == 0:
        return "sent"
    found = re.search(r"\[([a-z_]+)\]$", result.stderr.strip())
    assert found, result.stderr
    return found.group(1)


# --- booleans: every word, both ways ----------------------------------------------------

WORDS = [
    *[(word, True) for word in sorted(TRUE_WORDS)],
    *[(word, False) for word in sorted(FALSE_WORDS)],
    ("YES", True),
    (" On ", True),
    ("Off", False),
]


def test_the_words_are_the_documented_ones() -> None:
    assert {"1", "true", "t", "yes", "y", "on"} == TRUE_WORDS
    assert {"0", "false", "f", "no", "n", "off"} == FALSE_WORDS


@pytest.mark.parametrize(("word", "tls"), WORDS)
def test_a_boolean_means_the_same_in_from_env_and_the_command(
    starttls_server: SMTPTestServer, clean_env: pytest.MonkeyPatch, word: str, tls: bool
) -> None:
    """The server requires STARTTLS before AUTH: TLS on sends, TLS off is refused."""
    assert starttls_server.ca_pem is not None
    clean_env.setenv("SSL_CERT_FILE", starttls_server.ca_pem)  # the default context's CA
    env = {
        "FLUXMAIL_TYPE": "smtp",
        "FLUXMAIL_HOST": "localhost",
        "FLUXMAIL_PORT": str(starttls_server.port),
        "FLUXMAIL_TLS": word,
        "FLUXMAIL_USERNAME": USERNAME,
        "FLUXMAIL_PASSWORD": PASSWORD,
    }
    expected = "sent" if tls else "tls_required"
    assert FluxMail.from_env(env).config.use_tls is tls
    assert by_from_env(env) == expected
    assert by_command({**env, "SSL_CERT_FILE": starttls_server.ca_pem}) == expected
    assert len(starttls_server.messages) == (2 if tls else 0)


# --- values that do not parse: both refuse, naming the variable, never the value ----------

BAD = [
    ("FLUXMAIL_TLS", "maybe"),
    ("FLUXMAIL_SSL", SECRETISH),
    ("FLUXMAIL_PORT", SECRETISH),
    ("FLUXMAIL_TIMEOUT", "soon"),
    ("FLUXMAIL_MAX_RETRIES", "many"),
    ("FLUXMAIL_RETRY_DELAY", "1s"),
    ("FLUXMAIL_TYPE", "carrier-pigeon"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_an_unparsable_value_is_refused_the_same_way(
    smtp_server: SMTPTestServer, clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    env = {"FLUXMAIL_TYPE": "smtp", "FLUXMAIL_HOST": "127.0.0.1", name: value}
    with pytest.raises(ConfigurationError) as info:
        FluxMail.from_env(env)
    assert info.value.code == "invalid_option"
    assert name in str(info.value)
    assert value not in str(info.value)

    result = run("--port", str(smtp_server.port), *MESSAGE, env=env)
    assert result.returncode == 2
    assert name in result.stderr
    assert result.stderr.strip().endswith("[invalid_option]")
    assert value not in result.stdout + result.stderr
    assert smtp_server.connections == 0


def test_a_line_break_in_a_password_is_refused_the_same_way(
    smtp_server: SMTPTestServer, clean_env: pytest.MonkeyPatch
) -> None:
    env = {
        "FLUXMAIL_TYPE": "smtp",
        "FLUXMAIL_HOST": "127.0.0.1",
        "FLUXMAIL_PORT": str(smtp_server.port),
        "FLUXMAIL_USERNAME": USERNAME,
        "FLUXMAIL_PASSWORD": f"{SECRETISH}\r\nMAIL FROM:<x@y>",
    }
    with pytest.raises(HeaderInjectionError) as info:
        FluxMail.from_env(env)
    assert "FLUXMAIL_PASSWORD" in str(info.value)
    assert SECRETISH not in str(info.value)
    assert by_command(env) == "header_injection"
    assert smtp_server.connections == 0


# --- the rest of the table reaches the command too ----------------------------------------


def test_sender_and_domain_mean_the_same_in_both(
    smtp_server: SMTPTestServer, clean_env: pytest.MonkeyPatch
) -> None:
    env = {
        "FLUXMAIL_TYPE": "smtp",
        "FLUXMAIL_HOST": "127.0.0.1",
        "FLUXMAIL_PORT": str(smtp_server.port),
        "FLUXMAIL_SENDER": "env@example.com",
        "FLUXMAIL_DOMAIN": "mail.example.org",
        "FLUXMAIL_MAX_RETRIES": "1",
    }
    assert by_from_env(env) == "sent"
    assert by_command(env) == "sent"
    first, second = smtp_server.messages
    for received in (first, second):
        assert received.mail_from == "env@example.com"
        assert received.message["Message-ID"].endswith("@mail.example.org>")


def test_a_flag_overrides_its_variable(
    smtp_server: SMTPTestServer, clean_env: pytest.MonkeyPatch
) -> None:
    env = {
        "FLUXMAIL_TYPE": "smtp",
        "FLUXMAIL_HOST": "127.0.0.1",
        "FLUXMAIL_PORT": "9",  # discard: the flag below wins
        "FLUXMAIL_TLS": "yes",
        "FLUXMAIL_SENDER": "env@example.com",
    }
    assert by_command(env, "--port", str(smtp_server.port), "--no-tls") == "sent"
    assert [m.mail_from for m in smtp_server.messages] == ["env@example.com"]


def test_settings_from_env_reads_only_what_is_set() -> None:
    assert settings_from_env({}) == {}
    assert settings_from_env({"FLUXMAIL_PORT": "  ", "FLUXMAIL_TLS": ""}) == {}
    settings = settings_from_env(
        {
            "FLUXMAIL_HOST": " smtp.example.com ",
            "FLUXMAIL_DOMAIN": "example.com",
            "FLUXMAIL_PORT": "587",
            "FLUXMAIL_TLS": "Y",
            "FLUXMAIL_PASSWORD": " spaces kept ",
            "FLUXMAIL_TIMEOUT": "2.5",
        }
    )
    assert settings == {
        "host": EmailInstance("smtp.example.com", "example.com"),
        "port": 587,
        "use_tls": True,
        "password": " spaces kept ",
        "timeout": 2.5,
    }


def test_every_variable_sets_a_fluxmail_argument() -> None:
    import inspect

    parameters = inspect.signature(FluxMail).parameters
    assert all(variable.option in parameters for variable in VARIABLES)
    assert len({variable.name for variable in VARIABLES}) == len(VARIABLES)
