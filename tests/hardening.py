"""Helpers shared by the hardening tests (``test_hardening_*.py``, ``test_journal.py``,
``test_load.py``): one calling style for sync and async sends, batches, and the
"nothing lost" check. Everything runs against the real servers of ``servers.py``."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Iterable
from typing import Any

from fluxmail import BulkSender, FluxMail, FluxMailException

MODES = ["sync", "async"]


def send(mailer: FluxMail, mode: str, **create: Any) -> str:
    """``create(**create)`` then ``send()`` or ``send_async()``."""
    mailer.create(**create)
    if mode == "sync":
        return mailer.send()
    return asyncio.run(mailer.send_async())


def send_created(mailer: FluxMail, mode: str) -> str:
    """``send()`` or ``send_async()`` the message of the last ``create()``."""
    if mode == "sync":
        return mailer.send()
    return asyncio.run(mailer.send_async())


def run_batch(mailer: FluxMail, messages: Any, mode: str, **options: Any) -> Any:
    """``BulkSender(mailer, **sender_options).send_batch(...)`` or its async twin;
    ``connections`` and ``journal*``/``resend_unknown`` go to the BulkSender."""
    sender_keys = ("connections", "journal", "journal_fsync", "resend_unknown")
    sender_options = {k: options.pop(k) for k in sender_keys if k in options}
    sender = BulkSender(mailer, **sender_options)
    options.setdefault("progress", False)
    if mode == "sync":
        return sender.send_batch(messages, **options)
    return asyncio.run(sender.send_batch_async(messages, **options))


def batch(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "subject": f"message {i}",
            "recipients": [f"user{i}@example.com"],
            "body": f"Hello {i}!",
            "sender": "noreply@example.com",
            **extra,
        }
        for i in range(count)
    ]


def assert_nothing_lost(
    result: Any, accepted_ids: Iterable[str], total: int, *, earlier: int = 0
) -> None:
    """accepted + reported failures (+ what a journal says earlier runs finished) = input,
    and the distinct Message-IDs the server accepted = accepted now + ``earlier``."""
    assert result["total"] == total
    assert result["sent"] + result["failed"] + result.get("skipped", 0) == total
    assert len(result["errors"]) == result["failed"]
    assert all(isinstance(exc, FluxMailException) for _, exc in result["errors"])
    assert len(set(accepted_ids)) == result["sent"] + earlier


def assert_clean_wire(raw: bytes) -> None:
    """DATA as written on the wire: CRLF line ends only (no bare CR or LF), no line over
    998 octets (plus a stuffing dot), and the only lone dot is the terminator."""
    assert raw.endswith(b"\r\n.\r\n") or raw == b".\r\n", raw[-20:]
    body = raw[:-3]
    assert body.count(b"\r") == body.count(b"\n") == body.count(b"\r\n"), "bare CR or LF"
    assert not body.startswith(b".\r\n")
    assert b"\r\n.\r\n" not in body, "a lone dot before the end"
    longest = max((len(line) for line in body.split(b"\r\n")), default=0)
    assert longest <= 999, f"a line of {longest} octets"


def everything_about(exc: BaseException) -> str:
    """str, repr and the whole traceback with every chained cause."""
    return "\n".join(
        [str(exc), repr(exc), *traceback.format_exception(type(exc), exc, exc.__traceback__)]
    )
