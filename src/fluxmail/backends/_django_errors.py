"""The errors the Django backend raises: fluxmail's, catchable as smtplib's too.

Django documents that ``send_mail()`` raises :class:`smtplib.SMTPException` when sending
fails, and Django code says ``except SMTPException:``. Each class here is the fluxmail
error (same ``.code``, ``.smtp_code``, ``.refused``, still a :class:`FluxMailException`)
mixed with the smtplib class Django's own SMTP backend would have raised, with that
class's attributes filled in (``smtp_error`` as bytes, ``sender``, ``recipients``). A TLS
handshake failure is an :class:`ssl.SSLError` as well, as it is with smtplib.

Only errors raised through the backend are converted (:func:`django_errors` wraps
``open()``, ``close()`` and ``send_messages()``); the library raises the plain classes.
Every class pickles (Celery result backends and multiprocessing pickle exceptions).
"""

from __future__ import annotations

import functools
import smtplib
import ssl
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ..errors import (
    AuthenticationError,
    ConnectError,
    FluxMailException,
    MessageRefusedError,
    MessageTooLargeError,
    OutcomeUnknownError,
    ProtocolError,
    RecipientsRefusedError,
    SenderRefusedError,
    SendTimeoutError,
    SMTPResponseError,
    SMTPUTF8UnsupportedError,
    TLSRequiredError,
    TLSVerifyError,
)

__all__ = [
    "DjangoAuthenticationError",
    "DjangoConnectError",
    "DjangoMessageRefusedError",
    "DjangoMessageTooLargeError",
    "DjangoOutcomeUnknownError",
    "DjangoProtocolError",
    "DjangoRecipientsRefusedError",
    "DjangoSMTPResponseError",
    "DjangoSMTPUTF8UnsupportedError",
    "DjangoSendTimeoutError",
    "DjangoSenderRefusedError",
    "DjangoTLSHandshakeError",
    "DjangoTLSRequiredError",
    "DjangoTLSVerifyError",
    "as_django_error",
    "django_errors",
]


class _SMTPCompatible:
    """Placed after the fluxmail class and before the smtplib one in each twin's bases, so
    the fluxmail constructor's ``super().__init__(message)`` lands here, not in smtplib's
    ``__init__`` (which wants ``code, msg``); ``str()`` is the fluxmail message (not
    smtplib's tuple form). Pickling is ``FluxMailException``'s (state, no ``__init__``)."""

    args: tuple[Any, ...]

    def __init__(self, message: str) -> None:
        BaseException.__init__(cast(BaseException, self), message)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DjangoAuthenticationError(  # type: ignore[misc]  # smtp_code: int | None vs int
    AuthenticationError, _SMTPCompatible, smtplib.SMTPAuthenticationError
):
    """``authentication_failed``, also an :class:`smtplib.SMTPAuthenticationError`."""


class DjangoSenderRefusedError(SenderRefusedError, _SMTPCompatible, smtplib.SMTPSenderRefused):
    """``sender_refused``, also an :class:`smtplib.SMTPSenderRefused` (``.sender`` set)."""


class DjangoRecipientsRefusedError(
    RecipientsRefusedError, _SMTPCompatible, smtplib.SMTPRecipientsRefused
):
    """``recipients_refused``, also an :class:`smtplib.SMTPRecipientsRefused`
    (``.recipients`` maps each address to ``(code, bytes)`` as smtplib does)."""


class DjangoMessageRefusedError(MessageRefusedError, _SMTPCompatible, smtplib.SMTPDataError):
    """``message_refused``, also an :class:`smtplib.SMTPDataError`."""


class DjangoMessageTooLargeError(MessageTooLargeError, _SMTPCompatible, smtplib.SMTPDataError):
    """``message_too_large``, also an :class:`smtplib.SMTPDataError`."""


class DjangoSMTPUTF8UnsupportedError(
    SMTPUTF8UnsupportedError, _SMTPCompatible, smtplib.SMTPNotSupportedError
):
    """``smtputf8_unsupported``, also an :class:`smtplib.SMTPNotSupportedError`."""


class DjangoSMTPResponseError(SMTPResponseError, _SMTPCompatible, smtplib.SMTPResponseException):
    """Any other error reply, also an :class:`smtplib.SMTPResponseException`."""


class DjangoConnectError(ConnectError, _SMTPCompatible, smtplib.SMTPServerDisconnected):
    """``connection_failed``: a ``ConnectionError`` and an :class:`smtplib.SMTPException`."""


class DjangoSendTimeoutError(SendTimeoutError, _SMTPCompatible, smtplib.SMTPServerDisconnected):
    """``timeout``: a ``TimeoutError`` and an :class:`smtplib.SMTPException`."""


