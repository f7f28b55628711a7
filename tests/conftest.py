"""Shared fixtures: real SMTP servers on 127.0.0.1 (see tests/servers.py), the engine in
both flavours (``connect``), and Django configured once per process."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine_client import Client
from fluxmail.smtp._options import SmtpConfig
from helpers import configure_django
from oauth_servers import TokenEndpoint
from servers import FaultServer, Script, SMTPTestServer, TLSMaterial, tls_material

# Resources left open. Every other warning is an error (pyproject.toml), but a socket or
# transport dropped unclosed is reported by the garbage collector whenever it runs, which
# would fail whatever test happens to run next. So ResourceWarning is shown, not raised
# (pyproject.toml), and garbage is collected after every test, so that each one shows in
# the warnings summary under the test that left it. Known: a CeleryFleet's Redis clients
# (its claim store, its rate limiter's storage) are not closed by ``fleet.close()``.


@pytest.fixture(autouse=True)
def _collect_what_each_test_leaves() -> Iterator[None]:
    yield
    gc.collect()


def pytest_configure(config: pytest.Config) -> None:
    # Django's settings are process-wide: configured here, before any test module is
    # imported, so no test depends on another module having been imported first.
    configure_django()


@pytest.fixture(scope="session")
def tls_ca() -> TLSMaterial:
    """The trusted (and the untrusted) trustme CA, created once per worker."""
    return tls_material()


@pytest.fixture
def make_server(tls_ca: TLSMaterial) -> Iterator[Callable[..., SMTPTestServer]]:
    """Factory: ``make_server(tls="starttls", auth=True, reject_rcpt={...}, ...)``.

    Options are those of :class:`servers.SMTPTestServer`; every server started is
    stopped at teardown.
    """
    started: list[SMTPTestServer] = []

    def factory(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(**options).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server(make_server: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """Plain SMTP, no TLS, no AUTH."""
    return make_server()


@pytest.fixture
def starttls_server(make_server: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """STARTTLS offered and required; AUTH PLAIN/LOGIN required (after TLS)."""
    return make_server(tls="starttls", auth=True)


@pytest.fixture
def ssl_server(make_server: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """Implicit TLS (port-465 style) with AUTH PLAIN/LOGIN required."""
    return make_server(tls="ssl", auth=True)


@pytest.fixture
def untrusted_server(make_server: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """STARTTLS with a certificate from a CA the client does not trust."""
    return make_server(tls="starttls", untrusted=True)


@pytest.fixture
def make_fault_server(tls_ca: TLSMaterial) -> Iterator[Callable[..., FaultServer]]:
    """Factory: ``make_fault_server({"DOT": Close()}, capabilities=(...), tls=True)``."""
    started: list[FaultServer] = []

    def factory(script: Script | None = None, **options: Any) -> FaultServer:
        server = FaultServer(script, **options).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[[SmtpConfig], Client]]:
    """Factory: ``connect(config)`` gives the engine (sync, then async) behind one API."""
    loop = asyncio.new_event_loop()
    clients: list[Client] = []

    def factory(config: SmtpConfig) -> Client:
        client = Client(request.param, config, loop)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
    loop.close()


# Redis and Celery worker processes for the fluxmail[celery] tests (tests/redis_fixture.py).
from redis_fixture import celery_workers, redis_server  # noqa: E402, F401


@pytest.fixture
def make_endpoint() -> Iterator[Callable[..., TokenEndpoint]]:
    """Factory: ``make_endpoint(**options)`` starts a real local OAuth2 token endpoint
    (``oauth_servers.TokenEndpoint``); every one started is stopped at teardown."""
    started: list[TokenEndpoint] = []

    def factory(**options: Any) -> TokenEndpoint:
        endpoint = TokenEndpoint(**options).start()
        started.append(endpoint)
        return endpoint

    yield factory
    for endpoint in started:
        endpoint.stop()
