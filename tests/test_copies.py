"""The copy detector (labkit/grading/copies.py) on solutions written by hand: honest students who wrote the
same correct answer in their own way are never flagged; a copy with any trivial edit always is."""

import ast
import re
from pathlib import Path

import pytest

from labkit.grading import copies, grade
from labkit.grading.assignment import lab_notebooks, read_notebook

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
REGION = "    # YOUR CODE HERE\n    raise NotImplementedError()"


@pytest.fixture(scope="module")
def exercises():
    found = grade.exercises_of({p.name: read_notebook(p) for p in lab_notebooks(NOTEBOOKS)})
    return {e.name: e for e in found}


def filled(stub, *bodies, indent=""):
    """The stub with its solution regions replaced by `bodies`, in order (each indented like the region)."""
    region = indent + REGION.replace("\n", "\n" + indent)
    parts = stub.split(region)
    assert len(parts) == len(bodies) + 1, (len(parts), len(bodies))
    text = parts[0]
    for body, rest in zip(bodies, parts[1:]):
        text += "\n".join(indent + "    " + line if line else "" for line in body.strip("\n").splitlines()) + rest
    return text


# Six students who wrote the course's losses on their own: the same function, in six ways.
HONEST_LOSSES = [
    ("real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))\n"
     "fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))\nreturn real + fake",
     "return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))"),
    ("return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()",
     "return F.softplus(-fake_logits).mean()"),
    ("bce = torch.nn.BCEWithLogitsLoss()\nones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)\n"
     "return bce(real_logits, ones) + bce(fake_logits, zeros)",
     "bce = torch.nn.BCEWithLogitsLoss()\nreturn bce(fake_logits, torch.ones_like(fake_logits))"),
    ("loss_real = -F.logsigmoid(real_logits)\nloss_fake = -F.logsigmoid(-fake_logits)\n"
     "return loss_real.mean() + loss_fake.mean()",
     "return -F.logsigmoid(fake_logits).mean()"),
    ("# log(1 + exp(-x)) written stably\n"
     "def stable(x):\n    return torch.clamp(x, min=0) + torch.log1p(torch.exp(-torch.abs(x)))\n"
     "return stable(-real_logits).mean() + stable(fake_logits).mean()",
     "return (torch.clamp(-fake_logits, min=0) + torch.log1p(torch.exp(-fake_logits.abs()))).mean()"),
    ("logits = torch.cat([real_logits, fake_logits])\n"
     "targets = torch.cat([torch.ones_like(real_logits), torch.zeros_like(fake_logits)])\n"
     "per = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')\n"
     "n = real_logits.numel()\nreturn per[:n].mean() + per[n:].mean()",
     "target = torch.full_like(fake_logits, 1.0)\nreturn F.binary_cross_entropy_with_logits(fake_logits, target)"),
]

# One student's own losses (alice), and copies of it with one trivial edit each.
ALICE = ("logits = torch.cat([real_logits, fake_logits])\n"
         "targets = torch.cat([torch.ones_like(real_logits), torch.zeros_like(fake_logits)])\n"
         "per = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')\n"
         "n = real_logits.numel()\nreturn per[:n].mean() + per[n:].mean()",
         "target = torch.full_like(fake_logits, 1.0)\nreturn F.binary_cross_entropy_with_logits(fake_logits, target)")


def edits(source):
    """{what was changed: alice's cell with that one trivial edit}."""
    return {
        "renamed identifiers": re.sub(r"\b(logits|targets|per|n|target|real_logits)\b",
                                      lambda m: {"logits": "scores", "targets": "labels", "per": "each", "n": "half",
                                                 "target": "want", "real_logits": "r"}[m.group()], source),
        "reordered definitions": _swapped(source),
        "commuted operands": source.replace("per[:n].mean() + per[n:].mean()", "per[n:].mean() + per[:n].mean()"),
        "an unused import": "import math\nimport numpy as np\n" + source,
        "a renamed module alias": source.replace("import torch.nn.functional as F", "import torch.nn.functional as nnf")
                                        .replace("F.", "nnf."),
        "a line inserted": source.replace("    n = real_logits.numel()\n", "    n = real_logits.numel()\n    assert n > 0\n"),
        "one function copied, the other written anew": source.replace(
            "    target = torch.full_like(fake_logits, 1.0)\n    return F.binary_cross_entropy_with_logits(fake_logits, "
            "target)", "    return -F.logsigmoid(fake_logits).mean()"),
        "all of them at once": "import math\n" + _swapped(source).replace("import torch.nn.functional as F",
                                                                           "from torch.nn import functional as G")
                                                   .replace("F.", "G.").replace("per[:n].mean() + per[n:].mean()",
                                                                                "per[n:].mean() + per[:n].mean()")
                                                   .replace("per", "p").replace("targets", "ys"),
    }


