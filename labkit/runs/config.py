"""A run's settings, its identity and its name: one place for all three.

A run folder's name says every setting that changes what the model learns,
steps and code included (`RunConfig.identity`): settings at the course's
defaults are left out, the others are spelled out, e.g.
`dcgan_z16_g16_d16_steps5000_seed2022_devery2`. So a run is found again by
asking for the same settings, and different settings never share a folder.
Logging, saving and the device are not part of it (RUN_ONLY): they may change
when a run is resumed.

    TrainConfig   a GAN run: the course's flags and defaults, ablations, rebalancing
    VAEConfig     a VAE run

This module is the ground floor's: it imports nothing of labkit, so anything
in the lab may read a run's identity.
"""

import difflib
import typing
from dataclasses import asdict, dataclass, fields
from typing import Optional

REFERENCE = "labkit"  # the `code` of a run trained by labkit's own pieces (labkit/runs/code.py)
RUN_ONLY = ("logging_steps", "saving_steps", "device")  # may change between a run and its resumption
MNIST_TRAIN_SIZE = 60_000
MAX_SEED = 2**32 - 1
MAX_SAMPLES = 10_000  # images in one sample grid (`labkit sample --count`)
PIPELINES = ("pad", "resize")  # how MNIST's 28x28 digits become 32x32: labkit's Pad(2), the course's Resize(32)
# Settings added after runs were saved: config.json and checkpoints leave them out at their
# defaults, so those files stay byte for byte what they were (tests/test_golden.py) and an
# old config.json, which lacks them, reads back as the default.
WRITTEN_IF_CHANGED = ("pipeline", "discriminator_bias")


class RunConfig:
    """What TrainConfig and VAEConfig share: strict loading, identity and a name."""

    @classmethod
    def from_dict(cls, values):
        """A config from a dict; an unknown key is an error that suggests the right name."""
        if not isinstance(values, dict):
            raise ValueError(f"a {cls.__name__} is a JSON object of settings, not {type(values).__name__}")
        check_setting_names(cls, values)
        return cls(**values)

    def check_types(self):
        """Refuse a setting of the wrong kind in one line (a config.json edited by hand: "use_mlp": "yes").

        The dataclass's annotations say the kinds: bool must be True or False, int a whole
        number, float any number, str text, Optional[...] also None. Ranges are the subclass's.
        """
        kinds = {bool: (bool, "true or false"), int: (int, "a whole number"), float: ((int, float), "a number"),
                 str: (str, "text")}
        for name, kind in typing.get_type_hints(type(self)).items():
            value = getattr(self, name)
            if typing.get_origin(kind) is typing.Union:  # Optional[float]
                if value is None:
                    continue
                kind = next(k for k in typing.get_args(kind) if k is not type(None))
            allowed, words = kinds.get(kind, (object, ""))
            if not isinstance(value, allowed) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"{name} must be {words}, got {value!r}")

    def to_dict(self):
        """The settings as config.json and checkpoints record them: `asdict`, less WRITTEN_IF_CHANGED at defaults."""
        values, defaults = asdict(self), asdict(type(self)())
        return {k: v for k, v in values.items() if k not in WRITTEN_IF_CHANGED or v != defaults[k]}

    def updated(self, **changes):
        """A copy with `changes`, checked like from_dict (a misspelt name is an error)."""
        return type(self).from_dict({**asdict(self), **changes})

    def identity(self):
        """{setting: value} of everything that changes what the model learns."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUN_ONLY}

    def name_parts(self):
        """The readable name's parts, in order; subclasses say what they are."""
        raise NotImplementedError

    @property
    def name(self):
        """The run folder's name: every setting of `identity`, the defaults left out."""
        return "_".join(self.name_parts())

    @staticmethod
    def spelt(value):
        """`value` as a run name spells it (`format_value`): exactly, so two settings never share a name."""
        return format_value(value)

    def suffixes(self, short_names):
        """Name parts for settings that differ from their defaults, e.g. 'devery2' or 'relu'.

        short_names: {setting: name or function(value) -> name part}.
        """
        defaults = type(self)()
        identity, default_identity = self.identity(), defaults.identity()
        parts = []
        for key, short in short_names.items():
            if key in identity and identity[key] != default_identity.get(key, getattr(defaults, key)):
                value = identity[key]
                parts.append(short(value) if callable(short) else f"{short}{format_value(value)}")
        return parts


