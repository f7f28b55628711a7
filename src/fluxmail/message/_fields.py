"""Validation of the non-address fields of ``create()``: pure checks that return clean values.

Every check raises a :class:`~fluxmail.errors.FluxMailException` subclass whose message
starts with the field name (``subject``, ``references[1]``, ``headers['X-Tag']``...).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Literal, cast

from ..compose._mime import fold_text
from ..errors import InvalidMessageError, MissingDependencyError
from ._address import check_text

__all__ = [
    "RESERVED_HEADERS",
    "check_body",
    "check_cid",
    "check_extra_headers",
    "check_msg_id",
    "check_priority",
    "check_references",
    "check_subject",
    "check_unsubscribe_url",
    "inline_css",
]

Priority = Literal["high", "normal", "low"]
_PRIORITIES: frozenset[str] = frozenset({"high", "normal", "low"})

#: Headers that fluxmail writes itself; ``headers=`` may not set them. ``Sender`` and
#: ``Return-Path`` are refused too: the first would need address validation, the second
#: belongs to the receiving server.
RESERVED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "reply-to", "sender", "return-path", "subject", "date",
        "message-id", "in-reply-to", "references", "mime-version", "x-priority",
        "x-msmail-priority", "importance", "list-unsubscribe", "list-unsubscribe-post",
    }
)  # fmt: skip
_HEADER_NAME_CHARS = frozenset(chr(c) for c in range(33, 127)) - {":"}
_CID_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+@$=!~*'&#%^"
)
MAX_MSG_ID = 900
MAX_URL = 900


def _require_str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidMessageError(f"{field}: expected a string, got {type(value).__name__}")
    return value


def check_subject(subject: object) -> str:
    """Any text without CR/LF/NUL or other control characters (TAB allowed)."""
    text = _require_str(subject, "subject")
    check_text(text, "subject")
    return text


def check_body(body: object, field: str) -> str:
    """Any text; line endings are normalised at compose time. Lone surrogates are refused."""
    text = _require_str(body, field)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidMessageError(f"{field}: not valid text ({exc.reason})") from exc
    return text


def check_priority(priority: object) -> Priority | None:
    if priority is None:
        return None
    if isinstance(priority, str):
        check_text(priority, "priority")  # CR, LF, NUL: refused, not stripped
    if isinstance(priority, str) and priority.strip().lower() in _PRIORITIES:
        return cast(Priority, priority.strip().lower())
    raise InvalidMessageError(f"priority: expected 'high', 'normal' or 'low', got {priority!r}")


def check_unsubscribe_url(url: object) -> str | None:
    """An ``https://`` URL with a host, ASCII, without spaces or angle brackets."""
    if url is None:
        return None
    text = _require_str(url, "unsubscribe_url")
    check_text(text, "unsubscribe_url")
    if not text.isascii() or any(c.isspace() or c in '<>"\\' or c == "\x7f" for c in text):
        raise InvalidMessageError(
            "unsubscribe_url: spaces, quotes, '<', '>' and non-ASCII characters must be "
            "percent-encoded"
        )
    if len(text) > MAX_URL:
        raise InvalidMessageError(f"unsubscribe_url: longer than {MAX_URL} characters")
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError as exc:
        raise InvalidMessageError(f"unsubscribe_url: not a valid URL ({exc})") from exc
    if parts.scheme.lower() != "https" or not host:
        raise InvalidMessageError(
            f"unsubscribe_url: must be an https:// URL with a host (RFC 8058), got {text!r}"
        )
    return text


def new_message_id(host: str) -> str:
    """A fresh ``<time.random@host>`` (``host`` already in its ASCII form): the one
    format of every Message-ID fluxmail makes (composer, prebuilt messages, the fleet).

    The left side is the time in microseconds (hex) and 64 random bits (16 hex digits),
    taken from random bytes drawn 4 KB at a time (one system call per 512 ids, not one
    per id; drawn afresh in a forked child), so ids are unique and say nothing about
    each other."""
    global _ID_HEX, _ID_LEFT
    with _ID_LOCK:
        if not _ID_LEFT:
            _ID_HEX, _ID_LEFT = os.urandom(4096).hex(), 8192
        _ID_LEFT -= 16  # each id takes the next 16 hex digits, never used again
        random = _ID_HEX[_ID_LEFT : _ID_LEFT + 16]
    return f"<{time.time_ns() // 1000:x}.{random}@{host}>"


