import torch

from spm_gen.memory.nearest import VectorSource, chunked_nearest, chunked_within


def test_chunked_nearest_equals_brute_force_for_any_chunk_size():
    g = torch.Generator().manual_seed(0)
    items, queries = torch.randn(103, 5, generator=g), torch.randn(4, 5, generator=g)
    want_d, want_i = torch.topk(torch.cdist(queries, items), 6, largest=False)
    for chunk_size in (1, 7, 50, 1000):
        d, rows = chunked_nearest(queries, VectorSource.from_tensor(items), 6, chunk_size=chunk_size)
        assert rows.tolist() == want_i.tolist()
        torch.testing.assert_close(d, want_d)


def test_chunked_nearest_is_exact_for_duplicates():
    items = torch.randn(20, 512) * 100
    d, rows = chunked_nearest(items[[3]], VectorSource.from_tensor(items), 1)
    assert rows.item() == 3 and d.item() == 0.0


def test_chunked_within():
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    q, rows, d = chunked_within(
        torch.tensor([[0.0, 0.0], [2.9, 0.0]]), VectorSource.from_tensor(items), 1.0, chunk_size=2
    )
    assert sorted(zip(q.tolist(), rows.tolist())) == [(0, 0), (0, 1), (1, 2)]
