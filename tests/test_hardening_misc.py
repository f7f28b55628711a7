"""Rules 20 and onwards of docs/security.md: the EHLO name in ASCII, template failures as
TemplateError, terminal escapes from servers, and linear-time automatic text parts."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from django_helpers import django_backend, django_message
from fluxmail import EmailInstance, EmailTemplate, FluxMail, TemplateError
from fluxmail.errors import ConfigurationError
from hardening import MODES, run_batch, send
from helpers import run as run_cli
from servers import FaultServer, Reply

MakeFault = Callable[..., FaultServer]
IDN = "Bücher.example"
PUNYCODE = "xn--bcher-kva.example"


def message(**extra: Any) -> dict[str, Any]:
    return {
        "subject": "s",
        "recipients": ["to@example.com"],
        "body": "b",
        "sender": "me@x.org",
        **extra,
    }


def ehlo_names(server: FaultServer) -> list[str]:
    return [c.split(" ", 1)[1] for c in server.commands if c.upper().startswith(("EHLO", "HELO"))]


# --- the EHLO name --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["local_hostname", "EmailInstance"])
def test_ehlo_name_is_punycode(make_fault_server: MakeFault, mode: str, how: str) -> None:
    server = make_fault_server()
    kwargs = server.fluxmail_kwargs()
    if how == "local_hostname":
        kwargs["local_hostname"] = IDN
    else:
        kwargs["host"] = EmailInstance(server.host, IDN)
    mailer = FluxMail(**kwargs)
    send(mailer, mode, **message())
    run_batch(mailer, [message(), message()], mode)
    mailer.test_connection()
    names = ehlo_names(server)
    assert len(names) == 3
    assert set(names) == {PUNYCODE}
    assert all(c.isascii() for c in server.commands)


def test_ehlo_name_is_punycode_in_the_cli_and_django(make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    args = ["--type", "smtp", "--host", f"127.0.0.1:{IDN}", "--port", str(server.port)]
    args += ["--sender", "me@x.org", "--subject", "s", "--recipients", "to@example.com"]
    result = run_cli(*args, "--body", "b")
    assert result.returncode == 0, result.stderr
    backend = django_backend(host=server.host, port=server.port, local_hostname=IDN)
    assert backend.send_messages([django_message()]) == 1
    assert ehlo_names(server) == [PUNYCODE, PUNYCODE]


@pytest.mark.parametrize("name", ["bü--cher.example", "bücher..example", "bücher_x.example"])
def test_invalid_idn_ehlo_name_is_refused_where_given(
    make_fault_server: MakeFault, name: str
) -> None:
    server = make_fault_server()
    with pytest.raises(ConfigurationError, match="local_hostname"):
        FluxMail(**server.fluxmail_kwargs(local_hostname=name))
    with pytest.raises(ConfigurationError, match="local_hostname"):
        django_backend(host=server.host, port=server.port, local_hostname=name)
    assert server.sessions == []


def test_ascii_ehlo_names_are_kept_as_given(make_fault_server: MakeFault) -> None:
    server = make_fault_server()
    for name in ("mail_01.example.com", "[192.0.2.1]", "MiXeD.Example"):
        send(FluxMail(**server.fluxmail_kwargs(local_hostname=name)), "sync", **message())
    assert ehlo_names(server) == ["mail_01.example.com", "[192.0.2.1]", "MiXeD.Example"]


# --- template runtime errors ----------------------------------------------------------------

RUNTIME_FAILURES = {
    "recursive macro": (
        "{% macro f() %}{{ f() }}{% endmacro %}\n\n{{ f() }}",
        1,
        "RecursionError",
    ),
    "sandbox range limit": ("Hi\n{% for i in range(10**9) %}{% endfor %}", 2, "OverflowError"),
    "division by zero": ("a\nb\n{{ 1 / n }}", 3, "ZeroDivisionError"),
    "wrong type": ("{{ 1 + name }}", 1, "TypeError"),
    "a raising call": ("x\n{{ items.index(7) }}", 2, "ValueError"),
    "a raising method": ("{{ obj.explode() }}", 1, "KeyError"),
}


class Exploding:
    def explode(self) -> str:
        raise KeyError("boom")


@pytest.mark.parametrize(
    ("source", "line", "kind"), RUNTIME_FAILURES.values(), ids=RUNTIME_FAILURES.keys()
)
def test_every_rendering_failure_is_a_template_error_with_its_line(
    source: str, line: int, kind: str, tmp_path: Any
) -> None:
    path = tmp_path / "t.txt"
    path.write_text(source, encoding="utf-8")
    for template in (EmailTemplate(source, name="welcome"), EmailTemplate.from_file(path)):
        with pytest.raises(TemplateError) as info:
            template.render(n=0, name="x", items=[1], obj=Exploding())
        assert info.value.code == "template_error"
        assert f", line {line}: {kind}" in str(info.value)
        assert template.name in str(info.value)


# --- the automatic text part in linear time -------------------------------------------------


def many_links(count: int) -> str:
    links = (f'see <a href="https://example.com/item/{i}">item {i}</a>' for i in range(count))
    return "<p>" + " ".join(links) + "</p>"


def test_automatic_text_part_of_40k_links_in_one_paragraph() -> None:
    """1.5 MB of HTML, 40,000 links in one paragraph: was over 8 s (each link re-joined
    the whole line), now linear (benchmarks/hardening_bench.py html2text). The test
    checks the result, within the normal test timeout; the timing is the benchmark's."""
    from fluxmail.message._html2text import html_to_text

    text = html_to_text(many_links(40_000))
    urls = re.findall(r"\(https://example\.com/item/(\d+)\)", text)
    assert urls == [str(i) for i in range(40_000)]  # each link once, in order
    assert "see item 0 (https://example.com/item/0)" in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) <= 78


