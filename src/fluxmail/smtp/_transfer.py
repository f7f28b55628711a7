"""Where the current message's data is, and what a failed action means there (pure).

The :class:`~._protocol.Session` owns one :class:`Transfer`. Before each exchange it is
told what is about to be written; when the driver reports a :class:`~._actions.Failure`,
it says what that failure is for the user:

* the final dot may have reached the server (every byte of the write that carries it
  was handed to the kernel): ``outcome_unknown``, whatever the cause (a timeout, a lost
  connection, a garbage or oversized reply);
* the driver stopped in the middle of the message data because the server spoke (an
  "early" reply): the transaction is abandoned without its dot, so nothing can have been
  delivered; the early reply decides the error (see ``early_reply_error``);
* anything else before the dot: the translated low-level error (retryable).
"""

from __future__ import annotations

import enum

from ..config import SmtpConfig
from ..errors import FluxMailException, ProtocolError
from ._actions import Exchange, Failure
from ._errors import early_reply_error, io_error, unknown_error
from ._replies import Reply


class Phase(enum.Enum):
    """Where the current message is, as far as the server could know."""

    IDLE = "idle"  # no message data written yet (or the transaction is over)
    DATA = "data"  # writing the message data: the final dot has not reached the server
    DOT = "dot"  # the final dot may have reached the server; its reply is awaited


class Transfer:
    """The state of the current message's data, and the failure table that reads it."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.phase = Phase.IDLE
        self.ahead_lost: FluxMailException | None = None  # how the ahead envelope was lost

    def starting(self, exchange: Exchange) -> None:
        """``exchange`` is about to be performed."""
        if exchange.guarded:
            self.phase = Phase.DATA

    def answered(self) -> None:
        """Its replies arrived: whatever it wrote, the server has answered."""
        self.phase = Phase.IDLE

    def failed(self, exchange: Exchange, failure: Failure) -> list[Reply]:
        """The replies worth keeping from a failed ``exchange``, or raise the error the
        failure means."""
        if exchange.message_id is not None and failure.written:
            self.phase = Phase.DOT
        salvaged = self._salvage(exchange, failure)
        if salvaged is not None:
            self.phase = Phase.IDLE
            return salvaged
        error = self._meaning(exchange, failure)
        self.phase = Phase.IDLE
        if error is failure.cause:  # already a fluxmail error (the parser's)
            raise error from error.__cause__
        raise error from failure.cause

    def io_error(self, stage: str, cause: BaseException) -> FluxMailException:
        config = self.config
        error = io_error(
            stage,
            cause,
            host=config.host,
            port=config.port,
            timeout=config.timeout,
            use_ssl=config.use_ssl,
        )
        error.__cause__ = cause
        return error

    def take_ahead_lost(self) -> FluxMailException | None:
        lost, self.ahead_lost = self.ahead_lost, None
        return lost

    def _meaning(self, exchange: Exchange, failure: Failure) -> FluxMailException:
        config, cause = self.config, failure.cause
        if self.phase is Phase.DOT:  # the server may have the message
            assert exchange.message_id is not None
            return unknown_error(
                cause,
                message_id=exchange.message_id,
                host=config.host,
                port=config.port,
                timeout=config.timeout,
            )
        if exchange.guarded:  # before the final dot: nothing can have been delivered
            return self._before_dot("body", failure)
        if isinstance(cause, FluxMailException):  # garbage, out of step: the parser said
            return cause
        return self.io_error(exchange.stage, cause)

    def _before_dot(self, stage: str, failure: Failure) -> FluxMailException:
        cause = failure.cause
        if failure.early or isinstance(cause, ProtocolError):
            reply = failure.replies[0] if failure.replies else None
            return early_reply_error(reply, host=self.config.host, cause=cause)
        return self.io_error(stage, cause)

    def _salvage(self, exchange: Exchange, failure: Failure) -> list[Reply] | None:
        """The replies to keep from a failed write-ahead exchange: once the final reply
        is in, a failure while reading the next message's envelope replies does not fail
        this message; it only loses that envelope (``ahead_lost``, a failure before the
        next message's dot)."""
        if not exchange.ahead or not failure.written:
            return None
        if len(failure.replies) < exchange.replies - exchange.ahead:
            return None
        self.ahead_lost = self._before_dot("mail", Failure(failure.cause))
        return failure.replies
