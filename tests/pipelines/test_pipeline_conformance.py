"""The applicable checks of diffusers' `PipelineTesterMixin` (tests/pipelines/test_pipelines_common.py), run
against a tiny SPM pipeline: components, call signature and conventions, batch independence, dtype, variants,
attention slicing and progress bars."""

import inspect
import os

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0, SlicedAttnProcessor

from spm_gen import SPMDiffusionPipeline
from tests.tiny import sample, tiny_pipeline


def test_components_rebuild_the_pipeline(pipe):
    assert set(pipe.components) == {"unet", "scheduler", "memory_bank"}
    rebuilt = SPMDiffusionPipeline(**pipe.components)
    rebuilt.set_progress_bar_config(disable=True)
    assert torch.equal(sample(rebuilt), sample(pipe))


def test_call_signature_has_the_standard_arguments():
    parameters = inspect.signature(SPMDiffusionPipeline.__call__).parameters
    standard = ["num_inference_steps", "guidance_scale", "generator", "latents", "output_type", "return_dict",
                "num_images_per_prompt", "callback_on_step_end", "callback_on_step_end_tensor_inputs"]  # fmt: skip
    assert [name for name in standard if name not in parameters] == []


def test_tuple_and_dict_outputs_are_the_same(pipe):
    (images,) = pipe(class_labels=[1, 2], num_inference_steps=2, guidance_scale=0.3, output_type="pt",
                     return_dict=False, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(images, sample(pipe, class_labels=[1, 2], memory_size=None))
    with pytest.raises(ValueError, match=r"callback_on_step_end_tensor_inputs \['noise'\]"):
        pipe(class_labels=[1], num_inference_steps=1, callback_on_step_end_tensor_inputs=["noise"])


def test_diffusers_call_conventions():
    pipe = tiny_pipeline()
    args = dict(class_labels=[0, 2], num_inference_steps=2, memory_size=3, guidance_scale=0.3)
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, int(t), p.num_timesteps, p.do_classifier_free_guidance, p.guidance_scale))
        return {"latents": tensors["latents"] * 0} if i == 0 else tensors

    zeroed = pipe(**args, callback_on_step_end=callback, output_type="latent").images
    assert [s[0] for s in seen] == [0, 1] and seen[0][2:] == (2, True, 0.3) and zeroed.shape == (2, 1, 8, 8)
    # user latents replace the generator's noise; "latent" output is the model-space result before clamping
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    seeded = dict(args, generator=torch.Generator().manual_seed(1))  # the generator then picks memory only
    from_latents = pipe(**seeded, latents=noise, output_type="latent").images
    seeded["generator"] = torch.Generator().manual_seed(1)
    assert torch.equal(from_latents, pipe(**seeded, latents=noise.clone(), output_type="latent").images)
    seeded["generator"] = torch.Generator().manual_seed(1)
    pt = pipe(**seeded, latents=noise, output_type="pt").images
    torch.testing.assert_close(pt, (from_latents / 2 + 0.5).clamp(0, 1))
    # samples per class label; a batch size that contradicts the labels is an error
    out = pipe(**args, num_images_per_prompt=3, output_type="pt")
    assert out.images.shape[0] == 6 and [len(ids) for ids in out.memory_ids] == [3] * 6
    with pytest.raises(ValueError, match="batch_size=5 with 2 class_labels"):
        pipe(**args, batch_size=5)
    with pytest.raises(ValueError, match=r"latents must have shape \(2, 1, 8, 8\)"):
        pipe(**args, latents=torch.randn(3, 1, 8, 8))

    def stop(p, i, t, tensors):
        p._interrupt = True
        return tensors

    seen.clear()
    pipe(**args, callback_on_step_end=lambda p, i, t, x: seen.append(i) or stop(p, i, t, x))
    assert seen == [0]  # interrupted after the first step


def test_with_a_list_of_generators_a_sample_does_not_depend_on_the_rest_of_the_batch():
    pipe = tiny_pipeline()

    def run(labels, seeds):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return pipe(class_labels=labels, generator=generators, memory_size=3, num_inference_steps=2, output_type="pt")

    alone = run([0], [7])
    mixed = run([2, 0, 1, 3], [5, 7, 6, 9])
    torch.testing.assert_close(mixed.images[1], alone.images[0], atol=1e-5, rtol=1e-5)
    assert mixed.memory_ids[1] == alone.memory_ids[0]
    assert run([0], [8]).memory_ids[0] != alone.memory_ids[0] or not torch.equal(run([0], [8]).images, alone.images)
    with pytest.raises(ValueError, match="got 2 generators for 3 samples"):
        run([0, 1, 2], [1, 2])


