"""The I/O actions a sans-IO conversation yields to its driver, and what drivers report.

* :class:`Exchange` -- write ``data`` (possibly several pipelined commands) and ``tail``,
  then read ``replies`` replies and send them back as a list. The list is shorter when
  the server answered ``421`` (it is closing the connection, nothing more will come).
* :class:`StartTLS` -- discard every buffered byte (STARTTLS response injection), run the
  TLS handshake, send back an empty list.
* :class:`NextMessage` -- ask the caller for the message to write ahead behind the
  final dot (``upcoming()`` of ``send_pipelined``) and send it back (a ``Composed`` or
  ``None``). The caller's code (a journal fsync, say) runs in the driver, between two
  steps of the conversation, never inside it.

Drivers only do I/O. When an action fails they throw a :class:`Failure` into the
conversation, saying what happened (the low-level error, whether every byte of the write
reached the kernel, the replies read so far); the session decides what it means (a
retryable failure, a refusal, an unknown outcome) and raises the fluxmail error.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TypeVar

from ..envelope import Composed
from ._replies import Reply

CRLF = b"\r\n"
T = TypeVar("T")


@dataclass(slots=True)  # (not frozen: its __init__ would pay a setattr call per field)
class Exchange:
    """Write ``data`` then ``tail``, then read ``replies`` replies.

    ``log`` replaces ``data`` in the debug transcript (redaction, message bodies).
    ``message_id`` marks a write that ends a message's DATA (its ``tail`` holds the final
    dot). ``tail`` is kept apart so that a large message is never copied just to append
    a few bytes; it may also carry the next message's pipelined envelope, whose replies
    are the last ``ahead`` of ``replies``.

    Not a tuple: error reporters that walk sequences item by item (local-variable
    capture) would show ``data``, which may hold credentials or a message body.

    ``guarded``: the write is message data. Before each slice of it the driver looks for
    input: a server that spoke (or hung up) in the middle of DATA gets nothing more, the
    driver reports a :class:`Failure` with ``early=True`` and whatever it received.
    """

    data: bytes = field(repr=False)
    replies: int
    stage: str
    log: str | None = None
    message_id: str | None = None
    tail: bytes = field(default=b"", repr=False)
    ahead: int = 0
    guarded: bool = False


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Discard buffered input and upgrade the connection to TLS."""


@dataclass(frozen=True, slots=True)
class NextMessage:
    """Ask the caller for the next message to write ahead (or ``None``)."""


class Failure(Exception):
    """A driver's report that an action failed (thrown into the conversation).

    ``cause``: the low-level error (``OSError``, a timeout, the parser's
    ``ProtocolError``, :class:`~fluxmail.smtp._errors.ServerClosedError`, or anything
    the caller's ``upcoming()`` raised). ``written``: every byte of the action's write
    reached the kernel before the failure (for a write ending a message's DATA: its
    final dot may have reached the server). ``early``: the driver stopped writing
    because the server sent something (or hung up) in the middle of the write.
    ``replies``: the complete replies read before the failure (for ``early``, what the
    server sent).
    """

    def __init__(
        self,
        cause: BaseException,
        *,
        written: bool = False,
        early: bool = False,
        replies: list[Reply] | None = None,
    ) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.written = written
        self.early = early
        self.replies = replies or []


Action = Exchange | StartTLS | NextMessage
Answer = list[Reply] | Composed | None  # what a driver sends back for an action
Conversation = Generator[Action, Answer, T]
Ask = Callable[[Exchange], Conversation[list[Reply]]]
