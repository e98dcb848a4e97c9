"""The package's layout, as the README describes it: lesson on top, machinery below, nothing in a cycle.

Read from the source with `ast`, so imports inside functions count as much
as those at the top of a module.
"""

import ast
from pathlib import Path

import labkit.machinery

PACKAGE = Path(labkit.machinery.__file__).parents[1]
LESSON = ("data", "models", "step", "train", "vae", "metrics", "classifier", "analysis", "plots", "checks")
MAX_INTERFACE = 12
MAX_FUNCTION_LINES = 60


def modules():
    """{module name: parsed source} of every module of labkit."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = (path, ast.parse(path.read_text(), str(path)))
    return found


def imports(name, path, tree, known):
    """(target module, the import node) for each labkit module that module `name` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target:
                    yield target, node
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    yield target, node
                elif base in known:
                    yield base, node


def graph():
    known = modules()
    return {name: {target for target, _ in imports(name, path, tree, known) if target != name}
            for name, (path, tree) in known.items()}


def test_the_import_graph_is_read_in_full():
    edges = graph()
    assert "labkit.machinery.loop" in edges["labkit.train"] | edges["labkit.machinery"]
    assert "labkit.train" in edges["labkit.machinery.together"]
    assert "labkit.step" in edges["labkit.checks"]  # `from . import step` inside a function


def test_nothing_in_labkit_imports_in_a_cycle():
    edges, state, path = graph(), {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_the_lesson_reaches_the_machinery_only_through_its_small_interface():
    interface = labkit.machinery.__all__
    assert len(interface) <= MAX_INTERFACE, f"labkit.machinery offers {len(interface)} names: {interface}"
    assert all(hasattr(labkit.machinery, name) for name in interface)
    known = modules()
    wrong = []
    for module in LESSON:
        path, tree = known[f"labkit.{module}"]
        for target, node in imports(f"labkit.{module}", path, tree, known):
            if not target.startswith("labkit.machinery"):
                continue
            through_interface = (isinstance(node, ast.ImportFrom) and node.level == 1 and node.module == "machinery"
                                 and all(alias.name in interface for alias in node.names))
            if not through_interface:
                wrong.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not wrong, "lesson modules must import `from .machinery import <a name in __all__>`: " + "; ".join(wrong)


def test_no_function_is_over_60_lines():
    lengths = {}
    for name, (path, tree) in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(PACKAGE.parent).as_posix()}::{node.name}"
                lengths[where] = max(lengths.get(where, 0), node.end_lineno - node.lineno + 1)
    too_long = {where: n for where, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert not too_long, f"over {MAX_FUNCTION_LINES} lines (a function a student reads on one screen): {too_long}"
