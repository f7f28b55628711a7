"""compose() and preview(): the bytes parse back, with Python's own email parser, to exactly
what went in."""

from __future__ import annotations

import email
import email.policy
import email.utils
import itertools
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from fluxmail.compose import _mime
from fluxmail.compose._composer import compose, preview
from fluxmail.errors import AttachmentNotFoundError, ConfigurationError, InvalidMessageError
from fluxmail.message import Address, Message, build_message
from helpers import crlf, filename_param, parse

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3


def build(**overrides: Any) -> Message:
    options: dict[str, Any] = {
        "subject": "Hello",
        "recipients": ["to@example.com"],
        "body": "Hi there!",
        "sender": "me@example.com",
    }
    options.update(overrides)
    return build_message(**options)


def structure(part: Any) -> Any:
    if part.is_multipart():
        return (part.get_content_type(), [structure(p) for p in part.iter_parts()])
    return part.get_content_type()


# --- headers ------------------------------------------------------------------------------


def test_small_text_message_exact_bytes() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    composed = compose(build(), now=moment, message_id="<id@example.com>")
    assert composed.data == (
        b"Date: Tue, 02 Jan 2024 03:04:05 -0530\r\n"
        b"From: me@example.com\r\n"
        b"To: to@example.com\r\n"
        b"Subject: Hello\r\n"
        b"Message-ID: <id@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"Hi there!\r\n"
    )
    assert composed.message_id == "<id@example.com>"
    assert composed.envelope.mail_from == "me@example.com"
    assert composed.envelope.rcpt_to == ("to@example.com",)
    assert composed.envelope.smtputf8 is False


def test_date_header() -> None:
    parsed = parse(compose(build()))
    date = email.utils.parsedate_to_datetime(str(parsed["Date"]))
    assert date.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - date).total_seconds()) < 5
    moment = datetime(2030, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert parse(compose(build(), now=moment))["Date"] == "Tue, 31 Dec 2030 23:59:59 +0000"
    naive = datetime(2024, 6, 1, 12, 0, 0)
    header = str(parse(compose(build(), now=naive))["Date"])
    assert email.utils.parsedate_to_datetime(header) == naive.astimezone()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_message_ids_of_a_forked_child_differ_from_its_parent() -> None:
    """The ids' random bytes are drawn afresh after fork(): two processes composing at
    the same microsecond never make the same id (compose_processes forks)."""
    message = build(sender="me@sender.example")
    compose(message)  # the parent has random bytes in store before it forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out at once (no pytest teardown here)
        ids = [compose(message).message_id for _ in range(50)]
        os.write(write, "\n".join(ids).encode())
        os._exit(0)
    os.close(write)
    ours = [compose(message).message_id for _ in range(50)]
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split("\n")
    assert os.waitpid(pid, 0)[1] == 0

    def random_part(i: str) -> str:
        return i.split(".")[1].split("@")[0]

    assert len(theirs) == 50
    assert not {random_part(i) for i in theirs} & {random_part(i) for i in ours}
    numbers = [int(random_part(i), 16) for i in ours]
    steps = {b - a for a, b in itertools.pairwise(numbers)}
    assert len(steps) > 40  # random, not a counter


def test_message_id_unique_and_domain() -> None:
    message = build(sender="Me <me@Sender.Example>")
    ids = {compose(message).message_id for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"<[0-9a-f]+\.[0-9a-f]{16}@sender\.example>", i) for i in ids)
    composed = compose(message, domain="mycompany.com")
    assert composed.message_id.endswith("@mycompany.com>")
    assert parse(composed)["Message-ID"] == composed.message_id
    assert compose(message, domain="bücher.de").message_id.endswith("@xn--bcher-kva.de>")
    with pytest.raises(ConfigurationError, match=r"^domain: "):
        compose(message, domain="bad domain")
    with pytest.raises(InvalidMessageError, match=r"^message_id: "):
        compose(message, message_id="no-brackets@x")


def test_bcc_only_in_envelope() -> None:
    message = build(
        recipients=["a@x.com"], cc=["Copy <c@x.com>"], bcc=["Secret <hidden@bcc.test>", "a@x.com"]
    )
    composed = compose(message)
    assert b"hidden" not in composed.data
    assert b"\r\nbcc:" not in composed.data.lower()  # no Bcc header (hex may hold "bcc")
    assert b"bcc.test" not in composed.data
    assert composed.envelope.rcpt_to == ("a@x.com", "c@x.com", "hidden@bcc.test")
    parsed = parse(composed)
    assert parsed["Cc"].addresses[0].display_name == "Copy"
    only_bcc = compose(build(recipients=None, bcc=["hidden@bcc.test"]))
    assert b"hidden" not in only_bcc.data
    assert only_bcc.envelope.rcpt_to == ("hidden@bcc.test",)


