"""The SMTP client conversation, sans-IO (in the spirit of h11).

The conversation is written as generators that yield I/O actions (see ``_actions``)
and receive the parsed replies back; drivers (``_sync``, ``_async``) execute them.
Everything here is pure and unit-testable without sockets.

A message goes through :func:`plan_message` (checks and bytes) and a transaction. The
envelope commands of a plan are plain bytes, so when the server offers PIPELINING a bulk
sender writes the next message's MAIL/RCPT/DATA right behind the previous message's
final dot in one write (RFC 2920: one round trip per message). See
:meth:`Session.send_message` and its ``pipeline`` argument, and :class:`Ahead`.

All protocol state lives in the :class:`Session` (as h11 keeps it in its state machine):
drivers report what happened to an action (a :class:`~._actions.Failure`), and the
session decides what it means. Per message it knows whether the final dot may have
reached the server (:attr:`Session.phase`, kept by ``_transfer.Transfer``): every
failure after that point is ``outcome_unknown``; any reply that arrives before it
aborts the transaction (the driver stops writing, the dot is never written, the
connection is dropped), which is a failure before the dot and safe to retry. See
docs/errors.md, "Where the final dot is".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..envelope import Composed, frozen_from
from ..errors import (
    AuthenticationError,
    ConnectError,
    FluxMailException,
    ProtocolError,
    SMTPResponseError,
    TLSRequiredError,
)
from ._actions import Action, Answer, Conversation, Exchange, Failure, NextMessage, StartTLS
from ._auth import AUTHENTICATORS, Credentials
from ._errors import reply_error
from ._hints import attach
from ._hints import make as make_hint
from ._options import SmtpConfig
from ._outcome import Outcome, closing_reply, judge_envelope, rcpt_failure
from ._plan import Plan, check_envelope, command, plan_message
from ._replies import Capabilities, Reply
from ._results import SendResult, SessionInfo
from ._transfer import Phase, Transfer

__all__ = ["Ahead", "Session", "Upcoming", "check_envelope", "command", "plan_message"]

_NEXT_MESSAGE = NextMessage()


@dataclass(slots=True)  # (not a tuple: see Exchange; not frozen: a setattr call per field)
class Ahead:
    """The next message's envelope, written behind the previous message's final dot, and
    the server's replies to it. The server is then inside that message's transaction
    (possibly in DATA): the only way on is to send that message (or drop the connection;
    a lone dot would deliver an empty message)."""

    composed: Composed
    plan: Plan
    replies: list[Reply]


Upcoming = Callable[[], Composed | None]
"""Asked once, right before a message's final dot is written: the next message to write
ahead behind it, or ``None``. What it returns must be the next message sent. The driver
calls it when the conversation yields :class:`~._actions.NextMessage`."""


# --- the session ----------------------------------------------------------------------


class Session:
    """The pure state and conversations of one SMTP client session.

    ``closing`` turns true when the server said ``421`` or a clean reset failed: the
    driver must then drop the connection.
    """

    def __init__(self, config: SmtpConfig, token: str | None = None) -> None:
        self.config = config
        self.credentials = Credentials.of(config, token)  # token: the OAuth2 access token
        self.host = config.host
        self.greeting: Reply | None = None
        self.caps = Capabilities()
        self.tls = False
        self.authenticated = False
        self.auth_mechanism: str | None = None
        self.closing = False
        self.ahead: Ahead | None = None  # see send_message(pipeline=True)
        self.transfer = Transfer(config)  # where the current message's data is

    @property
    def phase(self) -> Phase:
        """Where the current message is (see :class:`~._transfer.Transfer`)."""
        return self.transfer.phase

    def ask(self, exchange: Exchange) -> Conversation[list[Reply]]:
        """Yield one exchange; note a ``421`` (the server is closing).

        A failure the driver reports ends the session (the driver drops the connection)
        and becomes the fluxmail error it means here (see :class:`~._transfer.Transfer`).
        Every reply, and every error made here (which may quote a reply line), has each
        form of the credentials redacted, before anything keeps it (see ``_redact``).
        """
        secrets = self.credentials.secrets
        error: FluxMailException | None = None
        self.transfer.starting(exchange)
        try:
            answer = yield exchange
        except Failure as failure:
            self.closing = True
            try:
                answer = self.transfer.failed(exchange, failure)
            except FluxMailException as exc:
                error = secrets.exception(exc)
                if error is exc:
                    raise
            if error is not None:
                # outside that handler, so the unredacted error is not the redacted one's context
                raise error from error.__cause__
        else:
            self.transfer.answered()
        assert isinstance(answer, list)
        answer = secrets.replies(answer)
        if closing_reply(answer) is not None:
            self.closing = True
        return answer

    def _act(self, action: Action, stage: str) -> Conversation[None]:
        """Yield an action that reads no reply (a TLS handshake)."""
        try:
            yield action
        except Failure as failure:
            self.closing = True
            cause = failure.cause
            if isinstance(cause, FluxMailException):
                raise cause from cause.__cause__
            raise self.transfer.io_error(stage, cause) from cause

    def _one(self, exchange: Exchange) -> Conversation[Reply]:
        replies = yield from self.ask(exchange)
        return replies[0]

    # opening
    def handshake(self) -> Conversation[None]:
        """Greeting, EHLO (HELO fallback), STARTTLS and AUTH as configured."""
        greeting = yield from self._one(Exchange(b"", 1, "greeting"))
        if greeting.code != 220:
            raise reply_error("greeting", greeting, host=self.host)
        self.greeting = greeting
        yield from self._hello()
        if self.config.use_tls:
            yield from self._starttls()
        if self.config.wants_auth:
            yield from self._authenticate()

    def _hello(self) -> Conversation[None]:
        name = self.config.ehlo_name
        reply = yield from self._one(Exchange(command("EHLO", name), 1, "ehlo"))
        if reply.code == 250:
            self.caps = Capabilities.from_ehlo(reply)
            return
        if not 500 <= reply.code < 600:
            raise reply_error("ehlo", reply, host=self.host)
        reply = yield from self._one(Exchange(command("HELO", name), 1, "helo"))
        if reply.code != 250:
            raise reply_error("helo", reply, host=self.host)
        self.caps = Capabilities()

    def _starttls(self) -> Conversation[None]:
        if not self.caps.starttls:
            raise attach(
                TLSRequiredError(
                    f"SMTP server {self.host} does not offer STARTTLS and fluxmail never "
                    "continues in plaintext"
                ),
                make_hint("starttls_not_offered"),
            )
        reply = yield from self._one(Exchange(b"STARTTLS\r\n", 1, "starttls"))
        if reply.code != 220:
            raise reply_error("starttls", reply, host=self.host)
        yield from self._act(StartTLS(), "tls")
        self.tls = True
        self.caps = Capabilities()  # forget what was said in plaintext
        yield from self._hello()

    def _authenticate(self) -> Conversation[None]:
        config = self.config
        if not self.tls and not config.allow_insecure_auth:
            raise attach(
                TLSRequiredError("refusing to send credentials over a connection without TLS"),
                make_hint("insecure_auth"),
            )
        offered = self.caps.auth
        if not offered:
            raise AuthenticationError(f"SMTP server {self.host} does not offer AUTH")
        creds = self.credentials
        mechanism = next((m for m in creds.mechanisms if m in offered), None)
        if mechanism is None:
            raise AuthenticationError(
                f"SMTP server {self.host} offers AUTH {' '.join(sorted(offered))}; fluxmail "
                f"supports {', '.join(creds.mechanisms)}"
                + (" with an OAuth2 token" if creds.oauth else "")
            )
        if creds.oauth and not creds.secret:
            raise AuthenticationError("no OAuth2 access token to authenticate with")
        reply = yield from AUTHENTICATORS[mechanism](self.ask, creds)
        if reply.code == 334:  # the server wants more: cancel the exchange (RFC 4954)
            reply = yield from self._one(Exchange(b"*\r\n", 1, "auth"))
            reply = reply if reply.code != 235 else Reply(535, ("authentication cancelled",))
        if reply.code != 235:
            raise reply_error("auth", reply, host=self.host)
        self.authenticated = True
        self.auth_mechanism = mechanism

    def info(self, *, port: int, connect_ms: float, tls: tuple[str, str] | None) -> SessionInfo:
        caps = self.caps
        return SessionInfo(
            host=self.host,
            port=port,
            greeting=self.greeting.text if self.greeting else "",
            esmtp=caps.esmtp,
            tls_version=tls[0] if tls else None,
            cipher=tls[1] if tls else None,
            authenticated=self.authenticated,
            auth_mechanism=self.auth_mechanism,
            max_size=caps.max_size,
            pipelining=caps.pipelining,
            smtputf8=caps.smtputf8,
            eightbitmime=caps.eightbitmime,
            capabilities=caps.keywords,
            connect_ms=connect_ms,
        )

    # sending
    def send_message(self, composed: Composed, pipeline: bool = False) -> Conversation[SendResult]:
        """One message: a transaction, then more for recipients deferred with 452.

        With ``pipeline`` and a server that offers PIPELINING, the conversation asks for
        the next message (:class:`~._actions.NextMessage`) right before the final dot;
        that message's envelope is written in the same write as this final dot (see
        :class:`Ahead`), its replies wait in ``self.ahead`` for the call that sends it.
        """
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead.composed is not composed:
            raise ProtocolError(f"the envelope in flight to {self.host} is another message's")
        plan = (
            ahead.plan if ahead is not None else plan_message(self.caps, composed, host=self.host)
        )
        first = yield from self.transaction(plan, plan.rcpts, ahead, pipeline)
        assert first.final is not None
        accepted, refused = list(first.accepted), dict(first.refused)
        pending = first.deferred
        while pending:  # each round accepts at least one recipient, or stops
            try:
                more = yield from self.transaction(plan, tuple(pending), None, pipeline)
            except SMTPResponseError as exc:
                lost = {a: (exc.smtp_code, exc.server_message) for a, _ in pending}
                refused.update(exc.refused or lost)
                break
            except ConnectError as exc:  # before the dot: not delivered to these
                refused.update({a: (421, f"not delivered: {exc.message}") for a, _ in pending})
                break
            accepted += more.accepted
            refused.update(more.refused)
            pending = more.deferred
        result = {
            "message_id": plan.message_id,
            "accepted": tuple(accepted),
            "refused": refused,
            "smtp_code": first.final.code,
            "server_message": first.final.text,
        }
        return frozen_from(SendResult, result)  # (SendResult() costs a setattr per field)

    def transaction(
        self,
        plan: Plan,
        rcpts: tuple[tuple[str, bytes], ...],
        ahead: Ahead | None = None,
        pipeline: bool = False,
    ) -> Conversation[Outcome]:
        """MAIL, RCPTs, DATA (pipelined when offered), the payload, the final reply.

        ``ahead``: the envelope already went out behind the previous final dot, with these
        replies. ``pipeline``: ask for the next message and write its envelope behind this
        final dot when this is the message's last transaction and the server offers
        PIPELINING.
        """
        if ahead is not None or self.caps.pipelining:
            if ahead is not None:  # its replies are in: judged without another exchange
                replies = ahead.replies
            else:
                exchange = Exchange(plan.envelope(rcpts), len(rcpts) + 2, "mail")
                replies = yield from self.ask(exchange)
            outcome, failure, data_open = judge_envelope(rcpts, replies, host=self.host)
            if failure is not None:
                yield from self._reset(self.closing, data_open=data_open)
                raise failure
        else:
            outcome = yield from self._stepwise_envelope(plan, rcpts)
        following = None
        if pipeline and self.caps.pipelining and not outcome.deferred:
            try:  # the driver answers with the caller's upcoming() (see _plan_ahead)
                upcoming = yield _NEXT_MESSAGE
            except BaseException:
                self.closing = True
                raise
            following = self._plan_ahead(upcoming)
        log = f"<message data: {plan.size} bytes> ."
        # (positional, in Exchange's field order: data, replies, stage, log, message_id,
        # tail, ahead, guarded; binding keywords costs more than the rest of the call)
        if following is None:
            exchange = Exchange(plan.payload, 1, "dot", log, plan.message_id, plan.tail, 0, True)
        else:
            next_replies = len(following[1].rcpts) + 2
            tail = plan.tail + following[1].envelope(following[1].rcpts)
            exchange = Exchange(
                plan.payload,
                1 + next_replies,
                "dot",
                log,
                plan.message_id,
                tail,
                next_replies,
                True,
            )
        replies = yield from self.ask(exchange)
        final = replies[0]
        if following is not None:
            self.ahead = Ahead(following[0], following[1], replies[1:])
            if len(replies) < exchange.replies:  # lost (or 421) before the next's replies
                self.closing = True
        if not 200 <= final.code < 300:
            if following is None:
                yield from self._reset(final.code == 421)
            # else: the reply ended this transaction and the next MAIL started another
            raise reply_error("dot", final, host=self.host, refused=outcome.refused)
        outcome.final = final
        return outcome

    def lost_ahead(self, composed: Composed) -> FluxMailException | None:
        """The envelope of ``composed`` went out ahead, but the server closed the session
        before its transaction could go on: the error for ``composed`` (a 421, or None
        for the driver to say how the connection ended). Nothing of its data was sent."""
        ahead = self.ahead
        if ahead is None or ahead.composed is not composed or not self.closing:
            return None
        self.ahead = None
        replies, lost = ahead.replies, self.transfer.take_ahead_lost()
        if replies and replies[-1].code == 421:
            return judge_envelope(ahead.plan.rcpts, replies, host=self.host)[1]
        return lost

    def _plan_ahead(self, composed: Answer) -> tuple[Composed, Plan] | None:
        """The next message (what the driver answered to :class:`NextMessage`: the
        caller's ``upcoming()``) and its plan, or None (none, or it fails its checks:
        then it fails on its own when it is sent, before anything of it is written).

        If ``upcoming()`` raised, the server is waiting for this message's data, which
        must never be ended now: the session is over (the driver drops the connection)
        and the error goes on (see :meth:`transaction`)."""
        if composed is None:
            return None
        assert isinstance(composed, Composed)
        try:
            return composed, plan_message(self.caps, composed, host=self.host)
        except FluxMailException:
            return None

    def _stepwise_envelope(
        self, plan: Plan, rcpts: tuple[tuple[str, bytes], ...]
    ) -> Conversation[Outcome]:
        mail = yield from self._one(Exchange(plan.mail, 1, "mail"))
        if not 200 <= mail.code < 300:
            yield from self._reset(self.closing)
            raise reply_error("mail", mail, host=self.host)
        outcome = Outcome()
        for rcpt in rcpts:
            if outcome.deferred:  # the server said "too many": keep the rest for later
                outcome.defer(rcpt, outcome.why_deferred[outcome.deferred[0][0]])
                continue
            reply = yield from self._one(Exchange(rcpt[1], 1, "rcpt"))
            if reply.code == 421:
                raise reply_error("rcpt", reply, host=self.host, refused=outcome.refused)
            outcome.judge(rcpt, reply)
        if not outcome.accepted:
            yield from self._reset(False)
            raise rcpt_failure(outcome, self.host)
        data = yield from self._one(Exchange(b"DATA\r\n", 1, "data"))
        if data.code != 354:
            yield from self._reset(self.closing)
            raise reply_error("data", data, host=self.host, refused=outcome.refused)
        return outcome

    def _reset(self, closing: bool, *, data_open: bool = False) -> Conversation[None]:
        """Best effort RSET after a failed transaction so the connection can be reused.

        ``data_open``: the server answered 354 although the transaction failed (possible
        with pipelining), so an empty message is ended with a lone dot first.
        """
        if closing or self.closing:
            self.closing = True
            return
        data = b".\r\nRSET\r\n" if data_open else b"RSET\r\n"
        try:
            replies = yield from self.ask(Exchange(data, 2 if data_open else 1, "rset"))
        except ConnectError:
            self.closing = True
            return
        if not replies or replies[-1].code != 250 or len(replies) < (2 if data_open else 1):
            self.closing = True

    def quit(self) -> Conversation[None]:
        yield from self.ask(Exchange(b"QUIT\r\n", 1, "quit"))
