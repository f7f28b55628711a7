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
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxmail import BulkSender, FluxMail
from hardening import MODES, batch, run_batch
from servers import FaultServer

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


def test_an_interrupt_while_a_dot_is_answered_waits_for_the_answer(
    make_fault_server: MakeFault, tmp_path: Path
) -> None:
    """Sync batches compose the message after next while the replies to a final dot are
    awaited: a KeyboardInterrupt raised there (by the input) waits for those replies, so
    the message whose dot was written gets its outcome instead of an unknown one."""
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(TOTAL)
    broken = 4  # taken while message 2's dot (and message 3's envelope) is answered
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
