"""fluxmail.testing (capture, the fluxmail_outbox fixture) and the console/file transports.

A capture must not touch the network: tests point the mailer at a real local server and
check that the server saw no connection at all.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import subprocess
import sys
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import fluxmail.testing
from fluxmail import (
    BulkSender,
    ConfigurationError,
    EmailObject,
    FluxMail,
    InvalidAddressError,
    NoMessageError,
    RecipientsRefusedError,
    UnsupportedOperationError,
)
from fluxmail.testing import Outbox, capture
from servers import PASSWORD, USERNAME, SMTPTestServer

SUCCESS = "Email sent successfully via SMTP."


def msg(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "subject": "Hello",
        "recipients": ["Ada <ada@example.org>"],
        "body": "Hi there!",
    }
    options.update(overrides)
    return options


@pytest.fixture
def mailer(starttls_server: SMTPTestServer) -> FluxMail:
    """A real SMTP mailer (STARTTLS + AUTH) that a capture must keep off the network."""
    return FluxMail(**starttls_server.fluxmail_kwargs(sender="App <app@example.com>"))


# --- capture ----------------------------------------------------------------------------


def test_every_send_path_lands_in_the_outbox(
    mailer: FluxMail, starttls_server: SMTPTestServer
) -> None:
    with capture() as outbox:
        assert mailer.create(**msg(subject="send")).send() == SUCCESS
        mailer.create(**msg(subject="async"))
        assert asyncio.run(mailer.send_async()) == SUCCESS
        sync = BulkSender(mailer).send_batch(
            [msg(subject=f"bulk {i}") for i in range(2)], progress=False
        )
        result = asyncio.run(
            BulkSender(mailer, connections=3).send_batch_async(
                [msg(subject="bulk async")], progress=False, max_per_second=1
            )
        )
        with mailer:  # a held connection is never opened either
            mailer.create(**msg(subject="held")).send()
    assert outbox.subjects == ["send", "async", "bulk 0", "bulk 1", "bulk async", "held"]
    assert sync == {"sent": 2, "failed": 0, "total": 2, "errors": []}
    assert result["sent"] == 1
    assert starttls_server.connections == 0
    assert starttls_server.messages == []


def test_the_same_validation_and_composition(mailer: FluxMail) -> None:
    with capture() as outbox:
        with pytest.raises(InvalidAddressError):
            mailer.create(**msg(recipients=["not an address"]))
        with pytest.raises(NoMessageError):
            FluxMail(host="127.0.0.1", sender="a@example.com").send()
        bulk = BulkSender(mailer).send_batch(
            [msg(recipients=["bad"]), msg(subject="ok")], progress=False
        )
        receipt = mailer.create(
            **msg(cc=["cc@example.org"], bcc=["Secret <hidden@example.org>"])
        ).send()
    assert bulk["sent"] == 1
    assert bulk["failed"] == 1
    assert isinstance(bulk["errors"][0][1], InvalidAddressError)
    assert outbox.subjects == ["ok", "Hello"]
    captured = outbox[-1]
    assert receipt.message_id == captured.message_id  # type: ignore[attr-defined]
    assert captured.message["Message-ID"] == captured.message_id
    assert captured.envelope.mail_from == "app@example.com"
    assert captured.recipients == ("ada@example.org", "cc@example.org", "hidden@example.org")
    assert b"hidden" not in captured.data
    assert captured.bcc == ["hidden@example.org"]


def test_captured_bytes_are_what_smtp_would_send(
    mailer: FluxMail, starttls_server: SMTPTestServer
) -> None:
    options = msg(
        body="<h1>Hi</h1><p>Report attached.</p>",
        html_body=True,
        attachments=[("report.csv", b"a,b\r\n1,2\r\n", "text/csv")],
        bcc=["audit@example.org"],
    )
    with capture() as outbox:
        mailer.create(**options).send()
    mailer.create(**options).send()
    captured, received = outbox[0], starttls_server.messages[0]
    assert captured.envelope.mail_from == received.mail_from
    assert list(captured.recipients) == received.rcpt_tos
    assert _without_id_and_date(captured.data) == _without_id_and_date(received.data)


def _without_id_and_date(data: bytes) -> list[bytes]:
    lines = data.split(b"\r\n")
    kept = [line for line in lines if not line.startswith((b"Date: ", b"Message-ID: "))]
    # multipart boundaries are random too
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    for part in parsed.walk():
        marker = part.get_boundary()
        if marker:
            kept = [line.replace(marker.encode(), b"BOUNDARY") for line in kept]
    return kept


def test_outbox_helpers() -> None:
    sender = FluxMail(host="127.0.0.1", port=9, sender="a@example.com")
    with capture() as outbox:
        assert not outbox
        assert len(outbox) == 0
        sender.create(
            subject="Grüße",
            recipients=["Jörg <joerg@Example.ORG>", "b@example.org"],
            cc=["c@example.org"],
            body="<p>Hallo</p>",
            html_body=True,
            attachments=[("naïve.txt", b"x", "text/plain")],
        ).send()
        sender.create(subject="Second", recipients=["b@example.org"], body="plain\nbody").send()
    first, second = outbox
    assert outbox.subjects == ["Grüße", "Second"]
    assert outbox.message_ids == [first.message_id, second.message_id]
    assert [m.subject for m in outbox.to("B@example.org")] == ["Grüße", "Second"]
    assert outbox.to("Someone <joerg@example.org>") == [first]
    assert outbox.to("c@example.org") == [first]
    assert outbox.to("nobody@example.org") == []
    assert first.to == ["joerg@example.org", "b@example.org"]
    assert first.cc == ["c@example.org"]
    assert first.bcc == []
    assert first.sender == "a@example.com"
    assert first.html == "<p>Hallo</p>\n"
    assert first.text == "Hallo\n"
    assert first.attachments == [("naïve.txt", b"x", "text/plain")]
    assert second.text == "plain\nbody\n"
    assert second.html is None
    assert outbox[-1] is second
    assert outbox[:1] == [first]
    assert "Second" in repr(outbox)
    assert "data" not in repr(first)
    outbox.clear()
    assert list(outbox) == []


def test_smtputf8_messages_parse_as_text() -> None:
    sender = FluxMail(host="127.0.0.1", port=9, sender="a@example.com")
    with capture() as outbox:
        sender.create(subject="Grüße", recipients=["Jörg <jörg@example.org>"], body="Hallo").send()
    assert outbox[0].to == ["jörg@example.org"]
    assert outbox[0].message["To"] == "Jörg <jörg@example.org>"
    assert outbox.to("jörg@example.org") == [outbox[0]]


def test_fail_next_simulates_a_refusal(mailer: FluxMail) -> None:
    refused = RecipientsRefusedError("all recipients refused", smtp_code=550)
    with capture() as outbox:
        outbox.fail_next(refused)
        with pytest.raises(RecipientsRefusedError):
            mailer.create(**msg()).send()
        assert mailer.message is not None  # a failed send keeps the message
        mailer.send()
        outbox.fail_next(refused, times=1)
        result = BulkSender(mailer).send_batch([msg(), msg()], progress=False)
    assert result["sent"] == 1
    assert result["errors"][0][1] is refused
    assert len(outbox) == 2


def test_captures_nest_and_end(mailer: FluxMail, starttls_server: SMTPTestServer) -> None:
    with capture() as outer:
        mailer.create(**msg(subject="outer 1")).send()
        with capture() as inner:
            mailer.create(**msg(subject="inner")).send()
        mailer.create(**msg(subject="outer 2")).send()
    assert outer.subjects == ["outer 1", "outer 2"]
    assert inner.subjects == ["inner"]
    mailer.create(**msg(subject="real")).send()  # the capture is over: the network again
    assert [m.message["Subject"] for m in starttls_server.messages] == ["real"]


def test_other_threads_are_captured(mailer: FluxMail) -> None:
    def work(i: int) -> None:
        mailer.create(**msg(subject=f"thread {i}")).send()

    with capture() as outbox:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(outbox.subjects) == sorted(f"thread {i}" for i in range(8))


def test_outlook_still_cannot_send_under_capture() -> None:
    outlook = FluxMail(object_type="outlook", outlook_application=object())
    with capture() as outbox:
        outlook.create(subject="x", recipients=["a@example.org"], body="y")
        with pytest.raises(UnsupportedOperationError):
            outlook.send()
    assert len(outbox) == 0


def test_the_pytest_fixture(fluxmail_outbox: Outbox, mailer: FluxMail) -> None:
    mailer.create(**msg(subject="from the fixture")).send()
    assert fluxmail_outbox.subjects == ["from the fixture"]


def test_the_plugin_is_registered() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("fluxmail") == "fluxmail.pytest_plugin"


def test_import_fluxmail_stays_light() -> None:
    code = (
        "import sys, fluxmail;"
        "bad = [m for m in ('fluxmail.testing', 'fluxmail.transports.dev', 'pytest', 'dkim')"
        " if m in sys.modules]; assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


# --- console and file transports ----------------------------------------------------------


def test_email_object_has_development_transports() -> None:
    assert EmailObject("console") is EmailObject.CONSOLE
    assert EmailObject("file") is EmailObject.FILE
    assert FluxMail(object_type="Console").object_type is EmailObject.CONSOLE
    with pytest.raises(ConfigurationError, match="'smtp' or 'outlook'"):
        FluxMail(object_type="memory")
    with pytest.raises(ConfigurationError, match="needs host="):
        FluxMail(object_type="file")


def test_console_prints_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    console = FluxMail(
        object_type="console",
        username=USERNAME,
        password=PASSWORD,
        sender="App <app@example.com>",
    )
    result = console.create(**msg(bcc=["hidden@example.org"], body="Hi\x1b[2J there")).send()
    assert result == SUCCESS
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == lines[-1] == "-" * 79
    assert lines[1] == "Return-Path: <app@example.com>"
    assert lines[2] == "Envelope-To: ada@example.org, hidden@example.org"
    assert "Subject: Hello" in lines
    assert "Hi\\x1b[2J there" in out  # escaped: cannot drive the terminal
    assert "\x1b" not in out
    assert PASSWORD not in out
    assert "Bcc" not in out


def test_file_writes_one_eml_per_message(tmp_path: Path) -> None:
    folder = tmp_path / "outbox" / "dev"
    writer = FluxMail(object_type=EmailObject.FILE, host=folder, sender="app@example.com")
    assert "outbox" in repr(writer)
    for i in range(3):
        writer.create(**msg(subject=f"file {i}", bcc=["hidden@example.org"])).send()
    files = sorted(folder.iterdir())
    assert [f.suffix for f in files] == [".eml"] * 3
    parsed = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]
    assert sorted(str(p["Subject"]) for p in parsed) == ["file 0", "file 1", "file 2"]
    assert parsed[0]["Return-Path"] == "<app@example.com>"
    assert parsed[0]["Envelope-To"] == "ada@example.org, hidden@example.org"
    assert parsed[0]["Bcc"] is None
    assert FluxMail(object_type="file", host=str(folder)).object_type is EmailObject.FILE


def test_file_transport_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError, match="cannot create the directory"):
        FluxMail(object_type="file", host=str(blocker / "sub"))


def test_bulk_and_async_on_development_transports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = FluxMail(object_type="file", host=str(tmp_path), sender="a@example.com")
    result = BulkSender(writer).send_batch([msg(), msg(recipients=["bad"])], progress=False)
    assert (result["sent"], result["failed"]) == (1, 1)
    console = FluxMail(object_type="console", sender="a@example.com")

    async def run() -> None:
        console.create(**msg(subject="async console"))
        await console.send_async()
        await BulkSender(console).send_batch_async([msg(subject="bulk console")], progress=False)

    asyncio.run(run())
    out = capsys.readouterr().out
    assert "Subject: async console" in out
    assert "Subject: bulk console" in out
    with pytest.raises(UnsupportedOperationError):
        BulkSender(FluxMail(object_type="outlook", outlook_application=object()))
    with pytest.raises(UnsupportedOperationError):
        console.test_connection()


def test_capture_wins_over_console(capsys: pytest.CaptureFixture[str]) -> None:
    console = FluxMail(object_type="console", sender="a@example.com")
    with capture() as outbox:
        console.create(**msg()).send()
    assert len(outbox) == 1
    assert capsys.readouterr().out == ""


def test_from_env_development_transports(tmp_path: Path) -> None:
    console = FluxMail.from_env({"FLUXMAIL_TYPE": "console", "FLUXMAIL_SENDER": "a@b.example"})
    assert console.object_type is EmailObject.CONSOLE
    writer = FluxMail.from_env({"FLUXMAIL_TYPE": "file", "FLUXMAIL_HOST": str(tmp_path)})
    assert writer.object_type is EmailObject.FILE


def test_dry_run_and_display_on_console(capsys: pytest.CaptureFixture[str]) -> None:
    console = FluxMail(object_type="console", sender="a@example.com")
    console.create(**msg())
    text = console.send(dry_run=True)
    assert "Subject: Hello" in text
    console.display()
    assert console.message is not None
    assert "Return-Path" not in capsys.readouterr().out  # previews, not deliveries


def test_testing_module_exports() -> None:
    assert fluxmail.testing.__all__ == ["CapturedMessage", "Outbox", "capture"]
    assert os.path.basename(fluxmail.testing.__file__) == "testing.py"


def test_local_fleet_is_captured(mailer: FluxMail, starttls_server: SMTPTestServer) -> None:
    from fluxmail.scale import LocalFleet

    fleet = LocalFleet(lambda: mailer)
    spec = msg(sender="app@example.com", bcc=["audit@example.org"])
    try:
        with capture() as outbox:
            ids = fleet.enqueue_batch([{**spec, "subject": f"fleet {i}"} for i in range(2)])
            outbox.fail_next(RecipientsRefusedError("refused", smtp_code=550))
            refused = fleet.enqueue({**spec, "subject": "refused"})
        results = fleet.results([*ids, refused])  # type: ignore[list-item]
    finally:
        fleet.close()
    assert outbox.subjects == ["fleet 0", "fleet 1"]
    assert outbox.message_ids == ids
    assert [r["status"] for r in results.values() if r] == ["accepted", "accepted", "refused"]
    assert starttls_server.connections == 0