@pytest.mark.parametrize(
    "subject",
    [
        "Grüße aus Köln",
        "📬 You've got mail 🎉👍🏽",
        "שלום עולם — مرحبا بالعالم",
        "日本語の件名です。長い件名は折り返されます。" * 4,
        "A fairly long ASCII subject line that will certainly need folding " * 5,
        "  leading and trailing  ",
        "tab\tinside",
        "looks =?utf-8?q?encoded?= but is not",
        "x" * 300,
        "",
        '"quoted" (parens) <angles> [brackets]; semi: colon, comma \\ backslash',
    ],
)
def test_subject_round_trip(subject: str) -> None:
    parsed = parse(compose(build(subject=subject)))
    assert parsed["Subject"] == subject


def test_long_subject_is_folded() -> None:
    subject = "word " * 60 + "end"
    composed = compose(build(subject=subject))
    header = composed.data.split(b"\r\n\r\n")[0].decode()
    subject_lines = header.split("Subject:")[1].split("\r\nMessage-ID")[0].split("\r\n")
    assert len(subject_lines) > 3
    assert all(len(line) <= 78 for line in subject_lines)
    assert parse(composed)["Subject"] == subject


def test_display_names_round_trip() -> None:
    names = [
        "Jörg Müller",
        "Doe, John",
        'He said "hi"',
        "back\\slash",
        "José 🚀 Ñoño",
        "محمد",
        "  spaced  out  ",
        "A" * 120,
        "Ünïcödé " * 20,
        "=?utf-8?q?fake?=",
        "John Q. Public",
    ]
    recipients = [Address(f"u{i}", "example.com", name) for i, name in enumerate(names)]
    parsed = parse(compose(build(recipients=recipients, sender=Address("me", "x.com", "Zoë"))))
    assert [a.display_name for a in parsed["To"].addresses] == names
    assert [a.addr_spec for a in parsed["To"].addresses] == [r.addr_spec for r in recipients]
    assert parsed["From"].addresses[0].display_name == "Zoë"


def test_idn_domain_is_punycode_everywhere() -> None:
    composed = compose(build(recipients=["Jörg <joerg@bücher.de>"], sender="me@münchen.de"))
    parsed = parse(composed)
    assert parsed["To"].addresses[0].addr_spec == "joerg@xn--bcher-kva.de"
    assert composed.envelope.rcpt_to == ("joerg@xn--bcher-kva.de",)
    assert composed.envelope.mail_from == "me@xn--mnchen-3ya.de"
    assert composed.message_id.endswith("@xn--mnchen-3ya.de>")
    assert not composed.envelope.smtputf8


def test_non_ascii_local_part_uses_smtputf8() -> None:
    composed = compose(build(recipients=["Jörg <jörg@example.com>"], subject="Grüße"))
    assert composed.envelope.smtputf8
    assert composed.envelope.rcpt_to == ("jörg@example.com",)
    assert "To: =?utf-8?q?J=C3=B6rg?= <jörg@example.com>".encode() in composed.data
    parsed = parse(composed)
    assert parsed["To"].addresses[0].username == "jörg"
    assert parsed["Subject"] == "Grüße"


@pytest.mark.parametrize(
    ("priority", "lines"),
    [
        ("high", b"X-Priority: 1 (Highest)\r\nX-MSMail-Priority: High\r\nImportance: high\r\n"),
        ("normal", b"X-Priority: 3 (Normal)\r\nX-MSMail-Priority: Normal\r\nImportance: normal"),
        ("low", b"X-Priority: 5 (Lowest)\r\nX-MSMail-Priority: Low\r\nImportance: low\r\n"),
    ],
)
def test_priority_headers(priority: str, lines: bytes) -> None:
    assert lines in compose(build(priority=priority)).data


def test_no_priority_headers_by_default() -> None:
    data = compose(build()).data
    assert b"X-Priority" not in data
    assert b"Importance" not in data