class DjangoProtocolError(ProtocolError, _SMTPCompatible, smtplib.SMTPServerDisconnected):
    """``protocol_error``: the server does not speak SMTP."""


class DjangoOutcomeUnknownError(
    OutcomeUnknownError, _SMTPCompatible, smtplib.SMTPServerDisconnected
):
    """``outcome_unknown``: smtplib reports this case as ``SMTPServerDisconnected``."""


class DjangoTLSRequiredError(TLSRequiredError, _SMTPCompatible, smtplib.SMTPNotSupportedError):
    """``tls_required`` (STARTTLS not offered, or AUTH without TLS), also an
    :class:`smtplib.SMTPNotSupportedError` as smtplib raises for a missing STARTTLS."""


class DjangoTLSHandshakeError(
    TLSRequiredError, _SMTPCompatible, smtplib.SMTPException, ssl.SSLError
):
    """``tls_required`` after a failed TLS handshake: also an :class:`ssl.SSLError`."""


class DjangoTLSVerifyError(
    TLSVerifyError, _SMTPCompatible, smtplib.SMTPException, ssl.SSLCertVerificationError
):
    """``tls_verify_failed``, also an :class:`ssl.SSLCertVerificationError`."""


# smtplib's wording for the same conditions, put first so logs and searches match Django's.
_SMTPLIB_WORDING = (
    (TLSRequiredError, "does not offer STARTTLS", "STARTTLS extension not supported by server."),
    (AuthenticationError, "does not offer AUTH", "SMTP AUTH extension not supported by server."),
)

_MOST_SPECIFIC_FIRST: tuple[tuple[type[FluxMailException], type[FluxMailException]], ...] = (
    (SenderRefusedError, DjangoSenderRefusedError),
    (RecipientsRefusedError, DjangoRecipientsRefusedError),
    (MessageTooLargeError, DjangoMessageTooLargeError),
    (MessageRefusedError, DjangoMessageRefusedError),
    (SMTPUTF8UnsupportedError, DjangoSMTPUTF8UnsupportedError),
    (SMTPResponseError, DjangoSMTPResponseError),
    (AuthenticationError, DjangoAuthenticationError),
    (TLSVerifyError, DjangoTLSVerifyError),
    (SendTimeoutError, DjangoSendTimeoutError),
    (ProtocolError, DjangoProtocolError),
    (ConnectError, DjangoConnectError),
    (OutcomeUnknownError, DjangoOutcomeUnknownError),
)


def _target(exc: FluxMailException) -> type[FluxMailException] | None:
    if isinstance(exc, TLSRequiredError):
        handshake = isinstance(exc.__cause__, ssl.SSLError)
        return DjangoTLSHandshakeError if handshake else DjangoTLSRequiredError
    for fluxmail_class, django_class in _MOST_SPECIFIC_FIRST:
        if isinstance(exc, fluxmail_class):
            return django_class
    return None


def _smtplib_attributes(exc: FluxMailException) -> dict[str, Any]:
    """What smtplib's classes carry: ``smtp_error`` (bytes), ``sender``, ``recipients``."""
    attrs: dict[str, Any] = {}
    server_message = getattr(exc, "server_message", "") or exc.message
    attrs["smtp_error"] = server_message.encode("utf-8", "replace")
    if getattr(exc, "smtp_code", None) is None:
        attrs["smtp_code"] = -1  # smtplib's value when there was no reply
    refused = getattr(exc, "refused", None)
    if refused is not None:
        attrs["recipients"] = {
            addr: (code, text.encode("utf-8", "replace")) for addr, (code, text) in refused.items()
        }
    if isinstance(exc, SenderRefusedError):
        attrs["sender"] = getattr(exc, "sender", None)
    return attrs


def as_django_error(exc: FluxMailException) -> FluxMailException:
    """The Django-facing twin of ``exc`` (itself when no smtplib class matches, such as
    an invalid address, which is a ``ValueError`` as in Django)."""
    if isinstance(exc, _SMTPCompatible):
        return exc
    target = _target(exc)
    if target is None:
        return exc
    message = exc.message
    for kind, marker, wording in _SMTPLIB_WORDING:
        if isinstance(exc, kind) and marker in message:
            message = f"{wording} {message}"
    twin = target.__new__(target, message)
    twin.args = (message,)
    twin.__dict__.update(exc.__dict__)
    for name, value in _smtplib_attributes(exc).items():
        twin.__dict__.setdefault(name, value)
    return twin


F = TypeVar("F", bound=Callable[..., Any])


def django_errors(method: F) -> F:
    """Re-raise fluxmail errors from ``method`` as their Django-facing twins."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except FluxMailException as exc:
            twin = as_django_error(exc)
            if twin is exc:
                raise
            raise twin.with_traceback(exc.__traceback__) from exc.__cause__

    return cast(F, wrapper)
