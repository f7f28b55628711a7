"""Configuration values: EmailObject, EmailInstance, SmtpConfig and FLUXMAIL_* parsing."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ConfigurationError, HeaderInjectionError

if TYPE_CHECKING:
    import ssl

    from ._tokens import TokenSource

_UNSAFE_CHARS = ("\r", "\n", "\0")
#: A day. Larger values (or infinity) overflow the socket layer's deadlines and surface
#: as a bare OverflowError deep in a send; no SMTP stage should wait that long anyway.
MAX_TIMEOUT = 86400.0


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
    """A named relay. ``domain`` names the domain used for Message-IDs and the EHLO name;
    it never invents a sender address."""

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


@dataclass(frozen=True)
class SmtpConfig:
    """Everything the SMTP engine needs to open a session. The password and the OAuth2
    token provider never show in ``repr``."""

    host: str
    port: int = 25
    use_tls: bool = False
    use_ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    local_hostname: str | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    allow_insecure_auth: bool = False
    oauth2: TokenSource | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.use_tls and self.use_ssl:
            raise ConfigurationError(
                "use_tls (STARTTLS) and use_ssl (implicit TLS) cannot both be True; "
                "use use_ssl=True for port 465, use_tls=True for port 587"
            )
        if not isinstance(self.host, str) or not self.host.strip():
            raise ConfigurationError("host is required for SMTP (a hostname or EmailInstance)")
        if any(ch in self.host for ch in _UNSAFE_CHARS) or any(c.isspace() for c in self.host):
            raise HeaderInjectionError("host contains whitespace, CR, LF or NUL")
        from ._hints import attach, host_hint

        mistake = host_hint(self.host)
        if mistake is not None:  # "smtp.example.com:2525" would be looked up as a name
            raise attach(ConfigurationError(f"host {self.host!r} is not a hostname"), mistake)
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigurationError(f"port must be an integer, got {self.port!r}")
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"port must be between 1 and 65535, got {self.port}")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)):
            raise ConfigurationError(f"timeout must be a number of seconds, got {self.timeout!r}")
        if not 0 < self.timeout <= MAX_TIMEOUT:  # also refuses NaN and infinity
            raise ConfigurationError(
                f"timeout must be a positive number of seconds up to {MAX_TIMEOUT:g}, "
                f"got {self.timeout!r}"
            )
        if self.password is not None and not self.username:
            raise ConfigurationError("password was given without username")
        if self.oauth2 is not None:
            from ._tokens import check_oauth2

            check_oauth2(self)
        for name in ("username", "password", "local_hostname"):
            value = getattr(self, name)
            if value is not None and any(ch in value for ch in _UNSAFE_CHARS):
                raise HeaderInjectionError(f"{name} contains CR, LF or NUL")
        if self.local_hostname is not None and (
            not self.local_hostname or any(c.isspace() for c in self.local_hostname)
        ):
            raise ConfigurationError("local_hostname must be a non-empty name without spaces")

    @property
    def ehlo_name(self) -> str:
        return self.local_hostname or default_ehlo_name()

    @property
    def wants_auth(self) -> bool:
        return bool(self.username) and (self.password is not None or self.oauth2 is not None)


def default_ehlo_name() -> str:
    """The machine's name if it looks like a FQDN, else ``localhost``.

    ``socket.getfqdn()`` can block on DNS for seconds, so it is not used.
    """
    import socket

    name = socket.gethostname()
    if "." in name and name.isascii() and not any(c.isspace() for c in name):
        return name
    return "localhost"


# --- FLUXMAIL_* environment variables -------------------------------------------------

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true/false (also 1/0, yes/no, on/off)")


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number") from None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds") from None


def env_str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is not None and any(ch in raw for ch in _UNSAFE_CHARS):
        # A host, an address or a domain: CR, LF and NUL are refused, never stripped.
        raise HeaderInjectionError(f"{name} contains CR, LF or NUL")
    if raw is None or not raw.strip():
        return None
    return raw.strip()
