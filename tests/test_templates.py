"""EmailTemplate: rendering, files, escaping, strictness, the sandbox, and header safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxmail import (
    EmailTemplate,
    FluxMail,
    FluxMailException,
    HeaderInjectionError,
    TemplateError,
)
from servers import SMTPTestServer


def test_render() -> None:
    tmpl = EmailTemplate("Hello {{ name }},\n\nYour order #{{ order_id }} has shipped.")
    assert tmpl.render(name="Alice", order_id=12345) == (
        "Hello Alice,\n\nYour order #12345 has shipped."
    )


def test_render_keeps_trailing_newline_and_loops() -> None:
    tmpl = EmailTemplate("{% for item in items %}- {{ item }}\n{% endfor %}")
    assert tmpl.render(items=["a", "b"]) == "- a\n- b\n"


def test_autoescape_is_off_by_default() -> None:
    tmpl = EmailTemplate("Hi {{ name }}")
    assert tmpl.render(name="<b>Bob</b> & co") == "Hi <b>Bob</b> & co"


def test_autoescape_on() -> None:
    tmpl = EmailTemplate("<p>Hi {{ name }}</p>", autoescape=True)
    assert tmpl.render(name='<script>alert(1)</script> & "q"') == (
        "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;q&#34;</p>"
    )


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "welcome.html"
    path.write_text(
        "<h1>Welcome, {{ first_name }}!</h1>\n<p>Thanks for joining {{ company }}.</p>\n",
        encoding="utf-8",
    )
    tmpl = EmailTemplate.from_file(path, autoescape=True)
    assert tmpl.render(first_name="Bob", company="Acme & Co") == (
        "<h1>Welcome, Bob!</h1>\n<p>Thanks for joining Acme &amp; Co.</p>\n"
    )
    raw = EmailTemplate.from_file(str(path))
    assert raw.render(first_name="<i>", company="A & B").startswith("<h1>Welcome, <i>!</h1>")


def test_from_file_reads_utf8(tmp_path: Path) -> None:
    path = tmp_path / "greeting.txt"
    path.write_text("Grüße, {{ name }} ✉", encoding="utf-8")
    assert EmailTemplate.from_file(path).render(name="Zoë") == "Grüße, Zoë ✉"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "templates" / "nope.html"
    with pytest.raises(TemplateError) as info:
        EmailTemplate.from_file(missing)
    assert str(missing) in str(info.value)
    assert info.value.code == "template_not_found"
    assert isinstance(info.value, FluxMailException)


def test_undefined_variable_is_an_error_with_its_line() -> None:
    tmpl = EmailTemplate("Hello {{ name }},\n\nYour balance is {{ balance }}.\n")
    with pytest.raises(TemplateError) as info:
        tmpl.render(name="Alice")
    text = str(info.value)
    assert "balance" in text
    assert "line 3" in text


def test_undefined_attribute_is_an_error() -> None:
    with pytest.raises(TemplateError) as info:
        EmailTemplate("{{ user.name }}").render(user={})
    assert "line 1" in str(info.value)


def test_undefined_variable_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("one\ntwo {{ missing }}\n", encoding="utf-8")
    with pytest.raises(TemplateError) as info:
        EmailTemplate.from_file(path).render()
    assert str(path) in str(info.value)
    assert "line 2" in str(info.value)


def test_syntax_error_is_a_template_error_with_its_line() -> None:
    with pytest.raises(TemplateError) as info:
        EmailTemplate("fine\n{% if x %}\nno endif\n")
    assert "line" in str(info.value)
    assert info.value.code == "template_error"
    with pytest.raises(TemplateError) as info:
        EmailTemplate("one\n{{ name }\n")
    assert "line 2" in str(info.value)


def test_syntax_error_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.html"
    path.write_text("<p>{% for x in %}</p>\n", encoding="utf-8")
    with pytest.raises(TemplateError) as info:
        EmailTemplate.from_file(path)
    assert str(path) in str(info.value)


def test_non_string_source_is_refused() -> None:
    with pytest.raises(TemplateError):
        EmailTemplate(b"Hi {{ name }}")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ self.__init__.__globals__ }}",
        "{{ (1).__class__.__base__.__subclasses__() }}",
        "{{ x.__class__ }}",
        "{{ func.__globals__ }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "{{ ''.format.__self__ }}",
        "{{ 'a'.__len__() }}",
    ],
)
def test_sandbox_blocks_escapes(source: str) -> None:
    def func() -> None:
        return None

    try:
        output = EmailTemplate(source).render(x=object(), func=func)
    except TemplateError:
        return
    # Whatever was not refused must not have reached Python internals.
    for leak in ("<class", "subclasses", "__globals__", "<module", "function", "builtins"):
        assert leak not in output, output
    pytest.fail(f"the sandbox rendered {source!r} as {output!r} instead of refusing it")


def test_rendered_subject_cannot_inject_headers(smtp_server: SMTPTestServer) -> None:
    subject = EmailTemplate("Order {{ number }} shipped").render(
        number="42\r\nBcc: victim@example.com"
    )
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="shop@example.com"))
    with pytest.raises(HeaderInjectionError) as info:
        mailer.create(subject=subject, recipients=["alice@example.com"], body="Thanks")
    assert info.value.code == "header_injection"
    assert smtp_server.connections == 0


def test_rendered_subject_with_lone_newline_is_refused(smtp_server: SMTPTestServer) -> None:
    subject = EmailTemplate("Hi {{ name }}").render(name="Bob\nX-Injected: yes")
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="shop@example.com"))
    with pytest.raises(HeaderInjectionError):
        mailer.create(subject=subject, recipients=["alice@example.com"], body="x")


def test_rendered_body_may_hold_newlines_and_is_sent(smtp_server: SMTPTestServer) -> None:
    body = EmailTemplate("Hi {{ name }},\r\nline two\nBcc: not-a-header@example.com\n").render(
        name="Bob"
    )
    mailer = FluxMail(**smtp_server.fluxmail_kwargs(sender="shop@example.com"))
    mailer.create(subject="Templated", recipients=["alice@example.com"], body=body).send()
    received = smtp_server.messages[0]
    assert received.rcpt_tos == ["alice@example.com"]
    msg = received.message
    assert "Bcc" not in msg
    content = msg.get_content().replace("\r\n", "\n")
    assert content == "Hi Bob,\nline two\nBcc: not-a-header@example.com\n"


def test_repr() -> None:
    assert (
        repr(EmailTemplate("x", autoescape=True)) == "EmailTemplate('<string>', autoescape=True)"
    )
