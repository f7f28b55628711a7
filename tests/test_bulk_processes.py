"""``BulkSender(..., compose_processes=N)``: composing in worker processes, against real
servers. Every message reaches the server exactly once; what fails in a worker fails the
same way it fails in the event loop; a chunk that cannot reach a worker (or a worker
that dies) is composed in the parent; a stopped or cancelled batch sends nothing twice."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import pickle
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import BulkSender, FluxMail
from fluxmail.bulk._processes import portable
from fluxmail.errors import ConfigurationError, FluxMailException
from hardening import batch
from helpers import max_in_any_window
from servers import FaultServer, SMTPTestServer

MakeFault = Callable[..., FaultServer]


def run(sender: BulkSender, messages: Any, **options: Any) -> Any:
    options.setdefault("progress", False)
    return asyncio.run(sender.send_batch_async(messages, **options))


def exactly_once(server: SMTPTestServer | FaultServer, messages: list[dict[str, Any]]) -> None:
    accepted = collections.Counter(server.message_ids())
    assert len(accepted) == len(messages)
    assert set(accepted.values()) == {1}
    subjects = sorted(m.message["Subject"] for m in server.messages)
    assert subjects == sorted(m["subject"] for m in messages)


def _in_a_worker(path: str, text: str) -> str:
    """Run where the message is unpickled: records that process, gives back ``text``."""
    with open(path, "a") as file:
        file.write(f"{os.getpid()}\n")
    return text


class _WorkerOnly:
    """A subject that is a string only once unpickled in a worker: composed in the
    event loop's process, it is refused (not a string); in a worker, it records its PID."""

    def __init__(self, path: Path, text: str) -> None:
        self.args = (str(path), text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_in_a_worker, self.args)


def _pids(path: Path) -> set[int]:
    return {int(line) for line in path.read_text().split()}


