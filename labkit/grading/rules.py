"""What grading reads in a solution's source before running it (Python's `ast`).

Grading decides every verdict outside the student's kernel (labkit/grading/
kernel.py), so no code in a solution can change a verdict; these rules exist to
give a clear reason, before anything runs, when a solution does what no
solution needs:

  * the exercise's names (say `Generator` and `Discriminator`) are written in
    the cell, as `class` / `def` statements: not imported from labkit, not
    assigned from something else;
  * imports are of torch, math, numpy and a few standard modules, plus the
    labkit helpers the instructor's own cell imports (e.g. `init_weights`);
  * no interpreter access: `eval`, `exec`, `open`, `__import__`, `getattr`
    with a computed name, `setattr`, `get_ipython`, `exit`, dunder attributes
    such as `__code__` or `__globals__`;
  * no change to a library: no assignment to `torch.allclose`, `F.x`, ...

`refusal(source, ...)` returns the first broken rule as one sentence, or None.
(Copies are found by labkit/grading/copies.py.)
"""

import ast

ALLOWED_MODULES = ("torch", "math", "numpy", "functools", "itertools", "collections", "typing", "dataclasses",
                   "numbers", "operator")
REFUSED_NAMES = {"eval", "exec", "compile", "__import__", "open", "globals", "locals", "vars", "setattr", "delattr",
                 "breakpoint", "input", "exit", "quit", "get_ipython", "memoryview", "help", "__builtins__",
                 "__loader__", "__spec__"}
MAX_SOURCE = 100_000  # characters: the longest reference solution cell has 1,739
ALLOWED_DUNDERS = {"__init__", "__name__", "__doc__", "__repr__", "__str__", "__len__"}


def refusal(source, names, labkit_imports):
    """The first rule `source` breaks, as one sentence; None if it breaks none.

    names:          {name: "class" or "function"}: what the exercise asks the cell to define.
    labkit_imports: {module: {names}} the cell may import from labkit (the instructor's own imports).
    """
    if len(source) > MAX_SOURCE:
        return f"is {len(source):,} characters long; a solution takes a few thousand (a table of answers?)"
    try:
        tree = ast.parse(source)
    except (RecursionError, MemoryError):  # what Python's parser raises for 20,000 nested operators
        return "is nested too deeply for Python to read"
    except (SyntaxError, ValueError) as err:
        return f"is not valid Python ({type(err).__name__}: {getattr(err, 'msg', err)})"
    try:
        aliases = _import_aliases(tree)
        for check in (_imports(tree, labkit_imports), _names_defined(tree, names), _interpreter_access(tree),
                      _library_changes(tree, aliases)):
            if check:
                return check
    except (RecursionError, MemoryError):  # 900 nested operators parse, but are too deep to read back
        return "is nested too deeply for Python to read"
    return None


def _import_aliases(tree):
    """The names that imports bind in the cell (module aliases and imported names)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            bound |= {a.asname or a.name for a in node.names}
    return bound


def _imports(tree, labkit_imports):
    allowed = ", ".join(ALLOWED_MODULES[:3]) + ", ..."
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root == "labkit":
                    return f"imports the module {alias.name}: import only the helpers the exercise names " \
                           f"({_helpers(labkit_imports)})"
                if root not in ALLOWED_MODULES:
                    return f"imports {alias.name}: a solution may import {allowed} (refused)"
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or any(a.name == "*" for a in node.names):
                return f"uses `from {'.' * node.level}{module} import {node.names[0].name}`: import names explicitly"
            root = module.split(".")[0]
            if root == "labkit":
                extra = [a.name for a in node.names if a.name not in labkit_imports.get(module, ())]
                if extra:
                    return f"imports {', '.join(extra)} from {module}: write it yourself (the exercise lets you " \
                           f"import only {_helpers(labkit_imports)} from labkit)"
            elif root not in ALLOWED_MODULES:
                return f"imports from {module}: a solution may import {allowed} (refused)"
    return None


def _helpers(labkit_imports):
    names = sorted(n for found in labkit_imports.values() for n in found)
    return ", ".join(names) if names else "nothing"


def _names_defined(tree, names):
    for name, kind in names.items():
        statement = "class" if kind == "class" else "def"
        bindings = [node for node in tree.body if name in _bound_by(node)]
        defined = [node for node in bindings if isinstance(node, (ast.ClassDef, ast.FunctionDef))
                   and node.name == name]
        if not bindings:
            return f"does not define {name}: write it in this cell as `{statement} {name}...`"
        if not defined or len(bindings) > len(defined):
            how = next((_how(node) for node in bindings if node not in defined), "binds it otherwise")
            return f"{how} {name} instead of writing it: write it in this cell as `{statement} {name}...`"
        if (kind == "class") != isinstance(defined[-1], ast.ClassDef):
            return f"defines {name} with `{'def' if kind == 'class' else 'class'}`; the exercise asks for " \
                   f"`{statement} {name}...`"
    return None


def _bound_by(node):
    """The top-level names a statement binds."""
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, (ast.For, ast.AsyncFor)):
        targets = [node.target]
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
    names = set()
    for target in targets:
        names |= _target_names(target)
    if isinstance(node, (ast.If, ast.Try, ast.While)):  # definitions nested in a block
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                names |= _bound_by(child)
    return names


def _target_names(target):
    """The names an assignment target binds: `x`, `x, y`, `*rest`; not `x.attr` or `x[0]` (those change x)."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*map(_target_names, target.elts)) if target.elts else set()
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return set()


def _how(node):
    if isinstance(node, ast.ImportFrom):
        return f"imports from {node.module}"
    if isinstance(node, ast.Import):
        return "imports"
    return "assigns"


def _interpreter_access(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in REFUSED_NAMES:
            return f"uses {node.id}: a solution needs no interpreter, file or notebook access (refused)"
        if isinstance(node, ast.Attribute) and _is_dunder(node.attr) and node.attr not in ALLOWED_DUNDERS:
            return f"uses the attribute {node.attr}: a solution needs no interpreter internals (refused)"
        if isinstance(node, ast.Name) and _is_dunder(node.id) and node.id not in ALLOWED_DUNDERS:
            return f"uses {node.id}: a solution needs no interpreter internals (refused)"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            name = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str) and not _is_dunder(name.value)):
                return "uses getattr with a computed or special name: write the attribute out (refused)"
    return None


def _is_dunder(name):
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def _library_changes(tree, aliases):
    """An assignment into something the cell did not make: a module (torch, F, an import) or a builtin."""
    own = {n for stmt in ast.walk(tree) if isinstance(stmt, ast.stmt) for n in _bound_by(stmt)} - aliases
    own |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, (ast.Attribute, ast.Subscript)) and _root(part) not in own:
                    return f"changes {ast.unparse(part)}: a solution may not change a library (refused)"
    return None


def _root(node):
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None
