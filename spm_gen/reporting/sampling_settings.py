"""How every model of an experiment is sampled: one settings type, which each driver's settings extend (with
its own defaults), so a plan reads it by its fields rather than by name."""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import EmptyMemory, check_choice
from ..utils.dataclass_options import option
from ..utils.validation import check_values, is_guidance_scale


@dataclass(kw_only=True)
class SamplingSettings:
    """DDIM steps, guidance, what an SPM reads, batches and the seed; None: the pipeline's own (its saved
    default_guidance_scale, default_memory_size)."""

    num_inference_steps: int = option(50, help="DDIM steps", flag="--steps")
    guidance_scale: float | None = option(
        None, help="guidance w of every model (default: each model's own, saved with it as default_guidance_scale)"
    )
    memory_size: int | None = option(None, help="memory items read per class (default: the pipeline's own)")
    empty_memory: EmptyMemory = option(
        "all", help="what samples of a class with no memory left read: all memory, or an error"
    )
    batch_size: int = option(100, help="images per sampling batch")
    seed: int = option(0, help="the sampling seed")

    def check_sampling(self) -> None:
        """Raises ValueError naming the first bad sampling value."""
        check_values(
            self,
            {
                "num_inference_steps": isinstance(self.num_inference_steps, int) and self.num_inference_steps > 0,
                "guidance_scale": self.guidance_scale is None or is_guidance_scale(self.guidance_scale),
                "memory_size": self.memory_size is None or self.memory_size > 0,
                "batch_size": isinstance(self.batch_size, int) and self.batch_size > 0,
                "seed": isinstance(self.seed, int) and 0 <= self.seed < 2**63,  # a torch generator's seed
            },
        )
        check_choice("empty_memory", self.empty_memory, EmptyMemory)

    def guidance_for(self, pipe) -> float:
        """The guidance `pipe` is sampled with: this one, or the pipeline's saved default."""
        return pipe.config.default_guidance_scale if self.guidance_scale is None else self.guidance_scale

    def pipeline_kwargs(self, pipe) -> dict:
        """The call arguments of `pipe` (an SPM's memory arguments only when it reads memory)."""
        kwargs = {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_for(pipe)}
        if pipe.memory_bank is not None:
            kwargs.update(memory_size=self.memory_size, empty_memory=self.empty_memory)
        return kwargs
