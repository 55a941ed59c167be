"""The package's import structure, read from its sources: no import circle, and a worker that needs none of the coordinator."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "s3lib"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set) -> set:
    "Every s3lib module `path` imports, at the top or inside a function, absolute or relative."
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import): targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from s3lib import ui` imports s3lib.ui
        else: continue
        found |= {target for target in targets if target in known and target != name}
    return found


def import_graph() -> dict:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def find_cycle(graph: dict) -> list | None:
    "One import circle as a list of modules (first repeated at the end), or None."
    state, stack = {}, []
    def visit(node):
        state[node] = "open"; stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open": return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)): return cycle
        state[node] = "done"; stack.pop()
        return None
    for node in sorted(graph):
        if node not in state and (cycle := visit(node)): return cycle
    return None


def test_the_graph_is_read_from_the_sources():
    graph = import_graph()
    assert "s3lib.worker" in graph["s3lib.service"]
    assert "s3lib.runners.base" in graph["s3lib.runners.inline"]
    assert "s3lib.segment" in graph["s3lib.pipeline"]  # a function-level import counts
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)


def test_worker_imports_no_coordinator():
    code = ("import sys, s3lib.worker; loaded = sorted(m for m in ('s3lib.service', 's3lib.ledger', 's3lib.storage') "
            "if m in sys.modules); print(loaded); assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ui_workspace_imports_no_gradio():
    "The tab's state, cards and progress are plain Python: importing them loads neither Gradio nor the page."
    code = ("import sys, s3lib.ui.workspace; loaded = sorted(m for m in ('gradio', 's3lib.ui.views', 's3lib.ui.page') "
            "if m in sys.modules); print(loaded); assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
