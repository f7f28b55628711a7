"""The engine's options: :class:`SmtpConfig`, everything needed to open an SMTP session.

It lives in the engine package so the engine depends on nothing above it; ``fluxmail.config``
re-exports it for the rest of the library.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from ..envelope import ascii_domain
from ..errors import ConfigurationError, HeaderInjectionError
from ._checks import smtp_options
from ._hints import attach, host_hint
from ._tokens import TokenSource, check_oauth2

UNSAFE_CHARS = ("\r", "\n", "\0")
#: A day. Larger values (or infinity) overflow the socket layer's deadlines and surface
#: as a bare OverflowError deep in a send; no SMTP stage should wait that long anyway.
MAX_TIMEOUT = 86400.0
_TLS_SLOT = "_default_tls_context"
_TLS_LOCK = threading.Lock()


@dataclass(frozen=True)
class SmtpConfig:
    """Everything the SMTP engine needs to open a session.

    ``FluxMail`` builds one from its arguments (``mailer.config``); the Django backend
    and the Celery courier build theirs. Checked on construction; the password and the
    OAuth2 token provider never show in ``repr``.

    Args:
        host: the relay's hostname (never ``host:port`` or a URL).
        port: the TCP port.
        use_tls: require STARTTLS (refuse to go on without it).
        use_ssl: implicit TLS from the first byte (port 465); not with ``use_tls``.
        username: the AUTH user.
        password: the AUTH password.
        timeout: seconds per stage, at most ``MAX_TIMEOUT``.
        local_hostname: the EHLO name (default: the machine's name).
        ssl_context: a context of your own instead of the verifying default.
        allow_insecure_auth: allow AUTH without TLS.
        oauth2: the XOAUTH2 token source (a provider or a callable).

    Raises:
        ConfigurationError: ``invalid_option``: a wrong type, both TLS modes, a host
            that looks like ``host:port``, a port out of range, a bad timeout.
        HeaderInjectionError: ``header_injection``: whitespace, CR, LF or NUL in a name.

    Example:
        ```python
        config = SmtpConfig(host="smtp.example.com", port=587, use_tls=True,
                            username="app", password="example-password")
        assert "example-password" not in repr(config)
        ```
    """

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
        smtp_options(self)  # types first: "false" must not pass for a boolean
        if self.use_tls and self.use_ssl:
            raise ConfigurationError(
                "use_tls (STARTTLS) and use_ssl (implicit TLS) cannot both be True; "
                "use use_ssl=True for port 465, use_tls=True for port 587"
            )
        if not isinstance(self.host, str) or not self.host.strip():
            raise ConfigurationError("host is required for SMTP (a hostname or EmailInstance)")
        if any(ch in self.host for ch in UNSAFE_CHARS) or any(c.isspace() for c in self.host):
            raise HeaderInjectionError("host contains whitespace, CR, LF or NUL")
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
            check_oauth2(self.oauth2, username=self.username, password=self.password)
        for name in ("username", "password", "local_hostname"):
            value = getattr(self, name)
            if value is not None and any(ch in value for ch in UNSAFE_CHARS):
                raise HeaderInjectionError(f"{name} contains CR, LF or NUL")
        if self.local_hostname is not None and (
            not self.local_hostname or any(c.isspace() for c in self.local_hostname)
        ):
            raise ConfigurationError("local_hostname must be a non-empty name without spaces")
        if self.local_hostname is not None:
            ascii_host_name(self.local_hostname)  # an invalid IDN fails here, not at EHLO

    @property
    def ehlo_name(self) -> str:
        return ascii_host_name(self.local_hostname) if self.local_hostname else default_ehlo_name()

    @property
    def wants_auth(self) -> bool:
        return bool(self.username) and (self.password is not None or self.oauth2 is not None)

    def default_tls_context(self) -> ssl.SSLContext:
        """A verifying context with TLS >= 1.2, built on first use and kept by this object.

        Building one reads the CA store (``SSL_CERT_FILE``, ``SSL_CERT_DIR`` or the system's),
        which takes milliseconds: once per options object, not per connection. It is not
        kept per process, so options built after the CA store changed see the change.
        """
        with _TLS_LOCK:
            context: ssl.SSLContext | None = self.__dict__.get(_TLS_SLOT)
            if context is None:
                context = ssl.create_default_context()
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                object.__setattr__(self, _TLS_SLOT, context)  # a cache, not a setting
            return context

    def __getstate__(self) -> dict[str, Any]:
        # The cached context cannot be pickled or copied; a copy builds its own.
        return {k: v for k, v in self.__dict__.items() if k != _TLS_SLOT}


def ascii_host_name(name: str) -> str:
    """``name`` as EHLO sends it: an ASCII name as it is (it may be an address literal or
    hold an underscore), an internationalised one in its UTS-46 / punycode form: the same
    encoding as the domains of addresses and Message-IDs
    (:func:`fluxmail.envelope.ascii_domain`)."""
    try:
        return ascii_domain(name)
    except ValueError:
        raise ConfigurationError(
            "local_hostname is not a valid host name (an international name must be a valid "
            "IDNA name)"
        ) from None


def default_ehlo_name() -> str:
    """The machine's name if it looks like a FQDN, else ``localhost``.

    ``socket.getfqdn()`` can block on DNS for seconds, so it is not used.
    """
    import socket

    name = socket.gethostname()
    if "." in name and name.isascii() and not any(c.isspace() for c in name):
        return name
    return "localhost"
