"""cvae_seg.training.samplers: the data order is a function of (seed, step), for any number
of processes."""

import pytest

from cvae_seg.training import ShardSampler, StepSampler


def _take(sampler, count):
    return [item for _, item in zip(range(count), sampler, strict=False)]


def test_sampler_is_a_function_of_seed_and_step():
    sampler = StepSampler(size=10, batch_size=3, seed=5)
    first = _take(sampler, 30)
    indices = [i for i, _ in first]
    assert sorted(indices[:9]) == sorted(set(indices[:9]))  # one epoch: no repeats
    assert indices[:9] != indices[9:18]  # a new order every epoch
    resumed = StepSampler(size=10, batch_size=3, seed=5, start_step=4)
    assert _take(resumed, 18) == first[12:30]
    assert sampler.position(7) == {"epoch": 2, "batch": 1}
    with pytest.raises(ValueError, match="fewer than one batch"):
        StepSampler(size=2, batch_size=3, seed=0)


@pytest.mark.parametrize("start_step", [0, 4])
def test_process_shards_make_up_the_single_process_batches(start_step):
    one = _take(StepSampler(20, 6, seed=3, start_step=start_step), 6 * 7)
    shards = [
        _take(StepSampler(20, 6, seed=3, start_step=start_step, rank=r, world_size=3), 2 * 7)
        for r in range(3)
    ]
    for step in range(7):  # global batch k = the processes' k-th batches, in rank order
        together = [item for s in shards for item in s[2 * step : 2 * step + 2]]
        assert together == one[6 * step : 6 * step + 6]
    with pytest.raises(ValueError, match="equal shards"):
        StepSampler(20, 6, seed=3, rank=0, world_size=4)


def test_evaluation_shards_cover_every_item_once():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]
