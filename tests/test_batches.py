"""The training stream: global batches independent of the number of processes, full epochs, resumable."""

import pytest
import torch

from ddpm_signrelu.data import DigitsDataModule, GlobalBatchSampler
from ddpm_signrelu.errors import ConfigError


def take(sampler, count):
    it = iter(sampler)
    return [next(it) for _ in range(count)]


def test_processes_share_out_the_single_process_batch():
    single = take(GlobalBatchSampler(103, 12, seed=3, hflip=True), 20)
    shards = [take(GlobalBatchSampler(103, 12, num_replicas=4, rank=r, seed=3, hflip=True), 20) for r in range(4)]
    for k, whole in enumerate(single):
        assert whole.number == k
        rows = torch.empty(12, dtype=torch.long)
        flips = torch.empty(12, dtype=torch.bool)
        for shard in shards:
            part = shard[k]
            assert len(part.indices) == 3 and part.seed == whole.seed
            rows[part.positions], flips[part.positions] = part.indices, part.flips
        assert torch.equal(rows, whole.indices) and torch.equal(flips, whole.flips)
    assert 50 < int(torch.cat([b.flips for b in single]).sum()) < 190


def test_the_stream_is_a_sequence_of_permutations():
    batches = take(GlobalBatchSampler(50, 8), 25)  # 200 positions: 4 epochs, batches straddling their ends
    stream = torch.cat([b.indices for b in batches])
    epochs = stream.view(4, 50)
    assert all(torch.equal(e.sort().values, torch.arange(50)) for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])
    assert len({b.seed for b in batches}) == 25
    assert not any(b.flips.any() for b in batches)
    tiny = take(GlobalBatchSampler(3, 8), 3)  # a batch larger than the data holds each item about b/n times
    assert torch.equal(torch.cat([b.indices for b in tiny]).view(8, 3).sort(1).values, torch.arange(3).expand(8, 3))


def test_resuming_at_a_batch_continues_the_stream():
    straight = take(GlobalBatchSampler(50, 8, num_replicas=2, rank=1, seed=1), 15)
    resumed = take(GlobalBatchSampler(50, 8, num_replicas=2, rank=1, seed=1, start=9), 6)
    for a, b in zip(straight[9:], resumed):
        assert a.number == b.number and torch.equal(a.indices, b.indices) and a.seed == b.seed


def test_bad_sizes_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"global batch and must be divisible by the number of processes \(3"):
        GlobalBatchSampler(50, 8, num_replicas=3)
    with pytest.raises(ConfigError, match="the training split is empty"):
        GlobalBatchSampler(0, 8)


def test_loader_gives_flipped_images_and_the_keys():
    dm = DigitsDataModule(batch_size=16, val_size=100)
    dm.setup("fit")
    x, index, positions, seed = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 8, 8) and torch.equal(x, dm.to_unit(dm.train_data[index]))
    assert x.dtype == torch.float32 and torch.equal(x, dm.train_data[index].float() / 8 - 1)  # 17 levels
    assert torch.equal(positions, torch.arange(16)) and isinstance(seed, int)
    val = list(dm.val_dataloader())
    assert torch.equal(torch.cat([i for _, i in val]), torch.arange(100))
    assert torch.equal(torch.cat([x for x, _ in val]), dm.val_data.float() / 8 - 1)
