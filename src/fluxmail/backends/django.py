"""A Django email backend that sends through fluxmail's SMTP engine.

``EMAIL_BACKEND = "fluxmail.backends.django.FluxMailBackend"`` in your settings; see
``docs/django.md``. Django builds the MIME message (attachments, alternatives, encodings
stay Django's); this backend computes the SMTP envelope, then hands the bytes to
the transport :mod:`fluxmail.transports.factory` builds (as every FluxMail's), which
verifies TLS, authenticates, retries what the delivery policy retries and reconnects a
connection the server dropped (and, under ``fluxmail.testing.capture()``, captures).

Compatibility with Django's own SMTP backend (``django.core.mail.backends.smtp``):

* the same settings and constructor arguments, constructor arguments winning;
* ``open()`` returns True when it opened the connection, False when one was already
  open, None when opening failed and ``fail_silently`` is set;
* ``send_messages()`` returns how many messages the server accepted, uses one connection
  for the whole call (or the one ``open()`` / the ``with`` block opened), skips messages
  without recipients, and never puts Bcc in the message bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import threading
from collections.abc import Sequence
from typing import Any

try:
    from django.conf import settings
    from django.core.mail.backends.base import BaseEmailBackend
except ImportError as exc:  # pragma: no cover - only without the extra
    from ..errors import MissingDependencyError

    raise MissingDependencyError("The Django email backend", "django", "django") from exc

from ..config import EmailObject, SmtpConfig
from ..dkim import DKIM, dkim_from_settings, sign
from ..envelope import Composed
from ..errors import (
    ConfigurationError,
    FluxMailException,
)
from ..smtp._checks import flag, text
from ..transports import factory
from ._django_compose import compose_django_message, django_envelope
from ._django_errors import django_errors

__all__ = ["FluxMailBackend", "OpenConnection", "compose_django_message", "django_envelope"]

logger = logging.getLogger("fluxmail.django")

DEFAULT_TIMEOUT = 30.0


# --- settings ------------------------------------------------------------------------------


def _setting(name: str, default: Any = None) -> Any:
    return getattr(settings, name, default)


def _flag(setting: str, argument: str, value: object) -> bool:
    """A boolean argument, else its setting: ``bool`` only. ``bool("False")`` is True,
    so a string here would turn TLS or plaintext AUTH on by accident."""
    if value is None:
        return flag(setting, _setting(setting, False))
    return flag(argument, value)


def _check_number(name: str, value: object, *, integer: bool) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:  # type: ignore[operator]
        kind = "a whole number" if integer else "a number"
        raise ConfigurationError(f"{name} must be {kind} >= 0, got {value!r}")


def _check_ssl_settings(context: object, certfile: str | None, keyfile: str | None) -> None:
    """What can be checked without reading a file (the constructor's part)."""
    if context is not None and not isinstance(context, ssl.SSLContext):
        raise ConfigurationError(
            f"EMAIL_FLUXMAIL_SSL_CONTEXT must be an ssl.SSLContext, got {type(context).__name__}"
        )
    if (certfile or keyfile) and context is not None:
        raise ConfigurationError(
            "EMAIL_SSL_CERTFILE/EMAIL_SSL_KEYFILE cannot be combined with "
            "EMAIL_FLUXMAIL_SSL_CONTEXT: load the client certificate into your context "
            "with load_cert_chain()"
        )


def _client_certificate_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext:
    """A default context with the client certificate loaded, made when the connection
    opens (as Django does), so a backend can be built before the files exist."""
    if not certfile:
        raise ConfigurationError("EMAIL_SSL_KEYFILE needs EMAIL_SSL_CERTFILE")
    made = ssl.create_default_context()
    try:
        # An encrypted key would make OpenSSL prompt on the terminal; refuse it instead.
        made.load_cert_chain(str(certfile), str(keyfile) if keyfile else None, password="")
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the client certificate {certfile!r}"
            f"{f' / key {keyfile!r}' if keyfile else ''}: {exc} (encrypted keys are not "
            "supported here; pass your own context in EMAIL_FLUXMAIL_SSL_CONTEXT)"
        ) from exc
    return made