def format_value(value):
    """A setting's value as it appears in a run name, exactly: 5e-05 -> 5e-05, 0.00015 -> 0.00015, 0.8 -> 0.8.

    Python's repr of a float is the shortest text that reads back as the same number,
    so two different settings never share a name."""
    return repr(value) if isinstance(value, float) else str(value)


def check_setting_names(config_class, values):
    """Refuse unknown setting names, suggesting the nearest known one."""
    known = [f.name for f in fields(config_class)]
    for key in values:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; the settings are: {', '.join(known)}"
            raise ValueError(f"{config_class.__name__} has no setting {key!r}{hint}")


def differences(saved, config):
    """The identity settings in which two configs of one run differ, as text (empty if none)."""
    a, b = saved.identity(), config.identity()
    return ", ".join(f"{k}={a.get(k)!r} there vs {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k))


# Upper bounds that catch typos (an extra zero) before they allocate gigabytes.
LIMITS = dict(latent_dim=4096, generator_hidden_dim=1024, discriminator_hidden_dim=1024,
              batch_size=MNIST_TRAIN_SIZE, num_training_steps=10_000_000, logging_steps=10_000_000,
              saving_steps=10_000_000, d_every=1_000_000)


def check_whole(name, value, limit):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{name} must be a whole number from 1 to {limit:,}, got {value!r}")


def check_pipeline(pipeline):
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be 'pad' or 'resize', got {pipeline!r}")


def check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED:,}, got {seed!r}")


# ---------------------------------------------------------------------------
# The GAN's settings


