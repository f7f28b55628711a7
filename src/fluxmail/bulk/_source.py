"""The input of a blocking ``send_batch``: a :class:`~fluxmail.transports.base.Preparable`.

The caller's iterable and callbacks run only when the transport takes a message
(``next()``, a safe point: nothing on the wire without its reply, every outcome so far
recorded). There the next spec is read and asked of the journal, ready to be composed;
``prepare()``, while a final dot's replies are awaited, composes it (fluxmail's own code)
and keeps a failure to report at the next safe point. So a slow or failing input, or an
``on_error`` that blocks, never delays the reply of a message whose dot is out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from ..errors import FluxMailException

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..transports.base import Item
    from ._state import MessageSpec, _Hooks, _Item

#: (index, spec) -> (journal key, Message-ID to compose with) or None (skipped, failed).
Admit = Callable[[int, "MessageSpec"], "tuple[str, str | None] | None"]
Compose = Callable[["MessageSpec", "str | None"], "Composed"]
Refuse = Callable[[int, FluxMailException], None]


class StagedSpecs:
    """Specs read at safe points, composed one ahead while the server works."""

    def __init__(
        self,
        messages: Iterable[MessageSpec],
        *,
        admit: Admit,
        compose: Compose,
        refuse: Refuse,
        hooks: _Hooks,
    ) -> None:
        self._specs = enumerate(messages)
        self._admit, self._compose, self._refuse, self._hooks = admit, compose, refuse, hooks
        self._read: tuple[int, MessageSpec, str, str | None] | None = None  # admitted
        self._ready: Item | None = None  # composed in the wait
        self._failed: tuple[int, FluxMailException] | None = None  # composing it failed
        self._error: BaseException | None = None  # the input's, once what it gave is sent

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        while True:
            self._report_failed()
            if self._ready is not None:
                item, self._ready = self._ready, None
                self._read_next()
                return item
            if self._read is None:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                self._read_next(keep_error=False)
                if self._read is None:
                    raise StopIteration
            self.prepare()

    def prepare(self) -> None:
        """Compose the spec read last (fluxmail's code only; a failure kept)."""
        if self._ready is not None or self._read is None:
            return
        index, spec, key, message_id = self._read
        self._read = None
        try:
            made: _Item = (index, self._compose(spec, message_id), key)
        except FluxMailException as exc:
            self._failed = (index, exc)
            return
        self._ready = self._hooks.item(made)

    def _read_next(self, *, keep_error: bool = True) -> None:
        """Read and admit the next spec (a safe point). An error of the input is raised
        now when nothing read is waiting, else kept until that went out."""
        try:
            for index, spec in self._specs:
                try:
                    admitted = self._admit(index, spec)
                except FluxMailException as exc:
                    self._refuse(index, exc)  # (raises when it stops the batch)
                    continue
                if admitted is not None:
                    self._read = (index, spec, *admitted)
                    return
        except BaseException as exc:
            if not keep_error:
                raise
            self._error = exc

    def _report_failed(self) -> None:
        if self._failed is not None:
            failed, self._failed = self._failed, None
            self._refuse(*failed)
