"""Pure unit tests of the sans-IO SMTP core: no sockets, no servers.

Conversations are driven by :func:`drive`, which answers each yielded action from a list
of canned replies, exactly as a driver would after reading them from a server.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxmail.config import SmtpConfig
from fluxmail.envelope import Composed, Envelope
from fluxmail.errors import (
    AuthenticationError,
    ConnectError,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidMessageError,
    MessageRefusedError,
    MessageTooLargeError,
    OutcomeUnknownError,
    ProtocolError,
    RecipientsRefusedError,
    SenderRefusedError,
    SendTimeoutError,
    SMTPUTF8UnsupportedError,
    TLSRequiredError,
    TLSVerifyError,
)
from fluxmail.smtp._actions import Conversation, Exchange, StartTLS
from fluxmail.smtp._data import prepare_data
from fluxmail.smtp._errors import ServerClosedError, io_error, reply_error
from fluxmail.smtp._protocol import Session, command, plan_message
from fluxmail.smtp._replies import Capabilities, Reply, ReplyParser, collect
from fluxmail.smtp._results import SendResult

T = TypeVar("T")
EHLO_FULL = Reply(
    250,
    (
        "mx.example.com",
        "PIPELINING",
        "SIZE 1000",
        "STARTTLS",
        "AUTH PLAIN LOGIN",
        "SMTPUTF8",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ),
)


def parse(data: bytes) -> list[Reply]:
    parser = ReplyParser()
    parser.feed(data)
    out: list[Reply] = []
    while (reply := parser.next_reply()) is not None:
        out.append(reply)
    return out


def r(code: int, *lines: str) -> Reply:
    return Reply(code, lines or ("ok",))


# --- reply parser ----------------------------------------------------------------------


def test_single_and_multiline_replies() -> None:
    replies = parse(b"220 mx ready\r\n250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 10\r\n")
    assert replies == [
        Reply(220, ("mx ready",)),
        Reply(250, ("mx.example.com", "PIPELINING", "SIZE 10")),
    ]
    assert replies[1].text == "mx.example.com\nPIPELINING\nSIZE 10"


def test_parser_accepts_bytes_one_at_a_time_and_bare_lf() -> None:
    parser = ReplyParser()
    replies = []
    for byte in b"250-a\r\n250 b\n354\r\n":
        parser.feed(bytes([byte]))
        while (reply := parser.next_reply()) is not None:
            replies.append(reply)
    assert replies == [Reply(250, ("a", "b")), Reply(354, ("",))]


@pytest.mark.parametrize(
    "data",
    [
        b"HELLO\r\n",
        b"25O ok\r\n",
        b"2500 ok\r\n",
        b"250_ok\r\n",
        b"199 informational\r\n",
        b"600 nope\r\n",
        b"\r\n",
        b"250-a\r\n251 b\r\n",  # the code changes inside a reply
    ],
)
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(data)


def test_caps_on_line_length_lines_and_size() -> None:
    parser = ReplyParser()
    with pytest.raises(ProtocolError):
        parser.feed(b"250 " + b"x" * 5000)  # no line end yet: refused while buffering
    with pytest.raises(ProtocolError):
        parse(b"250-x\r\n" * 201 + b"250 x\r\n")
    with pytest.raises(ProtocolError):
        parse((b"250-" + b"x" * 4000 + b"\r\n") * 20)  # 80 KB in 20 lines
    assert len(parse(b"250-x\r\n" * 199 + b"250 x\r\n")[0].lines) == 200


def test_discard_forgets_everything_buffered() -> None:
    parser = ReplyParser()
    parser.feed(b"220 go ahead\r\n250-INJECTED\r\n250 PIPE")
    assert parser.next_reply() == Reply(220, ("go ahead",))
    assert parser.buffered > 0
    parser.discard()
    assert parser.buffered == 0
    parser.feed(b"250 real\r\n")
    assert parser.next_reply() == Reply(250, ("real",))


def test_collect_stops_at_421_and_leaves_surplus_in_the_parser() -> None:
    parser = ReplyParser()
    parser.feed(b"250 ok\r\n421 4.3.2 bye\r\n")
    got: list[Reply] = []
    assert collect(parser, 4, got)
    assert [x.code for x in got] == [250, 421]
    parser = ReplyParser()
    parser.feed(b"250 ok\r\n250 extra\r\n")
    got = []
    assert collect(parser, 1, got)
    assert got == [Reply(250, ("ok",))]
    assert parser.buffered  # the driver sees it and retires the connection
    parser = ReplyParser()
    parser.feed(b"250-partial\r\n")
    assert not collect(parser, 1, [])


@pytest.mark.parametrize(
    ("reply", "enhanced"),
    [
        (Reply(550, ("5.1.1 <x@y>: unknown",)), "5.1.1"),
        (Reply(451, ("4.3.0 try later",)), "4.3.0"),
        (Reply(250, ("2.0.0",)), "2.0.0"),
        (Reply(550, ("2.1.0 mismatched class",)), None),
        (Reply(550, ("5.1.1x not a code",)), None),
        (Reply(550, ("user unknown",)), None),
    ],
)
def test_enhanced_status_code(reply: Reply, enhanced: str | None) -> None:
    assert reply.enhanced_code == enhanced


# --- capabilities ----------------------------------------------------------------------


def test_ehlo_capabilities() -> None:
    caps = Capabilities.from_ehlo(EHLO_FULL)
    assert caps.esmtp
    assert caps.pipelining
    assert caps.starttls
    assert caps.smtputf8
    assert caps.eightbitmime
    assert caps.enhanced_status_codes
    assert caps.size
    assert caps.max_size == 1000
    assert caps.auth == {"PLAIN", "LOGIN"}
    assert "mx.example.com" not in caps.keywords


def test_old_auth_form_lower_case_and_unlimited_size() -> None:
    caps = Capabilities.from_ehlo(
        Reply(250, ("mx", "auth=LOGIN", "AUTH PLAIN CRAM-MD5", "size 0", "pipelining"))
    )
    assert caps.auth == {"LOGIN", "PLAIN", "CRAM-MD5"}
    assert caps.size
    assert caps.max_size is None
    assert caps.pipelining
    helo = Capabilities()
    assert not helo.esmtp
    assert not helo.size
    assert helo.max_size is None
    assert not helo.auth


# --- commands and data -----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\r\nRSET", "a\nb", "a\rb", "a\0b"])
def test_command_arguments_refuse_cr_lf_nul(bad: str) -> None:
    with pytest.raises(HeaderInjectionError):
        command("EHLO", bad)
    with pytest.raises(HeaderInjectionError):
        plan_message(Capabilities(), message(rcpt=(bad,)), host="h")
    with pytest.raises(HeaderInjectionError):
        plan_message(Capabilities(), message(sender=bad), host="h")


def test_envelope_addresses_must_be_bare() -> None:
    for bad in ("a@b> SIZE=1", "<a@b>", " a@b"):
        with pytest.raises(InvalidAddressError):
            plan_message(Capabilities(), message(rcpt=(bad,)), host="h")
    with pytest.raises(InvalidMessageError):
        plan_message(Capabilities(), message(rcpt=()), host="h")


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".a\r\n..b\r\n.\r\n", b"..a\r\n...b\r\n..\r\n.\r\n"),
        (b"a\nb\rc\r\r\nd", b"a\r\nb\r\nc\r\n\r\nd\r\n.\r\n"),
        (b"x\n.\ny", b"x\r\n..\r\ny\r\n.\r\n"),  # SMTP smuggling: bare-LF dot
        (b"x\r.\ry", b"x\r\n..\r\ny\r\n.\r\n"),
        (b"x\r\n.\r\nMAIL FROM:<e@x>\r\n", b"x\r\n..\r\nMAIL FROM:<e@x>\r\n.\r\n"),
    ],
)
def test_prepare_data(data: bytes, wire: bytes) -> None:
    assert prepare_data(data) == wire


@given(
    st.binary(max_size=300) | st.lists(st.sampled_from([b"\r", b"\n", b".", b"a"])).map(b"".join)
)
def test_prepare_data_properties(data: bytes) -> None:
    wire = prepare_data(data)
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire[:-3].split(b"\r\n")
    body_lines = lines[:-1] if wire != b".\r\n" else []
    assert b"\r" not in b"".join(body_lines)
    assert b"\n" not in b"".join(body_lines)
    assert b"." not in body_lines  # only the terminator is a lone dot
    unstuffed = [line[1:] if line.startswith(b".") else line for line in body_lines]
    normalised = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    expected = normalised[:-1] if normalised.endswith(b"\n") else normalised
    assert b"\n".join(unstuffed) == expected


# --- message plans ---------------------------------------------------------------------


def message(
    *,
    sender: str = "from@example.com",
    rcpt: tuple[str, ...] = ("to@example.com",),
    data: bytes = b"Subject: t\r\n\r\nhi\r\n",
    smtputf8: bool = False,
) -> Composed:
    return Composed(Envelope(sender, rcpt, smtputf8), data, "<id@example.com>")


def test_plan_parameters() -> None:
    caps = Capabilities.from_ehlo(EHLO_FULL)
    plan = plan_message(caps, message(data=b"caf\xc3\xa9\r\n"), host="h")
    assert plan.mail == b"MAIL FROM:<from@example.com> SIZE=7 BODY=8BITMIME\r\n"
    assert plan.rcpts == (("to@example.com", b"RCPT TO:<to@example.com>\r\n"),)
    utf8 = plan_message(caps, message(sender="jos\u00e9@example.com"), host="h")
    assert utf8.mail.endswith(b" SMTPUTF8\r\n")
    assert "jos\u00e9".encode() in utf8.mail
    plain = plan_message(Capabilities(), message(sender=""), host="h")
    assert plain.mail == b"MAIL FROM:<>\r\n"


def test_plan_refuses_before_sending() -> None:
    caps = Capabilities.from_ehlo(EHLO_FULL)
    with pytest.raises(MessageTooLargeError) as too_big:
        plan_message(caps, message(data=b"x" * 2000), host="h")
    assert too_big.value.smtp_code == 552
    no_utf8 = Capabilities.from_ehlo(Reply(250, ("mx", "PIPELINING")))
    with pytest.raises(SMTPUTF8UnsupportedError) as utf8:
        plan_message(no_utf8, message(smtputf8=True), host="h")
    assert utf8.value.smtp_code == 553
    assert "SMTPUTF8" in str(utf8.value)


# --- conversations, driven by canned replies -------------------------------------------


class Script:
    """Answers a conversation's actions with canned replies and records what it wrote."""

    def __init__(self, *answers: list[Reply] | BaseException) -> None:
        self.answers = list(answers)
        self.written: list[Exchange] = []
        self.tls = 0

    def run(self, conversation: Conversation[T]) -> T:
        action = next(conversation)
        try:
            while True:
                if isinstance(action, StartTLS):
                    self.tls += 1
                    action = conversation.send([])
                    continue
                self.written.append(action)
                answer = self.answers.pop(0)
                if isinstance(answer, BaseException):
                    action = conversation.throw(answer)
                else:
                    action = conversation.send(answer)
        except StopIteration as stop:
            value: T = stop.value
            return value

    @property
    def data(self) -> list[bytes]:
        return [x.data for x in self.written]