def _swapped(source):
    head, first, second = re.split(r"\n\n\n(?=def )", source)
    return "\n\n\n".join([head, second.rstrip("\n"), first]) + "\n"


# alice's MLP networks (layers written out, a helper of her own), and a copy with `self.net` renamed.
ALICE_MLP = ('''def block(n_in, n_out):
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True)]
self.net = nn.Sequential(*block(latent_dim, 128), *block(128, 256), *block(256, 512),
                         nn.Linear(512, 1024), nn.Tanh())''',
             '''norm = (lambda n: nn.BatchNorm1d(n)) if batch_norm else (lambda n: nn.Identity())
self.net = nn.Sequential(nn.Linear(1024, 512), norm(512), nn.LeakyReLU(0.2, inplace=True),
                         nn.Linear(512, 256), norm(256), nn.LeakyReLU(0.2, inplace=True),
                         nn.Linear(256, 128), norm(128), nn.LeakyReLU(0.2, inplace=True),
                         nn.Linear(128, 1), nn.Sigmoid())''')
HONEST_MLP = [
    ('''self.net = nn.Sequential(
    nn.Linear(latent_dim, 128), nn.BatchNorm1d(128), nn.ReLU(True),
    nn.Linear(128, 256), nn.BatchNorm1d(256), nn.ReLU(True),
    nn.Linear(256, 512), nn.BatchNorm1d(512), nn.ReLU(True),
    nn.Linear(512, 32 * 32), nn.Tanh())''',
     '''layers = []
sizes = [32 * 32, 512, 256, 128]
for a, b in zip(sizes, sizes[1:]):
    layers.append(nn.Linear(a, b))
    if batch_norm:
        layers.append(nn.BatchNorm1d(b))
    layers.append(nn.LeakyReLU(0.2, True))
layers += [nn.Linear(128, 1), nn.Sigmoid()]
self.net = nn.Sequential(*layers)'''),
    ('''modules = []
width = latent_dim
for size in [128, 256, 512]:
    modules.extend([nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(inplace=True)])
    width = size
modules.extend([nn.Linear(width, 1024), nn.Tanh()])
self.net = nn.Sequential(*modules)''',
     '''def hidden(i, o):
    parts = [nn.Linear(i, o)] + ([nn.BatchNorm1d(o)] if batch_norm else [])
    return parts + [nn.LeakyReLU(negative_slope=0.2, inplace=True)]
self.net = nn.Sequential(*hidden(1024, 512), *hidden(512, 256), *hidden(256, 128), nn.Linear(128, 1),
                         nn.Sigmoid())'''),
]


def test_six_students_who_wrote_the_right_losses_their_own_way_are_never_flagged(exercises):
    e = exercises["gan_losses"]
    class_ = {f"honest-{i}": filled(e.stub, *bodies) for i, bodies in enumerate(HONEST_LOSSES)}
    class_["verbatim"] = e.reference  # the course's own answer, word for word: shared with the base, no evidence
    assert copies.similar_pairs(class_, (e.reference, e.stub)) == {}
    # What the base file takes away: without it, the two students who wrote the reference are "copies".
    assert ("honest-0", "verbatim") in copies.similar_pairs(class_, ())


def test_two_independent_correct_networks_are_not_flagged(exercises):
    e = exercises["mlp_networks"]
    class_ = {f"honest-{i}": filled(e.stub, *bodies, indent="    ") for i, bodies in enumerate(HONEST_MLP)}
    class_["alice"] = filled(e.stub, *ALICE_MLP, indent="    ")
    assert copies.similar_pairs(class_, (e.reference, e.stub)) == {}


