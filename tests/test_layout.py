"""The house's layout rules, read from the source (ast): one-way imports and modules a reader can hold in mind."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

MAX_LINES = 450
# Packages the service never imports: the Celery task modules, and the local stack supervisor (a development tool).
FORBIDDEN = ("tasks", "devstack")
# voiceapp/cli.py's up/down/status (and its helpers) import devstack inside a function: only when they run.
LAZY_ALLOWED = {"voiceapp/cli.py": {"devstack"}}


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _imported(node: ast.AST) -> list[str]:
    """Top-level package names an import statement brings in (relative imports stay inside their package)."""
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom) and not node.level and node.module:
        return [node.module.split(".")[0]]
    return []


def _dynamic(node: ast.AST) -> list[str]:
    """Packages named by importlib.import_module("...") or __import__("...") with a literal name."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
        return []
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
        return [node.args[0].value.split(".")[0]]
    return []


def forbidden_imports(path: Path, root: Path = REPO) -> list[str]:
    """'file:line imports X' for every import of a FORBIDDEN package, except allowed lazy ones inside functions."""
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), filename=rel)
    lazy: set[int] = set()
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lazy.update(id(n) for n in ast.walk(func))
    found = []
    for node in ast.walk(tree):
        for name in _imported(node) + _dynamic(node):
            if name in FORBIDDEN and not (id(node) in lazy and name in LAZY_ALLOWED.get(rel, ())):
                found.append((node.lineno, f"{rel}:{node.lineno} imports {name}"))
    return [text for _, text in sorted(found)]


def test_the_service_never_imports_tasks_or_the_local_stack_supervisor():
    modules = _modules("voiceapp")
    assert len(modules) > 50  # the walk found the package
    assert [hit for path in modules for hit in forbidden_imports(path)] == []


def test_the_cli_imports_the_stack_supervisor_only_inside_its_commands():
    cli = REPO / "voiceapp" / "cli.py"
    tree = ast.parse(cli.read_text())
    at_module_level = [name for node in tree.body for name in _imported(node)]
    assert "devstack" not in at_module_level
    assert "devstack" in {name for node in ast.walk(tree) for name in _imported(node)}  # ... but it does, lazily


def test_the_checker_catches_module_level_lazy_and_dynamic_imports(tmp_path):
    """The rule above can fail: a module importing tasks, devstack, or importing them by name, is reported."""
    pkg = tmp_path / "voiceapp"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "import tasks.worker\nfrom devstack import up\n\n"
        "def later():\n    import devstack\n    __import__('tasks.stt')\n"
    )
    (pkg / "cli.py").write_text("def up():\n    import devstack\n")
    assert forbidden_imports(pkg / "bad.py", tmp_path) == [
        "voiceapp/bad.py:1 imports tasks",
        "voiceapp/bad.py:2 imports devstack",
        "voiceapp/bad.py:5 imports devstack",
        "voiceapp/bad.py:6 imports tasks",
    ]
    assert forbidden_imports(pkg / "cli.py", tmp_path) == []


def test_no_module_of_the_service_or_the_stack_supervisor_is_over_450_lines():
    modules = _modules("voiceapp", "tasks", "migrations", "devstack")
    long = {p.relative_to(REPO).as_posix(): n for p in modules if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _fixtures(path: Path) -> set[str]:
    """Names of the functions a test module decorates with @pytest.fixture."""
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    }


def test_each_fixture_name_means_one_thing_and_no_module_imports_another_modules_fixtures():
    modules = sorted((REPO / "tests").glob("*.py"))
    defined = {path.stem: _fixtures(path) for path in modules}
    owners: dict[str, list[str]] = {}
    for module, names in defined.items():
        for name in names:
            owners.setdefault(name, []).append(module)
    assert {name: where for name, where in owners.items() if len(where) > 1} == {}
    imported = [
        f"{path.name} imports {alias.name} from {node.module}"
        for path in modules
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.")
        for alias in node.names
        if alias.name in defined.get(node.module.split(".")[-1], set())
    ]
    assert imported == []
