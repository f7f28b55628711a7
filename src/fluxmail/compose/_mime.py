"""Encoding primitives for the composer: header folding, RFC 2047 encoded words, RFC 2231
parameters, body transfer encodings, boundaries and RFC 5322 dates.

All header helpers return ``str`` lines ending in CRLF; the caller encodes them (ASCII,
or UTF-8 when the message needs SMTPUTF8). Folding only inserts CRLF before an existing
space, so unfolding (removing the CRLF) gives back exactly the value written.

Encoding rules, chosen for exact round trips rather than byte economy:

* A header text is written as-is only when it is printable ASCII, has no leading or
  trailing space, contains no ``=?`` and every word fits on a 78-column line. Otherwise
  the *whole* text becomes RFC 2047 UTF-8 encoded words (Q unless B is clearly shorter),
  each at most 75 characters, never splitting a character. Decoders drop the whitespace
  between adjacent encoded words, so the decoded text is exactly the input.
* Display names: atoms as-is, other printable ASCII as a quoted-string, anything else as
  encoded words.
* File names: ``filename="..."`` when simple, else RFC 2231 ``filename*=utf-8''...``
  (with ``*0*``, ``*1*``... continuations when long); the same for ``name`` on
  Content-Type (RFC 2047 encoded words are not allowed inside a quoted parameter).
* Text bodies (after CRLF normalisation): 7bit when ASCII without NUL and every line is at
  most 998 octets; otherwise quoted-printable when at most 1/6 of the octets are
  non-ASCII, else base64.
"""

from __future__ import annotations

import binascii
import codecs
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

__all__ = [
    "MAX_LINE",
    "address_header",
    "base64_body",
    "boundary",
    "date_header",
    "encoded_words",
    "fold",
    "fold_text",
    "normalize_newlines",
    "param_tokens",
    "text_body",
    "text_charset",
    "unstructured",
]

MAX_LINE = 78
MAX_WORD = 75  # RFC 2047 limit for one encoded word
HARD_LIMIT = 998

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_Q_SAFE = frozenset(_ALNUM + "!*+-/")  # RFC 2047 5(3): safe even inside a phrase
_ATEXT = frozenset(_ALNUM + "!#$%&'*+-/=?^_`{|}~")
_ATTR_CHARS = frozenset(_ALNUM + "!#$&+-.^_`|~")  # RFC 2231 / 5987 attr-char
_ASCII_BYTES = bytes(range(128))
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# --- headers ------------------------------------------------------------------------------


def fold(name: str, tokens: Sequence[str]) -> str:
    """``Name: tok tok...`` + CRLF, breaking before a space when a line would pass 78."""
    out = [name, ":"]
    width = len(name) + 1
    for index, token in enumerate(tokens):
        if index and width + 1 + len(token) > MAX_LINE:
            out.append("\r\n ")
            width = 1
        else:
            out.append(" ")
            width += 1
        out.append(token)
        width += len(token)
    out.append("\r\n")
    return "".join(out)


_WSP = re.compile(r"[ \t]+")


def fold_text(name: str, value: str) -> str:
    """``Name: value`` + CRLF, folded before white space (RFC 5322 2.2.3: spaces or tabs)
    wherever a line would pass 78 characters; unfolding gives back exactly ``value``.

    Each run of white space is folded at most once (FWS allows one CRLF in it), and a
    run is split so that both lines stay within 998 octets when the 78 cannot be kept.
    Raises ``ValueError`` when some line must still pass 998 octets (a word too long).
    """
    words = _WSP.split(value)
    gaps = _WSP.findall(value)
    lines: list[str] = []
    line = f"{name}: {words[0]}"
    for gap, word in zip(gaps, words[1:], strict=True):
        if not word or len(line) + len(gap) + len(word) <= MAX_LINE:
            line += gap + word  # (never a continuation line of white space only)
            continue
        keep = max(0, len(gap) + len(word) - HARD_LIMIT)  # of the run, on this line
        if keep >= len(gap):
            keep = len(gap) - 1  # the word alone is too long: caught below
        lines.append(line + gap[:keep])
        line = gap[keep:] + word
    lines.append(line)
    longest = max(map(len, lines))
    if longest > HARD_LIMIT:
        raise ValueError(
            f"a header line of {longest} octets cannot be folded under {HARD_LIMIT} "
            "octets (RFC 5322 2.1.1; folding needs white space between words)"
        )
    return "\r\n".join(lines) + "\r\n"


