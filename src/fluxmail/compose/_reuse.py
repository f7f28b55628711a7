"""The base64 lines of attachment bytes seen recently, so a batch encodes a shared file once.

A batch that attaches the same report to every message would otherwise re-encode it per
message (for a 50 KB PDF that is most of the composer's time). The file is still read per
message, and its bytes are compared *in full* with the remembered ones (a memcmp: a few
microseconds for 50 KB), so what is written is always the encoding of what was just read:
an edited file, even one rewritten with the same size and mtime, is encoded afresh.

Only one-block attachments (``limit`` bytes, under 1 MB) are remembered, at most
``entries`` of them and ``budget`` bytes of encoded text in all; the least recently used
goes first. Thread-safe (a lock around the table, never around the encoding).
"""

from __future__ import annotations

import binascii
import threading
from collections import OrderedDict
from collections.abc import Callable

_Key = tuple[int, bytes, bytes]


def base64_lines(block: bytes | memoryview) -> bytes:
    """Base64 in 76-column CRLF lines (RFC 2045 6.8), each line ending with CRLF."""
    encoded = binascii.b2a_base64(block, newline=False)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    lines.append(b"")
    return b"\r\n".join(lines)


class Base64Reuse:
    """``lines(raw)``: ``encode(raw)``, or the remembered result for equal bytes."""

    def __init__(
        self,
        *,
        entries: int = 8,
        budget: int = 4 << 20,
        limit: int = 1 << 20,
        encode: Callable[[bytes | memoryview], bytes] = base64_lines,
    ) -> None:
        self._entries = entries
        self._budget = budget
        self.limit = limit
        self._encode = encode
        self._table: OrderedDict[_Key, tuple[bytes, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def lines(self, raw: bytes) -> bytes:
        if len(raw) > self.limit or len(raw) < 1024:  # small ones cost nothing to encode
            return self._encode(raw)
        key = (len(raw), raw[:32], raw[-32:])
        with self._lock:
            found = self._table.get(key)
            if found is not None:
                self._table.move_to_end(key)
        if found is not None and found[0] == raw:  # every byte the same: the same lines
            return found[1]
        encoded = self._encode(raw)
        self._remember(key, raw, encoded)
        return encoded

    def _remember(self, key: _Key, raw: bytes, encoded: bytes) -> None:
        with self._lock:
            old = self._table.pop(key, None)
            if old is not None:
                self._size -= len(old[0]) + len(old[1])
            self._table[key] = (raw, encoded)
            self._size += len(raw) + len(encoded)
            while self._table and (len(self._table) > self._entries or self._size > self._budget):
                _, (old_raw, old_encoded) = self._table.popitem(last=False)
                self._size -= len(old_raw) + len(old_encoded)

    def clear(self) -> None:
        with self._lock:
            self._table.clear()
            self._size = 0

    @property
    def size(self) -> int:
        """Bytes held (raw and encoded)."""
        return self._size


SHARED = Base64Reuse()
