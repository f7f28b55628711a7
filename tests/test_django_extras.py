"""The Django backend with fluxmail's extras: DKIM settings (and the testing capture).

Django is configured once per process (conftest.py, from ``tests/django_settings.py``);
each test points the settings at its own server with ``override_settings``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.core.mail import EmailMessage, get_connection, send_mail
from django.test.utils import override_settings

from fluxmail import DKIM, ConfigurationError, RecipientsRefusedError
from fluxmail.testing import capture
from servers import SMTPTestServer

BACKEND = "fluxmail.backends.django.FluxMailBackend"


class Ed25519Key:
    def __init__(self) -> None:
        private = ed25519.Ed25519PrivateKey.generate()
        self.pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)

    def verifies(self, data: bytes, name: bytes = b"s1._domainkey.example.com.") -> bool:
        def lookup(queried: bytes, timeout: float = 5) -> bytes:
            return self.record if queried == name else b""

        return bool(dkimpy.verify(data, dnsfunc=lookup))


@pytest.fixture(scope="module")
def key() -> Ed25519Key:
    return Ed25519Key()


def server_settings(server: SMTPTestServer, **extra: Any) -> override_settings:
    return override_settings(
        EMAIL_BACKEND=BACKEND, EMAIL_HOST=server.host, EMAIL_PORT=server.port, **extra
    )


def test_dkim_settings_with_a_key_file(
    smtp_server: SMTPTestServer, key: Ed25519Key, tmp_path: Path
) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(key.pem)
    dkim = {
        "EMAIL_FLUXMAIL_DKIM_DOMAIN": "example.com",
        "EMAIL_FLUXMAIL_DKIM_SELECTOR": "s1",
        "EMAIL_FLUXMAIL_DKIM_KEY_FILE": str(key_file),
    }
    with server_settings(smtp_server, **dkim):
        sent = send_mail("Hello", "Body", "from@example.com", ["to@example.org"])
        message = EmailMessage(
            "Two", "Body 2", "from@example.com", ["a@example.org"], bcc=["b@example.org"]
        )
        message.attach("notes.txt", "some notes", "text/plain")
        sent += get_connection().send_messages([message])
    assert sent == 2
    for received in smtp_server.messages:
        assert received.data.startswith(b"DKIM-Signature: ")
        assert key.verifies(received.data)
        assert not key.verifies(received.data.replace(b"Body", b"Bodx"))


def test_dkim_private_key_setting_and_argument(
    smtp_server: SMTPTestServer, key: Ed25519Key
) -> None:
    with server_settings(
        smtp_server,
        EMAIL_FLUXMAIL_DKIM_DOMAIN="example.com",
        EMAIL_FLUXMAIL_DKIM_SELECTOR="s1",
        EMAIL_FLUXMAIL_DKIM_PRIVATE_KEY=key.pem.decode(),
    ):
        send_mail("Hello", "Body", "from@example.com", ["to@example.org"])
    with server_settings(smtp_server):
        connection = get_connection(dkim=DKIM("example.org", "s2", key.pem))
        send_mail("Hi", "Body", "from@example.org", ["to@example.org"], connection=connection)
    assert key.verifies(smtp_server.messages[0].data)
    assert key.verifies(smtp_server.messages[1].data, b"s2._domainkey.example.org.")


def test_dkim_settings_are_checked_when_the_backend_is_made(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with (
        override_settings(
            EMAIL_FLUXMAIL_DKIM_DOMAIN="example.com",
            EMAIL_FLUXMAIL_DKIM_SELECTOR="s1",
            EMAIL_FLUXMAIL_DKIM_KEY_FILE=str(missing),
        ),
        pytest.raises(ConfigurationError, match=str(missing)),
    ):
        get_connection(BACKEND, fail_silently=True)
    with (
        override_settings(EMAIL_FLUXMAIL_DKIM_DOMAIN="example.com"),
        pytest.raises(ConfigurationError, match="EMAIL_FLUXMAIL_DKIM_SELECTOR"),
    ):
        get_connection(BACKEND)
    with (
        override_settings(
            EMAIL_FLUXMAIL_DKIM_DOMAIN="example.com",
            EMAIL_FLUXMAIL_DKIM_SELECTOR="s1",
            EMAIL_FLUXMAIL_DKIM_KEY_FILE="k.pem",
            EMAIL_FLUXMAIL_DKIM_PRIVATE_KEY="-----BEGIN PRIVATE KEY-----",
        ),
        pytest.raises(ConfigurationError, match="not both"),
    ):
        get_connection(BACKEND)
    with (
        override_settings(
            EMAIL_FLUXMAIL_DKIM_DOMAIN="example.com",
            EMAIL_FLUXMAIL_DKIM_SELECTOR="s1",
            EMAIL_FLUXMAIL_DKIM_PRIVATE_KEY="garbage",
        ),
        pytest.raises(ConfigurationError) as info,
    ):
        get_connection(BACKEND)
    assert "garbage" not in str(info.value)


# --- fluxmail.testing.capture() ---------------------------------------------------------


def test_capture_takes_django_mail_without_connecting(
    smtp_server: SMTPTestServer, key: Ed25519Key
) -> None:
    dkim = {
        "EMAIL_FLUXMAIL_DKIM_DOMAIN": "example.com",
        "EMAIL_FLUXMAIL_DKIM_SELECTOR": "s1",
        "EMAIL_FLUXMAIL_DKIM_PRIVATE_KEY": key.pem,
    }
    with server_settings(smtp_server, **dkim), capture() as outbox:
        assert send_mail("One", "Body", "from@example.com", ["to@example.org"]) == 1
        with get_connection() as connection:
            message = EmailMessage(
                "Two", "Body", "from@example.com", ["a@example.org"], bcc=["b@example.org"]
            )
            assert connection.send_messages([message, EmailMessage("No recipients")]) == 1
    assert smtp_server.connections == 0
    assert outbox.subjects == ["One", "Two"]
    assert outbox[1].recipients == ("a@example.org", "b@example.org")
    assert outbox[1].bcc == ["b@example.org"]
    assert b"b@example.org" not in outbox[1].data
    assert all(key.verifies(captured.data) for captured in outbox)


def test_capture_failures_follow_fail_silently(smtp_server: SMTPTestServer) -> None:
    refused = RecipientsRefusedError("refused", smtp_code=550)
    with server_settings(smtp_server), capture() as outbox:
        outbox.fail_next(refused, times=2)
        with pytest.raises(RecipientsRefusedError):
            send_mail("One", "Body", "from@example.com", ["to@example.org"])
        assert (
            send_mail("Two", "Body", "f@example.com", ["t@example.org"], fail_silently=True) == 0
        )
        assert send_mail("Three", "Body", "f@example.com", ["t@example.org"]) == 1
    assert outbox.subjects == ["Three"]
