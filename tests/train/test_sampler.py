"""The modality-length grouped sampler: batches never mix image and text-only samples, on one rank or several."""

import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from twigvlm.train.sampler import ModalityLengthGroupedSampler

HAS_IMAGE = [i % 3 != 0 for i in range(23)]  # 15 image samples, 8 text-only
LENGTHS = [(i * 7) % 31 + 1 for i in range(23)]


def rank_batches(sampler, batch_size, world_size):
    """The batches each rank gets from Trainer's data loader (accelerate shards consecutive batches)."""
    batches = BatchSampler(sampler, batch_size, drop_last=False)
    return [list(BatchSamplerShard(batches, world_size, rank, split_batches=False, even_batches=True))
            for rank in range(world_size)]


@pytest.mark.parametrize("batch_size, world_size", [(1, 1), (4, 1), (2, 2), (4, 2), (3, 4)])
def test_every_batch_is_one_modality(batch_size, world_size):
    sampler = ModalityLengthGroupedSampler(LENGTHS, HAS_IMAGE, batch_size, world_size, seed=0)
    for batches in rank_batches(sampler, batch_size, world_size):
        for batch in batches:
            assert len({HAS_IMAGE[i] for i in batch}) == 1, batch


@pytest.mark.parametrize("batch_size, world_size", [(4, 1), (2, 2), (3, 4)])
def test_every_sample_is_seen_and_only_its_modality_is_topped_up(batch_size, world_size):
    sampler = ModalityLengthGroupedSampler(LENGTHS, HAS_IMAGE, batch_size, world_size, seed=0)
    order = list(sampler)
    assert set(order) == set(range(len(LENGTHS))) and len(order) == len(sampler)
    assert len(order) - len(LENGTHS) < 2 * batch_size  # at most a partial batch per modality


def test_the_order_depends_only_on_seed_and_epoch():
    make = lambda: ModalityLengthGroupedSampler(LENGTHS, HAS_IMAGE, 2, 2, seed=7)  # noqa: E731
    first, again, later = make(), make(), make()
    later.set_epoch(1)
    assert list(first) == list(again)  # every rank (and a resumed run) computes the same order
    assert list(first) != list(later)


def test_samples_running_together_are_sorted_and_balanced_by_length():
    lengths, has_image = [10, 1, 9, 1, 8, 2, 7, 1], [True] * 8
    sampler = ModalityLengthGroupedSampler(lengths, has_image, batch_size=4, world_size=2, seed=0)
    first, second = rank_batches(sampler, 4, 2)
    totals = [sum(lengths[i] for i in first[0]), sum(lengths[i] for i in second[0])]
    assert abs(totals[0] - totals[1]) <= max(lengths)
    assert all(sorted(b, key=lambda i: -lengths[i]) == b for b in first + second)
