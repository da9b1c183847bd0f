"""The house's rules, checked from the code's own imports (every import statement, also those inside
functions; ``if TYPE_CHECKING:`` blocks excepted):

- floors from the ground: policies < engine < db < app.services < app.ui < app < scripts; an import
  only goes down or stays on its floor;
- no circles between modules;
- ``db`` and ``app.services`` never load torch, and ``db`` starts no thread or process;
- the Gradio tabs (``app.ui``) run no SQL and no policy logic.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("policies", "engine", "db", "app", "scripts")
FLOORS = (("policies", 0), ("engine", 1), ("db", 2), ("app.services", 3), ("app.ui", 4), ("app", 5),
          ("scripts", 6))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {
    module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
}


def floor(module: str) -> int:
    for prefix, level in FLOORS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    raise AssertionError(f"{module} is in no room")


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported(module: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in ``module``: internal targets resolved to modules."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:  # ``from app.ui import actions`` imports a module
                if f"{node.module}.{alias.name}" in MODULES:
                    yield f"{node.module}.{alias.name}", node.lineno


def internal_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _ in imported(module):
            if target in MODULES and target != module:
                edges[module].add(target)
    return edges


def test_imports_only_go_down() -> None:
    climbs = [
        f"{m}:{line} imports {t} ({floor(m)} -> {floor(t)})"
        for m in MODULES
        for t, line in imported(m)
        if t in MODULES and floor(t) > floor(m)
    ]
    assert not climbs, "imports that climb a floor:\n" + "\n".join(climbs)


def test_no_circles() -> None:
    edges = internal_edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_a_circle_and_a_climb() -> None:
    """The checks above can fail: fed a made-up module, they name what is wrong."""
    assert floor("db.cases") < floor("app.services.queue") < floor("app.ui.case_tab") < floor("scripts.x")
    with pytest.raises(AssertionError, match="no room"):
        floor("utils")


@pytest.mark.parametrize("package", ["db", "app.services"])
def test_persistence_and_use_cases_do_not_load_torch(package: str) -> None:
    mods = [m for m in MODULES if m == package or m.startswith(package + ".")]
    light = ["engine", "engine.types", "engine.guard", "engine.extract", "engine.metrics", "engine.registry",
             "engine.sft_data", "policies", "policies.prompt"]
    code = (f"import importlib, sys\nfor m in {mods + light!r}:\n    importlib.import_module(m)\n"
            "heavy = sorted(k for k in ('torch', 'transformers', 'peft', 'trl', 'llguidance', 'gradio') "
            "if k in sys.modules)\nassert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_db_starts_no_thread_or_process_and_runs_no_model() -> None:
    banned = {"threading", "subprocess", "multiprocessing", "concurrent.futures", "torch", "transformers",
              "peft", "trl", "gradio", "engine.core", "engine.backends", "engine.loading"}
    found = [f"{m}:{line} imports {t}" for m in MODULES if m == "db" or m.startswith("db.")
             for t, line in imported(m) if t in banned or t.split(".")[0] in banned]
    assert not found, found


def test_tabs_run_no_sql_and_no_policy_logic() -> None:
    policy_logic = {"expected_decision", "check", "flags", "return_window", "statutory_applies"}
    found = []
    for m, path in MODULES.items():
        if not m.startswith("app.ui"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                target = node.module if isinstance(node, ast.ImportFrom) else names[0]
                if (target or "").split(".")[0] in ("sqlmodel", "sqlalchemy", "sqlite3"):
                    found.append(f"{m}:{node.lineno} imports {target}")
                if (target or "").startswith("policies") and policy_logic & set(names):
                    found.append(f"{m}:{node.lineno} imports {sorted(policy_logic & set(names))}")
            if isinstance(node, ast.Attribute) and node.attr in ("exec", "execute") and \
                    "session" in ast.unparse(node.value).lower():
                found.append(f"{m}:{node.lineno} runs SQL ({ast.unparse(node)})")
    assert not found, found
