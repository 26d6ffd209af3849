"""The training options for complete forgetting: memory-only items and the query's own image in its support."""

import json

import pytest
import torch
from diffusers import DDPMScheduler

from spm_gen import MemoryBank, SPMDiffusionPipeline
from spm_gen.memory.readout import MemoryReadout
from spm_gen.training import load_config, train
from spm_gen.training.data import load_training_set
from spm_gen.training.losses import LossOptions, diffusion_loss, self_support
from spm_gen.training.memory_sampling import SupportSampler, nearest_support, nearest_table
from spm_gen.training.run import TrainingBatch
from tests.conftest import launch_two_cpu_processes, make_images
from tests.tiny import read_items, tiny_unet


def _config(tmp_path, **extra):
    return load_config("configs/tiny.yaml", {"output_dir": str(tmp_path / "run"), "images_per_class": 6, **extra})


def _training_set(tmp_path, **extra):
    return load_training_set(_config(tmp_path, **extra), (1, 8, 8), 10)


def test_memory_only_fraction_is_per_class_seeded_and_kept_by_the_oracle(tmp_path):
    full = _training_set(tmp_path, memory_only_fraction=0.5)
    labels = dict(zip(full.dataset.ids, full.dataset.labels.tolist()))
    per_class = [sum(labels[i] == c for i in full.memory_only_ids) for c in range(10)]
    assert per_class == [3] * 10
    assert full.memory_only_ids == _training_set(tmp_path, memory_only_fraction=0.5).memory_only_ids
    other_seed = _training_set(tmp_path, memory_only_fraction=0.5, memory_only_seed=1)
    assert other_seed.memory_only_ids != full.memory_only_ids
    # the oracle's exclusions do not move the split: the remaining items keep their roles
    gone = [full.memory_only_ids[0], full.target_ids[0]]
    oracle = _training_set(tmp_path, memory_only_fraction=0.5, exclude_ids=gone)
    assert oracle.memory_only_ids == [i for i in full.memory_only_ids if i not in gone]
    assert oracle.target_ids == [i for i in full.target_ids if i not in gone]


def test_memory_only_classes_and_ids_file(tmp_path):
    by_class = _training_set(tmp_path, memory_only_classes=[5, 7])
    labels = dict(zip(by_class.dataset.ids, by_class.dataset.labels.tolist()))
    assert {labels[i] for i in by_class.memory_only_ids} == {5, 7} and len(by_class.memory_only_ids) == 12
    assert not {labels[i] for i in by_class.target_ids} & {5, 7}
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(by_class.dataset.ids[:3]))
    by_file = _training_set(tmp_path, memory_only_ids_file=str(ids_file))
    assert by_file.memory_only_ids == by_class.dataset.ids[:3]
    ids_file.write_text(json.dumps(["no-such-id"]))
    with pytest.raises(ValueError, match="no-such-id"):
        _training_set(tmp_path, memory_only_ids_file=str(ids_file))
    with pytest.raises(ValueError, match="memory_only_ids_file"):
        _config(tmp_path, memory_only_ids_file=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="memory_only_fraction"):
        _config(tmp_path, memory_only_fraction=1.0)
    with pytest.raises(ValueError, match="every training item is memory-only"):
        _training_set(tmp_path, memory_only_classes=list(range(10)))


def test_memory_only_items_are_support_but_never_queries():
    labels = torch.arange(40) % 4
    targets = torch.arange(40) < 20
    sampler = SupportSampler(labels, num_classes=4, targets=targets)
    generator = torch.Generator().manual_seed(0)
    supports = []
    for _ in range(20):
        queries, _, support, _ = sampler.draw(8, 16, False, generator)
        assert bool(targets[queries].all())
        assert not set(support.tolist()) & set(queries.tolist())
        supports += support.tolist()
    assert any(not targets[i] for i in supports)  # memory-only items do reach the memory path


def test_all_targets_draw_the_paper_batches():
    labels = torch.arange(40) % 4
    draws = [
        SupportSampler(labels, 4, targets).draw(8, 16, True, torch.Generator().manual_seed(3))
        for targets in (None, torch.ones(40, dtype=torch.bool))
    ]
    assert all(torch.equal(a, b) for a, b in zip(*draws))


def test_private_items_are_read_by_their_owner_only():
    query_labels = torch.tensor([0, 0, 1, 1])
    item_labels = torch.tensor([0, 1, 0, 1, 0, 1, 0])  # items 4, 5, 6 are private to queries 0, 2, 1
    owner = torch.tensor([-1, -1, -1, -1, 0, 2, 1])
    reads = read_items(MemoryReadout.from_labels(query_labels, item_labels, owner))
    assert [sorted(r) for r in reads] == [[0, 2, 4], [0, 2, 6], [1, 3, 5], [1, 3]]
    # no item of the query's label: every shared item, and still none of the others' private items
    owner = torch.tensor([-1, -1, -1, -1, 1])  # item 4 private to query 1
    reads = read_items(MemoryReadout.from_labels(torch.tensor([2, 0]), item_labels[:5], owner))
    assert [sorted(r) for r in reads] == [[0, 1, 2, 3], [0, 2, 4]]


