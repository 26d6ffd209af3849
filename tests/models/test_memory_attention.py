"""Memory at several resolutions, the skip bypass, anchor pixels, and the anchor readout of nearest-support
models."""

import pytest
import torch

from spm_gen import MemoryBank, SPMDiffusionPipeline
from spm_gen.memory.readout import MemoryReadout, anchor_readout
from spm_gen.models.memory_attention import LayeredMemory
from spm_gen.training import load_config
from tests.conftest import make_images
from tests.tiny import read_items, sample, tiny_memory, tiny_pipeline, tiny_unet

MULTI = {"memory_resolutions": (8, 4)}
ANCHOR = {"anchor_pixels": True}


def test_without_the_options_the_unet_is_the_papers_and_with_them_it_starts_from_the_same_weights():
    paper, multi = tiny_unet(), tiny_unet(**MULTI)
    assert not paper.memory_attentions and set(multi.memory_attentions) == {"8", "4"}
    assert paper.memory_token_shape == (16, 16) and multi.memory_token_shape == (16 + 64 + 16, 16)
    for name, value in paper.state_dict().items():
        assert torch.equal(value, multi.state_dict()[name]), name
    images, labels = tiny_memory()
    readout = MemoryReadout.from_labels(torch.tensor([0, 1, 2]), labels)
    noisy = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = paper(noisy, 50, torch.tensor([0, 1, 2]), paper.encode_memory(images, labels), readout).sample
    tokens = multi.encode_memory(images, labels)
    assert torch.equal(tokens[:, :16], paper.encode_memory(images, labels))
    # the step-by-step up blocks equal diffusers' blocks: with the memory reads silenced, the paper's output
    for layer in multi.memory_attentions.values():
        torch.nn.init.zeros_(layer.to_out.weight)
        torch.nn.init.zeros_(layer.to_out.bias)
    torch.testing.assert_close(multi(noisy, 50, torch.tensor([0, 1, 2]), tokens, readout).sample, expected)


def test_every_resolution_reads_memory_and_the_bypass_is_what_was_asked():
    images, labels = tiny_memory()
    readout = MemoryReadout.from_labels(torch.tensor([0, 1]), labels)
    noisy = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for bypass, t in (("keep", 50), ("drop", 50), ("drop_low_noise", torch.tensor([5, 50]))):
        unet = tiny_unet(**MULTI, skip_bypass=bypass, skip_bypass_timestep=20)
        memory = unet.prepare_memory(unet.encode_memory(images, labels), readout)
        assert isinstance(memory, LayeredMemory) and set(memory.levels) == {8, 4}
        keep = unet._skip_keep(t, 2, noisy)
        expected = {"keep": None, "drop": [0.0, 0.0], "drop_low_noise": [0.0, 1.0]}[bypass]
        assert (keep is None) if expected is None else keep.flatten().tolist() == expected
        # each level's memory changes the output: shuffling one level's features moves the prediction
        base = unet(noisy, t, torch.tensor([0, 1]), fusion_memory=memory).sample
        for level in unet.memory_levels:
            tokens = unet.encode_memory(images, labels)
            span = slice(level.offset, level.offset + level.length)
            tokens[:, span] = tokens[:, span].flip(1)
            moved = unet(noisy, t, torch.tensor([0, 1]), tokens, readout).sample
            assert not torch.allclose(moved, base), (bypass, level.resolution)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="memory_resolutions"):
        tiny_unet(memory_resolutions=(2,))
    with pytest.raises(ValueError, match="memory_resolutions"):
        tiny_unet(memory_resolutions=(8, 8))
    with pytest.raises(ValueError, match="fusion_type"):
        tiny_unet(memory_resolutions=(8,), fusion_type="none")
    with pytest.raises(ValueError, match="skip_bypass"):
        tiny_unet(skip_bypass="drop")
    with pytest.raises(ValueError, match="skip_bypass"):
        tiny_unet(**MULTI, skip_bypass="sometimes")
    unet = tiny_unet(**MULTI)
    images, labels = tiny_memory()
    readout = MemoryReadout.from_labels(torch.tensor([0]), labels)
    paper_memory = tiny_unet().prepare_memory(tiny_unet().encode_memory(images, labels), readout)
    with pytest.raises(ValueError, match="levels"):
        unet(torch.zeros(1, 1, 8, 8), 5, torch.tensor([0]), fusion_memory=paper_memory)


