"""SMTP replies and EHLO capabilities: pure parsing, no I/O.

:class:`ReplyParser` is fed raw bytes and hands out complete :class:`Reply` values. It
enforces hard caps (line length, lines per reply, bytes per reply) so a hostile server
cannot make the client buffer without bound, and it refuses anything that is not an SMTP
reply line with :class:`~fluxmail.errors.ProtocolError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import NamedTuple

from ..errors import ProtocolError

MAX_LINE = 4096
MAX_LINES = 200
MAX_REPLY = 65536

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


class Reply(NamedTuple):
    """One complete (possibly multi-line) server reply. (A tuple: a pipelined message
    gets four.)"""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The reply text, lines joined with newlines (no codes)."""
        return "\n".join(self.lines)

    @property
    def enhanced_code(self) -> str | None:
        """The RFC 3463 enhanced status code (``5.1.1``) of the first line, if any."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        if match is None or match.group(1) != str(self.code)[0]:
            return None
        return match.group(0)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.lines)}".strip()


class ReplyParser:
    """Incremental reply parser: ``feed(bytes)`` then ``next_reply()`` until ``None``.

    Lines end with CRLF (a bare LF is tolerated). A line is ``NNN`` optionally followed by
    ``-`` (more lines follow) or a space and text; every line of a reply carries the same
    code. Raises :class:`ProtocolError` on garbage or when a cap is exceeded.
    """

    __slots__ = (
        "_buf",
        "_code",
        "_lines",
        "_max_line",
        "_max_lines",
        "_max_reply",
        "_pos",
        "_seen",
        "_size",
    )

    def __init__(
        self, *, max_line: int = MAX_LINE, max_lines: int = MAX_LINES, max_reply: int = MAX_REPLY
    ) -> None:
        self._max_line = max_line
        self._max_lines = max_lines
        self._max_reply = max_reply
        self._buf = b""  # what was received; ``_pos`` is where the unread part starts
        self._pos = 0
        self._lines: list[str] = []
        self._code = 0
        self._size = 0
        # one-line 250 and 354 replies read before, by their bytes (CRLF included): a
        # batch's server says the same "250 2.1.0 Ok" and "354 ..." for every message.
        # Nothing else is kept (an AUTH reply or a refusal may echo what the client
        # said: it must not outlive its exchange, see smtp/_redact.py)
        self._seen: dict[bytes, Reply] = {}

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned reply."""
        return len(self._buf) - self._pos + self._size

    def feed(self, data: bytes) -> None:
        buf = self._buf[self._pos :] + data if self._pos < len(self._buf) else bytes(data)
        self._buf, self._pos = buf, 0
        if len(buf) - buf.rfind(b"\n") - 1 > self._max_line:
            raise ProtocolError(f"server sent a reply line longer than {self._max_line} bytes")

    def discard(self) -> None:
        """Forget everything buffered (after ``220`` to STARTTLS: response injection)."""
        self._buf = b""
        self._pos = 0
        self._lines = []
        self._code = 0
        self._size = 0
        self._seen = {}

    def next_reply(self) -> Reply | None:
        """The next complete reply, or ``None`` if more bytes are needed."""
        buf = self._buf
        while True:
            end = buf.find(b"\n", self._pos)
            if end < 0:
                return None
            raw = buf[self._pos : end]
            self._pos = end + 1
            if (
                not self._lines  # a one-line reply, well formed: the common case
                and len(raw) <= self._max_line
                and raw[3:4] == b" "
                and raw[:3].isdigit()
                and raw[0] in _FIRST_DIGITS
                and self._max_lines >= 1
            ):
                line = raw[:-1] if raw.endswith(b"\r") else raw
                if len(line) + 2 <= self._max_reply:
                    return Reply(int(line[:3]), (line[4:].decode("utf-8", "replace"),))
            reply = self._take_line(raw)
            if reply is not None:
                return reply

    def take(self, wanted: int, into: list[Reply]) -> bool:
        """:func:`collect` (which see): the loop of :meth:`next_reply` over the buffer,
        with its one-line case read in place (a pipelined message has 4 replies)."""
        buf = self._buf
        if self._pos == len(buf):  # nothing unread (before the first read of an exchange)
            return wanted <= len(into)
        append = into.append
        count = wanted - len(into)
        fast = not self._lines and self._max_lines >= 1
        limit = min(self._max_line, self._max_reply - 2)
        while count > 0:
            pos = self._pos
            end = buf.find(b"\n", pos)
            if end < 0:
                return False
            if fast and 4 <= end - pos <= limit and buf[pos + 3] == 32:  # "NNN text"
                line = buf[pos : end + 1]
                reply = self._seen.get(line)
                if reply is None:
                    head = line[:3]
                    if head.isdigit() and head[0] in _FIRST_DIGITS:
                        stop = -2 if line[-2] == 13 else -1
                        reply = Reply(int(head), (line[4:stop].decode("utf-8", "replace"),))
                        if head in _KEPT and len(self._seen) < _SEEN:
                            self._seen[line] = reply  # (the replies that repeat come first)
                if reply is not None:
                    self._pos = end + 1
                    append(reply)
                    count -= 1
                    if reply.code == 421:
                        return True
                    continue
            other = self.next_reply()  # multi-line, garbage, over a cap: the full rules
            if other is None:
                return False
            append(other)
            count -= 1
            if other.code == 421:
                return True
            fast = not self._lines
        return True

    def _take_line(self, raw: bytes) -> Reply | None:
        if len(raw) > self._max_line:
            raise ProtocolError(f"server sent a reply line longer than {self._max_line} bytes")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        head = raw[:3]
        sep = raw[3:4]
        if len(head) != 3 or not head.isdigit() or head[:1] not in b"2345" or sep not in b" -":
            raise ProtocolError(f"server sent something that is not an SMTP reply: {_show(raw)}")
        code = int(head)
        if self._lines and code != self._code:
            raise ProtocolError("server changed the reply code inside a multi-line reply")
        self._code = code
        self._size += len(raw) + 2
        self._lines.append(raw[4:].decode("utf-8", "replace"))
        if len(self._lines) > self._max_lines or self._size > self._max_reply:
            raise ProtocolError(
                f"server reply exceeds {self._max_lines} lines or {self._max_reply} bytes"
            )
        if sep == b"-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._lines = []
        self._size = 0
        return reply


