"""The fluxmail exception tree.

Every error fluxmail detects is a :class:`FluxMailException` with a stable snake_case
``.code``. Subclasses mix in the builtin exception that fits, so ``except ValueError`` or
``except ConnectionError`` keep working::

    FluxMailException                                   code
    ├── ConfigurationError (ValueError)                 invalid_option
    ├── MissingDependencyError (ImportError)            missing_dependency
    ├── NoMessageError                                  no_message
    ├── UnsupportedOperationError                       unsupported_operation
    ├── OutlookUnavailableError                         outlook_unavailable
    ├── TemplateError                                   template_error
    ├── InvalidMessageError (ValueError)                invalid_message
    │   ├── InvalidAddressError                         invalid_address
    │   ├── HeaderInjectionError                        header_injection
    │   └── AttachmentNotFoundError (FileNotFoundError) attachment_not_found
    ├── ConnectError (ConnectionError)                  connection_failed
    │   ├── SendTimeoutError (TimeoutError)             timeout
    │   ├── TLSRequiredError                            tls_required
    │   ├── TLSVerifyError                              tls_verify_failed
    │   └── ProtocolError                               protocol_error
    ├── AuthenticationError                             authentication_failed
    ├── OutcomeUnknownError                             outcome_unknown
    ├── GraphError                                      graph_error
    │   └── GraphThrottledError                         graph_throttled
    └── SMTPResponseError                               smtp_error
        ├── SenderRefusedError                          sender_refused
        ├── RecipientsRefusedError                      recipients_refused
        ├── MessageRefusedError                         message_refused
        ├── MessageTooLargeError                        message_too_large
        └── SMTPUTF8UnsupportedError                    smtputf8_unsupported

Low-level errors (``OSError``, ``ssl.SSLError``, timeouts) are translated once, at the
transport edge, and chained as ``__cause__``. Messages never contain secrets.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

__all__ = [
    "AttachmentNotFoundError",
    "AuthenticationError",
    "ConfigurationError",
    "ConnectError",
    "FluxMailException",
    "GraphError",
    "GraphThrottledError",
    "HeaderInjectionError",
    "InvalidAddressError",
    "InvalidMessageError",
    "MessageRefusedError",
    "MessageTooLargeError",
    "MissingDependencyError",
    "NoMessageError",
    "OutcomeUnknownError",
    "OutlookUnavailableError",
    "ProtocolError",
    "RecipientsRefusedError",
    "SMTPResponseError",
    "SMTPUTF8UnsupportedError",
    "SendTimeoutError",
    "SenderRefusedError",
    "ServerReply",
    "TLSRequiredError",
    "TLSVerifyError",
    "TemplateError",
    "UnsupportedOperationError",
]


class FluxMailException(Exception):
    """Base class of every error fluxmail raises.

    Attributes:
        code: stable snake_case API to branch on (``"connection_failed"``, ...); each
            subclass has its own, listed in the module docstring and on the errors page.
        transient: whether trying again later may succeed (4xx replies, connections lost
            before the end of DATA); ``max_retries`` retries exactly these.
        batch_result: set when this error stopped a ``BulkSender`` batch: the counts so
            far (``{"sent", "failed", "total", "errors"}``).

    The low-level cause (an ``OSError``, ``ssl.SSLError``, ...) is kept as
    ``__cause__``. Messages never contain a password, a token or a secret.

    Example:
        ```python
        try:
            mailer.create(subject="Hi", recipients=["ada@example.org"], body="...").send()
        except FluxMailException as exc:
            logging.getLogger("app").error("mail failed [%s]: %s", exc.code, exc)
            if exc.transient:
                pass  # try again later: a 4xx reply, or the connection dropped
        ```

    Errors are complete when constructed (nothing sets attributes on them afterwards)
    and pickle with every attribute, so they cross process pools and task queues intact.
    """

    code: str = "fluxmail_error"
    transient: bool = False
    #: Set by BulkSender when this error stopped a batch: the counts up to that point.
    batch_result: Any = None
    #: A recognised usual mistake (``fluxmail.smtp._hints.Hint``): its advice is already at the
    #: end of the message; the CLI prints it in flags instead.
    hint: Any = None
    #: How many times the send was tried before this error (more than 1 when retries ran).
    attempts: int = 1

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        transient: bool | None = None,
        batch_result: Any = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if transient is not None:
            self.transient = transient
        if batch_result is not None:
            self.batch_result = batch_result

    @property
    def message(self) -> str:
        """The error text, as ``str(exc)``."""
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickling calls cls(*args), which fails for keyword-only arguments
        # (smtp_code=...) and other signatures: rebuild without __init__, then restore
        # every attribute (state applied after creation, so self-references are fine).
        return (_rebuild, (type(self), self.args), self.__dict__)

    def with_batch_result(self, batch_result: Any) -> Self:
        """A copy of this error that carries ``batch_result`` (the counts of the batch it
        stopped), with the same class, attributes, cause and traceback."""
        return self._copy(batch_result=batch_result)

    def with_attempts(self, attempts: int) -> Self:
        """A copy of this error that says how many times the send was tried (the CLI
        prints "after N attempts")."""
        return self._copy(attempts=attempts)

    def with_hint(self, hint: Any) -> Self:
        """A copy of this error with a recognised usual mistake's advice at the end of
        its message (``hint.api``), and the hint kept for the CLI's wording."""
        clone = self._copy(hint=hint)
        text = self.message
        clone.args = (f"{text}: {hint.api}" if text else hint.api, *self.args[1:])
        return clone

    def _copy(self, **attributes: Any) -> Self:
        """The same class, attributes, cause and traceback, with ``attributes`` set."""
        clone = copy.copy(self)
        clone.__dict__.update(attributes)
        clone.__cause__ = self.__cause__
        clone.__suppress_context__ = True  # the original is the same error: not twice
        return clone.with_traceback(self.__traceback__)