def config(**kwargs: object) -> SmtpConfig:
    kwargs.setdefault("local_hostname", "client.example.com")
    return SmtpConfig(host="mx.example.com", **kwargs)  # type: ignore[arg-type]


def opened(caps: Reply = EHLO_FULL, **kwargs: object) -> Session:
    session = Session(config(**kwargs))
    Script([r(220)], [caps]).run(session.handshake())
    return session


def test_handshake_with_starttls_and_auth() -> None:
    session = Session(config(use_tls=True, username="u@x", password="pw"))
    script = Script([r(220)], [EHLO_FULL], [r(220)], [EHLO_FULL], [r(235)])
    script.run(session.handshake())
    assert script.data[:3] == [b"", b"EHLO client.example.com\r\n", b"STARTTLS\r\n"]
    assert script.data[3] == b"EHLO client.example.com\r\n"
    assert script.tls == 1
    assert script.written[4].log == "AUTH PLAIN [redacted]"
    assert session.authenticated
    assert session.auth_mechanism == "PLAIN"


def test_starttls_not_offered_stops_before_anything_else() -> None:
    session = Session(config(use_tls=True, username="u@x", password="pw"))
    script = Script([r(220)], [Reply(250, ("mx", "AUTH PLAIN"))])
    with pytest.raises(TLSRequiredError):
        script.run(session.handshake())
    assert len(script.written) == 2


