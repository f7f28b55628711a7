"""The BulkSender journal: an append-only JSON-lines file that makes a batch resumable.

``BulkSender(mailer, journal="run.jsonl")`` writes one line per event::

    {"journal": "fluxmail-bulk", "version": 1}                       first line
    {"i": 7, "k": "3f2a...", "s": "sending", "mid": "<...@example.com>"}
    {"i": 7, "k": "3f2a...", "s": "accepted", "mid": "<...@example.com>"}

``i`` is the message's index in the batch, ``k`` a hash of its dict (so a different batch
cannot be mistaken for this one), ``mid`` the Message-ID it is sent with, ``s`` the state:

* ``sending`` -- written (and fsync'ed) *before* the MAIL command: the message may reach
  the server from now on. An entry that stops here had its outcome cut off by a crash.
* ``accepted`` -- the server took it (some recipients may have been refused): done.
* ``refused`` -- the server refused it with a 5xx reply (``code``): done, not resent.
* ``deferred`` -- not delivered (a 4xx reply, a connection failure before the final dot,
  a batch stopped by a configuration problem or interrupted before the message's final
  dot): sent again by the next run.
* ``failed`` -- not delivered, and trying again unchanged would fail the same way (the
  message failed validation, TLS or the credentials were refused, the server did not
  speak SMTP): tried (and reported) again next run. Journals of earlier versions say
  ``invalid`` for a message that failed validation; it reads the same way.
* ``unknown`` -- the connection was lost after the final dot: the server may have it.

A run with an existing journal skips what is done (accepted, refused), sends the rest,
and treats ``sending`` without an outcome like ``unknown``: reported as
``outcome_unknown`` and not sent, unless ``resend_unknown=True``, which sends it again
with the *same* Message-ID (so that receivers that deduplicate can).

Durability: every line is written with one ``os.write`` on an ``O_APPEND`` descriptor, so
once written it survives the process being killed (SIGKILL, OOM). With ``fsync=True``
(the default) the ``sending`` line is also fsync'ed before the message's MAIL command,
which makes it, and every line before it, survive a power loss or OS crash as well.
Outcome lines are not fsync'ed on their own (the next ``sending`` line and the end of the
run do it): after a power loss the newest outcomes may be missing, and their messages
then read as ``sending``, that is unknown -- reported, never silently sent twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, FluxMailException, OutcomeUnknownError
from . import policy

HEADER = {"journal": "fluxmail-bulk", "version": 1}
DONE = frozenset({"accepted", "refused"})
UNKNOWN = frozenset({"sending", "unknown"})
STATES = frozenset({"sending", "accepted", "refused", "deferred", "failed", "invalid", "unknown"})
_HEADER_LINE = (json.dumps(HEADER, separators=(",", ":")) + "\n").encode()


class JournalMismatchError(ConfigurationError):
    """The journal records a different message at this index: it belongs to another
    batch (or the batch changed). Nothing of this message was sent."""

    code = "journal_mismatch"


def outcome_of(exc: FluxMailException) -> str:
    """The journal state of a message that failed with ``exc``: the delivery policy's
    outcome (:mod:`fluxmail.delivery.policy`), whose names are the journal's states."""
    return policy.outcome_of(exc).value


