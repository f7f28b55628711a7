"""Validation: build_message(), parse_address(), parse_addresses()."""

from __future__ import annotations

import io
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from fluxmail.errors import (
    AttachmentNotFoundError,
    FluxMailException,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidMessageError,
    MissingDependencyError,
)
from fluxmail.message import Address, build_message, parse_address, parse_addresses


def build(**overrides: Any) -> Any:
    options: dict[str, Any] = {
        "subject": "Hello",
        "recipients": ["to@example.com"],
        "body": "Hi",
        "sender": "me@example.com",
    }
    options.update(overrides)
    return build_message(**options)


# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "display", "local", "domain"),
    [
        ("a@b.co", "", "a", "b.co"),
        ("  a@b.co  ", "", "a", "b.co"),
        ("<a@b.co>", "", "a", "b.co"),
        ("Jane Doe <Jane.Doe@Example.COM>", "Jane Doe", "Jane.Doe", "example.com"),
        ('"Doe, John" <j@x.com>', "Doe, John", "j", "x.com"),
        ('"say \\"hi\\"" <j@x.com>', 'say "hi"', "j", "x.com"),
        ("Jörg Müller <j@x.com>", "Jörg Müller", "j", "x.com"),
        ("user+tag@sub.example.org", "", "user+tag", "sub.example.org"),
        ("a@bücher.de", "", "a", "xn--bcher-kva.de"),
        ("a@BÜCHER.de", "", "a", "xn--bcher-kva.de"),
        ("jörg@example.com", "", "jörg", "example.com"),
        ("用户@例子.广告", "", "用户", "xn--fsqu00a.xn--4rr70v"),
        ("a@localhost", "", "a", "localhost"),
    ],
)
def test_parse_address_accepts(text: str, display: str, local: str, domain: str) -> None:
    address = parse_address(text, field="to")
    assert (address.display_name, address.local, address.domain) == (display, local, domain)
    assert address.addr_spec == f"{local}@{domain}"
    assert address.needs_smtputf8 == (not local.isascii())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "plainaddress",
        "a@b@c.com",
        '"a@x.test y"@internal.test',
        "a@x.test (comment)@y.test",
        "a(comment)@x.com",
        "a@x.com (comment)",
        "team: a@x.com, b@y.com;",
        "a@x.com, b@y.com",
        "A <a@x.com>, B <b@y.com>",
        "Doe, John <j@x.com>",
        "a b@x.com",
        "a@x .com",
        "a\t@x.com",
        "a\x01@x.com",
        "Name\x07 <a@x.com>",
        "Na\tme <a@x.com>",
        "x" * 65 + "@x.com",
        "a@" + ".".join(["b" * 60] * 5),
        "a@-x.com",
        "a@x-.com",
        "a@x..com",
        "a@.x.com",
        "a@x.com.",
        "a@x_y.com",
        "a@[192.0.2.1]",
        "a@192.0.2.1",
        "a@" + "b" * 64 + ".com",
        ".a@x.com",
        "a.@x.com",
        "a..b@x.com",
        "a,b@x.com",
        "a@",
        "@x.com",
        "<a@x.com",
        "Name a@x.com>",
        '"unterminated <a@x.com>',
        '"a" trailing <a@x.com>',
        "a\u200bb@x.com",
        "a@☃.com",
        "a@x.com>",
        "a\ud800@x.com",
        "a@x.com\x85",
        "\u2028a@x.com",
        "a@x.com\u3000",
    ],
)
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(InvalidAddressError) as info:
        parse_address(text, field="recipients[0]")
    assert info.value.code == "invalid_address"
    assert str(info.value).startswith("recipients[0]: ")


@pytest.mark.parametrize(
    "text",
    ["a@x.com\r\nBcc: evil@y.com", "Name\n <a@x.com>", "a@x.com\x00", "Na\rme <a@x.com>"],
)
def test_parse_address_header_injection(text: str) -> None:
    with pytest.raises(HeaderInjectionError) as info:
        parse_address(text, field="cc[2]")
    assert info.value.code == "header_injection"
    assert "cc[2]" in str(info.value)


def test_address_domain_cannot_be_hidden() -> None:
    """What the envelope uses is exactly what a header parser reads."""
    for trick in ['"a@x.test y"@internal.test', "a@x.test (c)@y", "a@x.test@y.test"]:
        with pytest.raises(InvalidAddressError):
            parse_address(trick, field="to")