def test_self_support_below_a_timestep_puts_the_own_image_in_low_noise_queries_only(monkeypatch):
    timesteps = torch.tensor([5, 50, 99, 100, 500])
    below = self_support(timesteps, torch.Generator(), LossOptions(self_support="below_timestep"))
    assert below.tolist() == [True, True, True, False, False]
    assert self_support(timesteps, torch.Generator(), LossOptions()) is None
    p = LossOptions(self_support="probability", self_support_probability=0.5)
    drawn = self_support(torch.zeros(2000, dtype=torch.long), torch.Generator().manual_seed(0), p)
    assert 0.45 < drawn.float().mean() < 0.55

    unet = tiny_unet()
    labels, support_labels = torch.tensor([0, 1, 2, 3] * 4), torch.arange(32) % 4
    queries, support = (make_images(16) * 255).to(torch.uint8), (make_images(32, seed=1) * 255).to(torch.uint8)
    seen = {}
    real_forward, real_encode = unet.forward, unet.encode_memory
    monkeypatch.setattr(unet, "forward", lambda *a, **k: seen.update(t=a[1], readout=a[4]) or real_forward(*a, **k))
    monkeypatch.setattr(unet, "encode_memory", lambda *a, **k: seen.update(memory=a[0]) or real_encode(*a, **k))
    options = LossOptions(self_support="below_timestep", self_support_timestep=50)
    batch = TrainingBatch(queries, labels, support, support_labels)
    diffusion_loss(unet, DDPMScheduler(num_train_timesteps=100), batch, torch.Generator().manual_seed(0), options)
    low = torch.nonzero(seen["t"] < 50).flatten().tolist()
    assert 0 < len(low) < 16 and len(seen["memory"]) == 32 + len(low)
    for query, items in enumerate(read_items(seen["readout"])):
        shared = torch.nonzero(support_labels == labels[query]).flatten().tolist()
        own = [32 + low.index(query)] if query in low else []
        assert sorted(items) == shared + own
        for item in own:  # the private item is the query's own image
            assert torch.equal(seen["memory"][item], queries[query])


def test_bad_self_support_values_are_named(tmp_path):
    with pytest.raises(ValueError, match="self_support"):
        _config(tmp_path, self_support="sometimes")
    with pytest.raises(ValueError, match="self_support_timestep"):
        _config(tmp_path, self_support="below_timestep", self_support_timestep=0)
    with pytest.raises(ValueError, match="self_support_probability"):
        _config(tmp_path, self_support_probability=1.5)


