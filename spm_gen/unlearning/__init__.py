"""Forget requests and the parametric unlearning baselines (loaded lazily: `unlearning.twin` is light)."""

from __future__ import annotations

__all__ = ["ForgetSet", "forget_ids"]


def __getattr__(name: str):
    if name in __all__:
        from . import forget_set

        return getattr(forget_set, name)
    raise AttributeError(f"module 'spm_gen.unlearning' has no attribute {name!r}")
