"""The FLUXMAIL_* environment variables: one table, one parser.

``FluxMail.from_env()`` and the ``fluxmail`` command both read the environment through
:func:`settings_from_env`, so a value means the same in both (``FLUXMAIL_TLS=y`` once
worked in the command and failed in ``from_env()``). The result holds the FluxMail
keyword arguments of the variables that are set; unset (or empty) variables are left out,
so the caller's defaults and explicit arguments win.

Booleans accept, in any case and with surrounding spaces, :data:`TRUE_WORDS` and
:data:`FALSE_WORDS`. An error names the variable and never repeats its value: the value
might be a secret pasted into the wrong variable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import EmailInstance, EmailObject
from .errors import ConfigurationError, HeaderInjectionError
from .smtp._options import UNSAFE_CHARS

TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})
_BOOLEANS = "true/false, yes/no, on/off, 1/0, y/n or t/f"


def _refuse_line_breaks(name: str, raw: str) -> None:
    if any(ch in raw for ch in UNSAFE_CHARS):
        # A host, an address, a password: CR, LF and NUL are refused, never stripped.
        raise HeaderInjectionError(f"{name} contains CR, LF or NUL")


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _secret(name: str, raw: str) -> str:
    return raw  # a password is taken as it is: spaces may be part of it


def _boolean(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigurationError(f"{name} must be {_BOOLEANS}")


def _whole(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number") from None


def _seconds(name: str, raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds") from None


def _object_type(name: str, raw: str) -> EmailObject:
    try:
        return EmailObject(raw.strip().lower())
    except ValueError:
        choices = ", ".join(kind.value for kind in EmailObject)
        raise ConfigurationError(f"{name} must be one of {choices}") from None


@dataclass(frozen=True)
class Variable:
    """One variable: the FluxMail argument it sets and how its text becomes a value."""

    name: str
    option: str
    parse: Callable[[str, str], Any]


VARIABLES: tuple[Variable, ...] = (
    Variable("FLUXMAIL_TYPE", "object_type", _object_type),
    Variable("FLUXMAIL_HOST", "host", _text),
    Variable("FLUXMAIL_PORT", "port", _whole),
    Variable("FLUXMAIL_TLS", "use_tls", _boolean),
    Variable("FLUXMAIL_SSL", "use_ssl", _boolean),
    Variable("FLUXMAIL_USERNAME", "username", _text),
    Variable("FLUXMAIL_PASSWORD", "password", _secret),
    Variable("FLUXMAIL_SENDER", "sender", _text),
    Variable("FLUXMAIL_TIMEOUT", "timeout", _seconds),
    Variable("FLUXMAIL_MAX_RETRIES", "max_retries", _whole),
    Variable("FLUXMAIL_RETRY_DELAY", "retry_delay", _seconds),
)
#: Read together with the table: FLUXMAIL_DOMAIN joins FLUXMAIL_HOST into an
#: EmailInstance; the three DKIM variables make one DKIM; FLUXMAIL_OAUTH2_PROVIDER and
#: its companions (see :func:`fluxmail.oauth.provider_from_env`) make the token provider.
DOMAIN = "FLUXMAIL_DOMAIN"
DKIM_VARIABLES = ("FLUXMAIL_DKIM_DOMAIN", "FLUXMAIL_DKIM_SELECTOR", "FLUXMAIL_DKIM_KEY_FILE")
OAUTH2_PROVIDER = "FLUXMAIL_OAUTH2_PROVIDER"
GRAPH_URL = "FLUXMAIL_GRAPH_URL"  # read with FLUXMAIL_TYPE=graph only


def settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The FluxMail keyword arguments that the set FLUXMAIL_* variables in ``env`` give."""
    settings: dict[str, Any] = {}
    for variable in VARIABLES:
        raw = env.get(variable.name)
        if raw is None:
            continue
        _refuse_line_breaks(variable.name, raw)
        if raw.strip():
            settings[variable.option] = variable.parse(variable.name, raw)
    domain = env_str(env, DOMAIN)
    if domain and settings.get("host"):
        settings["host"] = EmailInstance(settings["host"], domain)
    dkim_values = [env_str(env, name) for name in DKIM_VARIABLES]
    if any(dkim_values):
        from .dkim import dkim_from_settings

        domain_, selector, key_file = dkim_values
        settings["dkim"] = dkim_from_settings(domain_, selector, key_file, DKIM_VARIABLES)
    graph = settings.get("object_type") is EmailObject.GRAPH
    if graph and env_str(env, GRAPH_URL):
        settings["graph_url"] = env_str(env, GRAPH_URL)
    if env_str(env, OAUTH2_PROVIDER):
        from .oauth import provider_from_env

        settings["oauth2"] = provider_from_env(env, graph=graph)  # Graph's scope defaults
    return settings


# --- single variables (also used where one value is needed, e.g. the Celery payload) ----


def _single(env: Mapping[str, str], name: str, parse: Callable[[str, str], Any]) -> Any:
    raw = env.get(name)
    if raw is None:
        return None
    _refuse_line_breaks(name, raw)
    return parse(name, raw) if raw.strip() else None


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _single(env, name, _boolean)
    return default if value is None else bool(value)


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _single(env, name, _whole)
    return default if value is None else int(value)


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    value = _single(env, name, _seconds)
    return default if value is None else float(value)


def env_str(env: Mapping[str, str], name: str) -> str | None:
    value = _single(env, name, _text)
    return str(value) if value else None
