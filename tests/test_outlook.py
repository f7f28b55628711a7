"""Outlook: unavailable off Windows; with an injected recording fake of the COM
application, display() fills exactly the MailItem fields the message has.

The fake (``outlook_fake.py``) is the only fake in the test suite (the COM object cannot
exist on Linux).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from fluxmail import (
    EmailInstance,
    EmailObject,
    FluxMail,
    FluxMailException,
    InvalidAddressError,
    NoMessageError,
    OutlookUnavailableError,
    UnsupportedOperationError,
)
from outlook_fake import FakeMailItem, FakeOutlookApplication

PR_ATTACH_CONTENT_ID = "http://schemas.microsoft.com/mapi/proptag/0x3712001F"
OL_MAIL_ITEM = 0

not_windows = pytest.mark.skipif(sys.platform == "win32", reason="Outlook may exist here")


@pytest.fixture
def app() -> FakeOutlookApplication:
    return FakeOutlookApplication()


@pytest.fixture
def outlook(app: FakeOutlookApplication) -> FluxMail:
    return FluxMail(
        object_type=EmailObject.OUTLOOK, host=EmailInstance(relay=""), outlook_application=app
    )


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4\n%%EOF\n")
    return path


def only_item(app: FakeOutlookApplication) -> FakeMailItem:
    assert app.created == [OL_MAIL_ITEM]
    (item,) = app.items
    return item


# --- off Windows ---------------------------------------------------------------------------


@not_windows
def test_outlook_needs_windows() -> None:
    with pytest.raises(OutlookUnavailableError) as info:
        FluxMail(object_type=EmailObject.OUTLOOK, host=EmailInstance(relay=""))
    assert isinstance(info.value, FluxMailException)
    assert "Windows" in str(info.value)
    assert info.value.code == "outlook_unavailable"


@not_windows
def test_outlook_by_name_needs_windows() -> None:
    with pytest.raises(OutlookUnavailableError):
        FluxMail(object_type="outlook")


# --- display() with the fake -------------------------------------------------------------------


def test_spec_example(app: FakeOutlookApplication, report: Path) -> None:
    email = FluxMail(
        object_type=EmailObject.OUTLOOK, host=EmailInstance(relay=""), outlook_application=app
    )
    email.create(
        subject="Project Update",
        recipients=["user@example.com"],
        body="Please find the update below.",
        cc=["manager@example.com"],
        attachments=[str(report)],
    )
    # Opens the Outlook compose window — user must click Send manually
    email.display()

    item = only_item(app)
    assert item.assigned == {
        "Subject": "Project Update",
        "To": "user@example.com",
        "CC": "manager@example.com",
        "BCC": "",
        "Body": "Please find the update below.",
    }
    assert [a.source for a in item.Attachments.added] == [str(report.resolve())]
    assert item.calls == [("Display", False)]


def test_html_body_bcc_and_several_recipients(
    outlook: FluxMail, app: FakeOutlookApplication
) -> None:
    outlook.create(
        subject="Newsletter",
        recipients=["a@example.com", "Bee <b@example.com>"],
        cc=["c@example.com", "d@example.com"],
        bcc=["hidden@example.com"],
        body="<h1>Hi</h1>",
        html_body=True,
    ).display()

    item = only_item(app)
    assert item.assigned == {
        "Subject": "Newsletter",
        "To": "a@example.com; Bee <b@example.com>",
        "CC": "c@example.com; d@example.com",
        "BCC": "hidden@example.com",
        "HTMLBody": "<h1>Hi</h1>",
    }
    assert item.calls == [("Display", False)]


def test_inline_images_get_their_content_id(
    outlook: FluxMail, app: FakeOutlookApplication, tmp_path: Path, report: Path
) -> None:
    from fluxmail.cli._demo import demo_png

    logo = tmp_path / "logo.png"
    logo.write_bytes(demo_png(4))
    outlook.create(
        subject="Welcome",
        recipients=["user@example.com"],
        body='<img src="cid:logo"> Welcome!',
        html_body=True,
        inline_images={"logo": str(logo)},
        attachments=[str(report)],
    ).display()

    item = only_item(app)
    sources = [a.source for a in item.Attachments.added]
    assert sorted(sources) == sorted([str(logo.resolve()), str(report.resolve())])
    by_source = {a.source: a for a in item.Attachments.added}
    assert by_source[str(logo.resolve())].PropertyAccessor.properties == {
        PR_ATTACH_CONTENT_ID: "logo"
    }
    assert by_source[str(report.resolve())].PropertyAccessor.properties == {}
    assert item.assigned["HTMLBody"] == '<img src="cid:logo"> Welcome!'


@pytest.mark.parametrize(("priority", "importance"), [("high", 2), ("normal", 1), ("low", 0)])
def test_priority_sets_importance(
    outlook: FluxMail, app: FakeOutlookApplication, priority: str, importance: int
) -> None:
    outlook.create(
        subject="P", recipients=["user@example.com"], body="x", priority=priority
    ).display()
    item = only_item(app)
    assert item.assigned["Importance"] == importance
    assert set(item.assigned) == {"Subject", "To", "CC", "BCC", "Body", "Importance"}


def test_relative_attachment_paths_become_absolute(
    outlook: FluxMail,
    app: FakeOutlookApplication,
    tmp_path: Path,
    report: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    outlook.create(
        subject="Rel", recipients=["user@example.com"], body="x", attachments=["report.pdf"]
    )
    monkeypatch.chdir("/")  # Outlook's working directory is not ours
    outlook.display()
    assert [a.source for a in only_item(app).Attachments.added] == [str(report.resolve())]


def test_in_memory_attachment_is_written_to_a_file(
    outlook: FluxMail, app: FakeOutlookApplication
) -> None:
    outlook.create(
        subject="Mem",
        recipients=["user@example.com"],
        body="x",
        attachments=[("data.csv", b"a,b\n1,2\n", "text/csv")],
    ).display()
    (added,) = only_item(app).Attachments.added
    path = Path(added.source)
    assert path.is_absolute()
    assert path.name == "data.csv"
    assert path.read_bytes() == b"a,b\n1,2\n"


def test_display_before_create(outlook: FluxMail, app: FakeOutlookApplication) -> None:
    with pytest.raises(NoMessageError):
        outlook.display()
    assert app.created == []


def test_validation_still_applies(outlook: FluxMail, app: FakeOutlookApplication) -> None:
    with pytest.raises(InvalidAddressError):
        outlook.create(subject="x", recipients=["not an address"], body="x")
    assert app.created == []


# --- what Outlook cannot do ------------------------------------------------------------------


def test_send_is_unsupported(outlook: FluxMail, app: FakeOutlookApplication) -> None:
    outlook.create(subject="S", recipients=["user@example.com"], body="x")
    with pytest.raises(UnsupportedOperationError) as info:
        outlook.send()
    assert isinstance(info.value, FluxMailException)
    assert info.value.code == "unsupported_operation"
    assert "display()" in str(info.value)
    assert all(("Send",) not in item.calls for item in app.items)


def test_send_async_is_unsupported(outlook: FluxMail, app: FakeOutlookApplication) -> None:
    import asyncio

    outlook.create(subject="S", recipients=["user@example.com"], body="x")
    with pytest.raises(UnsupportedOperationError):
        asyncio.run(outlook.send_async())  # type: ignore[arg-type]
    assert app.created == []


@pytest.mark.parametrize(
    "option",
    [
        {"sender": "me@example.com"},
        {"reply_to": ["replies@example.com"]},
        {"in_reply_to": "<a@example.com>"},
        {"references": ["<a@example.com>"]},
        {"unsubscribe_url": "https://example.com/u"},
        {"headers": {"X-Campaign": "may"}},
    ],
    ids=lambda o: next(iter(o)),
)
def test_smtp_only_options_are_refused(
    outlook: FluxMail, app: FakeOutlookApplication, option: dict[str, Any]
) -> None:
    with pytest.raises(UnsupportedOperationError) as info:
        outlook.create(subject="S", recipients=["user@example.com"], body="x", **option)
    assert next(iter(option)) in str(info.value)
    with pytest.raises(NoMessageError):
        outlook.display()
    assert app.created == []


def test_constructor_sender_is_refused(app: FakeOutlookApplication) -> None:
    """Outlook chooses the sender: a default sender on the constructor is refused too,
    not silently dropped."""
    with pytest.raises(UnsupportedOperationError) as info:
        FluxMail(
            object_type="outlook",
            host=EmailInstance(relay=""),
            sender="me@example.com",
            outlook_application=app,
        )
    assert "sender" in str(info.value)
    assert app.created == []


def test_test_connection_is_unsupported(outlook: FluxMail) -> None:
    with pytest.raises(UnsupportedOperationError):
        outlook.test_connection()
