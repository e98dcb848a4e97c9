"""labkit's machinery: everything that keeps runs safe and repeatable, apart from the lesson.

The lesson (labkit.data, models, step, train, vae, metrics, classifier,
analysis, plots, checks) imports from here only these names, through
`from .machinery import ...` (tests/test_layout.py holds it to that):

    training         the training loop's skeleton: a trainer's loop is its step,
                     and `training` does the rest (run folder, resume, lock,
                     NaN check, logging, checkpoints; loop.py says what, in order)
    TrainingDiverged what a trainer raises when a loss turns NaN
    read_run         a trained run's folder, to load it (load_run, load_vae_run)
    branch_run       a new run that goes on from another's checkpoint (extend)
    RunConfig        what TrainConfig and VAEConfig share: a run's identity and name
    GANCode, VAECode whose code trains a run, labkit's or a student's pieces
    REFERENCE        the code identity of labkit's own pieces, "labkit"
    save_checkpoint, load_checkpoint
                     the one checkpoint schema, for the digit classifier's weights
    cache_file       labkit's own cache file written whole, never through a link (metrics)

The modules of this package hold the details; each imports only those below it
(tests/test_layout.py checks that nothing in labkit imports in a cycle):

    atomic        files written so that a reader sees the old or the new, never half
    targets       what a command may write: links, its own inputs and others' files refused first
    runs          run folders: identity and names, locks, config.json and history.csv
    checkpoints   the one checkpoint schema, written atomically; reading it, checked against a run
    code          whose code trains a run: labkit's reference pieces or a student's
    loop          the training loop's skeleton, and reading or branching a run folder
    together      several seeds trained at once as one stacked model (uses loop)
    sweep         a latent x hidden x seeds grid, resumable, with FID tables
    cli           the `labkit` command
"""

__all__ = ["training", "TrainingDiverged", "read_run", "branch_run", "RunConfig", "GANCode", "VAECode", "REFERENCE",
           "save_checkpoint", "load_checkpoint", "cache_file"]


def __getattr__(name):
    """The names above, each imported from its module when first asked for.

    Importing this package imports nothing else, so `python -m labkit.machinery.cli`
    reaches the command's Ctrl-C handling before torch loads (seconds).
    """
    if name in ("training", "read_run", "branch_run"):
        from . import loop as home
    elif name in ("save_checkpoint", "load_checkpoint"):
        from . import checkpoints as home
    elif name in ("GANCode", "VAECode", "REFERENCE"):
        from . import code as home
    elif name in ("RunConfig", "TrainingDiverged"):
        from . import runs as home
    elif name == "cache_file":
        from . import targets as home
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(home, name)
