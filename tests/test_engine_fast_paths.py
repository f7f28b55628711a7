"""The engine's per-message fast paths say and do what the general paths do.

* ``ReplyParser.take`` (what :func:`collect` runs) reads one-line replies in place and
  gives every other line to ``next_reply``: the same replies, the same errors, for any
  stream cut at any point.
* The blocking stream's plain socket is non-blocking, waited on with ``poll``: a write of
  data and tail (``sendmsg``, no copy) delivers every byte even when the kernel's buffer
  fills, and the write and read deadlines hold against a real peer that never reads or
  never answers.
* The transcript of a write-ahead still shows the next message's envelope.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from engine_client import Connect, msg
from fluxmail import BulkSender, FluxMail
from fluxmail.errors import ProtocolError
from fluxmail.smtp._replies import Reply, ReplyParser, collect
from fluxmail.smtp._sync_stream import SyncStream
from servers import FaultServer, SMTPTestServer

MakeFault = Callable[..., FaultServer]

LINES = [
    b"250 2.1.0 Ok\r\n",
    b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"250-first\r\n250-second\r\n250 last\r\n",
    b"421 4.3.2 closing\r\n",
    b"550 5.1.1 no such user\n",  # bare LF
    b"250 \r\n",
    b"250\r\n",  # no text at all: the general path
    b"452 4.5.3 too many\r\n",
    b"250 " + "héllo".encode() + b"\r\n",
    b"250 " + b"x" * 70 + b"\r\n",
]
BAD = [b"hello\r\n", b"25\r\n", b"250-a\r\n251 b\r\n", b"650 nope\r\n"]


def _by_next_reply(chunks: list[bytes], wanted: int, parser: ReplyParser) -> list[Reply]:
    replies: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        while len(replies) < wanted:
            reply = parser.next_reply()
            if reply is None:
                break
            replies.append(reply)
            if reply.code == 421:
                return replies
        if len(replies) >= wanted:
            break
    return replies


def _by_take(chunks: list[bytes], wanted: int, parser: ReplyParser) -> list[Reply]:
    replies: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        if collect(parser, wanted, replies):
            break
    return replies


def _outcome(
    how: Callable[[list[bytes], int, ReplyParser], list[Reply]],
    chunks: list[bytes],
    wanted: int,
    caps: dict[str, int],
) -> tuple[object, int]:
    parser = ReplyParser(**caps)
    try:
        return how(chunks, wanted, parser), parser.buffered
    except ProtocolError as exc:
        return ("error", str(exc)), -1


def _cut(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 4))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def test_take_reads_what_next_reply_reads() -> None:
    rng = random.Random(14)
    caps_choices = [{}, {"max_line": 20}, {"max_reply": 30}, {"max_lines": 2}]
    for _ in range(3000):
        pool = LINES + (BAD if rng.random() < 0.2 else [])
        data = b"".join(rng.choice(pool) for _ in range(rng.randint(1, 6)))
        chunks = _cut(data, rng)
        wanted = rng.randint(1, 6)
        caps = rng.choice(caps_choices)
        expected = _outcome(_by_next_reply, chunks, wanted, caps)
        assert _outcome(_by_take, chunks, wanted, caps) == expected, (data, wanted, caps)


def test_take_reads_a_pipelined_message_in_one_go() -> None:
    parser = ReplyParser()
    parser.feed(b"250 2.0.0 queued\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
    replies: list[Reply] = []
    assert collect(parser, 4, replies)
    assert [r.code for r in replies] == [250, 250, 250, 354]
    assert replies[0].text == "2.0.0 queued"
    assert parser.buffered == 0


def test_take_with_replies_remembered_reads_what_a_fresh_parser_reads() -> None:
    """One parser over many exchanges (a connection of a batch) remembers one-line
    replies by their bytes: each exchange still reads what a fresh parser reads, errors
    and 421 included, and it remembers at most 32 of them."""
    rng = random.Random(15)
    for caps in ({}, {"max_line": 20}, {"max_reply": 30}, {"max_lines": 2}):
        reused = ReplyParser(**caps)
        for n in range(400):
            pool = [*LINES, b"250 2.0.0 Ok: queued as %d\r\n" % n]
            data = b"".join(rng.choice(pool) for _ in range(rng.randint(1, 6)))
            wanted = rng.randint(1, 6)
            expected = _outcome(_by_next_reply, [data], wanted, caps)
            try:
                got: object = (_by_take([data], wanted, reused), reused.buffered)
            except ProtocolError as exc:
                got = (("error", str(exc)), -1)
            assert got == expected, (data, wanted, caps)
            remembered = dict(reused._seen)
            assert {r.code for r in remembered.values()} <= {250, 354}
            reused.discard()  # (what is left unread: nothing; and nothing remembered)
            assert not reused._seen
            reused._seen.update(remembered)  # (a live connection keeps them)
        assert 0 < len(reused._seen) <= 32


# --- the blocking stream on a real peer ------------------------------------------------


@pytest.fixture
def peer() -> Iterator[tuple[SyncStream, socket.socket, ReplyParser]]:
    """A SyncStream connected to a real socket on 127.0.0.1 that the test drives."""
    listener = socket.create_server(("127.0.0.1", 0))
    parser = ReplyParser()
    stream = SyncStream.connect("127.0.0.1", listener.getsockname()[1], 5.0, parser)
    server, _ = listener.accept()
    listener.close()
    try:
        yield stream, server, parser
    finally:
        stream.abort()
        server.close()


def test_data_and_tail_arrive_whole_through_a_full_buffer(
    peer: tuple[SyncStream, socket.socket, ReplyParser],
) -> None:
    stream, server, _ = peer
    data = random.Random(1).randbytes(12 << 20)  # far more than the socket buffers hold
    tail = b"\r\n.\r\nMAIL FROM:<a@example.com>\r\n"
    received = bytearray()

    def read_slowly() -> None:
        time.sleep(0.3)  # the client's buffer fills first: it must wait and go on
        while len(received) < len(data) + len(tail):
            chunk = server.recv(1 << 16)
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    stream.write(data, 10.0, tail)  # returns when the kernel has every byte
    reader.join(10)
    assert bytes(received) == data + tail


def test_a_write_to_a_peer_that_never_reads_times_out(
    peer: tuple[SyncStream, socket.socket, ReplyParser],
) -> None:
    stream, _, _ = peer
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        stream.write(bytes(64 << 20), 0.5, b".\r\n")
    assert 0.4 < time.monotonic() - started < 3.0


def test_a_read_keeps_its_deadline_and_feeds_the_parser(
    peer: tuple[SyncStream, socket.socket, ReplyParser],
) -> None:
    stream, server, parser = peer
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        stream.receive(started + 0.3)
    assert 0.25 < time.monotonic() - started < 2.0
    assert stream.quiet()
    server.sendall(b"250 ok\r\n")
    stream.receive(time.monotonic() + 2.0)
    assert parser.next_reply() == Reply(250, ("ok",))
    server.sendall(b"421 bye\r\n")
    server.close()
    time.sleep(0.1)
    assert not stream.quiet()
    assert stream.take_input() is False  # the reply was read, then the end
    assert parser.next_reply() == Reply(421, ("bye",))


# --- the transcript of a write-ahead ---------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_transcript_shows_the_envelope_written_ahead(
    make_fault_server: MakeFault, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxmail.smtp")
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs(), sender="noreply@myapp.com")
    messages = [
        {"subject": f"Hi {i}", "recipients": [f"user{i}@example.com"], "body": "secret-body"}
        for i in range(3)
    ]
    sender = BulkSender(mailer)
    if mode == "sync":
        result = sender.send_batch(messages, progress=False)
    else:
        result = asyncio.run(sender.send_batch_async(messages, progress=False))
    assert result["sent"] == 3, result["errors"]
    (session,) = server.sessions
    assert session.chunk_of("MAIL", 1) == session.dots[0]  # it was written ahead
    for i in range(3):
        assert f"C: RCPT TO:<user{i}@example.com>" in caplog.text
    assert caplog.text.count("C: DATA") == 3
    assert "secret-body" not in caplog.text


# --- the same bytes over TLS and in plain text -----------------------------------------


@pytest.mark.parametrize("tls", ["plain", "starttls", "ssl"])
def test_small_and_large_messages_arrive_as_written(
    connect: Connect, make_server: Callable[..., SMTPTestServer], tls: str
) -> None:
    """The tail is joined to a small message over TLS (one record), written after a large
    one, and gathered with either on a plain socket: the server gets the same bytes."""
    server = make_server(tls="none" if tls == "plain" else tls)
    client = connect(server.smtp_config())
    line = b"x" * 76 + b"\r\n"
    bodies = [b"Hello\r\n", line * 2000, line * 20000]  # 7 B, 156 KB, 1.5 MB (> a slice)
    for body in bodies:
        client.send(msg(data=b"Subject: t\r\n\r\n" + body))
    assert [m.data for m in server.messages] == [b"Subject: t\r\n\r\n" + b for b in bodies]
    assert all(m.tls == (tls != "plain") for m in server.messages)
