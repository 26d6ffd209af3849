import torch
from diffusers import DDPMScheduler

from spm_gen.training.losses import LossOptions, diffusion_loss
from spm_gen.training.run import TrainingBatch
from tests.conftest import make_images
from tests.tiny import read_items, tiny_unet


def test_the_official_protocol_nulls_labels_but_routes_memory_by_the_true_label(monkeypatch):
    """Dropped queries and dropped memory items lose only their class embedding; every query reads the
    memory of its true label (as the unconditional branch does at sampling time)."""
    unet = tiny_unet()
    labels, support_labels = torch.tensor([0, 1, 2, 3] * 4), torch.arange(32) % 4
    queries, support = (make_images(16) * 255).to(torch.uint8), (make_images(32, seed=1) * 255).to(torch.uint8)
    batch = TrainingBatch(queries, labels, support, support_labels)
    seen = {}
    real_forward, real_encode = unet.forward, unet.encode_memory
    monkeypatch.setattr(unet, "forward", lambda *a, **k: seen.update(query=a[2], readout=a[4]) or real_forward(*a, **k))
    monkeypatch.setattr(unet, "encode_memory", lambda *a, **k: seen.update(memory=a[1]) or real_encode(*a, **k))
    options = LossOptions(class_dropout=0.5, memory_label_dropout=0.5)
    diffusion_loss(unet, DDPMScheduler(num_train_timesteps=100), batch, torch.Generator().manual_seed(0), options)
    null = unet.null_class_label
    assert 0 < int((seen["query"] == null).sum()) < 16 and 0 < int((seen["memory"] == null).sum()) < 32
    for query, items in enumerate(read_items(seen["readout"])):
        assert sorted(items) == torch.nonzero(support_labels == labels[query]).flatten().tolist()
