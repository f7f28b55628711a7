"""Text for a human's terminal: control characters shown escaped, never obeyed.

Server replies, subjects and addresses may carry ESC (ANSI and OSC sequences that recolour,
retitle or rewrite a terminal, or hide what came before), BEL, C1 controls (U+0080 to
U+009F, among them the one-character CSI) and Unicode bidi overrides (which reorder what a
reader sees). :func:`safe_text` shows each as ``\\xNN`` / ``\\uNNNN``; every place that
prints such text for a person (CLI errors, previews, ``fluxmail serve``) goes through it.
"""

from __future__ import annotations

import re

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROLS = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_CONTROLS_BUT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str, *, lines: bool = False) -> str:
    """``text`` with every control character escaped; ``lines=True`` keeps TAB and LF
    (a multi-line preview), otherwise they are escaped too (one line of output)."""
    pattern = _CONTROLS_BUT_LINES if lines else _CONTROLS
    return pattern.sub(_shown, text)