@dataclasses.dataclass(frozen=True)
class OpenConnection:
    """What ``FluxMailBackend.connection`` holds while a connection is open.

    The SMTP session itself belongs to the transport; this says where it goes.

    Attributes:
        host: the server's host name.
        port: its port.
        timeout: seconds allowed per stage.
    """

    host: str
    port: int
    timeout: float


def _dkim_settings(dkim: object) -> DKIM | None:
    """The ``dkim=`` argument, else the EMAIL_FLUXMAIL_DKIM_* settings; the key is loaded
    and checked now."""
    if dkim is None:
        key_file = _setting("EMAIL_FLUXMAIL_DKIM_KEY_FILE")
        private_key = _setting("EMAIL_FLUXMAIL_DKIM_PRIVATE_KEY")
        if key_file and private_key:
            raise ConfigurationError(
                "set EMAIL_FLUXMAIL_DKIM_KEY_FILE or EMAIL_FLUXMAIL_DKIM_PRIVATE_KEY, not both"
            )
        if isinstance(private_key, str):
            private_key = private_key.encode("ascii", "replace")  # the key itself, not a path
        dkim = dkim_from_settings(
            _setting("EMAIL_FLUXMAIL_DKIM_DOMAIN"),
            _setting("EMAIL_FLUXMAIL_DKIM_SELECTOR"),
            key_file or private_key,
            (
                "EMAIL_FLUXMAIL_DKIM_DOMAIN",
                "EMAIL_FLUXMAIL_DKIM_SELECTOR",
                "EMAIL_FLUXMAIL_DKIM_KEY_FILE (or _PRIVATE_KEY)",
            ),
        )
    if dkim is not None and not isinstance(dkim, DKIM):
        raise ConfigurationError(f"dkim must be a fluxmail.DKIM, got {type(dkim).__name__}")
    if dkim is not None:
        dkim.load_key()
    return dkim


# --- the backend ---------------------------------------------------------------------------


