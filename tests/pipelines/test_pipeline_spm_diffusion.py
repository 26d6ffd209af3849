import json
import os

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler

from spm_gen import MemoryBank, SPMDiffusionPipeline
from tests.conftest import make_images
from tests.tiny import read_items, sample, tiny_memory, tiny_pipeline


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler])
def test_schedulers_swap_through_from_config(pipe, scheduler_class):
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    images = sample(pipe)
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    torch.testing.assert_close(images, sample(pipe))  # seeded


def test_output_types_and_memory_ids(pipe):
    out = pipe(class_labels=2, batch_size=3, num_inference_steps=2, memory_size=2, output_type="np")
    assert out.images.shape == (3, 8, 8, 1) and out.images.dtype == np.float32
    assert all(len(ids) == 2 and set(pipe.memory_bank.get_labels(ids).tolist()) == {2} for ids in out.memory_ids)
    pil = pipe(batch_size=2, num_inference_steps=1, output_type="pil").images
    assert len(pil) == 2 and pil[0].size == (8, 8) and pil[0].mode == "L"
    (images,) = pipe(class_labels=[1], num_inference_steps=1, output_type="pt", return_dict=False)
    assert images.shape == (1, 1, 8, 8)


def test_memory_size_none_reads_the_whole_class(pipe):
    out = pipe(class_labels=[1, 3], num_inference_steps=1, memory_size=None, output_type="pt")
    assert [sorted(ids, key=int) for ids in out.memory_ids] == [
        ["1", "5", "9", "13", "17", "21"],
        ["3", "7", "11", "15", "19", "23"],
    ]


def test_save_and_load_give_identical_images(pipe, tmp_path):
    pipe.memory_bank.remove(ids=["0"])
    before = sample(pipe)
    pipe.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["memory_bank", "model_index.json", "pipeline.py", "scheduler", "unet"]
    index = json.load(open(tmp_path / "model_index.json"))
    assert index["unet"] == ["spm_gen.models.unet_spm", "SPMUNet2DModel"]
    assert index["memory_bank"] == ["spm_gen.memory.bank", "MemoryBank"]
    loaded = SPMDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.memory_bank.ids == pipe.memory_bank.ids and len(loaded.memory_bank.receipts) == 1
    assert torch.equal(sample(loaded), before)
    # diffusers' generic loader, as for a community pipeline (the folder carries pipeline.py)
    generic = DiffusionPipeline.from_pretrained(tmp_path, custom_pipeline=str(tmp_path), trust_remote_code=True)
    generic.set_progress_bar_config(disable=True)
    assert type(generic).__name__ == "SPMDiffusionPipeline" and torch.equal(sample(generic), before)


def test_the_saved_default_guidance_scale_is_used_when_a_call_gives_none(tmp_path):
    pipe = SPMDiffusionPipeline(**tiny_pipeline().components, default_guidance_scale=0.7)
    pipe.set_progress_bar_config(disable=True)
    guided = sample(pipe, guidance_scale=0.7)
    assert not torch.equal(guided, sample(pipe, guidance_scale=0.0))
    assert torch.equal(sample(pipe, guidance_scale=None), guided)
    pipe.save_pretrained(tmp_path)
    assert json.load(open(tmp_path / "model_index.json"))["default_guidance_scale"] == 0.7
    loaded = SPMDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.default_guidance_scale == 0.7 and torch.equal(sample(loaded, guidance_scale=None), guided)
    overridden = SPMDiffusionPipeline.from_pretrained(tmp_path, default_guidance_scale=0.0)
    assert overridden.config.default_guidance_scale == 0.0
    with pytest.raises(ValueError, match="default_guidance_scale must be a finite number >= 0, got -1"):
        SPMDiffusionPipeline(**tiny_pipeline().components, default_guidance_scale=-1)


def _never_held(removed_ids=(), removed_class=None) -> MemoryBank:
    images, labels = tiny_memory()
    keep = [i for i in range(len(labels)) if str(i) not in removed_ids and int(labels[i]) != removed_class]
    return MemoryBank.from_images(images[keep], labels[keep], ids=[str(i) for i in keep])


