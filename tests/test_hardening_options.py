"""Rules 13 and 14 of docs/security.md: booleans are booleans, and every public argument
has its type checked where it is given.

13. ``allow_insecure_auth="false"`` (and every other non-bool) is a ConfigurationError
    naming the option, before any connection: ``bool("false")`` is True, and taking it
    so would send the password in plaintext. Environment variables take the documented
    words only.
14. ``password=b"..."``, ``username=123``, ``ssl_context="..."``, ``max_per_second`` of -1,
    NaN, inf, True or "10": a FluxMailException naming the argument, never a bare
    TypeError, ValueError, OverflowError or AttributeError later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from django_helpers import django_backend
from fluxmail import BulkSender, EmailTemplate, FluxMail
from fluxmail.errors import ConfigurationError, FluxMailException, InvalidMessageError
from helpers import assert_one_line_error, plain_args
from helpers import run as run_cli
from servers import PASSWORD, USERNAME, FaultServer, SMTPTestServer

MakeFault = Callable[..., FaultServer]
MakeServer = Callable[..., SMTPTestServer]
NOT_BOOLS = ["false", "False", "no", "0", "off", "true", "", 0, 1, None, 0.0, b"", []]
FLAGS = ["use_tls", "use_ssl", "allow_insecure_auth"]


def plaintext_auth_server(make_fault_server: MakeFault) -> FaultServer:
    """A server offering AUTH without TLS: any login reaching it would be in plaintext."""
    return make_fault_server(auth_mechanisms=("PLAIN", "LOGIN"))


def message() -> dict[str, Any]:
    return {"subject": "s", "recipients": ["to@example.com"], "body": "b", "sender": "me@x.org"}


def assert_names(exc: BaseException, option: str) -> None:
    assert isinstance(exc, ConfigurationError)
    assert exc.code == "invalid_option"
    assert option in str(exc)


# --- rule 13: booleans ---------------------------------------------------------------------


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
@pytest.mark.parametrize("option", FLAGS)
def test_constructor_booleans_are_bool_only(
    make_fault_server: MakeFault, option: str, value: object
) -> None:
    server = plaintext_auth_server(make_fault_server)
    kwargs = server.fluxmail_kwargs(username=USERNAME, password=PASSWORD)
    with pytest.raises(ConfigurationError) as info:
        FluxMail(**kwargs, **{option: value})
    assert_names(info.value, option)
    assert server.sessions == []  # refused where it was given: nothing connected


def test_allow_insecure_auth_false_string_never_sends_the_password(
    make_fault_server: MakeFault,
) -> None:
    server = plaintext_auth_server(make_fault_server)
    with pytest.raises(ConfigurationError, match="allow_insecure_auth"):
        FluxMail(**server.fluxmail_kwargs(username=USERNAME, password=PASSWORD),
                 allow_insecure_auth="false")  # fmt: skip
    # the real False refuses to log in over plaintext, as before
    mailer = FluxMail(**server.fluxmail_kwargs(username=USERNAME, password=PASSWORD))
    with pytest.raises(FluxMailException, match="without TLS"):
        mailer.create(**message()).send()
    assert not any(c.startswith("AUTH") for c in server.commands)


@pytest.mark.parametrize("option", ["html_body", "inline_css", "auto_text"])
@pytest.mark.parametrize("value", ["false", "yes", 0, 1, None])
def test_create_booleans_are_bool_only(option: str, value: object) -> None:
    mailer = FluxMail(host="127.0.0.1", port=2525)
    with pytest.raises(InvalidMessageError, match=option):
        mailer.create(**message(), **{option: value})
    assert mailer.message is None


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dry_run_is_bool_only(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    mailer = FluxMail(host="127.0.0.1", port=2525).create(**message())

    def send() -> object:
        if mode == "sync":
            return mailer.send(dry_run="no")  # type: ignore[arg-type]
        return asyncio.run(mailer.send_async(dry_run="no"))  # type: ignore[arg-type]

    with pytest.raises(ConfigurationError, match="dry_run"):
        send()
    assert capsys.readouterr().out == ""  # neither previewed nor sent
    assert mailer.message is not None


def test_bulk_and_template_booleans_are_bool_only() -> None:
    mailer = FluxMail(host="127.0.0.1", port=2525)
    for option in ("journal_fsync", "resend_unknown"):
        with pytest.raises(ConfigurationError, match=option):
            BulkSender(mailer, **{option: "false"})
    sender = BulkSender(mailer)
    with pytest.raises(ConfigurationError, match="progress"):
        sender.send_batch([message()], progress="no")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="progress"):
        asyncio.run(sender.send_batch_async([message()], progress="no"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="autoescape"):
        EmailTemplate("Hi {{ name }}", autoescape="false")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("word", "meaning"),
    [("maybe", None), ("y", True), ("2", None), ("enabled", None), (" T ", True), ("n", False)],
)
def test_environment_booleans_take_the_documented_words_only(
    make_server: MakeServer, word: str, meaning: bool | None
) -> None:
    """One rule (``fluxmail._env``) for ``FluxMail.from_env()`` and the command: the true
    words ``1 true t yes y on`` and the false words ``0 false f no n off``, in any case;
    any other word is refused with the variable named and the value never repeated (it
    may be a secret pasted into the wrong variable)."""
    env = {"FLUXMAIL_HOST": "127.0.0.1", "FLUXMAIL_TLS": word}
    if meaning is None:
        with pytest.raises(ConfigurationError, match="FLUXMAIL_TLS") as info:
            FluxMail.from_env(env)
        assert word not in str(info.value)
    else:
        assert FluxMail.from_env(env).config.use_tls is meaning
    for yes in ("true", "TRUE", " 1 ", "yes", "On", "y", "t"):
        assert FluxMail.from_env({**env, "FLUXMAIL_TLS": yes}).config.use_tls is True
    for no in ("false", "0", "no", "OFF", "", "n", "F"):
        assert FluxMail.from_env({**env, "FLUXMAIL_TLS": no}).config.use_tls is False

    server = make_server()
    sender = ("--sender", "me@b.test", "--subject", "s")
    args = plain_args(server, *sender, "--recipients", "a@b.test", "--body", "b")
    result = run_cli(*args, env={"FLUXMAIL_SSL": word})
    if meaning is None:
        line = assert_one_line_error(result, 2, "invalid_option")
        assert "FLUXMAIL_SSL" in line
        assert word not in line
    elif meaning:  # implicit TLS to a plaintext server: nothing is sent
        assert_one_line_error(result, 1, "tls_required")
        assert server.messages == []
    else:
        assert result.returncode == 0, result.stderr
        assert len(server.messages) == 1


@pytest.mark.parametrize(
    ("setting", "argument"),
    [
        ("EMAIL_FLUXMAIL_ALLOW_INSECURE_AUTH", "allow_insecure_auth"),
        ("EMAIL_USE_TLS", "use_tls"),
        ("EMAIL_USE_SSL", "use_ssl"),
    ],
)
@pytest.mark.parametrize("value", ["False", "false", "0", 1, 0])
def test_django_booleans_are_bool_only(
    make_fault_server: MakeFault, setting: str, argument: str, value: object
) -> None:
    from django.test import override_settings

    server = plaintext_auth_server(make_fault_server)
    base = {"host": server.host, "port": server.port, "username": USERNAME, "password": PASSWORD}
    with override_settings(**{setting: value}), pytest.raises(ConfigurationError) as info:
        django_backend(**base)
    assert_names(info.value, setting)
    with pytest.raises(ConfigurationError) as info:
        django_backend(**base, **{argument: value})
    assert_names(info.value, argument)
    with pytest.raises(ConfigurationError, match="fail_silently"):
        django_backend(**base, fail_silently="False")
    assert server.sessions == []


def test_cli_never_logs_in_over_plaintext_with_a_word(make_fault_server: MakeFault) -> None:
    server = plaintext_auth_server(make_fault_server)
    args = plain_args(server, "--sender", "me@x.org", "--subject", "s")  # type: ignore[arg-type]
    env = {"FLUXMAIL_USERNAME": USERNAME, "FLUXMAIL_PASSWORD": PASSWORD}
    result = run_cli(*args, "--recipients", "to@example.com", "--body", "b", env=env)
    assert_one_line_error(result, 1, "tls_required")
    assert not any(c.startswith("AUTH") for c in server.commands)


# --- rule 14: types at the edge ------------------------------------------------------------

WRONG_TYPES = [
    ("password", b"hunter2-bytes"),
    ("password", 12345678),
    ("username", 123),
    ("local_hostname", 5),
    ("local_hostname", b"mail.example.com"),
    ("ssl_context", "CERT_NONE"),
    ("ssl_context", True),
]


@pytest.mark.parametrize(("option", "value"), WRONG_TYPES, ids=repr)
def test_constructor_types_are_checked_where_given(
    make_fault_server: MakeFault, option: str, value: object
) -> None:
    server = make_fault_server()
    kwargs: dict[str, Any] = server.fluxmail_kwargs(username=USERNAME)
    kwargs[option] = value
    with pytest.raises(ConfigurationError) as info:
        FluxMail(**kwargs)
    assert_names(info.value, option)
    assert str(value) not in str(info.value)  # the type is named, never the value
    assert server.sessions == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [("EMAIL_HOST_PASSWORD", b"hunter2-bytes"), ("EMAIL_HOST_USER", 5), ("EMAIL_PORT", "25")],
)
def test_django_setting_types_are_checked(setting: str, value: object) -> None:
    from django.test import override_settings

    extra = {"EMAIL_HOST_USER": USERNAME} if setting == "EMAIL_HOST_PASSWORD" else {}
    with override_settings(**extra, **{setting: value}), pytest.raises(FluxMailException) as info:
        django_backend(host="127.0.0.1")
    assert isinstance(info.value, ConfigurationError)
    assert setting.split("_")[-1].lower() in str(info.value).lower()
    assert "hunter2" not in str(info.value)


BAD_RATES = [-1, -0.5, float("nan"), float("inf"), True, False, "10", None, [10]]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("value", BAD_RATES, ids=repr)
def test_max_per_second_is_checked_before_anything_is_sent(
    make_fault_server: MakeFault, mode: str, value: object
) -> None:
    server = make_fault_server()
    sender = BulkSender(FluxMail(**server.fluxmail_kwargs(sender="me@x.org")))

    def run() -> object:
        if mode == "sync":
            return sender.send_batch([message()], max_per_second=value)  # type: ignore[arg-type]
        return asyncio.run(
            sender.send_batch_async([message()], max_per_second=value)  # type: ignore[arg-type]
        )

    with pytest.raises(ConfigurationError) as info:
        run()
    assert_names(info.value, "max_per_second")
    assert server.sessions == []


CREATE_WRONG_TYPES = [
    ("subject", 5),
    ("recipients", 5),
    ("body", b"x"),
    ("sender", 5),
    ("cc", 5),
    ("bcc", {"a@b.test": 1}),
    ("reply_to", 5),
    ("attachments", 5),
    ("plain_body", 5),
    ("in_reply_to", 5),
    ("references", 5),
    ("priority", 5),
    ("unsubscribe_url", 5),
    ("inline_images", 5),
    ("headers", [("X-A", "b")]),
    ("headers", {"X-A": 5}),
]


@pytest.mark.parametrize(("option", "value"), CREATE_WRONG_TYPES, ids=repr)
def test_create_types_are_checked_where_given(option: str, value: object) -> None:
    mailer = FluxMail(host="127.0.0.1", port=2525)
    options = {**message(), option: value}
    if option == "plain_body":
        options["html_body"] = True
    with pytest.raises(FluxMailException) as info:
        mailer.create(**options)
    assert option in str(info.value)


def test_template_types_are_checked() -> None:
    with pytest.raises(FluxMailException, match="name"):
        EmailTemplate("Hi", name=5)  # type: ignore[arg-type]
    with pytest.raises(FluxMailException, match="string"):
        EmailTemplate(b"Hi")  # type: ignore[arg-type]