class FluxMailBackend(BaseEmailBackend):  # type: ignore[misc]
    """Django email backend using fluxmail's SMTP engine. One instance is one connection.

    Every argument defaults to its Django setting; an argument wins over the setting.

    Args:
        host: ``EMAIL_HOST`` (default ``"localhost"``).
        port: ``EMAIL_PORT`` (default 25).
        username: ``EMAIL_HOST_USER``; with ``password``, AUTH after TLS.
        password: ``EMAIL_HOST_PASSWORD``; never shown in ``repr``, errors or logs.
        use_tls: ``EMAIL_USE_TLS``: STARTTLS, required (never skipped).
        fail_silently: swallow fluxmail's errors (Django's own still raise).
        use_ssl: ``EMAIL_USE_SSL``: implicit TLS.
        timeout: ``EMAIL_TIMEOUT`` seconds per stage (None: 30).
        ssl_keyfile: ``EMAIL_SSL_KEYFILE``, read when the connection opens.
        ssl_certfile: ``EMAIL_SSL_CERTFILE``, read when the connection opens.
        max_retries: ``EMAIL_FLUXMAIL_MAX_RETRIES``: retries of transient failures.
        retry_delay: ``EMAIL_FLUXMAIL_RETRY_DELAY``: seconds before the first retry.
        ssl_context: ``EMAIL_FLUXMAIL_SSL_CONTEXT``: your own ``ssl.SSLContext``.
        local_hostname: ``EMAIL_FLUXMAIL_LOCAL_HOSTNAME``: the EHLO name.
        allow_insecure_auth: ``EMAIL_FLUXMAIL_ALLOW_INSECURE_AUTH``: AUTH without TLS.
        dkim: a ``fluxmail.DKIM``, else the ``EMAIL_FLUXMAIL_DKIM_*`` settings.
        oauth2: a token provider, else ``EMAIL_FLUXMAIL_OAUTH2``.
        **kwargs: passed to Django's ``BaseEmailBackend``.

    Raises:
        ConfigurationError: contradictory or invalid settings, such as ``EMAIL_USE_TLS``
            with ``EMAIL_USE_SSL`` (a ``ValueError`` with Django's message; code
            ``invalid_option``).

    Errors raised by ``open()``, ``close()`` and ``send_messages()`` are fluxmail's and
    also the matching ``smtplib`` classes (see ``fluxmail.backends._django_errors``).

    Not meant to be shared by concurrent threads (Django hands each caller its own
    backend); a lock still serialises ``open()``, ``close()`` and ``send_messages()``.

    Example:
        ```python
        from django.core.mail import EmailMessage, get_connection

        with get_connection() as connection:  # EMAIL_BACKEND = "...FluxMailBackend"
            message = EmailMessage("Hi", "Body", "shop@example.com", ["ada@example.org"])
            assert connection.send_messages([message]) == 1
        ```
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        *,
        max_retries: int | None = None,
        retry_delay: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        allow_insecure_auth: bool | None = None,
        dkim: DKIM | None = None,
        oauth2: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=flag("fail_silently", fail_silently), **kwargs)
        self.host: str = host or _setting("EMAIL_HOST", "localhost")
        self.port: int = port or _setting("EMAIL_PORT", 25)
        self.username: str = _setting("EMAIL_HOST_USER", "") if username is None else username
        self.password: str = _setting("EMAIL_HOST_PASSWORD", "") if password is None else password
        text("EMAIL_HOST_USER (username=)", self.username)
        text("EMAIL_HOST_PASSWORD (password=)", self.password)
        self.use_tls = _flag("EMAIL_USE_TLS", "use_tls", use_tls)
        self.use_ssl = _flag("EMAIL_USE_SSL", "use_ssl", use_ssl)
        self.timeout: float | None = _setting("EMAIL_TIMEOUT") if timeout is None else timeout
        self.ssl_keyfile = _setting("EMAIL_SSL_KEYFILE") if ssl_keyfile is None else ssl_keyfile
        self.ssl_certfile = (
            _setting("EMAIL_SSL_CERTFILE") if ssl_certfile is None else ssl_certfile
        )
        self.max_retries: int = (
            _setting("EMAIL_FLUXMAIL_MAX_RETRIES", 0) if max_retries is None else max_retries
        )
        self.retry_delay: float = (
            _setting("EMAIL_FLUXMAIL_RETRY_DELAY", 1.0) if retry_delay is None else retry_delay
        )
        _check_number("EMAIL_FLUXMAIL_MAX_RETRIES", self.max_retries, integer=True)
        _check_number("EMAIL_FLUXMAIL_RETRY_DELAY", self.retry_delay, integer=False)
        if self.use_tls and self.use_ssl:
            raise ConfigurationError(
                "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set one of "
                "those settings to True. EMAIL_USE_TLS is STARTTLS (usually port 587), "
                "EMAIL_USE_SSL is implicit TLS (usually port 465)."
            )
        context = _setting("EMAIL_FLUXMAIL_SSL_CONTEXT") if ssl_context is None else ssl_context
        insecure = _flag(
            "EMAIL_FLUXMAIL_ALLOW_INSECURE_AUTH", "allow_insecure_auth", allow_insecure_auth
        )
        # OAuth2 (EMAIL_FLUXMAIL_OAUTH2: a token provider) signs in as EMAIL_HOST_USER with
        # no password; otherwise, like Django, log in only when user and password are set.
        _check_ssl_settings(context, self.ssl_certfile, self.ssl_keyfile)
        token_source = _setting("EMAIL_FLUXMAIL_OAUTH2") if oauth2 is None else oauth2
        login = token_source is None and bool(self.username) and bool(self.password)
        self.config = SmtpConfig(
            host=self.host,
            port=self.port,
            use_tls=self.use_tls,
            use_ssl=self.use_ssl,
            username=self.username if login or token_source is not None else None,
            password=self.password if login else None,
            oauth2=token_source,
            timeout=DEFAULT_TIMEOUT if self.timeout is None else self.timeout,
            local_hostname=local_hostname or _setting("EMAIL_FLUXMAIL_LOCAL_HOSTNAME"),
            ssl_context=context,
            allow_insecure_auth=insecure,
        )
        self.dkim = _dkim_settings(dkim)
        self._transport = self._new_transport()
        self._lock = threading.RLock()
        #: Django's attribute: None while closed, an :class:`OpenConnection` while open.
        #: Code that sets it (as Django's own tests do) makes ``open()`` return False.
        self.connection: Any = None

    def _new_transport(self) -> factory.Switch:
        return factory.build(
            EmailObject.SMTP,
            config=self.config,
            max_retries=self.max_retries,
            retry_delay=float(self.retry_delay),
        )

    @property
    def _is_open(self) -> bool:
        return self.connection is not None

    @_is_open.setter
    def _is_open(self, value: bool) -> None:
        config = self.config
        self.connection = (
            OpenConnection(config.host, config.port, config.timeout) if value else None
        )

    @property
    def is_open(self) -> bool:
        """True between a successful ``open()`` and ``close()``."""
        return self._is_open

    def _load_client_certificate(self) -> None:
        """Load EMAIL_SSL_CERTFILE/KEYFILE into the transport's context, once."""
        if (self.ssl_certfile or self.ssl_keyfile) and self.config.ssl_context is None:
            made = _client_certificate_context(self.ssl_certfile, self.ssl_keyfile)
            self.config = dataclasses.replace(self.config, ssl_context=made)
            self._transport = self._new_transport()  # nothing is open yet

    @django_errors
    def open(self) -> bool | None:
        """Make sure a connection is open. True: opened now; False: it was already open;
        None: opening failed and ``fail_silently`` hid the error.

        Raises the :mod:`fluxmail.backends._django_errors` classes: fluxmail errors that
        are also :class:`smtplib.SMTPException` (and ``ssl.SSLError`` for TLS failures).
        """
        with self._lock:
            if self._is_open:
                return False
            # Read here, as Django does (also under a test capture: a wrong path shows).
            self._load_client_certificate()
            self._transport.hold()
            try:
                self._transport.open()  # (nothing to open under fluxmail.testing.capture())
            except FluxMailException as exc:
                self._transport.release()
                if not self.fail_silently:
                    raise
                logger.debug("could not open the SMTP connection: %s", exc)
                return None
            self._is_open = True
            return True

    @django_errors
    def close(self) -> None:
        """Close the connection (QUIT). Safe to call when nothing is open."""
        with self._lock:
            if not self._is_open:
                return
            self._is_open = False
            try:
                self._transport.release()
            except FluxMailException:
                if not self.fail_silently:
                    raise

    @django_errors
    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Send Django ``EmailMessage`` objects; return how many the server accepted.

        The connection is opened once, for the first message that has recipients, so a
        message Django refuses to build fails before anything is sent. It is closed at
        the end unless it was already open.
        """
        if not email_messages:
            return 0
        with self._lock:
            opened_here = False
            asked = False
            sent = 0
            try:
                for message in email_messages:
                    composed = self._compose(message)
                    if composed is None:
                        continue
                    if not asked:  # as Django: open() (or a subclass's) decides, once
                        asked = True
                        opened = self.open()
                        if opened is None:
                            return sent
                        opened_here = opened
                    if self._deliver(composed):
                        sent += 1
            finally:
                if opened_here:
                    self.close()
        return sent

    def _compose(self, message: Any) -> Composed | None:
        """None for a message without recipients or, with fail_silently, one fluxmail
        refuses (for example an envelope address with a quoted local part)."""
        if not message.recipients():
            return None
        try:
            composed = compose_django_message(message)
            return composed if self.dkim is None else sign(composed, self.dkim)
        except FluxMailException as exc:
            if not self.fail_silently:
                raise
            logger.debug("message skipped: %s", exc)
            return None

    def _deliver(self, composed: Composed) -> bool:
        try:
            result = self._transport.send(composed)
        except FluxMailException as exc:
            if not self.fail_silently:
                raise
            logger.debug("message %s not sent: %s", composed.message_id, exc)
            return False
        if result.refused:
            # The server took the message for the other recipients: it counts as sent.
            logger.warning(
                "message %s: %d recipient(s) refused: %s",
                composed.message_id,
                len(result.refused),
                ", ".join(sorted(result.refused)),
            )
        return True
