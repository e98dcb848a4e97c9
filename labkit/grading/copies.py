"""Copies that mean something: pairs of students who share code that the course's own code does not explain.

Each student's solution to an exercise is reduced to fingerprints, as MOSS does
(Schleimer, Wilkerson and Aiken, "Winnowing: local algorithms for document
fingerprinting", SIGMOD 2003):

  1. normalise (Python's `ast`): docstrings and unused imports dropped; every name
     the code binds (functions, classes, arguments, variables, and attributes of
     `self`) becomes `V`; a module alias becomes its module (`F` and `nnf` both
     `torch.nn.functional`); the operands of `+ * & | ^ == !=` are sorted, so
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
import hashlib
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
    tree = _Names(tree).visit(tree)
    tree = _Order().visit(tree)
    return ast.fix_missing_locations(tree)


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
        self.modules, self.selves, self.scopes = {}, [], ["module"]

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
        solutions = {student: source for student, source in solutions.items()
                     if source.strip() != exercise.stub.strip()}  # a student who left the stub is not compared
        found = {}
        for (a, b), similarity in similar_pairs(solutions, (exercise.reference, exercise.stub)).items():
            found.setdefault(a, []).append((similarity, b))
            found.setdefault(b, []).append((similarity, a))
        for student, others in found.items():
            for r in rows.get(student, []):
                if (r["notebook"], r["exercise"]) == key:
                    r["copy_of"] = "; ".join(f"{other} ({similarity:.2f})"
                                             for similarity, other in sorted(others, key=lambda o: (-o[0], o[1])))
