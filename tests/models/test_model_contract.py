"""The contract every model of the library keeps, in the spirit of diffusers' `ModelTesterMixin`: a save/load
round trip gives the same outputs from safetensors files only, outputs are deterministic in eval mode, have
the documented shape, and follow the model's dtype."""

import json
import os

import pytest
import torch

from spm_gen import SPMClassifier, SPMUNet2DModel
from spm_gen.memory.readout import MemoryReadout
from tests.conftest import make_images
from tests.tiny import tiny_memory, tiny_unet


class UNetCase:
    model_class = SPMUNet2DModel

    def __init__(self, fusion_type: str) -> None:
        self.fusion_type = fusion_type
        self.id = f"unet-{fusion_type}"

    def build(self) -> SPMUNet2DModel:
        return tiny_unet(fusion_type=self.fusion_type)

    def outputs(self, model: SPMUNet2DModel) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(5, 1, 8, 8, generator=g).to(model.dtype)
        labels = torch.tensor([0, 1, 2, 3, 4])  # 4: the null label of guidance
        if not model.uses_memory:
            return model(x, torch.tensor(7), labels).sample
        images, memory_labels = tiny_memory(8)
        tokens = model.encode_memory(images, memory_labels)
        return model(x, torch.tensor(7), labels, tokens, MemoryReadout.from_labels(labels, memory_labels)).sample

    expected_shape = (5, 1, 8, 8)


class ClassifierCase:
    model_class = SPMClassifier

    def __init__(self, head: str) -> None:
        self.head = head
        self.id = f"classifier-{head}"

    def build(self) -> SPMClassifier:
        torch.manual_seed(0)
        return SPMClassifier(image_size=8, num_classes=4, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=6,
                             head=self.head, num_neighbors=3)  # fmt: skip

    def outputs(self, model: SPMClassifier) -> torch.Tensor:
        images = make_images(5, seed=2).to(model.dtype)
        if not model.uses_memory:
            return model(images)
        memory, labels = tiny_memory(8)
        return model(images, memory.to(model.dtype), labels)

    expected_shape = (5, 4)


def _public(config) -> dict:
    return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))


CASES = [UNetCase("additive"), UNetCase("dot"), UNetCase("none")] + [
    ClassifierCase(h) for h in ("prototype", "neighbors", "linear")
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_round_trip_through_safetensors(case, tmp_path):
    model = case.build().eval()
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = case.model_class.from_pretrained(tmp_path).eval()
    assert _public(loaded.config) == _public(model.config)
    with torch.no_grad():
        assert torch.equal(case.outputs(loaded), case.outputs(model))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_deterministic_in_eval_mode_with_the_documented_shape(case):
    model = case.build().eval()
    with torch.no_grad():
        first, second = case.outputs(model), case.outputs(model)
    assert first.shape == case.expected_shape and torch.equal(first, second)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_outputs_follow_the_model_dtype(case):
    model = case.build().eval()
    with torch.no_grad():
        reference = case.outputs(model)
        double = case.outputs(model.to(torch.float64))
    assert model.dtype == torch.float64 and double.dtype == torch.float64
    torch.testing.assert_close(double.float(), reference, atol=1e-4, rtol=1e-4)
