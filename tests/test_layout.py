"""The package's shape: no import cycle, counting imports inside functions and type-only ones, and what a process
shares lives in `process.STATE`, not in module-level mutable names."""

from __future__ import annotations

import ast
from pathlib import Path

import hf_summary

ROOT = Path(hf_summary.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in ROOT.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module `name` imports, wherever the import statement is (functions, TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")  # a submodule
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycles() -> None:
    modules = _modules()
    # A package's __init__ re-exports (lazily) what its modules define; a module importing a sibling through its
    # package is not a cycle of ours, so edges into the top package's re-exports are left out.
    graph = {name: _imports(name, path, modules) - {"hf_summary"} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_module_level_mutable_state_is_only_in_process() -> None:
    """What a process shares is in `process.STATE`: no other module binds a dict, list, set or weak set at its top
    level (constants are tuples, frozensets and strings)."""
    mutable = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
    factories = {"WeakSet", "WeakValueDictionary", "WeakKeyDictionary", "dict", "list", "set", "defaultdict",
                 "OrderedDict", "deque"}
    found = []
    for name, path in _modules().items():
        if name in ("hf_summary.process",) or name.startswith("hf_summary.testing"):
            continue  # LocalHub is a test server: its state belongs to its instances, not to a user's process
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
                continue
            value = node.value
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                continue
            called = value.func.attr if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) else (
                value.func.id if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) else None)
            if isinstance(value, mutable) or called in factories:
                found.append(f"{name}:{node.lineno}")
    assert found == []