def test_address_instance_is_revalidated() -> None:
    address = parse_address(Address("a", "BÜCHER.de", "Name"), field="sender")
    assert address == Address("a", "xn--bcher-kva.de", "Name")
    with pytest.raises(HeaderInjectionError):
        parse_address(Address("a", "x.com", "Evil\r\nBcc: x@y.z"), field="sender")
    with pytest.raises(InvalidAddressError):
        parse_address(Address("a@b", "x.com"), field="sender")


def test_parse_addresses_lists_and_names_entries() -> None:
    assert parse_addresses(None, field="cc") == ()
    assert parse_addresses("a@x.com", field="cc") == (Address("a", "x.com"),)
    assert len(parse_addresses(("a@x.com", "b@y.com"), field="cc")) == 2
    with pytest.raises(InvalidAddressError, match=r"^cc\[1\]: "):
        parse_addresses(["a@x.com", "nope"], field="cc")
    with pytest.raises(InvalidAddressError, match=r"^cc: "):
        parse_addresses("a@x.com, b@y.com", field="cc")


@pytest.mark.parametrize("value", [123, b"a@x.com", {"a@x.com": 1}, 1.5, object()])
def test_wrong_recipient_types(value: object) -> None:
    with pytest.raises(InvalidMessageError) as info:
        build(recipients=value)
    assert info.value.code == "invalid_message"
    assert "recipients" in str(info.value)


def test_wrong_type_inside_list_names_entry() -> None:
    with pytest.raises(InvalidMessageError, match=r"^recipients\[1\]"):
        build(recipients=["a@x.com", 42])


def test_local_part_and_address_length_limits() -> None:
    assert parse_address("x" * 64 + "@x.com", field="to").local == "x" * 64
    assert parse_address("é" * 32 + "@x.com", field="to").needs_smtputf8
    with pytest.raises(InvalidAddressError, match="64 octets"):
        parse_address("é" * 33 + "@x.com", field="to")
    domain = ".".join(["d" * 60] * 3) + ".com"
    assert parse_address("x" * 64 + "@" + domain, field="to")
    with pytest.raises(InvalidAddressError, match="254 octets"):
        parse_address("x" * 64 + "@" + ".".join(["d" * 62] * 3) + ".com", field="to")


def test_idna_imported_only_for_non_ascii_domains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "idna", None)  # any import of idna now fails
    # domains no other test uses: a checked address is remembered, and a remembered one
    # needs no idna
    fresh = uuid.uuid4().hex[:12]
    assert parse_address(f"a@example-{fresh}.com", field="to").domain == f"example-{fresh}.com"
    with pytest.raises(ImportError):
        parse_address(f"a@bücher-{fresh}.de", field="to")


# --- recipients, subject, body, flags -----------------------------------------------------


def test_minimal_message() -> None:
    message = build()
    assert message.subject == "Hello"
    assert message.sender == Address("me", "example.com")
    assert message.recipients == (Address("to", "example.com"),)
    assert not message.html
    assert not message.needs_smtputf8


def test_needs_at_least_one_recipient() -> None:
    with pytest.raises(InvalidAddressError, match="at least one recipient"):
        build(recipients=[])
    with pytest.raises(InvalidAddressError):
        build(recipients=None)
    assert build(recipients=None, bcc=["hidden@x.com"]).bcc == (Address("hidden", "x.com"),)


def test_envelope_recipients_dedupe_in_order() -> None:
    message = build(recipients=["a@x.com", "B@x.com"], cc=["b@X.com"], bcc=["c@x.com", "a@x.com"])
    assert [a.addr_spec for a in message.envelope_recipients] == ["a@x.com", "B@x.com", "c@x.com"]


def test_sender_errors_name_the_field() -> None:
    with pytest.raises(InvalidAddressError, match=r"^sender: "):
        build(sender="not an address")
    message = build(sender=Address("me", "x.com", "Me"))
    assert message.sender.display_name == "Me"


def test_non_ascii_local_part_needs_smtputf8() -> None:
    assert build(recipients=["jörg@example.com"]).needs_smtputf8
    assert build(reply_to=["jörg@example.com"]).needs_smtputf8
    assert not build(recipients=["Jörg <j@bücher.de>"]).needs_smtputf8


