"""The fast paths of a batch give exactly what the slow paths give.

A shared attachment's base64 is reused across messages, bodies and checks seen before are
remembered, the Date header is worked out once a second, an address seen before is not
parsed again, and a large payload is scanned for dot lines with memchr: each one is
checked here against the plain computation, errors included."""

from __future__ import annotations

import email.utils
import os
import random
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from fluxmail.compose import _composer, _reuse
from fluxmail.compose._composer import compose
from fluxmail.compose._mime import date_header
from fluxmail.errors import HeaderInjectionError, InvalidAddressError, InvalidMessageError
from fluxmail.message import Address, build_message
from fluxmail.message._address import parse_address, split_mailbox
from fluxmail.smtp._data import stuff

MOMENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def build(**overrides: Any) -> Any:
    options: dict[str, Any] = {
        "subject": "Report",
        "recipients": ["to@example.com"],
        "body": "<p>See the report.</p>",
        "html_body": True,
        "plain_body": "See the report.\n.\nA line with a dot.",
        "sender": "App <app@example.com>",
    }
    options.update(overrides)
    return build_message(**options)


def fixed(message: Any) -> bytes:
    """Composed bytes with the random boundaries made comparable."""
    data = compose(message, now=MOMENT, message_id="<id@example.com>").data
    return re.sub(rb"=_fm_[0-9a-f]{24}", b"=_fm_BOUNDARY", data)


# --- a shared attachment is encoded once, with the same bytes ----------------------------


@pytest.mark.parametrize("size", [1, 1500, 50 * 1024, _composer._BLOCK - 1, _composer._BLOCK])
def test_shared_attachment_is_byte_identical_to_composing_alone(tmp_path: Path, size: int) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(random.Random(size).randbytes(size))
    _reuse.SHARED.clear()
    alone = fixed(build(attachments=[path]))
    batch = [fixed(build(attachments=[path])) for _ in range(3)]
    assert batch == [alone] * 3
    encoded = _reuse.base64_lines(path.read_bytes())
    assert encoded in alone  # the plain encoding, whole


def test_a_file_changed_in_place_is_encoded_afresh(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    first = random.Random(1).randbytes(4096)
    path.write_bytes(first)
    stat = path.stat()
    before = fixed(build(attachments=[path]))
    # the same size and the same mtime: only the bytes tell them apart
    second = first[:2000] + bytes([first[2000] ^ 1]) + first[2001:]
    message = build(attachments=[path])
    path.write_bytes(second)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = fixed(message)
    assert after != before
    assert _reuse.base64_lines(second) in after
    assert _reuse.base64_lines(first) not in after


def test_attachment_bytes_from_memory_share_too() -> None:
    data = random.Random(2).randbytes(20000)
    _reuse.SHARED.clear()
    one = fixed(build(attachments=[("a.bin", data, "application/octet-stream")]))
    two = fixed(build(attachments=[("a.bin", bytes(data), "application/octet-stream")]))
    assert one == two
    assert _reuse.base64_lines(data) in one


def test_reuse_table_is_bounded() -> None:
    table = _reuse.Base64Reuse(entries=3, budget=100_000)
    blobs = [random.Random(n).randbytes(10_000) for n in range(10)]
    for blob in blobs:
        assert table.lines(blob) == _reuse.base64_lines(blob)
    assert table.size <= 3 * (10_000 + len(_reuse.base64_lines(blobs[0])))
    small = _reuse.Base64Reuse(entries=8, budget=30_000)
    for blob in blobs:
        small.lines(blob)
    assert small.size <= 30_000
    for blob in blobs:  # what was dropped is encoded again, the same
        assert small.lines(blob) == _reuse.base64_lines(blob)


def test_big_attachment_keeps_the_block_path(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = random.Random(3).randbytes(2 * _composer._BLOCK + 123)
    path.write_bytes(data)
    composed = fixed(build(attachments=[path]))
    assert _reuse.base64_lines(data) in composed


def test_a_file_that_grew_after_create_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "grows.bin"
    path.write_bytes(b"x" * 1000)
    message = build(attachments=[path])
    data = random.Random(4).randbytes(_composer._BLOCK + 500)
    path.write_bytes(data)
    assert _reuse.base64_lines(data) in fixed(message)


# --- bodies, checks and the clock ---------------------------------------------------------


def test_remembered_bodies_compose_like_fresh_ones() -> None:
    body = "Hello\n" + "line of text\n" * 300
    first = fixed(build(plain_body=body))
    _composer._text_body_remembered.cache_clear()
    _composer._clean_remembered.cache_clear()
    assert fixed(build(plain_body=body)) == first
    assert fixed(build(plain_body=body)) == first


def test_an_unclean_remembered_body_stays_unclean() -> None:
    # a text part over 998 octets per line is encoded (quoted-printable): still clean;
    # a raw header value is the only literal piece that can be refused, and it is checked
    assert _composer._clean(b"a" * 2000 + b"\r\n") is False
    assert _composer._clean(b"a" * 2000 + b"\r\n") is False  # remembered, the same
    assert _composer._clean(b"ab\r\n" * 500) is True
    assert _composer._clean(b"ab\n" * 500) is False


def test_date_header_of_now_is_this_second() -> None:
    for _ in range(3):
        moment, text = _composer._clock()
        assert text == date_header(moment)
        assert abs(moment.timestamp() - datetime.now().timestamp()) < 2
    header = re.search(rb"^Date: (.*)\r$", compose(build()).data, re.M)
    assert header is not None
    sent = email.utils.parsedate_to_datetime(header.group(1).decode())
    assert abs(sent.timestamp() - datetime.now().timestamp()) < 2
    assert sent.utcoffset() == datetime.now().astimezone().utcoffset()


# --- addresses seen before ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "ada@example.org",
        "Ada <ada@Example.ORG>",
        '"Doe, J" <j@example.com>',
        "jörg@bücher.example",
        "  padded@example.com ",
    ],
)
def test_a_seen_address_parses_the_same(value: str) -> None:
    first = parse_address(value, field="to")
    again = parse_address(value, field="to")
    assert again == first
    assert (first.display_name, first.local, first.domain) == split_mailbox(value, "to")
    assert parse_address(first, field="to") == first


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("no-at-sign", InvalidAddressError),
        ("a@b@c.example", InvalidAddressError),
        ("x@example.com\r\nBcc: y@example.com", HeaderInjectionError),
        ('"a b"@example.com', InvalidAddressError),
    ],
)
def test_a_seen_bad_address_fails_the_same_naming_its_field(
    value: str, error: type[Exception]
) -> None:
    for field in ("recipients[0]", "cc[3]", "recipients[0]"):
        with pytest.raises(error) as caught:
            parse_address(value, field=field)
        assert str(caught.value).startswith(f"{field}: ")
        with pytest.raises(error) as direct:
            split_mailbox(value, field)
        assert str(caught.value) == str(direct.value)


