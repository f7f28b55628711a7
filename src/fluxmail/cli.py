"""The ``fluxmail`` command: one command sends one email (see docs/cli.md).

Errors end in one line on stderr and a non-zero status, never a traceback: 2 for bad
usage or bad input, 1 for a delivery failure. The password is never printed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import (
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
    """``HOST`` or ``HOST:DOMAIN`` (an EmailInstance); ``[v6]`` literals are left whole."""
    if not value or value.startswith("[") or ":" not in value:
        return value
    from .config import EmailInstance

    relay, domain = value.split(":", 1)
    return EmailInstance(relay, domain or None)


def _read_body(body: str | None, body_file: str | None) -> str:
    if (body is None) == (body_file is None):
        raise UsageProblem("give exactly one of --body or --body-file")
    if body is not None:
        return body
    assert body_file is not None
    try:
        return Path(body_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageProblem(f"--body-file: no such file: {body_file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"--body-file: cannot read {body_file}: {exc}") from None


def _send(options: dict[str, Any]) -> str:
    from ._facade import FluxMail

    kind = options["type"]
    if kind is None:
        raise UsageProblem("--type is required (smtp, outlook or graph)")
    if options["tls"] and options["ssl"]:
        raise UsageProblem("--tls and --ssl cannot be used together")
    if kind == "smtp" and not options["host"]:
        raise UsageProblem("--host is required for --type smtp (or set FLUXMAIL_HOST)")
    for name in ("subject", "recipients"):
        if not options[name]:
            raise UsageProblem(f"--{name} is required")
    body = _read_body(options["body"], options["body_file"])
    extra: dict[str, Any] = {}
    if os.environ.get("FLUXMAIL_OAUTH2_PROVIDER", "").strip():
        from .oauth import provider_from_env

        extra["oauth2"] = provider_from_env(os.environ, graph=kind == "graph")
    if kind == "graph":
        extra["graph_url"] = options["graph_url"]  # None: Graph's public endpoint
    mailer = FluxMail(
        **extra,
        object_type=kind,
        host=_split_host(options["host"]),
        port=options["port"],
        use_tls=options["tls"],
        use_ssl=options["ssl"],
        username=options["username"],
        password=options["password"],
        timeout=options["timeout"],
        max_retries=options["max_retries"],
        retry_delay=options["retry_delay"],
    )
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


_ENV = "FLUXMAIL_"


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="fluxmail")
@click.option(
    "--type",
    "type",
    type=click.Choice(["smtp", "outlook", "graph"]),
    envvar=_ENV + "TYPE",
    help="Transport.",
)
@click.option("--host", envvar=_ENV + "HOST", help="Relay host, or HOST:DOMAIN.")
@click.option(
    "--graph-url", envvar=_ENV + "GRAPH_URL", help="--type graph: the Graph API root URL."
)
@click.option("--port", type=int, default=25, envvar=_ENV + "PORT", show_default=True)
@click.option("--tls/--no-tls", default=False, envvar=_ENV + "TLS", help="STARTTLS.")
@click.option(
    "--ssl/--no-ssl", default=False, envvar=_ENV + "SSL", help="Implicit TLS (port 465)."
)
@click.option(
    "--username",
    envvar=_ENV + "USERNAME",
    help="Default $FLUXMAIL_USERNAME; an address doubles as the sender.",
)
@click.option(
    "--password",
    envvar=_ENV + "PASSWORD",
    show_default=False,
    help="Default $FLUXMAIL_PASSWORD (prefer the variable).",
)
@click.option("--subject")
@click.option("--recipients", multiple=True, help="Repeat for several.")
@click.option("--cc", multiple=True)
@click.option("--bcc", multiple=True)
@click.option("--reply-to")
@click.option("--sender", envvar=_ENV + "SENDER", help="From address.")
@click.option("--body")
@click.option("--body-file", type=str)
@click.option("--html/--no-html", default=False, help="The body is HTML.")
@click.option("--attachments", multiple=True, help="Repeat for several.")
@click.option("--dry-run", is_flag=True, help="Print the message, send nothing.")
@click.option("--timeout", type=float, default=30.0, envvar=_ENV + "TIMEOUT", show_default=True)
@click.option("--max-retries", type=int, default=0, envvar=_ENV + "MAX_RETRIES", show_default=True)
@click.option(
    "--retry-delay", type=float, default=1.0, envvar=_ENV + "RETRY_DELAY", show_default=True
)
@click.pass_context
def cli(ctx: click.Context, /, **options: Any) -> None:
    """Send one email.

    \b
    fluxmail --type smtp --host smtp.example.com --port 587 --tls \\
      --subject "Hello" --recipients friend@example.com --body "Hi from the CLI!"

    Try it with no server at all: fluxmail demo
    """
    if ctx.invoked_subcommand is None:
        _send(options)


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
    help="0: any free port.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Also save each message as an .eml file in this directory.",
)
def serve(host: str, port: int, directory: str | None) -> None:
    """Run a local SMTP server that catches mail (development): one line per message.

    Nothing is relayed. Ctrl-C stops it. Needs pip install "fluxmail[server]".
    """
    from ._serve import run_server

    run_server(host=host, port=port, directory=directory, echo=click.echo)


def _fail(message: str, status: int) -> int:
    click.echo(f"fluxmail: error: {message}", err=True)
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
        return _fail(f"{_one_line(exc)} [{exc.code}]", status)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
