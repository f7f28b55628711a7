"""The usual mistakes, recognised, with what to do about them: one table, two wordings.

Each hint has the advice in API words (``use_ssl=True``), appended to the exception's
message, and in CLI words (``--ssl``), which the ``fluxmail`` command prints instead. The
recognisers are pure (a stage, a reply, a port, an error), so the SMTP engine can call
them at the one place it translates failures; this module imports nothing from fluxmail,
which is why ``smtp/`` may use it (see DESIGN.md's import rule).

docs/troubleshooting.md lists every hint with the situation that triggers it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from typing import TypeVar

from ..errors import FluxMailException

E = TypeVar("E", bound=FluxMailException)

#: How long a client on port 465 without implicit TLS waits for a greeting. A TLS server
#: sends nothing until it gets a ClientHello, so the full timeout (30 s by default) would
#: only delay the hint; a plaintext server on 465 greets at once.
IMPLICIT_TLS_PORT = 465
GREETING_WAIT_ON_465 = 3.0
_STARTTLS_PORTS = frozenset({25, 587, 2525, 1025})


@dataclass(frozen=True)
class Hint:
    key: str
    api: str
    cli: str


# key -> (API wording, CLI wording). {placeholders} are filled by the recogniser.
HINTS: dict[str, tuple[str, str]] = {
    "implicit_tls_port": (
        "port 465 speaks implicit TLS, which sends nothing until the client starts TLS: "
        "use use_ssl=True (not use_tls=True) for port 465, or port=587 with use_tls=True",
        "port 465 speaks implicit TLS, which sends nothing until the client starts TLS: "
        "use --ssl (not --tls) with --port 465, or --port 587 with --tls",
    ),
    "starttls_port": (
        "the server answered in plaintext, so port {port} is not an implicit-TLS port: use "
        "use_tls=True (STARTTLS) instead of use_ssl=True here, or port=465 with use_ssl=True",
        "the server answered in plaintext, so port {port} is not an implicit-TLS port: use "
        "--tls (STARTTLS) instead of --ssl here, or --port 465 with --ssl",
    ),
    "host_with_port": (
        "give the port separately: host={host!r}, port={port}",
        "give the port separately: --host {host} --port {port}",
    ),
    "host_is_url": (
        "host is a hostname, not a URL: host={host!r} (and port=, use_tls=/use_ssl= for the rest)",
        "--host takes a hostname, not a URL: --host {host} (and --port, --tls/--ssl for the rest)",
    ),
    "auth_required": (
        "the server wants a login before it accepts mail: pass username= and password= "
        "(or oauth2=)",
        "the server wants a login before it accepts mail: pass --username and set "
        "FLUXMAIL_PASSWORD (or --password)",
    ),
    "starttls_first": (
        "the server wants STARTTLS before it accepts mail: pass use_tls=True",
        "the server wants STARTTLS before it accepts mail: pass --tls",
    ),
    "microsoft_basic_auth": (
        "Microsoft 365 has turned off password (basic) authentication for this mailbox or "
        "tenant: sign in with OAuth2, oauth2=MicrosoftOAuth2(...) (see the guide's OAuth2 "
        "section)",
        "Microsoft 365 has turned off password (basic) authentication for this mailbox or "
        "tenant: sign in with OAuth2, FLUXMAIL_OAUTH2_PROVIDER=microsoft and its "
        "FLUXMAIL_OAUTH2_* variables (see docs/cli.md)",
    ),
    "gmail_app_password": (
        "Gmail does not take the account password here: use an app password (Google "
        "account > Security > App passwords, needs 2-Step Verification) or OAuth2, "
        "oauth2=GoogleOAuth2(...)",
        "Gmail does not take the account password here: use an app password (Google "
        "account > Security > App passwords, needs 2-Step Verification) or OAuth2, "
        "FLUXMAIL_OAUTH2_PROVIDER=google and its FLUXMAIL_OAUTH2_* variables",
    ),
    "starttls_not_offered": (
        "use_tls=True asks for STARTTLS; for a server that speaks implicit TLS (usually "
        "port 465) use use_ssl=True",
        "--tls asks for STARTTLS; for a server that speaks implicit TLS (usually port "
        "465) use --ssl",
    ),
    "insecure_auth": (
        "set use_tls=True (STARTTLS, port 587) or use_ssl=True (implicit TLS, port 465) "
        "(allow_insecure_auth=True only for a trusted local relay)",
        "use --tls (STARTTLS, port 587) or --ssl (implicit TLS, port 465) "
        "(--allow-insecure-auth only for a trusted local relay)",
    ),
    "no_sender": (
        "pass sender= to create() or FluxMail(), or use an email address as username",
        "pass --sender, or use an email address as --username",
    ),
}

#: For messages that carry no hint: API phrases and the flags that say the same, so no CLI
#: line ever names an API argument. Longest first, so that no phrase eats part of another.
API_WORDS: tuple[tuple[str, str], ...] = (
    (
        "password was given without username",
        "a password (--password or FLUXMAIL_PASSWORD) was given without --username",
    ),
    ("oauth2 needs username", "OAuth2 (FLUXMAIL_OAUTH2_PROVIDER) needs --username"),
    (
        "give either password or oauth2, not both",
        "give either a password (--password, FLUXMAIL_PASSWORD) or FLUXMAIL_OAUTH2_PROVIDER, "
        "not both",
    ),
    ("allow_insecure_auth=True", "--allow-insecure-auth"),
    ("object_type='smtp'", "--type smtp"),
    ('object_type="smtp"', "--type smtp"),
    ("remove sender=", "remove --sender"),
    ("use_tls=True", "--tls"),
    ("use_ssl=True", "--ssl"),
    ("max_retries must", "--max-retries must"),
    ("retry_delay must", "--retry-delay must"),
    ("timeout must", "--timeout must"),
    ("port must", "--port must"),
)


def make(key: str, **values: object) -> Hint:
    api, cli = HINTS[key]
    return Hint(key, api.format(**values), cli.format(**values))


def attach(exc: E, hint: Hint | None) -> E:
    """``exc`` with the hint's API wording at the end of its message and the hint kept on
    it (a copy: errors are not changed once built); ``exc`` itself when there is none."""
    return exc if hint is None else exc.with_hint(hint)


def cli_wording(message: str, hint: Hint | None) -> str:
    """``message`` in CLI words: the hint's CLI text in place of its API text, and the
    remaining API phrases as flags."""
    if hint is not None:
        message = message.replace(hint.api, hint.cli)
    for api, flag in API_WORDS:
        message = message.replace(api, flag)
    return message


# --- recognisers (pure) ----------------------------------------------------------------

_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]/]+):(?P<port>\d{1,5})")
_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://(?P<rest>.*)")


def host_hint(host: str, *, port: int | None = None) -> Hint | None:
    """``smtp.example.com:2525`` or ``smtp://smtp.example.com``: a host that is not one."""
    url = _URL.fullmatch(host)
    if url:
        bare = url.group("rest").split("/", 1)[0].split("@")[-1]
        named = _HOST_PORT.fullmatch(bare)
        return make("host_is_url", host=named.group("host") if named else bare)
    found = _HOST_PORT.fullmatch(host)
    if found:
        return make("host_with_port", host=found.group("host"), port=found.group("port"))
    return None


