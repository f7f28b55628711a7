"""What the replies to a transaction's envelope mean (pure): which recipients were
accepted, refused or deferred (452), and the error that ends the transaction."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import FluxMailException
from ._errors import reply_error
from ._replies import Reply


@dataclass(slots=True)
class Outcome:
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    deferred: list[tuple[str, bytes]] = field(default_factory=list)  # 452: try again
    why_deferred: dict[str, tuple[int, str]] = field(default_factory=dict)
    final: Reply | None = None

    def judge(self, rcpt: tuple[str, bytes], reply: Reply) -> None:
        if reply.code in (250, 251):
            self.accepted.append(rcpt[0])
        elif reply.code == 452:  # "too many recipients": in a further transaction
            self.deferred.append(rcpt)
            self.why_deferred[rcpt[0]] = (reply.code, reply.text)
        else:
            self.refused[rcpt[0]] = (reply.code, reply.text)

    def defer(self, rcpt: tuple[str, bytes], why: tuple[int, str]) -> None:
        self.deferred.append(rcpt)
        self.why_deferred[rcpt[0]] = why

    def all_refused(self) -> dict[str, tuple[int, str]]:
        return {**self.refused, **self.why_deferred}


def judge_envelope(
    rcpts: tuple[tuple[str, bytes], ...], replies: list[Reply], *, host: str
) -> tuple[Outcome, FluxMailException | None, bool]:
    """Judge the replies to a pipelined ``MAIL, RCPT..., DATA`` (see :meth:`Plan.envelope`).

    Returns the recipients' outcome, the error that ends the transaction (or ``None`` when
    the server is waiting for the data), and whether the server opened DATA (354) anyway,
    in which case a lone dot must end the empty message before ``RSET``.
    """
    outcome = Outcome()
    for rcpt, reply in zip(rcpts, replies[1:], strict=False):
        outcome.judge(rcpt, reply)
    data = replies[-1] if len(replies) == len(rcpts) + 2 else None
    data_open = data is not None and data.code == 354
    mail = replies[0]
    closing = closing_reply(replies)
    failure: FluxMailException | None = None
    if closing is not None:  # 421: the server is going away
        stage = "mail" if len(replies) == 1 else "data" if data is not None else "rcpt"
        failure = reply_error(stage, closing, host=host, refused=outcome.refused)
    elif not 200 <= mail.code < 300:
        failure = reply_error("mail", mail, host=host)
    elif not outcome.accepted:
        failure = rcpt_failure(outcome, host)
    elif data is not None and data.code != 354:
        failure = reply_error("data", data, host=host, refused=outcome.refused)
    return outcome, failure, data_open


def closing_reply(replies: list[Reply]) -> Reply | None:
    return replies[-1] if replies and replies[-1].code == 421 else None


def rcpt_failure(outcome: Outcome, host: str) -> FluxMailException:
    refused = outcome.all_refused()
    codes = [code for code, _ in refused.values()]
    code = next((c for c in codes if 400 <= c < 500), codes[0])
    text = next(t for c, t in refused.values() if c == code)
    return reply_error("rcpt", Reply(code, (text,)), host=host, refused=refused)
