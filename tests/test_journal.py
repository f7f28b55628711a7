"""BulkSender's journal: a batch killed half-way (SIGKILL, in a real subprocess) and run
again with the same journal and the same messages sends exactly the rest. Only messages
recorded as unknown may be duplicated, and only with ``resend_unknown=True`` (then with
their original Message-ID). Rules 9 and 10 of docs/security.md, across runs.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import BulkSender, ConfigurationError, ConnectError, FluxMail
from fluxmail.delivery._journal import HEADER, Journal, JournalMismatchError, message_key
from hardening import MODES, assert_nothing_lost, batch, run_batch
from servers import Close, FaultServer, FaultSession, Reply, Stall

MakeFault = Callable[..., FaultServer]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def states(path: Path) -> dict[int, str]:
    """The last state of every message in the journal."""
    return {r["i"]: r["s"] for r in records(path)[1:]}


def first_ids(path: Path) -> dict[int, str]:
    """The Message-ID each message was first sent with."""
    ids: dict[int, str] = {}
    for record in records(path)[1:]:
        if "mid" in record:
            ids.setdefault(record["i"], record["mid"])
    return ids


# --- the file ------------------------------------------------------------------------------


def test_file_format_and_keys(tmp_path: Path, make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    messages = batch(3)
    result = run_batch(FluxMail(**server.fluxmail_kwargs()), messages, "sync", journal=path)
    assert result == {"sent": 3, "failed": 0, "total": 3, "errors": [], "skipped": 0}
    lines = records(path)
    assert lines[0] == HEADER
    # PIPELINING: message i+1's "sending" comes before the write that carries message
    # i's final dot and message i+1's MAIL, so before message i's outcome
    assert [(r["i"], r["s"]) for r in lines[1:]] == [
        (0, "sending"),
        (1, "sending"),
        (0, "accepted"),
        (2, "sending"),
        (1, "accepted"),
        (2, "accepted"),
    ]
    sending = [r for r in lines[1:] if r["s"] == "sending"]
    assert [r["k"] for r in sending] == [message_key(m) for m in messages]
    assert [r["mid"] for r in sending] == server.message_ids()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_message_key_is_stable_and_content_based(tmp_path: Path) -> None:
    attachment = tmp_path / "a.pdf"
    one = {"subject": "s", "recipients": ["a@x.org"], "attachments": [attachment, ("n", b"x")]}
    same = {"attachments": [attachment, ("n", b"x")], "recipients": ["a@x.org"], "subject": "s"}
    assert message_key(one) == message_key(same)
    assert message_key(one) != message_key({**one, "subject": "t"})
    assert message_key(one) != message_key({**one, "attachments": [attachment, ("n", b"y")]})


def test_torn_last_line_is_dropped_and_damage_elsewhere_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    journal = Journal(path)
    journal.sending(0, "k0", "<a@x>")
    journal.outcome(0, "accepted")
    journal.close()
    intact = path.read_bytes()
    path.write_bytes(intact + b'{"i": 1, "k": "k1", "s": "sen')  # a write cut by a crash
    journal = Journal(path)
    assert journal.entries[0].state == "accepted"
    assert 1 not in journal.entries
    journal.close()
    assert path.read_bytes() == intact
    path.write_bytes(intact.replace(b'"accepted"', b'"acce'))
    with pytest.raises(ConfigurationError, match="damaged"):
        Journal(path)
    path.write_text('{"not": "a journal"}\n')
    with pytest.raises(ConfigurationError, match="not a fluxmail bulk journal"):
        Journal(path)


def test_one_run_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    first = Journal(path)
    with pytest.raises(ConfigurationError, match="in use"):
        Journal(path)
    first.close()
    Journal(path).close()


def test_options_are_checked(make_fault_server: MakeFault) -> None:
    mailer = FluxMail(**make_fault_server().fluxmail_kwargs())
    with pytest.raises(ConfigurationError):
        BulkSender(mailer, journal=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        BulkSender(mailer, journal="x.jsonl", resend_unknown="yes")  # type: ignore[arg-type]


# --- resuming in-process: every outcome ------------------------------------------------------


def data_commands(session: FaultSession) -> int:
    return sum(1 for c in session.commands if c.upper().startswith("DATA"))


@pytest.mark.parametrize("mode", MODES)
def test_resume_sends_exactly_the_rest(
    make_fault_server: MakeFault, tmp_path: Path, mode: str
) -> None:
    def dot(session: FaultSession) -> Any:
        """First session: message 5 refused (550), 6 deferred (451), 7 unknown (the
        connection drops after its final dot)."""
        if session.number != 1:
            return None
        return {5: Reply("550 5.7.1 No"), 6: Reply("451 4.3.0 Later"), 7: Close()}.get(
            data_commands(session) - 1
        )

    server = make_fault_server({"DOT": dot})
    path = tmp_path / "run.jsonl"
    messages = batch(12)
    mailer = FluxMail(**server.fluxmail_kwargs())
    first = run_batch(mailer, messages, mode, journal=path)
    assert (first["sent"], first["failed"], first["skipped"]) == (9, 3, 0)
    assert {i: e.code for i, e in first["errors"]} == {
        5: "message_refused",
        6: "message_refused",
        7: "outcome_unknown",
    }
    assert states(path) == {
        **{i: "accepted" for i in range(12)},
        5: "refused",
        6: "deferred",
        7: "unknown",
    }
    ids = first_ids(path)

    second = run_batch(mailer, messages, mode, journal=path)
    # 6 was deferred: sent again, with its first Message-ID; 7 is unknown: reported only
    assert (second["sent"], second["failed"], second["skipped"]) == (1, 1, 10)
    assert [(i, e.code) for i, e in second["errors"]] == [(7, "outcome_unknown")]
    assert second["errors"][0][1].message_id == ids[7]
    assert server.message_ids()[-1] == ids[6]
    assert_nothing_lost(second, server.message_ids(), 12, earlier=9)

    third = run_batch(mailer, messages, mode, journal=path, resend_unknown=True)
    assert (third["sent"], third["failed"], third["skipped"]) == (1, 0, 11)
    assert server.message_ids()[-1] == ids[7]  # the same Message-ID: receivers can dedupe
    assert collections.Counter(server.message_ids()).most_common(1)[0][1] == 1
    received = collections.Counter(server.message_ids(received=True))
    assert received[ids[5]] == 1  # refused (5xx): never sent again
    assert received[ids[6]] == 2  # 451 at the dot: the server said no, so sent again
    assert received[ids[7]] == 2  # unknown: sent again only because the user opted in
    assert all(n == 1 for mid, n in received.items() if mid not in (ids[6], ids[7]))
    assert set(states(path).values()) == {"accepted", "refused"}


@pytest.mark.parametrize("mode", MODES)
def test_stopped_batch_records_the_current_message_as_deferred(
    make_fault_server: MakeFault, tmp_path: Path, mode: str
) -> None:
    """After 3 messages the server says 421 and then refuses every new session: the batch
    stops (the server is unusable); message 3 is recorded as deferred, so the next run
    sends 3, 4 and 5 -- and nothing else."""

    def greeting(session: FaultSession) -> Any:
        return Reply("554 5.3.2 Go away", close=True) if session.number > 1 else None

    server = make_fault_server({"greeting": greeting}, close_after=3)
    path = tmp_path / "run.jsonl"
    messages = batch(6)
    with pytest.raises(ConnectError) as info:
        run_batch(FluxMail(**server.fluxmail_kwargs()), messages, mode, journal=path)
    assert info.value.batch_result["sent"] == 3  # type: ignore[attr-defined]
    assert states(path) == {0: "accepted", 1: "accepted", 2: "accepted", 3: "deferred"}
    again = make_fault_server()
    result = run_batch(FluxMail(**again.fluxmail_kwargs()), messages, mode, journal=path)
    assert (result["sent"], result["failed"], result["skipped"]) == (3, 0, 3)
    assert again.message_ids()[0] == first_ids(path)[3]
    assert sorted(subject_index(m) for m in [*server.messages, *again.messages]) == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]


def test_pool_of_connections_with_a_journal(make_fault_server: MakeFault, tmp_path: Path) -> None:
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    mailer = FluxMail(**server.fluxmail_kwargs())
    first = run_batch(mailer, batch(30), "async", journal=path, connections=3)
    assert (first["sent"], first["skipped"]) == (30, 0)
    assert len(server.sessions) == 3
    again = run_batch(mailer, batch(30), "async", journal=path, connections=3)
    assert (again["sent"], again["failed"], again["skipped"]) == (0, 0, 30)
    assert sorted(first_ids(path).values()) == sorted(server.message_ids())


def test_a_different_batch_is_refused(make_fault_server: MakeFault, tmp_path: Path) -> None:
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    mailer = FluxMail(**server.fluxmail_kwargs())
    run_batch(mailer, batch(3), "sync", journal=path)
    other = batch(3)
    other[1]["body"] = "something else"
    with pytest.raises(JournalMismatchError) as info:
        run_batch(mailer, other, "sync", journal=path)
    assert info.value.batch_result["skipped"] == 1  # type: ignore[attr-defined]
    assert len(server.messages) == 3


# --- SIGKILL, in a real subprocess ---------------------------------------------------------

CHILD = r"""
import asyncio, json, sys
from fluxmail import BulkSender, FluxMail

