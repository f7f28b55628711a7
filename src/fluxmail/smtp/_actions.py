"""The I/O actions a sans-IO conversation yields to its driver.

* :class:`Exchange` -- write ``data`` (possibly several pipelined commands) and ``tail``,
  then read ``replies`` replies and send them back as a list. The list is shorter when
  the server answered ``421`` (it is closing the connection, nothing more will come).
* :class:`StartTLS` -- discard every buffered byte (STARTTLS response injection), run the
  TLS handshake, send back an empty list.

A driver that fails to perform an action translates the failure into a fluxmail error and
*throws* it into the conversation, which may handle it (a failed ``RSET`` after an error
must not hide that error) or let it propagate.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TypeVar

from ._replies import Reply

CRLF = b"\r\n"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Exchange:
    """Write ``data`` then ``tail``, then read ``replies`` replies.

    ``log`` replaces ``data`` in the debug transcript (redaction, message bodies).
    ``message_id`` marks a write that ends a message's DATA: a failure after the write
    completed and before the reply leaves that message's outcome unknown. ``tail`` is the
    final dot of such a write (and the next message's pipelined envelope, if any), kept
    apart so that a large message is never copied just to append a few bytes.
    ``ahead`` counts the trailing replies that answer that next envelope: once the others
    (the final reply) have arrived, a failure while reading these does not fail the
    exchange; the driver returns the replies it has and drops the connection.
    """

    data: bytes = field(repr=False)
    replies: int
    stage: str
    log: str | None = None
    message_id: str | None = None
    tail: bytes = field(default=b"", repr=False)
    ahead: int = 0


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Discard buffered input and upgrade the connection to TLS."""


Action = Exchange | StartTLS
Conversation = Generator[Action, list[Reply], T]
Ask = Callable[[Exchange], Conversation[list[Reply]]]
