"""Copies that mean something: pairs of students who share code that the course's own code does not explain.

Each student's solution to an exercise is reduced to fingerprints, as MOSS does
(Schleimer, Wilkerson and Aiken, "Winnowing: local algorithms for document
fingerprinting", SIGMOD 2003):

  1. normalise (Python's `ast`): docstrings and unused imports dropped; every name
     the code binds (functions, classes, arguments, variables, and attributes of
     `self`) becomes `V`; a module alias becomes its module (`F` and `nnf` both
     `torch.nn.functional`); a name bound once to a library's dotted name becomes
     that name (`Lin = nn.Linear`: `Lin(4, 2)` is `torch.nn.Linear(4, 2)`); a torch or
     math call's arguments at their default are dropped and the rest put in one form
     (`nn.ReLU(inplace=True)` is `nn.ReLU(True)`); the operands of `+ * & | ^ == !=` are sorted, so
     `a + b` is `b + a`; definitions are sorted, so their order does not count;
  2. the normalised code (`ast.unparse`) is cut into tokens (`tokenize`), and every
     run of K tokens hashed;
  3. winnowing keeps the smallest hash of every W consecutive ones: any run of
     K + W - 1 tokens two solutions share gives them a fingerprint in common.

What is not evidence is then taken away (MOSS's "base file"): the fingerprints of
the course's reference solution and of the stub the release hands out, which
every correct answer is near, and those that more than COMMON students share
(an idiom; MOSS's -m). Two students are flagged when at least MIN_SHARED of what is left is
common to both and that is at least THRESHOLD of the smaller one's: a similarity
from 0 to 1, reported with the other student's name (`bob (0.86)`). The points
stay; the instructor decides.
"""

import ast
import copy
import functools
import hashlib
import importlib
import inspect
import io
import math
import tokenize
from itertools import combinations

K = 10  # tokens per hashed run
W = 5  # winnowing window: a shared run of K + W - 1 = 14 tokens always gives a shared fingerprint
THRESHOLD = 0.5  # the share of the smaller student's own fingerprints that the other has too
MIN_SHARED = 4  # fingerprints in common, at least: a line or two shared by chance is not a copy
COMMON = 10  # a fingerprint more students share (or a tenth of the class, if more) is an idiom (MOSS's -m 10)
COMMUTATIVE = (ast.Add, ast.Mult, ast.BitAnd, ast.BitOr, ast.BitXor)
NOTEBOOK_MODULES = {"nn": "torch.nn", "F": "torch.nn.functional"}  # what the notebooks import for the student
MAX_SOURCE = 64 * 2**10  # characters: a lab solution is a few thousand; a 10 MB cell cost the grader 2.5 GB to parse
LIBRARIES = ("torch", "math")  # whose callables' defaults are looked up (never a student's own module)


def fingerprints(source):
    """The winnowed fingerprints of a solution's normalised code: a set of ints (empty if it does not parse,
    or is nested too deep to walk)."""
    try:
        tokens = _tokens(ast.unparse(normalise(ast.parse(source))))
    except (SyntaxError, ValueError, RecursionError, MemoryError, tokenize.TokenError):
        return set()
    hashes = [int.from_bytes(hashlib.blake2b(" ".join(tokens[i:i + K]).encode(), digest_size=8).digest(), "big")
              for i in range(len(tokens) - K + 1)]
    return _winnow(hashes)


def _winnow(hashes):
    """The smallest hash of each window of W hashes (a set: which of two equal ones is kept does not matter)."""
    if len(hashes) <= W:
        return {min(hashes)} if hashes else set()
    return {min(hashes[start:start + W]) for start in range(len(hashes) - W + 1)}


def _tokens(code):
    """The code's tokens as strings, without comments, blank lines or layout."""
    skip = {tokenize.ENCODING, tokenize.ENDMARKER, tokenize.NL, tokenize.COMMENT}
    return [t.string or tokenize.tok_name[t.type] for t in tokenize.generate_tokens(io.StringIO(code).readline)
            if t.type not in skip]


def normalise(tree):
    """The syntax tree with what a copier changes for free made the same (see the module docstring)."""
    tree = _Aliases(tree).visit(tree)
    tree = _Names(tree).visit(tree)
    tree = _Defaults().visit(tree)
    tree = _Order().visit(tree)
    return ast.fix_missing_locations(tree)