def test_all_resolutions_in_a_config_and_the_training_options(tmp_path):
    overrides = {"output_dir": str(tmp_path), "memory_resolutions": "all", "support": "nearest"}
    config = load_config("configs/tiny.yaml", overrides)
    assert config.model["memory_resolutions"] == [8, 4] and config.support_neighbours == 4
    with pytest.raises(ValueError, match="support"):
        load_config("configs/tiny.yaml", {"support": "far"})
    with pytest.raises(ValueError, match="support_neighbours"):
        load_config("configs/tiny.yaml", {"support_neighbours": 0})


@pytest.mark.parametrize("options", [MULTI, {**MULTI, "skip_bypass": "drop"}, ANCHOR])
def test_deletion_is_exact_batches_independent_and_guidance_reads_the_class(tmp_path, options):
    images, labels = tiny_memory()
    ids = [str(i) for i in range(len(labels))]
    pipe = tiny_pipeline(MemoryBank.from_images(images, labels, ids), **options)
    gone = ["1", "5"]  # class 1
    pipe.memory_bank.remove(ids=gone)
    kept = [i for i in ids if i not in gone]
    never = pipe.with_memory_bank(
        MemoryBank.from_images(images[[int(i) for i in kept]], labels[[int(i) for i in kept]], kept)
    )
    assert torch.equal(sample(pipe), sample(never))
    # guided: a class-0 sample does not change when class 1 loses items (its branches read class 0 only)
    full = tiny_pipeline(MemoryBank.from_images(images, labels, ids), **options)
    assert torch.equal(sample(full, class_labels=[0, 0])[0], sample(pipe, class_labels=[0, 0])[0])
    assert not torch.equal(sample(full, class_labels=[1])[0], sample(pipe, class_labels=[1])[0])
    # a sample with its own generator is the same alone and in a batch
    generators = [torch.Generator().manual_seed(s) for s in (4, 5, 6)]
    batch = pipe(
        class_labels=[0, 2, 3], generator=generators, num_inference_steps=2, guidance_scale=0.3, output_type="pt"
    )
    alone = pipe(
        class_labels=[2],
        generator=[torch.Generator().manual_seed(5)],
        num_inference_steps=2,
        guidance_scale=0.3,
        output_type="pt",
    )
    torch.testing.assert_close(batch.images[1:2], alone.images, atol=1e-6, rtol=0)
    # save and load keep the options and the outputs
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = SPMDiffusionPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.config.skip_bypass == pipe.unet.config.skip_bypass
    assert loaded.unet.config.anchor_pixels == pipe.unet.config.anchor_pixels
    assert list(loaded.unet.config.memory_resolutions) == list(options.get("memory_resolutions", ()))
    assert torch.equal(sample(loaded), sample(pipe))


def test_anchor_readout_reads_an_anchor_of_the_class_and_its_nearest_items():
    images, labels = make_images(40, seed=2), torch.arange(40) % 4
    bank = MemoryBank.from_images(images, labels)
    query_labels = torch.tensor([0, 0, 1, 3, 0])
    readout = anchor_readout(bank, query_labels, 3, torch.Generator().manual_seed(0))
    again = anchor_readout(bank, query_labels, 3, torch.Generator().manual_seed(0))
    assert readout.read == again.read and all(len(r) == 3 for r in readout.read)
    for read, label in zip(readout.read, query_labels.tolist()):
        assert set(bank.get_labels(read).tolist()) == {label}
        nearest = bank.nearest_images(bank.get_images(read[:1]), 3, label=label).ids[0]
        assert read == nearest  # the anchor first, then its nearest items of the class
    ranked = bank.seeded_ids(0, None, seed=readout_seed(torch.Generator().manual_seed(0)))
    assert [r[0] for r, c in zip(readout.read, query_labels.tolist()) if c == 0] == ranked[:3]
    assert [[readout.ids[j] for j in r] for r in read_items(readout)] == readout.read
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    per_sample = anchor_readout(bank, torch.tensor([0, 1]), 2, generators)
    alone = anchor_readout(bank, torch.tensor([1]), 2, [torch.Generator().manual_seed(2)])
    assert per_sample.read[1] == alone.read[0]


