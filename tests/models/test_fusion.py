import dataclasses
import math

import pytest
import torch

from spm_gen.memory.readout import MemoryReadout
from spm_gen.models.fusion import MemoryFusion


def fuse(fusion: MemoryFusion, q, q_labels, s, s_labels):
    """The module, with each query reading the memory of its label (all memory when none carries it)."""
    return fusion(q, s, MemoryReadout.from_labels(q_labels, s_labels))


def reference(fusion: MemoryFusion, q, q_labels, s, s_labels):
    """The formula, fully materialised, one query at a time (independent of the module's grouping)."""
    out = []
    for i in range(len(q)):
        same = s_labels == q_labels[i]
        if not same.any() or q_labels[i] < 0:
            same = torch.ones_like(same)
        mem = s[same].reshape(-1, s.shape[-1])  # all tokens of the selected items
        if fusion.fusion_type == "additive":
            a = fusion.to_query(q[i])  # (L, H): W_q q + b
            b = mem @ fusion.to_memory.weight.T  # (T, H): W_s s
            scores = torch.relu(a[:, None, :] + b[None, :, :]) @ fusion.score.weight[0]  # (L, T)
            out.append(torch.softmax(scores, dim=1) @ b)
        else:
            qq, k, v = fusion.to_query(q[i]), fusion.to_key(mem), fusion.to_value(mem)
            out.append(torch.softmax(qq @ k.T / math.sqrt(k.shape[-1]), dim=1) @ v)
    return torch.stack(out)


@pytest.mark.parametrize("fusion_type", ["additive", "dot"])
@pytest.mark.parametrize("chunk_elements", [1, 97, 2**22])
def test_fusion_equals_the_materialised_formula(fusion_type, chunk_elements):
    torch.manual_seed(0)
    fusion = MemoryFusion(8, fusion_type=fusion_type, chunk_elements=chunk_elements)
    q = torch.randn(9, 4, 8)
    q_labels = torch.tensor([0, 2, 2, 5, 0, 1, 7, 2, 5])  # 5 and 7 have no memory: they read all memory
    s = torch.randn(11, 4, 8)
    s_labels = torch.tensor([0, 2, 1, 0, 2, 2, 1, 0, 3, 2, 0])  # groups of unequal size
    got = fuse(fusion, q, q_labels, s, s_labels)
    torch.testing.assert_close(got, reference(fusion, q, q_labels, s, s_labels), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fusion_type", ["additive", "dot"])
def test_negative_labels_read_all_memory(fusion_type):
    torch.manual_seed(1)
    fusion = MemoryFusion(6, fusion_type=fusion_type)
    q, q_labels = torch.randn(4, 2, 6), torch.tensor([0, -1, -1, 1])
    s, s_labels = torch.randn(5, 3, 6), torch.tensor([0, 0, 1, 1, 1])
    got = fuse(fusion, q, q_labels, s, s_labels)
    torch.testing.assert_close(got, reference(fusion, q, q_labels, s, s_labels), atol=1e-5, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fusion_type must be one of"):
        MemoryFusion(4, fusion_type="cosine")
    with pytest.raises(ValueError, match="memory_tokens must be"):
        fuse(MemoryFusion(4), torch.randn(1, 1, 4), torch.tensor([0]), torch.randn(0, 1, 4), torch.tensor([]))


def test_result_does_not_depend_on_other_queries_in_the_batch():
    torch.manual_seed(2)
    fusion = MemoryFusion(8)
    q, labels = torch.randn(6, 4, 8), torch.tensor([0, 1, 0, 1, 2, 9])
    s, s_labels = torch.randn(7, 4, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    full = fuse(fusion, q, labels, s, s_labels)
    for i in range(6):
        torch.testing.assert_close(fuse(fusion, q[i : i + 1], labels[i : i + 1], s, s_labels)[0], full[i])


def test_compiled_additive_score_equals_the_formula():
    torch.manual_seed(3)
    fusion = MemoryFusion(8, chunk_elements=64)
    fusion.compile_scores(dynamic=True)
    q, q_labels = torch.randn(5, 4, 8), torch.tensor([0, 1, 2, 9, -1])
    s, s_labels = torch.randn(7, 4, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    torch.testing.assert_close(
        fuse(fusion, q, q_labels, s, s_labels), reference(fusion, q, q_labels, s, s_labels), atol=1e-5, rtol=1e-4
    )
    with pytest.raises(ValueError, match="only the additive fusion"):
        MemoryFusion(8, fusion_type="dot").compile_scores()


@pytest.mark.parametrize("fusion_type", ["additive", "dot"])
def test_memory_prepared_once_gives_the_same_output_and_a_set_without_padding_needs_no_mask(fusion_type):
    torch.manual_seed(4)
    fusion = MemoryFusion(8, fusion_type=fusion_type)
    q, q_labels = torch.randn(6, 4, 8), torch.tensor([0, 1, 0, 1, 2, 2])
    s, s_labels = torch.randn(6, 4, 8), torch.tensor([0, 1, 2, 0, 1, 2])  # two items per class: no padding
    readout = MemoryReadout.from_labels(q_labels, s_labels)
    memory = fusion.prepare(s, readout)
    assert [chunk.valid for chunk in memory.chunks[0]] == [None]
    assert torch.equal(fusion(q, memory=memory), fusion(q, s, readout))
    (chunk,) = memory.chunks[0]
    all_valid = dataclasses.replace(chunk, valid=torch.ones_like(chunk.keys[..., 0], dtype=torch.bool))
    masked = dataclasses.replace(memory, chunks=((all_valid,),))
    torch.testing.assert_close(fusion(q, memory=masked), fusion(q, memory=memory), atol=0, rtol=0)
    padded = fusion.prepare(s[:5], MemoryReadout.from_labels(q_labels, s_labels[:5]))  # class 2 has one item
    (padded_chunk,) = padded.chunks[0]
    assert padded_chunk.valid is not None and not bool(padded_chunk.valid.all())
    torch.testing.assert_close(
        fusion(q, memory=padded), reference(fusion, q, q_labels, s[:5], s_labels[:5]), atol=1e-5, rtol=1e-4
    )


@pytest.mark.slow  # compiles the additive kernels (seconds each)
def test_compiled_additive_fusion_compiles_few_graphs_for_any_memory_or_batch():
    """Memory sizes (one chunk, several chunks), padded and unpadded sets, one group or several, queries of
    one class or many: at most four graphs (mask or none, one group or several), and none more later."""
    torch.manual_seed(5)
    fusion = MemoryFusion(8)
    fusion.compile_scores(native=False, dynamic=True)  # sampling on a CPU would run the native kernel instead
    counters = torch._dynamo.utils.counters["stats"]  # per process: other tests may have compiled before

    def calls():
        for num_items in (6, 31, 900):  # 900: 300 items x 4 tokens per class, two chunks of the score
            s, s_labels = torch.randn(num_items, 4, 8), torch.arange(num_items) % 3  # 31: unequal classes
            for q_labels in ([0, 1, 2, 0], [1], [2, 2, 2], [0, 1, 2] * 5, [0, 3, 1, 3]):  # 3: reads all memory
                labels = torch.tensor(q_labels)
                fuse(fusion, torch.randn(len(labels), 4, 8), labels, s, s_labels)

    with torch.no_grad():  # as in sampling (training's graphs: tests/benchmarks/test_training_step.py)
        start = counters["unique_graphs"]
        calls()
        compiled = counters["unique_graphs"] - start
        calls()
    assert 1 <= compiled <= 4 and counters["unique_graphs"] - start == compiled
