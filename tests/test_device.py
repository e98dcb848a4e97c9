"""The CPU threads a run uses: one per free core, said in words, and a count set by hand kept
(labkit/runs/device.py). No assertion on speed: bench/threads.py measures that."""

import os

import pytest
import torch

from labkit.runs import device
from labkit.runs.device import ThreadChoice, choose_threads, describe_device, threads_for, threads_for_machine


@pytest.mark.parametrize("cores, busy, threads", [(2, 0.0, 2), (2, 0.9, 1), (2, 1.2, 1), (2, 5.0, 1), (8, 2.6, 5),
                                                  (1, 0.0, 1)])
def test_one_thread_per_free_core_and_at_least_one(cores, busy, threads):
    assert threads_for(cores, busy) == threads


def test_the_choice_is_said_in_words_with_the_right_plurals():
    cpu = torch.device("cpu")
    assert describe_device(cpu, ThreadChoice(1, 2, 1.2)) == "cpu (1 thread: 2 cores, 1 busy)"
    assert describe_device(cpu, ThreadChoice(2, 2, 0.1)) == "cpu (2 threads: 2 cores, none busy)"
    assert describe_device(cpu, ThreadChoice(3, 4, None, "as set with LABKIT_THREADS")) == \
        "cpu (3 threads, as set with LABKIT_THREADS)"


def test_a_count_set_by_hand_is_kept_and_torchs_count_comes_back(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("LABKIT_THREADS", "1")
    monkeypatch.setattr(device, "TORCH_DEFAULT_THREADS", before)
    with threads_for_machine(torch.device("cpu")) as choice:
        assert choice.threads == 1 and torch.get_num_threads() == 1 and choice.busy is None
    assert torch.get_num_threads() == before
    monkeypatch.setenv("LABKIT_THREADS", "many")
    with pytest.raises(ValueError, match="LABKIT_THREADS must be a whole number"):
        choose_threads()
    monkeypatch.delenv("LABKIT_THREADS")
    with threads_for_machine(torch.device("cpu")) as choice:  # measured: between 1 and the usable cores
        assert 1 <= choice.threads <= len(os.sched_getaffinity(0)) and choice.busy is not None
    assert torch.get_num_threads() == before



def test_features_take_the_machines_choice_and_give_torchs_count_back(monkeypatch, mnist_test):
    """FID's features run with the threads the machine has free (pinned here), not PyTorch's default, and
    leave PyTorch's count as they found it; the features do not depend on it beyond rounding."""
    from labkit import metrics

    images, before = mnist_test[0][:1500], torch.get_num_threads()
    seen = []
    hook = metrics.load_digit_classifier().body.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(device, "TORCH_DEFAULT_THREADS", before)
    try:
        monkeypatch.setenv("LABKIT_THREADS", "1")
        one = metrics.features(images, "mnist", batch_size=500)
        assert seen == [1, 1, 1] and torch.get_num_threads() == before
        monkeypatch.setenv("LABKIT_THREADS", "2")
        two = metrics.features(images, "mnist", batch_size=500)
        assert seen[3:] == [2, 2, 2] and torch.get_num_threads() == before
    finally:
        hook.remove()
    assert one.shape == (1500, 128) and abs(one - two).max() < 1e-4