def readout_seed(generator):
    from spm_gen.memory.ranking import derived_seed

    return derived_seed(generator)


@pytest.mark.parametrize("options", [MULTI, ANCHOR])
def test_an_anchor_model_samples_its_default_and_deletion_is_exact(tmp_path, options):
    images, labels = tiny_memory(count=32)
    ids = [str(i) for i in range(len(labels))]
    pipe = tiny_pipeline(MemoryBank.from_images(images, labels, ids), **options)
    anchor = SPMDiffusionPipeline(
        pipe.unet, pipe.scheduler, pipe.memory_bank, default_memory_retrieval="anchor", default_memory_size=3
    )
    anchor.set_progress_bar_config(disable=True)
    out = anchor(
        class_labels=[0, 1, 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    assert all(len(r) == 3 for r in out.memory_ids)
    gone = [out.memory_ids[1][0]]  # the anchor of the class-1 sample
    anchor.memory_bank.remove(ids=gone)
    kept = [i for i in ids if i not in gone]
    positions = [int(i) for i in kept]
    never = anchor.with_memory_bank(MemoryBank.from_images(images[positions], labels[positions], kept))
    assert never.config.default_memory_retrieval == "anchor"
    args = dict(class_labels=[0, 1, 2], num_inference_steps=2, output_type="pt")
    after, held = (p(generator=torch.Generator().manual_seed(0), **args) for p in (anchor, never))
    assert after.memory_ids == held.memory_ids and gone[0] not in sum(after.memory_ids, [])
    assert torch.equal(after.images, held.images)
    anchor.save_pretrained(tmp_path / "anchor")
    assert SPMDiffusionPipeline.from_pretrained(tmp_path / "anchor").config.default_memory_size == 3
    with pytest.raises(ValueError, match="default_memory_retrieval"):
        SPMDiffusionPipeline(pipe.unet, pipe.scheduler, pipe.memory_bank, default_memory_retrieval="nearest")


def test_anchor_pixels_are_each_querys_first_item_and_reach_the_output():
    unet = tiny_unet(**ANCHOR)
    assert unet.conv_in.in_channels == 2 and unet.memory_token_shape == (16 + 64, 16)
    images, labels = tiny_memory()
    tokens = unet.encode_memory(images, labels)
    # query 0 reads items (5, 1), queries 1 and 2 read (2, 6); guided batches route rows the same way
    readout = MemoryReadout.from_groups(
        torch.tensor([[5, 1], [2, 6]]), torch.ones(2, 2, dtype=bool), torch.tensor([0, 1, 1]), 24
    )
    memory = unet.prepare_memory(tokens, readout)
    assert torch.equal(memory.anchors, images[[5, 2, 2]] * 2 - 1)
    noisy = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    base = unet(noisy, 5, torch.tensor([1, 2, 2]), fusion_memory=memory).sample
    # another anchor image moves the prediction of the queries that read it, only those
    moved_tokens = tokens.clone()
    moved_tokens[5, 16:, 0] = moved_tokens[5, 16:, 0].flip(0)
    moved = unet(noisy, 5, torch.tensor([1, 2, 2]), moved_tokens, readout).sample
    assert not torch.allclose(moved[0], base[0]) and torch.equal(moved[1:], base[1:])
    with pytest.raises(ValueError, match="anchor_pixels"):
        tiny_unet(**ANCHOR, fusion_type="none")
    with pytest.raises(ValueError, match="anchor_pixels"):  # memory prepared for a unet without anchors
        unet(noisy, 5, torch.tensor([1, 2, 2]), fusion_memory=tiny_unet().prepare_memory(tokens[:, :16], readout))
    with pytest.raises(ValueError, match="queries"):
        unet(noisy[:2], 5, torch.tensor([1, 2]), fusion_memory=memory)
    with pytest.raises(ValueError, match="support"):  # the anchor is a nearest-support group's first item
        load_config("configs/tiny.yaml", {"anchor_pixels": True})
    config = load_config("configs/tiny.yaml", {"anchor_pixels": True, "support": "nearest"})
    assert config.model["anchor_pixels"] is True
