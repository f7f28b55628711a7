"""The ``fluxmail`` command: one command sends one email (see docs/cli.md).

Errors end in one line on stderr and a non-zero status, never a traceback: 2 for bad
usage or bad input, 1 for a delivery failure. The password is never printed.

Every line speaks in flags. An error raised by the library carries its advice in API words
(``use_ssl=True``); :func:`fluxmail.smtp._hints.cli_wording` swaps in the same advice in flags
(``--ssl``), from the one table of hints in ``smtp/_hints.py``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import click

from .. import __version__
from ..errors import (
    ConfigurationError,
    FluxMailException,
    InvalidMessageError,
    MissingDependencyError,
    TemplateError,
    UnsupportedOperationError,
)

USAGE_EXIT = 2
DELIVERY_EXIT = 1
_INPUT_ERRORS = (
    ConfigurationError,
    InvalidMessageError,
    MissingDependencyError,
    TemplateError,
    UnsupportedOperationError,
)


class UsageProblem(Exception):
    """A bad combination of flags, reported like a click usage error."""


def _split_host(value: str | None) -> Any:
    """``HOST`` or ``HOST:DOMAIN`` (an EmailInstance); ``[v6]`` literals are left whole.
    ``HOST:2525`` or a URL is refused: it is a port (or a scheme) in the wrong place, and
    would otherwise be taken for a domain."""
    from ..smtp._hints import host_hint

    mistake = host_hint(value or "")
    if mistake is not None:
        raise UsageProblem(f"--host {value!r} is not a hostname: {mistake.cli}")
    if not value or value.startswith("[") or ":" not in value:
        return value
    from ..config import EmailInstance

    relay, domain = value.split(":", 1)
    return EmailInstance(relay, domain or None)


def _read_body(body: str | None, body_file: str | None) -> str:
    if (body is None) == (body_file is None):
        raise UsageProblem("give exactly one of --body or --body-file")
    if body is not None:
        return body
    assert body_file is not None
    if body_file == "-":  # the usual Unix convention: the body comes from stdin
        try:
            return sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageProblem(f"--body-file -: stdin is not UTF-8: {exc}") from None
    try:
        return Path(body_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageProblem(f"--body-file: no such file: {body_file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"--body-file: cannot read {body_file}: {exc}") from None


#: Flags that are FluxMail arguments: (flag name, FluxMail keyword).
_MAILER_FLAGS = (
    ("type", "object_type"),
    ("host", "host"),
    ("port", "port"),
    ("tls", "use_tls"),
    ("ssl", "use_ssl"),
    ("username", "username"),
    ("password", "password"),
    ("timeout", "timeout"),
    ("max_retries", "max_retries"),
    ("retry_delay", "retry_delay"),
    ("allow_insecure_auth", "allow_insecure_auth"),
    ("graph_url", "graph_url"),
)


def _mailer_settings(options: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """The FLUXMAIL_* variables (read by the same parser as ``FluxMail.from_env()``),
    overridden by the flags given on the command line."""
    from .._env import settings_from_env

    settings = settings_from_env(os.environ)
    for flag, keyword in _MAILER_FLAGS:
        if flag in given:
            value = options[flag]
            settings[keyword] = _split_host(value) if flag == "host" else value
    return settings


def _send(options: dict[str, Any], given: set[str]) -> str:
    from ..mailer._facade import FluxMail

    if options["tls"] and options["ssl"]:  # both flags given (their defaults are False)
        raise UsageProblem("--tls and --ssl cannot be used together")
    settings = _mailer_settings(options, given)
    kind = settings.get("object_type")
    if kind is None:
        raise UsageProblem("--type is required (smtp, outlook or graph)")
    if kind == "smtp" and not settings.get("host"):
        raise UsageProblem("--host is required for --type smtp (or set FLUXMAIL_HOST)")
    for name in ("subject", "recipients"):
        if not options[name]:
            raise UsageProblem(f"--{name} is required")
    body = _read_body(options["body"], options["body_file"])
    mailer = FluxMail(**settings)
    mailer.create(
        subject=options["subject"],
        recipients=list(options["recipients"]),
        body=body,
        sender=options["sender"],
        cc=list(options["cc"]) or None,
        bcc=list(options["bcc"]) or None,
        reply_to=options["reply_to"],
        attachments=list(options["attachments"]) or None,
        html_body=options["html"],
    )
    if options["dry_run"]:
        return mailer.send(dry_run=True)
    if kind == "outlook":
        mailer.display()
        return ""
    result = mailer.send()
    click.echo(result)
    return result


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="fluxmail")
@click.option(
    "--type",
    "type",
    type=click.Choice(["smtp", "outlook", "graph"]),
    help="Transport.",
)
@click.option("--host", help="Relay host, or HOST:DOMAIN.")
@click.option("--graph-url", help="--type graph: the Graph API root URL.")
@click.option("--port", type=int, default=25, show_default=True)
@click.option("--tls/--no-tls", default=False, help="STARTTLS.")
@click.option("--ssl/--no-ssl", default=False, help="Implicit TLS (port 465).")
@click.option(
    "--username",
    help="Default $FLUXMAIL_USERNAME; an address doubles as the sender.",
)
@click.option(
    "--password",
    show_default=False,
    help="Default $FLUXMAIL_PASSWORD (prefer the variable).",
)
@click.option("--subject")
@click.option("--recipients", multiple=True, help="Repeat for several.")
@click.option("--cc", multiple=True)
@click.option("--bcc", multiple=True)
@click.option("--reply-to")
@click.option("--sender", help="From address.")
@click.option("--body")
@click.option("--body-file", type=str, help="Read the body from this file; - for stdin.")
@click.option("--html/--no-html", default=False, help="The body is HTML.")
@click.option("--attachments", multiple=True, help="Repeat for several.")
@click.option("--dry-run", is_flag=True, help="Print the message, send nothing.")
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.option("--max-retries", type=int, default=0, show_default=True)
@click.option("--retry-delay", type=float, default=1.0, show_default=True)
@click.option(
    "--allow-insecure-auth",
    is_flag=True,
    help="Send the password without TLS (a trusted local relay only).",
)
@click.option("--debug", is_flag=True, help="Print the SMTP transcript on stderr (AUTH redacted).")
@click.pass_context
def cli(ctx: click.Context, /, **options: Any) -> None:
    """Send one email.

    \b
    fluxmail --type smtp --host smtp.example.com --port 587 --tls \\
      --subject "Hello" --recipients friend@example.com --body "Hi from the CLI!"

    Try it with no server at all: fluxmail demo
    """
    if options.pop("debug"):
        _transcript_on_stderr()
    if ctx.invoked_subcommand is None:
        given = {
            name
            for name in options
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        }
        _send(options, given)


def _transcript_on_stderr() -> None:
    """``--debug``: the engine's DEBUG log (``C: ...`` / ``S: ...``, credentials already
    replaced by ``[redacted]`` where they are logged) goes to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fluxmail: %(message)s"))
    log = logging.getLogger("fluxmail.smtp")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)


