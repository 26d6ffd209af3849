"""SPMDiffusionPipeline: class-conditional sampling from a semi-parametric diffusion model."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from spm_gen.memory.bank import MemoryBank
from spm_gen.models.memory_cache import MemoryTokenCache
from spm_gen.models.unet_spm import SPMUNet2DModel

MEMORY_SELECTIONS = ("random", "nearest")
UNCONDITIONAL_MEMORIES = ("all", "class")
OUTPUT_TYPES = ("pil", "np", "pt")


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

    Memory tokens are cached in `memory_cache` (see `spm_gen.models.memory_cache`): each item is encoded once
    and reused across calls, steps and both guidance branches until the unet's weights change.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["memory_bank"]

    def __init__(self, unet: SPMUNet2DModel, scheduler: SchedulerMixin, memory_bank: MemoryBank | None = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, memory_bank=memory_bank)
        self.memory_cache = MemoryTokenCache()

    # ------------------------------------------------------------------ argument handling

    def _class_labels(self, class_labels, batch_size: int, device: torch.device) -> torch.Tensor | None:
        if class_labels is None:
            return None
        if isinstance(class_labels, int | np.integer):
            class_labels = [int(class_labels)] * batch_size
        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        num_classes = self.unet.config.num_class_embeds
        bad = sorted(set(labels[(labels < 0) | (labels >= num_classes)].tolist()))
        if bad:
            raise ValueError(f"class_labels must be in [0, {num_classes}), got {bad}")
        return labels.to(device)

    def _reference_images(self, reference_images) -> torch.Tensor:
        if isinstance(reference_images, PIL.Image.Image):
            reference_images = [reference_images]
        if isinstance(reference_images, list | tuple):
            mode = "L" if self.unet.config.in_channels == 1 else "RGB"
            arrays = [np.asarray(img.convert(mode), dtype=np.float32) / 255.0 for img in reference_images]
            reference_images = torch.from_numpy(
                np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])
            )
        return torch.as_tensor(reference_images)

    def check_inputs(self, batch_size, num_inference_steps, guidance_scale, memory_size, memory_selection, output_type):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be positive, got {num_inference_steps}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if memory_size is not None and memory_size <= 0:
            raise ValueError(f"memory_size must be positive or None, got {memory_size}")
        if memory_selection not in MEMORY_SELECTIONS:
            raise ValueError(f"memory_selection must be one of {MEMORY_SELECTIONS}, got {memory_selection!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if self.unet.uses_memory:
            if self.memory_bank is None or len(self.memory_bank) == 0:
                raise ValueError("this SPM has no memory: load or set a non-empty memory_bank")
            cfg = self.unet.config
            expected = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
            if tuple(self.memory_bank.image_shape) != expected:
                raise ValueError(
                    f"memory images have shape {tuple(self.memory_bank.image_shape)}, the unet expects {expected}"
                )

    # ------------------------------------------------------------------ memory

    def select_memory(
        self,
        labels: torch.Tensor | None,
        batch_size: int,
        memory_size: int | None,
        memory_selection: str,
        reference_images: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor, list[list[str]]]:
        """Chooses what each sample reads.

        Returns:
            `(class_labels (B,), ids, memory_labels (M,), memory_query_labels (B,), ids read per sample)`.
            `"random"` (labels given): each class reads `memory_size` seeded items of its class (all when
            None); memory is grouped by class label. `"nearest"`: sample i reads the items nearest to
            `reference_images[i]` (of its class when given); memory is grouped per sample.
        """
        bank = self.memory_bank
        if memory_selection == "random":
            per_class = {c: bank.select(c, memory_size, generator=generator) for c in sorted(set(labels.tolist()))}
            ids = list(dict.fromkeys(i for chosen in per_class.values() for i in chosen))
            memory_labels = bank.get_labels(ids)
            read = [per_class[c] if (memory_labels == c).any() else ids for c in labels.tolist()]
            return labels, ids, memory_labels, labels, read
        if reference_images is None:
            raise ValueError('memory_selection="nearest" needs reference_images')
        references = self._reference_images(reference_images)
        if labels is not None and len(labels) != len(references):
            raise ValueError(f"got {len(references)} reference_images but {len(labels)} class_labels")
        counts = bank.class_counts()
        read = []
        for i in range(len(references)):
            label = None if labels is None or int(labels[i]) not in counts else int(labels[i])
            k = memory_size or (counts[label] if label is not None else len(bank))
            read.append(bank.nearest_images(references[i : i + 1], k, label=label).ids[0])
        if labels is None:
            labels = bank.get_labels([r[0] for r in read])
        ids = [i for r in read for i in r]
        memory_labels = torch.tensor([q for q, r in enumerate(read) for _ in r])
        return labels, ids, memory_labels, torch.arange(len(read)), read

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor | None = None,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        guidance_scale: float = 0.3,
        memory_size: int | None = None,
        memory_selection: str = "random",
        reference_images: torch.Tensor | list[PIL.Image.Image] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        unconditional_memory: str = "all",
    ) -> SPMPipelineOutput | tuple:
        r"""
        Args:
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*): the class of each sample; an int
                gives `batch_size` samples of that class; None cycles through the classes (or, with
                `"nearest"`, takes the class of each reference image's nearest memory item).
            batch_size (`int`, defaults to 1): samples when `class_labels` is None or an int.
            num_inference_steps (`int`, defaults to 50): denoising steps (the paper: DDIM, 50 steps).
            guidance_scale (`float`, defaults to 0.3): w in eps = (1 + w) eps_cond - w eps_uncond (the paper's
                classifier-free guidance); 0 disables guidance.
            memory_size (`int`, *optional*): memory items read per class (or per reference image); None
                reads every item of the class.
            memory_selection (`str`, defaults to `"random"`): `"random"` (seeded by `generator`) or
                `"nearest"` (the items closest to `reference_images`: image variations).
            reference_images (`torch.Tensor` of shape `(B, C, H, W)` in [0, 1], or PIL images): for `"nearest"`.
            generator (`torch.Generator` or a list of them, *optional*): makes sampling and memory selection
                deterministic.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` (`(B, H, W, C)` floats in [0, 1]) or
                `"pt"` (`(B, C, H, W)` tensor in [0, 1]).
            return_dict (`bool`, defaults to True): return an `SPMPipelineOutput` instead of a tuple.
            unconditional_memory (`str`, defaults to `"all"`): what the unconditional branch of guidance reads.
                `"all"`: every memory item the batch selected (the null label has no same-label memory, so it
                falls back to all memory, as in the paper; its cost grows with the number of classes in the
                batch). `"class"`: the same memory as the conditional branch, only the class embedding differs
                (the cost of one more conditional branch).

        Returns:
            [`SPMPipelineOutput`] (an `ImagePipelineOutput` with `memory_ids`) or `(images,)`.
        """
        self.check_inputs(batch_size, num_inference_steps, guidance_scale, memory_size, memory_selection, output_type)
        if unconditional_memory not in UNCONDITIONAL_MEMORIES:
            raise ValueError(
                f"unconditional_memory must be one of {UNCONDITIONAL_MEMORIES}, got {unconditional_memory!r}"
            )
        was_training = self.unet.training
        self.unet.eval()  # sampling never uses dropout, also when called on a unet being trained
        try:
            return self._sample(
                class_labels, batch_size, num_inference_steps, guidance_scale, memory_size, memory_selection,
                reference_images, generator, output_type, return_dict, unconditional_memory,
            )  # fmt: skip
        finally:
            self.unet.train(was_training)

    def _sample(
        self,
        class_labels,
        batch_size: int,
        num_inference_steps: int,
        guidance_scale: float,
        memory_size: int | None,
        memory_selection: str,
        reference_images,
        generator,
        output_type: str,
        return_dict: bool,
        unconditional_memory: str,
    ) -> SPMPipelineOutput | tuple:
        device, dtype = self._execution_device, self.unet.dtype
        labels = self._class_labels(class_labels, batch_size, torch.device("cpu"))
        if labels is None and (memory_selection == "random" or not self.unet.uses_memory):
            labels = torch.arange(batch_size) % self.unet.config.num_class_embeds  # classes cycling
        selection_generator = generator[0] if isinstance(generator, list) else generator

        memory = None
        read: list[list[str]] | None = None
        if self.unet.uses_memory:
            labels, ids, memory_labels, query_labels, read = self.select_memory(
                labels, batch_size, memory_size, memory_selection, reference_images, selection_generator
            )
            unique_ids = list(dict.fromkeys(ids))
            position = {item_id: i for i, item_id in enumerate(unique_ids)}
            gather = torch.tensor([position[i] for i in ids], device=device)
            memory = (unique_ids, gather, memory_labels.to(device), query_labels.to(device))
        labels = labels.to(device)
        batch = len(labels)

        cfg = self.unet.config
        shape = (batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = (
            {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        )

        guided = guidance_scale > 0
        model_labels = torch.cat([labels, torch.full_like(labels, self.unet.null_class_label)]) if guided else labels
        tokens = None
        if memory is not None:
            unique_ids, gather, memory_labels, query_labels = memory
            if guided:  # label -1: the unconditional branch reads all memory
                uncond = torch.full_like(query_labels, -1) if unconditional_memory == "all" else query_labels
                query_labels = torch.cat([query_labels, uncond])
            if cfg.memory_encoding == "clean":
                tokens = self.memory_cache.tokens(self.unet, self.memory_bank, unique_ids)[gather]

        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            if memory is not None:
                if cfg.memory_encoding == "paper":
                    tokens = self.memory_cache.tokens(self.unet, self.memory_bank, unique_ids, timestep=t)[gather]
                eps = self.unet(model_input, t, model_labels, tokens, memory_labels, query_labels).sample
            else:
                eps = self.unet(model_input, t, model_labels).sample
            if guided:
                eps_cond, eps_uncond = eps.chunk(2)
                eps = (1 + guidance_scale) * eps_cond - guidance_scale * eps_uncond
            latents = self.scheduler.step(eps, t, latents, **step_kwargs).prev_sample

        images = (latents / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            images = images.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return SPMPipelineOutput(images=images, memory_ids=read)
