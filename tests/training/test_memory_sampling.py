import torch

from spm_gen.training.memory_sampling import SupportSampler


def test_support_is_split_over_the_batch_labels_and_excludes_the_queries():
    labels = torch.arange(200) % 5
    sampler = SupportSampler(labels, num_classes=5)
    queries = torch.tensor([0, 1, 2, 5, 6, 11])  # labels 0, 1, 2, 0, 1, 1
    support = sampler.sample(queries, 12, torch.Generator().manual_seed(0))
    assert sorted(labels[support].tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert not set(support.tolist()) & set(queries.tolist())
    assert len(set(support.tolist())) == len(support)


def test_permutation_is_seeded_and_a_bijection():
    sampler = SupportSampler(torch.arange(10), num_classes=10)
    perm = sampler.permutation(torch.Generator().manual_seed(1))
    assert sorted(perm.tolist()) == list(range(10))
    assert torch.equal(perm, sampler.permutation(torch.Generator().manual_seed(1)))
