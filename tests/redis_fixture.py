"""A real Redis server and real Celery worker processes for the fluxmail[celery] tests.

* :class:`RedisServer` runs ``redis-server --port <free> --save '' --appendonly no`` on
  127.0.0.1 in a temporary directory; the ``redis_server`` fixture starts one per test
  and stops it. ``RedisServer(persist=True)`` keeps an append-only file fsynced on every
  write (``appendfsync always``), so that a test can ``kill()`` it by PID and
  ``restart()`` it on the same port with its data (``restart(empty=True)``: without);
  ``password`` sets ``requirepass``. A missing ``redis-server`` FAILS the test
  (``apt-get install redis-server``): these tests are never skipped silently.
* :class:`WorkerProcess` runs ``celery -A celery_app worker`` (tests/celery_app.py) in
  its own process group, so a test can SIGKILL the whole worker like a crashed machine;
  the ``celery_workers`` fixture stops every worker it started.

The SMTP server stays in the test process (aiosmtpd on 127.0.0.1); workers reach it
through FLUXMAIL_HOST / FLUXMAIL_PORT, and build their mailer with FluxMail.from_env().
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
HOST = "127.0.0.1"
MISSING = (
    "redis-server is not installed: apt-get install redis-server "
    "(the fluxmail[celery] tests need a real Redis; .ci/run installs it)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One throwaway redis-server on 127.0.0.1 (no persistence unless ``persist``)."""

    def __init__(self, *, persist: bool = False, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(MISSING, pytrace=False)
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="fluxmail-redis-")
        self.persist = persist
        self.password = password  # requirepass, when given
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        from urllib.parse import quote

        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        for _ in range(5):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            if self._launch():
                return self
        raise RuntimeError(f"redis-server did not start; see {self.dir}/redis.log")

    def _launch(self) -> bool:
        command = [self.binary, "--bind", HOST, "--port", str(self.port), "--save", ""]
        if self.persist:
            command += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            command += ["--appendonly", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        command += ["--dir", self.dir, "--logfile", "redis.log"]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self._ready(10.0):
            return True
        self.stop()
        return False

    @property
    def pid(self) -> int:
        assert self.proc is not None, "redis-server is not running"
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the server by its PID (a crash: no shutdown, no final save)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def restart(self, *, empty: bool = False) -> None:
        """Start again on the same port, from its append-only file (or ``empty``)."""
        assert self.proc is None, "kill() or stop() it first"
        if empty:
            for entry in Path(self.dir).iterdir():
                if entry.name != "redis.log":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        deadline = time.monotonic() + 10
        while not self._launch():  # the port may linger for a moment after the kill
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not restart; see {self.dir}/redis.log")
            time.sleep(0.1)

    def _ready(self, seconds: float) -> bool:
        import redis

        client = redis.Redis(host=HOST, port=self.port, password=self.password, socket_timeout=1)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return True
                time.sleep(0.02)
            return False
        finally:
            client.close()

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class WorkerProcess:
    """``celery -A celery_app worker`` in its own session (process group)."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "celery", "-A", "celery_app", "worker"]
        command += ["--pool", env.get("FLUXMAIL_TEST_POOL", "prefork"), "--concurrency", "1"]
        command += ["--hostname", f"{name}@fluxmail-tests", "--loglevel", "INFO"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.proc = subprocess.Popen(
            command,
            cwd=TESTS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once (a crashed machine)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # pool children left behind, if any
        self._log.close()


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A fresh redis-server for this test (FAILS when redis-server is not installed).
    ``@pytest.mark.parametrize("redis_server", [{"persist": True}], indirect=True)``
    gives it an append-only file."""
    server = RedisServer(**getattr(request, "param", {})).start()
    try:
        yield server
    finally:
        server.cleanup()


StartWorkers = Callable[..., list[WorkerProcess]]


@pytest.fixture
def celery_workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[StartWorkers]:
    """``start(count, smtp_host=..., smtp_port=..., env={...}, **settings)`` starts
    ``count`` worker processes on ``redis_server`` (more FLUXMAIL_* variables in ``env``)
    and waits until each is ready; all stop at teardown."""
    started: list[WorkerProcess] = []

    def start(
        count: int,
        *,
        smtp_host: str,
        smtp_port: int,
        timeout: float = 5.0,
        env: dict[str, str] | None = None,
        **settings: Any,
    ) -> list[WorkerProcess]:
        env = {**os.environ, **(env or {})}
        env.update(
            FLUXMAIL_HOST=smtp_host,
            FLUXMAIL_PORT=str(smtp_port),
            FLUXMAIL_TIMEOUT=str(timeout),
            FLUXMAIL_TEST_REDIS_URL=redis_server.url,
            FLUXMAIL_TEST_SETTINGS=json.dumps(settings),
            PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        new = []
        for _ in range(count):
            name = f"w{len(started) + 1}"
            worker = WorkerProcess(name, env, tmp_path / f"{name}.log")
            started.append(worker)
            new.append(worker)
        for worker in new:
            _wait_ready(redis_server, worker)
        return new

    yield start
    for worker in started:
        worker.stop()


def _wait_ready(redis_server: RedisServer, worker: WorkerProcess, seconds: float = 60) -> None:
    client = redis_server.client()
    key = f"fluxmail-tests:ready:{worker.name}@fluxmail-tests"
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if client.exists(key):
                return
            if not worker.alive:
                pytest.fail(f"worker {worker.name} exited:\n{worker.log_tail()}")
            time.sleep(0.05)
    finally:
        client.close()
    pytest.fail(f"worker {worker.name} not ready after {seconds}s:\n{worker.log_tail()}")