_FIRST_DIGITS = frozenset(b"2345")
_SEEN = 32  # one-line replies a parser remembers (a Reply is immutable: shared safely)
_KEPT = (b"250", b"354")  # the codes of those it may remember


def _show(raw: bytes) -> str:
    return repr(raw[:60]) + ("..." if len(raw) > 60 else "")


@dataclass(frozen=True)
class Capabilities:
    """What the server advertised in its EHLO reply (all false after HELO)."""

    esmtp: bool = False
    keywords: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    auth: frozenset[str] = frozenset()

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        """Parse an EHLO reply; the first line is the server's name, not a keyword."""
        keywords: dict[str, str] = {}
        auth: set[str] = set()
        for line in reply.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            keyword = keyword.upper()
            if keyword.startswith("AUTH="):  # pre-RFC 4954 form: AUTH=LOGIN PLAIN
                params = f"{keyword[5:]} {params}"
                keyword = "AUTH"
            if not keyword:
                continue
            if keyword == "AUTH":
                auth.update(p.upper() for p in params.split())
                params = " ".join(sorted(auth))
            keywords[keyword] = params.strip()
        return cls(esmtp=True, keywords=MappingProxyType(keywords), auth=frozenset(auth))

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @cached_property  # (asked for every message of a batch)
    def pipelining(self) -> bool:
        return self.has("PIPELINING")

    @cached_property
    def starttls(self) -> bool:
        return self.has("STARTTLS")

    @cached_property
    def smtputf8(self) -> bool:
        return self.has("SMTPUTF8")

    @cached_property
    def eightbitmime(self) -> bool:
        return self.has("8BITMIME")

    @cached_property
    def enhanced_status_codes(self) -> bool:
        return self.has("ENHANCEDSTATUSCODES")

    @cached_property
    def max_size(self) -> int | None:
        """The SIZE limit in bytes; ``None`` when not advertised or unlimited (0)."""
        if not self.has("SIZE"):
            return None
        value = self.keywords["SIZE"].split(" ", 1)[0]
        return int(value) if value.isdigit() and int(value) > 0 else None

    @cached_property
    def size(self) -> bool:
        """SIZE was advertised (with or without a limit): MAIL may carry ``SIZE=``."""
        return self.has("SIZE")


def collect(parser: ReplyParser, wanted: int, into: list[Reply]) -> bool:
    """Move complete replies from ``parser`` into ``into``; True when the read is over.

    Over means ``wanted`` replies arrived, or a ``421``: the server is closing and will
    not answer the rest. Bytes beyond what was asked for stay in the parser; a server
    only answers commands, so a caller that finds ``parser.buffered`` afterwards must not
    take them as the answer to its next command (see :func:`out_of_step`).
    """
    return parser.take(wanted, into)


def drain(parser: ReplyParser) -> list[Reply]:
    """Every complete reply the parser holds (what a server sent unasked, such as a
    ``552`` in the middle of DATA); raises ProtocolError on garbage."""
    replies: list[Reply] = []
    while (reply := parser.next_reply()) is not None:
        replies.append(reply)
    return replies


OUT_OF_STEP = (
    "SMTP server {host} sent replies that no command asked for; the connection was "
    "closed rather than trusted further"
)
