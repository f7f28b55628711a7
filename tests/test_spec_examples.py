"""Every example of spec/python-api.md, run as written against a real local SMTP server.

"As written" means the example's code is kept; only the relay is pointed at the test
server (``host="localhost"``, its port), the test server is given the example's
credentials, and the test CA is made trusted for examples that pass no ``ssl_context``
(``SSL_CERT_FILE``, which ``ssl.create_default_context()`` honours). Then each test checks
what the server received: envelope, headers (never a Bcc), bodies.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from fluxmail import (
    BulkSender,
    EmailInstance,
    EmailTemplate,
    FluxMail,
    FluxMailException,
)
from servers import SMTPTestServer

SUCCESS = "Email sent successfully via SMTP."
MakeServer = Callable[..., SMTPTestServer]


# --- helpers ---------------------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def only_message(server: SMTPTestServer, rcpt_tos: list[str] | None = None) -> EmailMessage:
    """The one message the server received; never a Bcc header; the envelope if given."""
    assert len(server.messages) == 1, server.messages
    assert_no_bcc(server)
    if rcpt_tos is not None:
        assert server.messages[0].rcpt_tos == rcpt_tos
    return server.messages[0].message


def text_of(msg: EmailMessage, kind: str = "plain") -> str:
    part = msg.get_body(preferencelist=(kind,))
    assert part is not None, f"no text/{kind} part in {msg.get_content_type()}"
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def assert_no_bcc(server: SMTPTestServer) -> None:
    for received in server.messages:
        assert "bcc" not in {key.lower() for key in received.message}
        assert b"\nbcc:" not in received.data.lower()


def tiny_pdf(path: Path) -> Path:
    path.write_bytes(
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
        b"trailer << /Root 1 0 R >>\n%%EOF\n"
    )
    return path


def tiny_png(path: Path) -> Path:
    from fluxmail.cli._demo import demo_png

    path.write_bytes(demo_png(8))
    return path


@pytest.fixture
def gmail(make_server: MakeServer, monkeypatch: pytest.MonkeyPatch) -> SMTPTestServer:
    """A STARTTLS + AUTH server that takes the examples' me@gmail.com / secret, with its
    CA trusted through SSL_CERT_FILE (the examples pass no ssl_context)."""
    server = make_server(tls="starttls", auth=True, username="me@gmail.com", password="secret")
    assert server.ca_pem is not None
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_pem)
    return server


@pytest.fixture
def email(gmail: SMTPTestServer) -> FluxMail:
    """The ``email`` object the later examples reuse (as in Basic Send)."""
    return FluxMail(
        object_type="smtp",
        host="localhost",
        port=gmail.port,
        use_tls=True,
        username="me@gmail.com",
        password="secret",
    )


@pytest.fixture
def fluxmail_env(gmail: SMTPTestServer, monkeypatch: pytest.MonkeyPatch) -> SMTPTestServer:
    """The FLUXMAIL_* variables the examples read with os.environ[...]."""
    monkeypatch.setenv("FLUXMAIL_USERNAME", "me@gmail.com")
    monkeypatch.setenv("FLUXMAIL_PASSWORD", "secret")
    return gmail


# --- Basic Send, Explicit Sender, EmailInstance, Method Chaining --------------------------


def test_basic_send(gmail: SMTPTestServer) -> None:
    email = FluxMail(
        object_type="smtp",
        host="localhost",
        port=gmail.port,
        use_tls=True,
        username="me@gmail.com",
        password="secret",  # (1)!
    )
    result = email.create(
        subject="Hello",
        recipients=["friend@example.com"],
        body="Hi there!",
    ).send()

    assert result == SUCCESS
    received = gmail.messages[0]
    assert received.mail_from == "me@gmail.com"
    assert received.rcpt_tos == ["friend@example.com"]
    assert received.tls is True
    assert received.auth_user == "me@gmail.com"
    msg = only_message(gmail)
    assert msg["From"] == "me@gmail.com"
    assert msg["To"] == "friend@example.com"
    assert msg["Subject"] == "Hello"
    assert msg["Message-ID"]
    assert msg["Date"]
    assert text_of(msg).strip() == "Hi there!"


def test_explicit_sender(make_server: MakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server(tls="starttls", auth=True, username="apikey", password="SG.xxxx")
    assert server.ca_pem is not None
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_pem)

    email = FluxMail(
        object_type="smtp",
        host="localhost",
        port=server.port,
        use_tls=True,
        username="apikey",
        password="SG.xxxx",
    )
    email.create(
        subject="Hello",
        recipients=["user@example.com"],
        body="Hi!",
        sender="noreply@myapp.com",
    ).send()

    received = server.messages[0]
    assert received.auth_user == "apikey"
    assert received.mail_from == "noreply@myapp.com"
    assert received.rcpt_tos == ["user@example.com"]
    msg = only_message(server)
    assert msg["From"] == "noreply@myapp.com"
    assert text_of(msg).strip() == "Hi!"


def test_email_instance_for_named_hosts(smtp_server: SMTPTestServer) -> None:
    relay = EmailInstance(relay="127.0.0.1", domain="mycompany.com")
    email = FluxMail(
        object_type="smtp", host=relay, port=smtp_server.port, username="me@mycompany.com"
    )
    email.create(subject="Hi", recipients=["user@mycompany.com"], body="Hello").send()

    received = smtp_server.messages[0]
    assert received.mail_from == "me@mycompany.com"
    assert received.rcpt_tos == ["user@mycompany.com"]
    assert received.auth_user is None  # no password: no AUTH
    msg = only_message(smtp_server)
    assert msg["From"] == "me@mycompany.com"
    assert msg["Message-ID"].strip().endswith("@mycompany.com>")
    # The domain is also the default EHLO name.
    assert smtp_server.commands("EHLO") == ["EHLO mycompany.com"]


def test_method_chaining(gmail: SMTPTestServer) -> None:
    result = (
        FluxMail(
            object_type="smtp",
            host="localhost",
            port=gmail.port,
            use_tls=True,
            username="me@gmail.com",
            password="secret",
        )
        .create(
            subject="Quick Note",
            recipients=["friend@example.com"],
            body="Hi",
        )
        .send()
    )

    assert result == SUCCESS
    msg = only_message(gmail)
    assert msg["Subject"] == "Quick Note"
    assert gmail.messages[0].rcpt_tos == ["friend@example.com"]


# --- Full Options and the create() options --------------------------------------------------


def test_full_options(gmail: SMTPTestServer, tmp_path: Path) -> None:
    report = tiny_pdf(tmp_path / "report.pdf")

    email = FluxMail(
        object_type="smtp",
        host="localhost",
        port=gmail.port,
        use_tls=True,
        username="me@gmail.com",
        password="secret",
    )
    email.create(
        subject="Monthly Report",
        recipients=["alice@example.com", "bob@example.com"],
        body="<h1>Report</h1><p>See attached.</p>",
        sender="reports@myapp.com",
        cc=["manager@example.com"],
        bcc=["archive@example.com"],
        attachments=[str(report)],
        html_body=True,
    )
    email.send()

    received = gmail.messages[0]
    assert received.mail_from == "reports@myapp.com"
    assert sorted(received.rcpt_tos) == sorted(
        ["alice@example.com", "bob@example.com", "manager@example.com", "archive@example.com"]
    )
    msg = only_message(gmail)
    assert msg["From"] == "reports@myapp.com"
    assert msg["To"] == "alice@example.com, bob@example.com"
    assert msg["Cc"] == "manager@example.com"
    assert_no_bcc(gmail)
    assert b"archive@example.com" not in received.data
    assert "<h1>Report</h1><p>See attached.</p>" in text_of(msg, "html")
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["report.pdf"]
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_content() == report.read_bytes()


def test_multipart_alternative(email: FluxMail, gmail: SMTPTestServer) -> None:
    email.create(
        subject="Report",
        recipients=["user@example.com"],
        body="<h1>Report</h1>",
        html_body=True,
        plain_body="Report — see the HTML version for formatting.",
    )
    email.send()

    msg = only_message(gmail, ["user@example.com"])
    assert msg.get_content_type() == "multipart/alternative"
    kinds = [part.get_content_type() for part in msg.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    assert text_of(msg, "plain").strip() == "Report — see the HTML version for formatting."
    assert text_of(msg, "html").strip() == "<h1>Report</h1>"


def test_threading_headers(email: FluxMail, gmail: SMTPTestServer) -> None:
    email.create(
        subject="Re: Question",
        recipients=["user@example.com"],
        body="Following up.",
        in_reply_to="<original-message-id@example.com>",
        references=["<original-message-id@example.com>"],
    )
    email.send()

    msg = only_message(gmail, ["user@example.com"])
    assert msg["In-Reply-To"] == "<original-message-id@example.com>"
    assert msg["References"] == "<original-message-id@example.com>"
    assert msg["Subject"] == "Re: Question"


@pytest.mark.parametrize(
    ("priority", "x_priority", "importance"),
    [("high", "1", "high"), ("normal", "3", "normal"), ("low", "5", "low")],
)
def test_priority(
    email: FluxMail, gmail: SMTPTestServer, priority: str, x_priority: str, importance: str
) -> None:
    email.create(
        subject="URGENT",
        recipients=["user@example.com"],
        body="Please respond ASAP.",
        priority=priority,  # "high", "normal", or "low"
    )
    email.send()

    msg = only_message(gmail, ["user@example.com"])
    assert msg["X-Priority"].split()[0] == x_priority
    assert msg["Importance"].lower() == importance


def test_list_unsubscribe(email: FluxMail, gmail: SMTPTestServer) -> None:
    email.create(
        subject="Monthly Newsletter",
        recipients=["subscriber@example.com"],
        body="...",
        unsubscribe_url="https://myapp.com/unsubscribe?token=abc123",
    )
    email.send()

    raw = gmail.messages[0].data
    assert b"\r\nList-Unsubscribe: <https://myapp.com/unsubscribe?token=abc123>\r\n" in raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    msg = only_message(gmail, ["subscriber@example.com"])
    assert msg["List-Unsubscribe"] == "<https://myapp.com/unsubscribe?token=abc123>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_inline_images(email: FluxMail, gmail: SMTPTestServer, tmp_path: Path) -> None:
    logo = tiny_png(tmp_path / "acme-logo.png")
    email.create(
        subject="Welcome to Acme",
        recipients=["user@example.com"],
        body="""
