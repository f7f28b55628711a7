"""Configuration values: EmailObject and EmailInstance.

``SmtpConfig`` moved into the engine (:mod:`fluxmail.smtp._options`) and is re-exported
here until every import points there; the FLUXMAIL_* parser is :mod:`fluxmail._env`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import ConfigurationError, HeaderInjectionError
from .smtp._options import MAX_TIMEOUT, SmtpConfig, default_ehlo_name
from .smtp._options import UNSAFE_CHARS as _UNSAFE_CHARS

__all__ = [
    "MAX_TIMEOUT",
    "EmailInstance",
    "EmailObject",
    "SmtpConfig",
    "default_ehlo_name",
]


class EmailObject(str, enum.Enum):
    """Which transport a FluxMail uses. A string enum: ``EmailObject("smtp")`` works.

    ``CONSOLE`` and ``FILE`` are development transports: they print the message, or write
    it to a directory (``host=``), instead of sending it (see ``fluxmail.transports.dev``).
    ``GRAPH`` sends through the Microsoft Graph API (see docs/graph.md).
    """

    SMTP = "smtp"
    OUTLOOK = "outlook"
    CONSOLE = "console"
    FILE = "file"
    GRAPH = "graph"

    @classmethod
    def parse(cls, value: object) -> EmailObject:
        """``value`` as an EmailObject: a member, or its name in any case and spacing.

        Raises:
            ConfigurationError: ``invalid_option``: not a transport fluxmail has.

        Example:
            ```python
            assert EmailObject.parse(" SMTP ") is EmailObject.SMTP
            ```
        """
        if isinstance(value, EmailObject):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ConfigurationError(
            "object_type must be 'smtp' or 'outlook' ('graph' for Microsoft Graph, 'console' "
            "or 'file' for development), "
            f"or an EmailObject, got {value!r}"
        )


@dataclass(frozen=True, slots=True)
class EmailInstance:
    """A named relay, given to ``FluxMail(host=...)``.

    ``domain`` names the domain used for Message-IDs and the EHLO name; it never invents
    a sender address.

    Args:
        relay: the relay's hostname (no port: use ``FluxMail(port=...)``); for
            ``object_type="file"``, the directory of the ``.eml`` files.
        domain: the domain of Message-IDs (``<...@domain>``) and the EHLO name.

    Raises:
        ConfigurationError: ``invalid_option``: ``relay`` or ``domain`` is not a string.
        HeaderInjectionError: ``header_injection``: CR, LF or NUL in either.

    Example:
        ```python
        mailer = FluxMail(host=EmailInstance("127.0.0.1", "example.com"), port=1025,
                          sender="app@example.com")
        message = mailer.build_message(subject="s", recipients="a@b.org", body=".")
        composed = mailer.compose(message)
        assert composed.message_id.endswith("@example.com>")
        assert mailer.host == EmailInstance("127.0.0.1", "example.com")
        ```
    """

    relay: str
    domain: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.relay, str):
            raise ConfigurationError("EmailInstance.relay must be a string")
        if self.domain is not None and not isinstance(self.domain, str):
            raise ConfigurationError("EmailInstance.domain must be a string or None")
        for name, value in (("relay", self.relay), ("domain", self.domain or "")):
            if any(ch in value for ch in _UNSAFE_CHARS):
                raise HeaderInjectionError(f"EmailInstance.{name} contains CR, LF or NUL")