@pytest.mark.parametrize("warm_cache", [False, True])
@pytest.mark.parametrize("fusion_type", ["additive", "dot"])
def test_removal_is_exact(warm_cache, fusion_type):
    removed_ids = ("1", "2", "6", "13")
    pipe = tiny_pipeline(fusion_type=fusion_type)
    if warm_cache:
        sample(pipe, memory_size=None)  # tokens of every item are cached before the removal
    pipe.memory_bank.remove(ids=list(removed_ids))
    reference = tiny_pipeline(_never_held(removed_ids), fusion_type=fusion_type)
    for kwargs in ({}, {"memory_size": None}, {"memory_size": 1, "guidance_scale": 0.0}):
        assert torch.equal(sample(pipe, **kwargs), sample(reference, **kwargs))


def test_native_fusion_samples_as_eager_fusion_and_removes_exactly():
    """Sampling with `compile_fusion()` on a CPU runs the native kernel: the same images to float tolerance, and
    removal exact bit for bit against a bank that never held the items, as with eager fusion."""
    removed_ids = ("1", "2", "6", "13")
    eager, pipe = tiny_pipeline(), tiny_pipeline()
    pipe.unet.compile_fusion(dynamic=True)
    assert pipe.unet.fusion.has_native_kernel
    for kwargs in ({}, {"memory_size": None}):
        torch.testing.assert_close(sample(pipe, **kwargs), sample(eager, **kwargs), atol=1e-5, rtol=1e-4)
    pipe.memory_bank.remove(ids=list(removed_ids))
    reference = tiny_pipeline(_never_held(removed_ids))
    reference.unet.compile_fusion(dynamic=True)
    for kwargs in ({}, {"memory_size": None}, {"memory_size": 1, "guidance_scale": 0.0}):
        assert torch.equal(sample(pipe, **kwargs), sample(reference, **kwargs))


@pytest.mark.parametrize("warm_cache", [False, True])
def test_class_removal_is_exact(warm_cache):
    pipe = tiny_pipeline()
    if warm_cache:
        sample(pipe)
    pipe.memory_bank.remove(labels=[2])
    reference = tiny_pipeline(_never_held(removed_class=2))
    # class 2 has no memory left: its samples read all memory, exactly as with a bank that never held it
    assert torch.equal(sample(pipe), sample(reference))
    out = pipe(class_labels=[2], num_inference_steps=1, memory_size=3, output_type="pt")
    assert all(i in pipe.memory_bank for i in out.memory_ids[0])


