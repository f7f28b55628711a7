"""Helpers shared by the Django test modules (Django itself is configured once, in
conftest.py, before any test module is imported)."""

from __future__ import annotations

from typing import Any

from django.test.utils import override_settings

from servers import FaultServer, SMTPTestServer

BACKEND = "fluxmail.backends.django.FluxMailBackend"


def email_settings(server: SMTPTestServer | FaultServer, **extra: Any) -> override_settings:
    """Settings that point Django at ``server`` (TLS mode, AUTH, the test CA)."""
    values: dict[str, Any] = {
        "EMAIL_BACKEND": BACKEND,
        "EMAIL_HOST": server.host,
        "EMAIL_PORT": server.port,
        "EMAIL_USE_TLS": False,
        "EMAIL_USE_SSL": False,
        "EMAIL_HOST_USER": "",
        "EMAIL_HOST_PASSWORD": "",
        "EMAIL_FLUXMAIL_SSL_CONTEXT": server.client_ssl_context,
    }
    if isinstance(server, SMTPTestServer):
        values["EMAIL_USE_TLS"] = server.tls_mode == "starttls"
        values["EMAIL_USE_SSL"] = server.tls_mode == "ssl"
        if server.username is not None:
            values["EMAIL_HOST_USER"] = server.username
            values["EMAIL_HOST_PASSWORD"] = server.password
    else:
        values["EMAIL_USE_TLS"] = server.tls
    values.update(extra)
    return override_settings(**values)


def django_backend(**options: Any) -> Any:
    from fluxmail.backends.django import FluxMailBackend

    return FluxMailBackend(**options)


def django_message() -> Any:
    from django.core.mail import EmailMessage

    return EmailMessage("s", "b", "me@example.com", ["to@example.com"])
