"""Every ```python block of docs/*.md runs, against real local servers.

The convention (also in docs/development.md, "The examples on the site"):

* The blocks of one page run in order, in one fresh interpreter, sharing their names as a
  notebook does, in an empty temporary working directory that holds a few sample files
  (``SAMPLE_FILES``).
* Examples that send talk to ``fluxmail serve``'s address, 127.0.0.1 port ``1025``; here
  every ``1025`` in a block is replaced by the port of an aiosmtpd server this test starts,
  and ``6379`` (Redis) by the port of a real redis-server it starts when a page needs one.
  ``FLUXMAIL_HOST``/``FLUXMAIL_PORT`` point at the same server and ``FLUXMAIL_SENDER`` is
  ``app@example.com``, so ``from_env()`` works.
* The variables examples read (``SMTP_PASSWORD``, ``GOOGLE_CLIENT_ID``, ...) are set
  to dummies; ``DJANGO_SETTINGS_MODULE`` is ``settings`` on pages that use Django.
* A block whose first line is ``# file: NAME`` is saved as NAME in the working directory
  (a ``settings.py``, a ``tasks.py``) for later blocks to import, instead of being run.
* ``<!-- fluxmail: no-run (reason) -->`` on the line before a block skips it. Used
  sparingly (``MAX_NO_RUN``), only for what cannot run here, and the reason is required.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import SMTPTestServer

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*$")
NO_RUN = re.compile(r"^\s*<!--\s*fluxmail:\s*no-run\s*\((?P<reason>[^)]*)\)\s*-->\s*$")
FILE_BLOCK = re.compile(r"^# file: (?P<name>[\w./-]+)")
MAX_NO_RUN = 3
SMTP_PORT, REDIS_PORT = "1025", "6379"

ENVIRONMENT = {
    "SMTP_PASSWORD": "example-password",
    "GOOGLE_CLIENT_ID": "example-client-id",
    "GOOGLE_CLIENT_SECRET": "example-client-secret",
    "GOOGLE_REFRESH_TOKEN": "example-refresh-token",
    "MS_CLIENT_ID": "example-client-id",
    "MS_CLIENT_SECRET": "example-client-secret",
    "DJANGO_SETTINGS_MODULE": "settings",
}

RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1], encoding="utf-8")):
    print(f"--- {block['where']}", flush=True)
    exec(compile(block["source"], block["where"], "exec"), namespace)
"""


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    source: str
    no_run: str | None  # the reason, when marked

    @property
    def where(self) -> str:
        return f"docs/{self.page}, block at line {self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The ```python blocks of one page, dedented, with their no-run reasons."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, start = fence["indent"], i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        if fence["lang"] != "python":
            continue
        previous = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = NO_RUN.match(previous)
        found.append(
            Block(path.name, start + 1, "\n".join(body) + "\n", marker and marker["reason"])
        )
    return found


#: Pages whose examples need a server this runner does not start; each is run, as
#: written, by the named test (which points the example's URLs at a local server).
RUN_ELSEWHERE = {
    "graph.md": "test_graph.py::test_docs_examples_run_against_the_local_graph",
}

PAGES = sorted(p for p in DOCS.glob("*.md") if blocks_of(p) and p.name not in RUN_ELSEWHERE)


def test_pages_run_elsewhere_have_their_test() -> None:
    tests = Path(__file__).resolve().parent
    for page, where in RUN_ELSEWHERE.items():
        module, function = where.split("::")
        assert blocks_of(DOCS / page), page
        assert f"def {function}(" in (tests / module).read_text(encoding="utf-8"), where


def sample_files(directory: Path) -> None:
    """What the examples open: a PDF, a photo, a DKIM key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    (directory / "summary.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (directory / "report.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (directory / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64 + b"\xff\xd9")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (directory / "s1.pem").write_bytes(pem)


def test_every_page_with_examples_is_collected() -> None:
    assert {p.name for p in PAGES} >= {"guide.md", "getting-started.md", "bulk.md", "django.md"}


def test_no_run_markers_are_rare_and_explained() -> None:
    marked = [b for p in PAGES for b in blocks_of(p) if b.no_run is not None]
    assert len(marked) <= MAX_NO_RUN, [b.where for b in marked]
    for block in marked:
        assert len(block.no_run.strip()) >= 10, f"{block.where}: say why it cannot run"
    for page in DOCS.glob("*.md"):
        lines = page.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if NO_RUN.match(line):  # the marker must sit right above a python block
                following = next((ln for ln in lines[n + 1 :] if ln.strip()), "")
                assert following.strip() == "```python", f"docs/{page.name}:{n + 1}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run(
    page: Path,
    make_server: Callable[..., SMTPTestServer],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    server = make_server()
    blocks = [b for b in blocks_of(page) if b.no_run is None]
    redis_port = None
    if any(REDIS_PORT in b.source for b in blocks):
        redis_port = str(request.getfixturevalue("redis_server").port)
    work = tmp_path / "work"
    work.mkdir()
    sample_files(work)
    to_run = []
    for block in blocks:
        source = re.sub(rf"(?<!\d){SMTP_PORT}(?!\d)", str(server.port), block.source)
        if redis_port:
            source = re.sub(rf"(?<!\d){REDIS_PORT}(?!\d)", redis_port, source)
        saved = FILE_BLOCK.match(source)
        if saved:
            (work / saved["name"]).write_text(source, encoding="utf-8")
        else:
            to_run.append({"where": block.where, "source": source})
    (work / "blocks.json").write_text(json.dumps(to_run), encoding="utf-8")
    (work / "run_blocks.py").write_text(RUNNER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUXMAIL_", "DJANGO_"))}
    env.update(ENVIRONMENT, FLUXMAIL_HOST=server.host, FLUXMAIL_PORT=str(server.port))
    env["FLUXMAIL_SENDER"] = "app@example.com"
    if "django" not in "".join(b.source for b in blocks):
        # Celery's Django fix-up would import the (absent) settings in a worker process
        env.pop("DJANGO_SETTINGS_MODULE")
    result = subprocess.run(
        [sys.executable, "run_blocks.py", "blocks.json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-6000:])
    if any(str(server.port) in b["source"] or "from_env()" in b["source"] for b in to_run):
        assert server.messages, f"docs/{page.name}: its examples sent nothing to the server"