def test_the_bank_records_training_targets_and_receipts_say_which_removed_item_was_one(tmp_path):
    bank = MemoryBank.from_images(make_images(6), torch.arange(6) % 2)
    assert bank.training_targets is None and bank.remove(ids=["0"]).was_training_target is None
    bank.set_training_targets(["1", "2", "3"])
    later = bank.add(make_images(1, seed=9), [0])
    receipt = bank.remove(ids=["2", "4", *later])
    assert receipt.was_training_target == [True, False, False]
    assert bank.training_targets == {"1", "3"}
    bank.save_pretrained(tmp_path / "bank")
    loaded = MemoryBank.from_pretrained(tmp_path / "bank")
    assert loaded.training_targets == {"1", "3"} and loaded.receipts[-1].was_training_target == [True, False, False]
    with pytest.raises(ValueError, match="not in the memory bank"):
        bank.set_training_targets(["2"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "option",
    [
        {"memory_only_fraction": 0.5},
        {"self_support": "probability"},
        {"memory_only_classes": [3]},
        {"memory_resolutions": "all", "skip_bypass": "drop", "self_support": "probability"},
        {"support": "nearest", "memory_resolutions": "all", "skip_bypass": "drop_low_noise"},
        {"support": "nearest", "anchor_pixels": True, "self_support": "probability"},
    ],
)
def test_a_run_with_an_option_trains_resumes_and_saves_its_targets(tmp_path, option):
    every_step = {"checkpointing_steps": 2, "log_every": 1, "memory_per_batch": 8}
    full = train(_config(tmp_path / "a", **every_step, **option))
    train(_config(tmp_path / "b", **every_step, **option, max_train_steps=2))
    resumed = train(_config(tmp_path / "b", **every_step, **option, resume="latest"))
    a, b = SPMDiffusionPipeline.from_pretrained(full), SPMDiffusionPipeline.from_pretrained(resumed)
    for name, value in a.unet.state_dict().items():
        torch.testing.assert_close(value, b.unet.state_dict()[name], atol=1e-6, rtol=1e-5)
    expected = _training_set(tmp_path, **option)
    assert sorted(a.memory_bank.ids) == sorted(expected.dataset.ids)
    assert a.memory_bank.training_targets == set(expected.target_ids)
    # deletion stays exact: a removed memory-only or target item leaves what a never-held memory gives
    gone = [expected.dataset.ids[0], expected.dataset.ids[-1]]
    a.memory_bank.remove(ids=gone)
    kept = [i for i in expected.dataset.ids if i not in gone]
    images = (b.memory_bank.get_images(kept) * 255).round().to(torch.uint8)
    never_held = MemoryBank.from_images(images, b.memory_bank.get_labels(kept), kept)
    never = b.with_memory_bank(never_held)  # the same defaults: a nearest-support model reads anchors
    for pipe in (a, never):
        pipe.set_progress_bar_config(disable=True)
    args = dict(class_labels=list(range(10)), num_inference_steps=2, output_type="pt")
    out = [p(generator=torch.Generator().manual_seed(0), **args).images for p in (a, never)]
    assert torch.equal(*out)


@pytest.mark.slow
def test_two_processes_train_with_memory_only_items_and_self_support(tmp_path):
    run = tmp_path / "run"
    options = ["--memory_only_fraction", "0.5", "--self_support", "below_timestep", "--images_per_class", "6"]
    launch_two_cpu_processes("scripts/train.py", "--config", "configs/tiny.yaml", "--output_dir", str(run), *options)
    bank = SPMDiffusionPipeline.from_pretrained(run / "pipeline").memory_bank
    assert len(bank) == 60 and len(bank.training_targets) == 30


@pytest.mark.slow
def test_two_processes_train_content_memory(tmp_path):
    run = tmp_path / "run"
    options = [
        "--memory_resolutions",
        "all",
        "--skip_bypass",
        "drop",
        "--support",
        "nearest",
        "--anchor_pixels",
        "true",
        "--images_per_class",
        "6",
    ]
    launch_two_cpu_processes("scripts/train.py", "--config", "configs/tiny.yaml", "--output_dir", str(run), *options)
    pipe = SPMDiffusionPipeline.from_pretrained(run / "pipeline")
    assert list(pipe.unet.config.memory_resolutions) == [8, 4] and pipe.unet.config.skip_bypass == "drop"
    assert pipe.unet.config.anchor_pixels
    assert pipe.config.default_memory_retrieval == "anchor" and pipe.config.default_memory_size == 4


def test_nearest_support_reads_each_querys_nearest_items_of_its_class_and_its_own_image(monkeypatch):
    images = (make_images(24, seed=4) * 255).to(torch.uint8)
    labels = torch.arange(24) % 3
    table = nearest_table(images, labels, 3)
    flat = images.flatten(1).float()
    for item in range(24):
        same = [j for j in range(24) if labels[j] == labels[item] and j != item]
        distances = torch.stack([(flat[item] - flat[j]).norm() for j in same])
        assert table[item].tolist() == [same[j] for j in distances.argsort(stable=True)[:3].tolist()]
    with pytest.raises(ValueError, match="support_neighbours=8"):
        nearest_table(images, labels, 8)
    queries = torch.tensor([0, 4, 0, 7])
    support, groups = nearest_support(queries, table)
    assert [support[g].tolist() for g in groups] == [table[q].tolist() for q in queries.tolist()]
    assert len(set(support.tolist())) == len(support)
    # in the loss: each query reads its neighbours, and at low noise its own image first (the anchor)
    unet, seen = tiny_unet(), {}
    real_forward, real_encode = unet.forward, unet.encode_memory
    monkeypatch.setattr(unet, "forward", lambda *a, **k: seen.update(t=a[1], readout=a[4]) or real_forward(*a, **k))
    monkeypatch.setattr(unet, "encode_memory", lambda *a, **k: seen.update(memory=a[0]) or real_encode(*a, **k))
    batch = TrainingBatch(images[queries], labels[queries], images[support], labels[support], groups)
    options = LossOptions(self_support="below_timestep", self_support_timestep=50)
    diffusion_loss(unet, DDPMScheduler(num_train_timesteps=100), batch, torch.Generator().manual_seed(1), options)
    low = torch.nonzero(seen["t"] < 50).flatten().tolist()
    for query, items in enumerate(read_items(seen["readout"])):
        own = [len(support) + low.index(query)] if query in low else []
        assert items == own + groups[query].tolist()
        for item in own:
            assert torch.equal(seen["memory"][item], images[queries[query]])
