"""object_type="graph" end to end against a local Graph (tests/graph_server.py): send(),
display() drafts, send_async(), BulkSender, the capture, dry runs, from_env and the CLI;
throttling, token refresh, Graph's errors, the size limit and secrets."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import pickle
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fluxmail.testing
from fluxmail import BulkSender, EmailObject, FluxMail
from fluxmail.cli import main
from fluxmail.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    FluxMailException,
    GraphError,
    GraphThrottledError,
    InvalidMessageError,
    OutcomeUnknownError,
    UnsupportedOperationError,
)
from fluxmail.oauth import MicrosoftOAuth2
from fluxmail.transports._graph_pair import GraphPair
from fluxmail.transports._graph_wire import Throttle, check_graph_url, retry_after
from graph_server import GRAPH_SCOPE, MAILBOX, GraphServer, Reply
from oauth_servers import CLIENT_ID, CLIENT_SECRET

GRAPH_SUCCESS = "Email sent successfully via Microsoft Graph."
MakeGraph = Callable[..., GraphServer]


@pytest.fixture
def make_graph() -> Iterator[MakeGraph]:
    started: list[GraphServer] = []

    def factory(**options: Any) -> GraphServer:
        server = GraphServer(**options).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def graph(make_graph: MakeGraph) -> GraphServer:
    return make_graph()


def provider(server: GraphServer, **options: Any) -> MicrosoftOAuth2:
    return MicrosoftOAuth2(
        "contoso.onmicrosoft.com",
        CLIENT_ID,
        CLIENT_SECRET,
        scope=GRAPH_SCOPE,
        token_url=server.token_url,
        **options,
    )


def mailer(server: GraphServer, **options: Any) -> FluxMail:
    settings: dict[str, Any] = {
        "object_type": "graph",
        "username": MAILBOX,
        "oauth2": provider(server),
        "graph_url": server.url,
        "timeout": 5,
    }
    settings.update(options)
    return FluxMail(**settings)


def pair(m: FluxMail) -> GraphPair:
    """The Graph transports inside the mailer's Switch."""
    assert m.transport is not None
    inner = m.transport.inner
    assert isinstance(inner, GraphPair)
    return inner


def message(index: int = 0, **options: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "subject": f"Report {index}",
        "recipients": [f"a{index}@example.com"],
        "body": f"Hello {index}",
    }
    spec.update(options)
    return spec


# --- send() --------------------------------------------------------------------------------------


def test_send_posts_the_mime_with_bcc_in_the_header(graph: GraphServer) -> None:
    m = mailer(graph)
    receipt = m.create(
        subject="Hi",
        recipients=["a@example.com"],
        cc=["c@example.com"],
        bcc=["audit@example.com"],
        body="Hello",
        priority="high",
        unsubscribe_url="https://example.com/u",
    ).send()
    assert receipt == GRAPH_SUCCESS
    [request] = graph.sent
    assert request.path == f"/v1.0/users/{MAILBOX}/sendMail"
    assert request.content_type == "text/plain"
    assert request.token in graph.endpoint.issued
    msg = request.message
    assert msg["Message-ID"] == receipt.message_id  # type: ignore[attr-defined]
    assert msg["From"] == MAILBOX
    assert msg["To"] == "a@example.com"
    assert msg["Cc"] == "c@example.com"
    assert msg["Bcc"] == "audit@example.com"  # Graph reads it, and strips it on delivery
    assert msg["Importance"] == "high"
    assert msg["List-Unsubscribe"] == "<https://example.com/u>"
    assert "DKIM-Signature" not in msg
    assert receipt.accepted == ("a@example.com", "c@example.com", "audit@example.com")  # type: ignore[attr-defined]


def test_smtp_still_never_writes_bcc() -> None:
    with fluxmail.testing.capture() as outbox:
        FluxMail(host="localhost", sender="me@example.com").create(
            subject="x", recipients="a@example.com", bcc="b@example.com", body="y"
        ).send()
    assert b"Bcc" not in outbox[0].data


