"""One rule for taking secrets out of text that a server sent back.

A server can echo what it was sent, and rarely in the form it was given: an OAuth2
token endpoint that quotes its request form shows ``client_secret=cs-Sup3r%2FSecret``,
a JSON error may escape ``/`` as ``\\/``, a SASL exchange carries base64. :class:`Secrets`
knows every such form of each secret; :func:`redact` replaces each with ``[redacted]``.

Matching ignores case (a URL-encoding may come back as ``%2f``); redacting a little more
than needed is harmless. Base64 forms are matched with and without ``=`` padding, in the
standard and the URL-safe alphabet.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "Secrets", "redact"]

REDACTED = "[redacted]"


def _forms(secret: str) -> set[str]:
    """``secret`` raw, URL-encoded (``quote``, with and without ``/`` kept, and
    ``quote_plus``), JSON-escaped, and base64-encoded."""
    forms = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}
    escaped = json.dumps(secret)[1:-1]
    forms |= {escaped, escaped.replace("/", "\\/")}
    data = secret.encode()
    for encoded in (base64.b64encode(data), base64.urlsafe_b64encode(data)):
        text = encoded.decode("ascii")
        forms |= {text, text.rstrip("=")}
    return {form for form in forms if form}


class Secrets:
    """The forms of some secrets; never shown by ``repr``."""

    __slots__ = ("_forms", "_pattern")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= _forms(secret)
        self._forms = frozenset(forms)
        longest_first = sorted(forms, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(map(re.escape, longest_first)), re.IGNORECASE)
            if longest_first
            else None
        )

    def __repr__(self) -> str:
        return f"Secrets(<{len(self._forms)} forms hidden>)"

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __contains__(self, text: object) -> bool:
        return text in self._forms


def redact(text: str, secrets: Secrets) -> str:
    """``text`` with every form of every secret replaced by ``[redacted]``."""
    pattern = secrets._pattern
    return text if pattern is None else pattern.sub(REDACTED, text)
