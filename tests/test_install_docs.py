"""Install instructions point at this project, never at the package index's unrelated
``fluxmail`` (0.3.3, none of our extras)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from fluxmail.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parent.parent
# "pip install fluxmail", "pip install 'fluxmail[x]'", "pip install fluxmail[x]", ...
FROM_THE_INDEX = re.compile(r"""pip install\s+(?:-U\s+)?["']?fluxmail(?![\w.-])""")


def documentation() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return files + sorted((ROOT / "src" / "fluxmail").rglob("*.py"))


def test_no_file_tells_users_to_install_from_the_index() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in documentation()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if FROM_THE_INDEX.search(line)
    ]
    # The only mentions are those that warn against it.
    warnings = [
        "README.md",
        "docs/errors.md",
        "docs/getting-started.md",
        "docs/guide.md",
        "src/fluxmail/errors.py",
    ]
    assert sorted({hit.split(":")[0] for hit in hits}) == warnings, hits
    assert "unrelated project" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_still_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block == [
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[server]" '
        "&& fluxmail demo",
        "bash .ci/run",
    ]


def test_the_readme_says_how_to_install_from_a_clone_and_from_a_wheel() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[templates]"' in readme
    assert 'pip install "dist/fluxmail-0.1.0-py3-none-any.whl[templates]"' in readme
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None
    assert f"fluxmail-{version.group(1)}-py3-none-any.whl" in readme


def test_a_missing_extra_names_a_command_that_installs_this_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "jinja2", None)
    from fluxmail.templates import EmailTemplate

    with pytest.raises(MissingDependencyError) as info:
        EmailTemplate("Hello {{ name }}").render(name="x")
    text = str(info.value)
    assert info.value.extra == "templates"
    assert 'pip install -e ".[templates]"' in text
    assert ".whl[templates]" in text
    assert not FROM_THE_INDEX.search(text)
