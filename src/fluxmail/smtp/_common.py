"""What both drivers share besides the pure protocol: TLS contexts and the transcript."""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from ._actions import Exchange
from ._hints import greeting_wait
from ._options import SmtpConfig
from ._redact import Secrets
from ._replies import Reply

if TYPE_CHECKING:
    from ._protocol import Session

log = logging.getLogger("fluxmail.smtp")

READ_SIZE = 65536
WRITE_CHUNK = 1 << 20  # large payloads are written in slices, each with its own timeout
QUIT_TIMEOUT = 1.0  # close() waits at most this long for the reply to QUIT


def exchange_timeout(config: SmtpConfig, exchange: Exchange) -> float:
    """The wait for ``exchange``'s replies: the configured timeout, shorter only for the
    greeting on port 465 without implicit TLS (a TLS server would never send one)."""
    if exchange.stage == "greeting":
        return greeting_wait(config.port, config.use_ssl, config.timeout)
    return config.timeout


def tls_context(config: SmtpConfig) -> ssl.SSLContext:
    """The user's context, or the options' verifying default one (TLS >= 1.2), which each
    options object builds once (see :meth:`SmtpConfig.default_tls_context`)."""
    if config.ssl_context is not None:
        if config.ssl_context.verify_mode == ssl.CERT_NONE:
            log.warning(
                "ssl_context does not verify certificates (CERT_NONE): the connection to "
                "%s is encrypted but not authenticated",
                config.host,
            )
        elif not config.ssl_context.check_hostname:
            log.warning(
                "ssl_context does not check host names (check_hostname=False): any "
                "certificate of a trusted CA is accepted for %s",
                config.host,
            )
        return config.ssl_context
    return config.default_tls_context()


def tls_details(obj: ssl.SSLObject | ssl.SSLSocket | None) -> tuple[str, str] | None:
    if obj is None:
        return None
    cipher = obj.cipher()
    return (obj.version() or "", cipher[0] if cipher else "")


def log_exchange(exchange: Exchange) -> None:
    if not exchange.data or not log.isEnabledFor(logging.DEBUG):
        return
    text = exchange.log if exchange.log is not None else exchange.data.decode("utf-8", "replace")
    if exchange.ahead:  # the next message's envelope, written behind the final dot
        text += "\n" + exchange.tail.split(b".\r\n", 1)[1].decode("utf-8", "replace")
    for line in text.splitlines():
        log.debug("C: %s", line)


def log_replies(replies: list[Reply], session: Session | None, stage: str) -> None:
    """Log the replies, with every form of the credentials redacted (see ``_redact``)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    secrets = session.credentials.secrets if session is not None else Secrets()
    for reply in secrets.replies(replies):
        last = len(reply.lines) - 1
        for i, line in enumerate(reply.lines):
            log.debug("S: %d%s%s", reply.code, " " if i == last else "-", line)