port, journal, mode, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
resend, rate = sys.argv[5] == "resend", float(sys.argv[6])
mailer = FluxMail(host="127.0.0.1", port=port, sender="news@example.com", timeout=5)
messages = [
    {"subject": f"issue {i}", "recipients": [f"reader{i}@example.com"], "body": f"#{i}"}
    for i in range(count)
]
sender = BulkSender(mailer, journal=journal, resend_unknown=resend)
if mode == "sync":
    result = sender.send_batch(messages, progress=False, max_per_second=rate)
else:
    result = asyncio.run(
        sender.send_batch_async(messages, progress=False, max_per_second=rate)
    )
errors = [(i, e.code, getattr(e, "message_id", None)) for i, e in result.pop("errors")]
print(json.dumps({**result, "errors": errors}))
"""


def start_child(
    port: int, journal: Path, mode: str, count: int, *, resend: bool = False, rate: float = 0
) -> subprocess.Popen[str]:
    args = [str(port), str(journal), mode, str(count), "resend" if resend else "-", str(rate)]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )


def reap(child: subprocess.Popen[str]) -> None:
    """Kill the child if it still runs, wait for it and close its pipes."""
    if child.poll() is None:
        child.kill()
    child.wait(timeout=10)
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()


def finish(child: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = child.communicate(timeout=60)
    finally:
        reap(child)
    assert child.returncode == 0, err[-3000:]
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def kill_when(child: subprocess.Popen[str], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    try:
        while not ready():
            assert time.monotonic() < deadline, "the child never got there"
            assert child.poll() is None, child.communicate()
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=10)
    finally:
        reap(child)  # also when an assertion above failed
    assert child.returncode == -signal.SIGKILL


def subject_index(message: Any) -> int:
    return int(str(message.message["Subject"]).split()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_sigkill_while_waiting_for_the_reply_to_the_dot(
    make_fault_server: MakeFault, tmp_path: Path, mode: str
) -> None:
    """Killed while message 40's final dot waits for its reply (message 41's envelope
    went out behind it, PIPELINING): the restart sends 42-99 exactly once each and
    reports 40 and 41 as unknown (the journal cannot tell that 41's dot never went out);
    only resend_unknown=True sends them again, with their original Message-IDs."""

    def stall_41st(session: FaultSession) -> Any:
        return Stall() if session.number == 1 and session.messages == 40 else None

    server = make_fault_server({"DOT": stall_41st})
    path = tmp_path / "run.jsonl"
    child = start_child(server.port, path, mode, 100)
    kill_when(child, lambda: len(server.received) == 41)
    in_flight = {40: "sending", 41: "sending"}
    assert states(path) == {**{i: "accepted" for i in range(40)}, **in_flight}

    second = finish(start_child(server.port, path, mode, 100))
    assert (second["sent"], second["failed"], second["skipped"]) == (58, 2, 40)
    ids = first_ids(path)
    assert second["errors"] == [[i, "outcome_unknown", ids[i]] for i in (40, 41)]
    received = collections.Counter(server.message_ids(received=True))
    assert sorted(received) == sorted(ids[i] for i in range(100) if i != 41)
    assert set(received.values()) == {1}  # each exactly once; 41 never got its dot
    done = [i for i in range(100) if i not in (40, 41)]
    assert sorted(subject_index(m) for m in server.messages) == done

    third = finish(start_child(server.port, path, mode, 100, resend=True))
    assert (third["sent"], third["failed"], third["skipped"]) == (2, 0, 98)
    assert server.message_ids()[-2:] == [ids[40], ids[41]]
    received = collections.Counter(server.message_ids(received=True))
    assert (received[ids[40]], received[ids[41]]) == (2, 1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_sigkill_at_a_random_moment_then_resume(
    make_fault_server: MakeFault, tmp_path: Path, mode: str
) -> None:
    """Killed wherever it happens to be (between the 250 and the journal line, in the
    middle of a write...): the restart completes the batch; a message is received twice
    never, and reported unknown only if the kill fell between its MAIL and its outcome."""
    server = make_fault_server()
    path = tmp_path / "run.jsonl"
    total = 150
    child = start_child(server.port, path, mode, total, rate=400)
    kill_when(child, lambda: len(server.messages) >= 60)
    killed_at = states(path)
    second = finish(start_child(server.port, path, mode, total))
    unknown = {i for i, state in killed_at.items() if state == "sending"}
    # one connection: at most the message in flight and the next one, whose envelope
    # was written behind its final dot (PIPELINING)
    assert len(unknown) <= 2
    assert second["total"] == total
    assert second["sent"] + second["failed"] + second["skipped"] == total
    assert {i for i, code, _ in second["errors"]} == unknown
    assert all(code == "outcome_unknown" for _, code, _ in second["errors"])
    received = collections.Counter(server.message_ids(received=True))
    assert set(received.values()) == {1}  # nothing delivered twice
    final = states(path)
    accepted = {i for i, state in final.items() if state == "accepted"}
    assert accepted | unknown == set(range(total))
    assert not accepted & unknown
    ids = first_ids(path)
    accepted_ids = {ids[i] for i in accepted}
    on_server = set(server.message_ids())
    assert accepted_ids <= on_server  # distinct Message-IDs on the server = accepted...
    assert on_server - accepted_ids <= {ids[i] for i in unknown}  # ...or unknown to us