def message_key(spec: Mapping[str, Any]) -> str:
    """A hash of a message dict, stable across runs for the same plain values."""
    text = json.dumps(
        spec, sort_keys=True, default=_plain, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(map(repr, value))
    name = getattr(value, "name", None)  # an open file: its name, not its id()
    if hasattr(value, "read") and isinstance(name, (str, bytes)):
        return {"file": os.fsdecode(name)}
    return f"{type(value).__qualname__}:{value}"


@dataclass
class Entry:
    """What the journal says about one message: its key, Message-ID and last state."""

    key: str
    message_id: str | None
    state: str

    def unknown_error(self, index: int) -> OutcomeUnknownError:
        return OutcomeUnknownError(
            f"message {index} was being sent when an earlier run stopped (or its "
            "connection was lost after the final '.'): the server may have it, so it is "
            "not sent again (BulkSender(..., resend_unknown=True) resends it with the "
            "same Message-ID)",
            message_id=self.message_id,
        )


class Journal:
    """An open journal file (see the module docstring); one run at a time (locked)."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self.entries: dict[int, Entry] = {}
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise ConfigurationError(
                f"journal {self.path!r} cannot be opened: {exc.strerror}"
            ) from exc
        try:
            _lock(self._fd, self.path)
            self._load()
        except BaseException:
            os.close(self._fd)
            raise
        self._dirty = False

    # reading
    def _load(self) -> None:
        """Read and check the whole file before writing anything to it: a file that is
        not a journal of ours is refused untouched (never cut, never given a header)."""
        with os.fdopen(os.dup(self._fd), "rb") as file:
            data = file.read()
        if not data or _HEADER_LINE.startswith(data):  # new, or only a torn header
            self._start(len(data))
            return
        lines = data.split(b"\n")
        complete, torn = lines[:-1], lines[-1]
        if not complete or self._parse(complete[0], 1, header=True) != HEADER:
            raise ConfigurationError(f"{self.path!r} is not a fluxmail bulk journal")
        for number, raw in enumerate(complete[1:], 2):
            self._apply(self._parse(raw, number), number)
        if torn:  # the last write was cut (power loss): it was never acted upon
            os.ftruncate(self._fd, len(data) - len(torn))

    def _start(self, torn: int) -> None:
        if torn:  # the header's own write was cut: the file is ours, and empty
            os.ftruncate(self._fd, 0)
        self._append(HEADER, sync=True)
        if self.fsync:
            _sync_directory(self.path)  # the new file's name survives a power loss too

    def _parse(self, raw: bytes, number: int, *, header: bool = False) -> dict[str, Any]:
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            if header:
                raise ConfigurationError(f"{self.path!r} is not a fluxmail bulk journal")
            raise ConfigurationError(f"journal {self.path!r}: line {number} is damaged")
        return record

    def _apply(self, record: dict[str, Any], number: int) -> None:
        index, key, state = record.get("i"), record.get("k"), record.get("s")
        if not isinstance(index, int) or not isinstance(key, str) or state not in STATES:
            raise ConfigurationError(f"journal {self.path!r}: line {number} is damaged")
        mid = record.get("mid")
        previous = self.entries.get(index)
        if previous is not None and previous.key != key:
            raise ConfigurationError(
                f"journal {self.path!r}: line {number} contradicts an earlier line"
            )
        self.entries[index] = Entry(key, mid if isinstance(mid, str) else None, state)

    def check(self, index: int, key: str) -> Entry | None:
        """The entry for message ``index``, if any; raises JournalMismatchError when the
        journal recorded a different message there."""
        entry = self.entries.get(index)
        if entry is not None and entry.key != key:
            raise JournalMismatchError(
                f"journal {self.path!r} recorded a different message at index {index}: "
                "it belongs to another batch (or the batch changed); use a new journal "
                "file for a new batch"
            )
        return entry

    # writing
    def sending(self, index: int, key: str, message_id: str) -> None:
        """Record that message ``index`` is about to be sent (before MAIL); durable."""
        self.entries[index] = Entry(key, message_id, "sending")
        self._append({"i": index, "k": key, "s": "sending", "mid": message_id}, sync=True)

    def outcome(self, index: int, state: str, *, code: int | str | None = None) -> None:
        """Record how message ``index`` ended (see the module docstring)."""
        entry = self.entries.get(index)
        if entry is None:  # failed validation before anything was recorded
            return
        entry.state = state
        record: dict[str, Any] = {"i": index, "k": entry.key, "s": state}
        if entry.message_id:
            record["mid"] = entry.message_id
        if code is not None:
            record["code"] = code
        self._append(record, sync=False)

    def _append(self, record: Mapping[str, Any], *, sync: bool) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8", "surrogatepass")
        written = os.write(self._fd, data)
        if written != len(data):  # only a full disk does this to a regular file
            raise OSError(f"journal {self.path!r}: short write")
        self._dirty = True
        if sync and self.fsync:
            os.fsync(self._fd)
            self._dirty = False

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            if self._dirty and self.fsync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1


def _sync_directory(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse it
        pass
    finally:
        os.close(fd)


def _lock(fd: int, path: str) -> None:
    """An exclusive lock for the run (advisory; POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise ConfigurationError(f"journal {path!r} is in use by another BulkSender run") from exc
