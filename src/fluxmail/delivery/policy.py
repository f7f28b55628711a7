"""The delivery policy: what every failure means, in one table (pure).

Every sending path reads this module and nothing else to decide what a failure means:
``send()`` and ``send_async()`` (through the transports), BulkSender and its journal, the
Django backend, and the ``fluxmail.scale`` fleet. For each kind of failure it says

* **retry** -- whether trying the same message again (with backoff, within
  ``max_retries``) is safe and may help;
* **free** -- whether a *reused* connection that failed this way gets one immediate retry
  on a fresh connection, outside ``max_retries``: the server closed the connection while
  it sat idle, which happens before the message was accepted;
* **outcome** -- what is recorded: ``accepted``, ``refused`` (the server said no for
  good), ``deferred`` (not delivered, safe to send again), ``unknown`` (the server may
  have it: never resent unless the user opts in), ``failed`` (not delivered, and trying
  again unchanged gives the same answer; a resumed batch or a new enqueue tries again);
* **stops** -- whether it stops a batch: a configuration problem that would fail every
  message the same way. The batch records the message ``deferred`` (it is not at fault)
  and raises; a fleet worker gives the message back untouched (a worker fault).

=================================  =======  =====  =========  =====  ====================
failure                            retry    free   outcome    stops  raised as
=================================  =======  =====  =========  =====  ====================
anything after the final dot       no       no     unknown    no     OutcomeUnknownError
  (timeout, connection lost,
  garbage or oversized reply)
421 reply (any stage)              yes      yes    deferred   no     SMTPResponseError
other 4xx reply (MAIL, RCPT,       yes      no     deferred   no     SMTPResponseError
  DATA, the final dot)
5xx reply (MAIL, RCPT, DATA, dot)  no       no     refused    no     SMTPResponseError
connection failed or lost before   yes      yes    deferred   no     ConnectError
  the dot (refused, reset, closed,
  4xx greeting or EHLO)
greeting or EHLO refused (5xx)     no       no     failed     no     ConnectError
timeout before the dot             yes      no     deferred   no     SendTimeoutError
TLS refused or impossible          no       no     failed     yes    TLSRequiredError
certificate did not verify         no       no     failed     yes    TLSVerifyError
a reply in the middle of DATA      yes      no     deferred   no     ProtocolError
  (2xx/3xx or garbage before the                                     (transient)
  dot: aborted, the dot never sent)
not SMTP before the dot            no       no     failed     no     ProtocolError
AUTH 4xx, token endpoint down      yes      no     deferred   no     AuthenticationError
credentials refused                no       no     failed     yes    AuthenticationError
Graph 429 or 503 (throttled)       yes      no     deferred   no     GraphThrottledError
Graph 400 and other 4xx            no       no     refused    no     GraphError
Graph 403 or 404 (the mailbox, or  no       no     failed     yes    GraphError
  the app's access to it)
invalid message (local check)      no       no     failed     no     InvalidMessageError
configuration, missing extra       no       no     failed     yes    ConfigurationError,
                                                                     MissingDependencyError
anything else fluxmail raises      no       no     failed     no     FluxMailException
=================================  =======  =====  =========  =====  ====================

A timeout gets no free retry: the server is there but stalling, and a second full
timeout on a new connection would hold the caller twice as long as configured. A batch
also stops when no connection could be opened at all for a message after its retries
(:func:`stops_batch` with ``connected=False``): the server is unusable for every message.

``FluxMailException.transient`` is a fact about one failure, set where it was raised (a
4xx greeting, an HTTP 503 from a token endpoint): this module is the only reader, and
only for the rows that the exception class alone cannot tell apart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    FluxMailException,
    GraphError,
    GraphThrottledError,
    InvalidMessageError,
    MissingDependencyError,
    OutcomeUnknownError,
    ProtocolError,
    SendTimeoutError,
    SMTPResponseError,
    TLSRequiredError,
    TLSVerifyError,
)
from ._retry import retry_delays

__all__ = [
    "RULES",
    "Attempts",
    "Outcome",
    "Rule",
    "free_retry",
    "outcome_of",
    "retryable",
    "row_of",
    "rule_for",
    "stops_batch",
]


class Outcome(str, enum.Enum):
    """What is recorded about a message after a try."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    DEFERRED = "deferred"
    UNKNOWN = "unknown"
    FAILED = "failed"


@dataclass(frozen=True)
class Rule:
    """One row of the table in the module docstring."""

    retry: bool
    free: bool
    outcome: Outcome
    stops: bool


_D, _F = Outcome.DEFERRED, Outcome.FAILED

