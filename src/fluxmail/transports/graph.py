"""Microsoft Graph transports: send (``sendMail``) and create drafts (``messages``) with the
MIME bytes of our composer, over one httpx connection pool per mailer (HTTP/2 when the
``h2`` package is installed). See docs/graph.md.

Each request has an overall deadline (the mailer's ``timeout``). Graph's throttling
(429/503 with Retry-After) holds every request of the mailer until the time Graph named,
bounded by the timeout; a throttled request is transient, so ``send()`` tries it again
within ``max_retries``. An expired token (401) is dropped and fetched again once. Nothing
is sent twice: only answers that say the request was not taken (429, 503, 401) and failures
before the request was complete are retried; an answer lost after the request went out is
``OutcomeUnknownError``. Tokens never appear in errors, reprs or logs.

The pure half (settings, bodies, answers, the throttle) is in ``_graph_wire``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import threading
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from typing import TYPE_CHECKING, Any

from ..envelope import Composed
from ..errors import (
    FluxMailException,
)
from ..smtp import SendResult
from ..smtp._tokens import aget_token, get_token
from ._graph_core import (
    _ACTION,
    DRAFT,
    PROBE,
    SEND,
    T,
    _Common,
    _httpx,
    _Plan,
    _Sleep,
    _Token,
)
from ._graph_wire import (
    DEFAULT_GRAPH_URL,
    MAX_ANSWER_BYTES,
    MAX_CONCURRENCY,
    PROBE_BODY,
    Answer,
    GraphConfig,
    Throttle,
    accepted_result,
    draft_link,
    headers,
    request_body,
    translate,
    unknown,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AsyncGraphTransport",
    "GraphConfig",
    "GraphTransport",
    "Outcome",
    "graph_config",
    "save_draft",
]

#: What ``send_many`` yields for each message, in order: its result or its error.
Outcome = SendResult | FluxMailException


class GraphTransport(_Common):
    """Blocking Graph delivery. Thread-safe: httpx's pool serves concurrent threads."""

    def __init__(
        self,
        config: GraphConfig,
        *,
        max_retries: int = 0,
        retry_delay: float = 1.0,
        throttle: Throttle | None = None,
        ssl_context: ssl.SSLContext | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            config,
            max_retries=max_retries,
            retry_delay=retry_delay,
            throttle=throttle,
            ssl_context=ssl_context,
        )
        self._sleep = sleep
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = _httpx().Client(**self._options)
                # A mailer dropped without close() closes its sockets, not leaks them.
                weakref.finalize(self, self._client.close)
            return self._client

    def close(self) -> None:
        """Close the connection pool (a later request opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- the interface ---------------------------------------------------------------

    def send(self, composed: Composed) -> SendResult:
        body = request_body(composed)
        answer = self._run(self._retrying(lambda: self._request(SEND, body, composed, (202,))))
        return accepted_result(composed, answer.status)

    def send_many(self, messages: Iterable[Composed]) -> Iterator[Outcome]:
        """One outcome per message, in order; each message is sent at most once."""
        for composed in messages:
            try:
                yield self.send(composed)
            except FluxMailException as exc:
                yield exc

    def create_draft(self, composed: Composed) -> tuple[str, str]:
        """Save the message as a draft in the mailbox: its (id, webLink)."""
        body = request_body(composed)
        answer = self._run(self._retrying(lambda: self._request(DRAFT, body, composed, (201,))))
        return draft_link(answer)

    def probe(self) -> dict[str, Any]:
        """Get a token and ask Graph to send something it must refuse (not base64): the
        token, the permission and the mailbox are checked, and nothing can be sent."""
        started = time.perf_counter()
        plan = self._retrying(lambda: self._request(PROBE, PROBE_BODY, None, (400,)))
        return self._probe_result(self.config, self._run(plan), started)

    # --- requests --------------------------------------------------------------------

    def _run(self, plan: _Plan[T]) -> T:
        """Perform ``plan``'s steps, blocking (the core above decides what they are)."""
        value: Any = None
        error: FluxMailException | None = None
        while True:
            try:
                step = plan.send(value) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(step, _Sleep):
                    self._sleep(step.seconds)
                elif isinstance(step, _Token):
                    value = get_token(self.config.oauth2)
                else:
                    value = self._exchange(step.what, step.body, step.token, step.composed)
            except FluxMailException as exc:
                error = exc

    def _exchange(self, what: str, body: bytes, token: str, composed: Composed | None) -> Answer:
        action = _ACTION[what]
        client = self._http()
        deadline = time.monotonic() + self.config.timeout
        request = client.build_request(
            "POST", self.config.url(action), content=body, headers=headers(token)
        )
        try:
            response = client.send(request, stream=True)
            try:
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk[: MAX_ANSWER_BYTES - len(data)]
                    if time.monotonic() > deadline:
                        raise unknown(self.config, what, composed, "no answer within the timeout")
            finally:
                response.close()
        except _httpx().HTTPError as exc:
            raise translate(exc, self.config, what, composed) from exc
        return Answer(response.status_code, bytes(data), response.headers.get("Retry-After"))


