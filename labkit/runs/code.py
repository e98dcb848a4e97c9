"""Whose code trains a run: labkit's reference pieces, or a student's.

The lab asks students to write some pieces themselves (the networks, the
losses, the rebalancing rule, the VAE's loss). labkit's trainers take those
pieces as a `GANCode` (labkit/gan.py) or `VAECode` (labkit/vae.py), both a
`Code` of this module, so a student's GAN trains with the
student's own code, and labkit's versions stay the reference that the checks
compare against.

A run trained with any student piece must never be mistaken for one trained
by labkit's code, so the pieces are part of the run's identity:
`code.identity` is "labkit" for the reference pieces, and otherwise
"student-" plus a short hash of the student pieces' source code. The run
folder's name ends with it, config.json records it, and the student's source
is saved beside the run (code.py). Changing a student piece changes the hash,
so it trains a new run; running the same cell again finds the old one.

The hash covers the source of each student piece (for a class: its methods),
not the helpers it calls: a change made only in a helper keeps the hash.
"""

import hashlib
import inspect
from dataclasses import dataclass, fields
from pathlib import Path

from .config import REFERENCE


def source_of(piece):
    """The source code of a function or class, also when it was defined in a notebook cell.

    In a Jupyter kernel `inspect.getsource` finds functions (IPython keeps each
    cell's text) but not classes (Python looks for the class's module file), so
    a class is read as its header plus the source of each of its methods.
    """
    try:
        return inspect.getsource(piece)
    except (OSError, TypeError):
        if not inspect.isclass(piece):
            raise ValueError(f"labkit cannot read the source of {piece!r}; define it in a notebook cell "
                             f"or a .py file") from None
    parts = [f"class {piece.__qualname__}({', '.join(b.__qualname__ for b in piece.__bases__)}):"]
    for name, member in vars(piece).items():
        function = getattr(member, "__func__", member)  # staticmethod / classmethod
        if inspect.isfunction(function):
            parts.append(inspect.getsource(function))
        elif not name.startswith("__"):
            parts.append(f"    {name} = {member!r}")
    return "\n".join(parts)


@dataclass(frozen=True)
class Code:
    """Pieces of a trainer; a field left at its default is labkit's reference piece."""

    @property
    def student_pieces(self):
        """{name: piece} of the pieces that are not labkit's."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not f.default}

    @property
    def identity(self):
        """"labkit", or "student-<8 hex digits>" from the student pieces' source."""
        pieces = self.student_pieces
        if not pieces:
            return REFERENCE
        digest = hashlib.sha256(self.source().encode()).hexdigest()
        return f"student-{digest[:8]}"

    def source(self):
        """The student pieces' source, one after another (what `identity` hashes)."""
        return "\n\n".join(f"# {name}\n{source_of(piece)}" for name, piece in sorted(self.student_pieces.items()))


def check_code(code, config, run_dir=None):
    """Refuse a run whose recorded code is not the code given for it."""
    if code.identity != config.code:
        if config.code == REFERENCE:
            raise ValueError(f"this run was trained with labkit's code, not with {code.identity}")
        where = f" (its source is in {Path(run_dir) / 'code.py'})" if run_dir is not None else ""
        kind = "GANCode" if type(code).__name__ == "GANCode" else "VAECode"
        raise ValueError(f"this run was trained with {config.code}'s pieces{where}, not with {code.identity}'s; "
                         f"load it from Python with the same pieces, code={kind}(...), as the notebook that "
                         f"trained it does (the labkit command runs labkit's own code only)")