def test_capabilities_are_forgotten_after_starttls() -> None:
    session = Session(config(use_tls=True))
    after = Reply(250, ("mx", "SIZE 50"))
    Script([r(220)], [EHLO_FULL], [r(220)], [after]).run(session.handshake())
    assert not session.caps.pipelining
    assert session.caps.max_size == 50


def test_ehlo_refused_falls_back_to_helo() -> None:
    session = Session(config())
    script = Script([r(220)], [r(502)], [r(250)])
    script.run(session.handshake())
    assert script.data[2] == b"HELO client.example.com\r\n"
    assert not session.caps.esmtp


def test_auth_login_and_no_plaintext_auth() -> None:
    session = Session(config(username="u@x", password="pw", allow_insecure_auth=True))
    login_only = Reply(250, ("mx", "AUTH LOGIN"))
    script = Script([r(220)], [login_only], [r(334)], [r(334)], [r(235)])
    script.run(session.handshake())
    assert script.data[2:] == [b"AUTH LOGIN\r\n", b"dUB4\r\n", b"cHc=\r\n"]
    assert [x.log for x in script.written[3:]] == ["[redacted]", "[redacted]"]
    strict = Session(config(username="u@x", password="pw"))
    with pytest.raises(TLSRequiredError, match="use_tls"):
        Script([r(220)], [EHLO_FULL]).run(strict.handshake())


