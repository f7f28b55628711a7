"""The message waiting between ``create()`` and ``send()``: whose it is, and who may send it.

The rule (docs/guide.md, "One mailer, many threads and tasks"):

1. ``create()`` keeps the message in the current *context* (``contextvars``): each thread
   has its own, each asyncio task has its own copy, and ``asyncio.to_thread`` carries the
   caller's into the worker thread. So threads (or tasks) that each do ``create()`` then
   ``send()`` on a shared mailer each send their own message, and
   ``create(...)`` + ``await asyncio.to_thread(mailer.send)`` sends the message created
   just before.
2. A ``send()`` whose context holds no message (``loop.run_in_executor``, a thread handed
   the work by hand) takes the oldest created message that no ``send()`` has taken yet,
   wherever it was created (first created, first claimed: executors start work in the
   order it was submitted). Taking is atomic, so a message is taken by one send only; a
   message claimed this way is no longer offered in the context that created it.
3. A second ``create()`` in the same context replaces the first message, as before.

Kept until the send succeeds (as before: a failed ``send()`` can be called again), then
forgotten. A dry run leaves it in place.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..message import Message


FREE, TAKEN, DONE = "free", "taken", "done"


class _Slot:
    """One created message and where it is: ``free`` (waiting), ``taken`` (a send() is
    under way), ``done`` (sent, or claimed away by a send() from another context)."""

    __slots__ = ("message", "state")

    def __init__(self, message: Message, state: str = FREE) -> None:
        self.message = message
        self.state = state


# One variable for every mailer: {mailer: slot}. Mailers are weak keys, so a mailer that
# goes away takes its pending message with it. The mapping is copied on write, so contexts
# copied from one another never see each other's later messages; a context copied after
# create() (asyncio.to_thread) shares the slot itself, so a send there is seen everywhere.
_SLOTS: contextvars.ContextVar[weakref.WeakKeyDictionary[Any, _Slot]] = contextvars.ContextVar(
    "fluxmail_pending"
)


def _slots() -> weakref.WeakKeyDictionary[Any, _Slot]:
    return _SLOTS.get(weakref.WeakKeyDictionary())


def _set(owner: object, slot: _Slot) -> None:
    slots = weakref.WeakKeyDictionary(_slots())
    slots[owner] = slot
    _SLOTS.set(slots)


class PendingMessages:
    """The pending-message store of one FluxMail (see the module docstring). Every state
    change happens under one lock, so two sends never both take one message."""

    def __init__(self, owner: object) -> None:
        self._owner = weakref.ref(owner)
        self._lock = threading.Lock()
        self._waiting: deque[_Slot] = deque()  # created, in order, for rule 2

    def put(self, message: Message) -> None:
        slot = _Slot(message)
        with self._lock:
            replaced = self._own()
            if replaced is not None:
                replaced.state = DONE  # rule 3: never claimable once replaced
            _set(self._owner(), slot)
            self._waiting.append(slot)
            while self._waiting and self._waiting[0].state != FREE:
                self._waiting.popleft()

    def peek(self) -> Message | None:
        """The message a ``send()`` here would send, without taking it."""
        with self._lock:
            slot = self._own() or self._claimable()
            return slot.message if slot is not None else None

    def take(self) -> Message | None:
        """Take the message for a ``send()``: this context's, else (rule 2) the newest
        free one, which becomes this context's. None if there is none."""
        with self._lock:
            slot = self._own()
            if slot is None:
                latest = self._claimable()
                if latest is None:
                    return None
                latest.state = DONE  # claimed away: its creator no longer offers it
                slot = _Slot(latest.message)
                _set(self._owner(), slot)
            slot.state = TAKEN
            return slot.message

    def finish(self, message: Message, *, sent: bool) -> None:
        """The send of ``message`` ended: ``sent`` forgets it, else it waits again."""
        with self._lock:
            slot = _slots().get(self._owner())
            if slot is None or slot.message is not message:
                return
            slot.state = DONE if sent else FREE

    def _own(self) -> _Slot | None:
        slot = _slots().get(self._owner())
        return slot if slot is not None and slot.state == FREE else None

    def _claimable(self) -> _Slot | None:
        while self._waiting and self._waiting[0].state != FREE:
            self._waiting.popleft()
        return self._waiting[0] if self._waiting else None
