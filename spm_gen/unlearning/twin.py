"""Unlearning a removal from the parametric twin, as one setting shared by the report and the memorization
scenario: which method, with what budget, and the forget / remain split of the training set. Light: the
command line builds its options from `TwinUnlearning` before torch loads; `apply` imports the training code."""

from __future__ import annotations

import typing
from dataclasses import dataclass, replace

from ..choices import TwinMethod, check_choice
from ..utils.dataclass_options import option
from ..utils.validation import check_values

if typing.TYPE_CHECKING:
    from ..data import ImageDataset
    from ..memory.bank import MemoryBank

TITLES: dict[TwinMethod, str] = {"random_label": "random-label (SalUn)", "gradient_ascent": "gradient ascent"}


def forget_and_remain(training: MemoryBank, ids: list[str]) -> tuple[ImageDataset, ImageDataset]:
    """The items `ids` of `training` and all the others, as datasets (on the CPU)."""
    from ..data import ImageDataset

    removed = set(ids)
    keep = [i for i in training.ids if i not in removed]
    forget = ImageDataset(training.get_images(ids).cpu(), training.get_labels(ids), list(ids))
    return forget, ImageDataset(training.get_images(keep).cpu(), training.get_labels(keep), keep)


@dataclass
class TwinUnlearning:
    # on the digits twin: random_label 100 steps at lr 1e-4 forgets class 3 and keeps the rest; gradient ascent
    # jumps from no effect to a ruined model (lr 3e-5 with remain_weight 5 is near the edge): see RESULTS.md
    method: TwinMethod = option(
        "random_label", help="the twin's unlearning: SalUn's random-label fine-tuning or gradient ascent"
    )
    steps: int = option(100, help="unlearning steps for the twin")
    lr: float = option(1e-4, help="their learning rate")
    remain_weight: float = option(1.0, help="weight of the descent on the remaining data during unlearning")
    saliency: float = option(0.5, help="random_label: the share of weights SalUn's mask lets move")

    @property
    def title(self) -> str:
        return TITLES[self.method]

    def check(self) -> None:
        """Raises ValueError naming the first bad value."""
        check_choice("the twin's unlearning method", self.method, TwinMethod)
        checks = {"steps": self.steps > 0, "lr": self.lr > 0, "remain_weight": self.remain_weight >= 0}
        check_values(self, {**checks, "saliency": 0 < self.saliency <= 1})

    def apply(self, twin, forget: ImageDataset, remain: ImageDataset, seed: int = 0):
        """The twin pipeline after this unlearning of `forget` (descent on `remain`), and the seconds it took."""
        from diffusers import DDPMScheduler

        from .diffusion_baselines import UnlearningBudget, diffusion_gradient_ascent, diffusion_random_label

        self.check()
        scheduler = DDPMScheduler.from_config(twin.scheduler.config)
        budget = UnlearningBudget(self.steps, self.lr, remain, self.remain_weight, seed=seed)
        if self.method == "random_label":
            unet, seconds = diffusion_random_label(
                twin.unet, scheduler, forget, replace(budget, saliency=self.saliency)
            )
        else:
            unet, seconds = diffusion_gradient_ascent(twin.unet, scheduler, forget, budget)
        w = twin.config.default_guidance_scale
        unlearned = type(twin)(unet=unet, scheduler=twin.scheduler, memory_bank=None, default_guidance_scale=w)
        unlearned.set_progress_bar_config(disable=True)
        return unlearned, seconds
