"""The package's floors, as the README draws them: the lesson on top of one ground floor, nothing in a cycle.

Read from the source with `ast`, so imports inside functions count as much
as those at the top of a module.
"""

import ast
from pathlib import Path

import labkit

PACKAGE = Path(labkit.__file__).parent
# Lowest first; a module may import from its own floor or a lower one, never a higher one.
FLOORS = [
    ("ground", ["labkit.runs"]),
    ("data and shared model parts", ["labkit.data", "labkit.models"]),
    ("the answer key", ["labkit.solutions"]),
    ("the lesson", ["labkit.gan", "labkit.vae"]),
    ("measuring and showing", ["labkit.classifier", "labkit.metrics", "labkit.analysis", "labkit.plots", "labkit.checks",
                               "labkit.reference"]),
    ("experiments", ["labkit.experiments"]),
    ("front doors and grading", ["labkit.lab", "labkit.commands", "labkit.cli", "labkit.grading"]),
]
MAX_FUNCTION_LINES = 60
MAX_IMPORTS_IN_FUNCTIONS = 10


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


def floor(module):
    """The index in FLOORS of the floor that holds `module`."""
    for index, (_, members) in enumerate(FLOORS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return index
    raise AssertionError(f"{module} is on no floor: add it to FLOORS (and to the README's Layout)")


def test_the_import_graph_is_read_in_full():
    edges = graph()
    assert "labkit.runs.training" in edges["labkit.gan"]
    assert "labkit.gan" in edges["labkit.experiments.together"]
    assert "labkit.commands" in edges["labkit.cli"]  # `from . import commands` inside a function
    assert "labkit.grading.gradebook" in edges["labkit.commands"]


def test_every_module_is_on_a_floor_and_no_import_climbs():
    climbing = [f"{module} ({FLOORS[floor(module)][0]}) imports {target} ({FLOORS[floor(target)][0]})"
                for module, targets in graph().items() if module != "labkit"
                for target in targets if target != "labkit" and floor(target) > floor(module)]
    assert not climbing, "imports that climb to a higher floor: " + "; ".join(sorted(climbing))


def test_the_ground_floor_imports_nothing_of_labkit_above_it():
    outside = [f"{module} imports {target}" for module, targets in graph().items() if module.startswith("labkit.runs")
               for target in targets if not target.startswith("labkit.runs")]
    assert not outside, outside


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


def test_imports_are_at_the_top_but_for_a_few_each_with_its_reason():
    inside = []
    for name, (path, tree) in modules().items():
        lines = path.read_text().splitlines()
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    nearby = lines[max(0, node.lineno - 4):node.lineno]  # the line itself and three above it
                    inside.append((f"{path.relative_to(PACKAGE.parent).as_posix()}:{node.lineno}",
                                   any("#" in line for line in nearby)))
    inside = sorted(set(inside))
    assert len(inside) <= MAX_IMPORTS_IN_FUNCTIONS, f"{len(inside)} imports inside functions: {inside}"
    assert all(reason for _, reason in inside), f"an import inside a function needs a comment saying why: {inside}"


def test_no_function_is_over_60_lines():
    lengths = {}
    for name, (path, tree) in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(PACKAGE.parent).as_posix()}::{node.name}"
                lengths[where] = max(lengths.get(where, 0), node.end_lineno - node.lineno + 1)
    too_long = {where: n for where, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert not too_long, f"over {MAX_FUNCTION_LINES} lines (a function a student reads on one screen): {too_long}"


def test_the_gan_loop_reads_top_to_bottom_in_one_function():
    """Like pytorch/examples' dcgan: zero_grad, backward and step in the step; saving one call from torch.save."""
    tree = modules()["labkit.gan"][1]
    functions = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    source = modules()["labkit.gan"][0].read_text()
    step = ast.get_source_segment(source, functions["gan_step"])
    for needed in ("zero_grad", "backward()", "opt_d.step()", "opt_g.step()", "maximize log(D(x)) + log(1 - D(G(z)))",
                   "if updated_d:"):
        assert needed in step, f"gan_step should show {needed!r}"
    loop = ast.get_source_segment(source, functions["train_loop"])
    assert "gan_step(" in loop and "loop.save(" in loop and "for step in loop.steps()" in loop
    training = modules()["labkit.runs.training"][1]
    save = next(node for node in ast.walk(training) if isinstance(node, ast.FunctionDef) and node.name == "save")
    assert "save_atomic(" in ast.unparse(save)  # Loop.save -> save_atomic, whose body is torch.save
    checkpoints = modules()["labkit.runs.checkpoints"][1]
    save_atomic = next(node for node in ast.walk(checkpoints)
                       if isinstance(node, ast.FunctionDef) and node.name == "save_atomic")
    assert "torch.save(" in ast.unparse(save_atomic)


def test_the_answer_key_is_in_one_place():
    """The six exercises' reference answers are defined in labkit/solutions/ and nowhere else."""
    answers = {"DCGANGenerator", "DCGANDiscriminator", "discriminator_loss", "generator_loss", "update_discriminator",
               "interpolation_latents", "slerp", "MLPGenerator", "MLPDiscriminator", "reparameterize", "kl_divergence",
               "vae_loss"}
    where = {}
    for name, (path, tree) in modules().items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in answers:
                where.setdefault(node.name, []).append(name)
    assert set(where) == answers
    assert all(homes == [homes[0]] and homes[0].startswith("labkit.solutions.") for homes in where.values()), where


def test_a_runs_identity_and_name_are_made_in_one_place():
    makers = [f"{name}.{node.name}" for name, (path, tree) in modules().items() for node in ast.walk(tree)
              if isinstance(node, ast.FunctionDef) and node.name in ("identity", "name", "name_parts")
              and name != "labkit.runs.code"]  # code.py's `identity` is whose code, part of the config's identity
    assert makers and all(maker.startswith("labkit.runs.config.") for maker in makers), makers
