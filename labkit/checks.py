"""The public checks of the lab's exercises: each says what it checked, or what is wrong and how to look.

Every check compares a student's piece with labkit's reference answer
(labkit/solutions/) on the same inputs. A passing check prints one
line per property; a failing one raises AssertionError with a message meant
for the student. The instructor's notebooks add hidden checks after these.

The same checks grade a submission, in the grader's own process: there the
student's names are stand-ins for what the student's kernel defined
(labkit/grading/remote.py), so a check uses only what a stand-in offers: calls,
`train`/`eval`, `state_dict`/`load_state_dict`, `parameters` and
`module_types` below.

Grading sets SEED for every exercise from the instructor's secret, the student
and the exercise (labkit/grading/secret.py): a submission cannot know its inputs,
and a regrade draws the same ones. While grading, GRADING is true and a message
shows no value the inputs or the student's code made (`shown`): with the same
inputs on every regrade, a value in the feedback would tell a student the answer
to write into the next submission, and a value the student's code returned could
carry the secret inputs out.
"""

import difflib
import math

import torch

from . import solutions as answers
from .models import count_parameters as count

SEED = 0  # the inputs' seed; grading sets one per student and exercise
GRADING = False  # true while grading: messages then show no values (see `shown`)


def shown(value, spec=""):
    """`value` formatted for a message: in a notebook the value itself, while grading "another value"."""
    return "another value" if GRADING else format(value, spec)


def shape(tensor):
    """A tensor's shape for a message: (8, 1, 32, 32) in a notebook, "another shape" while grading."""
    return "another shape" if GRADING else str(tuple(tensor.shape))


def generator(offset=0):
    """A torch.Generator seeded from SEED: the hidden checks draw every input from it, so the inputs
    depend on nothing but the seed (not on how much the public checks drew before)."""
    return torch.Generator().manual_seed((SEED + 1_000_003 * (offset + 1)) % 2**63)


def ok(text):
    print(f"  ok  {text}")


def copy_weights(source, target):
    """Load `source`'s parameters and buffers into `target` by position (names may differ).

    Two networks with the same layers in the same order then compute the same
    function; a wrong layer shows up as a shape that does not fit.
    """
    src, dst = list(source.state_dict().values()), target.state_dict()
    assert len(src) == len(dst), (f"your network has {shown(len(dst))} weight and buffer tensors, the course's "
                                  f"has {shown(len(src))}: a layer is missing or extra")
    for (name, tensor), value in zip(dst.items(), src):
        assert tensor.shape == value.shape, (f"your layer tensor {shown(name)} has shape {shape(tensor)} where the "
                                             f"course's has {shape(value)}: check that layer's sizes and order")
    target.load_state_dict(dict(zip(dst, src)))


def same_function(mine, reference, inputs, what):
    """With the reference's weights, `mine` must compute what `reference` computes (train and eval mode)."""
    copy_weights(reference, mine)
    for mode in ("train", "eval"):
        mine.train(mode == "train"), reference.train(mode == "train")
        with torch.no_grad():
            a, b = mine(inputs), reference(inputs)
        assert a.shape == b.shape, f"{what} returns shape {shape(a)}, the course's {shape(b)}"
        gap = (a - b).abs().max().item()
        assert gap < 1e-5, (f"{what} computes something else than the course's network with the same weights "
                            f"({mode} mode, largest difference {shown(gap, '.3g')}): check the layers' order, "
                            f"activations "
                            f"(LeakyReLU slope 0.2), BatchNorm placement and the final activation")


def module_types(model):
    """The class names of a network's modules, in the order of `model.modules()`."""
    if hasattr(type(model), "module_types"):  # a stand-in for a network in a student's kernel
        return model.module_types()
    return [type(module).__name__ for module in model.modules()]


# ---------------------------------------------------------------------------
# The network, layer by layer

SHAPE_ONLY = {"Sequential", "ModuleList", "ModuleDict", "Identity", "Flatten", "Unflatten"}  # not layers of the table


