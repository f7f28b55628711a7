"""Generate the blocking SMTP driver from the asyncio one (httpcore's ``unasync`` idea).

``src/fluxmail/smtp/_async.py`` is the only hand-written driver. This script rewrites it
token by token (``async def`` -> ``def``, ``await x`` -> ``x``, ``AsyncSMTPConnection``
-> ``SMTPConnection``, ``AsyncStream`` -> ``SyncStream``, ...) into ``_sync.py``, then
formats the result with ruff so that it passes the same gates as the rest of the code.

    python scripts/unasync.py           # write src/fluxmail/smtp/_sync.py
    python scripts/unasync.py --check   # exit 1 if _sync.py is not what this makes

Only the substitutions below are made; anything that cannot be written the same way for
both (sockets versus an asyncio Protocol) belongs in the stream modules
(``_async_stream.py``, ``_sync_stream.py``), not in the driver.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "fluxmail" / "smtp" / "_async.py"
TARGET = ROOT / "src" / "fluxmail" / "smtp" / "_sync.py"

#: whole words (identifiers) replaced everywhere, comments and docstrings included
WORDS = {
    "AsyncSMTPConnection": "SMTPConnection",
    "AsyncStream": "SyncStream",
    "_async_stream": "_sync_stream",
    "aopen_with_token": "open_with_token",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "StopAsyncIteration": "StopIteration",
    "__anext__": "__next__",
    "__aiter__": "__iter__",
}
#: keywords: ``async def``/``async with``/``async for`` lose ``async``, ``await`` goes
KEYWORDS = [
    (re.compile(r"\basync (def|with|for)\b"), r"\1"),
    (re.compile(r"\bawait "), ""),
]
WORD = re.compile(r"\b(" + "|".join(re.escape(w) for w in WORDS) + r")\b")

HEADER = (
    "# GENERATED FILE, do not edit: made from _async.py by scripts/unasync.py.\n"
    "# Change _async.py, then run `python scripts/unasync.py` (tests/test_unasync.py\n"
    "# fails when this file is out of date).\n"
    '"""The blocking SMTP driver, :class:`SMTPConnection`: a small loop running the sans-IO\n'
    "conversation over a socket (``SyncStream``). Generated from the asyncio driver\n"
    '(``_async.py``), which documents both."""\n'
)
DOCSTRING = re.compile(r'\A"""(?:.|\n)*?"""\n')


def unasync(source: str) -> str:
    """The blocking twin of ``source`` (its module docstring replaced), unformatted."""
    if not DOCSTRING.match(source):  # pragma: no cover - a guard
        raise SystemExit("unasync: the source must start with its module docstring")
    text = WORD.sub(lambda m: WORDS[m.group(1)], DOCSTRING.sub("", source, count=1))
    for pattern, replacement in KEYWORDS:
        text = pattern.sub(replacement, text)
    _check_no_async(text)
    return HEADER + text


def _check_no_async(text: str) -> None:
    """Refuse a result that still has ``async``/``await`` syntax no rule covered (an
    ``await`` inside parentheses, say)."""
    leftover = (ast.AsyncFunctionDef, ast.Await, ast.AsyncWith, ast.AsyncFor)
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, leftover):
            line = getattr(node, "lineno", "?")
            raise SystemExit(f"unasync: async syntax left at line {line} of the output")


def _ruff(text: str, path: Path, *args: str) -> str:
    command = [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(path), "-"]
    # our own interpreter and arguments, no shell: nothing untrusted is executed
    result = subprocess.run(  # noqa: S603
        command, input=text, capture_output=True, text=True, check=True, cwd=ROOT
    )
    return result.stdout


def formatted(text: str, path: Path) -> str:
    """``text`` with its imports sorted (the renamed stream module moves) and formatted
    as ``ruff format`` writes it, with the project's settings."""
    text = _ruff(text, path, "check", "--select", "I", "--fix", "--quiet", "--exit-zero")
    return _ruff(text, path, "format")


def generate() -> str:
    return formatted(unasync(SOURCE.read_text(encoding="utf-8")), TARGET)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the file is out of date"
    )
    args = parser.parse_args(argv)
    expected = generate()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    if args.check:
        if current != expected:
            print(f"{TARGET.name} is out of date: run python scripts/unasync.py")
            return 1
        return 0
    if current != expected:
        TARGET.write_text(expected, encoding="utf-8")
        print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