_ID_HEX = ""  # 4 KB of random bytes, in hex; the last _ID_LEFT digits are not used yet
_ID_LEFT = 0
_ID_LOCK = threading.Lock()


def _forget_ids() -> None:
    global _ID_LOCK, _ID_HEX, _ID_LEFT
    _ID_HEX, _ID_LEFT = "", 0  # (the parent's bytes: a child must not make the parent's ids)
    _ID_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_ids)


def check_msg_id(value: object, field: str) -> str:
    """A message identifier ``<left@right>``: ASCII, no whitespace, angle brackets required."""
    text = _require_str(value, field)
    check_text(text, field)
    inner = text[1:-1]
    if (
        len(text) < 5
        or text[0] != "<"
        or text[-1] != ">"
        or not text.isascii()
        or not text.isprintable()
        or any(c.isspace() or c in '<>"\\' for c in inner)
        or "@" not in inner[1:-1]
    ):
        raise InvalidMessageError(
            f"{field}: expected a message id like <unique@example.com>, got {text!r}"
        )
    if len(text) > MAX_MSG_ID:
        raise InvalidMessageError(f"{field}: longer than {MAX_MSG_ID} characters")
    return text


def check_references(value: object) -> tuple[str, ...]:
    """A string of whitespace-separated message ids, or a sequence of them."""
    if value is None:
        return ()
    if isinstance(value, str):
        check_text(value, "references")
        return tuple(
            check_msg_id(item, f"references[{index}]") for index, item in enumerate(value.split())
        )
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise InvalidMessageError(
            f"references: expected a list of message ids, got {type(value).__name__}"
        )
    return tuple(check_msg_id(item, f"references[{i}]") for i, item in enumerate(value))


def check_cid(name: object, field: str) -> str:
    """A Content-ID (without the angle brackets) for ``cid:`` references in HTML."""
    text = _require_str(name, field)
    check_text(text, field)
    if not text or len(text) > 200 or not _CID_CHARS.issuperset(text):
        raise InvalidMessageError(
            f"{field}: a CID name uses letters, digits and ._-+@ only (no spaces or "
            f"angle brackets), got {text!r}"
        )
    return text


def check_extra_headers(headers: object) -> tuple[tuple[str, str], ...]:
    """``{name: value}`` extra headers; names are ASCII tokens not in RESERVED_HEADERS.

    Values may be non-ASCII (sent as RFC 2047 encoded words, which suits unstructured
    headers only). Leading and trailing whitespace of values is insignificant in email
    headers and is dropped.
    """
    if headers is None:
        return ()
    if not isinstance(headers, Mapping):
        raise InvalidMessageError(
            f"headers: expected a mapping of name to value, got {type(headers).__name__}"
        )
    out: list[tuple[str, str]] = []
    for name, value in headers.items():
        field = f"headers[{name!r}]"
        name = _require_str(name, "headers")
        check_text(name, field)
        if not name or len(name) > 70 or not _HEADER_NAME_CHARS.issuperset(name):
            raise InvalidMessageError(
                f"{field}: a header name is printable ASCII without ':' or spaces"
            )
        lower = name.lower()
        if lower in RESERVED_HEADERS or lower.startswith("content-"):
            raise InvalidMessageError(
                f"{field}: fluxmail sets {name} itself; use the matching create() argument"
            )
        value = _require_str(value, field)
        check_text(value, field)
        value = value.strip(" \t")
        if value.isascii():  # written as is: it must fold under 998 octets (here, not
            try:  # after the connection is open)
                fold_text(name, value)
            except ValueError as exc:
                raise InvalidMessageError(f"{field}: {exc}") from None
        out.append((name, value))
    return tuple(out)


def inline_css(html: str) -> str:
    """Move ``<style>`` rules into ``style=`` attributes with css-inline (never fetches
    remote stylesheets)."""
    try:
        import css_inline
    except ImportError as exc:
        raise MissingDependencyError("inline_css", "css", "css-inline") from exc
    try:
        inliner = css_inline.CSSInliner(load_remote_stylesheets=False)
        result = inliner.inline(html)
    except ValueError as exc:
        raise InvalidMessageError(f"body: CSS inlining failed: {exc}") from exc
    return str(result)