@pytest.mark.parametrize("slice_size", ["auto", "max", 1])
def test_attention_slicing_applies_and_keeps_the_samples(pipe, slice_size):
    reference = sample(pipe)
    pipe.enable_attention_slicing(slice_size)
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {SlicedAttnProcessor}
    torch.testing.assert_close(sample(pipe), reference, atol=1e-5, rtol=1e-5)
    pipe.disable_attention_slicing()
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}
    with pytest.raises(ValueError, match="slice_size must be 'auto', 'max', an int or None, got 'half'"):
        pipe.unet.set_attention_slice("half")


def test_to_bfloat16_samples_in_bfloat16_and_keeps_the_memory_uint8(pipe, tmp_path):
    reference, memory = sample(pipe), pipe.memory_bank.get_images()
    pipe.to(torch.bfloat16)
    assert pipe.dtype == torch.bfloat16 and pipe.unet.dtype == torch.bfloat16
    assert torch.equal(pipe.memory_bank.get_images(), memory)  # still exact uint8: bf16 can't hold k/255
    images = sample(pipe)
    assert images.dtype == torch.bfloat16
    torch.testing.assert_close(images.float(), reference, atol=0.05, rtol=0)
    # a bf16 pipeline saved and loaded with torch_dtype stays bf16 and gives the same samples
    pipe.save_pretrained(tmp_path)
    loaded = SPMDiffusionPipeline.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.dtype == torch.bfloat16 and torch.equal(sample(loaded), images)


def test_variant_saves_name_the_unet_weights_and_keep_one_copy_of_the_memory(pipe, tmp_path):
    reference = sample(pipe)
    pipe.save_pretrained(tmp_path, variant="fp16")
    assert sorted(os.listdir(tmp_path / "unet")) == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    bank_files = [name for name in os.listdir(tmp_path / "memory_bank") if name.endswith(".safetensors")]
    assert len(bank_files) == 1 and ".fp16." not in bank_files[0]  # one copy of each image, for removals to erase
    loaded = SPMDiffusionPipeline.from_pretrained(tmp_path, variant="fp16")
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(sample(loaded), reference)


def test_progress_bar_shows_unless_disabled(pipe, capsys):
    pipe.set_progress_bar_config(disable=False)
    sample(pipe, num_inference_steps=3)
    assert "3/3" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    sample(pipe, num_inference_steps=3)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("guidance_scale, unconditional_memory", [(0.0, "class"), (0.3, "class"), (0.3, "all")])
def test_a_single_generator_is_a_list_of_one(guidance_scale, unconditional_memory):
    """diffusers' `test_inference_batch_single_identical`: one sample with `generator=g0` equals sample 0 of a
    call with `generator=[g0, g1, ...]` (memory retrieval never advances the caller's generator). With
    `unconditional_memory="all"` the unconditional branch reads every item the batch selected, which depends
    on the rest of the batch by design; a batch of one class read whole makes that the same set."""
    pipe = tiny_pipeline()
    same_class = unconditional_memory == "all"
    labels, memory_size = ([1, 1, 1], None) if same_class else ([1, 3, 0], 3)
    args = dict(num_inference_steps=2, guidance_scale=guidance_scale, memory_size=memory_size, output_type="pt")
    args["unconditional_memory"] = unconditional_memory
    single = pipe(class_labels=labels[:1], generator=torch.Generator().manual_seed(11), **args)
    batch = pipe(class_labels=labels, generator=[torch.Generator().manual_seed(s) for s in (11, 12, 13)], **args)
    torch.testing.assert_close(batch.images[0], single.images[0], atol=1e-5, rtol=1e-5)
    assert batch.memory_ids[0] == single.memory_ids[0]
    # and the noise is the generator's own first draw, as in every diffusers pipeline
    noise = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(11))
    from_noise = pipe(class_labels=labels[:1], generator=torch.Generator().manual_seed(11), latents=noise, **args)
    torch.testing.assert_close(from_noise.images, single.images)
