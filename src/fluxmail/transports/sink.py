"""The capture registry: which :func:`fluxmail.testing.capture` outbox is active.

While a capture is active, every send in the process lands in it instead of the network.
Only one place asks: the transport that :mod:`fluxmail.transports.factory` builds (every
FluxMail, the Django backend and the ``fluxmail.scale`` courier hold one), at each send,
after validation and composition and before any connection. When nothing is capturing
that is a read of one module global.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .base import SinkTransport

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..smtp import SendResult

__all__ = ["Sink", "accepted", "active_capture", "start_capture", "stop_capture"]

#: Where a composed message goes instead of a server (the capture, console, file).
Sink = SinkTransport

_active: Sink | None = None
_stack: list[Sink] = []
_lock = threading.Lock()


def active_capture() -> Sink | None:
    """The innermost active capture, or None (the usual case: send for real)."""
    return _active


def start_capture(sink: Sink) -> None:
    """From now on, every send in the process goes to ``sink`` (captures nest)."""
    global _active
    with _lock:
        _stack.append(sink)
        _active = sink


def stop_capture(sink: Sink) -> None:
    """End the capture of ``sink``; the one started before it, if any, applies again."""
    global _active
    with _lock:
        for index in range(len(_stack) - 1, -1, -1):
            if _stack[index] is sink:
                del _stack[index]
                break
        _active = _stack[-1] if _stack else None


def accepted(composed: Composed, text: str = "2.0.0 OK") -> SendResult:
    """The result of a message accepted for every envelope recipient."""
    from ..smtp import SendResult

    return SendResult(
        message_id=composed.message_id,
        accepted=composed.envelope.rcpt_to,
        refused={},
        smtp_code=250,
        server_message=text,
    )