def test_link_text_is_the_text_inside_the_link_only() -> None:
    from fluxmail.message._html2text import html_to_text

    html = '<p>a <a href="https://x.test/1">one <b>bold</b></a> b '
    html += '<a href="https://x.test/2"></a> c</p>'
    assert html_to_text(html) == "a one bold (https://x.test/1) b https://x.test/2 c\n"
    nested = '<p><a href="https://x.test/o">out <a href="https://x.test/i">in</a> more</a></p>'
    assert "in (https://x.test/i)" in html_to_text(nested)


# --- a file that is not a journal -------------------------------------------------------------

NOT_JOURNALS = {
    "notes": b"first line\nsecond line\nlast line without a newline",
    "one line without a newline": b"just one line",
    "json but not ours": b'{"a": 1}\n{"b": 2}\n',
    "our header, then damage, then a torn line": (
        b'{"journal":"fluxmail-bulk","version":1}\nnot json\n{"i": 0, "k'
    ),
    "binary": b"\xff\xfe\x00\x01garbage\n\x80",
    "a header of another version": b'{"journal":"fluxmail-bulk","version":9}\n',
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("content", NOT_JOURNALS.values(), ids=NOT_JOURNALS.keys())
def test_a_file_that_is_not_a_journal_is_refused_untouched(
    make_fault_server: MakeFault, mode: str, content: bytes, tmp_path: Any
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    server = make_fault_server()
    mailer = FluxMail(**server.fluxmail_kwargs())
    with pytest.raises(ConfigurationError) as info:
        run_batch(mailer, [message(), message()], mode, journal=path)
    assert "notes.txt" in str(info.value)
    assert path.read_bytes() == content  # not a byte cut, nothing added
    assert server.sessions == []


@pytest.mark.parametrize(
    "content", [b"", b'{"journal":"fluxm', b'{"journal":"fluxmail-bulk","version":1}']
)
def test_a_new_or_torn_header_journal_starts_fresh(
    make_fault_server: MakeFault, content: bytes, tmp_path: Any
) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(content)
    server = make_fault_server()
    result = run_batch(
        FluxMail(**server.fluxmail_kwargs()), [message(), message()], "sync", journal=path
    )
    assert result["sent"] == 2
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b'{"journal":"fluxmail-bulk","version":1}'
    assert len(lines) == 1 + 4 + 1  # header, sending + accepted for each, the final newline


# --- terminal escapes from a server ---------------------------------------------------------

HOSTILE_REPLY = (
    "550 5.7.1 no \x1b[2J\x1b[31mred\x1b[0m \x1b]0;owned title\x07 bell\x07 "
    "c1 \x9b31m csi \x85 next \u202eevil\u202c end"
)
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")


@pytest.mark.parametrize("stage", ["greeting", "MAIL", "RCPT", "DOT"])
def test_cli_stderr_never_carries_terminal_escapes(
    make_fault_server: MakeFault, stage: str
) -> None:
    reply = (
        HOSTILE_REPLY.replace("550 5.7.1", "554 5.3.0") if stage == "greeting" else HOSTILE_REPLY
    )
    server = make_fault_server({stage: Reply(reply)})
    args = ["--type", "smtp", "--host", "127.0.0.1", "--port", str(server.port)]
    args += ["--sender", "me@x.org", "--subject", "s", "--recipients", "to@example.com"]
    result = run_cli(*args, "--body", "b")
    assert result.returncode == 1, result.stderr
    assert not RAW_CONTROLS.search(result.stderr + result.stdout), repr(result.stderr)
    assert "\\x1b[31mred\\x1b[0m" in result.stderr  # shown, escaped
    assert "\\x9b31m" in result.stderr
    assert "\\u202eevil" in result.stderr


def test_safe_text_escapes_every_control() -> None:
    from fluxmail._terminal import safe_text

    assert safe_text("a\x1b[0mb\x07\x9b\u202e\t\n") == "a\\x1b[0mb\\x07\\x9b\\u202e\\x09\\x0a"
    assert safe_text("line\tone\nline two\x1b", lines=True) == "line\tone\nline two\\x1b"
    assert safe_text("naïve café ✓") == "naïve café ✓"


# --- rate limit accuracy (the arithmetic; the measurement is benchmarks/hardening_bench.py) --


def windowed_max(times: list[float], width: float) -> int:
    import bisect

    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + width) - i for i, t in enumerate(ordered))