@pytest.mark.parametrize("edit", ["renamed identifiers", "reordered definitions", "commuted operands",
                                  "an unused import", "a renamed module alias", "a line inserted",
                                  "one function copied, the other written anew", "all of them at once"])
def test_a_copy_with_a_trivial_edit_is_flagged_among_honest_students(exercises, edit):
    e = exercises["gan_losses"]
    alice = filled(e.stub, *ALICE)
    copy = edits(alice)[edit]
    assert copy != alice
    class_ = {f"honest-{i}": filled(e.stub, *bodies) for i, bodies in enumerate(HONEST_LOSSES[:5])}
    found = copies.similar_pairs({**class_, "alice": alice, "bob": copy}, (e.reference, e.stub))
    assert list(found) == [("alice", "bob")] and found["alice", "bob"] > 0.8, found


def test_a_copy_with_the_networks_attribute_renamed_is_flagged(exercises):
    e = exercises["mlp_networks"]
    alice = filled(e.stub, *ALICE_MLP, indent="    ")
    class_ = {f"honest-{i}": filled(e.stub, *bodies, indent="    ") for i, bodies in enumerate(HONEST_MLP)}
    found = copies.similar_pairs({**class_, "alice": alice, "bob": alice.replace("self.net", "self.body")},
                                 (e.reference, e.stub))
    assert list(found) == [("alice", "bob")] and found["alice", "bob"] > 0.9, found


# The red team's alice: a whole MLP networks solution; their two copies of it, each beaten the detector before.
RED_ALICE = '''import torch
from torch import nn


class MLPGenerator(nn.Module):
    def __init__(self, latent_dim=16):
        super().__init__()
        self.latent_dim = latent_dim
        self.body = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.BatchNorm1d(128), nn.ReLU(True),
            nn.Linear(128, 256), nn.BatchNorm1d(256), nn.ReLU(True),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.ReLU(True),
            nn.Linear(512, 1024), nn.Tanh())

    def forward(self, z):
        flat = z.reshape(z.shape[0], self.latent_dim)
        return self.body(flat).reshape(-1, 1, 32, 32)


class MLPDiscriminator(nn.Module):
    def __init__(self, batch_norm=False):
        super().__init__()
        def norm(n):
            return [nn.BatchNorm1d(n)] if batch_norm else []
        self.body = nn.Sequential(
            nn.Linear(1024, 512), *norm(512), nn.LeakyReLU(0.2, True),
            nn.Linear(512, 256), *norm(256), nn.LeakyReLU(0.2, True),
            nn.Linear(256, 128), *norm(128), nn.LeakyReLU(0.2, True),
            nn.Linear(128, 1), nn.Sigmoid())

    def logits(self, images):
        return self.body[:-1](images.reshape(images.shape[0], 1024)).view(-1)

    def forward(self, images):
        return self.body(images.reshape(images.shape[0], 1024)).view(-1)
'''
RED_COPIES = {
    "library aliases": RED_ALICE.replace(
        "from torch import nn\n", "from torch import nn\n\nLin, Norm, Act, Seq = nn.Linear, nn.BatchNorm1d, "
        "nn.LeakyReLU, nn.Sequential\n").replace("nn.Sequential(", "Seq(").replace("nn.Linear(", "Lin(")
    .replace("nn.BatchNorm1d(", "Norm(").replace("nn.LeakyReLU(", "Act("),  # 34 of 91 shared, 0.37, before
    "arguments at their defaults": re.sub(r"nn\.BatchNorm1d\(([^()]*)\)", r"nn.BatchNorm1d(\1, eps=1e-05)", re.sub(
        r"nn\.Linear\(([^()]*)\)", r"nn.Linear(\1, bias=True)", RED_ALICE)).replace(
        "nn.ReLU(True)", "nn.ReLU(inplace=True)").replace(
        "nn.LeakyReLU(0.2, True)", "nn.LeakyReLU(negative_slope=0.2, inplace=True)"),  # 44 of 91, 0.48, before
}