@pytest.mark.parametrize(
    ("subject", "error"),
    [
        ("Hi\r\nBcc: evil@x.com", HeaderInjectionError),
        ("Hi\nthere", HeaderInjectionError),
        ("Hi\x00", HeaderInjectionError),
        ("Hi\x07", InvalidMessageError),
        ("Hi\x7f", InvalidMessageError),
        ("Hi\ud800", InvalidMessageError),
        (None, InvalidMessageError),
        (b"Hi", InvalidMessageError),
    ],
)
def test_subject_refused(subject: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^subject: "):
        build(subject=subject)


def test_subject_accepts_empty_tab_and_unicode() -> None:
    assert build(subject="").subject == ""
    assert build(subject="a\tb").subject == "a\tb"
    assert build(subject="שלום 👋").subject == "שלום 👋"


def test_body_checks() -> None:
    with pytest.raises(InvalidMessageError, match=r"^body: "):
        build(body=None)
    with pytest.raises(InvalidMessageError, match=r"^body: "):
        build(body="bad \udc80 text")
    assert build(body="line\r\n.\r\nend\x00").body == "line\r\n.\r\nend\x00"


def test_plain_body_needs_html() -> None:
    with pytest.raises(InvalidMessageError, match=r"^plain_body: "):
        build(plain_body="text")
    message = build(body="<b>x</b>", html_body=True, plain_body="x")
    assert message.html
    assert message.plain_body == "x"


@pytest.mark.parametrize("flag", ["html_body", "inline_css"])
def test_flags_must_be_bool(flag: str) -> None:
    with pytest.raises(InvalidMessageError, match=f"^{flag}: "):
        build(**{"html_body": True, flag: "yes"})


@pytest.mark.parametrize(
    ("value", "expected"), [("high", "high"), ("LOW", "low"), (" Normal ", "normal"), (None, None)]
)
def test_priority(value: str | None, expected: str | None) -> None:
    assert build(priority=value).priority == expected


@pytest.mark.parametrize("value", ["urgent", "", 1, "highest"])
def test_priority_refused(value: object) -> None:
    with pytest.raises(InvalidMessageError, match=r"^priority: "):
        build(priority=value)


def test_unsubscribe_url() -> None:
    url = "https://myapp.com/unsubscribe?token=abc123"
    assert build(unsubscribe_url=url).unsubscribe_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://myapp.com/u",
        "https://",
        "https:///path",
        "mailto:u@x.com",
        "https://x.com/a b",
        "https://x.com/<a>",
        "https://bücher.de/u",
        "//x.com/u",
        "https://[::1/u",
        42,
    ],
)
def test_unsubscribe_url_refused(url: object) -> None:
    with pytest.raises(InvalidMessageError, match=r"^unsubscribe_url: "):
        build(unsubscribe_url=url)


def test_unsubscribe_url_injection() -> None:
    with pytest.raises(HeaderInjectionError):
        build(unsubscribe_url="https://x.com/u\r\nBcc: e@x.com")


# --- threading and extra headers ----------------------------------------------------------


def test_threading_ids() -> None:
    message = build(
        in_reply_to="<original-message-id@example.com>",
        references=["<a@example.com>", "<b@example.com>"],
    )
    assert message.in_reply_to == "<original-message-id@example.com>"
    assert message.references == ("<a@example.com>", "<b@example.com>")
    assert build(references="<a@x.com> <b@y.com>").references == ("<a@x.com>", "<b@y.com>")


@pytest.mark.parametrize(
    "value", ["a@b", "<a b@c>", "<>", "<a@>", "<@b>", "<a@b", "<a<x>@b>", "<é@b>", 5]
)
def test_in_reply_to_refused(value: object) -> None:
    with pytest.raises(InvalidMessageError, match=r"^in_reply_to: "):
        build(in_reply_to=value)


def test_threading_injection_and_entry_names() -> None:
    with pytest.raises(HeaderInjectionError):
        build(in_reply_to="<a@b>\r\nBcc: e@x.com")
    with pytest.raises(HeaderInjectionError):
        build(references=["<a@b>", "<c@d>\nX: y"])
    with pytest.raises(InvalidMessageError, match=r"^references\[1\]: "):
        build(references=["<a@b>", "c@d"])
    with pytest.raises(InvalidMessageError, match=r"^references: "):
        build(references=12)


