"""The documentation site builds with ``mkdocs build --strict`` (any warning fails), and
the packaging facts the site and the index show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "WARNING" not in output, output[-5000:]
    # The API reference really is generated from the docstrings.
    api = (tmp_path / "api" / "fluxmail" / "index.html").read_text(encoding="utf-8")
    assert "fluxmail.FluxMail" in api
    assert "Validate and hold one message" in api  # FluxMail.create's docstring
    errors = (tmp_path / "api" / "errors" / "index.html").read_text(encoding="utf-8")
    assert "RecipientsRefusedError" in errors


def test_every_page_is_in_the_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (ROOT / "docs").rglob("*.md"):
        relative = page.relative_to(ROOT / "docs").as_posix()
        assert f" {relative}" in config, f"docs/{relative} is not in mkdocs.yml's nav"


def test_packaging_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    classifiers = set(project["classifiers"])
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert {
        "Operating System :: OS Independent",
        "Development Status :: 4 - Beta",
        "License :: OSI Approved :: MIT License",
    } <= classifiers
    assert project["license"] == "MIT"
    assert "fluxmail maintainers" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    extras = project["optional-dependencies"]
    assert {"mkdocs", "mkdocs-material", "mkdocstrings[python]"} <= {
        spec.split(">")[0] for spec in extras["docs"]
    }
    assert any("docs" in spec for spec in extras["test"] if spec.startswith("fluxmail["))
