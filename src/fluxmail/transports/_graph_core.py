"""The half of the Graph transports that both share: their settings, the throttle, and
the rules of one request, written once.

A request's rules (a fresh token once after a 401, the throttle, which failures are
retried and after how long) are generators that yield the next step (:class:`_Sleep`,
:class:`_Token`, :class:`_Exchange`) instead of doing it; ``GraphTransport._run`` in
``graph.py`` performs each step blocking, ``AsyncGraphTransport._run`` with asyncio. A
step that fails is thrown back into the generator, where the rules see it. So the two
transports keep no hand-written twins of these rules (as ``smtp/`` generates its blocking
driver from the asyncio one).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..delivery import policy
from ..delivery._retry import retry_delays
from ..envelope import Composed
from ..errors import (
    AuthenticationError,
    FluxMailException,
    GraphError,
    GraphThrottledError,
    MissingDependencyError,
)
from ..smtp._tokens import invalidate
from ._graph_wire import (
    PROBE_REFUSAL,
    Answer,
    GraphConfig,
    Throttle,
    failure,
)

T = TypeVar("T")
SEND, DRAFT, PROBE = "sendMail", "create draft", "test_connection"
_ACTION = {SEND: "sendMail", DRAFT: "messages", PROBE: "sendMail"}  # what -> URL path


@dataclass(frozen=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True)
class _Token:
    pass


@dataclass(frozen=True)
class _Exchange:
    what: str
    body: bytes
    token: str
    composed: Composed | None


_Step = _Sleep | _Token | _Exchange
_Plan = Generator[_Step, Any, T]


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise MissingDependencyError("Microsoft Graph", "oauth", "httpx") from None
    return httpx


def _http2() -> bool:
    import importlib.util

    return importlib.util.find_spec("h2") is not None


def _client_options(config: GraphConfig, ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    httpx = _httpx()
    half = config.timeout / 2  # a connection that cannot open fails before the deadline
    return {
        "timeout": httpx.Timeout(config.timeout, connect=half, pool=half),
        "http2": _http2(),
        "verify": ssl_context if ssl_context is not None else True,
        "follow_redirects": False,  # a redirect would carry the token elsewhere
        # trust_env stays on: HTTPS_PROXY and SSL_CERT_FILE apply, as for the token request
    }


class _Common:
    """Settings, the throttle and the retry rule shared by both transports."""

    def __init__(
        self,
        config: GraphConfig,
        *,
        max_retries: int = 0,
        retry_delay: float = 1.0,
        throttle: Throttle | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        _httpx()
        self.config = config
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.throttle = throttle if throttle is not None else Throttle()
        self._options = _client_options(config, ssl_context or config.ssl_context)
        self._tokens: set[str] = set()  # redacted from any Graph text quoted in an error

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.graph_url}, username={self.config.username!r})"

    def _judge(self, answer: Answer, what: str, composed: Composed | None) -> FluxMailException:
        error = failure(answer, what, composed, tuple(self._tokens))
        if isinstance(error, GraphThrottledError):
            self.throttle.hold(error.retry_after, cap=self.config.timeout)
        return error

    def _next_wait(self, exc: FluxMailException, delays: Iterator[float]) -> float | None:
        """None: give up. A throttled request waits at the throttle, not here."""
        if not policy.retryable(exc):
            return None
        delay = next(delays, None)
        if delay is None:
            return None
        return 0.0 if isinstance(exc, GraphThrottledError) else delay

    def _request(
        self, what: str, body: bytes, composed: Composed | None, ok: tuple[int, ...]
    ) -> _Plan[Answer]:
        """One request, with a fresh token once if Graph refused the cached one."""
        for fresh in (False, True):
            if fresh:
                invalidate(self.config.oauth2)
            token = yield _Token()
            self._tokens.add(token)
            wait = self.throttle.remaining()
            if wait:
                yield _Sleep(wait)
            answer = yield _Exchange(what, body, token, composed)
            if answer.status in ok:
                return answer  # type: ignore[no-any-return]
            error = self._judge(answer, what, composed)
            if not isinstance(error, AuthenticationError) or fresh:
                raise error
        raise AssertionError("unreachable")  # pragma: no cover

    def _retrying(self, attempt: Callable[[], _Plan[T]]) -> _Plan[T]:
        """``attempt`` again after what the delivery policy calls transient, within
        ``max_retries`` (a throttled request waits at the throttle instead)."""
        delays = retry_delays(self.max_retries, self.retry_delay)
        while True:
            try:
                return (yield from attempt())
            except FluxMailException as exc:
                wait = self._next_wait(exc, delays)
                if wait is None:
                    raise
            if wait:
                yield _Sleep(wait)

    @staticmethod
    def _probe_result(config: GraphConfig, answer: Answer, started: float) -> dict[str, Any]:
        from ._graph_wire import graph_error

        code, _ = graph_error(answer.body)
        if answer.status != 400 or code != PROBE_REFUSAL:
            raise GraphError(
                f"Microsoft Graph test_connection: unexpected HTTP {answer.status} "
                f"({code or 'no error code'})",
                status=answer.status,
                graph_code=code,
            )
        return {
            "ok": True,
            "graph_url": config.graph_url,
            "mailbox": config.username,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "authenticated": True,
            "http2_available": _http2(),  # used when Graph offers it (https only)
        }