def _rebuild(cls: type[FluxMailException], args: tuple[Any, ...]) -> FluxMailException:
    """A new ``cls`` without calling ``__init__`` (pickle then restores the attributes)."""
    # The builtin base whose __new__ the class inherits: with two builtin bases (OSError
    # and ValueError, say) ``cls.__new__`` can name the wrong one, which Python refuses.
    maker: type = cls
    while "__new__" not in vars(maker):
        maker = maker.__base__ or Exception  # never None: Exception defines __new__
    error: FluxMailException = maker.__new__(cls, *args)
    error.args = args  # OSError subclasses with their own __init__ leave args to it
    return error


class ConfigurationError(FluxMailException, ValueError):
    """A contradictory or invalid constructor / environment setting."""

    code = "invalid_option"


class MissingDependencyError(FluxMailException, ImportError):
    """An optional extra is not installed; the message names the pip command.

    The command installs *this* project's extra (from a clone, or from a built wheel):
    the package index's ``fluxmail`` is an unrelated project without our extras, so the
    message never says ``pip install "fluxmail[...]"``.
    """

    code = "missing_dependency"

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the '{module}' package, from the extra fluxmail[{extra}]: "
            f'in a clone of fluxmail, pip install -e ".[{extra}]" (from a wheel: '
            f'pip install "fluxmail-<version>-py3-none-any.whl[{extra}]")'
        )
        self.extra = extra


class NoMessageError(FluxMailException):
    """send()/display() was called without a preceding create()."""

    code = "no_message"


class UnsupportedOperationError(FluxMailException):
    """The transport cannot do this (for example send() or sender= with Outlook)."""

    code = "unsupported_operation"


class OutlookUnavailableError(FluxMailException):
    """Outlook automation needs Windows, the desktop app and pywin32."""

    code = "outlook_unavailable"


class TemplateError(FluxMailException):
    """A template could not be loaded or rendered."""

    code = "template_error"


class InvalidMessageError(FluxMailException, ValueError):
    """create() was given something that cannot become a valid email."""

    code = "invalid_message"


class InvalidAddressError(InvalidMessageError):
    """A malformed address, several mailboxes in one entry, no recipient or no sender.

    Raised by ``create()`` before any connection; a ``ValueError``.
    """

    code = "invalid_address"


class HeaderInjectionError(InvalidMessageError):
    """CR, LF or NUL where a single header line is expected. Never stripped, always refused."""

    code = "header_injection"


class AttachmentNotFoundError(InvalidMessageError, FileNotFoundError):
    """An attachment or inline image path that does not exist (checked by ``create()``)."""

    code = "attachment_not_found"


class ConnectError(FluxMailException, ConnectionError):
    """The server could not be reached, or the connection broke before the end of DATA."""

    code = "connection_failed"
    transient = True


class SendTimeoutError(ConnectError, TimeoutError):
    """A stage (connect, greeting, a command, the end of DATA) took longer than
    ``timeout``; also a ``TimeoutError``. Transient before the final '.' of DATA."""

    code = "timeout"


class TLSRequiredError(ConnectError):
    """TLS was asked for (or AUTH needs it) but cannot happen. fluxmail never falls back
    to plaintext."""

    code = "tls_required"
    transient = False


class TLSVerifyError(ConnectError):
    """The server's certificate or hostname did not verify."""

    code = "tls_verify_failed"
    transient = False