def test_auth_failure_never_echoes_the_secret() -> None:
    session = Session(config(username="u@x", password="pw-123", allow_insecure_auth=True))
    token = base64.b64encode(b"\0u@x\0pw-123").decode()
    echo = Reply(535, (f"5.7.8 bad credentials {token} pw-123",))
    with pytest.raises(AuthenticationError) as info:
        Script([r(220)], [EHLO_FULL], [echo]).run(session.handshake())
    assert info.value.smtp_code == 535
    assert info.value.enhanced_code == "5.7.8"
    assert not info.value.transient
    assert token not in str(info.value)
    assert "pw-123" not in str(info.value)
    none = Session(config(username="u@x", password="pw", allow_insecure_auth=True))
    with pytest.raises(AuthenticationError, match="does not offer AUTH"):
        Script([r(220)], [Reply(250, ("mx",))]).run(none.handshake())


def test_pipelined_transaction_is_one_write() -> None:
    session = opened()
    composed = message(rcpt=("a@x", "b@x"))
    script = Script([r(250), r(250), r(550, "5.1.1 no"), r(354)], [r(250, "queued")])
    result = script.run(session.send_message(composed))
    assert script.data[0] == (
        b"MAIL FROM:<from@example.com> SIZE=18\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n"
    )
    assert script.written[0].replies == 4
    assert script.written[1].message_id == "<id@example.com>"
    assert result == SendResult(
        message_id="<id@example.com>",
        accepted=("a@x",),
        refused={"b@x": (550, "5.1.1 no")},
        smtp_code=250,
        server_message="queued",
    )


def test_all_refused_with_354_ends_with_a_lone_dot_and_rset() -> None:
    session = opened()
    script = Script([r(250), r(550), r(354)], [r(554), r(250)])
    with pytest.raises(RecipientsRefusedError) as info:
        script.run(session.send_message(message()))
    assert script.data[1] == b".\r\nRSET\r\n"
    assert info.value.refused == {"to@example.com": (550, "ok")}
    assert not session.closing


def test_sender_refused_then_rset_failure_closes() -> None:
    session = opened()
    script = Script([r(553), r(503), r(503)], ConnectError("connection lost"))
    with pytest.raises(SenderRefusedError):
        script.run(session.send_message(message()))
    assert session.closing


def test_421_marks_the_session_closing_and_skips_rset() -> None:
    session = opened()
    script = Script([r(250), r(421, "4.3.2 bye")])
    with pytest.raises(RecipientsRefusedError) as info:
        script.run(session.send_message(message()))
    assert info.value.smtp_code == 421
    assert info.value.transient
    assert session.closing
    assert len(script.written) == 1


@pytest.mark.parametrize(
    ("replies", "cls"),
    [
        ([r(421, "4.3.2 bye")], SenderRefusedError),
        ([r(250), r(250), r(421, "4.3.2 bye")], MessageRefusedError),
    ],
)
def test_421_anywhere_in_a_pipelined_batch(replies: list[Reply], cls: type[Exception]) -> None:
    session = opened()
    script = Script(replies)
    with pytest.raises(cls) as info:
        script.run(session.send_message(message()))
    assert info.value.smtp_code == 421  # type: ignore[attr-defined]
    assert info.value.transient  # type: ignore[attr-defined]
    assert session.closing
    assert len(script.written) == 1  # no RSET to a server that is leaving


def test_stepwise_transaction_and_452_follow_up() -> None:
    session = opened(Reply(250, ("mx",)))
    composed = message(rcpt=("a@x", "b@x", "c@x"))
    script = Script(
        [r(250)], [r(250)], [r(452, "4.5.3 too many")], [r(354)], [r(250)],  # a
        [r(250)], [r(250)], [r(250)], [r(354)], [r(250)],  # b and c
    )  # fmt: skip
    result = script.run(session.send_message(composed))
    assert script.data[2] == b"RCPT TO:<b@x>\r\n"
    assert script.data[6:8] == [b"RCPT TO:<b@x>\r\n", b"RCPT TO:<c@x>\r\n"]
    assert result.accepted == ("a@x", "b@x", "c@x")
    assert result.refused == {}


