"""The ground floor: everything that keeps runs safe and repeatable. It imports nothing of labkit.

Read it after the lesson (labkit/gan.py), when you want to know how a run is
kept: each module holds one idea, and each imports only those listed before it.

    atomic       files written so that a reader sees the old or the new, never half
    config       a run's settings, its identity and its name (TrainConfig, VAEConfig)
    targets      what a command may write: links, its own inputs and others' files refused first
    folder       run folders: where they live, locks, config.json and history.csv
    device       the device a run trains on, and the caller's random state kept safe
    checkpoints  the one checkpoint schema, written atomically; reading it, checked against a run
    code         whose code trains a run: labkit's reference pieces or a student's
    training     what every trainer does around its step: open, lock, resume, log, save, close

Import what you need from its module (`from labkit.runs.config import TrainConfig`);
this package itself imports nothing, so reading a config costs no torch import.
"""
