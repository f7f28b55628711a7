"""Rules about the code's shape, checked by reading the source with ``ast`` (nothing is run).

* The SMTP engine (``fluxmail.smtp``) imports nothing from fluxmail outside itself except
  ``fluxmail.errors`` and ``fluxmail.envelope``, TYPE_CHECKING imports included: it takes what
  it needs as plain values or small protocols it defines.
* No import cycles among fluxmail modules (every import counts: module level, TYPE_CHECKING,
  inside functions).
* Tests cannot pass by accident: no test module imports another one, no test function
  asserts nothing, no ``pytest.raises(Exception)``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "fluxmail"
TESTS = ROOT / "tests"
ENGINE_MAY_IMPORT = frozenset({"fluxmail.errors", "fluxmail.envelope"})
#: Helpers a test may call instead of asserting itself (each one asserts or raises).
ASSERTING_HELPERS = ("assert", "check", "expect", "verify", "must_")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every fluxmail module ``name`` imports, with the line; ``from .pkg import mod`` names
    the submodule when there is one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fluxmail":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "fluxmail":
                continue
            yield target, node.lineno
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    yield f"{target}.{alias.name}", node.lineno


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {target for target, _ in _imports(name, path, known) if target in known} - {name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# --- the engine's imports -------------------------------------------------------------


def test_the_engine_imports_only_errors_and_envelope() -> None:
    modules = _modules()
    known = set(modules)
    engine = {name: path for name, path in modules.items() if name.startswith("fluxmail.smtp")}
    assert "fluxmail.smtp._options" in engine  # the walk found the package
    outside = [
        f"{path.relative_to(ROOT)}:{line}: imports {target}"
        for name, path in engine.items()
        for target, line in _imports(name, path, known)
        if not target.startswith("fluxmail.smtp") and target not in ENGINE_MAY_IMPORT
    ]
    assert outside == []


# --- errors are complete when constructed ------------------------------------------------

_ERROR_ATTRIBUTES = frozenset(
    {"code", "transient", "batch_result", "smtp_code", "enhanced_code", "server_message"}
    | {"refused", "message_id", "hint", "attempts"}
)


def _names_an_error(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else ""
    return name in ("e", "exc", "err") or name.endswith(("error", "exc", "exception"))


def test_no_error_is_changed_after_construction() -> None:
    """``exc.transient = ...`` after ``exc = SomeError(...)``: pass it to the constructor
    (``FluxMailException(..., transient=...)``, ``error.with_batch_result(...)``)."""
    changed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            changed += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(target)}"
                for target in targets
                if isinstance(target, ast.Attribute)
                and target.attr in _ERROR_ATTRIBUTES
                and _names_an_error(target.value)
            ]
    assert changed == []


# --- import cycles ----------------------------------------------------------------------


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [{"a", "b", "c"}]


def test_no_import_cycles() -> None:
    # fluxmail.bulk <-> fluxmail._bulk_state, once the one known cycle, is gone too.
    assert [sorted(c) for c in _cycles(_graph())] == []


# --- tests that cannot pass by accident -------------------------------------------------


def _test_files() -> list[Path]:
    return sorted(TESTS.glob("test_*.py"))


def test_no_test_module_imports_another() -> None:
    tests = {path.stem for path in _test_files()}
    found = []
    for path in _test_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            found += [f"{path.name}:{node.lineno}: {n}" for n in names if n in tests]
    assert found == [], "shared helpers belong in tests/helpers.py (or servers.py), not in tests"


def _asserts(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """An ``assert``, a ``pytest.raises``/``pytest.fail``/``pytest.warns``, or a call of an
    asserting helper (``assert_*``, ``check_*``, ...) anywhere in the body."""
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("raises", "fail", "warns", "deprecated_call", "RaisesGroup"):
                return True
            if name.lstrip("_").startswith(ASSERTING_HELPERS):
                return True
    return False


def _test_functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in tree.body:
        bodies = node.body if isinstance(node, ast.ClassDef) else [node]
        for item in bodies:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                item.name.startswith("test")
            ):
                yield item


def test_every_test_asserts_something() -> None:
    silent = [
        f"{path.name}:{function.lineno}: {function.name}"
        for path in _test_files()
        for function in _test_functions(ast.parse(path.read_text(encoding="utf-8")))
        if not _asserts(function)
    ]
    assert silent == []


def test_the_silent_test_finder_sees_a_silent_test() -> None:
    tree = ast.parse(
        "def test_quiet():\n    x = 1\n"
        "def test_loud():\n    assert 1\n"
        "def test_helper():\n    assert_sent(1)\n"
        "class TestX:\n    def test_raises(self):\n        with pytest.raises(E):\n"
        "            pass\n"
    )
    assert [f.name for f in _test_functions(tree) if not _asserts(f)] == ["test_quiet"]


def test_no_pytest_raises_of_any_exception() -> None:
    broad = []
    for path in _test_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "raises"
                and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id in ("Exception", "BaseException")
            ):
                broad.append(f"{path.name}:{node.lineno}")
    assert broad == [], "name the precise class (and check .code)"
