"""fluxmail's SMTP client engine: a sans-IO protocol core and two thin drivers.

* :class:`SMTPConnection` -- blocking sockets;
* :class:`AsyncSMTPConnection` -- asyncio.

Both run the same pure conversation (``_protocol``): multi-line replies with size caps,
EHLO capabilities, STARTTLS with a fresh EHLO and no plaintext fallback, AUTH PLAIN/LOGIN
or, with an OAuth2 token, XOAUTH2/OAUTHBEARER (never over plaintext unless allowed; a
refused token is replaced once), RFC 2920 pipelining of MAIL/RCPT/DATA when the server
offers it, CRLF normalisation and dot-stuffing of DATA, and per-step deadlines.
Errors are the classes of :mod:`fluxmail.errors`. The transcript is logged on
``fluxmail.smtp`` at DEBUG with credentials redacted and message bodies summarised.
"""

from __future__ import annotations

from ._async import AsyncSMTPConnection
from ._results import SendResult, SessionInfo
from ._sync import SMTPConnection

__all__ = ["AsyncSMTPConnection", "SMTPConnection", "SendResult", "SessionInfo"]
