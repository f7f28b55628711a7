"""Pure translation tables: a server reply at a stage -> exception; an I/O error -> exception.

Drivers call :func:`io_error` once, at the edge, and chain the original with ``from``.
Messages carry the host, the stage and the server's reply, never credentials.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

from ..errors import (
    AuthenticationError,
    ConnectError,
    FluxMailException,
    MessageRefusedError,
    MessageTooLargeError,
    OutcomeUnknownError,
    ProtocolError,
    RecipientsRefusedError,
    SenderRefusedError,
    SendTimeoutError,
    SMTPResponseError,
    TLSRequiredError,
    TLSVerifyError,
)
from ._hints import attach, greeting_wait, io_hint, reply_hint
from ._replies import Reply

STAGES: Mapping[str, str] = {
    "connect": "while connecting",
    "tls": "during the TLS handshake",
    "greeting": "waiting for the greeting",
    "ehlo": "at EHLO",
    "helo": "at HELO",
    "starttls": "at STARTTLS",
    "auth": "during AUTH",
    "mail": "at MAIL FROM",
    "rcpt": "at RCPT TO",
    "data": "at DATA",
    "body": "while sending the message data",
    "dot": "at the end of DATA",
    "rset": "at RSET",
    "noop": "at NOOP",
    "quit": "at QUIT",
}


class ServerClosedError(ConnectionError):
    """The server closed the connection (EOF) while a reply was expected."""

    def __init__(self) -> None:
        super().__init__("the server closed the connection")


class EarlyReplyError(ConnectionError):
    """The server sent a reply in the middle of DATA, before the final dot was written."""

    def __init__(self) -> None:
        super().__init__("the server replied before the end of DATA")


def describe(reply: Reply, limit: int = 300) -> str:
    text = f"{reply.code} {' '.join(line.strip() for line in reply.lines)}".strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reply_error(
    stage: str,
    reply: Reply,
    *,
    host: str,
    refused: Mapping[str, tuple[int, str]] | None = None,
) -> FluxMailException:
    """The exception for an unexpected ``reply`` at ``stage`` (see :data:`STAGES`), with
    a hint when the reply is a usual mistake (``_hints.reply_hint``)."""
    hint = reply_hint(stage, reply.code, reply.enhanced_code, reply.text)
    return attach(_reply_error(stage, reply, host=host, refused=refused), hint)


def _reply_error(
    stage: str,
    reply: Reply,
    *,
    host: str,
    refused: Mapping[str, tuple[int, str]] | None = None,
) -> FluxMailException:
    where = STAGES.get(stage, stage)
    said = describe(reply)
    if stage in ("greeting", "ehlo", "helo", "rset", "noop"):
        return ConnectError(
            f"SMTP server {host} refused the session {where}: {said}",
            transient=400 <= reply.code < 500,
        )
    if stage == "starttls":
        return TLSRequiredError(
            f"SMTP server {host} refused STARTTLS ({said}); fluxmail never falls back to plaintext"
        )
    if stage == "auth":
        return AuthenticationError(
            f"SMTP server {host} refused authentication: {said}",
            smtp_code=reply.code,
            enhanced_code=reply.enhanced_code,
        )
    cls: type[SMTPResponseError]
    if reply.code == 552 and stage in ("mail", "data", "body", "dot"):
        cls = MessageTooLargeError
    elif stage == "mail":
        cls = SenderRefusedError
    elif stage == "rcpt":
        cls = RecipientsRefusedError
    else:
        cls = MessageRefusedError
    what = {
        "mail": "refused the sender",
        "rcpt": "refused every recipient",
    }.get(stage, "refused the message")
    return cls(
        f"SMTP server {host} {what} {where}: {said}",
        smtp_code=reply.code,
        enhanced_code=reply.enhanced_code,
        server_message=reply.text,
        refused=refused,
    )


def _reason(exc: BaseException) -> str:
    verify_message = getattr(exc, "verify_message", None)
    if isinstance(exc, ssl.SSLCertVerificationError) and verify_message:
        return str(verify_message)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _dropped(exc: ssl.SSLError) -> bool:
    """The peer closed the connection in the middle of the handshake (maybe transient)."""
    return isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError))


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (TimeoutError, asyncio.TimeoutError))


def io_error(
    stage: str,
    exc: BaseException,
    *,
    host: str,
    port: int,
    timeout: float,
    message_id: str | None = None,
    use_ssl: bool = False,
) -> FluxMailException:
    """Translate a low-level failure ``exc`` that happened at ``stage``, with a hint when
    it looks like a usual mistake (``_hints.io_hint``: a TLS mode that does not fit the
    port).

    ``message_id`` is given when the final '.' of a message was fully written and its
    reply had not arrived: the outcome of that message is then unknown.
    """
    if stage == "greeting":
        timeout = greeting_wait(port, use_ssl, timeout)
    hint = io_hint(stage, exc, port=port, use_ssl=use_ssl) if message_id is None else None
    return attach(
        _io_error(stage, exc, host=host, port=port, timeout=timeout, message_id=message_id),
        hint,
    )


def _io_error(
    stage: str,
    exc: BaseException,
    *,
    host: str,
    port: int,
    timeout: float,
    message_id: str | None,
) -> FluxMailException:
    where = f"{host}:{port}"
    reason = _reason(exc)
    if message_id is not None:
        what = f"no reply within {timeout:g} s" if is_timeout(exc) else reason
        return OutcomeUnknownError(
            f"lost the connection to {where} after the end of DATA and before the "
            f"server's reply ({what}); the message may or may not have been accepted "
            "and is not resent",
            message_id=message_id,
        )
    at = STAGES.get(stage, stage)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TLSVerifyError(f"TLS certificate of {where} did not verify: {reason}")
    if is_timeout(exc):
        return SendTimeoutError(f"no answer from SMTP server {where} within {timeout:g} s {at}")
    if stage == "tls" and isinstance(exc, ssl.SSLError) and not _dropped(exc):
        # The server does not speak TLS, or no TLS version/cipher is acceptable to both:
        # trying again will not help, and plaintext is never an option.
        return TLSRequiredError(
            f"TLS handshake with SMTP server {where} failed: {reason}; fluxmail never "
            "continues in plaintext"
        )
    if isinstance(exc, ssl.SSLError):
        return ConnectError(f"TLS with SMTP server {where} failed {at}: {reason}")
    return ConnectError(f"connection to SMTP server {where} failed {at}: {reason}")


def unknown_error(
    cause: BaseException, *, message_id: str, host: str, port: int, timeout: float
) -> FluxMailException:
    """The final dot of ``message_id`` may have reached the server and no usable reply
    came: a timeout, a lost connection, or a reply that is not SMTP. The server may have
    the message, so it is never resent (by default)."""
    where = f"{host}:{port}"
    if isinstance(cause, ProtocolError):
        what = f"the server's reply was not usable: {cause}"
        return OutcomeUnknownError(
            f"after the end of DATA, {what} ({where}); the message may or may not have "
            "been accepted and is not resent",
            message_id=message_id,
        )
    return io_error("dot", cause, host=host, port=port, timeout=timeout, message_id=message_id)


def early_reply_error(
    reply: Reply | None, *, host: str, cause: BaseException
) -> FluxMailException:
    """The server said something in the middle of DATA, before the final dot was written.

    The transaction was abandoned without its dot, so the server cannot have completed
    the message: a 4xx or 5xx reply is the server's refusal (transient for 4xx, as the
    same reply at the end of DATA); anything else (an early ``250``, garbage, a partial
    line) is a transient ``protocol_error``, since nothing was delivered.
    """
    if reply is not None and reply.code >= 400:
        return reply_error("body", reply, host=host)
    said = describe(reply) if reply is not None else _reason(cause)
    return ProtocolError(
        f"SMTP server {host} spoke in the middle of DATA, before the final dot ({said}); "
        "the transaction was abandoned without its dot, so nothing was delivered",
        transient=True,
    )