class _Aliases(ast.NodeTransformer):
    """A name bound once to a library's dotted name (`Lin = nn.Linear`, `Lin, Seq = nn.Linear, nn.Sequential`)
    is replaced by that dotted name wherever it is read, and its assignment goes: `Lin(4, 2)` is `nn.Linear(4, 2)`."""

    def __init__(self, tree):
        bindings, imported = {}, set()
        for node in ast.walk(tree):
            for name in _bound_names(node):
                bindings[name] = bindings.get(name, 0) + 1
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported.update(a.asname or a.name.split(".")[0] for a in node.names)
        local = set(bindings) - imported  # a dotted name on one of these is the student's own, not a library's
        self.aliases = {}
        for node in ast.walk(tree):
            pairs = _alias_pairs(node)
            if pairs and all(bindings[target] == 1 and _dotted(value).split(".")[0] not in local
                             for target, value in pairs):
                self.aliases.update(pairs)

    def visit_Assign(self, node):
        pairs = _alias_pairs(node)
        if pairs and all(self.aliases.get(target) is value for target, value in pairs):
            return None
        return self.generic_visit(node)

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and node.id in self.aliases:
            return ast.copy_location(copy.deepcopy(self.aliases[node.id]), node)
        return node


def _bound_names(node):
    """The names one node binds (an assignment's, a definition's, an argument's, an import's, an except's)."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
        return [node.id]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, ast.ExceptHandler) and node.name:
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in node.names]
    return []


def _alias_pairs(node):
    """[(name, dotted value)] of an assignment `a = x.y` or `a, b = x.y, z` (names to dotted names only), else []."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
        return []
    target, value = node.targets[0], node.value
    if isinstance(target, ast.Name):
        targets, values = [target], [value]
    elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
        targets, values = target.elts, value.elts
    else:
        return []
    if all(isinstance(t, ast.Name) and isinstance(v, (ast.Name, ast.Attribute)) and _dotted(v)
           for t, v in zip(targets, values)):
        return [(t.id, v) for t, v in zip(targets, values)]
    return []


def _dotted(node):
    """"a.b.c" of a Name or a chain of attributes on one, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


class _Names(ast.NodeTransformer):
    """Every name the code binds becomes V, module aliases their module, and unused imports go. Names it only
    reads (torch, nn, F from the notebook, builtins) are the same library for everyone, and stay."""

    def __init__(self, tree):
        self.used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        self.bound = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)
                      and isinstance(node.ctx, (ast.Store, ast.Del))}
        self.bound |= {node.name for node in ast.walk(tree)
                       if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        self.bound |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
        self.bound |= {node.name for node in ast.walk(tree) if isinstance(node, ast.ExceptHandler) and node.name}
        self.modules = {name: module for name, module in NOTEBOOK_MODULES.items() if name not in self.bound}
        self.selves, self.scopes = [], ["module"]

    def visit_Import(self, node):
        node.names = [a for a in node.names if (a.asname or a.name.split(".")[0]) in self.used]
        for alias in node.names:
            top = alias.name.split(".")[0]  # `import torch.nn` binds torch; `import torch.nn as tnn`, torch.nn
            self.modules[alias.asname or top] = alias.name if alias.asname else top
            alias.asname = None
        return node if node.names else None

    def visit_ImportFrom(self, node):
        node.names = [a for a in node.names if (a.asname or a.name) in self.used]
        for alias in node.names:
            self.modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            alias.asname = None
        return node if node.names else None

    def visit_FunctionDef(self, node):
        node.name, node.returns = "V", None
        _drop_docstring(node)
        arguments = node.args.posonlyargs + node.args.args
        method = self.scopes[-1] == "class"
        self.selves.append(arguments[0].arg if method and arguments else None)
        self.scopes.append("function")
        self.generic_visit(node)
        self.scopes.pop(), self.selves.pop()
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        node.name = "V"
        _drop_docstring(node)
        self.scopes.append("class")
        self.generic_visit(node)
        self.scopes.pop()
        return node

    def visit_arg(self, node):
        node.arg, node.annotation = "V", None
        return node

    def visit_Name(self, node):
        if node.id in self.modules:
            node.id = self.modules[node.id]
        elif node.id in self.bound:
            node.id = "V"
        return node

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and self.selves and node.value.id == self.selves[-1]:
            node.attr = "V"  # self.net and self.body are the same attribute under another name
        return self.generic_visit(node)


class _Defaults(ast.NodeTransformer):
    """A call of a library's callable (torch's, math's) with its arguments in one form: those at their default
    value dropped, the others positional up to the first one dropped or left out, keywords after, so
    `nn.Linear(4, 2, bias=True)` is `nn.Linear(4, 2)` and `nn.ReLU(inplace=True)` is `nn.ReLU(True)`."""

    def visit_Call(self, node):
        self.generic_visit(node)
        signature = _signature(_dotted(node.func) or "")
        if signature is None or any(isinstance(a, ast.Starred) for a in node.args) \
                or any(k.arg is None for k in node.keywords):
            return node
        try:
            bound = signature.bind(*node.args, **{k.arg: k.value for k in node.keywords})
        except TypeError:
            return node
        if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values() if p.name in bound.arguments):
            return node
        node.args, node.keywords, gap = [], [], False
        for parameter in signature.parameters.values():
            value = bound.arguments.get(parameter.name)
            if value is None or _is_default(value, parameter.default):
                gap = True
            elif parameter.kind is parameter.VAR_KEYWORD:
                node.keywords += [ast.keyword(name, v) for name, v in sorted(value.items())]
            elif parameter.kind is parameter.KEYWORD_ONLY or gap:
                node.keywords.append(ast.keyword(parameter.name, value))
            else:
                node.args.append(value)
        return node


@functools.lru_cache(maxsize=None)
def _signature(dotted):
    """The signature of a library's callable named `torch.nn.Linear` (a class: its __init__'s), or None (not a
    library's, no Python signature). Only attributes of an imported library are read: nothing is imported
    but the library itself."""
    root, *path = dotted.split(".")
    if root not in LIBRARIES or any(part.startswith("_") for part in path):
        return None
    try:
        found = importlib.import_module(root)
        for part in path:
            found = getattr(found, part)
        return inspect.signature(found) if callable(found) else None
    except (AttributeError, ImportError, TypeError, ValueError):
        return None


def _is_default(value, default):
    """Whether an argument's syntax is a constant equal to the parameter's default (True is not 1)."""
    if default is inspect.Parameter.empty:
        return False
    try:
        constant = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return type(constant) is type(default) and constant == default


def _drop_docstring(node):
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        node.body = body[1:] or [ast.Pass()]


class _Order(ast.NodeTransformer):
    """Commutative operands and definitions in one order (their normalised text), whatever the author's."""

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, COMMUTATIVE):
            op = type(node.op)
            operands = sorted(_chain(node, op), key=ast.dump)
            node = operands[0]
            for operand in operands[1:]:
                node = ast.BinOp(node, op(), operand)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            node.left, node.comparators[0] = sorted([node.left, node.comparators[0]], key=ast.dump)
        return node

    def visit_Module(self, node):
        self.generic_visit(node)
        node.body = _sorted_definitions(node.body)
        return node

    def visit_ClassDef(self, node):
        self.generic_visit(node)
        node.body = _sorted_definitions(node.body)
        return node