#: The table: row name -> rule (the same rows as the module docstring, in its order).
RULES: dict[str, Rule] = {
    "after_dot": Rule(retry=False, free=False, outcome=Outcome.UNKNOWN, stops=False),
    "reply_421": Rule(retry=True, free=True, outcome=_D, stops=False),
    "reply_4xx": Rule(retry=True, free=False, outcome=_D, stops=False),
    "reply_5xx": Rule(retry=False, free=False, outcome=Outcome.REFUSED, stops=False),
    "connection": Rule(retry=True, free=True, outcome=_D, stops=False),
    "session_refused": Rule(retry=False, free=False, outcome=_F, stops=False),
    "timeout": Rule(retry=True, free=False, outcome=_D, stops=False),
    "tls": Rule(retry=False, free=False, outcome=_F, stops=True),
    "tls_verify": Rule(retry=False, free=False, outcome=_F, stops=True),
    "early_reply": Rule(retry=True, free=False, outcome=_D, stops=False),
    "protocol": Rule(retry=False, free=False, outcome=_F, stops=False),
    "auth_later": Rule(retry=True, free=False, outcome=_D, stops=False),
    "auth_refused": Rule(retry=False, free=False, outcome=_F, stops=True),
    "graph_throttled": Rule(retry=True, free=False, outcome=_D, stops=False),
    "graph_refused": Rule(retry=False, free=False, outcome=Outcome.REFUSED, stops=False),
    "graph_mailbox": Rule(retry=False, free=False, outcome=_F, stops=True),
    "invalid": Rule(retry=False, free=False, outcome=_F, stops=False),
    "configuration": Rule(retry=False, free=False, outcome=_F, stops=True),
    "other": Rule(retry=False, free=False, outcome=_F, stops=False),
}


def row_of(exc: FluxMailException) -> str:
    """The name of the row of the table that ``exc`` falls under."""
    if isinstance(exc, OutcomeUnknownError):
        return "after_dot"
    if isinstance(exc, SMTPResponseError):
        return _reply_row(exc.smtp_code)
    if isinstance(exc, TLSVerifyError):
        return "tls_verify"
    if isinstance(exc, TLSRequiredError):
        return "tls"
    if isinstance(exc, ProtocolError):  # transient: the server spoke before the dot
        return "early_reply" if exc.transient else "protocol"
    if isinstance(exc, SendTimeoutError):
        return "timeout"
    if isinstance(exc, ConnectError):
        return "connection" if exc.transient else "session_refused"
    if isinstance(exc, AuthenticationError):
        return "auth_later" if exc.transient else "auth_refused"
    if isinstance(exc, GraphError):
        return _graph_row(exc)
    if isinstance(exc, InvalidMessageError):
        return "invalid"
    if isinstance(exc, (ConfigurationError, MissingDependencyError)):
        return "configuration"
    return "other"


def _graph_row(exc: GraphError) -> str:
    if isinstance(exc, GraphThrottledError):
        return "graph_throttled"
    return "graph_mailbox" if exc.status in (403, 404) else "graph_refused"


def _reply_row(code: int) -> str:
    if code == 421:
        return "reply_421"
    if 400 <= code < 500:
        return "reply_4xx"
    if 500 <= code < 600:
        return "reply_5xx"
    return "protocol"  # a 1xx-3xx where an error was due: the server is out of step


def rule_for(exc: BaseException) -> Rule:
    """The rule for ``exc``; anything that is not a fluxmail error is never retried."""
    if not isinstance(exc, FluxMailException):
        return RULES["other"]
    return RULES[row_of(exc)]


def retryable(exc: BaseException) -> bool:
    """True when trying the same message again is safe and may succeed."""
    return rule_for(exc).retry


def free_retry(exc: BaseException, *, reused: bool, still_open: bool) -> bool:
    """True when a reused connection failed because the server had closed it while idle:
    one immediate try on a fresh connection, outside ``max_retries``."""
    return reused and not still_open and rule_for(exc).free


def outcome_of(exc: BaseException) -> Outcome:
    """What is recorded for a message whose try failed with ``exc``."""
    return rule_for(exc).outcome


def stops_batch(exc: BaseException, *, connected: bool = True) -> bool:
    """True when ``exc`` would fail every message the same way, or when no connection
    could be opened at all (``connected=False``) after the message's retries."""
    return rule_for(exc).stops or not connected


class Attempts:
    """When to try one message again (pure): the policy's retry rule with the backoff of
    :mod:`fluxmail.delivery._retry`, and the one free retry of a reused connection."""

    def __init__(self, max_retries: int, retry_delay: float) -> None:
        self._delays = retry_delays(max_retries, retry_delay)
        self._free = True

    def after(self, error: BaseException, *, reused: bool, still_open: bool) -> float | None:
        """Seconds to wait before the next try, or None to stop trying."""
        if self._free and free_retry(error, reused=reused, still_open=still_open):
            self._free = False
            return 0.0
        return next(self._delays, None) if retryable(error) else None
