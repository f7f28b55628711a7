"""Django settings for the fluxmail test suite (a real settings module, no pytest-django).

Tests point EMAIL_HOST/EMAIL_PORT at their own server with
``django.test.utils.override_settings`` or by passing arguments to ``get_connection()``;
the values here only make sure nothing reaches a real mail server by accident.
"""

from __future__ import annotations

SECRET_KEY = "fluxmail-tests-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}

EMAIL_BACKEND = "fluxmail.backends.django.FluxMailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = 9  # discard: tests must override it
EMAIL_HOST_USER = ""
EMAIL_HOST_PASSWORD = ""
EMAIL_USE_TLS = False
EMAIL_USE_SSL = False
EMAIL_TIMEOUT = 5
DEFAULT_FROM_EMAIL = "webmaster@example.com"

EMAIL_FLUXMAIL_MAX_RETRIES = 0
EMAIL_FLUXMAIL_RETRY_DELAY = 0.01
EMAIL_FLUXMAIL_LOCAL_HOSTNAME = "client.test.invalid"