def _chain(node, op):
    """The operands of a + b + c (one commutative operator, nested), flattened."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, op):
        return _chain(node.left, op) + _chain(node.right, op)
    return [node]


def _sorted_definitions(body):
    """The statements with every function and class definition sorted by its normalised text, in place."""
    definitions = sorted((s for s in body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))),
                         key=ast.dump)
    order = iter(definitions)
    return [next(order) if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else s for s in body]


# ---------------------------------------------------------------------------
# A class


def similar_pairs(solutions, base_sources):
    """{(a, b): similarity} of the students whose solutions share more than the base explains.

    solutions:    {student: source} of one exercise (students who left the stub are best left out);
    base_sources: the reference solution and the stub: what every answer may share without copying.
    """
    base = set().union(*(fingerprints(source) for source in base_sources))
    own = {student: fingerprints(source) - base for student, source in solutions.items()}
    holders = {}
    for student, prints in own.items():
        for mark in prints:
            holders.setdefault(mark, set()).add(student)
    common = max(COMMON, math.ceil(len(own) / 10))  # shared by more students than this: an idiom, not a copy
    own = {student: {m for m in prints if len(holders[m]) <= common} for student, prints in own.items()}
    pairs = {}
    for a, b in combinations(sorted(own), 2):
        shared = len(own[a] & own[b])
        if shared >= MIN_SHARED:
            similarity = shared / min(len(own[a]), len(own[b]))
            if similarity >= THRESHOLD:
                pairs[a, b] = similarity
    return pairs


def flag(rows, class_, exercises):
    """Fill the gradebook rows' `copy_of` with the students each one shares code with: `bob (0.86); ...`.

    rows: {student: [row]}; class_: [submissions.Submission]; exercises: [grade.Exercise]."""
    for exercise in exercises:
        key = (exercise.notebook, exercise.name)
        solutions = {s.student: "\n\n".join(s.cells[key]) for s in class_ if key in s.cells}
        # Not compared: a student who left the stub, or wrote more than MAX_SOURCE characters.
        solutions = {student: source for student, source in solutions.items()
                     if source.strip() != exercise.stub.strip() and len(source) <= MAX_SOURCE}
        found = {}
        for (a, b), similarity in similar_pairs(solutions, (exercise.reference, exercise.stub)).items():
            found.setdefault(a, []).append((similarity, b))
            found.setdefault(b, []).append((similarity, a))
        for student, others in found.items():
            for r in rows.get(student, []):
                if (r["notebook"], r["exercise"]) == key:
                    r["copy_of"] = "; ".join(f"{other} ({similarity:.2f})"
                                             for similarity, other in sorted(others, key=lambda o: (-o[0], o[1])))