def test_an_address_object_is_checked_every_time() -> None:
    good = Address("ada", "example.org", "Ada")
    assert parse_address(good, field="sender") == good
    upper = Address("ada", "EXAMPLE.org")
    assert parse_address(upper, field="sender").domain == "example.org"
    with pytest.raises(HeaderInjectionError, match=r"^sender: "):
        parse_address(Address("ada", "example.org", "A\r\nB"), field="sender")
    with pytest.raises(HeaderInjectionError, match=r"^reply_to: "):
        parse_address(Address("ada", "example.org", "A\r\nB"), field="reply_to")
    with pytest.raises(InvalidMessageError):
        parse_address(Address("ada", 5, ""), field="sender")  # type: ignore[arg-type]


# --- dot-stuffing a large payload --------------------------------------------------------


def _plain_stuff(data: bytes) -> tuple[bytes, bytes]:
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    return data, b".\r\n" if not data or data.endswith(b"\r\n") else b"\r\n.\r\n"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b".",
        b".\r\n",
        b"a.\r\n" * 5000,  # many dots, none at a line start: the scan gives way
        b"x" * 10000 + b"\r\n.\r\n" + b"y" * 10,  # one dot line deep inside
        b"x" * 10000 + b"\r\n." + b"y" * 10,
        (b"A" * 76 + b"\r\n") * 1000,  # base64-like: no dots at all
        (b"A" * 76 + b"\r\n") * 1000 + b".hidden\r\n",  # the very last line
        b"..\r\n" + (b"A" * 76 + b"\r\n") * 100,
        b"end with dot." * 1000,
        (b"A" * 76 + b"\r\n") * 100 + b"x.y\r\n" * 300 + b"\r\n.bad\r\n",
    ],
)
def test_stuffing_is_the_plain_replace(data: bytes) -> None:
    assert stuff(data) == _plain_stuff(data)


def test_stuffing_random_payloads() -> None:
    rng = random.Random(5)
    for _ in range(300):
        lines = [
            rng.choice([b".", b"..", b"a.b", b"A" * 76, b"", b".x", b"x."]) * rng.randint(1, 3)
            for _ in range(rng.randint(1, 400))
        ]
        data = b"\r\n".join(lines) + rng.choice([b"", b"\r\n"])
        assert stuff(data) == _plain_stuff(data)


