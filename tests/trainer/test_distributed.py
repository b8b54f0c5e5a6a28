"""Data-parallel training (trainer/distributed.py): how a global batch is split and what
each rank's share of a mean is, by hand; then 2 processes (torchrun, gloo) against 1 on the
same global batches — the collectives on hand-made rows, and the reward model, PPO and DPO.

The tolerance, as the README states it: every figure within 1e-5 (absolute, or relative
to its size), the sums being taken in another order and over other padding; a fraction of
tokens past a clip threshold may differ by one token of a minibatch (here 1/10 of 4
minibatches: 0.025). PPO samples greedily here (`distributed_jobs.greedy`): a sampled run
draws each rank's answers from its own stream, so its answers differ from one process's.
"""

import math

import pytest
import torch

from tests.trainer import distributed_jobs as jobs
from trainer.distributed import DataParallel
from trainer.launch import launch
from trainer.rlhf.ppo_math import masked_mean, whiten

FIGURES = 1e-3  # float sums in another order (all-reduce, threads), over a few steps
FRACTIONS = 0.025 + 1e-6  # one token in 10, over 4 minibatches


def test_the_ranks_parts_tile_the_global_batch():
    parts = [DataParallel(rank, 3).part(10) for rank in range(3)]
    assert [(p.start, p.stop) for p in parts] == [(0, 3), (3, 6), (6, 10)]
    assert DataParallel(1, 2).part(1, allow_empty=True) == slice(0, 1)
    assert DataParallel(0, 2).part(1, allow_empty=True) == slice(0, 0)
    with pytest.raises(ValueError, match="a batch of 1 cannot be split over 2 processes"):
        DataParallel(1, 2).part(1)


def test_one_process_is_the_plain_computation():
    dp = DataParallel()
    assert torch.equal(dp.whiten(jobs.VALUES, jobs.MASK), whiten(jobs.VALUES, jobs.MASK))
    assert dp.masked_mean(jobs.VALUES, jobs.MASK) == masked_mean(jobs.VALUES, jobs.MASK).item()
    assert list(dp.minibatches(jobs.MINIBATCHES, jobs.MASK.sum(1))) == [
        (rows, 1.0) for rows in jobs.MINIBATCHES]
    generator = torch.Generator()
    assert dp.sampling_generator(generator, step=3) is generator
    assert dp.broadcast({"a": 1}) == {"a": 1} and dp.gather([1, 2]) == [1, 2]


def test_each_rank_samples_from_its_own_stream_which_a_resume_redraws():
    base = torch.Generator().manual_seed(7)
    draws = {(rank, step): torch.rand(3, generator=DataParallel(rank, 2).sampling_generator(
        base, step)) for rank in range(2) for step in range(2)}
    assert not torch.equal(draws[0, 0], draws[1, 0]) and not torch.equal(draws[0, 0], draws[0, 1])
    again = DataParallel(1, 2).sampling_generator(torch.Generator().manual_seed(7), 1)
    assert torch.equal(torch.rand(3, generator=again), draws[1, 1])


@pytest.fixture(scope="module")
def runs():
    """The figures of `distributed_jobs.everything` on 1 process and on 2."""
    return jobs.everything(), launch("tests.trainer.distributed_jobs:everything", {},
                                     processes=2)


@pytest.mark.slow
def test_two_processes_reduce_as_one(runs):
    one, two = runs[0]["collectives"], runs[1]["collectives"]
    assert two["sum"] == 2.0  # two ranks took part
    assert torch.allclose(torch.tensor(two["whitened"]), torch.tensor(one["whitened"]),
                          atol=1e-6)
    assert two["masked_mean"] == pytest.approx(one["masked_mean"]) == 20.5 / 13
    assert two["mean"] == pytest.approx(one["mean"]) == pytest.approx(0.7)
    # Rank 0 holds rows 0-1 (2 and 3 tokens), rank 1 rows 2-4 (2, 4 and 2 tokens). Each
    # share is 2 × its tokens of the minibatch's; rank 0 has no row of [2]: a stand-in, 0.
    # Work on rank 0 alone reaches every rank; its error is raised there, and the others
    # end quietly (exit code 0: torchrun then waits for rank 0, whose code is the command's).
    assert one["on_main"] == ["from rank 0"] and two["on_main"] == ["from rank 0"] * 2
    assert one["failure"] == ["raised: no pairs"]
    assert two["failure"] == ["raised: no pairs", "exit 0"]
    rank0, rank1 = two["shares"]
    assert rank0 == [([0], 1.0), ([1], pytest.approx(2 * 3 / 7)), ([0], 0.0)]
    assert rank1 == [([2], 1.0), ([1], pytest.approx(2 * 4 / 7)), ([0], 2.0)]


def close(one: float, two: float, key: str) -> bool:
    if key.endswith("fraction"):
        return abs(one - two) <= FRACTIONS
    return math.isclose(one, two, rel_tol=FIGURES, abs_tol=FIGURES)


@pytest.mark.slow
def test_two_processes_train_the_reward_model_as_one(runs):
    one, two = runs[0]["reward"], runs[1]["reward"]
    assert one["steps"] == two["steps"] == 2 * (3 + 1)  # 21 pairs in 8s, 6 labels in 16s
    for key in ("accuracy", "loss", "ece", "reward_mean", "reward_std"):
        assert close(one[key], two[key], key), (key, one[key], two[key])
    assert torch.allclose(torch.tensor(one["head"]), torch.tensor(two["head"]), atol=FIGURES)
    assert one["head"] != pytest.approx([0.0] * len(one["head"]), abs=1e-3)  # it trained


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["ppo", "dpo"])
def test_two_processes_train_the_policy_as_one(runs, recipe):
    one, two = runs[0][recipe], runs[1][recipe]
    assert len(one) == len(two) == {"ppo": 3, "dpo": 4}[recipe]
    for logged, again in zip(one, two, strict=True):
        assert logged.keys() == again.keys()
        for key in logged:
            assert close(logged[key], again[key], key), (key, logged[key], again[key])
    assert one[-1]["loss" if recipe == "dpo" else "kl"] != one[0]["loss" if recipe == "dpo"
                                                                   else "kl"]  # it learned