def _words(value: str) -> list[str]:
    """Split on single spaces; extra spaces stay glued to the following word."""
    out: list[str] = []
    pending = ""
    for part in value.split(" "):
        if part:
            out.append(pending + part)
            pending = ""
        else:
            pending += " "
    if pending and out:  # trailing spaces stay on the last word
        out[-1] += pending
    return out


def _fits(name: str, words: Sequence[str]) -> bool:
    if not words:
        return True
    first = len(name) + 2 + len(words[0])
    return first <= MAX_LINE and all(len(word) < MAX_LINE for word in words)


def _is_plain(value: str) -> bool:
    return (
        value.isascii()
        and value.isprintable()
        and value[:1] != " "
        and value[-1:] != " "
        and "=?" not in value
    )


def unstructured(name: str, value: str, *, raw_ascii: bool = False) -> str:
    """An unstructured header (Subject, extra headers), folded, RFC 2047 when needed.

    ``raw_ascii`` writes any ASCII value as-is (extra headers may carry structured
    values that encoding would break), folded at its white space (:func:`fold_text`).
    """
    if not value:
        return f"{name}:\r\n"
    if raw_ascii and value.isascii():
        return fold_text(name, value)
    if _is_plain(value):
        if len(name) + 2 + len(value) <= MAX_LINE:  # one line: what folding would give
            return f"{name}: {value}\r\n"
        words = _words(value)
        if _fits(name, words):
            return fold(name, words)
    return fold(name, encoded_words(value, MAX_LINE - len(name) - 2))


def encoded_words(text: str, first: int = MAX_WORD) -> list[str]:
    """``text`` as RFC 2047 UTF-8 encoded words: the first at most ``first`` characters
    (at least 24), the others at most 75. Q unless B is over 20% shorter."""
    first = min(max(first, 24), MAX_WORD) - 12  # minus len("=?utf-8?q?") + len("?=")
    q_costs = [len(_q_char(char)) for char in text]
    octets = [len(char.encode("utf-8")) for char in text]
    b_cost = (sum(octets) + 2) // 3 * 4
    if sum(q_costs) <= b_cost + b_cost // 4:  # Q stays readable; accept it when a bit longer
        pieces = _split(text, q_costs, first, MAX_WORD - 12)
        return ["=?utf-8?q?" + "".join(map(_q_char, piece)) + "?=" for piece in pieces]
    pieces = _split(text, octets, first // 4 * 3, (MAX_WORD - 12) // 4 * 3)
    return [_b_word(piece.encode("utf-8")) for piece in pieces]


def _split(text: str, costs: Sequence[int], first: int, rest: int) -> list[str]:
    """Cut ``text`` into pieces whose summed cost fits ``first`` then ``rest``, between
    characters, preferring a cut just after a space when that leaves the piece at least
    half full. (Some decoders, such as Python's before gh-128110, wrongly keep the
    whitespace between encoded words of a display name; they then show a doubled space
    rather than a space inside a word.)"""
    pieces: list[str] = []
    start = size = 0
    budget = first
    after_space = -1  # index just after the last space in the current piece
    size_there = 0
    for index, cost in enumerate(costs):
        if index > start and size + cost > budget:
            cut = index
            if after_space > start and size - size_there <= budget // 2:
                cut = after_space
            pieces.append(text[start:cut])
            size = size - size_there if cut != index else 0
            start, budget, after_space = cut, rest, -1
        size += cost
        if text[index] == " ":
            after_space, size_there = index + 1, size
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _q_char(char: str) -> str:
    if char in _Q_SAFE:
        return char
    if char == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in char.encode("utf-8"))


def _b_word(octets: bytes) -> str:
    return "=?utf-8?b?" + binascii.b2a_base64(octets, newline=False).decode("ascii") + "?="


def phrase_tokens(name: str, first: int) -> list[str]:
    """A display name as header tokens: atoms, a quoted-string (folded at its spaces) or,
    for non-ASCII text or words too long for a line, encoded words. ``first`` is the room
    left on the line for the first token."""
    if name.isascii() and name.isprintable() and "=?" not in name:
        if _is_plain(name) and "  " not in name and _ATEXT.issuperset(name.replace(" ", "")):
            tokens = name.split(" ")
        else:
            tokens = _words('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"')
        if len(tokens[0]) <= first and all(len(token) < MAX_LINE - 1 for token in tokens):
            return tokens
    return encoded_words(name, first)