@pytest.mark.parametrize("edit", sorted(RED_COPIES))
def test_a_copy_with_library_aliases_or_default_arguments_added_is_flagged(exercises, edit):
    e = exercises["mlp_networks"]
    copy = RED_COPIES[edit]
    assert copy != RED_ALICE
    class_ = {"honest-1": filled(e.stub, *HONEST_MLP[1], indent="    "),
              "erin": filled(e.stub, *ALICE_MLP, indent="    ")}  # honest-0's generator is alice's, line for line
    found = copies.similar_pairs({**class_, "alice": RED_ALICE, "bob": copy}, (e.reference, e.stub))
    assert list(found) == [("alice", "bob")] and found["alice", "bob"] > 0.9, found


def test_aliases_and_default_arguments_are_normalised_but_the_students_own_names_and_other_values_are_not():
    def same(a, b):
        return ast.unparse(copies.normalise(ast.parse(a))) == ast.unparse(copies.normalise(ast.parse(b)))

    assert same("Lin = nn.Linear\nx = Lin(4, 2)", "x = nn.Linear(4, 2)")
    assert same("import torch\nA, B = torch.nn.ReLU, torch.tanh\nx = B(A()(y))", "import torch\nx = torch.tanh(torch.nn.ReLU()(y))")
    assert same("x = nn.Linear(4, 2, bias=True)", "x = nn.Linear(4, 2)")
    assert same("x = nn.LeakyReLU(negative_slope=0.2, inplace=True)", "x = nn.LeakyReLU(0.2, True)")
    assert same("x = F.binary_cross_entropy_with_logits(a, b, reduction='mean')", "x = F.binary_cross_entropy_with_logits(a, b)")
    assert not same("x = nn.Linear(4, 2, bias=False)", "x = nn.Linear(4, 2)")  # not the default: kept
    assert not same("x = nn.ReLU(inplace=1)", "x = nn.ReLU(inplace=False)")
    assert not same("def f(self):\n    net = self.net\n    return net(1)", "def f(self):\n    return self.net(1)")
    assert not same("Lin = nn.Linear\nLin = nn.Conv2d\nx = Lin(4, 2)", "x = nn.Linear(4, 2)")  # bound twice: a variable


def test_the_gradebook_names_the_other_student_with_the_similarity_and_keeps_the_points(exercises):
    from labkit.grading.gradebook import row
    from labkit.grading.submissions import Submission

    e = exercises["gan_losses"]
    alice = filled(e.stub, *ALICE)
    sources = {"alice": alice, "bob": edits(alice)["all of them at once"], "carol": filled(e.stub, *HONEST_LOSSES[1]),
               "dave": e.stub}
    class_ = [Submission(name, Path(name), {(e.notebook, e.name): [source]}) for name, source in sources.items()]
    rows = {name: [row(name, e, True, "passed")] for name in sources}
    copies.flag(rows, class_, [e])
    assert [rows[name][0]["copy_of"] for name in sources] == ["bob (1.00)", "alice (1.00)", "", ""]
    assert {r[0]["points"] for r in rows.values()} == {e.points}


def test_a_solution_of_megabytes_is_not_compared_and_the_others_still_are(exercises):
    """Red team: a 10 MB solution cell cost the grading process 2.5 GB to fingerprint (then the OOM killer took
    every student's report). Solutions over copies.MAX_SOURCE characters are left out of the comparison."""
    from labkit.grading.gradebook import row
    from labkit.grading.submissions import Submission

    e = exercises["gan_losses"]
    alice = filled(e.stub, *ALICE)
    huge = alice + "\n" + "x = 1\n" * (copies.MAX_SOURCE // 6 + 1)  # alice's code, padded past the cap
    sources = {"alice": alice, "bob": edits(alice)["all of them at once"], "mallory": huge}
    class_ = [Submission(name, Path(name), {(e.notebook, e.name): [source]}) for name, source in sources.items()]
    rows = {name: [row(name, e, True, "passed")] for name in sources}
    copies.flag(rows, class_, [e])
    assert [rows[name][0]["copy_of"] for name in sources] == ["bob (1.00)", "alice (1.00)", ""]


def test_code_that_does_not_parse_or_is_too_deep_has_no_fingerprint():
    assert copies.fingerprints("def f(:") == set()
    assert copies.fingerprints("x = " + "-" * 900 + "1\n") == set()
    assert copies.fingerprints("x = " + "-" * 20_000 + "1\n") == set()