# --- one-line replies take the parser's short way ------------------------------------------


def _reference_replies(data: bytes, max_line: int = 4096) -> list[tuple[int, tuple[str, ...]]]:
    """The reply grammar, the plain way: lines, codes, continuation marks."""
    out: list[tuple[int, tuple[str, ...]]] = []
    lines: list[str] = []
    out_code = 0
    for raw in data.split(b"\n")[:-1]:
        if len(raw) > max_line:
            raise ValueError("long")
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        head, sep = raw[:3], raw[3:4]
        if len(head) != 3 or not head.isdigit() or head[:1] not in b"2345" or sep not in b" -":
            raise ValueError("garbage")
        if lines and int(head) != out_code:
            raise ValueError("code changed")
        out_code = int(head)
        lines.append(raw[4:].decode("utf-8", "replace"))
        if sep != b"-":
            out.append((out_code, tuple(lines)))
            lines = []
    return out


def test_reply_parser_matches_the_grammar_in_any_chunks() -> None:
    from fluxmail.errors import ProtocolError
    from fluxmail.smtp._replies import ReplyParser

    rng = random.Random(6)
    pieces = [b"250 ok\r\n", b"354 go\r\n", b"250-a\r\n250 b\r\n", b"452 4.5.3 too many\r\n",
              b"221 bye\n", b"250 \r\n", b"250\r\n", b"25 x\r\n", b"250-x\r\n251 y\r\n",
              b"550 caf\xc3\xa9\r\n", b"650 no\r\n", b"250 x\r\r\n", b"2a0 x\r\n"]  # fmt: skip
    for _ in range(400):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        try:
            expected: object = _reference_replies(data)
        except ValueError:
            expected = ProtocolError
        parser = ReplyParser()
        got: list[tuple[int, tuple[str, ...]]] = []
        try:
            cut = sorted(rng.sample(range(len(data) + 1), min(3, len(data) + 1)))
            for start, end in zip([0, *cut], [*cut, len(data)], strict=True):
                parser.feed(data[start:end])
                while (reply := parser.next_reply()) is not None:
                    got.append((reply.code, reply.lines))
            result: object = got
        except ProtocolError:
            result = ProtocolError
        assert result == expected, data
        if result is not ProtocolError:
            assert parser.buffered == 0


# --- a big message is sent before the next one is composed ----------------------------------