def address_header(name: str, addresses: Sequence[tuple[str, str]]) -> str:
    """``Name: a, "B" <b@x>, ...`` from ``(display_name, addr_spec)`` pairs, folded."""
    tokens: list[str] = []
    last = len(addresses) - 1
    for index, (display, spec) in enumerate(addresses):
        if display:
            first = MAX_LINE - len(name) - 2 if index == 0 else MAX_WORD
            part = [*phrase_tokens(display, first), f"<{spec}>"]
        else:
            part = [spec]
        if index < last:
            part[-1] += ","
        tokens.extend(part)
    return fold(name, tokens)


def param_tokens(key: str, value: str) -> list[str]:
    """``key="value"`` as fold tokens, or RFC 2231 (``key*=utf-8''...``, split into
    ``key*0*``... continuations when long) when the value is not simple. Never RFC 2047
    encoded words inside the quotes: RFC 2047 section 5 forbids them there."""
    if _is_plain(value) and '"' not in value and "\\" not in value and "  " not in value:
        token = f'{key}="{value}"'
        if len(token) < MAX_LINE - 2:
            return [token]
    return _rfc2231_tokens(key, value)


def _rfc2231_tokens(key: str, value: str) -> list[str]:
    pieces = [
        char if char in _ATTR_CHARS else "".join(f"%{b:02X}" for b in char.encode("utf-8"))
        for char in value
    ]
    whole = f"{key}*=utf-8''" + "".join(pieces)
    if len(whole) < MAX_LINE - 3:
        return [whole]
    chunks: list[str] = []
    current = "utf-8''"
    for piece in pieces:
        if len(current) + len(piece) > MAX_LINE - 8 - len(key) - len(str(len(chunks))):
            chunks.append(current)
            current = ""
        current += piece
    chunks.append(current)
    last = len(chunks) - 1
    return [f"{key}*{i}*={chunk}{';' if i < last else ''}" for i, chunk in enumerate(chunks)]


def date_header(moment: datetime) -> str:
    """RFC 5322 date-time; a naive datetime is taken as local time."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.astimezone()
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} "
        f"{sign}{hours:02d}{minutes:02d}"
    )


# --- bodies -------------------------------------------------------------------------------


def normalize_newlines(text: str) -> str:
    """CRLF, lone CR and lone LF all become CRLF; non-empty text ends with CRLF."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\n", "\r\n")
    if text and not text.endswith("\r\n"):
        text += "\r\n"
    return text


def text_body(text: str) -> tuple[str, bytes]:
    """``(Content-Transfer-Encoding, payload)`` for a text part; see the module notes."""
    normalized = normalize_newlines(text)
    if normalized.isascii():
        data = normalized.encode("ascii")
        if "\x00" not in normalized and _short_lines(data):
            return "7bit", data
        return "quoted-printable", _quoted_printable(data)
    data = normalized.encode("utf-8")
    if len(data.translate(None, _ASCII_BYTES)) * 6 <= len(data):
        return "quoted-printable", _quoted_printable(data)
    return "base64", base64_body(data)


def _short_lines(data: bytes) -> bool:
    return len(data) <= HARD_LIMIT or max(map(len, data.split(b"\r\n"))) <= HARD_LIMIT


def _quoted_printable(data: bytes) -> bytes:
    # ``data`` ends with CRLF, so b2a_qp sees CRLF line ends and writes CRLF soft breaks.
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)


def base64_body(data: bytes) -> bytes:
    """Base64 in 76-character CRLF lines (RFC 2045 6.8)."""
    if not data:
        return b""
    encoded = binascii.b2a_base64(data, newline=False)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    lines.append(b"")
    return b"\r\n".join(lines)


def text_charset(blocks: Iterable[bytes]) -> str | None:
    """The charset to declare for a text attachment: ``us-ascii`` or ``utf-8`` when the
    bytes decode as such, ``None`` when they do not (then the caller sends them as
    ``application/octet-stream``, as Django does: a reader guessing the charset of a
    ``text/plain`` part shows mojibake)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    ascii_only = True
    try:
        for block in blocks:
            ascii_only = ascii_only and block.isascii()
            if not ascii_only:
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    return "us-ascii" if ascii_only else "utf-8"


def boundary(parts: Sequence[bytes]) -> str:
    """A random boundary found in none of ``parts``.

    ``=_`` cannot occur in quoted-printable or base64 output; the search covers the rest.
    """
    while True:
        candidate = "=_fm_" + os.urandom(12).hex()
        encoded = candidate.encode("ascii")
        if not any(encoded in part for part in parts):
            return candidate
