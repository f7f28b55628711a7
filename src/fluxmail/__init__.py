"""fluxmail: send email from Python and the command line.

The names most programs need are here: `FluxMail` (create, send, preview), `BulkSender`,
`EmailTemplate`, `DKIM`, `EmailInstance` / `EmailObject`, the message types `Message`,
`Address`, `Attachment`, `Composed` / `Envelope`, `SendReceipt`, and every exception
(`FluxMailException` and its subclasses, each with a stable `.code`). `BulkSender`,
`BulkResult`, `DKIM` and `EmailTemplate` are imported on first use, to keep
`import fluxmail` fast.

Example:
    ```python
    from fluxmail import FluxMail

    mailer = FluxMail(object_type="smtp", host="127.0.0.1", port=1025, sender="me@example.com")
    mailer.create(subject="Hello", recipients=["friend@example.com"], body="Hi!").send()
    # a provider: FluxMail(host="smtp.example.com", port=587, use_tls=True,
    #                      username="me@example.com", password=os.environ["SMTP_PASSWORD"])
    ```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import EmailInstance, EmailObject
from .envelope import Composed, Envelope
from .errors import (
    AttachmentNotFoundError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    FluxMailException,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidMessageError,
    MessageRefusedError,
    MessageTooLargeError,
    MissingDependencyError,
    NoMessageError,
    OutcomeUnknownError,
    OutlookUnavailableError,
    ProtocolError,
    RecipientsRefusedError,
    SenderRefusedError,
    SendTimeoutError,
    SMTPResponseError,
    SMTPUTF8UnsupportedError,
    TemplateError,
    TLSRequiredError,
    TLSVerifyError,
    UnsupportedOperationError,
)
from .mailer import FluxMail, SendReceipt
from .message import Address, Attachment, Invite, Message

__version__ = "0.1.0"

# Imported on first use, to keep `import fluxmail` fast (the engine pulls in asyncio/ssl).
_LAZY = {
    "BulkSender": ".bulk",
    "BulkResult": ".bulk",
    "DKIM": ".dkim",
    "EmailTemplate": ".templates",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fluxmail' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .bulk import BulkResult, BulkSender
    from .dkim import DKIM
    from .templates import EmailTemplate

__all__ = [
    "DKIM",
    "Address",
    "Attachment",
    "AttachmentNotFoundError",
    "AuthenticationError",
    "BulkResult",
    "BulkSender",
    "Composed",
    "ConfigurationError",
    "ConnectError",
    "EmailInstance",
    "EmailObject",
    "EmailTemplate",
    "Envelope",
    "FluxMail",
    "FluxMailException",
    "HeaderInjectionError",
    "InvalidAddressError",
    "InvalidMessageError",
    "Invite",
    "Message",
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
    "SendReceipt",
    "SendTimeoutError",
    "SenderRefusedError",
    "TLSRequiredError",
    "TLSVerifyError",
    "TemplateError",
    "UnsupportedOperationError",
    "__version__",
]
