"""The blocking driver is generated from the asyncio one (scripts/unasync.py).

Fails when ``src/fluxmail/smtp/_sync.py`` is not exactly what the script makes of the
current ``_async.py``: edit ``_async.py``, then run ``python scripts/unasync.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync", ROOT / "scripts" / "unasync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["unasync"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_sync_driver_is_current() -> None:
    script = load_script()
    assert script.main(["--check"]) == 0, "run: python scripts/unasync.py"


def test_generated_file_says_so() -> None:
    text = (ROOT / "src" / "fluxmail" / "smtp" / "_sync.py").read_text()
    assert text.startswith("# GENERATED FILE, do not edit")
    assert "python scripts/unasync.py" in text.splitlines()[1]


def test_the_substitutions() -> None:
    script = load_script()
    source = (
        '"""doc"""\n'
        "async def f(conn: AsyncSMTPConnection) -> None:\n"
        "    async with x:\n"
        "        await conn.open()\n"
        "    await aopen_with_token(config, attempt)\n"
        "    AsyncStream.connect  # _async_stream\n"
        "    def __aenter__(self): ...\n"
    )
    out = script.unasync(source)
    body = out.split('"""', 2)[-1]  # after the replaced module docstring
    assert "async" not in body.replace("_sync", "")
    assert "await" not in body
    assert "def f(conn: SMTPConnection) -> None:" in body
    assert "    with x:\n        conn.open()" in body
    assert "open_with_token(config, attempt)" in body
    assert "SyncStream.connect  # _sync_stream" in body
    assert "__enter__" in body


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    script = load_script()
    stale = tmp_path / "_sync.py"
    stale.write_text("# an old driver\n")
    original = script.TARGET
    script.TARGET = stale
    try:
        assert script.main(["--check"]) == 1
        assert script.main([]) == 0  # regenerates it
        assert script.main(["--check"]) == 0
    finally:
        script.TARGET = original


def test_async_syntax_no_rule_covers_is_refused() -> None:
    script = load_script()
    with pytest.raises(SystemExit, match="async syntax left"):
        script.unasync('"""doc"""\nasync def f() -> None:\n    x = await(g())\n')
