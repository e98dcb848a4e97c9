"""The trainers, bit for bit: what they write on a fixed seed must not change when their code is reorganised.

Each scenario trains a tiny run (hidden size 8, 20 steps of batch 16, on the
CPU, one thread) and fingerprints everything it leaves in its run folder: the
sha256 of every part of every checkpoint (each network's state_dict, each
optimizer's state, each RNG state, the counters, the step and the config), of
each sample grid's pixels, of history.csv, config.json and code.py, and the
number of TensorBoard event files. tests/golden/trainers.json holds the
fingerprints that labkit's trainers wrote at commit 82f7568, before the loop
skeleton (labkit/machinery/loop.py) replaced their three hand-written loops.

Float rounding depends on the PyTorch build and on the CPU's vector
instructions, so the comparison is exact only where both are those of the
recording; elsewhere the test is skipped and says why. To record again
(only when a change is *meant* to change what the trainers compute):

    python tests/test_golden.py --record
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "trainers.json"
SMALL = dict(latent_dim=8, generator_hidden_dim=8, discriminator_hidden_dim=8, batch_size=16,
             num_training_steps=20, logging_steps=5, saving_steps=10, device="cpu")


def pauses_when_winning(step, loss_D, loss_G, every, pause_ratio):
    """A student's rebalancing rule that reads the losses at every step (the path `needs_losses` opens)."""
    return loss_G is None or loss_D > 0.5 * loss_G


def stop_at(step):
    def on_log(*args):
        if args[-1]["step"] == step:
            raise KeyboardInterrupt
    return on_log


def dcgan(out):
    from labkit.gan import train, TrainConfig
    train(TrainConfig(**SMALL), out / "run", progress=False)


def dcgan_paused_by_the_losses(out):
    from labkit.gan import train, TrainConfig
    train(TrainConfig(**SMALL, d_pause_ratio=0.8, generator_learning_rate=1e-3), out / "run", progress=False)


def student_rule(out):
    from labkit.gan import GANCode
    from labkit.gan import train, TrainConfig
    train(TrainConfig(**SMALL, d_every=2), out / "run", code=GANCode(update_discriminator=pauses_when_winning),
          progress=False)


def mlp_gan(out):
    from labkit.gan import train, TrainConfig
    train(TrainConfig(**SMALL, use_mlp=True, mlp_discriminator_batch_norm=True), out / "run", progress=False)


def interrupted_and_resumed(out):
    from labkit.gan import train, TrainConfig
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**SMALL), out / "run", progress=False, on_log=stop_at(15))
    train(TrainConfig(**SMALL), out / "run", progress=False)


def extended(out):
    from labkit.gan import extend, train, TrainConfig
    short = train(TrainConfig(**{**SMALL, "num_training_steps": 10}), out / "short", progress=False)
    extend(short, 20, out / "run", progress=False)


def together(out):
    from labkit.experiments.together import train_together
    from labkit.gan import TrainConfig
    train_together(TrainConfig(**SMALL), [1, 2], [out / "seed1", out / "seed2"], progress=False)


def together_resumed(out):
    from labkit.experiments.together import train_together
    from labkit.gan import TrainConfig
    config, folders = TrainConfig(**SMALL, use_mlp=True), [out / "seed1", out / "seed2"]
    with pytest.raises(KeyboardInterrupt):
        train_together(config, [1, 2], folders, progress=False, on_log=stop_at(15))
    train_together(config, [1, 2], folders, progress=False)


def vae(out):
    from labkit.vae import train_vae, VAEConfig
    train_vae(VAEConfig(latent_dim=3, batch_size=16, num_training_steps=20, logging_steps=5, saving_steps=10,
                        dev_size=200, device="cpu"), out / "run", progress=False)


SCENARIOS = {f.__name__: f for f in (dcgan, dcgan_paused_by_the_losses, student_rule, mlp_gan,
                                     interrupted_and_resumed, extended, together, together_resumed, vae)}


def digest(value):
    """sha256 of a checkpoint's part: tensors by dtype, shape and bytes; the rest by repr; dicts in order."""
    h = hashlib.sha256()

    def feed(v):
        if isinstance(v, torch.Tensor):
            h.update(f"tensor {v.dtype} {tuple(v.shape)}:".encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(v, dict):
            h.update(f"dict {len(v)}:".encode())
            for key, item in v.items():
                h.update(repr(key).encode())
                feed(item)
        elif isinstance(v, (list, tuple)):
            h.update(f"{type(v).__name__} {len(v)}:".encode())
            for item in v:
                feed(item)
        else:
            h.update(repr(v).encode())

    feed(value)
    return h.hexdigest()[:16]


def fingerprint(folder):
    """{file or checkpoint part: digest} of every run folder under `folder`."""
    from PIL import Image

    prints = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if path.name.startswith(".lock"):
            continue
        if "tensorboard" in path.parts:
            key = str(path.parent.relative_to(folder)) + "/event files"
            prints[key] = prints.get(key, 0) + 1
        elif path.suffix == ".pt":
            state = torch.load(path, weights_only=True)
            for part, value in state.items():
                if part in ("models", "optimizers", "rng"):
                    for what, item in value.items():
                        prints[f"{name}:{part}.{what}"] = digest(item)
                else:
                    prints[f"{name}:{part}"] = digest(value)
        elif path.suffix == ".png":
            prints[name] = hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest()[:16]
        else:
            prints[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return prints


def environment():
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def run_scenario(name, out):
    threads, pinned = torch.get_num_threads(), os.environ.get("LABKIT_THREADS")
    # The order of a sum split over threads depends on their number: one thread, however labkit would choose.
    torch.set_num_threads(1)
    os.environ["LABKIT_THREADS"] = "1"
    try:
        SCENARIOS[name](out)
    finally:
        torch.set_num_threads(threads)
        if pinned is None:
            del os.environ["LABKIT_THREADS"]
        else:
            os.environ["LABKIT_THREADS"] = pinned
    return fingerprint(out)


def recorded():
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_trainers_write_what_they_wrote_before(name, tmp_path, mnist_train):
    golden = recorded()
    if golden["environment"] != environment():
        pytest.skip(f"the golden fingerprints were recorded with {golden['environment']}; this is {environment()}, "
                    f"whose float rounding differs (record them here with: python tests/test_golden.py --record)")
    now, before = run_scenario(name, tmp_path), golden["scenarios"][name]
    changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    assert not changed, f"{name}: these differ from the recording: {changed}"


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    scenarios = {}
    for name in SCENARIOS:
        with tempfile.TemporaryDirectory() as tmp:
            scenarios[name] = run_scenario(name, Path(tmp))
        print(f"{name}: {len(scenarios[name])} fingerprints")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"environment": environment(), "scenarios": scenarios}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
