"""SPMDiffusionPipeline: class-conditional sampling from a semi-parametric diffusion model."""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from spm_gen.choices import EmptyMemory, MemoryRetrieval, OutputType, UnconditionalMemory, check_choice
from spm_gen.memory.bank import MemoryBank
from spm_gen.memory.feature_cache import MemoryFeatureCache
from spm_gen.memory.readout import anchor_readout, class_readout, nearest_readout, per_sample_readout
from spm_gen.models.unet_spm import SPMUNet2DModel
from spm_gen.utils.atomic import atomic_write
from spm_gen.utils.images import from_model_range
from spm_gen.utils.modes import eval_mode
from spm_gen.utils.progress import bar_settings
from spm_gen.utils.validation import check_guidance_scale, check_positive_int, is_integer


@dataclass
class SPMPipelineOutput(ImagePipelineOutput):
    """`images`, and `memory_ids[i]`: the ids of the memory items sample i read (None for the twin)."""

    memory_ids: list[list[str]] | None = None


class SPMDiffusionPipeline(DiffusionPipeline):
    """Samples images from an `SPMUNet2DModel` that reads a `MemoryBank`.

    Components:
        unet ([`SPMUNet2DModel`]): the denoiser (`fusion_type="none"`: the parametric twin, no memory).
        scheduler ([`SchedulerMixin`]): DDPM, DDIM (the paper's sampler, eta 0) or DPM-Solver++, ...
        memory_bank ([`MemoryBank`], *optional* for the twin): what the model reads.

    Config:
        default_guidance_scale (`float`, defaults to 0.0): the guidance scale w of a call that gives none; it
            is saved with the pipeline (training writes its config's `guidance_scale`), so each model samples
            at the scale chosen for it; `spm-gen report` uses each model's own unless told otherwise.
        default_memory_retrieval (`str`, defaults to `"random"`) and default_memory_size (`int`, *optional*):
            what a call that names neither reads; a model trained with nearest support is saved with
            `"anchor"` and its `support_neighbours`.

    Memory tokens are cached in `memory_cache` (see `spm_gen.memory.feature_cache`): each item is encoded
    once and reused across calls, steps and both guidance branches until the unet's weights change.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["memory_bank"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        unet: SPMUNet2DModel,
        scheduler: SchedulerMixin,
        memory_bank: MemoryBank | None = None,
        default_guidance_scale: float = 0.0,
        default_memory_retrieval: str = "random",  # a MemoryRetrieval (str: diffusers reads the annotation)
        default_memory_size: int | None = None,
    ):
        super().__init__()
        check_guidance_scale("default_guidance_scale", default_guidance_scale)
        check_choice("default_memory_retrieval", default_memory_retrieval, MemoryRetrieval)
        if default_memory_retrieval == "nearest":
            raise ValueError('default_memory_retrieval cannot be "nearest": it needs the reference_images of a call')
        if default_memory_size is not None and (not is_integer(default_memory_size) or default_memory_size <= 0):
            raise ValueError(f"default_memory_size must be a positive integer or None, got {default_memory_size!r}")
        self.register_modules(unet=unet, scheduler=scheduler, memory_bank=memory_bank)
        self.register_to_config(
            default_guidance_scale=float(default_guidance_scale),
            default_memory_retrieval=default_memory_retrieval,
            default_memory_size=None if default_memory_size is None else int(default_memory_size),
        )
        self.memory_cache = MemoryFeatureCache()
        self.set_progress_bar_config(**bar_settings())  # one line per 30 s when stderr is not a terminal

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`DiffusionPipeline.save_pretrained`, plus this file as `pipeline.py`, so that diffusers' generic loader
        opens the folder as a community pipeline does:
        `DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder, trust_remote_code=True)`."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            target = os.path.join(os.fspath(save_directory), "pipeline.py")
            atomic_write(target, lambda tmp: shutil.copyfile(os.path.abspath(__file__), tmp))

    def with_memory_bank(self, memory_bank: MemoryBank | None) -> SPMDiffusionPipeline:
        """The same unet, scheduler and defaults reading `memory_bank` (for example a bank that never held some
        items, to compare against a deletion)."""
        defaults = {
            k: self.config[k] for k in ("default_guidance_scale", "default_memory_retrieval", "default_memory_size")
        }
        pipe = type(self)(unet=self.unet, scheduler=self.scheduler, memory_bank=memory_bank, **defaults)
        pipe.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return pipe

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set it to True in a `callback_on_step_end` to stop the denoising loop after this step."""
        return self._interrupt

    @property
    def dtype(self) -> torch.dtype:
        """The unet's dtype (the memory bank's images are uint8 and never decide it)."""
        return self.unet.dtype

    # ------------------------------------------------------------------ argument handling

    def _class_labels(self, class_labels, batch_size: int, cycle: bool) -> torch.Tensor | None:
        """The labels of the batch on the CPU; None (or classes cycling, with `cycle`) when none are given."""
        if class_labels is None:
            return torch.arange(batch_size) % self.unet.config.num_class_embeds if cycle else None
        if is_integer(class_labels):
            class_labels = [int(class_labels)] * batch_size
        values = class_labels.tolist() if isinstance(class_labels, torch.Tensor | np.ndarray) else class_labels
        values = values if isinstance(values, list | tuple) else [values]
        if not values or any(not is_integer(v) for v in values):
            raise ValueError(f"class_labels must be a non-empty list of integers (or an int), got {class_labels!r}")
        labels = torch.tensor([int(v) for v in values], dtype=torch.long)
        num_classes = self.unet.config.num_class_embeds
        bad = sorted(set(labels[(labels < 0) | (labels >= num_classes)].tolist()))
        if bad:
            raise ValueError(f"class_labels must be in [0, {num_classes}), got {bad}")
        return labels

    def _reference_images(self, reference_images) -> torch.Tensor:
        if isinstance(reference_images, PIL.Image.Image):
            reference_images = [reference_images]
        if isinstance(reference_images, list | tuple) and all(isinstance(r, torch.Tensor) for r in reference_images):
            shapes = {tuple(r.shape) for r in reference_images}
            if len(shapes) != 1 or len(next(iter(shapes))) != 3:
                raise ValueError(f"reference_images as a list of tensors must all be (C, H, W), got shapes {shapes}")
            return torch.stack(list(reference_images))
        if isinstance(reference_images, list | tuple):
            mode = "L" if self.unet.config.in_channels == 1 else "RGB"
            arrays = [np.asarray(img.convert(mode), dtype=np.float32) / 255.0 for img in reference_images]
            reference_images = torch.from_numpy(
                np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])
            )
        return torch.as_tensor(reference_images)

    def check_inputs(
        self,
        batch_size: int,
        num_inference_steps: int,
        guidance_scale: float,
        memory_size: int | None,
        reference_images: torch.Tensor | list[PIL.Image.Image] | None,
        choices: dict[str, tuple[str, object]],
    ) -> None:
        """Raises ValueError naming the first bad argument; `choices` maps names to (value, Literal alias)."""
        check_positive_int("batch_size", batch_size)
        check_positive_int("num_inference_steps", num_inference_steps)
        check_guidance_scale("guidance_scale", guidance_scale)
        if memory_size is not None and (not is_integer(memory_size) or memory_size <= 0):
            raise ValueError(f"memory_size must be a positive integer or None, got {memory_size!r}")
        for name, (value, alias) in choices.items():
            check_choice(name, value, alias)
        if choices["memory_retrieval"][0] == "nearest" and reference_images is None:
            raise ValueError('memory_retrieval="nearest" needs reference_images')
        if self.unet.uses_memory:
            if self.memory_bank is None or len(self.memory_bank) == 0:
                raise ValueError("this SPM has no memory: load or set a non-empty memory_bank")
            cfg = self.unet.config
            expected = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
            if tuple(self.memory_bank.image_shape) != expected:
                raise ValueError(
                    f"memory images have shape {tuple(self.memory_bank.image_shape)}, the unet expects {expected}"
                )
            memory_labels = self.memory_bank.labels
            unknown = memory_labels[memory_labels >= cfg.num_class_embeds].unique().tolist()
            if unknown:
                last = cfg.num_class_embeds - 1
                raise ValueError(f"memory items have labels {sorted(unknown)[:5]}, the unet knows classes 0..{last}")

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor | None = None,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        guidance_scale: float | None = None,
        memory_size: int | None = None,
        memory_retrieval: MemoryRetrieval | None = None,
        reference_images: torch.Tensor | list[PIL.Image.Image] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        unconditional_memory: UnconditionalMemory = "class",
        empty_memory: EmptyMemory = "all",
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> SPMPipelineOutput | tuple:
        r"""
        Args:
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*): the class of each sample; an int
                gives `batch_size` samples of that class; None cycles through the classes (or, with
                `"nearest"`, takes the class of each reference image's nearest memory item).
            batch_size (`int`, defaults to 1): samples when `class_labels` is None or an int.
            num_inference_steps (`int`, defaults to 50): denoising steps (the paper: DDIM, 50 steps).
            guidance_scale (`float`, *optional*): w in eps = (1 + w) eps_cond - w eps_uncond (the paper's
                classifier-free guidance), which is diffusers' and DiT's scale s = 1 + w (the paper's CIFAR-10
                0.3 is their 1.3); off at 0. None: the pipeline's `default_guidance_scale` (saved with it). Guidance
                runs the unet twice per step.
            memory_size (`int`, *optional*): memory items read per class (or per reference image, or per anchor);
                None: the pipeline's `default_memory_size`, and when that is None every item of the class.
            memory_retrieval (`str`, *optional*): `"random"` (seeded by `generator`), `"nearest"` (the items
                closest to `reference_images`: image variations) or `"anchor"` (per sample a seeded item of its
                class and its nearest items of the class: what nearest-support training reads). None: the
                pipeline's `default_memory_retrieval` (`"random"` unless saved otherwise).
            reference_images (`torch.Tensor` of shape `(B, C, H, W)` in [0, 1], or PIL images): for `"nearest"`.
            generator (`torch.Generator` or a list of them, *optional*): makes sampling and memory retrieval
                deterministic.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` (`(B, H, W, C)` floats in [0, 1]), `"pt"`
                (`(B, C, H, W)` tensor in [0, 1]) or `"latent"` (the final latents, model space [-1, 1]).
            return_dict (`bool`, defaults to True): return an `SPMPipelineOutput` instead of a tuple.
            unconditional_memory (`str`, defaults to `"class"`): what the unconditional branch of guidance
                reads. `"class"` (the official protocol): its own class's memory, the same as the conditional
                branch; only the class embedding is nulled, so a sample depends on its own class's memory alone.
                `"all"`: every memory item the batch selected (its cost grows with the number of classes in the
                batch, and a sample then depends on the other classes in its batch).
            empty_memory (`str`, defaults to `"all"`): what a class with no memory at all (emptied by deletion)
                reads: `"all"`, every item the batch selected (the paper's test-time fallback), or `"error"`.
            num_images_per_prompt (`int`, defaults to 1): samples per class label (and per reference image).
            latents (`torch.Tensor` of shape `(B, C, H, W)`, *optional*): initial noise to start from instead of
                drawing it from `generator` (B = the number of samples).
            callback_on_step_end (`Callable`, *optional*): called after each step as
                `callback_on_step_end(pipe, i, t, callback_kwargs)` with the tensors named in
                `callback_on_step_end_tensor_inputs` (`"latents"`); the dict it returns replaces them.
                Set `pipe._interrupt = True` in it to stop after the step.

        Returns:
            [`SPMPipelineOutput`] (an `ImagePipelineOutput` with `memory_ids`) or `(images,)`.
        """
        if guidance_scale is None:
            guidance_scale = self.config.default_guidance_scale
        if memory_retrieval is None:
            memory_retrieval = self.config.default_memory_retrieval
        if memory_size is None:
            memory_size = self.config.default_memory_size
        choices = {
            "memory_retrieval": (memory_retrieval, MemoryRetrieval),
            "output_type": (output_type, OutputType),
            "unconditional_memory": (unconditional_memory, UnconditionalMemory),
            "empty_memory": (empty_memory, EmptyMemory),
        }
        self.check_inputs(batch_size, num_inference_steps, guidance_scale, memory_size, reference_images, choices)
        if not is_integer(num_images_per_prompt) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}")
        unknown = sorted(set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs))
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {unknown} are not in {self._callback_tensor_inputs}")
        if isinstance(class_labels, list | tuple) and batch_size not in (1, len(class_labels)):
            raise ValueError(f"batch_size={batch_size} with {len(class_labels)} class_labels: give one or the other")
        self._guidance_scale, self._interrupt = guidance_scale, False
        device, cfg = self._execution_device, self.unet.config
        guided = guidance_scale > 0

        # 1. the samples' labels, and what each sample reads from memory (decided once for the whole call)
        cycle = memory_retrieval != "nearest" or not self.unet.uses_memory
        labels = self._class_labels(class_labels, batch_size, cycle=cycle)
        if labels is not None:
            labels = labels.repeat_interleave(num_images_per_prompt)
        readout, memory = None, None
        if self.unet.uses_memory:
            with self.memory_bank.locked():  # one consistent view of the bank, even while another thread edits it
                unconditional = unconditional_memory if guided else None
                if memory_retrieval == "random" and isinstance(generator, list):  # sample i: generator i alone
                    readout = per_sample_readout(
                        self.memory_bank, labels, memory_size, generator, empty_memory, unconditional
                    )
                elif memory_retrieval == "random":
                    readout = class_readout(
                        self.memory_bank, labels, memory_size, generator, empty_memory, unconditional
                    )
                elif memory_retrieval == "anchor":
                    readout = anchor_readout(
                        self.memory_bank, labels, memory_size, generator, empty_memory, unconditional
                    )
                else:
                    references = self._reference_images(reference_images).repeat_interleave(num_images_per_prompt, 0)
                    readout, labels = nearest_readout(self.memory_bank, references, labels, memory_size, unconditional)
                readout = readout.to(device)
                if cfg.memory_encoding == "clean":  # encoded once per bank version, prepared once for all steps
                    tokens = self.memory_cache.features(self.memory_bank, readout.ids, self.unet)
                    memory = self.unet.prepare_memory(tokens, readout)
        labels = labels.to(device)
        model_labels = torch.cat([labels, torch.full_like(labels, self.unet.null_class_label)]) if guided else labels

        # 2. initial noise and timesteps
        shape = (len(labels), cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        self._num_timesteps = len(self.scheduler.timesteps)
        step_parameters = inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if "generator" in step_parameters else {}
        if "use_clipped_model_output" in step_parameters:  # DDIM: eps re-derived from the clipped x0 (official)
            step_kwargs["use_clipped_model_output"] = True

        # 3. denoising loop (sampling never uses dropout, also when called on a unet being trained)
        with eval_mode(self.unet):
            for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
                if self.interrupt:
                    break
                model_input = torch.cat([latents, latents]) if guided else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                if readout is not None and cfg.memory_encoding == "paper":  # memory encoded at this step's t
                    tokens = self.memory_cache.features(self.memory_bank, readout.ids, self.unet, timestep=t)
                    memory = self.unet.prepare_memory(tokens, readout)
                eps = self.unet(model_input, t, model_labels, fusion_memory=memory).sample
                if guided:
                    eps_cond, eps_uncond = eps.chunk(2)
                    eps = (1 + guidance_scale) * eps_cond - guidance_scale * eps_uncond
                latents = self.scheduler.step(eps, t, latents, **step_kwargs).prev_sample
                if callback_on_step_end is not None:
                    tensors = {"latents": latents} if "latents" in callback_on_step_end_tensor_inputs else {}
                    latents = callback_on_step_end(self, i, t, tensors).get("latents", latents)

        # 4. post-processing
        images = latents if output_type == "latent" else from_model_range(latents)
        if output_type in ("np", "pil"):
            images = images.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return SPMPipelineOutput(images=images, memory_ids=None if readout is None else readout.read)