@pytest.mark.parametrize("rate", [10, 300, 1000, 14.5])
def test_limiter_keeps_its_rate_when_each_send_starts_a_little_late(rate: float) -> None:
    """Every sleep ends up to 3 ms late (a busy machine's scheduler) and each send costs
    0.2 ms: the late ones must not push the rest back (a 300/s limit delivered ~233/s),
    and no window of WINDOW seconds may hold more than ``rate`` starts."""
    import random

    from fluxmail.delivery._ratelimit import WINDOW, RateLimiter

    jitter = random.Random(12)
    limiter = RateLimiter(rate)
    clock, starts = 0.0, []
    for _ in range(int(rate * 20)):
        delay = limiter.wait(clock)
        clock += delay + (jitter.uniform(0, 0.003) if delay else 0.0) + 0.0002  # + the send
        limiter.take(clock)
        starts.append(clock)
    achieved = (len(starts) - 1) / (starts[-1] - starts[0])
    if rate == int(rate):
        assert achieved >= 0.95 * rate
    else:  # 14.5/s is at most 14 in any window
        assert achieved >= 0.99 * int(rate) / WINDOW
    assert windowed_max(starts, WINDOW) <= rate
    assert windowed_max(starts, 1.0) <= rate


def test_limiter_starts_a_new_grid_after_a_stall() -> None:
    from fluxmail.delivery._ratelimit import CATCH_UP, WINDOW, RateLimiter

    limiter = RateLimiter(300)
    limiter.take(0.0)
    limiter.take(0.002)  # a little late: the next slot stays on the grid
    assert limiter.wait(0.002) == pytest.approx(2 * WINDOW / 300 - 0.002)
    stalled = 1.0 + CATCH_UP
    limiter.take(stalled)  # a stall: no burst to catch up, a new grid from here
    assert limiter.wait(stalled) == pytest.approx(WINDOW / 300)
