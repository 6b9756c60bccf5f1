"""The package layout: no import cycles among our modules (at module level or inside functions), and the core
free of Textual."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("workbench", "screens", "widgets")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """Our modules imported anywhere in the file (function-level imports count: a late import that dodges a
    cycle is still a cycle; `if TYPE_CHECKING:` imports do not, they never run)."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and getattr(block.test, "id", getattr(block.test, "attr", "")) == "TYPE_CHECKING"
                 for stmt in block.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in type_only:   # annotations only: never imported at run time
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.split(".")[0] in PACKAGES)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # `from pkg import mod` names a module when mod is one; otherwise it names something in pkg
        graph[name] = {t for t in _imports(path, name) if t in files and t != name}
    return graph


def _cycles(graph):
    seen, stack, found = set(), [], []

    def visit(n):
        if n in stack:
            found.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for m in sorted(graph[n]):
            # a package's __init__ importing its own submodules (re-exports) is not a cycle by itself
            if not m.startswith(n + "."):
                visit(m)
        stack.pop()

    for n in sorted(graph):
        visit(n)
    return found


def test_no_import_cycles():
    graph = _graph()
    assert "workbench.jobs" in graph and "workbench.tasks.base" in graph
    assert _cycles(graph) == []


def test_cycle_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_core_does_not_import_textual():
    for path in (ROOT / "workbench").rglob("*.py"):
        if path.name == "app.py" and path.parent.name == "workbench":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.split(".")[0] == "textual" for m in mods), path