class AsyncGraphTransport(_Common):
    """asyncio Graph delivery. ``send()`` makes one attempt (and the token refresh), as
    ``send_async()`` promises; ``send_many()`` retries each message within ``max_retries``
    and keeps at most ``concurrency`` requests in flight."""

    def __init__(
        self,
        config: GraphConfig,
        *,
        max_retries: int = 0,
        retry_delay: float = 1.0,
        throttle: Throttle | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            config,
            max_retries=max_retries,
            retry_delay=retry_delay,
            throttle=throttle,
            ssl_context=ssl_context,
        )
        # An httpx.AsyncClient belongs to one event loop and must be closed on it: a pool
        # is kept per loop only while held, and a call outside that opens its own.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()
        self._holding = 0

    def hold(self) -> None:
        """Keep one pool per event loop across calls until :meth:`release`
        (``async with mailer:``; ``send_many`` holds one for its run)."""
        self._holding += 1

    async def release(self) -> None:
        self._holding = max(0, self._holding - 1)
        if self._holding == 0:
            await self.aclose()

    async def aclose(self) -> None:
        """Close this event loop's pool, if one is held."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:  # a close cut short by a cancellation leaves sockets open
            _, cancelled = await uninterrupted(client.aclose())
            if cancelled:
                raise asyncio.CancelledError

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[httpx.AsyncClient]:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None and self._holding:
            client = self._clients[loop] = _httpx().AsyncClient(**self._options)
        if client is not None:
            yield client
            return
        async with _httpx().AsyncClient(**self._options) as own:
            yield own

    # --- the interface ---------------------------------------------------------------

    async def send(self, composed: Composed) -> SendResult:
        body = request_body(composed)
        async with self._session() as client:
            answer = await self._run(client, self._request(SEND, body, composed, (202,)))
        return accepted_result(composed, answer.status)

    async def send_many(
        self,
        messages: Iterable[Composed] | AsyncIterable[Composed],
        *,
        concurrency: int = MAX_CONCURRENCY,
    ) -> AsyncGenerator[Outcome, None]:
        """One outcome per message, in the order given, with at most ``concurrency``
        requests in flight. A consumer that stops early lets the requests already in
        flight finish (cancelling one could leave its outcome unknown)."""
        window: collections.deque[asyncio.Task[SendResult]] = collections.deque()
        self.hold()
        try:
            async for composed in _each(messages):
                window.append(asyncio.ensure_future(self.send_retrying(composed)))
                if len(window) >= max(1, concurrency):
                    yield await _outcome(window.popleft())
            while window:
                yield await _outcome(window.popleft())
        finally:
            if window:
                await asyncio.gather(*window, return_exceptions=True)
            await self.release()

    async def create_draft(self, composed: Composed) -> tuple[str, str]:
        body = request_body(composed)
        async with self._session() as client:
            answer = await self._run(client, self._request(DRAFT, body, composed, (201,)))
        return draft_link(answer)

    async def probe(self) -> dict[str, Any]:
        started = time.perf_counter()
        async with self._session() as client:
            answer = await self._run(client, self._request(PROBE, PROBE_BODY, None, (400,)))
        return self._probe_result(self.config, answer, started)

    # --- requests --------------------------------------------------------------------

    async def send_retrying(self, composed: Composed) -> SendResult:
        """``send()`` with the retries of the blocking transport (batches use it)."""
        body = request_body(composed)
        plan = self._retrying(lambda: self._request(SEND, body, composed, (202,)))
        async with self._session() as client:
            answer = await self._run(client, plan)
        return accepted_result(composed, answer.status)

    async def _run(self, client: httpx.AsyncClient, plan: _Plan[T]) -> T:
        """Perform ``plan``'s steps with asyncio (the twin of ``GraphTransport._run``)."""
        value: Any = None
        error: FluxMailException | None = None
        while True:
            try:
                step = plan.send(value) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, _Token):
                    value = await aget_token(self.config.oauth2)
                else:
                    exchange = self._exchange(client, step.what, step.body, step.token)
                    value = await self._deadline(exchange, step.what, step.composed)
            except FluxMailException as exc:
                error = exc

    async def _deadline(
        self, exchange: Awaitable[Answer], what: str, composed: Composed | None
    ) -> Answer:
        try:
            return await asyncio.wait_for(exchange, self.config.timeout)
        except asyncio.TimeoutError:
            raise unknown(self.config, what, composed, "no answer within the timeout") from None
        except _httpx().HTTPError as exc:
            raise translate(exc, self.config, what, composed) from exc

    async def _exchange(
        self, client: httpx.AsyncClient, what: str, body: bytes, token: str
    ) -> Answer:
        action = _ACTION[what]
        request = client.build_request(
            "POST", self.config.url(action), content=body, headers=headers(token)
        )
        response = await client.send(request, stream=True)
        try:
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk[: MAX_ANSWER_BYTES - len(data)]
        finally:
            await response.aclose()
        return Answer(response.status_code, bytes(data), response.headers.get("Retry-After"))


