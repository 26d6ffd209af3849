import pytest
import torch

from spm_gen import MemoryBank, SPMDiffusionPipeline
from spm_gen.reporting.comparison import Comparison, SamplingPlan, TwinBaseline, run_comparison
from spm_gen.reporting.sampling_settings import SamplingSettings
from spm_gen.unlearning.twin import TwinUnlearning
from tests.tiny import tiny_memory, tiny_pipeline, tiny_unet


def test_every_model_is_sampled_by_role_with_the_same_seeds_and_the_deletion_is_exact(tmp_path):
    spm = tiny_pipeline()
    images, labels = tiny_memory()
    keep = [i for i in range(len(images)) if i not in (1, 6)]
    never = tiny_pipeline(MemoryBank.from_images(images[keep], labels[keep], ids=[str(i) for i in keep]))
    twin = SPMDiffusionPipeline(tiny_unet(fusion_type="none"), spm.scheduler)
    twin.set_progress_bar_config(disable=True)
    comparison = Comparison(
        spm,
        {"ids": ["1", "6"]},
        "test",
        twin=TwinBaseline(twin),  # sampled, not unlearned
        oracles={"never_held": never},
        names={"spm_before": "SPM before"},
    )
    plan = SamplingPlan([0, 1, 2, 1], str(tmp_path), SamplingSettings(num_inference_steps=2, memory_size=3))
    result = run_comparison(comparison, plan)
    assert list(result.runs) == ["spm_before", "spm_after", "twin_before", "never_held"]  # in the order made
    assert result["spm_before"].name == "SPM before" and result["never_held"].name == "never_held"
    assert result.receipt.removed_ids == ["1", "6"] and "1" not in spm.memory_bank
    assert result["spm_after"].seconds == result.receipt.duration_s and result["spm_before"].seconds is None
    assert result["spm_before"].reads_memory and not result["twin_before"].reads_memory
    after, held_never = result["spm_after"].generations, result["never_held"].generations
    assert torch.equal(after.images, held_never.images)  # exact: as if the memory never held them
    assert not torch.equal(result["spm_before"].generations.images, after.images)  # classes 1 and 2 lost items
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never_held", "spm_after", "spm_before", "twin_before"]


def test_a_twin_to_unlearn_needs_what_it_forgets_and_keeps():
    with pytest.raises(ValueError, match=r"methods \['twin_after'\] need its forget and remain sets"):
        TwinBaseline(object(), methods={"twin_after": TwinUnlearning()})