def test_one_token_and_one_connection_for_many_sends(graph: GraphServer) -> None:
    m = mailer(graph)
    for i in range(5):
        m.create(**message(i)).send()
    assert len(graph.sent) == 5
    assert graph.endpoint.count == 1  # the cached token
    assert graph.connections == 1  # one pool, kept alive
    assert m.transport is not None
    m.transport.close()


def test_attachments_and_inline_images_travel(graph: GraphServer, tmp_path: Path) -> None:
    report = tmp_path / "report.csv"
    report.write_bytes(b"a,b\n1,2\n")
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    mailer(graph).create(
        subject="Files",
        recipients="a@example.com",
        body='<img src="cid:logo">',
        html_body=True,
        attachments=[str(report)],
        inline_images={"logo": str(logo)},
    ).send()
    msg = graph.sent[0].message
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_payload(decode=True) == b"a,b\n1,2\n"
    assert any(part["Content-ID"] == "<logo>" for part in msg.walk())


# --- drafts --------------------------------------------------------------------------------------


def test_display_saves_a_draft_and_returns_its_weblink(
    graph: GraphServer, capsys: pytest.CaptureFixture[str]
) -> None:
    m = mailer(graph)
    link = m.create(subject="Review me", recipients="a@example.com", body="...").display()
    assert link is not None
    assert link.startswith("https://outlook.office365.com/owa/?ItemID=")
    assert link in capsys.readouterr().out
    [draft] = graph.drafts
    assert draft.path == f"/v1.0/users/{MAILBOX}/messages"
    assert draft.message["Subject"] == "Review me"
    assert graph.sent == []
    assert m.message is None


def test_create_draft_async(graph: GraphServer) -> None:
    m = mailer(graph)
    composed = m.compose(m.build_message(**message()))
    ident, link = asyncio.run(pair(m).aio.create_draft(composed))
    assert ident == "AAMkDraft1"
    assert ident in link


# --- send_async() --------------------------------------------------------------------------------


def test_send_async_many_loops(graph: GraphServer) -> None:
    m = mailer(graph)

    async def run() -> list[str]:
        async with m:
            return list(
                await asyncio.gather(*(m.create(**message(i)).send_async() for i in range(4)))
            )

    assert asyncio.run(run()) == [GRAPH_SUCCESS] * 4
    assert asyncio.run(m.create(**message(9)).send_async()) == GRAPH_SUCCESS  # a new loop
    assert sorted(r.message["Subject"] for r in graph.sent) == [
        "Report 0",
        "Report 1",
        "Report 2",
        "Report 3",
        "Report 9",
    ]


def test_async_with_block_holds_one_pool(graph: GraphServer) -> None:
    m = mailer(graph)

    async def run() -> None:
        async with m:
            for i in range(4):
                await m.create(**message(i)).send_async()
        await m.create(**message(4)).send_async()  # outside the block: its own pool

    asyncio.run(run())
    assert len(graph.sent) == 5
    assert graph.connections == 2


def test_send_async_makes_one_attempt(graph: GraphServer) -> None:
    graph.script.append(Reply(429, "TooManyRequests", retry_after="0"))
    m = mailer(graph, max_retries=3)
    with pytest.raises(GraphThrottledError):
        asyncio.run(m.create(**message()).send_async())
    assert graph.count == 1


# --- throttling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_throttled_send_waits_retry_after_and_retries(graph: GraphServer, status: int) -> None:
    graph.script.append(Reply(status, "ApplicationThrottled", retry_after="1"))
    m = mailer(graph, max_retries=1, retry_delay=0)
    started = time.monotonic()
    assert m.create(**message()).send() == GRAPH_SUCCESS
    first, second = graph.requests
    assert second.at - first.at >= 0.95  # Graph's Retry-After, not retry_delay=0
    assert time.monotonic() - started < 4
    assert len(graph.sent) == 1


