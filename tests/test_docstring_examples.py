"""The ```python examples in docstrings (shown on the API pages) run, against a local server.

Each example runs on its own, as a doctest does: in a namespace made of its module's
globals plus a small prelude (``PRELUDE``: ``fluxmail``, ``fluxmail.testing``, every name
of ``fluxmail``, ``Path``, ``logging``, ``os``, and ``mailer``, a FluxMail that sends to
the test's aiosmtpd server), in a temporary working directory. As on the pages, ``1025``
stands for that server's port, and Django examples find ``EMAIL_HOST``/``EMAIL_PORT``
pointing at it (``DJANGO_SETTINGS_MODULE``). docs/development.md describes the convention.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fluxmail
from servers import SMTPTestServer

FENCED = re.compile(r"^(?P<indent>[ \t]*)```python\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)

PRELUDE = """
import logging, os
from pathlib import Path
import fluxmail, fluxmail.testing
from fluxmail import *
from fluxmail.errors import *
mailer = FluxMail(host="127.0.0.1", port=1025, sender="app@example.com")
"""

SETTINGS = """
SECRET_KEY = "docstring-examples"
USE_TZ = True
EMAIL_BACKEND = "fluxmail.backends.django.FluxMailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = 1025
"""

RUNNER = """
import importlib, json, sys
for example in json.load(open(sys.argv[1], encoding="utf-8")):
    print(f"=== example: {example['where']}", flush=True)
    namespace = dict(vars(importlib.import_module(example["module"])))
    exec(compile(example["prelude"], "<prelude>", "exec"), namespace)
    exec(compile(example["source"], example["where"], "exec"), namespace)
"""


def _objects(module: object) -> Iterator[tuple[str, object]]:
    """The module and what it defines: classes, their methods and properties, functions."""
    name = module.__name__  # type: ignore[attr-defined]
    yield name, module
    for attr, value in vars(module).items():
        if getattr(value, "__module__", None) != name:
            continue
        if inspect.isfunction(value):
            yield f"{name}.{attr}", value
        elif inspect.isclass(value):
            yield f"{name}.{attr}", value
            for member, item in vars(value).items():
                target = item.fget if isinstance(item, property) else item
                target = getattr(target, "__func__", target)
                if inspect.isfunction(target):
                    yield f"{name}.{attr}.{member}", target


def examples() -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    modules = [fluxmail.__name__] + [
        info.name for info in pkgutil.walk_packages(fluxmail.__path__, "fluxmail.")
    ]
    for module_name in modules:
        module = importlib.import_module(module_name)
        for where, obj in _objects(module):
            doc = inspect.getdoc(obj) if obj is not module else module.__doc__
            for match in FENCED.finditer(inspect.cleandoc(doc or "")):
                lines = match["body"].splitlines()
                indent = len(match["indent"])
                source = "\n".join(line[indent:] for line in lines) + "\n"
                found.append({"module": module_name, "where": where, "source": source})
    return found


EXAMPLES = examples()


def test_docstring_examples_are_found() -> None:
    where = {example["where"] for example in EXAMPLES}
    assert {"fluxmail", "fluxmail.testing.capture", "fluxmail.templates.EmailTemplate"} <= where


@pytest.mark.timeout(300)
def test_docstring_examples_run(
    make_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    server = make_server()
    port = str(server.port)
    (tmp_path / "settings.py").write_text(SETTINGS.replace("1025", port), encoding="utf-8")
    batch = [
        {**example, "prelude": PRELUDE.replace("1025", port),
         "source": re.sub(r"(?<!\d)1025(?!\d)", port, example["source"])}
        for example in EXAMPLES
    ]  # fmt: skip
    (tmp_path / "examples.json").write_text(json.dumps(batch), encoding="utf-8")
    (tmp_path / "run_examples.py").write_text(RUNNER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUXMAIL_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="settings", SMTP_PASSWORD="example-password")
    result = subprocess.run(
        [sys.executable, "run_examples.py", "examples.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-5000:])
    assert result.stdout.count("=== example: ") == len(EXAMPLES)
    assert server.messages, "the examples that send reached the server"