class ProtocolError(ConnectError):
    """The server sent something that is not SMTP (garbage, an oversized reply)."""

    code = "protocol_error"
    transient = False


class AuthenticationError(FluxMailException):
    """The server refused the credentials (or offers no usable AUTH mechanism), or an
    OAuth2 token could not be had.

    Attributes:
        smtp_code: the reply code when the server refused (``535``), else None.
        enhanced_code: the enhanced status code when sent (``"5.7.8"``).
        transient: True for a 4xx reply or a token endpoint that failed or timed out.
    """

    code = "authentication_failed"

    def __init__(
        self,
        message: str,
        *,
        smtp_code: int | None = None,
        enhanced_code: str | None = None,
        code: str | None = None,
        transient: bool | None = None,
        batch_result: Any = None,
    ) -> None:
        if transient is None:  # a 4xx reply to AUTH: try again later
            transient = smtp_code is not None and 400 <= smtp_code < 500
        super().__init__(message, code=code, transient=transient, batch_result=batch_result)
        self.smtp_code = smtp_code
        self.enhanced_code = enhanced_code


class OutcomeUnknownError(FluxMailException):
    """The connection was lost after the final '.' of DATA and before the server's reply.

    The server may or may not have accepted the message, so fluxmail does not resend it.
    """

    code = "outcome_unknown"

    def __init__(
        self,
        message: str,
        *,
        message_id: str | None = None,
        code: str | None = None,
        batch_result: Any = None,
    ) -> None:
        super().__init__(message, code=code, batch_result=batch_result)
        self.message_id = message_id


class GraphError(FluxMailException):
    """Microsoft Graph refused a request. ``status`` is the HTTP status, ``graph_code``
    Graph's own error code (``ErrorInvalidRecipients``, ``ErrorAccessDenied``...), also
    named in the text. Not retried: trying the same request again gets the same answer."""

    code = "graph_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        graph_code: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.graph_code = graph_code


class GraphThrottledError(GraphError):
    """Graph answered 429 (throttled) or 503 (unavailable): nothing was sent; try again
    after ``retry_after`` seconds (Graph's Retry-After, when it gave one)."""

    code = "graph_throttled"
    transient = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        graph_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, graph_code=graph_code)
        self.retry_after = retry_after


class SMTPResponseError(FluxMailException):
    """The server answered with an error reply.

    Attributes:
        smtp_code: the reply code (``550``).
        enhanced_code: the enhanced status code when the server sent one (``"5.1.1"``).
        server_message: the server's text, with secrets scrubbed.
        refused: address -> ``(code, text)`` for each refused recipient.
        transient: True for 4xx replies (retried by ``max_retries``), False for 5xx.
    """

    code = "smtp_error"

    def __init__(
        self,
        message: str,
        *,
        smtp_code: int,
        enhanced_code: str | None = None,
        server_message: str = "",
        refused: Mapping[str, tuple[int, str]] | None = None,
        code: str | None = None,
        batch_result: Any = None,
    ) -> None:
        transient = 400 <= smtp_code < 500  # the reply decides, never the caller
        super().__init__(message, code=code, transient=transient, batch_result=batch_result)
        self.smtp_code = smtp_code
        self.enhanced_code = enhanced_code
        self.server_message = server_message
        self.refused: dict[str, tuple[int, str]] = dict(refused or {})


class ServerReply(Exception):
    """The server's reply that ended a try, kept as the ``__cause__`` of the
    :class:`SMTPResponseError` (or :class:`AuthenticationError`) raised for it, as an
    ``OSError`` is for a connection failure. Not raised on its own."""

    def __init__(self, smtp_code: int, enhanced_code: str | None, text: str) -> None:
        super().__init__(f"{smtp_code} {text}".strip())
        self.smtp_code = smtp_code
        self.enhanced_code = enhanced_code
        self.text = text

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.smtp_code, self.enhanced_code, self.text)


class SenderRefusedError(SMTPResponseError):
    """The server refused MAIL FROM (``.smtp_code``, ``.server_message``)."""

    code = "sender_refused"


class RecipientsRefusedError(SMTPResponseError):
    """Every recipient was refused; ``.refused`` maps each address to (code, text)."""

    code = "recipients_refused"


class MessageRefusedError(SMTPResponseError):
    """The server refused the message at DATA or at the final '.'."""

    code = "message_refused"


class MessageTooLargeError(SMTPResponseError):
    """Larger than the server's advertised SIZE (checked before MAIL FROM), or a 552."""

    code = "message_too_large"


class SMTPUTF8UnsupportedError(SMTPResponseError):
    """An address needs SMTPUTF8 (non-ASCII local part) and the server does not offer it."""

    code = "smtputf8_unsupported"