<h1><img src="cid:logo" alt="Acme"> Welcome!</h1>
<p>Thanks for joining us.</p>
""",
        html_body=True,
        inline_images={
            "logo": str(logo),
        },
    )
    email.send()

    msg = only_message(gmail, ["user@example.com"])
    related = [p for p in msg.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1
    parts = list(related[0].iter_parts())
    assert parts[0].get_content_type() == "text/html"
    assert 'src="cid:logo"' in parts[0].get_content()
    image = parts[1]
    assert image.get_content_type() == "image/png"
    assert image["Content-ID"] == "<logo>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == logo.read_bytes()
    dispositions = [p.get_content_disposition() for p in msg.walk()]
    assert "attachment" not in dispositions  # not a regular attachment


def test_css_inlining(email: FluxMail, gmail: SMTPTestServer) -> None:
    email.create(
        subject="Styled newsletter",
        recipients=["user@example.com"],
        body="""
<style>h1 { color: #2563eb; } p { font-size: 14px; }</style>
<h1>Hello</h1>
<p>This email renders correctly everywhere.</p>
""",
        html_body=True,
        inline_css=True,
    )
    email.send()

    html = text_of(only_message(gmail, ["user@example.com"]), "html")
    assert "<style" not in html
    assert "color: #2563eb" in html
    assert "font-size: 14px" in html
    assert 'style="' in html
    assert "This email renders correctly everywhere." in html


def test_css_inlining_ignored_for_plain_text(email: FluxMail, gmail: SMTPTestServer) -> None:
    body = "<style>h1 { color: red; }</style>\n<h1>Hello</h1>\n"
    email.create(
        subject="Plain", recipients=["user@example.com"], body=body, inline_css=True
    ).send()

    msg = only_message(gmail)
    assert msg.get_content_type() == "text/plain"
    assert text_of(msg) == body


# --- connection reuse, from_env, implicit TLS, timeout/retry ------------------------------


def test_connection_reuse(gmail: SMTPTestServer) -> None:
    recipients = ["a@example.com", "b@example.com", "c@example.com"]
    with FluxMail(
        object_type="smtp",
        host="localhost",
        port=gmail.port,
        use_tls=True,
        username="me@gmail.com",
        password="secret",
    ) as mailer:
        for recipient in recipients:
            mailer.create(subject="Hi", recipients=[recipient], body="Hello").send()

    assert [m.rcpt_tos for m in gmail.messages] == [[r] for r in recipients]
    # One TCP session: one AUTH, one EHLO before and one after STARTTLS. (Not
    # ``gmail.connections``: aiosmtpd calls connection_made again after STARTTLS.)
    assert len({m.session_id for m in gmail.messages}) == 1
    assert len(gmail.commands("AUTH")) == 1
    assert len(gmail.commands("EHLO")) == 2


def test_from_env(gmail: SMTPTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXMAIL_HOST", "localhost")
    monkeypatch.setenv("FLUXMAIL_PORT", str(gmail.port))
    monkeypatch.setenv("FLUXMAIL_TLS", "true")
    monkeypatch.setenv("FLUXMAIL_USERNAME", "me@gmail.com")
    monkeypatch.setenv("FLUXMAIL_PASSWORD", "secret")

    mailer = FluxMail.from_env()
    mailer.create(subject="Hello", recipients=["user@example.com"], body="Hi!").send()

    received = gmail.messages[0]
    assert received.tls
    assert received.auth_user == "me@gmail.com"
    assert received.mail_from == "me@gmail.com"
    assert received.rcpt_tos == ["user@example.com"]
    assert only_message(gmail)["Subject"] == "Hello"


def test_implicit_tls(make_server: MakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server(tls="ssl", auth=True, username="me@example.com", password="secret")
    assert server.ca_pem is not None
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_pem)

    mailer = FluxMail(
        object_type="smtp",
        host="localhost",
        port=server.port,
        use_ssl=True,  # implicit TLS — cannot be combined with use_tls=True
        username="me@example.com",
        password="secret",
    )
    mailer.create(subject="Over TLS", recipients=["user@example.com"], body="Hi").send()

    received = server.messages[0]
    assert received.tls is True
    assert received.auth_user == "me@example.com"
    assert received.mail_from == "me@example.com"
    assert server.commands("STARTTLS") == []


def test_timeout_and_retry_options(fluxmail_env: SMTPTestServer) -> None:
    mailer = FluxMail(
        object_type="smtp",
        host="localhost",
        port=fluxmail_env.port,
        use_tls=True,
        timeout=15,  # fail after 15 s if server is unresponsive
        max_retries=3,  # retry up to 3 times after the first attempt
        retry_delay=2.0,  # wait 2 seconds between retries
        username=os.environ["FLUXMAIL_USERNAME"],
        password=os.environ["FLUXMAIL_PASSWORD"],
    )
    assert mailer.max_retries == 3
    assert mailer.retry_delay == 2.0
    assert mailer.config.timeout == 15
    mailer.create(subject="Retry", recipients=["user@example.com"], body="Hi").send()
    assert len(fluxmail_env.messages) == 1


# --- test_connection, send_async ----------------------------------------------------------


def test_connection_health_check(
    email: FluxMail, gmail: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    mailer = email
    try:
        result = mailer.test_connection()
        print(result)
        # {"ok": True, "relay": "smtp.gmail.com", "port": 587, "latency_ms": 43}
    except FluxMailException as e:
        print(f"SMTP unreachable: {e}")  # e.code == "connection_failed"
        raise

    assert result["ok"] is True
    assert result["relay"] == "localhost"
    assert isinstance(result["port"], int)
    assert result["port"] == gmail.port
    latency = result["latency_ms"]
    assert isinstance(latency, (int, float))
    assert not isinstance(latency, bool)
    assert latency >= 0
    assert result["authenticated"] is True
    assert str(result["tls"]).startswith("TLSv1.")
    assert "'ok': True" in capsys.readouterr().out
    # Nothing was sent, and the password is not in the diagnostics.
    assert gmail.messages == []
    assert gmail.commands("MAIL") == []
    assert "secret" not in repr(result)


def test_connection_health_check_failure(capsys: pytest.CaptureFixture[str]) -> None:
    mailer = FluxMail(
        object_type="smtp",
        host="127.0.0.1",
        port=closed_port(),
        username="me@gmail.com",
        password="secret",
        timeout=5,
    )
    caught: FluxMailException | None = None
    try:
        result = mailer.test_connection()
        print(result)
    except FluxMailException as e:
        print(f"SMTP unreachable: {e}")  # e.code == "connection_failed"
        caught = e

    assert caught is not None
    assert caught.code == "connection_failed"
    assert isinstance(caught, ConnectionError)
    out = capsys.readouterr().out
    assert out.startswith("SMTP unreachable: ")
    assert "secret" not in out


def test_send_async(fluxmail_env: SMTPTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        email = FluxMail(
            object_type="smtp",
            host="localhost",
            port=fluxmail_env.port,
            use_tls=True,
            username=os.environ["FLUXMAIL_USERNAME"],
            password=os.environ["FLUXMAIL_PASSWORD"],
        )
        email.create(
            subject="Async notification",
            recipients=["user@example.com"],
            body="Sent with send_async().",
        )
        result = await email.send_async()
        print(result)  # "Email sent successfully via SMTP."

    asyncio.run(main())

    assert capsys.readouterr().out == SUCCESS + "\n"
    msg = only_message(fluxmail_env)
    assert msg["Subject"] == "Async notification"
    assert text_of(msg).strip() == "Sent with send_async()."
    assert fluxmail_env.messages[0].tls


def test_send_async_dry_run(fluxmail_env: SMTPTestServer) -> None:
    async def main() -> str:
        email = FluxMail(
            object_type="smtp",
            host="localhost",
            port=fluxmail_env.port,
            use_tls=True,
            username=os.environ["FLUXMAIL_USERNAME"],
            password=os.environ["FLUXMAIL_PASSWORD"],
        )
        email.create(subject="Preview only", recipients=["user@example.com"], body="x")
        return await email.send_async(dry_run=True)

    preview = asyncio.run(main())
    assert "Preview only" in preview
    assert "secret" not in preview
    assert fluxmail_env.connections == 0


# --- EmailTemplate ---------------------------------------------------------------------------


def test_email_template_string(fluxmail_env: SMTPTestServer) -> None:
    tmpl = EmailTemplate("Hello {{ name }},\n\nYour order #{{ order_id }} has shipped.")
    body = tmpl.render(name="Alice", order_id=12345)

    FluxMail(
        object_type="smtp",
        host="localhost",
        port=fluxmail_env.port,
        use_tls=True,
        username=os.environ["FLUXMAIL_USERNAME"],
        password=os.environ["FLUXMAIL_PASSWORD"],
    ).create(
        subject="Your order has shipped",
        recipients=["alice@example.com"],
        body=body,
    ).send()

    assert body == "Hello Alice,\n\nYour order #12345 has shipped."
    msg = only_message(fluxmail_env)
    assert text_of(msg).rstrip("\n") == body
    assert fluxmail_env.messages[0].rcpt_tos == ["alice@example.com"]


def test_email_template_from_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, email: FluxMail, gmail: SMTPTestServer
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "welcome.html").write_text(
        "<h1>Welcome, {{ first_name }}!</h1>\n<p>Thanks for joining {{ company }}.</p>\n",
        encoding="utf-8",
    )

    tmpl = EmailTemplate.from_file("templates/welcome.html", autoescape=True)
    body = tmpl.render(first_name="Bob", company="Acme Corp")

    assert body == "<h1>Welcome, Bob!</h1>\n<p>Thanks for joining Acme Corp.</p>\n"
    escaped = tmpl.render(first_name="<script>", company="A & B")
    assert "&lt;script&gt;" in escaped
    assert "A &amp; B" in escaped
    email.create(subject="Welcome", recipients=["bob@example.com"], body=body, html_body=True)
    email.send()
    assert "<h1>Welcome, Bob!</h1>" in text_of(only_message(gmail), "html")


def test_inline_template_for_html_email(email: FluxMail, gmail: SMTPTestServer) -> None:
    month = "May 2026"
    html_tmpl = EmailTemplate(
        """
<h2>Monthly Report — {{ month }}</h2>
<p>Total sent: <strong>{{ count }}</strong></p>
""",
        autoescape=True,
    )
    email.create(
        subject=f"Report for {month}",
        recipients=["manager@example.com"],
        body=html_tmpl.render(month="May 2026", count=4821),
        html_body=True,
    )
    email.send()

    msg = only_message(gmail)
    assert msg["Subject"] == "Report for May 2026"
    html = text_of(msg, "html")
    assert "<h2>Monthly Report — May 2026</h2>" in html
    assert "<strong>4821</strong>" in html


# --- BulkSender --------------------------------------------------------------------------------


def test_bulk_send_batch(fluxmail_env: SMTPTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    mailer = FluxMail(
        object_type="smtp",
        host="localhost",
        port=fluxmail_env.port,
        use_tls=True,
        username=os.environ["FLUXMAIL_USERNAME"],
        password=os.environ["FLUXMAIL_PASSWORD"],
    )

    messages = [
        {"subject": f"Hi {name}", "recipients": [email], "body": f"Hello {name}!"}
        for name, email in [("Alice", "alice@example.com"), ("Bob", "bob@example.com")]
    ]
    result = BulkSender(mailer).send_batch(messages)
    print(result)
    # {"sent": 2, "failed": 0, "total": 2, "errors": []}

    assert result == {"sent": 2, "failed": 0, "total": 2, "errors": []}
    assert "{'sent': 2, 'failed': 0, 'total': 2, 'errors': []}" in capsys.readouterr().out
    got = {m.rcpt_tos[0]: m.message["Subject"] for m in fluxmail_env.messages}
    assert got == {"alice@example.com": "Hi Alice", "bob@example.com": "Hi Bob"}
    assert len(fluxmail_env.commands("AUTH")) == 1  # one connection for the batch
    assert len({m.session_id for m in fluxmail_env.messages}) == 1


def test_bulk_callbacks_and_errors(
    fluxmail_env: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    mailer = FluxMail(
        object_type="smtp",
        host="localhost",
        port=fluxmail_env.port,
        use_tls=True,
        username=os.environ["FLUXMAIL_USERNAME"],
        password=os.environ["FLUXMAIL_PASSWORD"],
    )
    messages = [
        {"subject": "Hi Alice", "recipients": ["alice@example.com"], "body": "Hello Alice!"},
        {"subject": "Hi Bad", "recipients": ["not an address"], "body": "never sent"},
        {"subject": "Hi Bob", "recipients": ["bob@example.com"], "body": "Hello Bob!"},
    ]

    def on_success(index: int, result: str) -> None:
        print(f"[{index}] sent: {result}")

    def on_error(index: int, exc: FluxMailException) -> None:
        print(f"[{index}] FAILED ({exc.code}): {exc}")

    result = BulkSender(mailer).send_batch(
        messages,
        on_success=on_success,
        on_error=on_error,
        progress=False,
    )
    # Inspect failures after the batch
    for idx, exc in result["errors"]:
        print(f"Message {idx} failed: {exc}")

    out = capsys.readouterr().out
    assert f"[0] sent: {SUCCESS}" in out
    assert f"[2] sent: {SUCCESS}" in out
    assert "[1] FAILED (invalid_address): " in out
    assert "Message 1 failed: " in out
    assert result["sent"] == 2
    assert result["failed"] == 1
    assert result["total"] == 3
    assert [idx for idx, _ in result["errors"]] == [1]
    assert sorted(m.rcpt_tos[0] for m in fluxmail_env.messages) == [
        "alice@example.com",
        "bob@example.com",
    ]


def test_bulk_with_templates(fluxmail_env: SMTPTestServer) -> None:
    mailer = FluxMail(
        object_type="smtp",
        host="localhost",
        port=fluxmail_env.port,
        use_tls=True,
        username=os.environ["FLUXMAIL_USERNAME"],
        password=os.environ["FLUXMAIL_PASSWORD"],
    )

    tmpl = EmailTemplate("Hi {{ name }}, your balance is {{ balance }}.")
    subscribers = [
        {"name": "Alice", "email": "alice@example.com", "balance": "$120.00"},
        {"name": "Bob", "email": "bob@example.com", "balance": "$45.00"},
    ]
    messages = [
        {
            "subject": "Your account balance",
            "recipients": [sub["email"]],
            "body": tmpl.render(name=sub["name"], balance=sub["balance"]),
        }
        for sub in subscribers
    ]
    result = BulkSender(mailer).send_batch(messages)

    assert result["sent"] == 2
    assert result["failed"] == 0
    bodies = {m.rcpt_tos[0]: text_of(m.message).strip() for m in fluxmail_env.messages}
    assert bodies == {
        "alice@example.com": "Hi Alice, your balance is $120.00.",
        "bob@example.com": "Hi Bob, your balance is $45.00.",
    }


def test_bulk_async_with_rate_limit(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server(tls="starttls", auth=True, username="apikey", password="SG.key")
    assert server.ca_pem is not None
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_pem)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.key")
    subscribers = [("Alice", "alice@example.com"), ("Bob", "bob@example.com")]

    mailer = FluxMail(
        object_type="smtp",
        host="localhost",
        port=server.port,
        use_tls=True,
        username="apikey",
        password=os.environ["SENDGRID_API_KEY"],
        sender="noreply@myapp.com",
    )
    messages = [
        {"subject": f"Hi {name}", "recipients": [email], "body": f"Hello {name}!"}
        for name, email in subscribers
    ]

    async def send() -> None:
        result = await BulkSender(mailer).send_batch_async(
            messages,
            max_per_second=14,  # SES limit; 0 = no throttle (default)
            progress=False,
        )
        print(f"{result['sent']} sent, {result['failed']} failed")

    asyncio.run(send())

    assert capsys.readouterr().out == "2 sent, 0 failed\n"
    assert {m.mail_from for m in server.messages} == {"noreply@myapp.com"}
    got = {m.rcpt_tos[0]: m.message["Subject"] for m in server.messages}
    assert got == {"alice@example.com": "Hi Alice", "bob@example.com": "Hi Bob"}
    assert len(server.commands("AUTH")) == 1  # one persistent connection
    assert all(m.auth_user == "apikey" for m in server.messages)


# --- Error Handling ------------------------------------------------------------------------


def test_error_handling_success(gmail: SMTPTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        FluxMail(
            object_type="smtp",
            host="localhost",
            port=gmail.port,
            use_tls=True,
            username="me@gmail.com",
            password="secret",
        ).create(
            subject="Test",
            recipients=["user@example.com"],
            body="Hello",
        ).send()
    except FluxMailException as e:
        print(f"Email failed: {e}")

    assert capsys.readouterr().out == ""
    assert only_message(gmail)["Subject"] == "Test"


def test_error_handling_failure(gmail: SMTPTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        FluxMail(
            object_type="smtp",
            host="localhost",
            port=gmail.port,
            use_tls=True,
            username="me@gmail.com",
            password="wrong-secret",
        ).create(
            subject="Test",
            recipients=["user@example.com"],
            body="Hello",
        ).send()
    except FluxMailException as e:
        print(f"Email failed: {e}")

    out = capsys.readouterr().out
    assert out.startswith("Email failed: ")
    assert "wrong-secret" not in out
    assert gmail.messages == []


def test_error_handling_covers_create(capsys: pytest.CaptureFixture[str]) -> None:
    """The tip: one try/except covers create() (validation) and send()."""
    try:
        FluxMail(
            object_type="smtp",
            host="127.0.0.1",
            port=closed_port(),
            username="me@gmail.com",
            password="secret",
        ).create(
            subject="Test",
            recipients=["not-an-address"],
            body="Hello",
        ).send()
    except FluxMailException as e:
        print(f"Email failed: {e}")

    assert capsys.readouterr().out.startswith("Email failed: ")