def test_token_cache_is_reused_and_invalidated(pipe, monkeypatch):
    calls = []
    real = pipe.unet.encode_memory
    monkeypatch.setattr(pipe.unet, "encode_memory", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    pipe.memory_cache.batch_size = 4
    sample(pipe, memory_size=None)
    first = len(calls)
    assert first == 6 and len(pipe.memory_cache) == 24  # 24 items encoded once, in padded batches of 4
    sample(pipe, memory_size=None, num_inference_steps=3)
    assert len(calls) == first  # reused across calls, steps and both guidance branches
    pipe.memory_bank.remove(labels=[0])
    sample(pipe, memory_size=None)
    assert len(calls) == first and len(pipe.memory_cache) == 18  # removed items' tokens are dropped
    with torch.no_grad():
        pipe.unet.conv_in.weight.add_(0.01)  # a weight change empties the cache
    sample(pipe, memory_size=None)
    assert len(calls) > first


def test_paper_memory_encoding_encodes_per_step(monkeypatch):
    pipe = tiny_pipeline(memory_encoding="paper")
    timesteps = []
    real = pipe.unet.encode_memory
    monkeypatch.setattr(pipe.unet, "encode_memory", lambda *a, **k: timesteps.append(int(a[2])) or real(*a, **k))
    sample(pipe, num_inference_steps=3)
    assert sorted(set(timesteps), reverse=True) == pipe.scheduler.timesteps.tolist()
    assert len(pipe.memory_cache) == 0


def test_guidance_follows_the_papers_formula(pipe, monkeypatch):
    w = 0.7
    seen = []
    real_forward = pipe.unet.forward

    def forward(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        seen.append((args, out.sample))
        return out

    monkeypatch.setattr(pipe.unet, "forward", forward)
    real_step = pipe.scheduler.step
    outputs = []
    monkeypatch.setattr(pipe.scheduler, "step", lambda eps, *a, **k: outputs.append(eps) or real_step(eps, *a, **k))
    pipe(class_labels=[0, 3], num_inference_steps=1, guidance_scale=w, memory_size=2, output_type="pt")
    ((args, eps),), (guided,) = seen, outputs
    labels = args[2]
    assert labels.tolist() == [0, 3, 4, 4]  # conditional, then unconditional (null label) branch
    cond, uncond = eps.chunk(2)
    torch.testing.assert_close(guided, (1 + w) * cond - w * uncond)


def test_nearest_memory_retrieval(pipe):
    refs = pipe.memory_bank.get_images(["5", "10"])
    out = pipe(
        num_inference_steps=1, memory_retrieval="nearest", reference_images=refs, memory_size=2, output_type="pt"
    )
    assert [ids[0] for ids in out.memory_ids] == ["5", "10"]
    with pytest.raises(ValueError, match="needs reference_images"):
        pipe(num_inference_steps=1, memory_retrieval="nearest")


def test_twin_needs_no_memory(tmp_path):
    twin = tiny_pipeline(fusion_type="none")
    twin.memory_bank = None
    out = twin(class_labels=[0, 1], num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 1, 8, 8) and out.memory_ids is None
    twin.save_pretrained(tmp_path)
    assert SPMDiffusionPipeline.from_pretrained(tmp_path).memory_bank is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"class_labels": [0, 4]}, r"class_labels must be in \[0, 4\), got \[4\]"),
        ({"class_labels": [-1]}, r"got \[-1\]"),
        ({"memory_size": 0}, "memory_size must be a positive integer"),
        ({"memory_size": 2.5}, "memory_size must be a positive integer or None, got 2.5"),
        ({"num_inference_steps": 2.0}, "num_inference_steps must be a positive integer, got 2.0"),
        ({"class_labels": 3.7}, "class_labels must be a non-empty list of integers .* got 3.7"),
        ({"class_labels": True}, "got True"),
        ({"class_labels": ["3"]}, r"got \['3'\]"),
        ({"class_labels": []}, r"got \[\]"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number >= 0, got nan"),
        ({"guidance_scale": float("inf")}, "got inf"),
        ({"memory_retrieval": "best"}, "memory_retrieval must be one of"),
        ({"output_type": "jpg"}, "output_type must be one of"),
        ({"guidance_scale": -1.0}, "guidance_scale must be a finite number >= 0"),
        ({"unconditional_memory": "none"}, "unconditional_memory must be one of"),
    ],
)
def test_bad_input(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(**{"num_inference_steps": 1, **kwargs})


def test_memory_that_does_not_fit_the_unet():
    pipe = tiny_pipeline(MemoryBank.from_images(make_images(4, size=16), [0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"memory images have shape \(1, 16, 16\), the unet expects \(1, 8, 8\)"):
        pipe(num_inference_steps=1)
    pipe = tiny_pipeline(MemoryBank.from_images(make_images(3), [0, 1, 7]))  # the unet knows classes 0..3
    with pytest.raises(ValueError, match=r"memory items have labels \[7\], the unet knows classes 0..3"):
        pipe(num_inference_steps=1)


def test_sampling_runs_in_eval_mode_and_restores_training_mode():
    pipe = tiny_pipeline(dropout=0.5)
    pipe.unet.train()
    first = sample(pipe)
    assert pipe.unet.training
    assert torch.equal(first, sample(pipe))  # no dropout noise while sampling


def test_unconditional_memory_choice(monkeypatch):
    pipe = tiny_pipeline()
    seen = []
    real = pipe.unet.forward
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: seen.append(k["fusion_memory"].readout) or real(*a, **k))
    args = dict(class_labels=[0, 3], num_inference_steps=1, guidance_scale=0.3, output_type="pt")
    pipe(**args, unconditional_memory="all")
    pipe(**args, unconditional_memory="class")
    labels = [
        [pipe.memory_bank.get_labels([r.ids[i] for i in items]).unique().tolist() for items in read_items(r)]
        for r in seen
    ]
    assert labels == [[[0], [3], [0, 3], [0, 3]], [[0], [3], [0], [3]]]  # the memory labels each query reads
    all_memory = sample(pipe, unconditional_memory="all")
    assert not torch.equal(all_memory, sample(pipe, unconditional_memory="class"))


@pytest.mark.parametrize("memory_size", [3, None])
def test_deleting_one_class_leaves_other_classes_bit_identical(memory_size):
    """The official protocol (the default): a sample reads its own class's memory in both guidance branches,
    so deleting class-1 items never changes a class-0 or class-2 sample, even in a mixed batch."""
    pipe = tiny_pipeline()
    labels = [0, 1, 2, 1, 0, 2]
    before = sample(pipe, class_labels=labels, memory_size=memory_size)
    args = dict(class_labels=labels, memory_size=memory_size, num_inference_steps=1, output_type="pt")
    read_by_class_1 = pipe(generator=torch.Generator().manual_seed(0), **args).memory_ids[1]
    pipe.memory_bank.remove(ids=read_by_class_1[:2])  # two of the items class 1 reads
    after = sample(pipe, class_labels=labels, memory_size=memory_size)
    others = torch.tensor([label != 1 for label in labels])
    assert torch.equal(before[others], after[others]) and not torch.equal(before[~others], after[~others])
    pipe.memory_bank.remove(labels=[1])  # and the whole class
    assert torch.equal(before[others], sample(pipe, class_labels=labels, memory_size=memory_size)[others])


def test_an_emptied_class_reads_all_memory_with_a_warning_or_raises(caplog):
    pipe = tiny_pipeline()
    pipe.memory_bank.remove(labels=[3])
    with caplog.at_level("WARNING"):
        out = pipe(class_labels=[0, 3], num_inference_steps=1, memory_size=2, output_type="pt")
    assert "no memory items with labels [3]" in caplog.text
    assert set(out.memory_ids[0]) <= set(out.memory_ids[1])  # class 3 reads everything the batch selected
    with pytest.raises(ValueError, match=r"no memory items for labels \[3\] \(empty_memory='error'\)"):
        pipe(class_labels=[0, 3], num_inference_steps=1, memory_size=2, output_type="pt", empty_memory="error")


def test_reference_images_as_a_list_of_tensors():
    pipe = tiny_pipeline()
    references = [pipe.memory_bank.get_images(["5"])[0], pipe.memory_bank.get_images(["2"])[0]]
    args = dict(memory_retrieval="nearest", memory_size=1, num_inference_steps=1, output_type="pt")
    assert pipe(reference_images=references, **args).memory_ids == [["5"], ["2"]]


@pytest.mark.parametrize(("memory_encoding", "expected"), [("clean", 1), ("paper", 3)])
def test_memory_is_prepared_once_per_call_or_once_per_step_when_it_depends_on_the_step(
    monkeypatch, memory_encoding, expected
):
    """Whatever depends only on the readout (projected, grouped memory) is computed once per call, not once
    per step or per guidance branch; the paper's encoding reads memory at each step's t."""
    pipe = tiny_pipeline(memory_encoding=memory_encoding)
    calls = []
    real = pipe.unet.fusion.prepare
    monkeypatch.setattr(pipe.unet.fusion, "prepare", lambda *a: calls.append(1) or real(*a))
    sample(pipe, num_inference_steps=3)
    assert len(calls) == expected
