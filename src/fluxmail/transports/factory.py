"""The one place transports are built, and the one place the test capture applies.

:func:`build` makes the transport a FluxMail holds (and the Django backend, and each
thread of a ``fluxmail.scale`` courier): SMTP, console or file, wrapped in a
:class:`Switch` that sends to the active :func:`fluxmail.testing.capture` outbox instead,
if there is one when a send starts. Nothing else in fluxmail looks at the capture.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Union

from ..config import EmailObject, SmtpConfig
from ..errors import ConfigurationError
from .base import AsyncBatchHooks, AsyncTransport, BatchHooks, Item, Source, Transport
from .sink import active_capture

if TYPE_CHECKING:
    from ..envelope import Composed
    from ..smtp import SendResult
    from ._graph_pair import GraphPair
    from ._graph_wire import GraphConfig
    from .dev import ConsoleTransport, FileTransport
    from .smtp import SMTPTransport

__all__ = ["Switch", "build"]

Inner = Union["SMTPTransport", "ConsoleTransport", "FileTransport", "GraphPair"]


class Switch(Transport, AsyncTransport):
    """``inner``, or the active capture while one is active (decided per send).

    What every FluxMail holds as ``mailer.transport`` (built by :func:`build`).

    Args:
        inner: the real transport (SMTP, Graph, console or file).

    Example:
        ```python
        with fluxmail.testing.capture() as outbox:
            mailer.create(subject="Hi", recipients=["ada@example.org"], body=".").send()
        assert len(outbox) == 1  # the Switch sent it to the capture, not the server
        assert mailer.transport.name == "smtp"
        ```
    """

    def __init__(self, inner: Inner) -> None:
        self.inner = inner
        self.name = inner.name

    def __repr__(self) -> str:
        return f"<Switch {self.inner!r}>"

    def _target(self) -> Inner | Any:
        capture = active_capture()  # an empty outbox is falsy: compare with None
        return self.inner if capture is None else capture

    def send(self, composed: Composed) -> SendResult:
        """Deliver one message through the inner transport, or into the active capture.

        Args:
            composed: the message.

        Returns:
            What the server (or the capture) said.

        Raises:
            FluxMailException: the inner transport's error, after its retries.
        """
        result: SendResult = self._target().send(composed)
        return result

    def send_many(self, items: Iterable[Item], hooks: BatchHooks) -> None:
        """A batch, through the inner transport or into the capture (decided once, when
        the batch starts); see :meth:`Transport.send_many`."""
        self._target().send_many(items, hooks)

    async def send_async(self, composed: Composed) -> SendResult:
        """As :meth:`send`, over asyncio (no retries)."""
        result: SendResult = await self._target().send_async(composed)
        return result

    async def send_many_async(self, source: Source, hooks: AsyncBatchHooks) -> None:
        """As :meth:`send_many`, over asyncio; see :meth:`AsyncTransport.send_many_async`."""
        await self._target().send_many_async(source, hooks)

    def open(self) -> None:
        """Open the inner transport's held session now, unless a capture is active
        (under a capture nothing connects)."""
        if active_capture() is None:  # under a capture nothing connects
            self.inner.open()

    def hold(self) -> None:
        """Keep the inner transport's session open across sends (``with mailer:``)."""
        self.inner.hold()

    def release(self) -> None:
        """End one :meth:`hold`; the session closes when none is left."""
        self.inner.release()

    def close(self) -> None:
        """Close the inner transport's session, if open."""
        self.inner.close()

    def hold_async(self) -> None:
        """As :meth:`hold`, for async sends (``async with mailer:``)."""
        self.inner.hold_async()

    async def release_async(self) -> None:
        """As :meth:`release`, for async sends."""
        await self.inner.release_async()

    async def close_async(self) -> None:
        """As :meth:`close`, for async sends."""
        await self.inner.close_async()

    def probe(self) -> dict[str, Any]:
        """The inner transport's health check (``FluxMail.test_connection()``); never
        captured: it sends nothing.

        Returns:
            What the session learned (diagnostics).

        Raises:
            UnsupportedOperationError: ``unsupported_operation``: a transport without a
                connection (console, file).
            FluxMailException: the connection, TLS or AUTH failure.
        """
        return self.inner.probe()

    def create_draft(self, composed: Composed) -> tuple[str, str]:
        """Microsoft Graph's ``display()``: save a draft, its (id, webLink). Under a
        capture the message goes to the outbox instead and no draft exists: ("", "")."""
        target = self._target()
        if target is not self.inner:
            target.send(composed)
            return "", ""
        create = getattr(self.inner, "create_draft", None)
        if create is None:
            raise ConfigurationError(f"the {self.name} transport saves no drafts")
        draft: tuple[str, str] = create(composed)
        return draft


def build(
    kind: EmailObject,
    *,
    config: SmtpConfig | None = None,
    graph: GraphConfig | None = None,
    directory: str | os.PathLike[str] | None = None,
    max_retries: int = 0,
    retry_delay: float = 1.0,
) -> Switch:
    """The transport for ``kind``: SMTP (``config``, retries), Microsoft Graph
    (``graph``, retries), console, or file (``directory``)."""
    inner: Inner
    if kind is EmailObject.SMTP:
        if config is None:
            raise ConfigurationError("an SMTP transport needs its settings")
        from .smtp import SMTPTransport

        inner = SMTPTransport(config, max_retries=max_retries, retry_delay=retry_delay)
    elif kind is EmailObject.GRAPH:
        if graph is None:
            raise ConfigurationError("a Microsoft Graph transport needs its settings")
        from ._graph_pair import GraphPair

        inner = GraphPair(graph, max_retries=max_retries, retry_delay=retry_delay)
    elif kind is EmailObject.CONSOLE:
        from .dev import ConsoleTransport

        inner = ConsoleTransport()
    elif kind is EmailObject.FILE:
        if not directory:
            raise ConfigurationError(
                'object_type="file" needs host="path/to/directory" (where the .eml files go)'
            )
        from .dev import FileTransport

        inner = FileTransport(directory)
    else:
        raise ConfigurationError(f"no transport sends for object_type={kind.value!r}")
    return Switch(inner)