async def uninterrupted(work: Awaitable[T]) -> tuple[asyncio.Future[T], bool]:
    """Run ``work`` to its end even if the caller is cancelled meanwhile: its finished
    future (``result()`` gives its value or raises its error), and whether the caller was
    cancelled (it then raises ``CancelledError`` itself, once it has done what it must).
    For an HTTP request in flight, whose outcome a cancellation would make unknown, and
    for closing a pool, which a cancellation would leave with open sockets."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    return task, cancelled


async def _each(messages: Iterable[Composed] | AsyncIterable[Composed]) -> AsyncIterator[Composed]:
    if isinstance(messages, AsyncIterable):
        async for composed in messages:
            yield composed
    else:
        for composed in messages:
            yield composed


async def _outcome(task: asyncio.Task[SendResult]) -> Outcome:
    try:
        return await task
    except FluxMailException as exc:
        return exc


def graph_config(
    username: str | None,
    oauth2: Any,
    graph_url: str | None,
    timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> GraphConfig:
    """The settings of ``FluxMail(object_type="graph", ...)``, checked now."""
    return GraphConfig(
        username=username or "",
        oauth2=oauth2,
        graph_url=DEFAULT_GRAPH_URL if graph_url is None else graph_url,
        timeout=timeout,
        ssl_context=ssl_context,
    )


def save_draft(transport: Any, composed: Composed) -> str:
    """``display()`` for Graph: save the draft (through the factory's Switch, so a test
    capture takes it instead), print and return its webLink ("" under a capture)."""
    link: str = transport.create_draft(composed)[1]
    print(f"Draft saved: {link or '(captured: no draft)'}")
    return link


def check_prebuilt(message: Any, recipients: Any) -> None:
    """``send_message()`` over Graph: Graph takes the recipients from the headers, so an
    envelope of one's own (``recipients=``) or a Bcc header (which ``send_message`` strips)
    would be lost without a word; both are refused."""
    from email.parser import BytesHeaderParser

    from ..errors import UnsupportedOperationError

    if recipients is not None:
        raise UnsupportedOperationError(
            "Microsoft Graph takes the recipients from the headers: no recipients= in "
            "send_message(); put them in To/Cc"
        )
    raw = bytes(message) if isinstance(message, (bytes, bytearray)) else None
    headers = BytesHeaderParser().parsebytes(raw) if raw is not None else message
    if headers.get("Bcc") is not None:
        raise UnsupportedOperationError(
            "send_message() over Microsoft Graph cannot carry Bcc (it is stripped before "
            "sending and Graph reads recipients from the headers): use create(bcc=...)"
        )