def test_throttled_without_retries_is_a_transient_error(graph: GraphServer) -> None:
    graph.script.append(Reply(429, "ApplicationThrottled", "slow down", retry_after="7"))
    with pytest.raises(GraphThrottledError) as info:
        mailer(graph).create(**message()).send()
    error = info.value
    assert error.code == "graph_throttled"
    assert error.transient
    assert error.status == 429
    assert error.retry_after == 7
    assert error.graph_code == "ApplicationThrottled"
    assert "ApplicationThrottled" in str(error)
    assert "retry after 7 s" in str(error)
    assert isinstance(error, GraphError)
    assert graph.count == 1


def test_retry_after_wait_is_bounded_by_the_timeout(graph: GraphServer) -> None:
    graph.script.append(Reply(429, "ApplicationThrottled", retry_after="3600"))
    m = mailer(graph, max_retries=1, timeout=0.5)
    started = time.monotonic()
    m.create(**message()).send()
    assert time.monotonic() - started < 3


def test_retry_after_parsing() -> None:
    assert retry_after("12") == 12
    assert retry_after(" 0 ") == 0
    assert retry_after(None) is None
    assert retry_after("soon") is None
    assert retry_after("-5") == 0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10
    clock = [100.0]
    throttle = Throttle(clock=lambda: clock[0])
    throttle.hold(30, cap=5)
    assert throttle.remaining() == 5
    throttle.hold(None, cap=5)  # no Retry-After: one second, never shortening a wait
    assert throttle.remaining() == 5
    clock[0] += 6
    assert throttle.remaining() == 0


# --- tokens --------------------------------------------------------------------------------------


def test_expired_token_is_refreshed_once(graph: GraphServer) -> None:
    m = mailer(graph)
    m.create(**message(0)).send()
    graph.tokens.expire()  # Graph stops accepting the cached token
    assert m.create(**message(1)).send() == GRAPH_SUCCESS
    assert graph.endpoint.count == 2
    assert [r.status for r in graph.requests] == [202, 401, 202]


def test_a_second_401_is_an_authentication_error(graph: GraphServer) -> None:
    graph.script += [
        Reply(401, "InvalidAuthenticationToken"),
        Reply(401, "InvalidAuthenticationToken"),
    ]
    with pytest.raises(AuthenticationError) as info:
        mailer(graph, max_retries=3).create(**message()).send()
    assert info.value.code == "authentication_failed"
    assert "InvalidAuthenticationToken" in str(info.value)
    assert graph.count == 2
    assert graph.endpoint.count == 2


def test_async_401_refresh(graph: GraphServer) -> None:
    graph.script.append(Reply(401, "InvalidAuthenticationToken"))
    assert asyncio.run(mailer(graph).create(**message()).send_async()) == GRAPH_SUCCESS
    assert graph.endpoint.count == 2
    assert len(graph.sent) == 1


# --- Graph's errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "ErrorInvalidRecipients"), (403, "ErrorAccessDenied"), (404, "ErrorInvalidUser")],
)
def test_client_errors_are_never_retried(graph: GraphServer, status: int, code: str) -> None:
    graph.script.append(Reply(status, code, "At least one recipient is not valid."))
    with pytest.raises(GraphError) as info:
        mailer(graph, max_retries=3, retry_delay=0).create(**message()).send()
    error = info.value
    assert error.code == "graph_error"
    assert not error.transient
    assert error.status == status
    assert error.graph_code == code
    assert code in str(error)
    assert f"HTTP {status}" in str(error)
    assert graph.count == 1
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.status, copy.graph_code, str(copy)) == (
        error.code,
        status,
        code,
        str(error),
    )


def test_server_error_leaves_the_outcome_unknown(graph: GraphServer) -> None:
    graph.script.append(Reply(500, "InternalServerError"))
    m = mailer(graph, max_retries=3, retry_delay=0)
    with pytest.raises(OutcomeUnknownError) as info:
        m.create(**message()).send()
    assert info.value.message_id is not None
    assert "HTTP 500" in str(info.value)
    assert graph.count == 1


def test_an_answer_that_never_comes_is_unknown_and_not_resent(graph: GraphServer) -> None:
    graph.script.append(Reply(202, delay=3))
    m = mailer(graph, max_retries=3, retry_delay=0, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknownError):
        m.create(**message()).send()
    assert time.monotonic() - started < 2.5
    graph.script.append(Reply(202, delay=3))
    with pytest.raises(OutcomeUnknownError):
        asyncio.run(m.create(**message()).send_async())
    assert graph.count == 2