def test_extra_headers() -> None:
    message = build(headers={"X-Campaign": "  spring  ", "X-Note": "Grüße"})
    assert message.extra_headers == (("X-Campaign", "spring"), ("X-Note", "Grüße"))


@pytest.mark.parametrize(
    "name",
    ["Subject", "from", "BCC", "Message-ID", "MIME-Version", "Content-Type", "content-id",
     "Sender", "Date", "X-Priority", "List-Unsubscribe", "Bad Name", "X:Y", "", "Ünï"],
)  # fmt: skip
def test_extra_header_names_refused(name: str) -> None:
    with pytest.raises(InvalidMessageError, match=r"^headers"):
        build(headers={name: "value"})


def test_extra_header_injection() -> None:
    with pytest.raises(HeaderInjectionError):
        build(headers={"X-A": "v\r\nBcc: e@x.com"})
    with pytest.raises(HeaderInjectionError):
        build(headers={"X-A\r\nBcc": "v"})
    with pytest.raises(InvalidMessageError):
        build(headers=[("X-A", "v")])
    with pytest.raises(InvalidMessageError):
        build(headers={"X-A": 1})


# --- attachments and inline images --------------------------------------------------------


def test_path_attachment(tmp_path: Path) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 test")
    (attachment,) = build(attachments=[str(report)]).attachments
    assert attachment.filename == "report.pdf"
    assert attachment.content_type == "application/pdf"
    assert attachment.size == 13
    assert attachment.path == report
    assert attachment.data is None  # read at compose time
    report.write_bytes(b"changed")
    assert attachment.read_bytes() == b"changed"


def test_attachment_types_guessed(tmp_path: Path) -> None:
    names = ["a.tar.gz", "b.unknownext", "c.png", "README", "d.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    message = build(attachments=[tmp_path / name for name in names])
    assert [a.content_type for a in message.attachments] == [
        "application/gzip",
        "application/octet-stream",
        "image/png",
        "application/octet-stream",
        "text/plain",
    ]


def test_single_path_and_pathlike(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("hi")
    assert len(build(attachments=str(file)).attachments) == 1
    assert len(build(attachments=file).attachments) == 1


@pytest.mark.parametrize("path", ["/nonexistent/report.pdf", "http://example.com/report.pdf"])
def test_missing_attachment(path: str) -> None:
    with pytest.raises(AttachmentNotFoundError) as info:
        build(attachments=["/etc/hostname", path] if os.path.isfile("/etc/hostname") else [path])
    assert info.value.code == "attachment_not_found"
    assert isinstance(info.value, FileNotFoundError)
    assert path in str(info.value)
    assert str(info.value).startswith("attachments[")


def test_attachment_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidMessageError, match="not a regular file") as info:
        build(attachments=[tmp_path])
    assert not isinstance(info.value, AttachmentNotFoundError)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InvalidMessageError, match="not a regular file"):
        build(attachments=[fifo])  # must not block opening the FIFO
    if os.path.exists("/dev/null"):
        with pytest.raises(InvalidMessageError, match="not a regular file"):
            build(attachments=["/dev/null"])
    with pytest.raises(AttachmentNotFoundError):
        build(attachments=[tmp_path / "file.txt" / "below"])


def test_attachment_filename_injection(tmp_path: Path) -> None:
    evil = tmp_path / "a\r\nContent-Type: text-html.txt"
    evil.write_text("x")
    with pytest.raises(HeaderInjectionError, match=r"^attachments\[0\]"):
        build(attachments=[evil])


def test_data_and_file_object_attachments(tmp_path: Path) -> None:
    file = tmp_path / "photo.jpg"
    file.write_bytes(b"\xff\xd8jpeg")
    with file.open("rb") as handle:
        message = build(
            attachments=[("data.csv", b"a,b\n1,2\n", "text/csv"), ("x.bin", b"\x00"), handle]
        )
    first, second, third = message.attachments
    assert (first.filename, first.content_type, first.size, first.data) == (
        "data.csv",
        "text/csv",
        8,
        b"a,b\n1,2\n",
    )
    assert second.content_type == "application/octet-stream"
    assert (third.filename, third.content_type, third.data) == (
        "photo.jpg",
        "image/jpeg",
        b"\xff\xd8jpeg",
    )