def test_follow_up_failure_is_reported_per_recipient() -> None:
    session = opened()
    composed = message(rcpt=("a@x", "b@x"))
    script = Script(
        [r(250), r(250), r(452), r(354)], [r(250)], [r(250), r(550, "nope"), r(554)], [r(250)]
    )
    result = script.run(session.send_message(composed))
    assert result.accepted == ("a@x",)
    assert result.refused == {"b@x": (550, "nope")}


@pytest.mark.parametrize(
    ("code", "cls", "transient"),
    [(451, MessageRefusedError, True), (552, MessageTooLargeError, False),
     (554, MessageRefusedError, False)],
)  # fmt: skip
def test_final_reply_errors(code: int, cls: type[Exception], transient: bool) -> None:
    session = opened()
    script = Script([r(250), r(250), r(354)], [r(code, f"{code // 100}.6.0 no")], [r(250)])
    with pytest.raises(cls) as info:
        script.run(session.send_message(message()))
    assert info.value.smtp_code == code
    assert info.value.transient is transient
    assert script.data[-1] == b"RSET\r\n"


# --- error tables ----------------------------------------------------------------------


def errors() -> Iterator[tuple[BaseException, type[Exception]]]:
    yield TimeoutError("timed out"), SendTimeoutError
    yield ConnectionResetError(104, "Connection reset by peer"), ConnectError
    yield ServerClosedError(), ConnectError
    yield ssl.SSLCertVerificationError("bad cert"), TLSVerifyError


def test_io_errors_by_stage() -> None:
    for exc, cls in errors():
        error = io_error("mail", exc, host="h", port=25, timeout=3)
        assert type(error) is cls
        unknown = io_error("dot", exc, host="h", port=25, timeout=3, message_id="<m@x>")
        assert isinstance(unknown, OutcomeUnknownError)
        assert unknown.message_id == "<m@x>"


def test_reply_errors_by_stage() -> None:
    greeting = reply_error("greeting", r(554, "5.3.2 go away"), host="h")
    assert type(greeting) is ConnectError
    assert "554" in str(greeting)
    assert not greeting.transient
    assert reply_error("greeting", r(421), host="h").transient
    assert isinstance(reply_error("starttls", r(454), host="h"), TLSRequiredError)
    too_big = reply_error("mail", r(552), host="h")
    assert isinstance(too_big, MessageTooLargeError)


def test_clean_payloads_skip_only_the_redundant_checks() -> None:
    """``Composed.clean`` (set by our composer only) skips the newline and line-length
    scans; dot-stuffing stays. Unmarked bytes keep every check."""
    from fluxmail import FluxMail
    from fluxmail.errors import InvalidMessageError

    mailer = FluxMail(object_type="smtp", host="localhost")
    body = ".leading dot\nhello\n.\nend"
    composed = mailer.compose(
        mailer.build_message(
            subject="s", recipients=["a@example.com"], sender="b@example.com", body=body
        )
    )
    assert composed.clean
    plan = plan_message(Capabilities(), composed, host="h")
    assert plan.payload + plan.tail == prepare_data(composed.data)  # still dot-stuffed
    assert b"\r\n..\r\n" in plan.payload

    foreign = Composed(Envelope("a@x.org", ("b@x.org",)), b"S: x\r\n\r\n" + b"y" * 999, "<m@x>")
    assert not foreign.clean
    with pytest.raises(InvalidMessageError):
        plan_message(Capabilities(), foreign, host="h")
    bare = Composed(Envelope("a@x.org", ("b@x.org",)), b"S: x\n\nbody\r.\n", "<m@x>")
    assert plan_message(Capabilities(), bare, host="h").payload == b"S: x\r\n\r\nbody\r\n..\r\n"


@pytest.mark.parametrize(
    "header",
    ["X-Long: " + "y" * 1200, "X-Ok: fine"],
)
def test_composer_marks_clean_only_what_it_checked(header: str) -> None:
    from fluxmail import FluxMail

    mailer = FluxMail(object_type="smtp", host="localhost")
    name, _, value = header.partition(": ")
    try:
        message = mailer.build_message(
            subject="s",
            recipients=["a@example.com"],
            sender="b@example.com",
            body="hi",
            headers={name: value},
        )
    except Exception:  # the message layer may refuse it already
        return
    composed = mailer.compose(message)
    lines = composed.data.split(b"\r\n")
    short = max(map(len, lines)) <= 998
    assert composed.clean == short