def reply_hint(stage: str, code: int, enhanced: str | None, text: str) -> Hint | None:
    """A hint for a server reply at ``stage`` (see ``smtp._errors.STAGES``), if known."""
    lowered = text.lower()
    if enhanced in ("5.7.139", "5.7.30") or "basic authentication is disabled" in lowered:
        return make("microsoft_basic_auth")
    if enhanced == "5.7.9" or (code == 534 and "application-specific password" in lowered):
        return make("gmail_app_password")
    if code == 530 and stage in ("mail", "rcpt", "data"):
        if "starttls" in lowered:
            return make("starttls_first")
        return make("auth_required")
    return None


def greeting_wait(port: int, use_ssl: bool, timeout: float) -> float:
    """How long to wait for the greeting: short on 465 without implicit TLS (see above)."""
    if port == IMPLICIT_TLS_PORT and not use_ssl:
        return min(timeout, GREETING_WAIT_ON_465)
    return timeout


def io_hint(stage: str, exc: BaseException, *, port: int, use_ssl: bool) -> Hint | None:
    """A hint for a low-level failure ``exc`` at ``stage``, if it looks like a TLS mode
    that does not match the port."""
    timed_out = isinstance(exc, (TimeoutError, asyncio.TimeoutError))
    if stage == "greeting" and timed_out and port == IMPLICIT_TLS_PORT and not use_ssl:
        return make("implicit_tls_port")
    verify = isinstance(exc, ssl.SSLCertVerificationError)
    if stage == "tls" and use_ssl and isinstance(exc, ssl.SSLError) and not verify:
        reason = str(exc).lower()
        plaintext = any(
            sign in reason for sign in ("wrong_version_number", "wrong version number")
        )
        if plaintext or (port in _STARTTLS_PORTS and not isinstance(exc, ssl.SSLEOFError)):
            return make("starttls_port", port=port)
    return None
