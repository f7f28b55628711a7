"""Rule 8 of docs/security.md: templates run in Jinja2's sandbox and escape HTML when
asked to. (The sandbox escapes and header injection through rendered text are in
tests/test_templates.py.) Here: what reaches a real server, and no file access."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxmail import EmailTemplate, FluxMail, TemplateError
from hardening import MODES, run_batch
from servers import SMTPTestServer

HOSTILE = '<script>alert("x")</script><img src=x onerror=steal()>'


@pytest.mark.parametrize("mode", MODES)
def test_html_template_escapes_what_users_typed(smtp_server: SMTPTestServer, mode: str) -> None:
    template = EmailTemplate("<p>Hello {{ name }}, {{ note }}</p>", autoescape=True)
    messages = [
        {
            "subject": "Welcome",
            "recipients": ["user@example.com"],
            "sender": "app@example.com",
            "html_body": True,
            "auto_text": False,
            "body": template.render(name=HOSTILE, note="see <b>you</b>"),
        }
    ]
    assert run_batch(FluxMail(**smtp_server.fluxmail_kwargs()), messages, mode)["sent"] == 1
    html = smtp_server.messages[0].message.get_content()
    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;" in html
    assert html.startswith("<p>Hello ")


def test_html_template_from_file_escapes(tmp_path: Path) -> None:
    path = tmp_path / "welcome.html"
    path.write_text("<h1>Welcome, {{ first_name }}!</h1>", encoding="utf-8")
    rendered = EmailTemplate.from_file(path, autoescape=True).render(first_name=HOSTILE)
    assert "<script>" not in rendered
    assert "|safe" not in rendered
    # plain-text templates (the default) keep text as typed; it is never HTML
    assert EmailTemplate("Hi {{ n }}").render(n="<b>") == "Hi <b>"


@pytest.mark.parametrize(
    "source",
    [
        '{% include "/etc/passwd" %}',
        '{% import "/etc/passwd" as p %}',
        '{% extends "/etc/passwd" %}',
        '{% from "/etc/hosts" import x %}',
    ],
)
def test_templates_cannot_read_files(source: str) -> None:
    with pytest.raises(TemplateError):
        EmailTemplate(source).render()