def test_nothing_listening_is_a_transient_connect_error(graph: GraphServer) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(ConnectError) as info:
        mailer(graph, graph_url=f"http://127.0.0.1:{closed}/v1.0").create(**message()).send()
    assert info.value.transient
    assert info.value.code == "connection_failed"
    assert "not sent" in str(info.value)


def test_a_message_over_the_request_limit_is_refused_before_sending(
    graph: GraphServer,
) -> None:
    big = ("big.bin", bytes(2_400_000))  # 3.2 MB of MIME, 4.3 MB of base64
    m = mailer(graph)
    with pytest.raises(InvalidMessageError) as info:
        m.create(**message(attachments=[big])).send()
    assert info.value.code == "message_too_large"
    assert "4,194,304" in str(info.value)
    assert graph.count == 0
    m.create(**message(attachments=[("ok.bin", bytes(2_000_000))])).send()
    assert len(graph.sent) == 1


# --- test_connection() ---------------------------------------------------------------------------


def test_test_connection_checks_token_and_mailbox_without_sending(graph: GraphServer) -> None:
    info = mailer(graph).test_connection()
    assert info["ok"] is True
    assert info["mailbox"] == MAILBOX
    assert info["authenticated"]
    assert graph.sent == []
    assert graph.drafts == []
    assert graph.requests[0].status == 400  # Graph refused the probe body, as intended


def test_test_connection_reports_an_unknown_mailbox(graph: GraphServer) -> None:
    with pytest.raises(GraphError) as info:
        mailer(graph, username="nobody@contoso.com").test_connection()
    assert info.value.status == 404
    assert info.value.graph_code == "ErrorInvalidUser"


# --- BulkSender ----------------------------------------------------------------------------------


def test_bulk_sync_keeps_going_and_sends_each_message_once(graph: GraphServer) -> None:
    graph.script += [
        Reply(429, "ApplicationThrottled", retry_after="0"),  # message 0: retried
        Reply(202),
        Reply(400, "ErrorInvalidRecipients"),  # message 1: fails alone
    ]
    m = mailer(graph, max_retries=2, retry_delay=0)
    errors: list[tuple[int, FluxMailException]] = []
    result = BulkSender(m).send_batch(
        [message(i) for i in range(5)],
        on_error=lambda i, e: errors.append((i, e)),
        progress=False,
    )
    assert (result["sent"], result["failed"], result["total"]) == (4, 1, 5)
    assert errors[0][0] == 1
    assert isinstance(errors[0][1], GraphError)
    ids = [r.message["Message-ID"] for r in graph.requests if r.status == 202]
    assert len(ids) == len(set(ids)) == 4


def test_bulk_async_bounded_concurrency(make_graph: MakeGraph) -> None:
    graph = make_graph(delay=0.15)
    m = mailer(graph)
    result = asyncio.run(
        BulkSender(m).send_batch_async([message(i) for i in range(12)], connections=4)
    )
    assert (result["sent"], result["failed"]) == (12, 0)
    assert graph.max_in_flight == 4
    subjects = sorted(r.message["Subject"] for r in graph.sent)
    assert subjects == sorted(f"Report {i}" for i in range(12))


def test_bulk_async_retries_a_throttled_message_once_after_retry_after(
    graph: GraphServer,
) -> None:
    graph.script.append(Reply(429, "ApplicationThrottled", retry_after="1"))
    m = mailer(graph, max_retries=1, retry_delay=0)
    result = asyncio.run(
        BulkSender(m).send_batch_async([message(i) for i in range(6)], connections=2)
    )
    assert (result["sent"], result["failed"]) == (6, 0)
    refused = graph.requests[0]
    assert refused.status == 429
    again = [r for r in graph.requests[1:] if r.message["Subject"] == refused.message["Subject"]]
    assert len(again) == 1  # retried once, after the wait Graph asked for
    assert again[0].at - refused.answered_at >= 0.95
    ids = [r.message["Message-ID"] for r in graph.sent]
    assert len(ids) == len(set(ids)) == 6