def test_big_message_is_sent_before_the_next_is_composed(
    make_fault_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fluxmail import BulkSender, FluxMail
    from fluxmail.transports import _pipeline

    monkeypatch.setattr(_pipeline, "AHEAD_LIMIT", 20_000)  # "big": over 20 KB here
    server = make_fault_server()
    bodies = ["small 0", "big 1 " + "x" * 70 + ("\n" + "y" * 70) * 400, "small 2", "small 3"]
    pulled_with_received: list[int] = []  # at each message's composing

    class Recording(FluxMail):
        def compose(self, message: Any = None, *, message_id: str | None = None) -> Any:
            pulled_with_received.append(len(server.received))
            return super().compose(message, message_id=message_id)

    def messages() -> Any:
        for index, body in enumerate(bodies):
            yield {
                "subject": f"Hi {index}",
                "recipients": [f"user{index}@example.com"],
                "body": body,
                "sender": "noreply@myapp.com",
            }

    mailer = Recording(**server.fluxmail_kwargs())
    result = BulkSender(mailer).send_batch(messages(), progress=False)
    assert result == {"sent": 4, "failed": 0, "total": 4, "errors": []}
    assert [str(m.message["Subject"]) for m in server.messages] == [f"Hi {i}" for i in range(4)]
    # message 1 (big) was composed ahead of message 0's dot; message 2 once 1 had arrived
    assert pulled_with_received[:3] == [0, 0, 2]
    (session,) = server.sessions
    assert session.chunk_of("MAIL", 1) == session.dots[0]  # small 0: 1's envelope ahead
    assert session.chunk_of("MAIL", 2) > session.dots[1]  # big 1: nothing written ahead
    assert session.chunk_of("MAIL", 3) == session.dots[2]


def test_the_message_after_next_is_composed_while_a_dot_is_answered(
    make_fault_server: Any,
) -> None:
    """A blocking batch composes message k+2 after message k's final dot (with k+1's
    envelope) is written and before its replies are read: composing overlaps the
    server's work. The caller's input is read only at safe points: whenever it is asked
    for a message, every message the server has is reported already."""
    from fluxmail import BulkSender, FluxMail

    server = make_fault_server()
    events: list[tuple[str, int]] = []
    unreported: list[int] = []
    count = 6

    class Recording(FluxMail):
        def compose(self, message: Any = None, *, message_id: str | None = None) -> Any:
            events.append(("compose", int(message.subject.split()[1])))
            return super().compose(message, message_id=message_id)

    def messages() -> Any:
        for index in range(count):
            sent = sum(1 for kind, _ in events if kind == "sent")
            unreported.append(len(server.messages) - sent)
            events.append(("take", index))
            yield {
                "subject": f"Hi {index}",
                "recipients": [f"user{index}@example.com"],
                "body": f"body {index}",
                "sender": "noreply@myapp.com",
            }

    mailer = Recording(**server.fluxmail_kwargs())
    result = BulkSender(mailer).send_batch(
        messages(), on_success=lambda index, _: events.append(("sent", index)), progress=False
    )
    assert result["sent"] == count
    for k in range(count - 2):
        assert events.index(("compose", k + 2)) < events.index(("sent", k)), events
    for k in range(count - 3):
        assert events.index(("compose", k + 3)) > events.index(("sent", k)), events
    assert set(unreported) == {0}, unreported


def test_joined_and_buffered_output_are_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(random.Random(7).randbytes(300_000))
    message = build(attachments=[path])
    joined = fixed(message)
    monkeypatch.setattr(_composer, "_JOIN_LIMIT", 1000)  # every piece through the buffer
    assert fixed(message) == joined
    monkeypatch.setattr(_composer, "_JOIN_LIMIT", 0)
    assert fixed(message) == joined


@pytest.mark.parametrize(
    ("display", "spec"),
    [("", "a@example.com"), ("Ada Lovelace", "ada@example.org"), ("Jörg, ÄÖÜ", "j@x.example")],
)
def test_the_remembered_from_line_is_the_folded_one(display: str, spec: str) -> None:
    from fluxmail.compose._mime import address_header

    expected = address_header("From", [(display, spec)])
    assert _composer._from_header(display, spec) == expected
    assert _composer._from_header(display, spec) == expected


# --- a short plain header is written on one line --------------------------------------------


def test_a_short_plain_header_is_what_folding_gives() -> None:
    """``unstructured`` writes a plain value that fits on one line as it is; that must be
    exactly what folding its words gives (extra spaces kept, nothing encoded)."""
    from fluxmail.compose._mime import MAX_LINE, _is_plain, _words, fold, unstructured

    rng = random.Random(14)
    alphabet = "ab  Z.-:;,!()[]=_'\"/\\~"  # (a tab or "=?" is not plain: encoded instead)
    seen_short = seen_long = 0
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 150)))
        name = rng.choice(["Subject", "X-A", "X-Long-Header-Name"])
        if not _is_plain(value):
            continue
        folded = fold(name, _words(value))
        if len(name) + 2 + len(value) <= MAX_LINE:
            seen_short += 1
            assert unstructured(name, value) == folded == f"{name}: {value}\r\n"
        else:
            seen_long += 1
    assert seen_short > 300
    assert seen_long > 100


def test_frozen_values_built_in_one_step_equal_their_init() -> None:
    """build_message, the composer and the SMTP session fill a Message, an Envelope, a
    Composed and a SendResult through ``frozen_from``: every field is there, equal to
    what the class's own ``__init__`` makes, and the values stay frozen."""
    import dataclasses

    from fluxmail.envelope import Composed, Envelope
    from fluxmail.message import Message

    message = build(cc=["cc@example.com"], priority="high", headers={"X-Tag": "a"})
    composed = compose(message, now=MOMENT)
    for value, cls in ((message, Message), (composed.envelope, Envelope)):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(cls)}
        assert set(vars(value)) == set(fields)
        assert value == cls(**fields)
        assert hash(value) == hash(cls(**fields))
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(cls)[0].name, None)
    assert composed.clean is True
    assert set(vars(composed)) == {f.name for f in dataclasses.fields(Composed)}
    plain = Composed(composed.envelope, composed.data, composed.message_id)
    assert plain.clean is False
    assert dataclasses.replace(composed).clean is False
    assert Composed._checked(plain.envelope, plain.data, plain.message_id, clean=False) == plain


def test_message_ids_stay_unique_across_refills_of_their_random_pool() -> None:
    """Message-IDs take 16 hex digits each from 4 KB of random bytes (512 ids per
    draw): over several draws none repeats and each has the one format."""
    from fluxmail.message._fields import new_message_id

    ids = [new_message_id("example.com") for _ in range(1300)]
    assert len(set(ids)) == len(ids)
    randoms = {re.fullmatch(r"<[0-9a-f]+\.([0-9a-f]{16})@example\.com>", i)[1] for i in ids}  # type: ignore[index]
    assert len(randoms) == len(ids)