def test_unsubscribe_headers() -> None:
    url = "https://myapp.com/unsubscribe?token=abc123"
    data = compose(build(unsubscribe_url=url)).data
    assert (
        b"List-Unsubscribe: <https://myapp.com/unsubscribe?token=abc123>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    ) in data


def test_threading_and_reply_to_headers() -> None:
    refs = [f"<ref{i}.{'x' * 20}@example.com>" for i in range(6)]
    message = build(
        in_reply_to="<original-message-id@example.com>",
        references=refs,
        reply_to=["Help Desk <help@example.com>"],
    )
    parsed = parse(compose(message))
    assert parsed["In-Reply-To"] == "<original-message-id@example.com>"
    assert str(parsed["References"]).split() == refs
    assert parsed["Reply-To"].addresses[0].addr_spec == "help@example.com"


def test_extra_headers() -> None:
    message = build(
        headers={"X-Campaign": "spring  sale", "X-Note": "Grüße 👋", "X-Long": "w " * 80}
    )
    parsed = parse(compose(message))
    assert parsed["X-Campaign"] == "spring  sale"
    assert parsed["X-Note"] == "Grüße 👋"
    assert parsed["X-Long"] == ("w " * 80).strip()


# --- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        ("plain ascii\nsecond line", "7bit"),
        ("", "7bit"),
        (".\n..\n.\r\nend", "7bit"),
        ("bare\rcr and\r\ncrlf and\nlf\n\n", "7bit"),
        ("x" * 5000, "quoted-printable"),
        ("Liebe Anna, viele Grüße aus Köln\n" * 3, "quoted-printable"),
        ("日本語のテキスト\n" * 3, "base64"),
        ("emoji 😀 " * 400, "base64"),
        ("nul \x00 byte", "quoted-printable"),
        ("trailing spaces   \nand tabs\t\n", "7bit"),
        ("From here\n>From there\n", "7bit"),
    ],
)
def test_text_body_round_trip(body: str, encoding: str) -> None:
    parsed = parse(compose(build(body=body)))
    assert parsed["Content-Transfer-Encoding"] == encoding
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert parsed.get_content() == crlf(body)


def test_long_lines_are_encoded_and_decode_exactly() -> None:
    body = "a" * 998 + "\n" + "b" * 999 + "\n" + "ü" * 2000
    composed = compose(build(body=body))
    assert parse(composed).get_content() == crlf(body)
    assert max(map(len, composed.data.split(b"\r\n"))) <= 78


# --- structure ----------------------------------------------------------------------------


def files(tmp_path: Path) -> tuple[Path, Path]:
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40)
    return logo, report


def test_html_only_without_auto_text() -> None:
    parsed = parse(compose(build(body="<h1>Report</h1>", html_body=True, auto_text=False)))
    assert structure(parsed) == "text/html"
    assert parsed.get_content() == "<h1>Report</h1>\r\n"


def test_html_gets_an_automatic_text_alternative() -> None:
    html = '<h1>Report</h1><p>See <a href="https://x.test/r">the numbers</a>.</p>'
    parsed = parse(compose(build(body=html, html_body=True)))
    assert structure(parsed) == ("multipart/alternative", ["text/plain", "text/html"])
    plain, rich = parsed.iter_parts()
    assert plain.get_content() == (
        "Report\r\n======\r\n\r\nSee the numbers (https://x.test/r).\r\n"
    )
    assert rich.get_content() == html + "\r\n"


def test_html_with_plain_alternative() -> None:
    message = build(
        body="<h1>Report</h1>",
        html_body=True,
        plain_body="Report — see the HTML version for formatting.",
    )
    parsed = parse(compose(message))
    assert structure(parsed) == ("multipart/alternative", ["text/plain", "text/html"])
    plain, html = parsed.iter_parts()
    assert plain.get_content() == "Report — see the HTML version for formatting.\r\n"
    assert html.get_content() == "<h1>Report</h1>\r\n"


def test_html_with_inline_images(tmp_path: Path) -> None:
    logo, _ = files(tmp_path)
    body = '<h1><img src="cid:logo" alt="Acme"> Welcome!</h1>'
    parsed = parse(
        compose(build(body=body, html_body=True, inline_images={"logo": logo}, auto_text=False))
    )
    assert structure(parsed) == ("multipart/related", ["text/html", "image/png"])
    assert parsed.get_param("type") == "text/html"
    html, image = parsed.iter_parts()
    assert html.get_content() == body + "\r\n"
    assert image["Content-ID"] == "<logo>"
    assert image.get_content_disposition() == "inline"
    assert image.get_filename() == "logo.png"
    assert image.get_content() == PNG


def test_every_part_combined(tmp_path: Path) -> None:
    logo, report = files(tmp_path)
    message = build(
        body='<img src="cid:logo">',
        html_body=True,
        plain_body="plain",
        inline_images={"logo": logo},
        attachments=[report, ("notes.txt", b"some notes\n", "text/plain")],
    )
    parsed = parse(compose(message))
    related = ("multipart/related", ["text/html", "image/png"])
    assert structure(parsed) == (
        "multipart/mixed",
        [("multipart/alternative", ["text/plain", related]), "application/pdf", "text/plain"],
    )
    _, pdf, notes = parsed.iter_parts()
    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_filename() == "report.pdf"
    assert pdf.get_content() == report.read_bytes()
    assert notes.get_payload(decode=True) == b"some notes\n"