def test_throttling_holds_every_request_of_the_mailer(graph: GraphServer) -> None:
    graph.script.append(Reply(429, "ApplicationThrottled", retry_after="1"))
    m = mailer(graph)
    with pytest.raises(GraphThrottledError):
        m.create(**message(0)).send()
    started = time.monotonic()
    assert asyncio.run(m.create(**message(1)).send_async()) == GRAPH_SUCCESS  # waits too
    assert time.monotonic() - started >= 0.9
    assert graph.requests[1].at - graph.requests[0].answered_at >= 0.95


@pytest.mark.parametrize("use_async", [False, True])
def test_bulk_stops_on_a_mailbox_error(make_graph: MakeGraph, use_async: bool) -> None:
    graph = make_graph(allowed=())  # an access policy that excludes the mailbox
    bulk = BulkSender(mailer(graph))
    specs = [message(i) for i in range(20)]

    def run() -> None:
        if use_async:
            asyncio.run(bulk.send_batch_async(specs, connections=2))
        else:
            bulk.send_batch(specs, progress=False)

    with pytest.raises(GraphError) as info:
        run()
    assert info.value.status == 403
    assert info.value.batch_result["sent"] == 0
    assert graph.count <= 2  # the batch stopped instead of failing 20 messages


def test_a_stopped_async_batch_closes_its_pool(make_graph: MakeGraph) -> None:
    """The last worker out closes the pool even while the batch is cancelling it (the
    close used to be cut short, leaving a socket open about one run in three)."""
    graph = make_graph(allowed=())
    specs = [message(i) for i in range(20)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(10):
            with pytest.raises(GraphError):
                asyncio.run(BulkSender(mailer(graph)).send_batch_async(specs, connections=2))
            gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_cancelled_async_batch_lets_requests_in_flight_finish(
    make_graph: MakeGraph, tmp_path: Path
) -> None:
    """Cancelled with two requests in flight, the batch waits for their answers and
    journals them (no socket is left open), so the resumed run sends only the rest."""
    graph = make_graph(delay=0.3)
    journal = tmp_path / "run.jsonl"
    specs = [message(i) for i in range(6)]

    async def cancel_mid_request() -> None:
        bulk = BulkSender(mailer(graph), journal=journal)
        run = asyncio.ensure_future(bulk.send_batch_async(specs, connections=2, progress=False))
        while len(graph.requests) < 2:
            await asyncio.sleep(0.01)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(cancel_mid_request())
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    finished = len(graph.sent)
    assert finished >= 2  # the two in flight were answered and journaled
    again = BulkSender(mailer(graph), journal=journal).send_batch(specs, progress=False)
    assert again["skipped"] == finished
    assert again["sent"] == len(specs) - finished
    ids = [r.message["Message-ID"] for r in graph.requests]
    assert len(ids) == len(set(ids)) == len(specs)  # each message exactly once


def test_bulk_journal_resumes_over_graph(graph: GraphServer, tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    specs = [message(i) for i in range(3)]
    BulkSender(mailer(graph), journal=journal).send_batch(specs, progress=False)
    again = BulkSender(mailer(graph), journal=journal).send_batch(specs, progress=False)
    assert again["skipped"] == 3
    assert len(graph.sent) == 3


# --- the capture and dry runs --------------------------------------------------------------------


def test_capture_takes_sends_drafts_and_batches(graph: GraphServer) -> None:
    m = mailer(graph)
    with fluxmail.testing.capture() as outbox:
        assert m.create(**message(0, bcc="audit@example.com")).send() == GRAPH_SUCCESS
        assert asyncio.run(m.create(**message(1)).send_async()) == GRAPH_SUCCESS
        assert m.create(**message(2)).display() == ""
        BulkSender(m).send_batch([message(3)], progress=False)
    assert outbox.subjects == ["Report 0", "Report 1", "Report 2", "Report 3"]
    assert outbox[0].message["Bcc"] == "audit@example.com"  # as Graph would receive it
    assert graph.count == 0
    assert graph.endpoint.count == 0


def test_dry_run_previews_and_sends_nothing(
    graph: GraphServer, capsys: pytest.CaptureFixture[str]
) -> None:
    text = mailer(graph).create(**message(bcc="audit@example.com")).send(dry_run=True)
    assert "Bcc: audit@example.com  (in the header for Microsoft Graph" in text
    assert "Subject: Report 0" in capsys.readouterr().out
    assert graph.count == 0


# --- settings ------------------------------------------------------------------------------------


def test_graph_settings_are_checked() -> None:
    token = lambda: "t0ken"  # noqa: E731
    assert EmailObject("graph") is EmailObject.GRAPH
    assert (
        check_graph_url("https://graph.microsoft.com/v1.0/") == "https://graph.microsoft.com/v1.0"
    )
    assert check_graph_url("http://localhost:8080/v1.0") == "http://localhost:8080/v1.0"
    for url in ("http://graph.example.com/v1.0", "ftp://x", "https://u:p@graph.x/v1.0", ""):
        with pytest.raises(ConfigurationError):
            check_graph_url(url)
    with pytest.raises(ConfigurationError, match="oauth2"):
        FluxMail(object_type="graph", username=MAILBOX)
    with pytest.raises(ConfigurationError, match="username"):
        FluxMail(object_type="graph", oauth2=token)
    with pytest.raises(ConfigurationError, match="host or password"):
        FluxMail(object_type="graph", username=MAILBOX, oauth2=token, password="x")
    with pytest.raises(ConfigurationError, match="graph_url"):
        FluxMail(host="localhost", graph_url="https://graph.microsoft.com/v1.0")
    smtp_scoped = MicrosoftOAuth2("contoso.com", CLIENT_ID, CLIENT_SECRET)
    with pytest.raises(ConfigurationError, match=r"graph\.microsoft\.com/\.default"):
        FluxMail(object_type="graph", username=MAILBOX, oauth2=smtp_scoped)
    from fluxmail.dkim import DKIM

    with pytest.raises(UnsupportedOperationError):
        FluxMail(
            object_type="graph",
            username=MAILBOX,
            oauth2=token,
            dkim=DKIM(domain="contoso.com", selector="s", private_key="x"),
        )
    m = FluxMail(object_type="graph", username=MAILBOX, oauth2=token)
    assert repr(m) == f"FluxMail(graph, https://graph.microsoft.com/v1.0, username='{MAILBOX}')"


def test_secrets_never_appear(graph: GraphServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    m = mailer(graph)
    m.create(**message()).send()
    graph.script += [Reply(401, "InvalidAuthenticationToken", "bad")] * 2
    with pytest.raises(AuthenticationError) as info:
        m.create(**message()).send()
    graph.script.append(Reply(400, "ErrorInvalidRecipients", f"echo {graph.endpoint.issued[-1]}"))
    with pytest.raises(GraphError) as echoed:
        m.create(**message()).send()
    texts = [
        str(info.value),
        repr(info.value),
        str(echoed.value),
        repr(m),
        repr(m.transport),
        repr(pair(m).sync),
        repr(pair(m).config),
        caplog.text,
    ]
    assert "[redacted]" in str(echoed.value)
    for secret in (CLIENT_SECRET, *graph.endpoint.issued):
        for text in texts:
            assert secret not in text


# --- from_env and the CLI ------------------------------------------------------------------------


def graph_env(graph: GraphServer) -> dict[str, str]:
    return {
        "FLUXMAIL_TYPE": "graph",
        "FLUXMAIL_USERNAME": MAILBOX,
        "FLUXMAIL_GRAPH_URL": graph.url,
        "FLUXMAIL_OAUTH2_PROVIDER": "microsoft",
        "FLUXMAIL_OAUTH2_TENANT": "contoso.onmicrosoft.com",
        "FLUXMAIL_OAUTH2_CLIENT_ID": CLIENT_ID,
        "FLUXMAIL_OAUTH2_CLIENT_SECRET": CLIENT_SECRET,
        "FLUXMAIL_OAUTH2_TOKEN_URL": graph.token_url,
    }


def test_from_env(graph: GraphServer) -> None:
    m = FluxMail.from_env(graph_env(graph))
    assert m.object_type is EmailObject.GRAPH
    assert m.create(**message()).send() == GRAPH_SUCCESS
    assert graph.endpoint.requests[0].form["scope"] == GRAPH_SCOPE  # the Graph default


def test_cli_sends_over_graph(
    graph: GraphServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in graph_env(graph).items():
        monkeypatch.setenv(name, value)
    args = ["--subject", "CLI", "--recipients", "a@example.com", "--body", "hi"]
    assert main(["--type", "graph", *args, "--bcc", "b@example.com"]) == 0
    out = capsys.readouterr()
    assert GRAPH_SUCCESS in out.out
    assert graph.sent[0].message["Bcc"] == "b@example.com"
    graph.script.append(Reply(400, "ErrorInvalidRecipients"))
    assert main(["--type", "graph", *args]) == 1
    err = capsys.readouterr().err
    assert "ErrorInvalidRecipients" in err
    assert "[graph_error]" in err
    assert CLIENT_SECRET not in err


# --- the examples of docs/graph.md ---------------------------------------------------------------


DOCS = Path(__file__).resolve().parent.parent / "docs" / "graph.md"


def docs_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("index", range(len(docs_examples())))
def test_docs_examples_run_against_the_local_graph(
    graph: GraphServer, index: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each example as written, with Graph's and the token endpoint's URLs pointed here."""
    code = docs_examples()[index]
    code = code.replace("https://graph.microsoft.com/v1.0", graph.url)
    scope = 'scope="https://graph.microsoft.com/.default",'
    assert scope in code
    code = code.replace(scope, f"{scope} token_url={graph.token_url!r},")
    code = code.replace('"<client-id>"', repr(CLIENT_ID)).replace(
        '"<client-secret>"', repr(CLIENT_SECRET)
    )
    exec(compile(code, f"docs/graph.md example {index}", "exec"), {"__name__": "docs"})
    assert graph.count >= 1
    assert all(r.status in (201, 202, 400) for r in graph.requests)


def test_base64_body_is_the_exact_composed_message(graph: GraphServer) -> None:
    m = mailer(graph)
    composed = m.compose(m.build_message(**message()))
    pair(m).sync.send(composed)
    assert graph.requests[0].body == base64.b64encode(composed.data)


# --- the transports' send_many (the delivery spine's interface) ---------------------------------


def test_send_many_yields_one_outcome_per_message_in_order(make_graph: MakeGraph) -> None:
    graph = make_graph()
    graph.script += [Reply(202), Reply(400, "ErrorInvalidRecipients"), Reply(202)]
    m = mailer(graph)
    composed = [m.compose(m.build_message(**message(i))) for i in range(3)]
    outcomes = list(pair(m).sync.send_many(iter(composed)))
    assert [type(o).__name__ for o in outcomes] == ["SendResult", "GraphError", "SendResult"]
    assert [getattr(o, "message_id", None) for o in outcomes] == [
        composed[0].message_id,
        None,
        composed[2].message_id,
    ]


def test_async_send_many_stopped_early_lets_requests_in_flight_finish(
    make_graph: MakeGraph,
) -> None:
    graph = make_graph(delay=0.2)
    m = mailer(graph)
    composed = [m.compose(m.build_message(**message(i))) for i in range(8)]
    transport = pair(m).aio

    async def first_only() -> Any:
        run = transport.send_many(composed, concurrency=3)
        first = await run.__anext__()
        await run.aclose()
        return first

    first = asyncio.run(first_only())
    assert first.message_id == composed[0].message_id
    time.sleep(0.3)
    # the three in flight when the consumer stopped each finished once; no other started
    assert len(graph.sent) == 3
    assert all(r.status == 202 for r in graph.requests)
    assert len({r.message["Message-ID"] for r in graph.requests}) == len(graph.requests)


def test_draft_errors_name_the_operation(graph: GraphServer) -> None:
    graph.script.append(Reply(403, "ErrorAccessDenied", "Access is denied."))
    with pytest.raises(GraphError) as info:
        mailer(graph).create(**message()).display()
    assert str(info.value).startswith("Microsoft Graph create draft: HTTP 403 (ErrorAccessDenied")


def test_graph_scope_defaults_from_the_environment() -> None:
    from fluxmail.oauth import (
        GRAPH_APP_SCOPE,
        GRAPH_DELEGATED_SCOPE,
        MICROSOFT_APP_SCOPE,
        provider_from_env,
    )

    env = {
        "FLUXMAIL_OAUTH2_PROVIDER": "microsoft",
        "FLUXMAIL_OAUTH2_TENANT": "contoso.onmicrosoft.com",
        "FLUXMAIL_OAUTH2_CLIENT_ID": CLIENT_ID,
        "FLUXMAIL_OAUTH2_CLIENT_SECRET": CLIENT_SECRET,
    }
    assert getattr(provider_from_env(env), "scope", None) == MICROSOFT_APP_SCOPE  # SMTP
    assert getattr(provider_from_env(env, graph=True), "scope", None) == GRAPH_APP_SCOPE
    delegated = {**env, "FLUXMAIL_OAUTH2_REFRESH_TOKEN": "1//r"}
    assert getattr(provider_from_env(delegated, graph=True), "scope", None) == (
        GRAPH_DELEGATED_SCOPE
    )
    custom = {**env, "FLUXMAIL_OAUTH2_SCOPE": "https://graph.microsoft.us/.default"}
    assert getattr(provider_from_env(custom, graph=True), "scope", None) == (
        "https://graph.microsoft.us/.default"
    )


def test_send_message_over_graph(graph: GraphServer) -> None:
    from email.message import EmailMessage

    built = EmailMessage()
    built["From"] = MAILBOX
    built["To"] = "a@example.com"
    built["Subject"] = "Built by hand"
    built.set_content("hello")
    m = mailer(graph)
    assert m.send_message(built) == GRAPH_SUCCESS
    assert graph.sent[0].message["Subject"] == "Built by hand"
    with pytest.raises(UnsupportedOperationError, match="recipients"):
        m.send_message(built, recipients=["b@example.com"])
    built["Bcc"] = "hidden@example.com"  # it would be stripped, and Graph never see it
    with pytest.raises(UnsupportedOperationError, match="Bcc"):
        m.send_message(built)
    with pytest.raises(UnsupportedOperationError, match="Bcc"):
        m.send_message(bytes(built))
    assert len(graph.sent) == 1


def test_an_invite_travels_through_graph(graph: GraphServer) -> None:
    """The calendar invite is part of the composed MIME, so Graph carries it unchanged:
    the text/calendar alternative and the invite.ics attachment, with Bcc never invited."""
    from datetime import datetime, timezone

    import icalendar

    from fluxmail import Invite

    invite = Invite(
        summary="Quarterly review",
        start=datetime(2027, 1, 15, 13, 0, tzinfo=timezone.utc),
        end=datetime(2027, 1, 15, 14, 0, tzinfo=timezone.utc),
        organizer=f"Reports <{MAILBOX}>",
    )
    receipt = (
        mailer(graph)
        .create(
            subject="Invitation: Quarterly review",
            recipients=["bob@example.com"],
            bcc=["audit@example.com"],
            body="You are invited.",
            invite=invite,
        )
        .send()
    )
    assert receipt == GRAPH_SUCCESS
    [request] = graph.sent
    msg = request.message
    calendars = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    assert len(calendars) == 1
    assert calendars[0].get_param("method") == "REQUEST"
    raw = calendars[0].get_payload(decode=True)
    assert isinstance(raw, bytes)
    (event,) = icalendar.Calendar.from_ical(raw).walk("VEVENT")
    assert str(event["UID"]) == invite.uid
    attendees = event.get("ATTENDEE")
    attendees = attendees if isinstance(attendees, list) else [attendees]
    assert [str(a).lower() for a in attendees] == ["mailto:bob@example.com"]
    assert [p.get_filename() for p in msg.iter_attachments()] == ["invite.ics"]