@pytest.mark.parametrize(
    ("item", "error"),
    [
        (("../etc/passwd", b"x", "text/plain"), InvalidMessageError),
        (("", b"x", "text/plain"), InvalidMessageError),
        (("a\r\nb.txt", b"x", "text/plain"), HeaderInjectionError),
        (("a.txt", "text not bytes", "text/plain"), InvalidMessageError),
        (("a.txt", b"x", "not a type"), InvalidMessageError),
        (("a.txt", b"x", "text/plain; charset=x"), InvalidMessageError),
        (("a.txt", b"x", "application/" + "x" * 128), InvalidMessageError),
        (io.BytesIO(b"no name"), InvalidMessageError),
        (123, InvalidMessageError),
        (None, InvalidMessageError),
    ],
)
def test_bad_attachment_items(item: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^attachments\[0\]"):
        build(attachments=[item])


def test_text_mode_file_refused(tmp_path: Path) -> None:
    file = tmp_path / "a.txt"
    file.write_text("x")
    with file.open() as handle, pytest.raises(InvalidMessageError, match="binary mode"):
        build(attachments=[handle])


def test_inline_images(tmp_path: Path) -> None:
    logo = tmp_path / "acme-logo.png"
    logo.write_bytes(b"\x89PNG")
    message = build(body='<img src="cid:logo">', html_body=True, inline_images={"logo": logo})
    (image,) = message.inline_images
    assert (image.content_id, image.filename, image.content_type) == (
        "logo",
        "acme-logo.png",
        "image/png",
    )
    with pytest.raises(InvalidMessageError, match=r"^inline_images: requires html_body"):
        build(inline_images={"logo": logo})
    assert build(inline_images={}).inline_images == ()


@pytest.mark.parametrize(
    ("cid", "error"),
    [
        ("<logo>", InvalidMessageError),
        ("my logo", InvalidMessageError),
        ("", InvalidMessageError),
        ("lo\r\ngo", HeaderInjectionError),
        (7, InvalidMessageError),
    ],
)
def test_inline_image_cid_refused(tmp_path: Path, cid: object, error: type[Exception]) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"x")
    with pytest.raises(error, match=r"^inline_images"):
        build(html_body=True, inline_images={cid: logo})


def test_inline_image_missing_file() -> None:
    with pytest.raises(AttachmentNotFoundError, match=r"^inline_images\['logo'\]"):
        build(html_body=True, inline_images={"logo": "/nonexistent/logo.png"})
    with pytest.raises(InvalidMessageError, match=r"^inline_images: "):
        build(html_body=True, inline_images=["logo.png"])


# --- CSS inlining -------------------------------------------------------------------------


def test_inline_css() -> None:
    html = "<style>h1 { color: #2563eb; }</style><h1>Hello</h1>"
    message = build(body=html, html_body=True, inline_css=True)
    assert "<style>" not in message.body
    assert 'style="color: #2563eb;"' in message.body
    assert build(body=html, inline_css=True).body == html  # ignored for plain text


def test_inline_css_never_fetches_stylesheets() -> None:
    html = '<link rel="stylesheet" href="https://192.0.2.1/x.css"><h1>Hi</h1>'
    assert "Hi" in build(body=html, html_body=True, inline_css=True).body


def test_inline_css_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "css_inline", None)
    assert build(body="<p>x</p>", inline_css=True).body == "<p>x</p>"  # no import needed
    with pytest.raises(MissingDependencyError) as info:
        build(body="<p>x</p>", html_body=True, inline_css=True)
    assert info.value.code == "missing_dependency"
    assert 'pip install -e ".[css]"' in str(info.value)  # this project's extra, from a clone
    assert 'install "fluxmail[' not in str(info.value)  # never the index's unrelated fluxmail


def test_every_error_is_a_fluxmail_exception() -> None:
    bad_calls: list[tuple[dict[str, Any], type[FluxMailException], str]] = [
        ({"recipients": 1}, InvalidMessageError, "invalid_message"),
        ({"subject": 1}, InvalidMessageError, "invalid_message"),
        ({"priority": "x"}, InvalidMessageError, "invalid_message"),
        ({"attachments": ["/nope"]}, AttachmentNotFoundError, "attachment_not_found"),
        ({"headers": {"From": "x"}}, InvalidMessageError, "invalid_message"),
    ]
    for overrides, error, code in bad_calls:
        with pytest.raises(error) as info:
            build(**overrides)
        assert isinstance(info.value, FluxMailException)
        assert info.value.code == code