def test_text_with_attachment_and_base64_lines(tmp_path: Path) -> None:
    _, report = files(tmp_path)
    composed = compose(build(attachments=[report]))
    parsed = parse(composed)
    assert structure(parsed) == ("multipart/mixed", ["text/plain", "application/pdf"])
    payload = composed.data.split(b"Content-Disposition: attachment")[1].split(b"\r\n\r\n")[1]
    lines = payload.split(b"\r\n")
    assert {len(line) for line in lines[:-2]} == {76}


def test_html_inline_and_attachment_without_plain(tmp_path: Path) -> None:
    logo, report = files(tmp_path)
    message = build(
        body="<p>x</p>",
        html_body=True,
        inline_images={"logo": logo},
        attachments=[report],
        auto_text=False,
    )
    assert structure(parse(compose(message))) == (
        "multipart/mixed",
        [("multipart/related", ["text/html", "image/png"]), "application/pdf"],
    )


@pytest.mark.parametrize(
    "filename",
    [
        "Quartalsbericht Übersicht.pdf",
        "отчёт.xlsx",
        "报告 2024.docx",
        "🎉 party.png",
        "a" * 150 + ".txt",
        "ü" * 120 + ".txt",
        'with "quotes" and (parens).txt',
        "double  spaced  name .txt",
        "semi;colon=equals%percent'.txt",
    ],
)
def test_attachment_filename_round_trip(filename: str) -> None:
    composed = compose(build(attachments=[(filename, b"payload", "application/octet-stream")]))
    parsed = parse(composed)
    _, attachment = parsed.iter_parts()
    assert attachment.get_filename() == filename
    assert filename_param(attachment) == filename
    assert attachment.get_content() == b"payload"


def test_non_ascii_filename_uses_rfc2231_and_name_fallback() -> None:
    composed = compose(build(attachments=[("Übersicht.pdf", b"x", "application/pdf")]))
    assert b"filename*=utf-8''%C3%9Cbersicht.pdf" in composed.data
    # name= as RFC 2231 too: RFC 2047 words inside quotes are forbidden (RFC 2047 5)
    assert b"name*=utf-8''%C3%9Cbersicht.pdf" in composed.data
    assert b"=?utf-8?" not in composed.data


def test_boundary_avoids_content(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([b"\x00" * 12, b"\x01" * 12])
    monkeypatch.setattr("fluxmail.compose._mime.os.urandom", lambda n: next(draws))
    taken = ("=_fm_" + "00" * 12).encode()
    assert _mime.boundary([b"text " + taken + b" more"]) == "=_fm_" + "01" * 12


def test_body_mentioning_boundary_prefix_still_parses() -> None:
    body = "--=_fm_\n--=_fm_" + "0" * 24 + "--\n"
    message = build(body="<p>x</p>", html_body=True, plain_body=body)
    plain, _ = parse(compose(message)).iter_parts()
    assert plain.get_content() == crlf(body)


def test_attachment_deleted_before_compose(tmp_path: Path) -> None:
    _, report = files(tmp_path)
    message = build(attachments=[report])
    report.unlink()
    with pytest.raises(AttachmentNotFoundError, match="disappeared"):
        compose(message)


# --- preview ------------------------------------------------------------------------------


def test_preview(tmp_path: Path) -> None:
    logo, report = files(tmp_path)
    message = build(
        subject="Grüße 👋",
        recipients=['"Doe, John" <j@x.com>', "Jörg <joerg@bücher.de>"],
        cc=["c@x.com"],
        bcc=["hidden@x.com"],
        body="<p>Hi</p>\x1b[2J",
        html_body=True,
        plain_body="Hi",
        inline_images={"logo": logo},
        attachments=[report],
        priority="high",
        unsubscribe_url="https://x.com/u",
    )
    composed = compose(message)
    text = preview(message, composed)
    assert "Subject: Grüße 👋" in text
    assert 'To: "Doe, John" <j@x.com>, Jörg <joerg@xn--bcher-kva.de>' in text
    assert "Bcc: hidden@x.com  (envelope only, not in the message)" in text
    assert f"Message-ID: {composed.message_id}" in text
    assert re.search(r"^Date: \w{3}, \d\d \w{3} \d{4} ", text, re.M)
    assert "--- text/plain ---\nHi\n--- text/html ---\n<p>Hi</p>\\x1b[2J" in text
    assert "Attachments:\n  report.pdf (application/pdf, 10.0 KiB)" in text
    assert "Inline images:\n  cid:logo logo.png (image/png, 776 B)" in text
    assert "\x1b" not in text
    assert "Priority: high" in text
    assert "Date:" not in preview(message)


def test_human_sizes() -> None:
    from fluxmail.compose._preview import human_size

    assert [human_size(n) for n in (0, 1023, 1024, 1536, 5 * 1024**2, 3 * 1024**4)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 MiB",
        "3072.0 GiB",
    ]
