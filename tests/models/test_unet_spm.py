import pytest
import torch

from spm_gen import SPMUNet2DModel
from spm_gen.memory.readout import MemoryReadout
from spm_gen.training.config import build_unet, model_config
from tests.tiny import TINY, tiny_memory, tiny_unet


def test_cifar10_config_is_the_papers_network():
    cfg = model_config("configs/cifar10_ddpm.yaml")
    assert cfg["block_out_channels"] == [128, 256, 256, 256] and cfg["layers_per_block"] == 2
    assert cfg["attention_resolutions"] == [16] and cfg["dropout"] == 0.1 and cfg["fusion_type"] == "additive"
    twin = SPMUNet2DModel(**{**cfg, "fusion_type": "none"})
    # DDPM's CIFAR-10 UNet has 35.7M parameters
    assert 35.5e6 < sum(p.numel() for p in twin.parameters()) < 36.0e6
    spm = SPMUNet2DModel(**cfg)
    assert spm.memory_token_shape == (16, 256)


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  sample_size: 8\n  fusion: additive\n")
    with pytest.raises(ValueError, match=r"unknown model config keys .*\['fusion'\]"):
        model_config(path)


@pytest.mark.parametrize("fusion_type", ["additive", "dot", "none"])
def test_forward_shapes_and_round_trip(tmp_path, fusion_type):
    unet = tiny_unet(fusion_type=fusion_type)
    x, labels = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4])  # 4 is the null label
    kwargs = {}
    if fusion_type != "none":
        images, mem_labels = tiny_memory(8)
        readout = MemoryReadout.from_labels(labels, mem_labels)
        kwargs = dict(memory_tokens=unet.encode_memory(images, mem_labels), readout=readout)
    unet.eval()
    out = unet(x, torch.tensor(7), labels, **kwargs).sample
    assert out.shape == (5, 1, 8, 8)
    unet.save_pretrained(tmp_path)
    loaded = SPMUNet2DModel.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(x, torch.tensor(7), labels, **kwargs).sample, out)


def test_memory_changes_the_prediction_and_is_detached():
    unet = tiny_unet().eval()
    images, labels = tiny_memory(8)
    tokens = unet.encode_memory(images, labels)
    assert tokens.shape == (8, 16, 16) and not tokens.requires_grad
    x, queries = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    a = unet(x, 5, queries, tokens, MemoryReadout.from_labels(queries, labels)).sample
    b = unet(x, 5, queries, tokens.flip(0), MemoryReadout.from_labels(queries, labels.flip(0))).sample
    c = unet(x, 5, queries, tokens[:4] * 0, MemoryReadout.from_labels(queries, labels[:4])).sample
    assert torch.allclose(a, b, atol=1e-5)  # a set, not a sequence: order of memory items does not matter
    assert not torch.allclose(a, c, atol=1e-3)
    # gradients reach the unet's weights but never flow into memory tokens
    unet.train()
    grad_tokens = tokens.clone().requires_grad_(True)
    unet(x, 5, queries, grad_tokens, MemoryReadout.from_labels(queries, labels)).sample.square().mean().backward()
    assert grad_tokens.grad is None
    assert unet.fusion.score.weight.grad is not None and unet.conv_in.weight.grad is not None


def test_paper_memory_encoding_depends_on_the_timestep():
    unet = tiny_unet(memory_encoding="paper").eval()
    images, labels = tiny_memory(4)
    t0 = unet.encode_memory(images, labels)
    t50 = unet.encode_memory(images, labels, timestep=50)
    per_item = unet.encode_memory(images, labels, timestep=torch.tensor([0, 0, 50, 50]))
    assert not torch.allclose(t0, t50)
    torch.testing.assert_close(per_item[:2], t0[:2])
    torch.testing.assert_close(per_item[2:], t50[2:])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda u, m: u(torch.randn(1, 1, 8, 8), 1, torch.tensor([5]), *m), r"class_labels must be in \[0, 5\)"),
        (lambda u, m: u(torch.randn(1, 1, 8, 8), 1, torch.tensor([0])), "needs memory_tokens"),
        (lambda u, m: u(torch.randn(1, 1, 8, 8), 1, torch.tensor([0]), m[0][:, :4], m[1]), "memory_tokens must have"),
        (lambda u, m: u(torch.randn(1, 1, 8, 8), 1, torch.tensor([0]), m[0][:2], m[1]), "memory_tokens must be"),
        (lambda u, m: u.encode_memory(torch.rand(2, 3, 8, 8), torch.tensor([0, 1])), r"shape \(M, 1, 8, 8\)"),
        (lambda u, m: u.encode_memory(torch.rand(2, 1, 8, 8), torch.tensor([0, 5])), r"memory labels .*\[5\]"),
    ],
)
def test_bad_input(call, match):
    unet = tiny_unet()
    images, labels = tiny_memory(4)
    with pytest.raises(ValueError, match=match):
        call(unet, (unet.encode_memory(images, labels), MemoryReadout.from_labels(torch.tensor([0]), labels)))


def test_bad_config():
    with pytest.raises(ValueError, match="fusion_type"):
        build_unet(TINY, fusion_type="concat")
    with pytest.raises(ValueError, match="memory_encoding"):
        build_unet(TINY, memory_encoding="noisy")
    with pytest.raises(ValueError, match="smaller than fusion_pool_size=8"):
        build_unet(TINY, fusion_pool_size=8)


@pytest.mark.parametrize("fusion_type", ["additive", "none"])
def test_attention_processors_can_be_listed_and_swapped(fusion_type):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet = tiny_unet(fusion_type=fusion_type).eval()
    assert unet.attn_processors and all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
    x, labels = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    kwargs = {}
    if fusion_type != "none":
        images, mem_labels = tiny_memory(8)
        kwargs = dict(
            memory_tokens=unet.encode_memory(images, mem_labels), readout=MemoryReadout.from_labels(labels, mem_labels)
        )
    with torch.no_grad():
        before = unet(x, 3, labels, **kwargs).sample
        unet.set_default_attn_processor()
        assert all(isinstance(p, AttnProcessor) for p in unet.attn_processors.values())
        torch.testing.assert_close(unet(x, 3, labels, **kwargs).sample, before, atol=1e-5, rtol=1e-5)
