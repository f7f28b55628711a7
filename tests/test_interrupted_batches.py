"""A batch stopped half-way and resumed with its journal: every message exactly once.

Three interruptions (issue #11): KeyboardInterrupt (raised from a callback), an exception
from the input iterable, and asyncio cancellation. Each time the message whose envelope
was written ahead (behind the previous final dot) sent none of its data, so it must be
journaled ``deferred``, not ``sending``: the resumed run sends it. The count that matters
is at the server: each Message-ID accepted exactly once, none missing.
"""

from __future__ import annotations

import asyncio
import collections
import json
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxmail import BulkSender, FluxMail
from hardening import MODES, batch, run_batch
from servers import FaultServer, SMTPTestServer

MakeFault = Callable[..., FaultServer]
TOTAL = 6
STOP = 2  # the batch stops once message 2 is done; message 3 went out ahead


def journal(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def last_states(path: Path) -> dict[int, str]:
    return {r["i"]: r["s"] for r in journal(path)}


def check_stopped(path: Path, *, ahead: int | None) -> None:
    """Nothing is left ``sending``; the message written ahead, if any, is deferred."""
    states = last_states(path)
    assert "sending" not in states.values(), states
    if ahead is not None:
        assert any(r["i"] == ahead and r["s"] == "sending" for r in journal(path))
        assert states[ahead] == "deferred"


def resume_and_count(server: FaultServer, messages: list[dict[str, Any]], path: Path, mode: str):
    mailer = FluxMail(**server.fluxmail_kwargs())
    result = run_batch(mailer, messages, mode, journal=path)
    assert result["failed"] == 0, result["errors"]
    assert result["sent"] + result["skipped"] == TOTAL
    accepted = collections.Counter(server.message_ids())
    assert len(accepted) == TOTAL
    assert set(accepted.values()) == {1}  # every message exactly once
    subjects = sorted(m.message["Subject"] for m in server.messages)
    assert subjects == sorted(m["subject"] for m in messages)


@pytest.mark.parametrize("mode", MODES)
def test_keyboard_interrupt(make_fault_server: MakeFault, tmp_path: Path, mode: str) -> None:
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(TOTAL)

    def on_success(index: int, receipt: str) -> None:
        if index == STOP:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(
            FluxMail(**server.fluxmail_kwargs()),
            messages,
            mode,
            journal=path,
            on_success=on_success,
        )
    assert len(server.messages) == STOP + 1
    check_stopped(path, ahead=STOP + 1)
    resume_and_count(server, messages, path, mode)


def _breaking(
    messages: list[dict[str, Any]], at: int, error: type[BaseException] = RuntimeError
) -> Iterator[dict[str, Any]]:
    for index, message in enumerate(messages):
        if index == at:
            raise error("the input broke")
        yield message


async def _breaking_async(messages: list[dict[str, Any]], at: int) -> AsyncIterator[Any]:
    for message in _breaking(messages, at):
        yield message


@pytest.mark.parametrize(
    ("mode", "source"),
    [("sync", "sync-iterable"), ("async", "sync-iterable"), ("async", "async-iterable")],
)
def test_the_input_raises(
    make_fault_server: MakeFault, tmp_path: Path, mode: str, source: str
) -> None:
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(TOTAL)
    broken = 4
    stream = (_breaking if source == "sync-iterable" else _breaking_async)(messages, broken)
    with pytest.raises(RuntimeError, match="the input broke"):
        run_batch(FluxMail(**server.fluxmail_kwargs()), stream, mode, journal=path)
    # sync: the next message is taken from the input before the current one is sent, so
    # message 3, written ahead behind message 2's dot, was stopped short. async: what
    # was taken from the input before it broke still went out.
    sent = broken - 1 if mode == "sync" else broken
    assert len(server.messages) == sent
    check_stopped(path, ahead=broken - 1 if mode == "sync" else None)
    resume_and_count(server, messages, path, mode)


def test_an_interrupt_from_the_input_comes_at_a_safe_point(
    make_fault_server: MakeFault, tmp_path: Path
) -> None:
    """The input of a blocking batch is read only when no final dot awaits its reply: a
    KeyboardInterrupt raised by it leaves every message sent with its outcome."""
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(TOTAL)
    broken = 4
    with pytest.raises(KeyboardInterrupt):
        run_batch(
            FluxMail(**server.fluxmail_kwargs()),
            _breaking(messages, broken, KeyboardInterrupt),
            "sync",
            journal=path,
        )
    assert len(server.messages) == broken - 1
    assert last_states(path)[broken - 2] == "accepted"
    check_stopped(path, ahead=broken - 1)
    resume_and_count(server, messages, path, "sync")


def test_an_interrupt_while_composing_stops_before_any_retry(make_server: Any) -> None:
    """A Ctrl-C while the message after next is composed (in the wait for a final dot's
    reply) is raised as soon as the message in flight has its outcome: a 451 on its dot
    is its outcome then, not a reason to try again."""
    server = make_server(fail={"DOT": 451})

    class Interrupted(FluxMail):
        def compose(self, message: Any = None, *, message_id: str | None = None) -> Any:
            if message is not None and message.subject == "message 2":
                raise KeyboardInterrupt
            return super().compose(message, message_id=message_id)

    errors: list[tuple[int, str]] = []
    mailer = Interrupted(**server.fluxmail_kwargs(), max_retries=3, retry_delay=0.5)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_batch(mailer, batch(TOTAL), "sync", on_error=lambda i, e: errors.append((i, e.code)))
    assert time.monotonic() - started < 0.5  # no retry delay slept
    assert server.connections == 1  # no new connection for a retry
    assert errors == [(0, "message_refused")]  # message 0's outcome: its 451, once


def test_a_slow_input_never_holds_a_reply_unread(tmp_path: Path) -> None:
    """A process killed while its input is slow has every message the server accepted
    journaled as accepted (the input is not read while a dot awaits its reply)."""
    server = SMTPTestServer().start()
    try:
        path = tmp_path / "run.jsonl"
        child = multiprocessing.get_context("fork").Process(
            target=_send_slowly, args=(server.fluxmail_kwargs(), str(path))
        )
        child.start()
        deadline = time.monotonic() + 10
        while len(server.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the input is asleep now
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join()
        states = last_states(path)
        received = {str(m.message["Subject"]) for m in server.messages}
        assert received  # something went out before the kill
        for index, state in states.items():
            if f"message {index}" in received:
                assert state == "accepted", states
    finally:
        server.stop()


def _send_slowly(kwargs: dict[str, Any], path: str) -> None:
    def slow() -> Iterator[dict[str, Any]]:
        for index, message in enumerate(batch(TOTAL)):
            if index == 3:
                time.sleep(30)  # waiting for work
            yield message

    BulkSender(FluxMail(**kwargs), journal=path).send_batch(slow(), progress=False)


def test_asyncio_cancellation(make_fault_server: MakeFault, tmp_path: Path) -> None:
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(TOTAL)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None

        def on_success(index: int, receipt: str) -> None:
            if index == STOP:
                task.cancel()

        sender = BulkSender(FluxMail(**server.fluxmail_kwargs()), journal=path)
        await sender.send_batch_async(messages, progress=False, on_success=on_success)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert len(server.messages) == STOP + 1
    check_stopped(path, ahead=STOP + 1)
    resume_and_count(server, messages, path, "async")
