"""The async pool's cheap paths, against real servers, compared with the plain behaviour.

- The lane (``bulk/_lane.py``) replaced an ``asyncio.Queue`` plus a put task per full
  queue: a pool over a slow async input, a pool stopped by a connection while the
  producer waits for room, and a pool cancelled by a callback each keep every message
  exactly once.
- A message written ahead lets the event loop run before its data only when a
  cancellation is pending (``_pipeline._cancelling``): the connection's loop with hooks
  that say so behaves as the plain one (hooks without ``cancelling()``, which always
  let the event loop run) when a callback cancels the task.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import BulkSender, FluxMail
from fluxmail.envelope import Composed
from fluxmail.errors import AuthenticationError, FluxMailException
from fluxmail.smtp import SendResult
from fluxmail.transports.smtp import SMTPTransport
from hardening import batch, run_batch
from servers import FaultServer, SMTPTestServer

MakeFault = Callable[..., FaultServer]


def _states(path: Path) -> dict[int, str]:
    lines = path.read_text().splitlines()[1:]
    return {r["i"]: r["s"] for r in map(json.loads, lines)}


def test_a_pool_over_a_slow_async_input_sends_each_message_once(
    make_fault_server: MakeFault,
) -> None:
    """Connections wait on the lane for a slow input and are woken in turn."""
    server = make_fault_server()
    messages = batch(12)

    async def slowly() -> AsyncIterator[dict[str, Any]]:
        for message in messages:
            await asyncio.sleep(0.005)
            yield message

    sender = BulkSender(FluxMail(**server.fluxmail_kwargs()), connections=4)
    result = asyncio.run(sender.send_batch_async(slowly(), progress=False))
    assert (result["sent"], result["failed"], result["total"]) == (12, 0, 12)
    subjects = sorted(m.message["Subject"] for m in server.messages)
    assert subjects == sorted(m["subject"] for m in messages)
    assert set(collections.Counter(server.message_ids()).values()) == {1}


def test_a_pool_stopped_while_the_producer_waits_for_room(
    starttls_server: SMTPTestServer,
) -> None:
    """Every connection fails to authenticate while the lane is full: the producer is
    woken by the first connection that ends and raises its error."""
    mailer = FluxMail(**starttls_server.fluxmail_kwargs(password="wrong"))
    sender = BulkSender(mailer, connections=3)
    with pytest.raises(AuthenticationError) as info:
        asyncio.run(sender.send_batch_async(batch(40), progress=False))
    assert info.value.code == "authentication_failed"
    result = info.value.batch_result
    assert (result["total"], result["sent"]) == (40, 0)
    assert starttls_server.messages == []


def test_a_pool_cancelled_by_a_callback_sends_nothing_twice(
    make_fault_server: MakeFault, tmp_path: Path
) -> None:
    """Cancelled mid-batch over 3 connections, then resumed: no message is accepted
    twice; each one is accepted or, its dot having been written when the cancellation
    landed, reported unknown (and then accepted once by the server)."""
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(30)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None

        def on_success(index: int, receipt: str) -> None:
            if index == 10:
                task.cancel()

        sender = BulkSender(FluxMail(**server.fluxmail_kwargs()), connections=3, journal=path)
        await sender.send_batch_async(messages, progress=False, on_success=on_success)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    # the connection whose callback cancelled had its next message written ahead
    assert "deferred" in _states(path).values()
    accepted_first = len(server.messages)
    assert 10 < accepted_first < 30
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), messages, "async", journal=path)
    counts = collections.Counter(server.message_ids())
    assert len(counts) == 30
    assert set(counts.values()) == {1}
    assert all(exc.code == "outcome_unknown" for _, exc in result["errors"])
    assert result["sent"] + result["skipped"] + result["failed"] == 30


class _Recorder:
    """Hooks for ``send_many_async`` that cancel the connection's task at ``stop``;
    ``fast`` gives them ``cancelling()`` (the cheap path), else they have none (plain)."""

    def __init__(self, stop: int, fast: bool) -> None:
        self.stop = stop
        self.events: list[tuple[str, int]] = []
        if fast:
            self.cancelling = lambda: False  # (the connection's own task tells)

    def ready(self, key: int, composed: Composed) -> bool:
        self.events.append(("start", key))
        return True

    async def start(self, key: int, composed: Composed) -> None:
        self.events.append(("start", key))

    def finished(self, key: int, outcome: SendResult | FluxMailException) -> None:
        self.events.append(("finished", key))
        if key == self.stop:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()

    def abandoned(self, key: int, error: BaseException) -> None:
        self.events.append(("abandoned", key))


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "cancelling-hook"])
def test_a_cancellation_from_a_callback_lands_before_the_written_ahead_data(
    make_fault_server: MakeFault, fast: bool
) -> None:
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs())
    composed = [mailer.compose(mailer.build_message(**spec)) for spec in batch(5)]
    hooks = _Recorder(stop=1, fast=fast)

    async def main() -> None:
        source: asyncio.Queue[tuple[int, Composed] | None] = asyncio.Queue()
        for item in enumerate(composed):
            source.put_nowait(item)
        source.put_nowait(None)
        await SMTPTransport(server.smtp_config()).send_many_async(source, hooks)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    server.wait_closed()
    # message 2 went out ahead (its envelope) and was abandoned before its data
    assert hooks.events == [
        ("start", 0),
        ("start", 1),
        ("finished", 0),
        ("start", 2),
        ("finished", 1),
        ("abandoned", 2),
    ]
    assert server.completed() == [True, True, False]
    assert len(server.messages) == 2