def layer_table(model):
    """The network's layers in order, each as text: "Conv2d(1, 16, kernel 4, stride 2, padding 1)", "Tanh".

    From a real network every layer's settings; from a grader's stand-in (which
    offers only `module_types`) the layers' kinds. Only torch.nn's layers count:
    a student's own blocks and reshaping modules are not layers of the table.
    """
    if hasattr(type(model), "module_types"):
        return [name for name in model.module_types()[1:] if is_table_layer(name)]
    return [describe_layer(m) for m in list(model.modules())[1:]
            if not list(m.children()) and is_table_layer(type(m).__name__)]


def is_table_layer(name):
    return name not in SHAPE_ONLY and isinstance(getattr(torch.nn, name, None), type)


def describe_layer(layer):
    """One layer as the course's table writes it."""
    name = type(layer).__name__
    if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        return (f"{name}({layer.in_channels}, {layer.out_channels}, kernel {layer.kernel_size[0]}, "
                f"stride {layer.stride[0]}, padding {layer.padding[0]}" + (", no bias" if layer.bias is None else "")
                + ")")
    if isinstance(layer, torch.nn.Linear):
        return f"Linear({layer.in_features}, {layer.out_features}" + (", no bias" if layer.bias is None else "") + ")"
    if isinstance(layer, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        return f"{name}({layer.num_features})"
    if isinstance(layer, torch.nn.LeakyReLU):
        return f"LeakyReLU({layer.negative_slope:g})"
    return name


def compare_layers(mine, reference, what):
    """Compare a network with the course's layer by layer; a difference fails with the layer it is in."""
    theirs, ours = layer_table(mine), layer_table(reference)
    if GRADING or not any("(" in layer for layer in theirs):  # a stand-in, or grading: the kinds of layer only
        ours, theirs = [kind(layer) for layer in ours], [kind(layer) for layer in theirs]  # (no sizes in messages)
    changes = [op for op in difflib.SequenceMatcher(None, ours, theirs, autojunk=False).get_opcodes()
               if op[0] != "equal"]
    assert not changes, f"{what}: {layer_difference(changes, ours, theirs)}"


def kind(layer):
    return layer.split("(")[0]


def layer_difference(changes, ours, theirs):
    """The first of the differences (difflib opcodes) between the course's layers and yours, in words."""
    op, i1, i2, j1, j2 = changes[0]
    where = f"after layer {i1} ({ours[i1 - 1]})" if i1 else "at the start"
    deleted = {layer: i for o, a, b, _, _ in changes if o == "delete" for i, layer in enumerate(ours[a:b], a)}
    inserted = {layer for o, _, _, a, b in changes if o == "insert" for layer in theirs[a:b]}
    if op == "delete":
        moved = [layer for layer in ours[i1:i2] if layer in inserted]
        return (f"the course has {', '.join(ours[i1:i2])} {where}, and yours has not"
                + (f"; yours has {moved[0]} elsewhere: is it misplaced?" if moved else ""))
    if op == "insert":
        moved = [layer for layer in theirs[j1:j2] if layer in deleted]
        return (f"yours has {', '.join(theirs[j1:j2])} {where.replace('layer', 'the course layer')}, where the "
                f"course has none" + (f"; the course has {moved[0]} after its layer {deleted[moved[0]]}: is it "
                                      f"misplaced?" if moved else ""))
    if [kind(t) for t in theirs[j1:j2]] == [kind(o) for o in ours[i1:i2]]:
        got, want = next((t, o) for t, o in zip(theirs[j1:j2], ours[i1:i2]) if t != o)
        return (f"layer {j1 + 1 + theirs[j1:j2].index(got)} is {got}; the course's is {want} "
                f"(check its channels, kernel, stride, padding and bias)")
    return (f"layer {j1 + 1} is {', '.join(theirs[j1:j2])} where the course has {', '.join(ours[i1:i2])}"
            + (" (LeakyReLU(0.2) in D, ReLU in G)" if any("ReLU" in t for t in theirs[j1:j2] + ours[i1:i2]) else ""))


def call(model, inputs, what):
    """model(inputs), or a failure that says which call went wrong and with what shapes."""
    try:
        with torch.no_grad():
            return model(inputs)
    except (RuntimeError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() and not GRADING else type(err).__name__
        raise AssertionError(f"{what} fails on a batch of shape {tuple(inputs.shape)}: {first}. Check the layers' "
                             f"sizes against the course's table (compare_layers names the first that differs)") from None


# ---------------------------------------------------------------------------
# Notebook 1


def dcgan_networks(Generator, Discriminator):
    """The course's DCGAN generator and discriminator."""
    torch.manual_seed(SEED)
    compare_layers(Generator(16, 16), answers.DCGANGenerator(16, 16), "your Generator(16, 16)")
    compare_layers(Discriminator(16), answers.DCGANDiscriminator(16), "your Discriminator(16)")
    ok("both networks have the course's layers, in the course's order")
    for latent, hidden, expected in ((16, 16, 57_937), (100, 16, 143_953)):
        G = Generator(latent, hidden)
        assert count(G) == expected, (f"Generator({latent}, {hidden}) has {shown(count(G), ',')} parameters; the "
                                      f"course's has {expected:,}")
        ok(f"Generator({latent}, {hidden}) has {expected:,} parameters")
    G, D = Generator(16, 16), Discriminator(16)
    assert count(D) == count(answers.DCGANDiscriminator(16)), \
        f"Discriminator(16) has {shown(count(D), ',')} parameters; the course's has {count(answers.DCGANDiscriminator(16)):,}"
    ok(f"Discriminator(16) has {count(answers.DCGANDiscriminator(16)):,} parameters")
    z = torch.randn(8, 16)
    with torch.no_grad():
        images = call(G, z, "your Generator")
        assert images.shape == (8, 1, 32, 32), f"G(z) has shape {shape(images)}; expected (8, 1, 32, 32)"
        assert images.min() >= -1 and images.max() <= 1, "G's images must lie in [-1, 1] (a Tanh at the end)"
        ok("G maps (8, 16) codes to (8, 1, 32, 32) images in [-1, 1]")
        p = call(D, images, "your Discriminator")
        assert p.shape == (8,), f"D(images) has shape {shape(p)}; expected one probability per image, (8,)"
        assert ((p > 0) & (p < 1)).all(), "D's outputs must be probabilities in (0, 1) (a Sigmoid at the end)"
        logits = call(D.logits, images, "your Discriminator's logits")
        assert logits.shape == p.shape, (f"D.logits(images) has shape {shape(logits)}; expected one score per "
                                         f"image, {tuple(p.shape)}, like D(images)")
        assert torch.allclose(torch.sigmoid(logits), p, atol=1e-6), \
            "D.logits(x) must be D's score before its final Sigmoid: sigmoid(D.logits(x)) == D(x)"
        ok("D gives one probability in (0, 1) per image, and logits before its Sigmoid")
    same_function(Generator(16, 16), answers.DCGANGenerator(16, 16), z, "your Generator")
    same_function(Discriminator(16), answers.DCGANDiscriminator(16), torch.rand(8, 1, 32, 32) * 2 - 1, "your Discriminator")
    ok("with the same weights, both compute what the course's networks compute")
    print("All public checks passed.")


def gan_losses(discriminator_loss, generator_loss):
    """The step's two losses, from D's logits."""
    torch.manual_seed(SEED)
    real, fake = torch.randn(64) * 3, torch.randn(64) * 3
    for name, mine, ref in (("discriminator_loss", loss_call(discriminator_loss, "discriminator_loss", real, fake),
                             answers.discriminator_loss(real, fake)),
                            ("generator_loss", loss_call(generator_loss, "generator_loss", fake),
                             answers.generator_loss(fake))):
        assert torch.is_tensor(mine) and mine.dim() == 0, \
            f"{name} must return one number (a 0-d tensor), the batch mean; it returns shape {shape(mine)}"
        assert math.isclose(mine.item(), ref.item(), rel_tol=1e-4, abs_tol=1e-6), \
            f"{name} gives {shown(mine.item(), '.5f')} where it should give {shown(ref.item(), '.5f')}" + \
            loss_mistake(name, mine, real, fake)
    ok("both losses equal binary cross-entropy with the right targets, averaged over the batch")
    # A sure discriminator. In float32, sigmoid(s) rounds to exactly 1.0 from s of about 17, and to exactly 0.0
    # only below about -103; at logits of +-200 both probabilities are exact 1s and 0s.
    logits = "compute it from the logits, e.g. with F.binary_cross_entropy_with_logits, not from torch.sigmoid"
    clamped = ("gives {got} where it should give {want}: it looks computed from probabilities with "
               "nn.BCELoss / F.binary_cross_entropy, which clamp log(0) to -100, so the loss stops at 100 and its "
               "gradient is 0 exactly where G needs it; " + logits)
    sure_real, sure_fake = torch.full((4,), 200.0, requires_grad=True), torch.full((4,), -200.0, requires_grad=True)
    for name, got, want in (
            ("discriminator_loss (D sure and right)", discriminator_loss(sure_real, sure_fake),
             answers.discriminator_loss(sure_real, sure_fake)),
            ("discriminator_loss (D sure and wrong)", discriminator_loss(-sure_real, -sure_fake),
             answers.discriminator_loss(-sure_real, -sure_fake))):
        assert math.isfinite(got.item()), (
            f"{name} is infinite or NaN for probabilities of exactly 0 and 1 (logits of +-200): {logits}")
        assert math.isclose(got.item(), want.item(), rel_tol=1e-4, abs_tol=1e-4), \
            clamped.format(got=shown(got.item(), ".1f"), want=shown(want.item(), ".1f")).replace(
                "gives", f"{name} gives", 1)
    loss_g, want = generator_loss(sure_fake), answers.generator_loss(sure_fake.detach())
    assert math.isfinite(loss_g.item()), (
        f"generator_loss is infinite or NaN where D is sure G's images are fake (probability exactly 0): {logits}")
    assert loss_g.item() > 1, ("generator_loss is about 0 where D rejects every fake: that is the saturating loss "
                               "log(1 - D(G(z))), which G minimises to no effect; use -log D(G(z)) (target 1)")
    assert math.isclose(loss_g.item(), want.item(), rel_tol=1e-4), \
        "generator_loss " + clamped.format(got=shown(loss_g.item(), ".1f"), want=shown(want.item(), ".1f"))
    loss_g.backward()
    grad = sure_fake.grad
    assert grad is not None and torch.isfinite(grad).all(), "generator_loss must have a finite gradient"
    assert grad.abs().sum() > 0.5, ("generator_loss has (almost) no gradient where D is sure G's images are fake; "
                                    + logits)
    ok("finite losses and gradients when D is sure, right or wrong (probabilities of exactly 0 and 1)")
    ok("G's loss is non-saturating: it still has a gradient where D rejects every fake")
    print("All public checks passed.")


def loss_call(loss, name, *logits):
    """loss(*logits), or a failure that says what a loss on logits must accept."""
    try:
        return loss(*logits)
    except (RuntimeError, ValueError) as err:
        if "between 0 and 1" in str(err):
            raise AssertionError(f"{name} was given logits (any real number) and treated them as probabilities "
                                 f"(nn.BCELoss / F.binary_cross_entropy want values in [0, 1]); use "
                                 f"F.binary_cross_entropy_with_logits on the logits") from None
        raise AssertionError(f"{name} fails on logits of shape {shape(logits[0])}: "
                             f"{str(err).strip().splitlines()[0]}") from None


def loss_mistake(name, mine, real, fake):
    """What a wrong loss looks like it computed, as the rest of a failure's message ("" if none fits)."""
    bce = answers.generator_loss  # BCE(D(x), 1) of logits x, averaged: softplus(-x).mean()
    if name == "discriminator_loss":
        ref = answers.discriminator_loss
        guesses = [(ref(real, fake) * len(real), "it sums over the batch; take the mean"),
                   (ref(torch.sigmoid(real), torch.sigmoid(fake)),
                    "it applies a Sigmoid to the logits first: its inputs are logits already"),
                   (ref(-real, -fake), "its targets are swapped: real images have target 1, fakes target 0"),
                   (bce(real), "it leaves out the fakes' term BCE(D(G(z)), 0)"),
                   (bce(-fake), "it leaves out the real images' term BCE(D(x), 1)")]
    else:
        guesses = [(bce(fake) * len(fake), "it sums over the batch; take the mean"),
                   (bce(torch.sigmoid(fake)), "it applies a Sigmoid to the logits first: its input is logits already"),
                   (bce(-fake), "its target is 0; G's target is 1: G wants D to call its fakes real")]
    for value, what in guesses:
        if math.isclose(mine.item(), value.item(), rel_tol=1e-4, abs_tol=1e-6):
            return f": {what}"
    return ""


# ---------------------------------------------------------------------------
# Notebook 4


def rebalancing_rule(update_discriminator):
    """update_discriminator(step, loss_D, loss_G, every=1, pause_ratio=0.0)."""
    cases = [((1, 0.5, None), {}), ((2, 0.5, 1.0), {}),  # the course: D updates every step
             ((1, 0.5, None), {"every": 2}), ((2, 0.5, 1.0), {"every": 2}), ((3, 0.5, 1.0), {"every": 2}),
             ((4, 0.5, 1.0), {"every": 2}),
             ((5, 0.5, 1.0), {"pause_ratio": 0.8}),  # 0.5 / 1.0 < 0.8: D is winning, pause
             ((5, 0.9, 1.0), {"pause_ratio": 0.8}),  # 0.9 >= 0.8: update
             ((1, 0.1, None), {"pause_ratio": 0.8})]  # no G loss yet at step 1: update
    for args, kwargs in cases:
        got, want = update_discriminator(*args, **kwargs), answers.update_discriminator(*args, **kwargs)
        assert bool(got) == want, (f"update_discriminator(step={args[0]}, loss_D={args[1]}, loss_G={args[2]}"
                                   f"{''.join(f', {k}={v}' for k, v in kwargs.items())}) returned {shown(got)}; "
                                   f"D should {'update' if want else 'skip'} at that step")
    ok("every=1: D updates at every step")
    ok("every=2: D updates at steps 1, 3, 5, ... and skips 2, 4, ...")
    ok("pause_ratio=0.8: D pauses while loss_D / loss_G < 0.8, and never before G has a loss")
    print("All public checks passed.")


# ---------------------------------------------------------------------------
# Notebook 5


def interpolation(interpolation_latents, slerp):
    """interpolation_latents(z1, z2, start, stop, steps, method) and slerp(z1, z2, t)."""
    torch.manual_seed(SEED)
    z1, z2 = torch.randn(3, 16), torch.randn(3, 16)
    for start, stop, steps in ((0.0, 1.0, 5), (-1.0, 2.0, 7)):
        mine = interpolation_latents(z1, z2, start, stop, steps, "linear")
        ref = answers.interpolation_latents(z1, z2, start, stop, steps, "linear")
        assert tuple(mine.shape) == tuple(ref.shape), \
            f"codes have shape {shape(mine)}; expected {tuple(ref.shape)} (pairs, steps, latent)"
        assert torch.allclose(mine, ref, atol=1e-5), \
            f"the linear codes over [{start}, {stop}] are not (1 - l) z1 + l z2: " + \
            interpolation_mistake(mine, ref, z1, z2, start, stop, interpolation_latents)
    ok("linear codes (1 - l) z1 + l z2 over [0, 1] and [-1, 2], shape (pairs, steps, latent)")
    t = torch.tensor([[0.0], [0.25], [1.0]])
    mine, ref = slerp(z1, z2, t), answers.slerp(z1, z2, t)
    assert torch.allclose(mine, ref, atol=1e-4), "slerp(z1, z2, t) does not follow the great circle from z1 to z2"
    assert torch.allclose(slerp(z1, z2, torch.zeros(3, 1)), z1, atol=1e-5) and \
        torch.allclose(slerp(z1, z2, torch.ones(3, 1)), z2, atol=1e-5), \
        "slerp must start at z1 (t=0) and end at z2 (t=1)"
    ok("slerp starts at z1, ends at z2 and follows the great circle between them")
    mine = interpolation_latents(z1, z2, 0.0, 1.0, 5, "slerp")
    assert torch.allclose(mine, answers.interpolation_latents(z1, z2, 0.0, 1.0, 5, "slerp"), atol=1e-4), \
        "interpolation_latents(..., method='slerp') must use slerp for every step"
    ok("method='slerp' walks the same steps along the great circle")
    print("All public checks passed.")


def interpolation_mistake(mine, ref, z1, z2, start, stop, interpolation_latents):
    """What is wrong with linear codes `mine` (of the right shape), in words."""
    for i in range(len(z1)):
        if not torch.allclose(mine[i], ref[i], atol=1e-5):
            if any(torch.allclose(mine[i], ref[j], atol=1e-5) for j in range(len(z1)) if j != i):
                return (f"pair {i}'s codes are another pair's: pair i must run from z1[i] to z2[i], "
                        f"all pairs side by side (broadcast over the pairs, never across them)")
            break
    if (start, stop) != (0.0, 1.0) and torch.allclose(mine, interpolation_latents(z1, z2, 0.0, 1.0, mine.shape[1],
                                                                                  "linear"), atol=1e-5):
        return f"they run over [0, 1] whatever start and stop say; l must run from start ({start}) to stop ({stop})"
    first, last = (1 - start) * z1 + start * z2, (1 - stop) * z1 + stop * z2
    if not torch.allclose(mine[:, 0], first, atol=1e-5) or not torch.allclose(mine[:, -1], last, atol=1e-5):
        return (f"the first code must be at l = start ({start}: z1 when start is 0) and the last at l = stop "
                f"({stop}: z2 when stop is 1); torch.linspace(start, stop, steps) gives every l, both ends included")
    return "the ends are right, the steps between them are not evenly spaced"


# ---------------------------------------------------------------------------
# Notebook 7


def mlp_networks(MLPGenerator, MLPDiscriminator):
    """The MLP GAN's generator, and its discriminator with and without BatchNorm."""
    torch.manual_seed(SEED)
    G, D = MLPGenerator(16), MLPDiscriminator()
    compare_layers(G, answers.MLPGenerator(16), "your MLPGenerator(16)")
    compare_layers(D, answers.MLPDiscriminator(), "your MLPDiscriminator()")
    compare_layers(MLPDiscriminator(batch_norm=True), answers.MLPDiscriminator(batch_norm=True),
                   "your MLPDiscriminator(batch_norm=True)")
    ok("the three networks have the course's layers, in the course's order")
    for mine, ref, what in ((G, answers.MLPGenerator(16), "MLPGenerator(16)"),
                            (D, answers.MLPDiscriminator(), "MLPDiscriminator()"),
                            (MLPDiscriminator(batch_norm=True), answers.MLPDiscriminator(batch_norm=True),
                             "MLPDiscriminator(batch_norm=True)")):
        assert count(mine) == count(ref), \
            f"{what} has {shown(count(mine), ',')} parameters; the course's has {count(ref):,}"
        ok(f"{what} has {count(ref):,} parameters")
    batch_norms = module_types(MLPDiscriminator(batch_norm=True)).count("BatchNorm1d")
    assert batch_norms == 3 and "BatchNorm1d" not in module_types(D), \
        "the discriminator has a BatchNorm1d after each of its 3 hidden layers when batch_norm=True, and none otherwise"
    ok("batch_norm=True puts a BatchNorm1d after each of D's 3 hidden layers")
    z = torch.randn(8, 16)
    with torch.no_grad():
        images = call(G, z, "your MLPGenerator")
        assert images.shape == (8, 1, 32, 32) and images.abs().max() <= 1, \
            "the generator must return (N, 1, 32, 32) images in [-1, 1]"
        p = call(D, images, "your MLPDiscriminator")
        assert p.shape == (8,) and ((p > 0) & (p < 1)).all(), "D must return one probability in (0, 1) per image"
        logits = call(D.logits, images, "your MLPDiscriminator's logits")
        assert logits.shape == p.shape, f"D.logits(images) has shape {shape(logits)}; expected {tuple(p.shape)}"
        assert torch.allclose(torch.sigmoid(logits), p, atol=1e-6), "sigmoid(D.logits(x)) must equal D(x)"
    ok("shapes and ranges: (N, 1, 32, 32) images in [-1, 1], (N,) probabilities, logits before the Sigmoid")
    same_function(MLPGenerator(16), answers.MLPGenerator(16), z, "your MLPGenerator")
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    same_function(MLPDiscriminator(), answers.MLPDiscriminator(), x, "your MLPDiscriminator")
    same_function(MLPDiscriminator(batch_norm=True), answers.MLPDiscriminator(batch_norm=True), x,
                  "your MLPDiscriminator(batch_norm=True)")
    ok("with the same weights, all three compute what the course's networks compute")
    print("All public checks passed.")


# ---------------------------------------------------------------------------
# Notebook 9


def vae_pieces(reparameterize, kl_divergence, vae_loss):
    """The VAE's reparameterisation, KL term and loss."""
    torch.manual_seed(SEED)
    mean, logvar, noise = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    z = reparameterize(mean, logvar, noise)
    guesses = [(mean + logvar.exp() * noise, ": it scales the noise by the variance exp(logvar); the standard "
                                             "deviation is exp(logvar / 2)"),
               (mean + logvar * noise, ": it scales the noise by logvar itself; the standard deviation is "
                                       "exp(logvar / 2)"),
               (mean + noise, ": it leaves out the standard deviation exp(logvar / 2)")]
    assert torch.allclose(z, answers.reparameterize(mean, logvar, noise), atol=1e-6), \
        "reparameterize must return mean + sigma * noise, with sigma = exp(logvar / 2)" + guess(z, guesses)
    ok("reparameterize: z = mean + exp(logvar / 2) * noise")
    mean_g, logvar_g = mean.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
    reparameterize(mean_g, logvar_g, noise).sum().backward()
    assert mean_g.grad is not None and logvar_g.grad is not None, \
        "gradients must reach mean and logvar through z (do not sample with torch.normal or detach)"
    ok("gradients flow from z back to mean and logvar")
    kl, want = kl_divergence(mean, logvar), answers.kl_divergence(mean, logvar)
    assert tuple(kl.shape) == (5,), (f"kl_divergence must return one value per image, shape (5,); got "
                                     f"{shape(kl)}" + ("; sum over the latent dimensions only (dim=1)"
                                                       if kl.dim() == 0 else ""))
    guesses = [(-want, ": its sign is flipped (KL is never negative: 0.5 * (mean^2 + exp(logvar) - 1 - logvar))"),
               (want / mean.shape[1], ": it averages over the latent dimensions; sum them"),
               (2 * want, ": it lacks the factor 0.5")]
    assert torch.allclose(kl, want, atol=1e-5), \
        "kl_divergence is not KL(N(mean, exp(logvar)) || N(0, I)) summed over the latent dimensions" + guess(kl, guesses)
    assert kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() < 1e-6, "KL(N(0, I) || N(0, I)) must be 0"
    ok("kl_divergence: 0 for the prior itself, and the closed form per image")
    images = torch.rand(6, 1, 32, 32).round() * 2 - 1
    logits, mean, logvar = torch.randn(6, 1, 32, 32) * 3, torch.randn(6, 10), torch.randn(6, 10) * 0.5
    mine, ref = vae_loss(logits, images, mean, logvar), answers.vae_loss(logits, images, mean, logvar)
    assert torch.is_tensor(mine) and mine.dim() == 0, "vae_loss must return one number: the batch mean"
    rec, kl = answers.reconstruction_loss(logits, images), answers.kl_divergence(mean, logvar)
    guesses = [(ref * len(images), ": it sums over the batch; take the mean"),
               ((rec - kl).mean(), ": it subtracts the KL term; the loss (the negative ELBO) adds it"),
               ((rec / images[0].numel() + kl).mean(), ": it averages the reconstruction over the pixels; sum them"),
               (rec.mean(), ": it leaves out the KL term")]
    assert math.isclose(mine.item(), ref.item(), rel_tol=1e-4), (
        f"vae_loss gives {shown(mine.item(), '.3f')} where the negative ELBO is {shown(ref.item(), '.3f')} nats per "
        f"image: reconstruction (Bernoulli, summed over the pixels) plus KL, averaged over the batch" + guess(mine, guesses))
    ok("vae_loss: Bernoulli reconstruction summed over pixels, plus KL, averaged over the batch")
    print("All public checks passed.")


def guess(got, guesses):
    """The message of the first (value, message) whose value `got` equals, or ""."""
    for value, message in guesses:
        if got.shape == value.shape and torch.allclose(got, value, rtol=1e-4, atol=1e-5):
            return message
    return ""