def test_every_message_once_over_a_pool_of_connections(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    marks = tmp_path / "pids"
    messages = batch(150)
    specs = [dict(m, subject=_WorkerOnly(marks, m["subject"])) for m in messages]
    sender = BulkSender(FluxMail(**smtp_server.fluxmail_kwargs()), compose_processes=2)
    sent: list[int] = []
    result = run(sender, specs, connections=4, on_success=lambda i, _: sent.append(i))
    assert (result["sent"], result["failed"], result["total"]) == (150, 0, 150), result["errors"]
    assert sorted(sent) == list(range(150))
    exactly_once(smtp_server, messages)
    assert os.getpid() not in _pids(marks)  # every message was composed in a worker


def test_a_generator_and_an_async_generator(smtp_server: SMTPTestServer) -> None:
    messages = batch(40)

    async def produce() -> Any:
        for message in messages:
            await asyncio.sleep(0)
            yield message

    sender = BulkSender(FluxMail(**smtp_server.fluxmail_kwargs()), compose_processes=1)
    assert run(sender, iter(messages[:20]), connections=2)["sent"] == 20
    assert run(sender, produce(), connections=2)["total"] == 40
    assert len(smtp_server.messages) == 60


def test_a_slow_input_does_not_hold_back_what_is_composed(smtp_server: SMTPTestServer) -> None:
    """An input that yields its next message only once the previous one was delivered
    (a queue fed by the application, say): each message goes out on its own."""
    messages = batch(8)
    delivered = 0

    async def main() -> Any:
        progress = asyncio.Event()

        def on_success(index: int, receipt: str) -> None:
            nonlocal delivered
            delivered += 1
            progress.set()

        async def one_at_a_time() -> Any:
            for number, message in enumerate(messages):
                yield message
                while delivered <= number:  # (a bug would wait here for ever)
                    progress.clear()
                    await asyncio.wait_for(progress.wait(), 30)

        sender = BulkSender(FluxMail(**smtp_server.fluxmail_kwargs()), compose_processes=2)
        return await sender.send_batch_async(
            one_at_a_time(), progress=False, connections=2, on_success=on_success
        )

    assert asyncio.run(main())["sent"] == 8
    exactly_once(smtp_server, messages)


def _bad_batch() -> list[dict[str, Any]]:
    messages = batch(10)
    messages[2]["recipients"] = ["not an address"]
    messages[5]["attachments"] = ["/no/such/file.pdf"]
    messages[7]["subject"] = "bad\r\nBcc: someone@example.com"
    messages[8] = {"subject": "x", "recipients": ["a@example.com"], "body": "b", "bogus": 1}
    return messages


def test_a_failure_in_a_worker_is_the_failure_of_the_event_loop(
    smtp_server: SMTPTestServer,
) -> None:
    """The same indices fail with the same class, code and text as when composed in the
    event loop, each alone (the callback sees them); the rest is delivered once."""
    mailer = FluxMail(**smtp_server.fluxmail_kwargs())
    outcomes = {}
    for processes in (0, 2):
        seen: list[tuple[int, str]] = []
        result = run(
            BulkSender(mailer, compose_processes=processes),
            _bad_batch(),
            connections=2,
            on_error=lambda i, exc: seen.append((i, exc.code)),  # noqa: B023 (called now)
        )
        errors = [(i, type(e), e.code, str(e)) for i, e in result["errors"]]
        outcomes[processes] = (result["sent"], result["failed"], sorted(errors), sorted(seen))
    assert outcomes[2] == outcomes[0]
    sent, failed, errors, _ = outcomes[2]
    assert (sent, failed) == (6, 4)
    assert [i for i, *_ in errors] == [2, 5, 7, 8]
    assert all(issubclass(cls, FluxMailException) for _, cls, _, _ in errors)
    assert len(smtp_server.message_ids()) == 12
    assert len(set(smtp_server.message_ids())) == 12


def test_an_argument_that_does_not_pickle_is_composed_here(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    messages: list[Any] = batch(6)
    messages[3] = types.MappingProxyType(messages[3])  # a Mapping that cannot be pickled
    messages[0] = dict(messages[0], subject=_WorkerOnly(tmp_path / "pids", "message 0"))
    sender = BulkSender(FluxMail(**smtp_server.fluxmail_kwargs()), compose_processes=1)
    result = run(sender, messages)  # message 0 alone (idle workers), then 1-5: one chunk
    assert (result["sent"], result["failed"]) == (6, 0), result["errors"]
    assert os.getpid() not in _pids(tmp_path / "pids")
    exactly_once(smtp_server, [dict(m, subject=f"message {i}") for i, m in enumerate(messages)])


def _die(path: str) -> None:
    Path(path).touch()
    os._exit(3)


class _KillsTheWorker:
    """Unpickled in a worker, it ends that process on the spot (leaving a file behind)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_die, (self.path,))


def test_a_worker_that_dies_leaves_its_chunk_to_the_parent(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    """The pool breaks; every chunk it held is composed in the parent: the poisoned message
    fails as it would there (a header value that is no string), the others go out once."""
    messages = batch(100)
    messages[40]["headers"] = {"X-Poison": _KillsTheWorker(tmp_path / "died")}
    sender = BulkSender(FluxMail(**smtp_server.fluxmail_kwargs()), compose_processes=2)
    result = run(sender, messages, connections=3)
    assert (tmp_path / "died").exists()  # a worker did get it, and died
    assert (result["sent"], result["failed"]) == (99, 1)
    [(index, error)] = result["errors"]
    assert index == 40
    assert isinstance(error, FluxMailException)
    exactly_once(smtp_server, messages[:40] + messages[41:])


def test_the_rate_limit_holds_across_connections(smtp_server: SMTPTestServer) -> None:
    """Workers compose far ahead of the limit; the limit still holds at the server."""
    sender = BulkSender(FluxMail(**smtp_server.fluxmail_kwargs()), compose_processes=2)
    result = run(sender, batch(25), connections=4, max_per_second=10)
    assert result["sent"] == 25
    times = sorted(m.received_at for m in smtp_server.messages)
    assert max_in_any_window(times) <= 10
    assert times[-1] - times[0] >= 2.0  # 25 messages at 10/s take at least ~2.5 s


def _states(path: Path) -> dict[int, str]:
    records = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    return {r["i"]: r["s"] for r in records}


def _resume_once(server: FaultServer, messages: list[dict[str, Any]], path: Path) -> None:
    sender = BulkSender(FluxMail(**server.fluxmail_kwargs()), journal=path, compose_processes=2)
    result = run(sender, messages)
    assert result["failed"] == 0, result["errors"]
    assert result["sent"] + result["skipped"] == len(messages)
    exactly_once(server, messages)


def test_cancellation_sends_nothing_twice(make_fault_server: MakeFault, tmp_path: Path) -> None:
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(60)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None

        def on_success(index: int, receipt: str) -> None:
            if index == 20:
                task.cancel()

        sender = BulkSender(FluxMail(**server.fluxmail_kwargs()), journal=path)
        sender.compose_processes = 2
        await sender.send_batch_async(messages, progress=False, on_success=on_success)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    stopped_at = len(server.messages)
    assert 21 <= stopped_at < 60
    assert "sending" not in _states(path).values()  # written ahead: deferred, not unknown
    _resume_once(server, messages, path)


def test_an_interrupt_from_a_callback(make_fault_server: MakeFault, tmp_path: Path) -> None:
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(40)

    def on_success(index: int, receipt: str) -> None:
        if index == 10:
            raise KeyboardInterrupt

    sender = BulkSender(FluxMail(**server.fluxmail_kwargs()), journal=path, compose_processes=2)
    with pytest.raises(KeyboardInterrupt):
        run(sender, messages, on_success=on_success)
    assert len(server.messages) == 11
    assert "sending" not in _states(path).values()
    _resume_once(server, messages, path)


def test_the_journal_skips_what_an_earlier_run_sent(
    make_fault_server: MakeFault, tmp_path: Path
) -> None:
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(30)
    first = BulkSender(FluxMail(**server.fluxmail_kwargs()), journal=path, compose_processes=1)
    assert run(first, messages[:12])["sent"] == 12
    again = BulkSender(FluxMail(**server.fluxmail_kwargs()), journal=path, compose_processes=1)
    result = run(again, messages)
    assert (result["sent"], result["skipped"]) == (18, 12)
    exactly_once(server, messages)


def _without_date(data: bytes) -> bytes:
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"Date:"))


def test_the_workers_compose_alike_and_never_get_the_password() -> None:
    mailer = FluxMail(host="127.0.0.1", port=2525, username="u", password="s3cret-pw")
    clone = portable(mailer)
    assert b"s3cret-pw" not in pickle.dumps(clone)
    assert mailer.config is not None
    assert mailer.transport is not None
    spec = batch(1)[0]
    made = [
        m.compose(m.build_message(**spec), message_id="<x@example.com>") for m in (clone, mailer)
    ]
    assert made[0].envelope == made[1].envelope
    assert _without_date(made[0].data) == _without_date(made[1].data)


@pytest.mark.parametrize("value", [-1, True, 1.5, "2"])
def test_compose_processes_is_checked(smtp_server: SMTPTestServer, value: object) -> None:
    with pytest.raises(ConfigurationError, match="compose_processes"):
        BulkSender(FluxMail(**smtp_server.fluxmail_kwargs()), compose_processes=value)  # type: ignore[arg-type]