@cli.command()
@click.option("--raw", is_flag=True, help="Also print the raw message as received.")
def demo(raw: bool) -> None:
    """Start a local SMTP server and send a rich message through the full stack."""
    from ._demo import run_demo

    run_demo(raw=raw)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=1025,
    show_default=True,
    help="Plain SMTP and STARTTLS. 0: any free port.",
)
@click.option(
    "--ssl-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Implicit TLS.  [default: 1465; any free port with --port 0]",
)
@click.option(
    "--tls/--no-tls",
    default=True,
    show_default=True,
    help="Offer STARTTLS and listen for implicit TLS, with a throwaway CA.",
)
@click.option(
    "--auth",
    "auth",
    metavar="USER:PASSWORD",
    help="Accept only these credentials.  [default: any username and password]",
)
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False),
    help="Where to write the throwaway CA.  [default: ~/.cache/fluxmail/serve]",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Also save each message as an .eml file in this directory.",
)
@click.option("--details", is_flag=True, help="Print each message in full, as fluxmail demo does.")
def serve(
    host: str,
    port: int,
    ssl_port: int | None,
    tls: bool,
    auth: str | None,
    cert_dir: str | None,
    directory: str | None,
    details: bool,
) -> None:
    """Run a local SMTP server that catches mail (development): one line per message.

    It offers STARTTLS and implicit TLS (a throwaway CA, with the export line that makes
    Python trust it) and AUTH, so code written for a real provider runs against it with
    only host and port changed. Nothing is relayed. Ctrl-C stops it. Needs the server
    extra (pip install -e ".[server]" in a clone).
    """
    from ._serve import run_server
    from .localserver import ANY_CREDENTIALS

    credentials: tuple[str, str] | Literal["any"] = ANY_CREDENTIALS
    if auth is not None:
        user, colon, password = auth.partition(":")
        if not colon or not user:
            raise UsageProblem("--auth: give USER:PASSWORD")
        credentials = (user, password)
    run_server(
        host=host,
        port=port,
        ssl_port=ssl_port,
        tls=tls,
        auth=credentials,
        cert_dir=cert_dir,
        directory=directory,
        details=details,
        echo=click.echo,
    )


def _fail(message: str, status: int) -> int:
    from .._terminal import safe_text  # a server's reply may carry terminal escapes

    click.echo(f"fluxmail: error: {safe_text(message)}", err=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 delivery failure, 2 usage)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        return _fail("aborted", 130)
    except click.UsageError as exc:
        return _fail(exc.format_message().splitlines()[0], USAGE_EXIT)
    except UsageProblem as exc:
        return _fail(str(exc), USAGE_EXIT)
    except FluxMailException as exc:
        status = USAGE_EXIT if isinstance(exc, _INPUT_ERRORS) else DELIVERY_EXIT
        return _fail(f"{_in_flags(exc)} [{exc.code}]", status)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _in_flags(exc: FluxMailException) -> str:
    """The error's one line, with its advice in flags, and how often it was tried."""
    from ..smtp._hints import cli_wording

    text = cli_wording(_one_line(exc), exc.hint)
    if exc.attempts > 1:
        text += f" (after {exc.attempts} attempts)"
    return text
