"""Shared fixtures: real SMTP servers on 127.0.0.1 (see tests/servers.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from servers import FaultServer, Script, SMTPTestServer, TLSMaterial, tls_material


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


@pytest.fixture(autouse=True)
def _fresh_default_tls_context() -> Iterator[None]:
    """The engine builds its default TLS context once per process, from SSL_CERT_FILE as
    it is then. Tests set that variable to the test CA, or leave it unset to check the
    system store; forgetting the context after each test keeps them from depending on
    which ran first in a worker."""
    yield
    common = sys.modules.get("fluxmail.smtp._common")
    if common is not None:
        common._default_context = None  # type: ignore[attr-defined]


# Redis and Celery worker processes for the fluxmail[celery] tests (tests/redis_fixture.py).
from redis_fixture import celery_workers, redis_server  # noqa: E402, F401