@dataclass
class TrainConfig(RunConfig):
    # The course's flags, with the course's defaults.
    latent_dim: int = 16
    generator_hidden_dim: int = 16
    discriminator_hidden_dim: int = 16
    batch_size: int = 64
    num_training_steps: int = 5000
    logging_steps: int = 10
    saving_steps: int = 1000
    learning_rate: float = 2e-4
    beta1: float = 0.5
    use_mlp: bool = False
    # Reproducibility and hardware. seed 2022 is the one the course's reports used.
    seed: int = 2022
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda", "cuda:1", ...
    # Ablations and the MLP GAN's BatchNorm-in-D failure.
    discriminator_activation: str = "leaky_relu"  # or "relu"
    batch_norm: bool = True  # BatchNorm in the DCGAN's G and D
    # False: the DCGAN's D without biases, as the course's GAN.py gives it (`bias=False`); issue 30
    # measured it as what doubles the course's FIDs (bench/course_pieces.md).
    discriminator_bias: bool = True
    mlp_discriminator_batch_norm: bool = False
    # Rebalancing D and G; all off by default.
    d_every: int = 1  # update D only on every k-th step
    d_pause_ratio: float = 0.0  # skip D's update while loss_D / loss_G < this
    generator_learning_rate: Optional[float] = None  # default: learning_rate
    discriminator_learning_rate: Optional[float] = None  # default: learning_rate
    # The data: "pad" (labkit's Pad(2)) or "resize" (the course's Resize(32)); labkit/data.py.
    pipeline: str = "pad"
    # Whose code trains it: "labkit", or "student-<hash>" (labkit/runs/code.py).
    code: str = REFERENCE

    def __post_init__(self):
        self.check_types()  # "use_mlp": "yes" in a config.json is one line, like a bad value on the command line
        for name, limit in LIMITS.items():
            check_whole(name, getattr(self, name), limit)
        check_seed(self.seed)
        check_pipeline(self.pipeline)
        for name in ("learning_rate", "generator_learning_rate", "discriminator_learning_rate"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.beta1, (int, float)) and 0 <= self.beta1 < 1):
            raise ValueError(f"beta1 must be in [0, 1), got {self.beta1!r}")
        if not (isinstance(self.d_pause_ratio, (int, float)) and 0 <= self.d_pause_ratio < float("inf")):
            raise ValueError(f"d_pause_ratio must be >= 0 (0 turns it off), got {self.d_pause_ratio!r}")
        if self.discriminator_activation not in ("leaky_relu", "relu"):
            raise ValueError("discriminator_activation must be 'leaky_relu' or 'relu', "
                             f"got {self.discriminator_activation!r}")

    @property
    def lr_g(self):
        return self.generator_learning_rate or self.learning_rate

    @property
    def lr_d(self):
        return self.discriminator_learning_rate or self.learning_rate

    def identity(self):
        """The settings that change what the model learns (the MLP GAN has no hidden sizes or ablations)."""
        identity = super().identity()
        # What learns is the two rates in effect; learning_rate only supplies the ones not given.
        del identity["learning_rate"]
        identity["generator_learning_rate"], identity["discriminator_learning_rate"] = self.lr_g, self.lr_d
        ignored = ("generator_hidden_dim", "discriminator_hidden_dim", "discriminator_activation", "batch_norm",
                   "discriminator_bias") \
            if self.use_mlp else ("mlp_discriminator_batch_norm",)
        for key in ignored:
            del identity[key]
        return identity

    def name_parts(self):
        parts = [self.architecture, f"steps{self.num_training_steps}", f"seed{self.seed}"]
        default_lr = type(self)().learning_rate
        if self.lr_g == self.lr_d != default_lr:
            learning_rates = [f"lr{self.spelt(self.lr_g)}"]  # one rate for both
        else:
            learning_rates = [f"{short}{self.spelt(lr)}" for short, lr in (("glr", self.lr_g), ("dlr", self.lr_d))
                              if lr != default_lr]
        return parts + self.suffixes(dict(batch_size="b", beta1="beta")) + learning_rates + self.suffixes(dict(
            d_every="devery", d_pause_ratio="pause",
            discriminator_activation=lambda v: v.replace("_", ""), batch_norm=lambda v: "nobn",
            discriminator_bias=lambda v: "dnobias", mlp_discriminator_batch_norm=lambda v: "dbn", pipeline=str, code=str))

    @property
    def architecture(self):
        """The model and its sizes, e.g. dcgan_z16_g16_d16 or mlp_z16."""
        if self.use_mlp:
            return f"mlp_z{self.latent_dim}"
        return f"dcgan_z{self.latent_dim}_g{self.generator_hidden_dim}_d{self.discriminator_hidden_dim}"


# ---------------------------------------------------------------------------
# The VAE's settings


VAE_LIMITS = dict(latent_dim=4096, batch_size=50_000, num_training_steps=10_000_000, logging_steps=10_000_000,
                  saving_steps=10_000_000, dev_size=10_000)


@dataclass
class VAEConfig(RunConfig):
    latent_dim: int = 10
    batch_size: int = 32
    num_training_steps: int = 25000
    learning_rate: float = 1e-3
    logging_steps: int = 100
    saving_steps: int = 5000
    dev_size: int = 5000
    seed: int = 2022
    device: str = "auto"
    pipeline: str = "pad"  # "pad" (labkit's) or "resize" (the course's); labkit/data.py
    code: str = REFERENCE  # "labkit", or "student-<hash>" (labkit/runs/code.py)

    def __post_init__(self):
        self.check_types()
        for name, limit in VAE_LIMITS.items():
            check_whole(name, getattr(self, name), limit)
        check_seed(self.seed)
        check_pipeline(self.pipeline)
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < float("inf")):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")

    def name_parts(self):
        parts = [f"vae_z{self.latent_dim}", f"steps{self.num_training_steps}", f"seed{self.seed}"]
        return parts + self.suffixes(dict(batch_size="b", learning_rate="lr", dev_size="dev", pipeline=str,
                                          code=str))
