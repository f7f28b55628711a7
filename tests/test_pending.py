"""create() here, send() there: the pending message belongs to the context that created it
and can be sent from any thread (``_pending``), against a real server."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fluxmail import FluxMail
from fluxmail.errors import NoMessageError
from servers import SMTPTestServer


def mailer_for(server: SMTPTestServer) -> FluxMail:
    return FluxMail(object_type="smtp", host="127.0.0.1", port=server.port, sender="a@example.com")


def subjects(server: SMTPTestServer) -> list[str]:
    return [str(received.message["Subject"]) for received in server.messages]


def test_create_then_asyncio_to_thread_send(smtp_server: SMTPTestServer) -> None:
    mailer = mailer_for(smtp_server)

    async def handler() -> str:  # the FastAPI pattern
        mailer.create(subject="to_thread", recipients=["b@example.com"], body="x")
        return await asyncio.to_thread(mailer.send)

    assert asyncio.run(handler()) == "Email sent successfully via SMTP."
    assert subjects(smtp_server) == ["to_thread"]
    with pytest.raises(NoMessageError):
        mailer.send()  # sent once, gone everywhere


def test_concurrent_tasks_each_send_their_own_through_to_thread(
    smtp_server: SMTPTestServer,
) -> None:
    mailer = mailer_for(smtp_server)

    async def request(n: int) -> None:
        mailer.create(subject=f"task {n}", recipients=["b@example.com"], body="x")
        await asyncio.sleep(0)  # let the other requests create theirs first
        await asyncio.to_thread(mailer.send)

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(8)))

    asyncio.run(main())
    assert sorted(subjects(smtp_server)) == sorted(f"task {n}" for n in range(8))


def test_create_then_run_in_executor_send(smtp_server: SMTPTestServer) -> None:
    mailer = mailer_for(smtp_server)

    async def handler() -> None:
        mailer.create(subject="executor", recipients=["b@example.com"], body="x")
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            await loop.run_in_executor(pool, mailer.send)

    asyncio.run(handler())
    assert subjects(smtp_server) == ["executor"]
    with pytest.raises(NoMessageError):
        mailer.send()


def test_create_in_one_thread_send_in_another(smtp_server: SMTPTestServer) -> None:
    mailer = mailer_for(smtp_server)
    mailer.create(subject="handed over", recipients=["b@example.com"], body="x")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            mailer.send()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(30)
    assert errors == []
    assert subjects(smtp_server) == ["handed over"]
    assert mailer.message is None
    with pytest.raises(NoMessageError):
        mailer.send()


def test_threads_that_each_create_and_send_send_their_own_once(
    smtp_server: SMTPTestServer,
) -> None:
    mailer = mailer_for(smtp_server)
    start = threading.Barrier(12)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for round_ in range(3):
                if round_ == 0:
                    start.wait()
                mailer.create(subject=f"t{n}-{round_}", recipients=["b@example.com"], body="x")
                mailer.send()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    expected = sorted(f"t{n}-{r}" for n in range(12) for r in range(3))
    assert sorted(subjects(smtp_server)) == expected  # each exactly once


def test_a_failed_send_keeps_the_message_for_another_try() -> None:
    mailer = FluxMail(object_type="smtp", host="127.0.0.1", port=1, sender="a@example.com")
    mailer.create(subject="again", recipients=["b@example.com"], body="x")
    with pytest.raises(ConnectionError):
        mailer.send()
    assert mailer.message is not None
    assert mailer.message.subject == "again"


def test_send_async_takes_the_message_at_once(smtp_server: SMTPTestServer) -> None:
    mailer = mailer_for(smtp_server)

    async def main() -> None:
        mailer.create(subject="async", recipients=["b@example.com"], body="x")
        pending = mailer.send_async()
        with pytest.raises(NoMessageError):
            await asyncio.to_thread(mailer.send)  # already taken by send_async()
        await pending

    asyncio.run(main())
    assert subjects(smtp_server) == ["async"]


def test_a_second_create_replaces_the_first(smtp_server: SMTPTestServer) -> None:
    mailer = mailer_for(smtp_server)
    mailer.create(subject="first", recipients=["b@example.com"], body="x")
    mailer.create(subject="second", recipients=["b@example.com"], body="x")

    def elsewhere() -> None:
        mailer.send()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(30)
    assert subjects(smtp_server) == ["second"]
    with pytest.raises(NoMessageError):
        mailer.send()


def test_dry_run_leaves_the_message(
    smtp_server: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    mailer = mailer_for(smtp_server)
    mailer.create(subject="dry", recipients=["b@example.com"], body="x")
    assert "dry" in mailer.send(dry_run=True)
    mailer.send()
    assert subjects(smtp_server) == ["dry"]
