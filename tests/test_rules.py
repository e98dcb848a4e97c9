"""What grading reads in a solution before running it, and what may cross from a kernel to the grader."""

import math

import pytest
import torch

from labkit.grading import rules, wire

LOSSES = {"discriminator_loss": "function", "generator_loss": "function"}
NETWORKS = {"Generator": "class"}
HELPERS = {"labkit.models": ("init_weights",)}

RIGHT_LOSSES = '''
import torch.nn.functional as F


def discriminator_loss(real_logits, fake_logits):
    """-log D(x) - log(1 - D(G(z)))."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    return real + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def generator_loss(fake_logits):
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
'''


def test_a_plain_solution_breaks_no_rule():
    assert rules.refusal(RIGHT_LOSSES, LOSSES, HELPERS) is None
    network = ("import numpy as np\nfrom torch import nn\nfrom labkit.models import init_weights\n\n"
               "class Generator(nn.Module):\n    def __init__(self, latent_dim=16, hidden_dim=16):\n"
               "        super().__init__()\n        self.net = nn.Sequential(getattr(nn, 'ReLU')())\n"
               "        self.apply(init_weights)\n    def forward(self, z):\n        return self.net(z)\n")
    assert rules.refusal(network, NETWORKS, HELPERS) is None


@pytest.mark.parametrize("source, names, said", [
    ("get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n" + RIGHT_LOSSES, LOSSES,
     "uses get_ipython"),
    ("import labkit.checks as c\nc.gan_losses = lambda *a, **k: None\n" + RIGHT_LOSSES, LOSSES,
     "imports the module labkit.checks"),
    ("from labkit.solutions import discriminator_loss, generator_loss\n", LOSSES,
     "imports discriminator_loss, generator_loss from labkit.solutions"),
    ("from labkit.models import init_weights as Generator\n", NETWORKS, "imports from labkit.models Generator"),
    ("import torch\nclass G:\n    pass\nGenerator = G\n", NETWORKS, "assigns Generator instead of writing it"),
    ("import IPython\nIPython.core.interactiveshell.InteractiveShell.showtraceback = print\n" + RIGHT_LOSSES, LOSSES,
     "imports IPython"),
    ("import sys\nsys.modules['labkit.checks'] = None\n" + RIGHT_LOSSES, LOSSES, "imports sys"),
    (RIGHT_LOSSES + "generator_loss.__code__ = discriminator_loss.__code__\n", LOSSES,
     "uses the attribute __code__"),
    (RIGHT_LOSSES + "torch.allclose = lambda *a, **k: True\ntorch.isfinite = lambda x: x == x\n", LOSSES,
     "changes torch.allclose"),
    (RIGHT_LOSSES + "import torch as t\nt.nn.functional.binary_cross_entropy_with_logits = None\n", LOSSES,
     "changes t.nn.functional.binary_cross_entropy_with_logits"),
    (RIGHT_LOSSES + "open('grades.csv', 'w').write('x')\n", LOSSES, "uses open"),
    (RIGHT_LOSSES + "import os\nos._exit(0)\n", LOSSES, "imports os"),
    (RIGHT_LOSSES + "x = getattr(torch, '__dict__')\n", LOSSES, "getattr"),
    (RIGHT_LOSSES + "x = eval('1')\n", LOSSES, "uses eval"),
    ("def discriminator_loss(r, f):\n    return r\n", LOSSES, "does not define generator_loss"),
    ("def Generator():\n    pass\n", NETWORKS, "defines Generator with `def`"),
    ("def f(:\n", LOSSES, "SyntaxError"),
    ("x = 1\n" * 60_000, LOSSES, "a table of answers"),
    ("x = " + "-" * 20_000 + "1\n", LOSSES, "nested too deeply for Python to read"),  # its parser gives up
])
def test_each_rule_refuses_with_its_reason(source, names, said):
    reason = rules.refusal(source, names, HELPERS)
    assert reason is not None and said in reason, reason


def test_plain_data_crosses_and_its_tensors_are_rebuilt_from_bytes():
    value = {"loss": torch.tensor(0.5), "grid": torch.arange(6, dtype=torch.int64).reshape(2, 3),
             "flags": [True, None, 3, -1.5, float("nan"), "text"], "empty": torch.zeros(0, 4)}
    back = wire.decode(wire.encode(value))
    assert torch.equal(back["grid"], value["grid"]) and back["grid"].dtype == torch.int64
    assert back["loss"].shape == () and back["loss"].item() == 0.5
    assert back["flags"][:4] == [True, None, 3, -1.5] and math.isnan(back["flags"][4])
    assert back["empty"].shape == (0, 4)
    weight = torch.nn.Parameter(torch.ones(2))
    assert wire.decode(wire.encode([weight]))[0].requires_grad


class Liar:
    """Says whatever a check wants to hear."""

    def __sub__(self, other):
        return self

    def __abs__(self):
        return self

    def __lt__(self, other):
        return True

    def __eq__(self, other):
        return True

    def item(self):
        return 0.0


class LyingTensor(torch.Tensor):
    def item(self):
        return 0.0


@pytest.mark.parametrize("value, said", [
    (Liar(), "test_rules.Liar object"),
    (torch.zeros(2).as_subclass(LyingTensor), "LyingTensor object"),
    ([1, {"nested": Liar()}], "Liar object"),
    ({1: "a key that is not a string"}, "dict object"),
    (torch.zeros(2, dtype=torch.complex64), "complex64"),
])
def test_anything_else_is_refused_by_the_sender(value, said):
    with pytest.raises(wire.NotPlainData, match=said):
        wire.encode(value)


@pytest.mark.parametrize("message", [
    b"\xff\xfe not utf-8", b"{not json", b'{"tensor": {"dtype": "float32", "shape": [3], "data": "AAAA"}}',
    b'{"tensor": {"dtype": "object", "shape": [1], "data": ""}}', b'{"tensor": {"dtype": "float32", "shape": [-1], '
    b'"data": ""}}', b'{"pickle": "gASV"}', b'{"a": 1, "b": 2}', b"[" * 100 + b"]" * 100,
    b'{"tensor": {"dtype": "float32", "shape": [4611686018427387904, 4], "data": ""}}',  # overflows numel
    wire.encode([torch.zeros(1)] * (wire.MAX_TENSORS + 1)),  # tiny tensors cost the grader 16x their bytes
    wire.encode(wire.build("nn.Linear(2, 2)")), b'{"built": {"expression": "__import__(\'os\')", "seed": 0}}',
    b'{"object": 1}',  # networks go from the grader to the kernel only: a kernel's reply never builds one
])
def test_the_receiver_refuses_a_malformed_message(message):
    with pytest.raises(wire.NotPlainData):
        wire.decode(message)


def test_a_built_network_crosses_as_its_description_and_is_built_again_with_the_same_weights():
    network = wire.build("nn.Sequential(nn.Linear(3, 4), nn.Tanh())", seed=7)
    state = torch.random.get_rng_state()
    message = wire.encode({"network": network})
    assert torch.equal(torch.random.get_rng_state(), state)  # build leaves the global generator alone
    assert b"tensor" not in message and b"nn.Sequential" in message
    seen = []
    rebuilt = wire.decode(message, lambda kind, body: seen.append(kind) or wire.build(body["expression"], body["seed"]))
    assert seen == ["built"] and type(rebuilt["network"]) is torch.nn.Sequential
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), rebuilt["network"].state_dict().values()))
    with pytest.raises(TypeError, match="not a network"):
        wire.build("torch.zeros(3)")
